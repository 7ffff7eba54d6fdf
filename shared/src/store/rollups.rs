//! Exact hourly rollups of a project's live events (migration 0010 says how they stay exact).
//!
//! Writes mark the (project, hour) they change in `rollup_dirty_hours`, in their own
//! transaction, with `INSERT IGNORE`: on a mark that exists that holds a shared lock until
//! commit, so concurrent writers do not wait for each other, while the rollup step's delete of
//! the mark waits for every writer still holding it. The step then recomputes the hour from
//! the rows those writers committed. One hour per transaction, marks always taken in
//! ascending order: no lock cycle with the writers.
//!
//! Reads (`Store::hourly_counts`) take one consistent snapshot: clean hours from the rollup,
//! dirty hours and the current one from the raw rows.

use super::erasure::{ERASABLE_IDS, not_being_erased};
use super::live::LIVE_EVENTS;
use super::{JobTx, Store, StoreError, column, required, to_db_time, with_timeout};
use crate::event::EventType;
use crate::ids::ProjectId;
use crate::sketch::{UserSet, UserSets, user_hash};
use chrono::{DateTime, NaiveDateTime, Utc};
use mysql_async::prelude::Queryable;
use mysql_async::{IsolationLevel, Row, TxOpts, Value};
use std::collections::{BTreeMap, HashMap};

/// The hour a time falls in: hours since 1970-01-01 00:00 UTC.
pub fn hour_of(at: DateTime<Utc>) -> u32 {
    hour_of_seconds(at.timestamp())
}

/// `hour_of` a Unix time in seconds.
pub(super) fn hour_of_seconds(seconds: i64) -> u32 {
    seconds.div_euclid(3_600).clamp(0, i64::from(u32::MAX)) as u32
}

/// When an hour (`hour_of`) begins.
pub fn hour_start(hour: u32) -> DateTime<Utc> {
    DateTime::from_timestamp(i64::from(hour) * 3_600, 0).unwrap_or_default()
}

/// Whether two names (or ids) are one to the database: its `utf8mb4_bin` collation pads, so
/// trailing spaces make no difference to a comparison or a `GROUP BY` (which keeps one of the
/// spellings).
pub fn same_text(a: &str, b: &str) -> bool {
    a.trim_end_matches(' ') == b.trim_end_matches(' ')
}

/// The SQL for a row's hour, as `hour_of` computes it.
pub(super) const ROW_HOUR: &str = "TIMESTAMPDIFF(HOUR, '1970-01-01 00:00:00', timestamp)";

/// The SQL for who an event (`e`) counts as: its userId; else the user its anonymousId was
/// first linked to (by an identify or alias call: a visitor's events from before signing up
/// count as the user they became; a later link of the same id to another user is not
/// followed, as in `links.rs`); else its anonymousId. A new first link, or a first link an
/// erasure deletes, changes who the anonymous events of its id count as, so the consumer
/// (`events.rs`) and the erasure (`erasure.rs`) mark their hours dirty.
///
/// The first link is the least id among the alias's entries of the unique (project, alias,
/// user) index, which carry the id: no sort per event (`ORDER BY id LIMIT 1` took 15 % longer
/// over anonymous events, BENCHMARKS.md).
macro_rules! user_key {
    () => {
        "COALESCE(e.user_id,
           (SELECT a.user_id FROM aliases a WHERE a.id =
              (SELECT MIN(b.id) FROM aliases b WHERE b.project_id = e.project_id AND b.alias = e.anonymous_id)),
           e.anonymous_id)"
    };
}
pub(super) const USER_KEY: &str = user_key!();

/// The SQL for a 64-bit hash of who an event counts as (`USER_KEY`): the journeys' user, the
/// same in `rollup_journey_hours` and from the raw rows. Trailing spaces trimmed: SQL compares
/// ids without them (as `sketch::user_hash` does).
pub(super) const USER_HASH: &str =
    concat!("CAST(CONV(LEFT(MD5(TRIM(TRAILING ' ' FROM ", user_key!(), ")), 16), 16, 10) AS UNSIGNED)");

/// The SQL for a row's millisecond within its hour, the hour's start being the parameter.
pub(super) const MS_IN_HOUR: &str = "TIMESTAMPDIFF(MICROSECOND, ?, timestamp) DIV 1000";

/// `AND condition`, or nothing.
pub(super) fn and(condition: Option<String>) -> String {
    condition.map(|condition| format!("AND {condition}")).unwrap_or_default()
}

/// Marks `(project, hour)` pairs dirty inside the caller's transaction (sorted: see above).
pub(super) async fn mark_dirty(tx: &mut impl Queryable, pairs: &mut Vec<(u64, u32)>) -> Result<(), StoreError> {
    pairs.sort_unstable();
    pairs.dedup();
    for chunk in pairs.chunks(super::IDS_PER_STATEMENT) {
        let values = vec!["(?,?)"; chunk.len()].join(",");
        let params: Vec<Value> = chunk.iter().flat_map(|&(project, hour)| [project.into(), hour.into()]).collect();
        with_timeout(
            tx.exec_drop(format!("INSERT IGNORE INTO rollup_dirty_hours (project_id, hour) VALUES {values}"), params),
        )
        .await?;
    }
    Ok(())
}

/// Marks dirty the hours of the events `condition` (on `events e`, with `params`) selects.
pub(super) async fn mark_dirty_where(
    tx: &mut impl Queryable,
    condition: &str,
    params: Vec<Value>,
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT IGNORE INTO rollup_dirty_hours (project_id, hour)
         SELECT DISTINCT e.project_id, {ROW_HOUR} FROM events e /* with deleted */ WHERE {condition} ORDER BY 1, 2"
    );
    with_timeout(tx.exec_drop(sql, params)).await
}

/// Marks the hours of the events of `anonymous_ids` (of `project`) that have no userId: who
/// they count as (`USER_KEY`) follows their ids' first links, and those changed.
pub(super) async fn mark_hours_of_anonymous_ids(
    tx: &mut impl Queryable,
    project: u64,
    anonymous_ids: &[&str],
) -> Result<(), StoreError> {
    for slice in anonymous_ids.chunks(super::IDS_PER_STATEMENT) {
        let condition = format!(
            "e.project_id = ? AND e.user_id IS NULL AND e.anonymous_id IN ({})",
            super::placeholders(slice.len())
        );
        mark_dirty_where(tx, &condition, super::project_and(project, slice)).await?;
    }
    Ok(())
}

/// Live events of one hour, per type and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourCount {
    pub hour: u32,
    pub kind: EventType,
    /// `""` for events without a name.
    pub name: String,
    pub events: u64,
    pub last_at: DateTime<Utc>,
}

/// Which hours of an answer came from where, and how current the rollups were.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountSource {
    pub rollup_hours: usize,
    pub raw_hours: usize,
    /// The rollups hold every change to a past hour made before this time: the oldest change
    /// the rollups job has yet to count (its hour is read raw meanwhile), or the read's time.
    pub watermark: DateTime<Utc>,
}

impl CountSource {
    /// `[from_hour, to_hour)`, of which `raw_hours` read raw, with the rollups' `watermark`.
    pub(super) fn of(from_hour: u32, to_hour: u32, raw_hours: usize, watermark: DateTime<Utc>) -> Self {
        CountSource { rollup_hours: (to_hour - from_hour) as usize - raw_hours, raw_hours, watermark }
    }

    /// Of two reads for one answer, the one that says the most: the most raw hours, and the
    /// older watermark.
    pub fn merged(self, other: CountSource) -> CountSource {
        let watermark = self.watermark.min(other.watermark);
        let most_raw = if other.raw_hours > self.raw_hours { other } else { self };
        CountSource { watermark, ..most_raw }
    }
}

pub(super) fn kind(name: &str) -> Result<EventType, StoreError> {
    EventType::ALL
        .into_iter()
        .find(|kind| kind.as_str() == name)
        .ok_or_else(|| StoreError::Corrupt(format!("event type {name}")))
}

/// The columns of an hour's count: hour, type, name, events, last time.
type HourCountRow = (u32, String, String, u64, NaiveDateTime);

fn hour_count((hour, kind_text, name, events, last_at): HourCountRow) -> Result<HourCount, StoreError> {
    Ok(HourCount { hour, kind: kind(&kind_text)?, name, events, last_at: super::from_db_time(last_at) })
}

impl Store {
    /// Recomputes the oldest hour marked dirty by `slot` (and before its hour: the current
    /// hour is read raw, and writers mark it all the time) from the raw rows and clears its
    /// mark; `None` when there is none. The rollup step's chunk.
    pub async fn refresh_dirty_hour(tx: &mut JobTx<'_>, slot: DateTime<Utc>) -> Result<Option<u64>, StoreError> {
        let tx = &mut tx.0;
        let next: Option<(u64, u32)> = with_timeout(tx.exec_first(
            "SELECT project_id, hour FROM rollup_dirty_hours WHERE marked_at <= ? AND hour < ?
             ORDER BY marked_at, project_id, hour LIMIT 1",
            (to_db_time(slot), hour_of(slot)),
        ))
        .await?;
        // With no hour dirty, an hour a promotion has yet to count (newest first), recounted whole.
        let next =
            match next {
                Some(next) => Some(next),
                None => {
                    with_timeout(tx.exec_first(
                        "SELECT project_id, hour FROM rollup_property_backfill ORDER BY hour DESC LIMIT 1",
                        (),
                    ))
                    .await?
                }
            };
        let Some((project, hour)) = next else { return Ok(None) };
        // Waits for every writer still holding the mark (their rows are then committed).
        with_timeout(tx.exec_drop("DELETE FROM rollup_dirty_hours WHERE project_id = ? AND hour = ?", (project, hour)))
            .await?;
        let sql = "DELETE FROM rollup_property_backfill WHERE project_id = ? AND hour = ?";
        with_timeout(tx.exec_drop(sql, (project, hour))).await?;
        // Journeys are keyed by name first: deleted by the names the hour held (every one: a
        // blank name, '' or spaces, is kept as '' here and matches both).
        let names: Vec<(String, String)> = with_timeout(
            tx.exec("SELECT type, name FROM rollup_event_hours WHERE project_id = ? AND hour = ?", (project, hour)),
        )
        .await?;
        for chunk in names.chunks(super::IDS_PER_STATEMENT / 2) {
            let pairs = vec!["(type = ? AND name = ?)"; chunk.len()].join(" OR ");
            let mut params: Vec<Value> = vec![project.into(), hour.into()];
            params.extend(chunk.iter().flat_map(|(kind, name)| [kind.as_str().into(), name.as_str().into()]));
            let sql = format!("DELETE FROM rollup_journey_hours WHERE project_id = ? AND hour = ? AND ({pairs})");
            with_timeout(tx.exec_drop(sql, params)).await?;
        }
        for table in ["rollup_event_hours", "rollup_user_hours", "rollup_activity_hours", "rollup_property_hours"] {
            let sql = format!("DELETE FROM {table} WHERE project_id = ? AND hour = ?");
            with_timeout(tx.exec_drop(sql, (project, hour))).await?;
        }
        // Events of subjects whose erasure is in progress count nowhere.
        let (start, end) = (to_db_time(hour_start(hour)), to_db_time(hour_start(hour.saturating_add(1))));
        let mut params: Vec<Value> = vec![project.into(), start.into(), end.into()];
        let erasing = and(not_being_erased(tx, ProjectId(project), ERASABLE_IDS, &mut params).await?);
        // One read of the hour's rows for the counts, the journeys, the activity and the users
        // (each its own INSERT … SELECT read them four times, and reading is most of what they
        // cost: BENCHMARKS.md), in slices of `ROWS_PER_READ` by (time, id): the journeys (one
        // per event, about) are written after each slice, so that the job holds a slice's, not
        // a busy hour's. READ COMMITTED (the job's transactions): read without locking them;
        // through the time index (the hour's rows, in its order) whatever the plan might prefer.
        let select = |after: &str| {
            format!(
                "SELECT type, name, {USER_KEY}, {USER_HASH}, {MS_IN_HOUR}, timestamp, id FROM {} e
                 WHERE project_id = ? AND timestamp >= ? AND timestamp < ? {erasing} {after}
                 ORDER BY timestamp, id LIMIT {ROWS_PER_READ}",
                super::live::live_events_by("ix_events_time")
            )
        };
        let mut tally = HourTally::default();
        let leading = || [Value::from(project), Value::from(hour)];
        loop {
            let mut slice_params = vec![start.into()];
            slice_params.extend_from_slice(&params);
            let after = match tally.last {
                None => "",
                Some((at, id)) => {
                    slice_params.extend([at.into(), at.into(), id.into()]);
                    "AND (timestamp > ? OR (timestamp = ? AND id > ?))"
                }
            };
            let sql = select(after);
            tally.slice_rows = 0;
            with_timeout(async {
                let mut result = tx.exec_iter(sql, slice_params).await?;
                result.for_each(|row| tally.add(row)).await
            })
            .await?;
            if let Some(err) = tally.error.take() {
                return Err(err);
            }
            let whole = tally.slice_rows < ROWS_PER_READ;
            // A journey of the last millisecond read may go on in the next slice.
            let journeys = tally.take_journeys(if whole { None } else { tally.last_ms });
            insert_from_json(tx, JOURNEY_HOURS_FROM_JSON, leading(), &journeys).await?;
            if whole {
                break;
            }
        }
        let tally = tally.finished();
        let rows = tally.events.len() as u64;
        let at = |ms: u32| to_db_time(hour_start(hour) + chrono::Duration::milliseconds(i64::from(ms)));
        let events: Vec<_> = tally
            .events
            .iter()
            .map(|(kind, name, events, last_ms)| (kind, name, events, at(*last_ms).format("%F %T%.3f").to_string()))
            .collect();
        insert_from_json(tx, EVENT_HOURS_FROM_JSON, leading(), &events).await?;
        let activity: Vec<_> =
            tally.activity.iter().map(|&(user_hash, (first, last))| (user_hash, first, last)).collect();
        insert_from_json(tx, ACTIVITY_HOURS_FROM_JSON, leading(), &activity).await?;

        // The hour's users per type; `with_activity`: its activity is rolled up too.
        for (kind, set) in tally.users {
            with_timeout(tx.exec_drop(
                "INSERT INTO rollup_user_hours (project_id, hour, type, users, with_activity) VALUES (?, ?, ?, ?, TRUE)",
                (project, hour, kind, set.to_bytes()),
            ))
            .await?;
        }

        // The hour's values of each promoted property.
        for property in super::properties::promoted_locked(tx, ProjectId(project)).await? {
            let (value, path) = property.value_sql();
            let sql = format!(
                "SELECT type, COALESCE(name, ''), {value} AS v, COUNT(*) FROM {LIVE_EVENTS} e
                 WHERE project_id = ? AND timestamp >= ? AND timestamp < ? {erasing} GROUP BY 1, 2, 3"
            );
            let counted: Vec<(String, String, Option<String>, u64)> =
                with_timeout(tx.exec(sql, [&[path][..], &params].concat())).await?;
            for chunk in counted.chunks(super::IDS_PER_STATEMENT / 8) {
                let values = vec!["(?,?,?,?,?,?,?,?)"; chunk.len()].join(",");
                let mut insert: Vec<Value> = Vec::with_capacity(chunk.len() * 8);
                for (kind, name, value, events) in chunk {
                    let hash = super::properties::value_hash(value.as_deref());
                    insert.extend([
                        project.into(),
                        hour.into(),
                        property.id.into(),
                        kind.as_str().into(),
                        name.as_str().into(),
                        hash.into(),
                        value.as_deref().into(),
                        (*events).into(),
                    ]);
                }
                let sql = format!(
                    "INSERT INTO rollup_property_hours
                     (project_id, hour, property_id, type, name, value_hash, value, events) VALUES {values}"
                );
                with_timeout(tx.exec_drop(sql, insert)).await?;
            }
        }
        Ok(Some(rows))
    }

    /// The live events of `[from_hour, to_hour)` per hour, type and name (`selection`: only
    /// these types, each with one name or all; empty: all), each given to `each` as it is read
    /// (in no particular order; never all held; after an error, what was given is no answer),
    /// exact as of one moment: clean hours from the rollup, dirty ones and those from the
    /// current hour on from the raw rows.
    pub async fn hourly_counts(
        &self,
        project: ProjectId,
        (from_hour, to_hour): (u32, u32),
        selection: &[(Option<EventType>, Option<String>)],
        each: impl FnMut(HourCount) + Send,
    ) -> Result<CountSource, StoreError> {
        let mut conn = self.conn().await?;
        let mut tx = with_timeout(conn.start_transaction(snapshot())).await?;
        let (dirty, current, watermark) = dirty_hours(&mut tx, project, from_hour, to_hour).await?;
        let raw = |hour: u32| hour >= current || dirty.binary_search(&hour).is_ok();

        let (pairs, mut params) = selection_condition(selection);
        params.splice(0..0, [Value::from(project.0), from_hour.into(), current.into()]);
        params.push(Value::from(self.max_rows_read as u64 + 1));
        // Capped by the server as the raw reads are: past it, 422 rather than a 503 to retry.
        let sql = format!(
            "SELECT hour, type, name, events, last_at FROM rollup_event_hours
             WHERE project_id = ? AND hour >= ? AND hour < ? {pairs} LIMIT ?"
        );
        let mut counts = Handing::new(each, self.max_rows_read);
        let mut give = |row: HourCountRow, rolled_up: bool| {
            let count = hour_count(row)?;
            let left_out = rolled_up && raw(count.hour);
            counts.give(count, left_out)
        };
        let sql = super::capped(&sql, &tx);
        let rolled = super::read_each(&mut tx, sql, params, |row| give(row, true)).await?;
        if rolled > self.max_rows_read {
            return Err(StoreError::TooBig);
        }
        let raw_hours: Vec<u32> = (from_hour..to_hour).filter(|&hour| raw(hour)).collect();
        let (pairs, params) = selection_condition(selection);
        let select = format!("{ROW_HOUR} AS hour, type, COALESCE(name, '') AS name, COUNT(*), MAX(timestamp)");
        let group = "GROUP BY 1, 2, 3";
        // Every raw row is given: past the cap, `give` ends the read.
        read_raw_hours(self, &mut tx, project, &raw_hours, (&select, &[]), (&pairs, &params), group, |row| {
            give(row, false)
        })
        .await?;
        with_timeout(tx.commit()).await?;
        Ok(CountSource::of(from_hour, to_hour, raw_hours.len(), watermark))
    }

    /// The users of `[from_hour, to_hour)` (those with events of `kind`, or of any type),
    /// each hour's added to `sets` at `bucket_of_hour(hour)`, exact as of one moment as
    /// `hourly_counts` is. The rollup's rows are merged as they are read, never all held
    /// (after an error, `sets` are no answer).
    pub async fn hourly_users(
        &self,
        project: ProjectId,
        (from_hour, to_hour): (u32, u32),
        kind: Option<EventType>,
        sets: &mut UserSets,
        bucket_of_hour: impl Fn(u32) -> usize + Send + Sync,
    ) -> Result<CountSource, StoreError> {
        let mut conn = self.conn().await?;
        let mut tx = with_timeout(conn.start_transaction(snapshot())).await?;
        let (mut dirty, current, watermark) = dirty_hours(&mut tx, project, from_hour, to_hour).await?;

        let (kind_condition, kind_params) = match kind {
            Some(kind) => ("AND type = ?", vec![Value::from(kind.as_str())]),
            None => ("", Vec::new()),
        };
        let mut params = vec![Value::from(project.0), from_hour.into(), current.into()];
        params.extend(kind_params.iter().cloned());
        // An hour whose events are rolled up without its users (rolled up by a release before
        // migration 0011, after it marked the hour) is read raw, and marked dirty again.
        let sql = format!(
            "SELECT DISTINCT hour FROM (
               SELECT DISTINCT hour, type FROM rollup_event_hours
               WHERE project_id = ? AND hour >= ? AND hour < ? {kind_condition}) counted
             WHERE NOT EXISTS (SELECT 1 FROM rollup_user_hours u
                               WHERE u.project_id = ? AND u.hour = counted.hour AND u.type = counted.type)"
        );
        let mut unrolled_params = params.clone();
        unrolled_params.push(Value::from(project.0));
        let unrolled: Vec<u32> = with_timeout(tx.exec(super::capped(&sql, &tx), unrolled_params)).await?;
        dirty.extend(&unrolled);
        dirty.sort_unstable();
        dirty.dedup();
        let raw = |hour: u32| hour >= current || dirty.binary_search(&hour).is_ok();

        let sql = format!(
            "SELECT hour, users FROM rollup_user_hours
             WHERE project_id = ? AND hour >= ? AND hour < ? {kind_condition} ORDER BY hour, type"
        );
        let merge = |(hour, bytes): (u32, Vec<u8>)| {
            if !raw(hour) {
                let set = UserSet::from_bytes(&bytes).map_err(|err| StoreError::Corrupt(err.to_string()))?;
                sets.merge(bucket_of_hour(hour), &set);
            }
            Ok(())
        };
        let sql = super::capped(&sql, &tx);
        super::read_each(&mut tx, sql, params, merge).await?;

        let raw_hours: Vec<u32> = (from_hour..to_hour).filter(|&hour| raw(hour)).collect();
        let select = format!("DISTINCT {ROW_HOUR} AS hour, {USER_KEY}");
        let add = |(hour, user): (u32, String)| {
            sets.insert(bucket_of_hour(hour), user_hash(&user));
            Ok(())
        };
        let read =
            read_raw_hours(self, &mut tx, project, &raw_hours, (&select, &[]), (kind_condition, &kind_params), "", add)
                .await?;
        with_timeout(tx.commit()).await?;
        if !unrolled.is_empty() {
            // Marked, so that the rollups job rolls their users up.
            let mut hours: Vec<(u64, u32)> = unrolled.iter().map(|&hour| (project.0, hour)).collect();
            let mut tx = with_timeout(conn.start_transaction(TxOpts::default())).await?;
            mark_dirty(&mut tx, &mut hours).await?;
            with_timeout(tx.commit()).await?;
        }
        if read > self.max_rows_read {
            return Err(StoreError::TooBig);
        }
        Ok(CountSource::of(from_hour, to_hour, raw_hours.len(), watermark))
    }
}

/// Hands the counts of one answer (rolled up and raw) to the caller's `each`. A rolled up
/// count of an hour read raw is left out; past `max` counts, nothing more is given and the read
/// ends `TooBig` (the statement's other rows are read and dropped; no other statement runs).
pub(super) struct Handing<F> {
    each: F,
    given: usize,
    max: usize,
}

impl<F> Handing<F> {
    pub(super) fn new(each: F, max: usize) -> Self {
        Self { each, given: 0, max }
    }

    pub(super) fn give<C>(&mut self, count: C, left_out: bool) -> Result<(), StoreError>
    where
        F: FnMut(C),
    {
        if left_out {
            return Ok(());
        }
        self.given += 1;
        if self.given > self.max {
            return Err(StoreError::TooBig);
        }
        (self.each)(count);
        Ok(())
    }
}

/// A read-only snapshot: the rollups and the raw rows as of one moment.
pub(super) fn snapshot() -> TxOpts {
    TxOpts::default()
        .with_isolation_level(IsolationLevel::RepeatableRead)
        .with_consistent_snapshot(true)
        .with_readonly(true)
        .clone()
}

/// The dirty hours of `[from_hour, to_hour)` (ascending), and the current hour (clamped to
/// the range): those and every hour from the current one on are read from the raw rows. And
/// the rollups' watermark (`CountSource::watermark`): the oldest mark of a past hour of the
/// project, where the current hour's marks, which wait for the hour to end, do not count.
pub(super) async fn dirty_hours(
    tx: &mut impl Queryable,
    project: ProjectId,
    from_hour: u32,
    to_hour: u32,
) -> Result<(Vec<u32>, u32, DateTime<Utc>), StoreError> {
    let now = Utc::now();
    // One round trip: the range's dirty hours, then a row of the oldest mark.
    let rows: Vec<(Option<u32>, Option<NaiveDateTime>)> = with_timeout(tx.exec(
        "SELECT hour, NULL FROM rollup_dirty_hours WHERE project_id = ? AND hour >= ? AND hour < ?
         UNION ALL SELECT NULL, MIN(marked_at) FROM rollup_dirty_hours WHERE project_id = ? AND hour < ?",
        (project.0, from_hour, to_hour, project.0, hour_of(now)),
    ))
    .await?;
    let mut dirty: Vec<u32> = rows.iter().filter_map(|(hour, _)| *hour).collect();
    dirty.sort_unstable();
    let oldest = rows.iter().find_map(|(_, marked)| *marked);
    let watermark = oldest.map_or(now, super::from_db_time).min(now);
    Ok((dirty, hour_of(now).clamp(from_hour, to_hour), watermark))
}

/// `SELECT select {group}` over the live events of `hours` (ascending) that `condition` (with
/// `params`) selects, in runs of consecutive hours: one capped range read each, each row given
/// to `each` as it is read (never all held). Returns how many rows were read: at most
/// `Store::max_rows_read` over all the runs, or one more when there are more (the question is
/// too big: the caller answers so, as what came is no answer). `group`: a
/// `GROUP BY …`, or nothing for the rows themselves; a property with a value per event groups
/// as many rows as it has.
#[allow(clippy::too_many_arguments)]
pub(super) async fn read_raw_hours<T: mysql_async::prelude::FromRow + Send + 'static>(
    store: &Store,
    tx: &mut mysql_async::Transaction<'_>,
    project: ProjectId,
    hours: &[u32],
    (select, select_params): (&str, &[Value]),
    (condition, params): (&str, &[Value]),
    group: &str,
    mut each: impl FnMut(T) -> Result<(), StoreError> + Send,
) -> Result<usize, StoreError> {
    let mut erasing_params = Vec::new();
    let erasing = and(not_being_erased(tx, project, ERASABLE_IDS, &mut erasing_params).await?);
    let mut read = 0;
    for run in hours.chunk_by(|a, b| b == &(a + 1)) {
        // One budget for every run: alternating dirty and clean hours do not each get their
        // own.
        if read > store.max_rows_read {
            break;
        }
        let (start, end) = (run[0], run[run.len() - 1] + 1);
        let mut run_params = select_params.to_vec();
        run_params.extend([
            Value::from(project.0),
            to_db_time(hour_start(start)).into(),
            to_db_time(hour_start(end)).into(),
        ]);
        run_params.extend(params.iter().cloned());
        run_params.extend(erasing_params.iter().cloned());
        let sql = format!(
            "SELECT {select} FROM {LIVE_EVENTS} e
             WHERE project_id = ? AND timestamp >= ? AND timestamp < ? {condition} {erasing} {group} LIMIT {}",
            store.max_rows_read + 1 - read
        );
        store.record(&sql, &run_params);
        let sql = super::capped(&sql, tx);
        read += super::read_each(tx, sql, run_params, &mut each).await?;
    }
    Ok(read)
}

/// `AND (…)` for a selection (nothing when it is empty), and its parameters.
pub(super) fn selection_condition(selection: &[(Option<EventType>, Option<String>)]) -> (String, Vec<Value>) {
    if selection.is_empty() {
        return (String::new(), Vec::new());
    }
    let mut params = Vec::new();
    let pairs: Vec<String> = selection
        .iter()
        .map(|(kind, name)| {
            let mut parts = Vec::new();
            if let Some(kind) = kind {
                params.push(Value::from(kind.as_str()));
                parts.push("type = ?");
            }
            if let Some(name) = name {
                params.push(Value::from(name.as_str()));
                // Names are never empty: `''` (the rollups' "no name") matches no raw row. The
                // bare column keeps the (type, name) indexes usable.
                parts.push("name = ?");
            }
            if parts.is_empty() { "TRUE".to_string() } else { format!("({})", parts.join(" AND ")) }
        })
        .collect();
    (format!("AND ({})", pairs.join(" OR ")), params)
}

/// Rows of an hour the rollups job reads at a time.
const ROWS_PER_READ: usize = 50_000;

/// An hour's live rows as the rollups count them, tallied as they stream in, slice by slice.
/// Names are grouped as SQL compares them (without trailing spaces: `utf8mb4_bin` pads), each
/// kept as first seen, as a `GROUP BY` keeps it.
#[derive(Default)]
struct HourTally {
    /// `type NUL name` without trailing spaces → its place in `names`.
    name_index: HashMap<String, u32>,
    /// The row's `type NUL name`, made here without an allocation per row.
    key: String,
    /// (type, name): a missing name counts as '' in the counts, and in no journey.
    names: Vec<(String, String)>,
    /// Per name: its events and the last one's millisecond in the hour.
    counts: Vec<(u64, u32)>,
    /// (name, user hash, millisecond) → events, not yet written.
    journeys: HashMap<(u32, u64, u32), u32>,
    /// User hash → their first and last event's millisecond.
    activity: HashMap<u64, (u32, u32)>,
    users: BTreeMap<String, UserSet>,
    /// The last row read (time and id: where the next slice starts), and its millisecond.
    last: Option<(NaiveDateTime, u64)>,
    last_ms: Option<u32>,
    /// Rows read in the current slice.
    slice_rows: usize,
    /// The first row that could not be read.
    error: Option<StoreError>,
}

/// An hour's tally, in each rollup's key order (rows inserted in the order of the key go in
/// at the end of the pages they fill).
struct TalliedHour {
    /// (type, name, events, last millisecond).
    events: Vec<(String, String, u64, u32)>,
    activity: Vec<(u64, (u32, u32))>,
    users: BTreeMap<String, UserSet>,
}

/// One row of the hour: type, name, who it counts as and their hash, its millisecond in the
/// hour, its time and id.
type HourRow = (String, Option<String>, String, u64, u32, NaiveDateTime, u64);

impl HourTally {
    fn add(&mut self, row: Row) {
        if self.error.is_some() {
            return;
        }
        let read = || -> Result<HourRow, StoreError> {
            Ok((
                required(&row, 0)?,
                column(&row, 1),
                required(&row, 2)?,
                required(&row, 3)?,
                required(&row, 4)?,
                required(&row, 5)?,
                required(&row, 6)?,
            ))
        };
        match read() {
            Ok(columns) => self.count(columns),
            Err(err) => self.error = Some(err),
        }
    }

    fn count(&mut self, (kind, name, user, hash, ms, at, id): HourRow) {
        self.slice_rows += 1;
        self.last = Some((at, id));
        self.last_ms = Some(ms);
        let shown = name.as_deref().unwrap_or_default();
        self.key.clear();
        self.key.push_str(&kind);
        self.key.push('\0');
        self.key.push_str(shown.trim_end_matches(' '));
        let index = match self.name_index.get(self.key.as_str()) {
            Some(&index) => index,
            None => {
                let index = self.names.len() as u32;
                self.names.push((kind.clone(), shown.to_string()));
                self.counts.push((0, 0));
                self.name_index.insert(self.key.clone(), index);
                index
            }
        };
        let (events, last_ms) = &mut self.counts[index as usize];
        *events += 1;
        *last_ms = (*last_ms).max(ms);
        if name.is_some() {
            *self.journeys.entry((index, hash, ms)).or_default() += 1;
        }
        let (first, last) = self.activity.entry(hash).or_insert((ms, ms));
        (*first, *last) = ((*first).min(ms), (*last).max(ms));
        self.users.entry(kind).or_default().insert(user_hash(&user));
    }

    /// The journeys of the milliseconds before `before_ms` (all: `None`), taken out, in the
    /// key's order: (type, name, user hash, millisecond, events).
    fn take_journeys(&mut self, before_ms: Option<u32>) -> Vec<(&str, &str, u64, u32, u32)> {
        let mut taken = Vec::new();
        self.journeys.retain(|&key, &mut events| {
            let done = before_ms.is_none_or(|ms| key.2 < ms);
            if done {
                taken.push((key, events));
            }
            !done
        });
        let names = &self.names;
        taken.sort_unstable_by(|((a, a_user, a_ms), _), ((b, b_user, b_ms), _)| {
            names[*a as usize].cmp(&names[*b as usize]).then((a_user, a_ms).cmp(&(b_user, b_ms)))
        });
        taken
            .into_iter()
            .map(|((name, user_hash, ms), events)| {
                let (kind, name) = &names[name as usize];
                (kind.as_str(), name.as_str(), user_hash, ms, events)
            })
            .collect()
    }

    fn finished(self) -> TalliedHour {
        let mut events: Vec<(String, String, u64, u32)> = self
            .names
            .into_iter()
            .zip(self.counts)
            .map(|((kind, name), (events, last))| (kind, name, events, last))
            .collect();
        events.sort_unstable_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let mut activity: Vec<_> = self.activity.into_iter().collect();
        activity.sort_unstable_by_key(|(hash, _)| *hash);
        TalliedHour { events, activity, users: self.users }
    }
}

/// An hour's (type, name, events, last event's time) into `rollup_event_hours`.
const EVENT_HOURS_FROM_JSON: &str = "INSERT INTO rollup_event_hours (project_id, hour, type, name, events, last_at)
     SELECT ?, ?, t, n, c, l FROM JSON_TABLE(?, '$[*]' COLUMNS (t VARCHAR(8) PATH '$[0]',
       n VARCHAR(255) PATH '$[1]', c BIGINT UNSIGNED PATH '$[2]', l DATETIME(3) PATH '$[3]')) j";

/// An hour's (type, name, user hash, millisecond, events) into `rollup_journey_hours`.
const JOURNEY_HOURS_FROM_JSON: &str =
    "INSERT INTO rollup_journey_hours (project_id, hour, type, name, user_hash, at_ms, events)
     SELECT ?, ?, t, n, u, m, c FROM JSON_TABLE(?, '$[*]' COLUMNS (t VARCHAR(8) PATH '$[0]',
       n VARCHAR(255) PATH '$[1]', u BIGINT UNSIGNED PATH '$[2]', m INT UNSIGNED PATH '$[3]',
       c INT UNSIGNED PATH '$[4]')) j";

/// An hour's (user hash, first millisecond, last millisecond) into `rollup_activity_hours`.
const ACTIVITY_HOURS_FROM_JSON: &str =
    "INSERT INTO rollup_activity_hours (project_id, hour, user_hash, first_ms, last_ms)
     SELECT ?, ?, u, f, l FROM JSON_TABLE(?, '$[*]' COLUMNS (u BIGINT UNSIGNED PATH '$[0]',
       f INT UNSIGNED PATH '$[1]', l INT UNSIGNED PATH '$[2]')) j";

/// Rows per insert from JSON: some hundreds of KiB of JSON for most rows.
const ROWS_PER_INSERT: usize = 10_000;
/// And at most about this much JSON per insert (names of 255 four-byte characters make rows
/// of a KiB), far under any server's `max_allowed_packet` (4 MiB at the least): an hour whose
/// insert the server refused would hold up every hour marked after it.
const JSON_BYTES_PER_INSERT: usize = 1 << 20;

/// Inserts `rows` with `sql`, which reads them from one JSON array of arrays (its last
/// parameter, after `leading`): one statement whatever the number of rows, prepared once per
/// connection, where a multi-row `VALUES` would be a new statement to prepare for every
/// count of rows (an hour's inserts cost about as much either way on the server).
async fn insert_from_json<R: serde::Serialize>(
    tx: &mut impl Queryable,
    sql: &str,
    leading: [Value; 2],
    rows: &[R],
) -> Result<(), StoreError> {
    for json in json_arrays(rows) {
        let params = vec![leading[0].clone(), leading[1].clone(), json.into()];
        with_timeout(tx.exec_drop(sql, params)).await?;
    }
    Ok(())
}

/// `rows` as JSON arrays of at most `ROWS_PER_INSERT` rows, each ending with the row that
/// takes it past `JSON_BYTES_PER_INSERT`.
fn json_arrays<R: serde::Serialize>(rows: &[R]) -> impl Iterator<Item = Vec<u8>> + '_ {
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut json = vec![b'['];
        let mut taken = 0;
        while taken < rest.len() && taken < ROWS_PER_INSERT && json.len() < JSON_BYTES_PER_INSERT {
            if taken > 0 {
                json.push(b',');
            }
            serde_json::to_writer(&mut json, &rest[taken]).expect("tuples of text and numbers serialise");
            taken += 1;
        }
        json.push(b']');
        rest = &rest[taken..];
        Some(json)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_go_in_json_arrays_of_bounded_rows_and_bytes_whole_and_in_order() {
        let long = "\u{1F600}".repeat(255);
        for (rows, most_rows) in [
            ((0..25_000u32).map(|n| ("a".to_string(), n)).collect::<Vec<_>>(), ROWS_PER_INSERT),
            ((0..3_000u32).map(|n| (long.clone(), n)).collect::<Vec<_>>(), 1_024),
        ] {
            let mut back: Vec<(String, u32)> = Vec::new();
            let arrays: Vec<Vec<u8>> = json_arrays(&rows).collect();
            assert!(arrays.len() > 1);
            for json in &arrays {
                let array: Vec<(String, u32)> = serde_json::from_slice(json).expect("a JSON array");
                assert!(array.len() <= most_rows, "{} rows", array.len());
                assert!(json.len() < JSON_BYTES_PER_INSERT + 1_100, "{} bytes", json.len());
                back.extend(array);
            }
            assert_eq!(back, rows);
        }
        assert_eq!(json_arrays::<(String, u32)>(&[]).count(), 0);
    }

    #[test]
    fn hours_count_from_the_epoch_in_utc() {
        let at = DateTime::parse_from_rfc3339("2026-12-02T10:59:59.999+01:00").expect("time").with_timezone(&Utc);
        assert_eq!(hour_of(at), 498_945);
        assert_eq!(hour_start(498_945).to_rfc3339(), "2026-12-02T09:00:00+00:00");
    }
}
