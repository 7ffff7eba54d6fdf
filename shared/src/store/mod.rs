//! MySQL: the one place that knows SQL. Every read of a soft-deletable table goes through
//! here and filters `deleted_at`.

mod audit;
mod dedupe;
mod erasure;
mod events;
mod export;
pub mod grants;
mod jobs;
mod journeys;
mod keys;
mod known_members;
mod late_links;
mod links;
mod lists;
pub mod migrations;
mod projects;
mod properties;
mod rejected;
mod retention;
mod rollups;
mod signing;
mod soft_delete;
mod tls;
mod trends;
mod views;

pub use audit::{AuditEntry, AuditRecord};
pub use erasure::ErasureInfo;
pub use events::{BatchWrite, EventRow, PROFILE_TRAITS_MAX_BYTES, Rejection};
pub use export::{SubjectSlices, UserLinks};
pub use jobs::{
    ABANDONED, ChunkResult, ClaimResult, FencedError, JobTx, MAX_SLOT_SKEW, RunInfo, Step, StepInfo, StepProgress,
};
pub use journeys::Sample;
pub use keys::{ExpiringKey, KeyChangeError, KeyEnd, KeyInfo, KeyRecord, NewKey};
pub use links::{MAX_LINK_HOPS, MAX_LINKS_PER_USER};
pub use lists::{
    EventFilter, EventPosition, GroupMember, JsonDocument, JsonFilter, JsonOp, LIVE_SETTLE_MS, ListPage,
    MAX_LIST_NAMES, MAX_LIST_SUBJECTS,
};
pub use projects::{Project, ProjectChanges, Restored};
pub use properties::{MAX_PROMOTED, Promoted, Promotion, ValueCount};
pub use rejected::{RejectedAfter, RejectedEvent, RejectedFilter, RejectedPosition};
pub use retention::Prunable;
pub use rollups::{CountSource, HourCount, hour_of, hour_start, same_text};
pub use signing::SealedSigningKey;
pub use soft_delete::SoftTable;
use tls::connection_options;
pub use trends::{BreakdownBy, Counted, Line, Measure, Series};
pub use views::{EVENT_FIELDS, EventView, GroupMiss, GroupView, UserView};

use crate::config::{Config, DatabaseTls, Secret};
use chrono::{DateTime, NaiveDateTime, Utc};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Pool, PoolConstraints, PoolOpts};
use std::time::Duration;

/// Reads of soft-deletable tables go through these derived tables, so that a deleted row
/// cannot be read by a query that forgot a filter (the optimizer merges them away). A read
/// that must see deleted rows names the base table and says so with `/* with deleted */`;
/// `reads_exclude_deleted_rows_by_construction` below holds every query to that.
pub(crate) mod live {
    pub const LIVE_EVENTS: &str = "(SELECT * FROM events WHERE deleted_at IS NULL)";
    pub const LIVE_USERS: &str = "(SELECT * FROM users WHERE deleted_at IS NULL)";
    pub const LIVE_PROJECTS: &str = "(SELECT * FROM projects WHERE deleted_at IS NULL)";
    pub const LIVE_KEYS: &str = "(SELECT * FROM api_keys WHERE deleted_at IS NULL)";
    pub const LIVE_GROUPS: &str = "(SELECT * FROM group_profiles WHERE deleted_at IS NULL)";

    /// `LIVE_USERS` in id order.
    pub const LIVE_USERS_BY_ID: &str = "(SELECT * FROM users FORCE INDEX (uq_users_user) WHERE deleted_at IS NULL)";
    /// `LIVE_GROUPS` in id order.
    pub const LIVE_GROUPS_BY_ID: &str =
        "(SELECT * FROM group_profiles FORCE INDEX (uq_group_profiles_group) WHERE deleted_at IS NULL)";

    /// `LIVE_EVENTS` read through `index` (a name from the schema, never input).
    pub fn live_events_by(index: &str) -> String {
        format!("(SELECT * FROM events FORCE INDEX ({index}) WHERE deleted_at IS NULL)")
    }
}

/// Failures of the store, split by what the caller should do about them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Connection lost, server down, deadlock, timeout: try again later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The caller's input is invalid (a name too long, a retention out of range).
    #[error("{0}")]
    Invalid(String),
    /// The server refused the data itself (too long, invalid JSON, ...): retrying cannot
    /// help. The server's text names columns: it is logged, never answered to a client.
    #[error("database refused the data: {0}")]
    Refused(String),
    /// What the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A stored row is not what the code wrote (a NULL or a wrong type where it cannot be):
    /// a bug or a manual edit, never the caller's fault.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Config(String),
    #[error("migration failed: {0}")]
    Migration(String),
    /// A read ran past `READ_TIME_CAP` on the server: the question is too big as asked.
    #[error("the query ran longer than {} s", READ_TIME_CAP.as_secs())]
    TooBig,
    /// The client stopped waiting for a statement (`STATEMENT_TIMEOUT`). Its answer may still
    /// come on that connection, so nothing more is sent on it: not even a rollback to a
    /// savepoint, which would read the late answer as its own.
    #[error("database unavailable: no answer within {} s", STATEMENT_TIMEOUT.as_secs())]
    NoAnswer,
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::NoAnswer)
    }
}

/// Server error codes that mean "this data can never be stored", not "try later".
const DATA_ERRORS: &[u16] = &[
    1048, // column cannot be null
    1264, // out of range
    1265, // data truncated
    1292, // incorrect datetime
    1366, // incorrect string value
    1406, // data too long
    3140, // invalid JSON text (MySQL)
    3157, // JSON nesting too deep (MySQL)
    4025, // CHECK constraint failed (MariaDB's JSON_VALID)
    4038, // JSON syntax error (MariaDB)
    4040, // JSON nesting too deep (MariaDB)
];

/// Server error codes of a statement stopped at its time cap (MariaDB's `max_statement_time`,
/// MySQL's `MAX_EXECUTION_TIME`).
const TIME_CAP_ERRORS: &[u16] = &[1969, 3024];

impl From<mysql_async::Error> for StoreError {
    fn from(err: mysql_async::Error) -> Self {
        match &err {
            mysql_async::Error::Server(server) if TIME_CAP_ERRORS.contains(&server.code) => StoreError::TooBig,
            mysql_async::Error::Server(server) if DATA_ERRORS.contains(&server.code) => {
                StoreError::Refused(server.message.clone())
            }
            _ => StoreError::Unavailable(err.to_string()),
        }
    }
}

impl From<mysql_async::UrlError> for StoreError {
    fn from(err: mysql_async::UrlError) -> Self {
        StoreError::Config(format!("EVTRACK_DATABASE_URL is not a valid MySQL URL: {err}"))
    }
}

/// Bounds every database round trip: a cut network must fail fast, not hang a request.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the server may spend on one read of the read side (lists, aggregates): below
/// `STATEMENT_TIMEOUT`, so that a big question ends as `TooBig`, not as a lost connection.
pub const READ_TIME_CAP: Duration = Duration::from_secs(5);

/// Prepared statements a pooled connection keeps (mysql_async closes the least used beyond).
const STATEMENTS_CACHED_PER_CONNECTION: usize = 16;

#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// The read side's statements as run, when recording (`Store::recording_reads`).
    reads: Option<ReadLog>,
    /// Whether writes mark the hours they change for the rollups: always, but in the
    /// benchmark that measures what the marks cost (`Store::without_rollup_marks`).
    marks_rollups: bool,
    /// Rows one read of a question may read (`MAX_ROWS_READ`; `Store::reading_at_most`).
    max_rows_read: usize,
    /// Group memberships the consumer's writes have read as stored: they need no read again.
    known_members: std::sync::Arc<known_members::KnownMembers>,
}

/// Statements of the read side as they were run (SQL and parameters), so that a test can
/// ask the database for each one's plan.
#[derive(Clone, Default)]
pub struct ReadLog(std::sync::Arc<std::sync::Mutex<Vec<ReadStatement>>>);

/// A statement's SQL and its parameters.
pub type ReadStatement = (String, Vec<mysql_async::Value>);

impl ReadLog {
    pub fn take(&self) -> Vec<ReadStatement> {
        self.0.lock().map(|mut reads| std::mem::take(&mut *reads)).unwrap_or_default()
    }
}

impl Store {
    /// The pool a function or command uses: its configured database, TLS and pool size.
    pub fn from_config(config: &Config) -> Result<Self, StoreError> {
        Self::connect(&config.database_url, &config.database_tls, config.database_pool_max)
    }

    /// A pool for `url`, reached as `tls` says (`connection_options`). Connects lazily:
    /// nothing is opened until the first query.
    pub fn connect(url: &Secret<String>, tls: &DatabaseTls, pool_max: usize) -> Result<Self, StoreError> {
        let opts = connection_options(url, tls)?;
        let constraints = PoolConstraints::new(0, pool_max.max(1))
            .ok_or_else(|| StoreError::Config("EVTRACK_DATABASE_POOL_MAX must be at least 1".into()))?;
        let pool_opts = PoolOpts::default()
            .with_constraints(constraints)
            .with_inactive_connection_ttl(Duration::from_secs(60))
            // PlanetScale may drop connections after a day; recycle well before that.
            .with_abs_conn_ttl(Some(Duration::from_secs(3600)))
            // A connection keeps its prepared statements between uses: resetting it on return
            // to the pool dropped them, and every batch prepared its 10,000-placeholder insert
            // again (an eighth of evtrack's CPU per event, and MariaDB's). Nothing here sets
            // session state but the time zone below; an open transaction is rolled back on
            // return all the same.
            .with_reset_connection(false);
        let builder = OptsBuilder::from_opts(opts)
            .pool_opts(pool_opts)
            // Few distinct statements are hot; a small cache per connection keeps the server's
            // count of prepared statements (max_prepared_stmt_count, 16,382 by default) far
            // from its limit with hundreds of function instances.
            .stmt_cache_size(STATEMENTS_CACHED_PER_CONNECTION)
            // `setup` (not `init`): it also runs again whenever a connection is reset.
            .setup(vec!["SET time_zone = '+00:00'"]);
        Ok(Self {
            pool: Pool::new(builder),
            reads: None,
            marks_rollups: true,
            max_rows_read: MAX_ROWS_READ,
            known_members: Default::default(),
        })
    }

    /// Creates the database named in `url` if it does not exist (local stack, tests).
    pub async fn create_database(url: &Secret<String>, tls: &DatabaseTls) -> Result<(), StoreError> {
        let opts = connection_options(url, tls)?;
        let name = opts
            .db_name()
            .ok_or_else(|| StoreError::Config("EVTRACK_DATABASE_URL names no database".into()))?
            .to_string();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(StoreError::Config(format!("database name {name:?} must be letters, digits and _")));
        }
        let server = OptsBuilder::from_opts(opts).db_name(None::<String>);
        let mut conn = with_timeout(Conn::new(server)).await?;
        // The name is checked above; identifiers cannot be bound as parameters.
        let create = format!("CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin");
        with_timeout(conn.query_drop(create)).await?;
        conn.disconnect().await.ok();
        Ok(())
    }

    /// Drops the database named in `url` (tests, on this machine).
    pub async fn drop_database(url: &Secret<String>) -> Result<(), StoreError> {
        let opts = connection_options(url, &DatabaseTls::default())?;
        let Some(name) = opts.db_name().map(str::to_string) else {
            return Ok(());
        };
        let server = OptsBuilder::from_opts(opts).db_name(None::<String>);
        let mut conn = with_timeout(Conn::new(server)).await?;
        with_timeout(conn.query_drop(format!("DROP DATABASE IF EXISTS `{name}`"))).await?;
        conn.disconnect().await.ok();
        Ok(())
    }

    pub async fn close(self) {
        self.pool.disconnect().await.ok();
    }

    pub(crate) async fn conn(&self) -> Result<Conn, StoreError> {
        with_timeout(self.pool.get_conn()).await
    }

    /// Runs a read of the read side with the server stopping it at `READ_TIME_CAP`.
    async fn capped_read(
        &self,
        conn: &mut Conn,
        sql: &str,
        params: Vec<mysql_async::Value>,
    ) -> Result<Vec<mysql_async::Row>, StoreError> {
        self.record(sql, &params);
        let capped = capped(sql, conn);
        with_timeout(conn.exec(capped, params)).await
    }

    /// `capped_read`, each row given to `each` as it is read (never all held); how many rows
    /// were read.
    async fn capped_read_each<T: mysql_async::prelude::FromRow + Send + 'static>(
        &self,
        conn: &mut Conn,
        sql: &str,
        params: Vec<mysql_async::Value>,
        each: impl FnMut(T) -> Result<(), StoreError> + Send,
    ) -> Result<usize, StoreError> {
        self.record(sql, &params);
        let capped = capped(sql, conn);
        read_each(conn, capped, params, each).await
    }

    /// This store, recording the read side's statements into the log it returns (tests).
    pub fn recording_reads(&self) -> (Store, ReadLog) {
        let log = ReadLog::default();
        (Store { reads: Some(log.clone()), ..self.clone() }, log)
    }

    /// This store, its consumer writes leaving the rollups' dirty-hour marks out. For the
    /// benchmark of what the marks cost only: the rollups go wrong without them.
    #[doc(hidden)]
    pub fn without_rollup_marks(&self) -> Store {
        Store { marks_rollups: false, ..self.clone() }
    }

    /// This store, a read of a question reading at most `rows` rows (else `TooBig`): sized to
    /// the function's memory, as funnels, retention and breakdowns hold theirs
    /// (`EVTRACK_MAX_ROWS_READ`).
    pub fn reading_at_most(&self, rows: usize) -> Store {
        Store { max_rows_read: rows.max(1), ..self.clone() }
    }

    /// Rows one read of a question may read.
    pub fn max_rows_read(&self) -> usize {
        self.max_rows_read
    }

    fn record(&self, sql: &str, params: &[mysql_async::Value]) {
        if let Some(log) = &self.reads
            && let Ok(mut reads) = log.0.lock()
        {
            reads.push((sql.to_string(), params.to_vec()));
        }
    }
}

/// `sql` (a SELECT) stopped by the server at `READ_TIME_CAP`, in each server's own words
/// (MariaDB 10+ and MySQL 8 both run here).
fn capped(sql: &str, conn: &Conn) -> String {
    if conn.server_version().0 >= 10 {
        format!("SET STATEMENT max_statement_time = {} FOR {sql}", READ_TIME_CAP.as_secs())
    } else {
        let sql = sql.trim_start();
        let rest = sql.strip_prefix("SELECT").unwrap_or(sql);
        format!("SELECT /*+ MAX_EXECUTION_TIME({}) */{rest}", READ_TIME_CAP.as_millis())
    }
}

/// Runs `sql` with `params`, giving each row to `each` as it is read (never all held); how
/// many rows were read. The first error (of `each`, or a row that is not a `T`) ends the
/// answer, and the rest is read and dropped: on an error, what `each` was given is no answer.
async fn read_each<T: mysql_async::prelude::FromRow + Send + 'static>(
    queryable: &mut impl Queryable,
    sql: String,
    params: Vec<mysql_async::Value>,
    mut each: impl FnMut(T) -> Result<(), StoreError> + Send,
) -> Result<usize, StoreError> {
    let fold = |read: Result<usize, StoreError>, row: mysql_async::Row| {
        let read = read?;
        let row =
            T::from_row_opt(row).map_err(|_| StoreError::Corrupt("a row read is NULL or of another type".into()))?;
        each(row)?;
        Ok(read + 1)
    };
    with_timeout(queryable.exec_fold(sql, params, Ok(0), fold)).await?
}

async fn with_timeout<T>(
    future: impl std::future::Future<Output = Result<T, mysql_async::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(STATEMENT_TIMEOUT, future).await {
        Ok(result) => result.map_err(StoreError::from),
        Err(_) => Err(StoreError::NoAnswer),
    }
}

/// Stored times are UTC (`time_zone` is set per connection).
/// `?,?,…`: `n` placeholders for an `IN (…)` list (at least one, so that an empty list
/// matches nothing instead of being a syntax error).
fn placeholders(n: usize) -> String {
    vec!["?"; n.max(1)].join(",")
}

/// The parameters of `project_id = ? AND … IN (…)`: the project, then the ids.
fn project_and(project: u64, ids: &[&str]) -> Vec<mysql_async::Value> {
    std::iter::once(mysql_async::Value::from(project))
        .chain(ids.iter().map(|id| mysql_async::Value::from(*id)))
        .collect()
}

/// `INSERT INTO table (columns) VALUES (?,..),(?,..) suffix`, for `rows` rows.
fn multi_row_insert(table: &str, columns: &[&str], rows: usize, suffix: &str) -> String {
    let one = format!("({})", vec!["?"; columns.len()].join(","));
    let values = vec![one.as_str(); rows].join(",");
    format!("INSERT INTO {table} ({}) VALUES {values} {suffix}", columns.join(","))
}

/// How many ids one statement names: far below the protocol's 65,535 placeholders, and small
/// enough that each statement stays short.
const IDS_PER_STATEMENT: usize = 1_000;

/// Rows one read of a question may read by default. Counts and users are added up as they are
/// read; funnels, retention and breakdowns by a promoted property hold theirs (24-72 bytes
/// each and their values' text: 65-120 MB at about 900,000, BENCHMARKS.md), so that the
/// smallest api function (`ApiMemorySize` 256 MB) answers or says 422.
pub const MAX_ROWS_READ: usize = 1_000_000;

/// MySQL's DATETIME holds the years 1000 to 9999 (mysql_common panics on others): a time
/// outside is the nearest end, which no stored row passes.
fn to_db_time(at: DateTime<Utc>) -> NaiveDateTime {
    let first = chrono::NaiveDate::from_ymd_opt(1000, 1, 1).and_then(|day| day.and_hms_opt(0, 0, 0));
    let last = chrono::NaiveDate::from_ymd_opt(9999, 12, 31).and_then(|day| day.and_hms_milli_opt(23, 59, 59, 999));
    match (first, last) {
        (Some(first), Some(last)) => at.naive_utc().clamp(first, last),
        _ => at.naive_utc(),
    }
}

fn from_db_time(at: NaiveDateTime) -> DateTime<Utc> {
    at.and_utc()
}

/// A nullable column of a row read by index; `None` for NULL (or a value of another type).
fn column<T: mysql_async::prelude::FromValue>(row: &mysql_async::Row, index: usize) -> Option<T> {
    row.get_opt(index).and_then(Result::ok)
}

fn time_column(row: &mysql_async::Row, index: usize) -> Option<DateTime<Utc>> {
    column::<NaiveDateTime>(row, index).map(from_db_time)
}

/// A NOT NULL column: missing, NULL or of another type means the row is corrupt.
fn required<T: mysql_async::prelude::FromValue>(row: &mysql_async::Row, index: usize) -> Result<T, StoreError> {
    match row.get_opt::<T, usize>(index) {
        Some(Ok(value)) => Ok(value),
        _ => Err(not_a_value(index)),
    }
}

fn not_a_value(index: usize) -> StoreError {
    StoreError::Corrupt(format!("column {index} is NULL or of another type"))
}

/// As `column`, moving the value out of the row instead of copying it.
fn taken<T: mysql_async::prelude::FromValue>(row: &mut mysql_async::Row, index: usize) -> Option<T> {
    row.take_opt(index).and_then(Result::ok)
}

/// As `required`, moving the value out of the row instead of copying it.
fn taken_required<T: mysql_async::prelude::FromValue>(
    row: &mut mysql_async::Row,
    index: usize,
) -> Result<T, StoreError> {
    taken(row, index).ok_or_else(|| not_a_value(index))
}

/// A stored `ip_policy` column.
fn parse_ip_policy(name: &str) -> Result<crate::model::IpPolicy, StoreError> {
    crate::model::IpPolicy::parse(name).ok_or_else(|| StoreError::Corrupt(format!("unknown ip_policy {name}")))
}

fn required_time(row: &mysql_async::Row, index: usize) -> Result<DateTime<Utc>, StoreError> {
    required::<NaiveDateTime>(row, index).map(from_db_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_rows_a_question_may_read_default_to_max_rows_read() {
        let config = Config::with_overrides(&[("EVTRACK_DATABASE_URL", "mysql://u@127.0.0.1/d")]).expect("config");
        assert_eq!(config.max_rows_read, MAX_ROWS_READ);
    }

    #[test]
    fn times_outside_mysqls_years_become_the_nearest_end() {
        let at = |text: &str| DateTime::parse_from_rfc3339(text).expect("time").with_timezone(&Utc);
        assert_eq!(to_db_time(at("0999-12-29T00:00:00Z")).to_string(), "1000-01-01 00:00:00");
        let far = DateTime::from_timestamp(400_000_000_000, 0).expect("year 14645");
        assert_eq!(to_db_time(far).to_string(), "9999-12-31 23:59:59.999");
        assert_eq!(to_db_time(at("2026-12-03T08:00:00.5Z")).to_string(), "2026-12-03 08:00:00.500");
        // mysql_common takes them.
        let _ = mysql_async::Value::from(to_db_time(at("0001-01-01T00:00:00Z")));
    }

    /// Every line of the store that reads a soft-deletable base table (`FROM t` / `JOIN t`)
    /// must be the `live` definition, a write (DELETE, UPDATE, INSERT), a locking read of a
    /// write path (FOR UPDATE / LOCK IN SHARE MODE), or say `/* with deleted */`.
    #[test]
    fn reads_exclude_deleted_rows_by_construction() {
        // Every file of the store, read now, so that a new file cannot be left out.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store");
        let mut sources: Vec<(String, String)> = std::fs::read_dir(&dir)
            .expect("src/store")
            .map(|entry| entry.expect("entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "rs") && !path.ends_with("mod.rs"))
            .map(|path| (path.display().to_string(), std::fs::read_to_string(&path).expect("source")))
            .collect();
        sources.sort();
        assert!(sources.len() >= 10, "the store's files: {}", sources.len());
        let allowed = ["DELETE", "UPDATE", "INSERT", "FOR UPDATE", "LOCK IN SHARE MODE", "/* with deleted */"];
        let mut offending = Vec::new();
        for (file, source) in sources {
            for (number, line) in source.lines().enumerate() {
                let reads_base_table =
                    ["events", "users", "projects", "api_keys", "group_profiles"].iter().any(|table| {
                        [
                            format!("FROM {table} "),
                            format!("JOIN {table} "),
                            format!("FROM {table}\""),
                            format!("FROM {table}\n"),
                        ]
                        .iter()
                        .any(|pattern| {
                            line.contains(pattern.as_str()) || line.trim_end().ends_with(&format!("FROM {table}"))
                        })
                    });
                if reads_base_table && !allowed.iter().any(|word| line.contains(word)) {
                    offending.push(format!("{file}:{}: {}", number + 1, line.trim()));
                }
            }
        }
        assert!(offending.is_empty(), "reads of base tables:\n{}", offending.join("\n"));
    }
}
