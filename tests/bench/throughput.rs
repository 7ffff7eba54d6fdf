//! Throughput benchmarks. Every figure is printed beside a bound measured in the same run on
//! the same machine, and as a ratio to it (BENCHMARKS.md records method and results).
//!
//! 1. ingest: the ingest router (the one Lambda and `evtrack up` run) over loopback HTTP, the
//!    consumer storing what it queues meanwhile, vs bare HTTP servers that read the same
//!    bodies and parse them into JSON values (or not); rates and the servers' CPU per event.
//! 2. consumer: the consumer handler storing queued events into MariaDB, vs LOAD DATA of the
//!    same rows into the same table.
//! 3. end to end: `evtrack up` (release build, in-process queue), HTTP in, rows in MySQL out:
//!    sustained events/s, request latency, peak RSS with twice the load (bounded queue).
//!
//! Run with `infra/dev.sh bench` (builds the release binary first). EVTRACK_BENCH_REQUESTS
//! sets the requests per run (default 1500 batches of 100 events).

mod reads;
mod scale;

use axum::routing::post;
use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use evtrack::config::Limits;
use evtrack::event::wire::{self, Shape};
use evtrack::keys::Scope;
use evtrack::queue::envelope::{Receipt, pack};
use evtrack::queue::local;
use evtrack::queue::{EnvelopeSeal, EventQueue};
use evtrack_consumer::{Consumer, QueueMessage};
use evtrack_tests::*;
use mysql_async::prelude::Queryable;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

const CONNECTIONS: usize = 32;
const EVENTS_PER_REQUEST: usize = 100;
const ROUNDS: usize = 3;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let requests: usize = std::env::var("EVTRACK_BENCH_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1500);
        println!(
            "machine: {} cores for this benchmark (CPUs {}), MariaDB on CPUs {}; {} requests of {EVENTS_PER_REQUEST} events per run; {CONNECTIONS} connections",
            cores(),
            cpus_allowed(std::process::id()),
            mariadbd_pid().map_or_else(|| "(not found)".to_string(), cpus_allowed),
            requests
        );
        // EVTRACK_BENCH_ONLY=consumer (or decode, ingest, e2e, node, or a list of them such as
        // consumer,e2e) runs some parts, for quick iterations; =scale runs the 10 M-row study
        // (scale.rs), =reads the read side over 10 M rows (reads.rs), =groups the consumer on
        // PostHog events naming groups, only on demand.
        let only = std::env::var("EVTRACK_BENCH_ONLY").unwrap_or_default();
        let parts: Vec<&str> = only.split(',').map(str::trim).filter(|part| !part.is_empty()).collect();
        let named = |part: &str| parts.contains(&part);
        let wanted = |part: &str| parts.is_empty() || named(part);
        if wanted("ingest") || named("decode") {
            bench_decode();
        }
        let ingest = if wanted("ingest") { bench_ingest(requests).await } else { f64::NAN };
        if wanted("consumer") {
            bench_consumer(requests * EVENTS_PER_REQUEST).await;
        }
        if named("groups") {
            bench_groups(requests * EVENTS_PER_REQUEST).await;
        }
        if wanted("e2e") {
            bench_end_to_end(ingest).await;
            bench_node().await;
        }
        if named("node") && !named("e2e") {
            bench_node().await;
        }
        if named("scale") {
            scale::bench_scale().await;
        }
        if named("reads") {
            reads::bench_reads().await;
        }
    });
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One Segment batch of 100 track events of about 370 bytes each, with random uuid4
/// messageIds and userIds, as real SDKs send them (ordered ids would flatter the indexes).
fn batch_body() -> Bytes {
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let events: Vec<_> = (0..EVENTS_PER_REQUEST)
        .map(|i| {
            json!({
                "type": "track", "event": "Product Viewed", "userId": random_uuid4(),
                "messageId": random_uuid4(), "timestamp": now,
                "properties": {"product_id": format!("sku-{}", i * 31 % 997), "price": 19.99, "currency": "EUR",
                               "category": "shoes", "position": i % 12, "list": "search results"},
                "context": {"library": {"name": "analytics-python", "version": "2.4.0"}, "locale": "de-DE"}
            })
        })
        .collect();
    Bytes::from(json!({"batch": events, "sentAt": now}).to_string())
}

/// A random uuid4, as the SDKs make messageIds and anonymous ids.
fn random_uuid4() -> String {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid().to_string()
}

fn bodies(requests: usize) -> Arc<Vec<Bytes>> {
    Arc::new((0..requests).map(|_| batch_body()).collect())
}

/// CPU seconds (user + system) a process has used so far, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

/// The CPU seconds of a process's or thread's `stat` line.
fn stat_cpu_seconds(stat: &str) -> f64 {
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |index: usize| fields.get(index).and_then(|value| value.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The CPUs a process may run on (`EVTRACK_BENCH_CORES=split` gives MariaDB a core of its own).
fn cpus_allowed(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let list = status.lines().find_map(|line| line.strip_prefix("Cpus_allowed_list:"));
    list.map_or_else(|| "?".to_string(), |list| list.trim().to_string())
}

/// A reader of `mariadbd`'s CPU seconds so far (NaN when it is not on this machine).
fn mariadbd_cpu() -> impl Fn() -> f64 {
    let database = mariadbd_pid();
    move || database.map_or(f64::NAN, cpu_seconds)
}

/// The MariaDB server's process id, to count its CPU.
fn mariadbd_pid() -> Option<u32> {
    let out = std::process::Command::new("pidof").arg("mariadbd").output().ok()?;
    String::from_utf8_lossy(&out.stdout).split_whitespace().next()?.parse().ok()
}

struct Load {
    events_per_sec: f64,
    p50: Duration,
    p99: Duration,
    failures: usize,
}

/// `CONNECTIONS` clients posting every body once; events/s and latency percentiles.
async fn load(url: &str, key: Option<&str>, bodies: Arc<Vec<Bytes>>) -> Load {
    paced_load(url, key, bodies, None).await
}

/// As `load`, but with `events_per_sec` given the requests are sent on a schedule (open loop)
/// and each latency counts from when its request was due, so that a server falling behind
/// shows in the figures instead of slowing the load down.
async fn paced_load(url: &str, key: Option<&str>, bodies: Arc<Vec<Bytes>>, events_per_sec: Option<f64>) -> Load {
    let interval = events_per_sec.map(|rate| Duration::from_secs_f64(EVENTS_PER_REQUEST as f64 / rate));
    let client = reqwest::Client::builder().pool_max_idle_per_host(CONNECTIONS).build().expect("client");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (client, next, bodies, url, key) =
                (client.clone(), next.clone(), bodies.clone(), url.to_string(), key.map(str::to_string));
            tokio::spawn(async move {
                let (mut latencies, mut failures) = (Vec::new(), 0);
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(index) else { break };
                    let due = match interval {
                        Some(interval) => {
                            let due = started + interval * index as u32;
                            tokio::time::sleep_until(due.into()).await;
                            due
                        }
                        None => Instant::now(),
                    };
                    let mut request = client.post(&url).header("content-type", "application/json").body(body.clone());
                    if let Some(key) = &key {
                        request = request.basic_auth(key, Some(""));
                    }
                    match request.send().await {
                        Ok(response) if response.status() == 200 => {
                            let _ = response.bytes().await;
                        }
                        _ => failures += 1,
                    }
                    latencies.push(due.elapsed());
                }
                (latencies, failures)
            })
        })
        .collect();
    let (mut latencies, mut failures) = (Vec::new(), 0);
    for worker in workers {
        let (mut worker_latencies, worker_failures) = worker.await.expect("load worker");
        latencies.append(&mut worker_latencies);
        failures += worker_failures;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Load {
        events_per_sec: (bodies.len() * EVENTS_PER_REQUEST) as f64 / elapsed.as_secs_f64(),
        p50: percentile(0.50),
        p99: percentile(0.99),
        failures,
    }
}

/// Name of the threads that run the servers under test: their CPU is the servers' own,
/// apart from the load generator's and the consumer's in the same process.
const SERVER_THREADS: &str = "bench-server";

/// The runtime the servers under test run on.
fn server_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores())
            .thread_name(SERVER_THREADS)
            .enable_all()
            .build()
            .expect("server runtime")
    })
}

/// CPU seconds the server threads of this process have used so far (to the nanosecond: a
/// run of 100,000 events takes a few of stat's 10 ms ticks per µs of CPU per event).
fn server_cpu_seconds() -> f64 {
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
    tasks
        .filter_map(|task| task.ok().map(|task| task.path()))
        .filter(|task| std::fs::read_to_string(task.join("comm")).is_ok_and(|name| name.trim() == SERVER_THREADS))
        .map(|task| schedstat_cpu_seconds(&task))
        .sum()
}

/// The CPU seconds of a thread (`/proc/.../task/N`, or `/proc/thread-self`) from its
/// schedstat: nanoseconds on the CPU, where stat counts ticks (read where a kernel has no
/// schedstat).
fn schedstat_cpu_seconds(task: &std::path::Path) -> f64 {
    let text = std::fs::read_to_string(task.join("schedstat")).unwrap_or_default();
    match text.split_whitespace().next().and_then(|ns| ns.parse::<f64>().ok()) {
        Some(ns) => ns / 1e9,
        None => stat_cpu_seconds(&std::fs::read_to_string(task.join("stat")).unwrap_or_default()),
    }
}

/// Serves `router` on the server runtime; returns its base URL.
async fn serve(router: axum::Router) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("non-blocking");
    let address = listener.local_addr().expect("address");
    server_runtime().spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>()).await.ok();
    });
    format!("http://{address}")
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A run of the load against one server: events/s, and the server threads' CPU per event.
async fn measured_load(url: &str, key: &str, bodies: Arc<Vec<Bytes>>) -> (Load, f64) {
    let cpu = server_cpu_seconds();
    let run = load(url, Some(key), bodies.clone()).await;
    let cpu_per_event = (server_cpu_seconds() - cpu) * 1e6 / (bodies.len() * EVENTS_PER_REQUEST) as f64;
    (run, cpu_per_event)
}

/// Ingest as in production: the consumer storing what it queues into MariaDB meanwhile (in
/// memory queue large enough that acceptance is not held back by it), against bare servers
/// that read the bodies and parse them into JSON values (or not). Rates and the server
/// threads' CPU per event (the load generator and the consumer run on other threads).
/// Returns the bare parsing server's events/s (the ingest bound).
async fn bench_ingest(requests: usize) -> f64 {
    let db = TestDb::new().await;
    let capacity = (requests + 200).to_string();
    let config =
        config(&db, &[("EVTRACK_LOCAL_QUEUE_CAPACITY", &capacity), ("EVTRACK_RATE_LIMIT_EVENTS_PER_SECOND", "0")]);
    let (_, key) = project_with_key(&db, &config, Scope::Write).await;
    let (queue, receiver) = local::channel(config.local_queue_capacity, config.queue_send_timeout);
    let consumer = Arc::new(Consumer::new(db.store.clone(), &config));
    tokio::spawn(evtrack_cli::stack::drain_local_queue(receiver, consumer, None));
    let ingest = Arc::new(evtrack_ingest::Ingest::new(&config, db.store.clone(), EventQueue::Local(queue)));
    let ingest_url = format!("{}/v1/batch", serve(evtrack_ingest::router(ingest)).await);
    let parse_url = serve(axum::Router::new().route(
        "/v1/batch",
        post(|body: Bytes| async move {
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            drop(value);
            axum::Json(json!({"success": true}))
        }),
    ))
    .await
        + "/v1/batch";
    let plain_url = serve(axum::Router::new().route(
        "/v1/batch",
        post(|body: Bytes| async move {
            drop(body);
            axum::Json(json!({"success": true}))
        }),
    ))
    .await
        + "/v1/batch";

    let mut stored = 0;
    // Waits until the consumer has stored everything ingest accepted, so that the bounds
    // run on a quiet machine.
    let settle = |stored: u64| {
        let db = &db;
        async move {
            for _ in 0..6000 {
                if db.count("events").await >= stored {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("the consumer did not store {stored} events in 10 minutes");
        }
    };
    let warmup = bodies(200);
    for url in [&plain_url, &parse_url, &ingest_url] {
        load(url, Some(&key), warmup.clone()).await;
    }
    stored += (warmup.len() * EVENTS_PER_REQUEST) as u64;
    settle(stored).await;
    let (mut plain, mut parse, mut ingest) = (Vec::new(), Vec::new(), Vec::new());
    let (mut plain_cpu, mut parse_cpu, mut ingest_cpu) = (Vec::new(), Vec::new(), Vec::new());
    let mut latency = (Duration::ZERO, Duration::ZERO);
    for _ in 0..ROUNDS {
        let round = bodies(requests);
        let (run, cpu) = measured_load(&plain_url, &key, round.clone()).await;
        plain.push(run.events_per_sec);
        plain_cpu.push(cpu);
        let (run, cpu) = measured_load(&parse_url, &key, round.clone()).await;
        parse.push(run.events_per_sec);
        parse_cpu.push(cpu);
        let (run, cpu) = measured_load(&ingest_url, &key, round.clone()).await;
        assert_eq!(run.failures, 0, "ingest refused requests");
        latency = (run.p50, run.p99);
        ingest.push(run.events_per_sec);
        ingest_cpu.push(cpu);
        stored += (round.len() * EVENTS_PER_REQUEST) as u64;
        settle(stored).await;
    }
    let (plain, parse, ingest) = (median(plain), median(parse), median(ingest));
    let (plain_cpu, parse_cpu, ingest_cpu) = (median(plain_cpu), median(parse_cpu), median(ingest_cpu));
    println!("\n## ingest router (the consumer storing meanwhile), median of {ROUNDS} runs; CPU of the server threads");
    println!("bare server, reads body only:         {plain:>10.0} events/s  {plain_cpu:>5.2} µs CPU per event");
    println!("bare server, parses JSON (the bound): {parse:>10.0} events/s  {parse_cpu:>5.2} µs CPU per event");
    println!(
        "evtrack ingest:                       {ingest:>10.0} events/s  {ingest_cpu:>5.2} µs CPU per event  p50 {:?}  p99 {:?}",
        latency.0, latency.1
    );
    println!("ratio to parsing bound:     {:.2} (CPU per event: {:.2}×)", ingest / parse, ingest_cpu / parse_cpu);
    println!("ratio to non-parsing bound: {:.2}", ingest / plain);
    parse
}

/// Ingest's own work on a request, without HTTP or the queue: decoding, validation, time
/// correction, packing and sealing, on one thread, against parsing the same bodies into JSON
/// values (the bound). CPU of this thread per event, by turns, medians of `ROUNDS`.
fn bench_decode() {
    let bodies = bodies(500);
    let limits = Limits::default();
    // As shipped (EVTRACK_QUEUE_SEAL's default, BLAKE3), and sealing with HMAC-SHA256.
    let seal_of = |sealing: &str| {
        let url = ("EVTRACK_DATABASE_URL", "mysql://unused@127.0.0.1/unused");
        EnvelopeSeal::from_config(
            &evtrack::Config::with_overrides(&[url, ("EVTRACK_QUEUE_SEAL", sealing)]).expect("config"),
        )
    };
    let (default_seal, hmac_seal) = (seal_of("blake3"), seal_of("hmac-sha256"));
    let (project, key) = (Uuid::now_v7(), Uuid::now_v7());
    let sealed_with = |seal: &EnvelopeSeal, body: &Bytes| {
        let received_at = Utc::now();
        let payload = wire::parse(Shape::SegmentBatch, body, &limits).expect("parses");
        let normalised = payload.normalise(received_at, &limits);
        // Every event taken: a quarantined one would be less work, and flatter the figure.
        assert_eq!(normalised.events.len(), EVENTS_PER_REQUEST, "every event valid");
        let receipt =
            Receipt { project, key, received_at, ip: Some("203.0.113.0"), source: "segment", batch: &normalised.batch };
        pack(&receipt, &normalised.events, &[], limits.max_queue_message_bytes, seal).expect("fits").len()
    };
    let ingest = |body: &Bytes| sealed_with(&default_seal, body);
    let ingest_hmac = |body: &Bytes| sealed_with(&hmac_seal, body);
    let parse = |body: &Bytes| serde_json::from_slice::<serde_json::Value>(body).expect("JSON").is_object() as usize;
    // About a second a turn.
    let per_event = |work: &dyn Fn(&Bytes) -> usize| {
        let (started, cpu) = (Instant::now(), thread_cpu_seconds());
        let mut events = 0;
        while started.elapsed() < Duration::from_secs(1) {
            bodies.iter().for_each(|body| {
                std::hint::black_box(work(body));
            });
            events += bodies.len() * EVENTS_PER_REQUEST;
        }
        (thread_cpu_seconds() - cpu) / events as f64 * 1e6
    };
    let (mut ours, mut hmac, mut bound) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ours.push(per_event(&ingest));
        hmac.push(per_event(&ingest_hmac));
        bound.push(per_event(&parse));
    }
    let (ours, hmac, bound) = (median(ours), median(hmac), median(bound));
    println!("\n## ingest's own work per event, one thread, no HTTP (median of {ROUNDS} turns each)");
    println!("parse into JSON values (the bound):      {bound:>5.2} µs CPU per event");
    println!("decode, validate, pack and seal:         {ours:>5.2} µs CPU per event");
    println!("ratio to the bound:                      {:.2}×", ours / bound);
    println!("the same sealing with HMAC-SHA256:       {hmac:>5.2} µs CPU per event ({:.2}×)", hmac / bound);
}

/// CPU seconds this thread has used so far.
fn thread_cpu_seconds() -> f64 {
    schedstat_cpu_seconds(std::path::Path::new("/proc/thread-self"))
}

/// Queue message bodies exactly as ingest packs (and seals) them, for `events` events.
async fn queued_bodies(project: Uuid, key: Uuid, events: usize, seal: &EnvelopeSeal) -> Vec<String> {
    (0..events / EVENTS_PER_REQUEST)
        .flat_map(|_| packed(Shape::SegmentBatch, "segment", project, key, seal, &batch_body()))
        .collect()
}

/// One request body's queue messages, as ingest packs (and seals) them.
fn packed(shape: Shape, source: &str, project: Uuid, key: Uuid, seal: &EnvelopeSeal, body: &[u8]) -> Vec<String> {
    let limits = Limits::default();
    let received_at = Utc::now();
    let normalised = wire::parse(shape, body, &limits).expect("parses").normalise(received_at, &limits);
    assert!(normalised.quarantined.is_empty(), "valid");
    let receipt = Receipt { project, key, received_at, ip: Some("203.0.113.0"), source, batch: &normalised.batch };
    pack(&receipt, &normalised.events, &[], limits.max_queue_message_bytes, seal).expect("fits")
}

/// The consumer storing `batches` of queue messages with as many workers as `evtrack up`
/// runs, each taking the next batch. Returns the lock conflicts (deadlocks, lock wait
/// timeouts) after which it wrote a batch whole again, as its reports count them (a batch
/// written message by message after them is not counted).
async fn run_consumer(consumer: Arc<Consumer>, batches: Arc<Vec<Vec<String>>>) -> u64 {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..evtrack_cli::stack::CONSUMERS)
        .map(|_| {
            let (consumer, batches, next) = (consumer.clone(), batches.clone(), next.clone());
            tokio::spawn(async move {
                let mut lock_conflicts = 0;
                while let Some(batch) = batches.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let ids: Vec<String> = (0..batch.len()).map(|i| format!("m{i}")).collect();
                    let messages: Vec<QueueMessage> =
                        batch.iter().zip(&ids).map(|(body, id)| QueueMessage { id, body: Some(body) }).collect();
                    let report = consumer.process(&messages).await;
                    assert!(report.failed.is_empty());
                    lock_conflicts += report.lock_conflicts;
                }
                lock_conflicts
            })
        })
        .collect();
    let mut lock_conflicts = 0;
    for worker in workers {
        lock_conflicts += worker.await.expect("consumer worker");
    }
    lock_conflicts
}

/// The consumer alone against the two bulk bounds on the same rows, and without the rollups'
/// marks.
async fn bench_consumer(events: usize) {
    let (mut consumer_rates, mut load_rates, mut insert_rates) = (Vec::new(), Vec::new(), Vec::new());
    // The same consumer with its writes leaving the rollups' dirty-hour marks out: what they cost.
    let mut unmarked_rates = Vec::new();
    // MariaDB's CPU per row under each: the consumer's statements against the plain inserts.
    let (mut consumer_db, mut load_db, mut insert_db) = (Vec::new(), Vec::new(), Vec::new());
    // The consumer's own CPU per event: this process runs nothing else meanwhile.
    let mut consumer_own = Vec::new();
    let database_cpu = mariadbd_cpu();
    for round in 0..ROUNDS {
        // Without the marks before or after, by turns: neither gets the warmer server.
        if round % 2 == 1 {
            unmarked_rates.push(consume_into_fresh_database(events, false, &database_cpu).await.1);
        }
        let (db, consumer_rate, consumer_cpu, own_cpu) = consume_into_fresh_database(events, true, &database_cpu).await;
        consumer_db.push(consumer_cpu);
        consumer_own.push(own_cpu);
        consumer_rates.push(consumer_rate);
        if round % 2 == 0 {
            unmarked_rates.push(consume_into_fresh_database(events, false, &database_cpu).await.1);
        }

        let bounds = bulk_bounds(&db).await;
        assert_eq!(bounds.rows, events as u64);
        load_rates.push(bounds.load_rate);
        load_db.push(bounds.load_db);
        insert_rates.push(bounds.insert_rate);
        insert_db.push(bounds.insert_db);
    }
    let (consumer, load, insert) = (median(consumer_rates), median(load_rates), median(insert_rates));
    println!("\n## consumer into MariaDB, {events} events, median of {ROUNDS} runs");
    let (consumer_db, load_db, insert_db) = (median(consumer_db), median(load_db), median(insert_db));
    let consumer_own = median(consumer_own);
    println!("LOAD DATA of the same rows (bound 1):        {load:>10.0} rows/s, MariaDB {load_db:.1} µs per row");
    println!("2 connections of 500-row INSERTs (bound 2):  {insert:>10.0} rows/s, MariaDB {insert_db:.1} µs per row");
    println!(
        "evtrack consumer ({} workers):               {consumer:>10.0} events/s, MariaDB {consumer_db:.1} µs per row, the consumer {consumer_own:.2} µs per event",
        evtrack_cli::stack::CONSUMERS
    );
    println!("ratio to LOAD DATA: {:.2}; to the INSERTs: {:.2}", consumer / load, consumer / insert);
    let unmarked = median(unmarked_rates);
    println!(
        "the same consumer without the rollups' marks: {unmarked:>10.0} events/s; with them {:.2} of that",
        consumer / unmarked
    );
}

/// Users of the PostHog groups benchmark: random uuid4 distinct_ids, each in one of 1,000
/// companies and one of 5,000 teams, as posthog-js registers them after `group()`.
const GROUP_BENCH_USERS: usize = 20_000;

/// One PostHog batch of 100 events of about 370 bytes, of the users `pick` chooses; with
/// `groups`, each event names its user's company and team (`$groups`), as posthog-js sends
/// every event after `group()`; without, the events carry the same object as a plain property.
fn posthog_batch_body(users: &[String], groups: bool, mut pick: impl FnMut() -> usize) -> Bytes {
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let events: Vec<_> = (0..EVENTS_PER_REQUEST)
        .map(|i| {
            let n = pick();
            let mut properties = json!({"product_id": format!("sku-{}", i * 31 % 997), "price": 19.99, "currency": "EUR",
                "category": "shoes", "position": i % 12, "$lib": "posthog-node", "$lib_version": "5.70.0"});
            // Without `$groups` the same object goes under a plain key of the same length, so
            // that both runs decode and store events of the same size.
            let key = if groups { "$groups" } else { "_groups" };
            properties[key] = json!({"company": format!("company-{}", n % 1_000), "team": format!("team-{}", n % 5_000)});
            json!({"event": "Product Viewed", "distinct_id": users[n], "timestamp": now,
                   "uuid": random_uuid4(), "properties": properties})
        })
        .collect();
    Bytes::from(json!({"batch": events, "sent_at": now}).to_string())
}

/// PostHog request bodies as ingest queues them, in batches of 10 queue messages.
fn posthog_queued(project: Uuid, seal: &EnvelopeSeal, bodies: Vec<Bytes>) -> Arc<Vec<Vec<String>>> {
    let messages: Vec<String> =
        bodies.iter().flat_map(|body| packed(Shape::PostHog, "posthog", project, Uuid::now_v7(), seal, body)).collect();
    Arc::new(messages.chunks(10).map(<[String]>::to_vec).collect())
}

/// The consumer storing `events` PostHog events of random users (with or without `$groups`)
/// into a fresh database, after one event of each user (not timed) when `known`: its rate, and
/// the memberships stored.
async fn consume_posthog(events: usize, users: &[String], groups: bool, known: bool) -> (f64, u64) {
    let db = TestDb::new().await;
    let project = db.store.create_project("bench").await.expect("project");
    let config = evtrack_tests::config(&db, &[]);
    let seal = EnvelopeSeal::from_config(&config);
    let consumer = Arc::new(Consumer::new(db.store.clone(), &config));
    if known {
        let mut next = 0..users.len();
        let bodies = (0..users.len() / EVENTS_PER_REQUEST)
            .map(|_| posthog_batch_body(users, groups, || next.next().expect("a user")))
            .collect();
        run_consumer(consumer.clone(), posthog_queued(project.id, &seal, bodies)).await;
    }
    let bodies = (0..events / EVENTS_PER_REQUEST)
        .map(|_| posthog_batch_body(users, groups, || rand::random_range(0..users.len())))
        .collect();
    let batches = posthog_queued(project.id, &seal, bodies);
    let pool = mysql_async::Pool::new(db.url.expose().as_str());
    let waits_before = row_lock_waits(&pool).await;
    let started = Instant::now();
    let conflicts = run_consumer(consumer, batches).await;
    let rate = events as f64 / started.elapsed().as_secs_f64();
    let [waits, wait_ms] = row_lock_waits(&pool).await;
    pool.disconnect().await.ok();
    println!(
        "  ({} `$groups`{}: {rate:.0} events/s, {} row lock waits, {} ms waited, {conflicts} lock conflicts retried)",
        if groups { "with" } else { "without" },
        if known { ", users known" } else { "" },
        waits - waits_before[0],
        wait_ms - waits_before[1]
    );
    let before = if known { users.len() } else { 0 };
    assert_eq!(db.count("events").await, (events + before) as u64);
    (rate, db.count("group_members").await)
}

/// InnoDB's row lock waits and the milliseconds waited so far, server-wide.
async fn row_lock_waits(pool: &mysql_async::Pool) -> [u64; 2] {
    global_status(pool, ["Innodb_row_lock_waits", "Innodb_row_lock_time"]).await
}

/// Two of MariaDB's server-wide status counters, as they are now.
async fn global_status(pool: &mysql_async::Pool, names: [&str; 2]) -> [u64; 2] {
    let mut conn = pool.get_conn().await.expect("connection");
    let sql = format!("SHOW GLOBAL STATUS WHERE Variable_name IN ('{}', '{}')", names[0], names[1]);
    let rows: Vec<(String, u64)> = conn.query(sql).await.expect("status");
    names.map(|name| rows.iter().find(|(found, _)| found == name).map_or(0, |(_, value)| *value))
}

/// The consumer on PostHog events that name their user's groups (`$groups`) against events
/// of the same size that name none, by turns: what keeping the memberships costs, in a young
/// project (most users new) and once every user has been seen.
async fn bench_groups(events: usize) {
    let users: Vec<String> = (0..GROUP_BENCH_USERS).map(|_| random_uuid4()).collect();
    println!("\n## consumer: PostHog events naming their user's groups, {events} events, median of {ROUNDS} runs");
    for known in [false, true] {
        let (mut with, mut without, mut members) = (Vec::new(), Vec::new(), 0);
        for round in 0..ROUNDS {
            let order = if round % 2 == 0 { [false, true] } else { [true, false] };
            for groups in order {
                let (rate, stored) = consume_posthog(events, &users, groups, known).await;
                if groups {
                    with.push(rate);
                    members = stored;
                } else {
                    without.push(rate);
                }
            }
        }
        let (with, without) = (median(with), median(without));
        let project = if known { "every user seen before (one event each, not timed)" } else { "a fresh project" };
        println!(
            "{project}: {GROUP_BENCH_USERS} users in 1,000 companies and 5,000 teams ({members} memberships stored): {with:.0} events/s; without `$groups` {without:.0}: {:.2} of that",
            with / without
        );
    }
}

/// MariaDB's statements and redo-log writes so far, server-wide (a benchmark runs alone):
/// per row, they show how a writer grouped its rows.
async fn statements_and_log_writes(pool: &mysql_async::Pool) -> [u64; 2] {
    global_status(pool, ["Questions", "Innodb_log_writes"]).await
}

/// Per 1,000 rows, between two readings of `statements_and_log_writes`.
fn per_thousand_rows(before: [u64; 2], after: [u64; 2], rows: u64) -> [f64; 2] {
    [0, 1].map(|i| (after[i] - before[i]) as f64 * 1000.0 / rows as f64)
}

/// The two bulk bounds on the rows `db`'s events table holds: the same rows bulk-loaded
/// with `LOAD DATA` into the emptied table, then as 500-row INSERTs; rows/s and MariaDB's CPU
/// µs per row for each. The table holds the same rows again afterwards.
struct Bounds {
    rows: u64,
    load_rate: f64,
    load_db: f64,
    insert_rate: f64,
    insert_db: f64,
}

impl Bounds {
    fn faster(&self) -> f64 {
        self.load_rate.max(self.insert_rate)
    }

    fn describe(&self) -> String {
        format!(
            "bounds on the same {} rows: LOAD DATA {:.0} rows/s (MariaDB {:.1} µs per row), 500-row INSERTs {:.0} rows/s ({:.1} µs)",
            self.rows, self.load_rate, self.load_db, self.insert_rate, self.insert_db
        )
    }
}

async fn bulk_bounds(db: &TestDb) -> Bounds {
    let database_cpu = mariadbd_cpu();
    let events = db.count("events").await;
    // The same rows, as a TSV file, bulk-loaded into the same (emptied) table.
    let rows: Vec<String> = db
        .query(
            "SELECT CONCAT_WS('\t', HEX(uid), project_id, message_id, dedupe_hour, type, IFNULL(name, '\\\\N'), IFNULL(user_id, '\\\\N'),
               '\\\\N', '\\\\N', '\\\\N', IFNULL(properties, '\\\\N'), '\\\\N', IFNULL(context, '\\\\N'), '\\\\N',
               timestamp, IFNULL(original_timestamp, '\\\\N'), IFNULL(sent_at, '\\\\N'), received_at,
               timestamp_clamped, IFNULL(ip, '\\\\N'), HEX(write_key_uid)) FROM events",
        )
        .await;
    let inserts = multi_row_inserts(db).await;
    let path = std::env::temp_dir().join(format!("evtrack-bench-{}.tsv", Uuid::now_v7().simple()));
    std::fs::write(&path, rows.join("\n")).expect("write TSV");
    let opts = mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(db.url.expose()).expect("url"))
        .local_infile_handler(Some(mysql_async::WhiteListFsHandler::new([&path])));
    let mut conn = mysql_async::Conn::new(opts).await.expect("connection");
    conn.query_drop("TRUNCATE TABLE events").await.expect("truncate");
    let cpu = database_cpu();
    let started = Instant::now();
    conn.query_drop(format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE events
         (@uid, project_id, message_id, dedupe_hour, type, name, user_id, anonymous_id, group_id, previous_id,
          properties, traits, context, integrations, timestamp, original_timestamp, sent_at, received_at,
          timestamp_clamped, ip, @key) SET uid = UNHEX(@uid), write_key_uid = UNHEX(@key)",
        path.display()
    ))
    .await
    .expect("LOAD DATA");
    let load_rate = events as f64 / started.elapsed().as_secs_f64();
    let load_db = (database_cpu() - cpu) * 1e6 / events as f64;
    conn.disconnect().await.ok();
    std::fs::remove_file(&path).ok();
    assert_eq!(db.count("events").await, events);

    // And once more as plain multi-row INSERTs: 500 rows each, from 2 connections.
    db.execute("TRUNCATE TABLE events").await;
    let cpu = database_cpu();
    let started = Instant::now();
    let senders: Vec<_> = inserts
        .chunks(inserts.len().div_ceil(2))
        .map(|share| {
            let (url, share) = (db.url.expose().clone(), share.to_vec());
            tokio::spawn(async move {
                let mut conn = mysql_async::Conn::from_url(url).await.expect("connection");
                for sql in share {
                    conn.query_drop(sql).await.expect("INSERT");
                }
                conn.disconnect().await.ok();
            })
        })
        .collect();
    for sender in senders {
        sender.await.expect("insert connection");
    }
    let insert_rate = events as f64 / started.elapsed().as_secs_f64();
    let insert_db = (database_cpu() - cpu) * 1e6 / events as f64;
    assert_eq!(db.count("events").await, events);
    Bounds { rows: events, load_rate, load_db, insert_rate, insert_db }
}

/// The consumer storing `events` into a database of its own, its writes marking the hours
/// they change for the rollups or (`marks` false) not: the database, events/s, `mariadbd`'s
/// CPU µs per row (`database_cpu`: its CPU seconds so far) and this process's per event.
async fn consume_into_fresh_database(
    events: usize,
    marks: bool,
    database_cpu: &impl Fn() -> f64,
) -> (TestDb, f64, f64, f64) {
    let db = TestDb::new().await;
    let project = db.store.create_project("bench").await.expect("project");
    let config = evtrack_tests::config(&db, &[]);
    let bodies = queued_bodies(project.id, Uuid::now_v7(), events, &EnvelopeSeal::from_config(&config)).await;
    let store = if marks { db.store.clone() } else { db.store.without_rollup_marks() };
    let consumer = Arc::new(Consumer::new(store, &config));
    let batches: Arc<Vec<Vec<String>>> = Arc::new(bodies.chunks(10).map(<[String]>::to_vec).collect());
    let pool = mysql_async::Pool::new(db.url.expose().as_str());
    let counters = statements_and_log_writes(&pool).await;
    let (cpu, own) = (database_cpu(), cpu_seconds(std::process::id()));
    let started = Instant::now();
    run_consumer(consumer, batches).await;
    let rate = events as f64 / started.elapsed().as_secs_f64();
    let [statements, log_writes] = per_thousand_rows(counters, statements_and_log_writes(&pool).await, events as u64);
    pool.disconnect().await.ok();
    if marks {
        println!(
            "  (consumer alone: per 1,000 rows MariaDB ran {statements:.1} statements and {log_writes:.1} log writes)"
        );
    }
    let cpu_per_row = (database_cpu() - cpu) * 1e6 / events as f64;
    let own_per_event = (cpu_seconds(std::process::id()) - own) * 1e6 / events as f64;
    assert_eq!(db.count("events").await, events as u64);
    assert_eq!(db.count("rollup_dirty_hours").await > 0, marks, "marks as asked");
    (db, rate, cpu_per_row, own_per_event)
}

/// A value as SQL text; binary ids as hex literals (a quoted string would be read as text).
fn sql_literal(value: &mysql_async::Value) -> String {
    match value {
        mysql_async::Value::Bytes(bytes) if std::str::from_utf8(bytes).is_err() => {
            format!("X'{}'", bytes.iter().map(|byte| format!("{byte:02X}")).collect::<String>())
        }
        other => other.as_sql(false),
    }
}

/// The stored rows as 500-row `INSERT … ON DUPLICATE KEY UPDATE` statements (text protocol,
/// values escaped by the client), as a plain service would send them: the second bound.
async fn multi_row_inserts(db: &TestDb) -> Vec<String> {
    let mut conn = mysql_async::Conn::from_url(db.url.expose().clone()).await.expect("connection");
    let rows: Vec<mysql_async::Row> = conn.query("SELECT * FROM events").await.expect("rows");
    conn.disconnect().await.ok();
    let columns: Vec<String> = rows
        .first()
        .map_or_else(Vec::new, |row| row.columns_ref().iter().map(|column| column.name_str().into_owned()).collect());
    rows.chunks(500)
        .map(|chunk| {
            let values: Vec<String> = chunk
                .iter()
                .map(|row| {
                    let values: Vec<String> = (0..row.len()).filter_map(|i| row.as_ref(i)).map(sql_literal).collect();
                    format!("({})", values.join(","))
                })
                .collect();
            format!(
                "INSERT INTO events ({}) VALUES {} ON DUPLICATE KEY UPDATE message_id = message_id",
                columns.join(","),
                values.join(",")
            )
        })
        .collect()
}

/// End to end: a fixed 500,000 events (`EVTRACK_BENCH_E2E_EVENTS`) into an empty table, with
/// the queue journaled (the default) and in memory only (what a crash would lose), and the
/// CPU evtrack's process spent per stored event and MariaDB's per row.
async fn bench_end_to_end(ingest_bound: f64) {
    println!("\n## end to end: evtrack up (release), HTTP → in-process queue → consumer → MariaDB");
    let events = e2e_events();
    for queue in ["journal", "memory"] {
        let mut env = vec![("EVTRACK_RATE_LIMIT_EVENTS_PER_SECOND", "0")];
        if queue == "memory" {
            env.push(("EVTRACK_LOCAL_QUEUE_DIR", "memory"));
        }
        let db = TestDb::new().await;
        let stack = StackProcess::on(&db, &env);
        let run = end_to_end_run(&stack, events).await;
        drop(stack);
        // The bounds on the very rows it stored, in its table: the same size as the run's.
        let bounds = bulk_bounds(&db).await;
        println!(
            "{events:>7} events, queue {queue}: accepted at {:>8.0} events/s (ratio to ingest bound {:.2}), {}",
            run.accepted_per_sec,
            run.accepted_per_sec / ingest_bound,
            run.stored_against(bounds.faster(), "the faster bulk bound"),
        );
        println!("    {}", bounds.describe());
        if queue == "journal" {
            latency_curve(run.stored_per_sec).await;
        }
    }
}

pub(crate) fn e2e_events() -> usize {
    std::env::var("EVTRACK_BENCH_E2E_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(500_000)
}

/// One end-to-end run through a running stack.
pub(crate) struct EndToEnd {
    pub(crate) accepted_per_sec: f64,
    pub(crate) stored_per_sec: f64,
    /// From the last acceptance to the last row stored.
    drained_in: Duration,
    http: Load,
    idle_rss_mib: u64,
    peak_rss_mib: u64,
    /// CPU seconds of the stack's process per stored event, of `mariadbd` per row, and of
    /// this process (the load generator) per event: together, where the cores went.
    cpu_per_event: f64,
    database_cpu_per_row: f64,
    load_cpu_per_event: f64,
    /// MariaDB's statements and redo-log writes per 1,000 stored rows.
    grouping: [f64; 2],
}

impl EndToEnd {
    /// The stored rate against `bound` (events or rows per second), and the rest of the run.
    pub(crate) fn stored_against(&self, bound: f64, bound_name: &str) -> String {
        format!(
            "stored at {:>8.0} events/s (ratio to {bound_name} {:.2}); all stored {:.1} s after the last was \
             accepted; p50 {:?} p99 {:?}; RSS idle {} MiB, peak {} MiB; CPU: evtrack {:.1} µs per stored event, \
             MariaDB {:.1} µs per row, load generator {:.1} µs per event; per 1,000 rows MariaDB ran {:.1} \
             statements and {:.1} log writes",
            self.stored_per_sec,
            self.stored_per_sec / bound,
            self.drained_in.as_secs_f64(),
            self.http.p50,
            self.http.p99,
            self.idle_rss_mib,
            self.peak_rss_mib,
            self.cpu_per_event,
            self.database_cpu_per_row,
            self.load_cpu_per_event,
            self.grouping[0],
            self.grouping[1],
        )
    }
}

/// `events` new events (after a warm-up of 20 requests) sent to `stack` with the usual load,
/// measured until the last of them is stored.
pub(crate) async fn end_to_end_run(stack: &StackProcess, events: usize) -> EndToEnd {
    let url = format!("{}/v1/batch", stack.address);
    let pool = mysql_async::Pool::new(stack.database_url.as_str());
    warm_up(&url, &stack.key, &pool).await;
    let idle_rss = memory_kib(stack.pid(), "VmRSS");
    let requests = events / EVENTS_PER_REQUEST;
    let all = bodies(requests);
    let events = (requests * EVENTS_PER_REQUEST) as u64;
    let database = mariadbd_pid();
    let before = last_event_id(&pool).await;
    let (server_cpu, database_cpu) = (cpu_seconds(stack.pid()), database.map_or(0.0, cpu_seconds));
    let load_cpu = cpu_seconds(std::process::id());
    let counters = statements_and_log_writes(&pool).await;
    let started = Instant::now();
    let http = load(&url, Some(&stack.key), all).await;
    let accepted_in = started.elapsed();
    let load_cpu = cpu_seconds(std::process::id()) - load_cpu;
    wait_for_stored(&pool, before, events).await;
    let stored_in = started.elapsed();
    let server_cpu = cpu_seconds(stack.pid()) - server_cpu;
    let database_cpu = database.map_or(f64::NAN, |pid| cpu_seconds(pid) - database_cpu);
    let grouping = per_thousand_rows(counters, statements_and_log_writes(&pool).await, events);
    assert_eq!(http.failures, 0);
    pool.disconnect().await.ok();
    let events = events as f64;
    EndToEnd {
        accepted_per_sec: events / accepted_in.as_secs_f64(),
        stored_per_sec: events / stored_in.as_secs_f64(),
        drained_in: stored_in - accepted_in,
        http,
        idle_rss_mib: idle_rss / 1024,
        peak_rss_mib: memory_kib(stack.pid(), "VmHWM") / 1024,
        cpu_per_event: server_cpu * 1e6 / events,
        database_cpu_per_row: database_cpu * 1e6 / events,
        load_cpu_per_event: load_cpu * 1e6 / events,
        grouping,
    }
}

/// 20 requests, stored, before a measured run.
async fn warm_up(url: &str, key: &str, pool: &mysql_async::Pool) {
    let before = last_event_id(pool).await;
    load(url, Some(key), bodies(20)).await;
    wait_for_stored(pool, before, (20 * EVENTS_PER_REQUEST) as u64).await;
}

async fn last_event_id(pool: &mysql_async::Pool) -> u64 {
    let mut conn = pool.get_conn().await.expect("connection");
    conn.query_first::<Option<u64>, _>("SELECT MAX(id) FROM events").await.expect("last id").flatten().unwrap_or(0)
}

/// Waits (up to 10 minutes) until `expected` events after id `after` are stored, and asserts
/// that exactly that many are. Ids only grow, so the count cannot be complete before the last
/// id is `expected` past `after`: the wait polls the last id (one index dive) and counts only
/// then, so that polling costs MariaDB next to nothing while it works for the measurement.
async fn wait_for_stored(pool: &mysql_async::Pool, after: u64, expected: u64) {
    let started = Instant::now();
    let count = loop {
        let timed_out = started.elapsed() > Duration::from_secs(600);
        if last_event_id(pool).await.saturating_sub(after) >= expected || timed_out {
            let sql = format!("SELECT COUNT(*) FROM events WHERE id > {after}");
            let mut conn = pool.get_conn().await.expect("connection");
            let count: u64 = conn.query_first(sql).await.expect("count").unwrap_or(0);
            if count >= expected || timed_out {
                break count;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(count, expected, "every accepted event stored, once");
}

/// The same load end to end through a Node.js + Express + mysql2 service doing the same job
/// (`tests/bench/node/server.mjs`: queue in memory, one 500-row insert at a time) into a
/// fresh database of evtrack's schema: events/s, latency, its CPU per stored event, MariaDB's
/// per row, peak RSS. `infra/dev.sh bench` installs it (EVTRACK_BENCH_NODE names node).
async fn bench_node() {
    let Ok(node) = std::env::var("EVTRACK_BENCH_NODE") else {
        println!("(the Node.js comparison runs under `infra/dev.sh bench`, which installs it)");
        return;
    };
    let events = e2e_events();
    let db = TestDb::new().await;
    let (project, key) = project_with_key(&db, &config(&db, &[]), Scope::Write).await;
    let project_id = db.query::<u64>(&format!("SELECT id FROM projects WHERE uid = X'{}'", project.simple())).await[0];
    let url = db.url.expose().split('?').next().expect("url").to_string();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/node/server.mjs");
    let mut child = std::process::Command::new(node)
        .arg(script)
        .env("DATABASE_URL", url)
        .env("PROJECT_ID", project_id.to_string())
        .env("WRITE_KEY", &key)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node starts");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().expect("stdout")));
    let port = lines
        .find_map(|line| line.ok()?.strip_prefix("listening on ").map(str::to_string))
        .expect("the Node service printed its port");
    let url = format!("http://127.0.0.1:{port}/v1/batch");
    let database = mariadbd_pid();
    let pool = mysql_async::Pool::new(db.url.expose().as_str());
    warm_up(&url, &key, &pool).await;
    let idle_rss = memory_kib(child.id(), "VmRSS");
    let all = bodies(events / EVENTS_PER_REQUEST);
    let before = last_event_id(&pool).await;
    let (node_cpu, database_cpu) = (cpu_seconds(child.id()), database.map_or(0.0, cpu_seconds));
    let started = Instant::now();
    let http = load(&url, Some(&key), all).await;
    let accepted_in = started.elapsed();
    wait_for_stored(&pool, before, events as u64).await;
    let stored_in = started.elapsed();
    let node_cpu = cpu_seconds(child.id()) - node_cpu;
    let database_cpu = database.map_or(f64::NAN, |pid| cpu_seconds(pid) - database_cpu);
    let peak_rss = memory_kib(child.id(), "VmHWM");
    child.kill().ok();
    child.wait().ok();
    pool.disconnect().await.ok();
    assert_eq!(http.failures, 0, "every request accepted");
    let bounds = bulk_bounds(&db).await;
    let events = events as f64;
    println!(
        "{:>7} events, Node.js + Express + mysql2 (queue in memory): accepted at {:>8.0} events/s, stored at {:>8.0} events/s \
         (ratio to the faster bulk bound {:.2}); p50 {:?} p99 {:?}; RSS idle {} MiB, peak {} MiB; \
         CPU: node {:.1} µs per stored event, MariaDB {:.1} µs per row",
        events,
        events / accepted_in.as_secs_f64(),
        events / stored_in.as_secs_f64(),
        events / stored_in.as_secs_f64() / bounds.faster(),
        http.p50,
        http.p99,
        idle_rss / 1024,
        peak_rss / 1024,
        node_cpu * 1e6 / events,
        database_cpu * 1e6 / events,
    );
    println!("    {}", bounds.describe());
}

/// Latency below saturation: the load sent on a schedule at 25, 50, 75 and 100 % of the
/// stored rate just measured, about 10 s each. Each level runs on a stack of its own with an
/// empty table: into one table, each level would also pay for the rows of those before it
/// (once the table outgrows the buffer pool, its random index inserts wait for the disk).
async fn latency_curve(sustainable: f64) {
    println!("  latency curve (journaled queue; each level on a fresh stack and table):");
    for percent in [25.0, 50.0, 75.0, 100.0] {
        let stack = StackProcess::start(&[("EVTRACK_RATE_LIMIT_EVENTS_PER_SECOND", "0")]);
        let url = format!("{}/v1/batch", stack.address);
        let pool = mysql_async::Pool::new(stack.database_url.as_str());
        warm_up(&url, &stack.key, &pool).await;
        let rate = sustainable * percent / 100.0;
        let requests = ((rate * 10.0) as usize / EVENTS_PER_REQUEST).max(50);
        let load = bodies(requests);
        let before = last_event_id(&pool).await;
        let started = Instant::now();
        let run = paced_load(&url, Some(&stack.key), load, Some(rate)).await;
        let accepted_in = started.elapsed();
        wait_for_stored(&pool, before, (requests * EVENTS_PER_REQUEST) as u64).await;
        assert_eq!(run.failures, 0);
        println!(
            "    at {percent:>3.0} % of it ({rate:>6.0} events/s offered, {:>6.0} accepted): p50 {:?} p99 {:?}; \
             all stored {:.1} s after the last was accepted",
            run.events_per_sec,
            run.p50,
            run.p99,
            (started.elapsed() - accepted_in).as_secs_f64()
        );
        pool.disconnect().await.ok();
    }
}
