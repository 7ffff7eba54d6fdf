//! The read side at scale (`EVTRACK_BENCH_ONLY=reads`, on demand: loading the table takes a
//! while): 10 M events of one project (90 days, 200 names with a Zipf distribution, 1 M
//! users, loaded as `scale.rs` loads them), the rollups built by the rollups job, then
//! each question asked through the api's router (as `evtrack up` and the Lambda serve it, with
//! a read key) against the same question as one hand-written SQL statement run directly on
//! the same connection pool: medians of 11 runs each, and their ratio.

use crate::scale::{USERS, fill};
use evtrack::ids::ProjectId;
use evtrack::jobs::Trigger;
use evtrack::keys::Scope;
use evtrack::keys::keyring::Keyring;
use evtrack_tests::*;
use http::Request;
use mysql_async::prelude::Queryable;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

const RUNS: usize = 11;
const COLUMNS: &str = "uid, message_id, type, name, user_id, anonymous_id, group_id, previous_id,
     properties, traits, context, timestamp, received_at, ip, deleted_at, id";

pub async fn bench_reads() {
    let rows: usize = std::env::var("EVTRACK_BENCH_READS_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    println!(
        "\n## the read side: questions over {rows} stored events of one project (90 days, 200 names, {USERS} users)"
    );
    let db = TestDb::new().await;
    let project = db.store.create_project("reads").await.expect("project").id;
    let project_id = db.query::<u64>(&format!("SELECT id FROM projects WHERE uid = X'{}'", project.simple())).await[0];
    let started = Instant::now();
    fill(&db, project_id, rows).await;
    println!("loaded and indexed in {:.0} s", started.elapsed().as_secs_f64());

    // The rollups, as after migration 0010 on an existing table: every hour dirty, then the
    // rollups job.
    let config = config(&db, &[]);
    let users = db.function_users().await;
    let jobs = job_runners(&users, &config);
    let started = Instant::now();
    db.execute(
        "INSERT IGNORE INTO rollup_dirty_hours (project_id, hour)
         SELECT DISTINCT project_id, TIMESTAMPDIFF(HOUR, '1970-01-01 00:00:00', timestamp) FROM events",
    )
    .await;
    let marked = started.elapsed().as_secs_f64();
    let hours = db.count("rollup_dirty_hours").await;
    let started = Instant::now();
    let runs = roll_up(&db, &jobs).await;
    let built = started.elapsed().as_secs_f64() - 1.1 * runs as f64;
    println!(
        "rollups: {hours} hours marked in {marked:.1} s, recomputed by {runs} runs of the rollups job in {built:.1} s ({:.0} events/s)",
        rows as f64 / built
    );

    let sizes: Vec<(String, u64, u64)> = db
        .query(
            "SELECT table_name, table_rows, (data_length + index_length) DIV 1048576 FROM information_schema.tables
             WHERE table_schema = DATABASE()
               AND table_name IN ('events', 'rollup_event_hours', 'rollup_journey_hours', 'rollup_activity_hours')
             ORDER BY table_name",
        )
        .await;
    for (table, rows, mib) in sizes {
        println!("{table}: about {rows} rows, {mib} MiB with its indexes");
    }
    // EVTRACK_BENCH_READS_ONLY=lists,trends,users,journeys: only these groups of questions.
    let only = std::env::var("EVTRACK_BENCH_READS_ONLY").unwrap_or_default();
    let wanted = |group: &str| only.is_empty() || only.split(',').any(|one| one.trim() == group);

    let keyring = Arc::new(Keyring::from_config(users.store("api"), &config).expect("keyring"));
    let api = Arc::new(evtrack_api::Api::new(&config, users.store("api"), keyring, jobs.clone()));
    let router = evtrack_api::router(api);
    let (_, read) = issue_key(&db.store, &config, Some(project), Scope::Read, "bench").await;
    let read = read.reveal().to_string();
    let (_, admin) = issue_key(&db.store, &config, None, Scope::Admin, "bench-admin").await;
    let admin = admin.reveal().to_string();
    let pool = mysql_async::Pool::new(mysql_async::Opts::from_url(db.url.expose()).expect("url"));

    let now = chrono::Utc::now();
    let day = |days: i64| (now - chrono::Duration::days(days)).format("%Y-%m-%d %H:%M:%S").to_string();
    let iso = |days: i64| (now - chrono::Duration::days(days)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let p = project_id;
    let live = "deleted_at IS NULL";
    let newest = "ORDER BY timestamp DESC, id DESC LIMIT 100";

    println!(
        "the benchmark's RSS before the questions: {} MiB (the api function has ApiMemorySize: 1,024 MB by default, at least 256)",
        memory_kib(std::process::id(), "VmRSS") / 1024
    );
    println!(
        "\n{:<44} {:>10} {:>10} {:>7} {:>10}  evtrack's answer",
        "question (median of 11; lists: 51, by turns)", "evtrack", "SQL alone", "ratio", "peak RSS"
    );
    let report = |name: &str, ours: Measured, direct: Option<Duration>, note: String| {
        let Measured { time: ours, peak_rss_kib } = ours;
        let ours_text = ours.map_or("—".to_string(), |ours| format!("{:.1}ms", ms(ours)));
        let direct_text = direct.map_or(format!("> {SQL_CAP_SECONDS} s"), |direct| format!("{:.1}ms", ms(direct)));
        let ratio = match (ours, direct) {
            (Some(ours), Some(direct)) => format!("{:.2}", ms(ours) / ms(direct).max(0.001)),
            (Some(_), None) => format!("< {:.3}", ms(ours.unwrap_or_default()) / (SQL_CAP_SECONDS as f64 * 1e3)),
            _ => "—".to_string(),
        };
        let rss_text = peak_rss_kib.map_or("—".to_string(), |kib| format!("{:.0}MiB", kib as f64 / 1024.0));
        let note = if ours.is_none() { "422: over the 5 s cap".to_string() } else { note };
        println!("{name:<44} {ours_text:>10} {direct_text:>10} {ratio:>7} {rss_text:>10}  {note}");
    };
    let list_questions: Vec<(&str, String, String)> = vec![
        (
            "latest page (100)",
            "/v1/events?limit=100".into(),
            format!("SELECT {COLUMNS} FROM events WHERE project_id = {p} AND {live} {newest}"),
        ),
        (
            "one name over 7 days",
            format!("/v1/events?type=track&name=Event%2017&from={}&limit=100", iso(7)),
            format!(
                "SELECT {COLUMNS} FROM events WHERE project_id = {p} AND type = 'track' AND name = 'Event 17' AND timestamp >= '{}' AND {live} {newest}",
                day(7)
            ),
        ),
        (
            "a property filter (1 in 12 rows)",
            "/v1/events?where=properties.position:eq:5&limit=100".into(),
            format!(
                "SELECT {COLUMNS} FROM events WHERE project_id = {p} AND JSON_UNQUOTE(JSON_EXTRACT(properties, '$.position')) = '5' AND {live} {newest}"
            ),
        ),
        (
            "a user's timeline",
            "/v1/users/user-0000042/events?limit=100".into(),
            // The user's events: its userId, or its anonymousId on events without one (the
            // table holds no links to follow).
            format!(
                "SELECT {COLUMNS} FROM events WHERE project_id = {p}
                 AND (user_id = 'user-0000042' OR (user_id IS NULL AND anonymous_id = 'user-0000042')) AND {live} {newest}"
            ),
        ),
    ];
    for (name, uri, sql) in list_questions.into_iter().filter(|_| wanted("lists")) {
        let (ours, direct, answer) = timed_by_turns(&router, &read, &uri, &pool, &sql).await;
        let items = answer["data"].as_array().map_or(0, Vec::len);
        report(name, ours, Some(direct), format!("{items} events, cursor: {}", answer["next_cursor"].is_string()));
        // As measured until 2026-12-07: all of evtrack's runs, then all of the SQL's (now after
        // the runs by turns, so on warmer caches than before).
        let (ours, _) = timed_api(&router, &read, "GET", &uri, None).await;
        let (ours, direct) = (ours.time.unwrap_or_default(), timed_sql(&pool, &sql).await.unwrap_or_default());
        println!(
            "{:<44} {:>9.1}ms {:>8.1}ms {:>7.2}  ({RUNS} of evtrack, then {RUNS} of the SQL)",
            "  the same, one after the other",
            ms(ours),
            ms(direct),
            ms(ours) / ms(direct).max(0.001)
        );
    }

    // Where the latest page's time goes: a request refused right after its key check, the
    // store's read alone (on the api's pool), and the whole request.
    if wanted("lists") {
        let key_check = median(async || {
            let request = Request::builder()
                .uri("/v1/events?limit=0")
                .header(http::header::AUTHORIZATION, format!("Bearer {read}"))
                .body(axum::body::Body::empty())
                .expect("request");
            let started = Instant::now();
            let response = router.clone().oneshot(request).await.expect("answer");
            assert_eq!(response.status(), http::StatusCode::BAD_REQUEST);
            started.elapsed()
        })
        .await;
        let store = users.store("api");
        let read_alone = median(async || {
            let started = Instant::now();
            let filter = evtrack::store::EventFilter::default();
            let page = store.list_events(ProjectId(p), &filter, None, 100, config.list_rows_examined).await;
            assert_eq!(page.expect("a page").items.len(), 100);
            started.elapsed()
        })
        .await;
        let whole = median(async || api_call(&router, &read, "GET", "/v1/events?limit=100", None).await.0).await;
        let user_ids = median(async || {
            let started = Instant::now();
            store.user_ids(ProjectId(p), "user-0000042").await.expect("the user's ids");
            started.elapsed()
        })
        .await;
        println!(
            "{:<44} key check {:.2} ms, the store's read {:.2} ms, the whole request {:.2} ms",
            "  the latest page's time",
            ms(key_check),
            ms(read_alone),
            ms(whole)
        );
        println!("{:<44} its ids (profile and links) {:.2} ms", "  a timeline's lookup of the user", ms(user_ids));
    }

    // Page 1,000: following cursors (each request costs what page 1 costs) against OFFSET.
    if wanted("lists") {
        let mut cursor = String::new();
        let started = Instant::now();
        for _ in 0..999 {
            let uri = if cursor.is_empty() {
                "/v1/events?limit=100".to_string()
            } else {
                format!("/v1/events?limit=100&cursor={cursor}")
            };
            let (_, answer) = api_call(&router, &read, "GET", &uri, None).await;
            cursor = answer["next_cursor"].as_str().expect("a cursor").to_string();
        }
        let walk = started.elapsed();
        let (ours, _) = timed_api(&router, &read, "GET", &format!("/v1/events?limit=100&cursor={cursor}"), None).await;
        let direct = timed_sql(
            &pool,
            &format!("SELECT {COLUMNS} FROM events WHERE project_id = {p} AND {live} {newest} OFFSET 99900"),
        )
        .await;
        report(
            "page 1,000: by cursor vs by OFFSET",
            ours,
            direct,
            format!("999 pages before it in {:.1} s", walk.as_secs_f64()),
        );
    }

    // An export of the last 7 days through the api (answers of at most 4 MB, each cursor
    // followed, as `evtrack export` does) against the same rows streamed by one statement.
    if wanted("lists") {
        let export = format!("/v1/events/export?from={}&to={}", iso(7), iso(0));
        let sql = format!(
            "SELECT {COLUMNS} FROM events WHERE project_id = {p} AND timestamp >= '{}' AND timestamp < '{}' AND {live}
             ORDER BY timestamp, id",
            day(7),
            day(0)
        );
        let (mut ours, mut direct) = (Vec::new(), Vec::new());
        let (mut lines, mut bytes, mut answers, mut rows) = (0, 0, 0, 0);
        for _ in 0..3 {
            let started = Instant::now();
            (lines, bytes, answers) = export_all(&router, &read, &export).await;
            ours.push(started.elapsed());
            let started = Instant::now();
            let mut conn = pool.get_conn().await.expect("connection");
            rows = 0;
            conn.query_iter(&sql).await.expect(&sql).for_each(|_| rows += 1).await.expect(&sql);
            direct.push(started.elapsed());
        }
        assert_eq!(lines, rows, "the export holds the week's events");
        ours.sort();
        direct.sort();
        report(
            "export of the last 7 days (NDJSON, median of 3)",
            Some(ours[1]).into(),
            Some(direct[1]),
            format!(
                "{lines} events, {:.1} MB in {answers} answers, {:.0} events/s",
                bytes as f64 / 1e6,
                lines as f64 / ours[1].as_secs_f64()
            ),
        );
    }

    let trend = |series: Value, days: i64, interval: &str, extra: Value| {
        let mut question = json!({"series": series, "from": iso(days), "to": iso(0), "interval": interval});
        if let (Some(question), Some(extra)) = (question.as_object_mut(), extra.as_object()) {
            question.extend(extra.clone());
        }
        question
    };
    let top = json!([{"event": "Event 1"}]);
    let count_sql = |from: i64, bucket: &str, measure: &str| {
        format!(
            "SELECT {bucket}, {measure} FROM events WHERE project_id = {p} AND type = 'track' AND name = 'Event 1'
             AND timestamp >= '{}' AND {live} GROUP BY 1",
            day(from)
        )
    };
    let trend_questions: Vec<(&str, Value, String)> = vec![
        (
            "trend 90 days daily, top name (rollups)",
            trend(top.clone(), 90, "day", json!({})),
            count_sql(90, "DATE(timestamp)", "COUNT(*)"),
        ),
        (
            "the same from the raw rows",
            trend(top.clone(), 90, "day", json!({"source": "raw"})),
            count_sql(90, "DATE(timestamp)", "COUNT(*)"),
        ),
        (
            "trend 90 days daily, every track (rollups)",
            trend(json!([{"type": "track"}]), 90, "day", json!({})),
            format!(
                "SELECT DATE(timestamp), COUNT(*) FROM events WHERE project_id = {p} AND type = 'track' AND timestamp >= '{}' AND {live} GROUP BY 1",
                day(90)
            ),
        ),
        (
            "the same from the raw rows",
            trend(json!([{"type": "track"}]), 90, "day", json!({"source": "raw"})),
            format!(
                "SELECT DATE(timestamp), COUNT(*) FROM events WHERE project_id = {p} AND type = 'track' AND timestamp >= '{}' AND {live} GROUP BY 1",
                day(90)
            ),
        ),
        (
            "hourly unique users, 7 days, top name (journeys' rollup)",
            trend(top.clone(), 7, "hour", json!({"math": "unique_users"})),
            count_sql(7, "TIMESTAMPDIFF(HOUR, '1970-01-01 00:00:00', timestamp)", "COUNT(DISTINCT user_id)"),
        ),
        (
            "the same from the raw rows",
            trend(top.clone(), 7, "hour", json!({"math": "unique_users", "source": "raw"})),
            count_sql(7, "TIMESTAMPDIFF(HOUR, '1970-01-01 00:00:00', timestamp)", "COUNT(DISTINCT user_id)"),
        ),
        (
            "breakdown by product, top 25, 30 days",
            trend(top.clone(), 30, "day", json!({"breakdown": {"property": "properties.product_id", "limit": 25}})),
            count_sql(30, "DATE(timestamp), JSON_UNQUOTE(JSON_EXTRACT(properties, '$.product_id'))", "COUNT(*)")
                .replace("GROUP BY 1", "GROUP BY 1, 2"),
        ),
    ];
    // The same breakdown by a promoted property (12 values), and totals filtered on another
    // (4 text values), once the rollups job has counted them (their promotions' backfill).
    if wanted("trends") {
        for property in ["properties.position", "properties.list"] {
            let promote = format!("/v1/properties/{property}/promote?project={project}");
            let (_, promoted) = api_call(&router, &admin, "POST", &promote, None).await;
            assert_eq!(promoted["property"], property, "{promoted}");
        }
        let started = Instant::now();
        let runs = roll_up(&db, &jobs).await;
        println!(
            "promoting properties.position and properties.list: their backfill took {runs} runs of the rollups job, {:.1} s",
            started.elapsed().as_secs_f64() - 1.1 * runs as f64
        );
        let position_sql =
            count_sql(30, "DATE(timestamp), JSON_UNQUOTE(JSON_EXTRACT(properties, '$.position'))", "COUNT(*)")
                .replace("GROUP BY 1", "GROUP BY 1, 2");
        let by_position = json!({"breakdown": {"property": "properties.position", "limit": 25}});
        let mut trend_questions = trend_questions;
        trend_questions.push((
            "breakdown by a promoted property (position, 12 values), top 25, 30 days (rollups)",
            trend(top.clone(), 30, "day", by_position.clone()),
            position_sql.clone(),
        ));
        let mut raw = by_position;
        raw["source"] = json!("raw");
        trend_questions.push(("the same from the raw rows", trend(top.clone(), 30, "day", raw), position_sql));
        let listed_sql = count_sql(30, "DATE(timestamp)", "COUNT(*)")
            .replace("GROUP BY 1", "AND JSON_UNQUOTE(JSON_EXTRACT(properties, '$.list')) = 'home page' GROUP BY 1");
        let listed = json!([{"event": "Event 1", "where": ["properties.list:eq:home page"]}]);
        trend_questions.push((
            "totals filtered on a promoted property (list eq home page), 30 days (rollups)",
            trend(listed.clone(), 30, "day", json!({})),
            listed_sql.clone(),
        ));
        trend_questions.push((
            "the same from the raw rows",
            trend(listed, 30, "day", json!({"source": "raw"})),
            listed_sql,
        ));
        for (name, question, sql) in trend_questions {
            let (ours, answer) = timed_api(&router, &read, "POST", "/v1/query/trends", Some(&question)).await;
            let direct = timed_sql(&pool, &sql).await;
            // Events, or for unique users the sum over the buckets.
            let values =
                |line: &Value| line["values"].as_array().map_or(0, |v| v.iter().filter_map(Value::as_u64).sum::<u64>());
            let total: u64 = answer["series"].as_array().map_or(0, |lines| lines.iter().map(values).sum());
            report(name, ours, direct, format!("source {}, {total} counted", answer["source"]["kind"]));
        }
        let (ours, answer) = timed_api(&router, &read, "GET", &format!("/v1/event-names?from={}", iso(30)), None).await;
        let direct = timed_sql(
        &pool,
        &format!("SELECT type, name, COUNT(*), MAX(timestamp) FROM events WHERE project_id = {p} AND timestamp >= '{}' AND {live} GROUP BY 1, 2", day(30)),
    )
    .await;
        report(
            "event names, 30 days (rollups)",
            ours,
            direct,
            format!("{} names", answer["data"].as_array().map_or(0, Vec::len)),
        );
    }

    // Users: whole UTC days up to today's midnight, so that evtrack's buckets and the SQL's
    // days are the same.
    let today = now.date_naive().and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let midnight = |days: i64| today - chrono::Duration::days(days);
    let users_question = |math: &str, interval: &str| json!({"series": [{"type": "any"}], "from": midnight(90), "to": today, "interval": interval, "math": math});
    let window_sql = |days: i64| {
        format!(
            "SELECT d.day, COUNT(DISTINCT COALESCE(e.user_id, e.anonymous_id)) FROM
               (SELECT DISTINCT DATE(timestamp) AS day FROM events WHERE project_id = {p} AND timestamp >= '{}' AND timestamp < '{}') d
             JOIN events e ON e.project_id = {p} AND e.timestamp >= d.day - INTERVAL {} DAY
               AND e.timestamp < d.day + INTERVAL 1 DAY AND e.deleted_at IS NULL
             GROUP BY d.day ORDER BY d.day",
            midnight(90).format("%F"),
            today.format("%F"),
            days - 1
        )
    };
    let users_questions: Vec<(&str, Value, String)> = vec![
        (
            "DAU, 90 days (rollups)",
            users_question("dau", "day"),
            format!(
                "SELECT DATE(timestamp), COUNT(DISTINCT COALESCE(user_id, anonymous_id)) FROM events WHERE project_id = {p}
                 AND timestamp >= '{}' AND timestamp < '{}' AND {live} GROUP BY 1 ORDER BY 1",
                midnight(90).format("%F"),
                today.format("%F")
            ),
        ),
        ("WAU, 90 days daily (rollups)", users_question("wau", "day"), window_sql(7)),
        ("MAU, 90 days daily (rollups)", users_question("mau", "day"), window_sql(30)),
        (
            "unique users, 90 days weekly (rollups)",
            users_question("unique_users", "week"),
            format!(
                "SELECT YEARWEEK(timestamp, 3), COUNT(DISTINCT COALESCE(user_id, anonymous_id)) FROM events WHERE project_id = {p}
                 AND timestamp >= '{}' AND timestamp < '{}' AND {live} GROUP BY 1 ORDER BY 1",
                midnight(90).format("%F"),
                today.format("%F")
            ),
        ),
    ];
    for (name, question, sql) in users_questions.into_iter().filter(|_| wanted("users")) {
        let (ours, answer) = timed_api(&router, &read, "POST", "/v1/query/trends", Some(&question)).await;
        let (direct, rows) = timed_sql_rows(&pool, &sql).await;
        let values: Vec<u64> = answer["series"][0]["values"]
            .as_array()
            .map_or_else(Vec::new, |values| values.iter().filter_map(Value::as_u64).collect());
        let exact: Vec<u64> = rows.iter().map(|row| row.get::<u64, _>(1).unwrap_or_default()).collect();
        // The weekly SQL's first week starts at the range's start, evtrack's on its Monday: only
        // buckets that cover the same days are compared.
        let compared: Vec<(u64, u64)> = if name.contains("weekly") {
            values.iter().zip(&exact).skip(1).take(exact.len().saturating_sub(2)).map(|(a, b)| (*a, *b)).collect()
        } else {
            values.iter().zip(&exact).map(|(a, b)| (*a, *b)).collect()
        };
        let worst = compared
            .iter()
            .map(|(ours, exact)| (*ours as f64 - *exact as f64).abs() / (*exact).max(1) as f64)
            .fold(0.0, f64::max);
        let error = if compared.is_empty() {
            String::new()
        } else {
            format!(
                ", largest error against the SQL's exact counts {:.2} % over {} buckets",
                worst * 100.0,
                compared.len()
            )
        };
        let exactness = if answer["series"][0]["exact"] == true { "exact" } else { "estimate" };
        report(name, ours, direct, format!("source {}, {exactness}{error}", answer["source"]["kind"]));
    }

    if !wanted("journeys") {
        pool.disconnect().await.ok();
        return;
    }
    // A 3-step funnel over the last 7 whole days (window 7 days), against the same question as
    // self-joins on the user index: the same counts.
    let question = json!({"steps": [{"event": "Event 1"}, {"event": "Event 2"}, {"event": "Event 3"}],
        "from": midnight(7), "to": today, "window_hours": 168});
    let (ours, answer) = timed_api(&router, &read, "POST", "/v1/query/funnels", Some(&question)).await;
    let step = |alias: &str, name: &str, after: &str| {
        format!(
            "LEFT JOIN events {alias} ON {alias}.project_id = a.project_id AND {alias}.user_id = a.user_id
               AND {alias}.type = 'track' AND {alias}.name = '{name}' AND {alias}.timestamp >= {after}.timestamp
               AND {alias}.timestamp <= a.timestamp + INTERVAL 7 DAY AND {alias}.deleted_at IS NULL"
        )
    };
    let sql = format!(
        "SELECT COUNT(DISTINCT a.user_id), COUNT(DISTINCT b.user_id), COUNT(DISTINCT c.user_id) FROM events a {} {}
         WHERE a.project_id = {p} AND a.type = 'track' AND a.name = 'Event 1' AND a.timestamp >= '{}' AND a.timestamp < '{}'
           AND a.deleted_at IS NULL",
        step("b", "Event 2", "a"),
        step("c", "Event 3", "b"),
        midnight(7).format("%F"),
        today.format("%F")
    );
    let (direct, rows) = timed_sql_rows(&pool, &sql).await;
    let ours_steps: Vec<u64> = answer["steps"]
        .as_array()
        .map_or_else(Vec::new, |steps| steps.iter().filter_map(|s| s["users"].as_u64()).collect());
    let sql_steps: Vec<u64> =
        rows.first().map_or_else(Vec::new, |row| (0..3).map(|i| row.get::<u64, _>(i).unwrap_or_default()).collect());
    report(
        "3-step funnel, 7 days",
        ours,
        direct,
        format!("{ours_steps:?} users (SQL {sql_steps:?}), {}", described(&answer["source"])),
    );
    let mut raw = question.clone();
    raw["source"] = json!("raw");
    let (ours, answer) = timed_api(&router, &read, "POST", "/v1/query/funnels", Some(&raw)).await;
    report("the same from the raw rows", ours, direct, described(&answer["source"]));

    // 8-week retention: cohorts by first Event 10, returning with Event 3 (about 7 % of the
    // events: "any event" over 8 weeks of 10 M rows is past the rows a question may read).
    let monday = midnight(56).date_naive().week(chrono::Weekday::Mon).first_day();
    let start = monday.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let question = json!({"from": start, "interval": "week", "periods": 8,
        "cohort_event": {"event": "Event 10"}, "return_event": {"event": "Event 3"}});
    let (ours, answer) = timed_api(&router, &read, "POST", "/v1/query/retention", Some(&question)).await;
    let mut raw = question.clone();
    raw["source"] = json!("raw");
    let (raw_ours, raw_answer) = timed_api(&router, &read, "POST", "/v1/query/retention", Some(&raw)).await;
    let end = start + chrono::Duration::weeks(8);
    let (from_text, end_text) = (start.format("%F").to_string(), end.format("%F").to_string());
    let in_range = format!("timestamp >= '{from_text}' AND timestamp < '{end_text}'");
    let sql = retention_sql(p, (&from_text, &end_text), &format!("AND {in_range}"), "");
    let (direct, rows) = timed_sql_rows(&pool, &sql).await;
    let (joined, returned) = cohort_sums(&answer);
    let sql_returned = sql_returns(&rows);
    report(
        "8-week retention, weekly cohorts",
        ours,
        direct,
        format!("{joined} users in cohorts, {returned} returns (SQL {sql_returned}), {}", described(&answer["source"])),
    );
    report("the same from the raw rows", raw_ours, direct, described(&raw_answer["source"]));

    // The same cohorts of new users only: Event 10 for the first time ever (the 28 to 34
    // days of events before the range, as the weekday falls, are read too).
    let mut first_ever = question.clone();
    first_ever["cohort_by"] = json!("first_ever");
    let (ours, answer) = timed_api(&router, &read, "POST", "/v1/query/retention", Some(&first_ever)).await;
    first_ever["source"] = json!("raw");
    let (raw_ours, raw_answer) = timed_api(&router, &read, "POST", "/v1/query/retention", Some(&first_ever)).await;
    let first_in_range = format!("HAVING MIN(timestamp) >= '{from_text}' AND MIN(timestamp) < '{end_text}'");
    let sql = retention_sql(p, (&from_text, &end_text), "", &first_in_range);
    let (direct, rows) = timed_sql_rows(&pool, &sql).await;
    let (joined, returned) = cohort_sums(&answer);
    let sql_returned = sql_returns(&rows);
    report(
        "the same, new users only (first ever)",
        ours,
        direct,
        format!(
            "{joined} new users in cohorts, {returned} returns (SQL {sql_returned}), {}; before the range: {}",
            described(&answer["source"]),
            described(&answer["source"]["before_range"])
        ),
    );
    report("the same from the raw rows", raw_ours, direct, described(&raw_answer["source"]["before_range"]));

    // The same weeks on any event (the dashboard's default): from the activity rollup, of a
    // sample of the users where its rows would pass what a question may read.
    for (name, new_only) in [("8-week retention, any event", false), ("the same, new users only (first ever)", true)] {
        let mut question = json!({"from": start, "interval": "week", "periods": 8});
        if new_only {
            question["cohort_by"] = json!("first_ever");
        }
        let (ours, answer) = timed_api(&router, &read, "POST", "/v1/query/retention", Some(&question)).await;
        let (direct, rows) = timed_sql_rows(&pool, &any_retention_sql(p, (&from_text, &end_text), new_only)).await;
        let (joined, returned) = cohort_sums(&answer);
        let sql_joined: u64 = rows
            .iter()
            .filter(|row| row.get::<i64, _>(1) == row.get::<i64, _>(0))
            .map(|row| row.get::<u64, _>(2).unwrap_or_default())
            .sum();
        let note = format!(
            "{joined} users in cohorts (SQL {sql_joined}), {returned} returns (SQL {}), {}",
            sql_returns(&rows),
            described(&answer["source"])
        );
        report(name, ours, direct, note);
    }
    pool.disconnect().await.ok();
}

/// Weekly retention on any event as one SQL statement of rows (cohort, period, users active
/// in it), from `from` to `end`: a user's cohort is the week of their first event in the
/// range, or (`new_only`) ever, then kept only when it is in the range.
fn any_retention_sql(p: u64, (from, end): (&str, &str), new_only: bool) -> String {
    let since = if new_only { String::new() } else { format!("AND timestamp >= '{from}'") };
    format!(
        "SELECT cohort, period, COUNT(*) FROM (
           SELECT period, MIN(period) OVER (PARTITION BY user) AS cohort FROM (
             SELECT COALESCE(user_id, anonymous_id) AS user,
                    FLOOR(TIMESTAMPDIFF(SECOND, '{from}', timestamp) / 604800) AS period
             FROM events WHERE project_id = {p} {since} AND timestamp < '{end}' AND deleted_at IS NULL
             GROUP BY 1, 2) active) cohorts
         WHERE cohort >= 0 AND period >= 0 GROUP BY 1, 2"
    )
}

/// The 8-week retention (Event 10, then Event 3) as one SQL statement of rows (cohort, period,
/// users with a return), periods of a week from `from` to `end`: a user's cohort is the week
/// of their first Event 10 among those `cohort_rows` (a condition) selects, kept by `cohorts`
/// (a HAVING clause).
fn retention_sql(p: u64, (from, end): (&str, &str), cohort_rows: &str, cohorts: &str) -> String {
    let live = "deleted_at IS NULL";
    format!(
        "SELECT f.cohort, FLOOR(TIMESTAMPDIFF(SECOND, '{from}', r.timestamp) / 604800) AS period, COUNT(DISTINCT f.user_id)
         FROM (SELECT user_id, FLOOR(TIMESTAMPDIFF(SECOND, '{from}', MIN(timestamp)) / 604800) AS cohort FROM events
               WHERE project_id = {p} AND type = 'track' AND name = 'Event 10' {cohort_rows} AND {live}
               GROUP BY user_id {cohorts}) f
         JOIN events r ON r.project_id = {p} AND r.user_id = f.user_id AND r.type = 'track' AND r.name = 'Event 3'
           AND r.timestamp >= '{from}' AND r.timestamp < '{end}' AND r.{live}
         GROUP BY 1, 2"
    )
}

/// A retention answer's users in cohorts, and their returns in a later period summed over
/// cohorts and periods.
fn cohort_sums(answer: &Value) -> (u64, u64) {
    let cohorts = answer["cohorts"].as_array().cloned().unwrap_or_default();
    let joined = cohorts.iter().filter_map(|c| c["users"].as_u64()).sum();
    let returned = cohorts
        .iter()
        .filter_map(|c| c["returned"].as_array())
        .map(|back| back.iter().skip(1).filter_map(Value::as_u64).sum::<u64>())
        .sum();
    (joined, returned)
}

/// The returns of the SQL alone's rows (cohort, period, users): those of a later period.
fn sql_returns(rows: &[mysql_async::Row]) -> u64 {
    rows.iter()
        .filter(|row| row.get::<i64, _>(1).unwrap_or_default() > row.get::<i64, _>(0).unwrap_or_default())
        .map(|row| row.get::<u64, _>(2).unwrap_or_default())
        .sum()
}

/// An answer's `source` in a few words.
fn described(source: &Value) -> String {
    let sample = source["sample"]["one_in"].as_u64().map_or(String::new(), |one_in| format!(", 1 user in {one_in}"));
    match source["kind"].as_str() {
        Some("rollup") => format!(
            "rollup ({} hours, {} raw), {} rows read{sample}",
            source["rollup_hours"], source["raw_hours"], source["rows"]
        ),
        _ => format!("raw, {} rows read", source["rows"]),
    }
}

/// Runs of the rollups job (each stops taking hours after 45 s; each next slot goes on) until
/// every hour but the current one (read raw; the job leaves it) is rolled up, promoted
/// properties' backfills included; how many.
async fn roll_up(db: &TestDb, jobs: &evtrack::jobs::JobRunners) -> usize {
    let mut runs = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let outcome =
            jobs.run("rollups", Trigger::new(chrono::Utc::now(), "bench")).await.expect("rollups").expect("ran");
        runs += 1;
        let current = evtrack::store::hour_of(chrono::Utc::now());
        let backfill = db.count("rollup_property_backfill").await;
        if backfill == 0 && db.count(&format!("rollup_dirty_hours WHERE hour < {current}")).await == 0 {
            return runs;
        }
        assert!(runs < 100, "the rollups do not catch up: {}", outcome.to_json());
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

async fn api_call(
    router: &axum::Router,
    key: &str,
    method: &str,
    uri: &str,
    body: Option<&Value>,
) -> (Duration, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::AUTHORIZATION, format!("Bearer {key}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body.map_or_else(axum::body::Body::empty, |body| axum::body::Body::from(body.to_string())))
        .expect("request");
    let started = Instant::now();
    let response = router.clone().oneshot(request).await.expect("answer");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
    let elapsed = started.elapsed();
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    assert!(status.is_success() || status == http::StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {status} {answer}");
    (elapsed, answer)
}

/// Every answer of an export (`uri`), its cursors followed: events, bytes and answers.
async fn export_all(router: &axum::Router, key: &str, uri: &str) -> (usize, usize, usize) {
    let (mut lines, mut bytes, mut answers) = (0, 0, 0);
    let mut cursor: Option<String> = None;
    loop {
        let uri = cursor.as_ref().map_or_else(|| uri.to_string(), |cursor| format!("{uri}&cursor={cursor}"));
        let request = Request::builder()
            .uri(&uri)
            .header(http::header::AUTHORIZATION, format!("Bearer {key}"))
            .body(axum::body::Body::empty())
            .expect("request");
        let response = router.clone().oneshot(request).await.expect("answer");
        assert_eq!(response.status(), http::StatusCode::OK, "{uri}");
        cursor = response.headers().get("x-next-cursor").and_then(|value| value.to_str().ok()).map(str::to_string);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
        lines += body.iter().filter(|byte| **byte == b'\n').count();
        bytes += body.len();
        answers += 1;
        if cursor.is_none() {
            return (lines, bytes, answers);
        }
    }
}

/// The median of `RUNS` runs of `run` (after one to warm up).
async fn median(run: impl AsyncFn() -> Duration) -> Duration {
    run().await;
    let mut times = Vec::new();
    for _ in 0..RUNS {
        times.push(run().await);
    }
    times.sort();
    times[RUNS / 2]
}

/// A question that takes longer than this once is timed once (the database's cap is 5 s).
const SLOW: Duration = Duration::from_secs(2);

/// An answer's time (`None`: refused as too big, 422), and the benchmark process's peak RSS
/// while answering it the first time (the answer's JSON parsed by the benchmark included;
/// `None` where the kernel cannot reset the high-water mark).
struct Measured {
    time: Option<Duration>,
    peak_rss_kib: Option<u64>,
}

impl From<Option<Duration>> for Measured {
    fn from(time: Option<Duration>) -> Self {
        Self { time, peak_rss_kib: None }
    }
}

/// Runs `work`, and the process's peak RSS meanwhile: the kernel's high-water mark, reset
/// before to the RSS of the moment (`clear_refs`, Linux 4.0 on); `None` where it cannot be.
async fn peak_rss_kib<T>(work: impl Future<Output = T>) -> (T, Option<u64>) {
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let done = work.await;
    (done, reset.then(|| memory_kib(std::process::id(), "VmHWM")))
}

/// The median of `RUNS` answers (after one to warm the caches and measure the peak RSS; a slow
/// one only once), and the last answer.
async fn timed_api(
    router: &axum::Router,
    key: &str,
    method: &str,
    uri: &str,
    body: Option<&Value>,
) -> (Measured, Value) {
    let ((first, mut answer), peak_rss_kib) = peak_rss_kib(api_call(router, key, method, uri, body)).await;
    if answer["code"] == "query_too_big" {
        return (Measured { time: None, peak_rss_kib }, answer);
    }
    if first > SLOW {
        return (Measured { time: Some(first), peak_rss_kib }, answer);
    }
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let (elapsed, last) = api_call(router, key, method, uri, body).await;
        times.push(elapsed);
        answer = last;
    }
    times.sort();
    (Measured { time: Some(times[RUNS / 2]), peak_rss_kib }, answer)
}

/// Runs of a list question and of its SQL alone, by turns.
const RUNS_BY_TURNS: usize = 51;

/// A list question through the api and its SQL alone, by turns `RUNS_BY_TURNS` times after one
/// of each (to warm the caches, and for the api's peak RSS): the medians of each, and the api's
/// last answer. By turns, so that both see the same machine: its drift, and MariaDB's own
/// background work after the load (a page takes about a millisecond).
async fn timed_by_turns(
    router: &axum::Router,
    key: &str,
    uri: &str,
    pool: &mysql_async::Pool,
    sql: &str,
) -> (Measured, Duration, Value) {
    let ((_, mut answer), peak_rss_kib) = peak_rss_kib(api_call(router, key, "GET", uri, None)).await;
    let mut conn = pool.get_conn().await.expect("connection");
    let sql = &capped(sql);
    let _: Vec<mysql_async::Row> = conn.query(sql).await.expect(sql);
    let (mut ours, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..RUNS_BY_TURNS {
        let (elapsed, last) = api_call(router, key, "GET", uri, None).await;
        ours.push(elapsed);
        answer = last;
        let started = Instant::now();
        let _: Vec<mysql_async::Row> = conn.query(sql).await.expect(sql);
        direct.push(started.elapsed());
    }
    ours.sort();
    direct.sort();
    let ours = Measured { time: Some(ours[RUNS_BY_TURNS / 2]), peak_rss_kib };
    (ours, direct[RUNS_BY_TURNS / 2], answer)
}

/// `sql`, stopped by MariaDB after `SQL_CAP_SECONDS`.
fn capped(sql: &str) -> String {
    format!("SET STATEMENT max_statement_time = {SQL_CAP_SECONDS} FOR {sql}")
}

/// How long the SQL alone may run (MariaDB stops it there); its figure then reads "> 60 s".
const SQL_CAP_SECONDS: u64 = 60;

/// The median of `RUNS` runs of `sql` (after one to warm the caches; a slow one only once);
/// `None` when it ran past `SQL_CAP_SECONDS`.
async fn timed_sql(pool: &mysql_async::Pool, sql: &str) -> Option<Duration> {
    timed_sql_rows(pool, sql).await.0
}

/// As `timed_sql`, with the rows of the first run.
async fn timed_sql_rows(pool: &mysql_async::Pool, sql: &str) -> (Option<Duration>, Vec<mysql_async::Row>) {
    let mut conn = pool.get_conn().await.expect("connection");
    let capped = capped(sql);
    let started = Instant::now();
    let rows = match conn.query::<mysql_async::Row, _>(&capped).await {
        Ok(rows) => rows,
        Err(mysql_async::Error::Server(err)) if err.code == 1969 => return (None, Vec::new()),
        Err(err) => panic!("{sql}: {err}"),
    };
    let first = started.elapsed();
    if first > SLOW {
        return (Some(first), rows);
    }
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let _: Vec<mysql_async::Row> = conn.query(&capped).await.expect(sql);
        times.push(started.elapsed());
    }
    times.sort();
    (Some(times[RUNS / 2]), rows)
}
