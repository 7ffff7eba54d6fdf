//! At scale (`EVTRACK_BENCH_ONLY=scale`, on demand: building the table takes a while): the
//! consumer storing new events into a table that already holds 10 M events of the same
//! project (90 days, 1 M users, random uuid4 messageIds), against the same consumer into an
//! empty table, for the dedupe key as it is and as it was.
//!
//! Why: with random uuid4 messageIds, a unique (project, messageId) index takes every insert at
//! a random place, and a unique index cannot defer that read, so once it outgrows the buffer
//! pool each insert waits for the disk. The keys measured:
//! - `dedupe key (hour, messageId)`: UNIQUE (project_id, dedupe_hour, message_id), the hour of
//!   the event's own time first (migration 0008): live traffic lands in the current hour's
//!   part of the index, which stays in memory.
//! - the same with MariaDB's change buffer on (`innodb_change_buffering = all`, MySQL 8's
//!   default, off in MariaDB since 10.5.15): inserts into non-unique indexes are deferred.
//! - the same without the user index (project_id, user_id, timestamp), the other index that
//!   random ids hit: a bound (the read side needs that index), not a design.
//! - `dedupe key (messageId)`: UNIQUE (project_id, message_id), the key before migration 0008.
//!
//! Also `evtrack up` end to end (HTTP in, journaled queue, rows out) with the same load as the
//! throughput benchmark's, into an empty table, and into the 10 M rows right after the
//! consumer alone with the current key.

use crate::{cpu_seconds, mariadbd_pid, queued_bodies, run_consumer};
use evtrack::queue::EnvelopeSeal;
use evtrack_consumer::Consumer;
use evtrack_tests::*;
use mysql_async::prelude::Queryable;
use rand::Rng;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

/// Rows of history per LOAD DATA file.
const ROWS_PER_FILE: usize = 1_000_000;
pub(crate) const USERS: u64 = 1_000_000;
const DAYS: i64 = 90;

pub async fn bench_scale() {
    let history: usize = env_number("EVTRACK_BENCH_SCALE_ROWS", 10_000_000);
    let events: usize = env_number("EVTRACK_BENCH_SCALE_EVENTS", 200_000);
    println!(
        "\n## at scale: the consumer storing {events} new events into a table already holding {history} of the project"
    );
    let e2e_events = crate::e2e_events();
    let empty = TestDb::new().await;
    let pool_mib = empty.query::<u64>("SELECT @@innodb_buffer_pool_size DIV 1048576").await[0];
    println!("MariaDB buffer pool: {pool_mib} MiB");
    let (rate, cpu) = consume(&empty, events).await;
    println!("{:<52} {rate:>8.0} events/s, MariaDB {cpu:>6.1} µs per row", "empty table:");
    drop(empty);
    // End to end as users run it (`evtrack up`, journaled queue), into an empty table first.
    let stack = StackProcess::start(&[("EVTRACK_RATE_LIMIT_EVENTS_PER_SECOND", "0")]);
    let into_empty = crate::end_to_end_run(&stack, e2e_events).await;
    drop(stack);
    println!(
        "{:<52} accepted at {:>8.0} events/s, {}",
        format!("end to end, {e2e_events} events, empty table:"),
        into_empty.accepted_per_sec,
        into_empty.stored_against(rate, "the consumer alone into an empty table")
    );

    // The stack makes its project on its first start; the history is loaded into it.
    let db = TestDb::new().await;
    let stack = StackProcess::on(&db, &[("EVTRACK_RATE_LIMIT_EVENTS_PER_SECOND", "0")]);
    let project: Uuid = stack.project_id().await.parse().expect("the project's id");
    let started = Instant::now();
    let project_id = db.query::<u64>(&format!("SELECT id FROM projects WHERE uid = X'{}'", project.simple())).await[0];
    fill(&db, project_id, history).await;
    println!("history of {history} rows loaded and indexed in {:.0} s", started.elapsed().as_secs_f64());
    print_index_sizes(&db).await;
    let consumer_into_full = consume_variant(&db, project, events, history, "dedupe key (hour, messageId)", &[]).await;
    let into_full = crate::end_to_end_run(&stack, e2e_events).await;
    drop(stack);
    println!(
        "{:<52} accepted at {:>8.0} events/s, {}",
        format!("end to end, {e2e_events} events, {history} rows:"),
        into_full.accepted_per_sec,
        into_full.stored_against(into_empty.stored_per_sec, "end to end into an empty table")
    );
    println!(
        "  ratio to the consumer alone into these rows just before: {:.2}",
        into_full.stored_per_sec / consumer_into_full
    );
    // MySQL 8 (RDS, Aurora) buffers changes to non-unique secondary indexes by default;
    // MariaDB stopped doing so in 10.5.15. What that does to the random user index:
    let buffering: String = db.query("SELECT @@GLOBAL.innodb_change_buffering").await.remove(0);
    let variants: [(&str, &[&str]); 3] = [
        ("the same, change buffer on (MySQL 8's default)", &["SET GLOBAL innodb_change_buffering = 'all'"]),
        ("the same without the user index", &["ALTER TABLE events DROP INDEX ix_events_user"]),
        (
            "dedupe key (messageId), as before",
            &["ALTER TABLE events DROP INDEX uq_events_dedupe, ADD UNIQUE KEY uq_events_message (project_id, message_id),
                 ADD KEY ix_events_user (project_id, user_id, timestamp)"],
        ),
    ];
    for (index, (name, statements)) in variants.into_iter().enumerate() {
        consume_variant(&db, project, events, history, name, statements).await;
        if index == 0 {
            db.execute(&format!("SET GLOBAL innodb_change_buffering = '{buffering}'")).await;
        }
    }
}

/// The consumer storing `events` into `db` after `statements` changed it; prints and returns
/// events/s.
async fn consume_variant(
    db: &TestDb,
    project: Uuid,
    events: usize,
    history: usize,
    name: &str,
    statements: &[&str],
) -> f64 {
    let started = Instant::now();
    for statement in statements {
        db.execute(statement).await;
    }
    let changed_in = started.elapsed().as_secs_f64();
    let rows = db.count("events").await;
    let (rate, cpu) = consume_into(db, project, events).await;
    println!(
        "{:<52} {rate:>8.0} events/s, MariaDB {cpu:>6.1} µs per row (table at {rows} rows; the change took {changed_in:.0} s)",
        format!("{history} rows, {name}:"),
    );
    rate
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

/// The consumer (as many workers as `evtrack up` runs) storing `events` new events into a
/// fresh project of `db`: events/s and MariaDB's CPU per row.
async fn consume(db: &TestDb, events: usize) -> (f64, f64) {
    let project = db.store.create_project("bench").await.expect("project").id;
    consume_into(db, project, events).await
}

async fn consume_into(db: &TestDb, project: Uuid, events: usize) -> (f64, f64) {
    let config = config(db, &[]);
    let bodies = queued_bodies(project, Uuid::now_v7(), events, &EnvelopeSeal::from_config(&config)).await;
    let consumer = Arc::new(Consumer::new(db.store.clone(), &config));
    let batches: Arc<Vec<Vec<String>>> = Arc::new(bodies.chunks(10).map(<[String]>::to_vec).collect());
    let database = mariadbd_pid();
    let cpu = database.map_or(f64::NAN, cpu_seconds);
    let before = db.count("events").await;
    let started = Instant::now();
    run_consumer(consumer, batches).await;
    let rate = events as f64 / started.elapsed().as_secs_f64();
    let cpu = database.map_or(f64::NAN, |pid| (cpu_seconds(pid) - cpu) * 1e6 / events as f64);
    assert_eq!(db.count("events").await, before + events as u64, "every event stored once");
    (rate, cpu)
}

/// Loads `rows` events of `project` spread over the last 90 days (in time order, as they
/// would have arrived) with the secondary indexes dropped, then builds them again: far
/// faster than inserting into the indexed table, and the same table afterwards.
pub(crate) async fn fill(db: &TestDb, project: u64, rows: usize) {
    let indexes: Vec<(String, u8, String)> = db
        .query(
            "SELECT INDEX_NAME, MIN(NON_UNIQUE),
                    GROUP_CONCAT(CONCAT(COLUMN_NAME, IFNULL(CONCAT('(', SUB_PART, ')'), '')) ORDER BY SEQ_IN_INDEX)
             FROM information_schema.STATISTICS
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'events' AND INDEX_NAME <> 'PRIMARY'
             GROUP BY INDEX_NAME",
        )
        .await;
    let drops: Vec<String> = indexes.iter().map(|(name, _, _)| format!("DROP INDEX {name}")).collect();
    db.execute(&format!("ALTER TABLE events {}", drops.join(", "))).await;
    let opts = mysql_async::Opts::from_url(db.url.expose()).expect("url");
    let now = chrono::Utc::now().timestamp_millis();
    let span = DAYS * 86_400_000;
    let mut written = 0;
    while written < rows {
        let count = ROWS_PER_FILE.min(rows - written);
        let path = std::env::temp_dir().join(format!("evtrack-scale-{}.tsv", Uuid::now_v7().simple()));
        let (first, path_for_writer) = (written, path.clone());
        tokio::task::spawn_blocking(move || {
            write_history(&path_for_writer, project, first, count, rows, now - span, span)
        })
        .await
        .expect("writer");
        let handler = mysql_async::WhiteListFsHandler::new([&path]);
        let mut conn = mysql_async::Conn::new(
            mysql_async::OptsBuilder::from_opts(opts.clone()).local_infile_handler(Some(handler)),
        )
        .await
        .expect("connection");
        conn.query_drop(format!(
            "LOAD DATA LOCAL INFILE '{}' INTO TABLE events
             (@uid, project_id, message_id, type, name, user_id, anonymous_id, properties, context,
              timestamp, original_timestamp, sent_at, received_at, created_at, ip)
             SET uid = UNHEX(@uid), dedupe_hour = TIMESTAMPDIFF(HOUR, '1970-01-01 00:00:00', original_timestamp)",
            path.display()
        ))
        .await
        .expect("LOAD DATA");
        conn.disconnect().await.ok();
        std::fs::remove_file(&path).ok();
        written += count;
    }
    let adds: Vec<String> = indexes
        .iter()
        .map(|(name, non_unique, columns)| {
            format!("ADD {}KEY {name} ({columns})", if *non_unique == 0 { "UNIQUE " } else { "" })
        })
        .collect();
    db.execute(&format!("ALTER TABLE events {}", adds.join(", "))).await;
    db.execute("ANALYZE TABLE events").await;
}

/// Rows `first..first + count` of `total`, evenly spread from `start` over `span` ms.
fn write_history(
    path: &std::path::Path,
    project: u64,
    first: usize,
    count: usize,
    total: usize,
    start: i64,
    span: i64,
) {
    const NAMES: usize = 200;
    // Where a product was listed: a property with a few text values.
    const LISTS: [&str; 4] = ["search results", "home page", "category page", "recommended"];
    let mut rng = rand::rng();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).expect("TSV file"));
    for row in first..first + count {
        let at_ms = start + span * row as i64 / total as i64;
        let at = chrono::DateTime::from_timestamp_millis(at_ms).expect("time").format("%Y-%m-%d %H:%M:%S%.3f");
        let seconds = (at_ms / 1000) as u64;
        let uid = Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, seconds, (at_ms % 1000) as u32 * 1_000_000));
        let message_id = uuid::Builder::from_random_bytes(rng.random()).into_uuid();
        // Zipf-like names: a few are most of the traffic.
        let name = (NAMES as f64).powf(rng.random::<f64>()) as usize;
        let user = rng.random_range(0..USERS);
        let anonymous = uuid::Builder::from_random_bytes(rng.random()).into_uuid();
        writeln!(
            out,
            "{}\t{project}\t{message_id}\ttrack\tEvent {name}\tuser-{user:07}\t{anonymous}\t\
             {{\"product_id\":\"sku-{}\",\"price\":19.99,\"currency\":\"EUR\",\"category\":\"shoes\",\"position\":{},\"list\":\"{}\"}}\t\
             {{\"library\":{{\"name\":\"analytics-python\",\"version\":\"2.4.0\"}},\"locale\":\"de-DE\"}}\t\
             {at}\t{at}\t{at}\t{at}\t{at}\t203.0.113.0",
            uid.simple(),
            row % 997,
            row % 12,
            LISTS[rng.random_range(0..LISTS.len())],
        )
        .expect("write");
    }
    out.flush().expect("flush");
}

async fn print_index_sizes(db: &TestDb) {
    let sizes: Vec<(String, u64)> = db
        .query(
            "SELECT index_name, stat_value * @@innodb_page_size DIV 1048576 FROM mysql.innodb_index_stats
             WHERE database_name = DATABASE() AND table_name = 'events' AND stat_name = 'size' ORDER BY index_name",
        )
        .await;
    let shown: Vec<String> = sizes.iter().map(|(name, mib)| format!("{name} {mib} MiB")).collect();
    println!("index sizes: {}", shown.join(", "));
}
