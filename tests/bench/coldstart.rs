//! Cold start of each function binary: init (process start → its first poll of the Runtime
//! API) and the first invocation (that poll → its answer), against a fake Runtime API, beside
//! the same figures of the smallest Rust Lambda (`hello-lambda`) measured in the same run; and
//! each binary's size, as built and as deflated into a zip. Every function gets real work on
//! its first invocation: ingest queues a batch to SQS (moto), the consumer stores it, the api
//! lists projects with an admin key, the jobs run a slot against MariaDB.
//!
//! Run with `infra/dev.sh bench` (or `EVTRACK_BENCH_ONLY=coldstart`): it builds the release
//! binaries and starts MariaDB and moto. EVTRACK_BENCH_COLD_STARTS sets the starts per binary.

use evtrack::keys::Scope;
use evtrack_tests::lambda::{answer, api_gateway_request, run_lambda, start_runtime_observed};
use evtrack_tests::*;
use serde_json::{Value, json};
use std::io::Write;
use std::time::{Duration, Instant};

const PEPPER: &str = "bench-pepper";
const MASTER: &str = "1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

struct Timing {
    init: Vec<Duration>,
    first: Vec<Duration>,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let starts: usize = std::env::var("EVTRACK_BENCH_COLD_STARTS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
        let db = TestDb::new().await;
        let config = config(&db, &[("EVTRACK_KEY_PEPPER", PEPPER), ("EVTRACK_MASTER_KEYS", MASTER)]);
        let (_, write_key) = project_with_key(&db, &config, Scope::Write).await;
        let (_, admin) =
            issue_key(&db.store, &config, None, Scope::Admin, "bench").await;
        let admin = admin.reveal().to_string();
        let sqs = sqs_client(&sqs_endpoint());
        let queue_url = fresh_queue(&sqs).await;
        let env = vec![
            ("EVTRACK_DATABASE_URL", db.url.expose().clone()),
            ("EVTRACK_KEY_PEPPER", PEPPER.to_string()),
            ("EVTRACK_MASTER_KEYS", MASTER.to_string()),
            ("EVTRACK_SQS_QUEUE_URL", queue_url.clone()),
            ("EVTRACK_REDIS_URL", "none".to_string()),
            ("EVTRACK_JOB_FUNCTION_CLEANUP", "cleanup".to_string()),
            ("EVTRACK_JOB_FUNCTION_ROTATE_KEYS", "rotate-keys".to_string()),
            ("EVTRACK_JOB_FUNCTION_ROLLUPS", "cleanup".to_string()),
            ("AWS_ENDPOINT_URL_SQS", sqs_endpoint()),
            ("RUST_LOG", "warn".to_string()),
        ];
        use base64::Engine;
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:")));
        println!("machine: {} cores; {starts} cold starts per binary; release builds (x86_64 here, arm64 on AWS)", cores());
        println!(
            "{:<12} {:>10} {:>10} {:>10} {:>11} {:>11} {:>9} {:>9}",
            "binary", "init p50", "init p90", "÷ hello", "first p50", "first p90", "size", "zip"
        );
        let hello = measure("hello-lambda", starts, &env, |_| json!({"hello": "world"})).await;
        report("hello-lambda", &hello, &hello);
        let ingest = measure("ingest", starts, &env, |i| {
            let batch = json!({"batch": [{"type": "track", "event": "Cold Start", "userId": "u", "messageId": format!("cold-{i}")}]});
            api_gateway_request("POST", "/v1/batch", "", &basic, Some(&batch))
        })
        .await;
        report("ingest", &ingest, &hello);
        let messages = receive_all(&sqs, &queue_url).await;
        assert_eq!(messages.len(), starts, "every cold ingest queued its batch");
        let consumer = measure("consumer", starts, &env, |i| {
            json!({"Records": [{"messageId": messages[i].message_id(), "body": messages[i].body(), "attributes": {},
                                "messageAttributes": {}, "eventSource": "aws:sqs"}]})
        })
        .await;
        report("consumer", &consumer, &hello);
        assert_eq!(db.count("events WHERE message_id LIKE 'cold-%'").await, starts as u64, "every cold consumer stored");
        let api = measure("api", starts, &env, |_| {
            api_gateway_request("GET", "/v1/projects", "limit=10", &format!("Bearer {admin}"), None)
        })
        .await;
        report("api", &api, &hello);
        for job in ["cleanup", "rotate-keys"] {
            let timing = measure(job, starts, &env, |i| {
                json!({"scheduled_time": format!("2026-01-01T{:02}:{:02}:00Z", i / 60, i % 60)})
            })
            .await;
            report(job, &timing, &hello);
        }
    });
}

/// Starts `binary` `starts` times, each with one invocation of `payload(i)`; every answer must
/// be a success.
async fn measure(binary: &str, starts: usize, env: &[(&str, String)], payload: impl Fn(usize) -> Value) -> Timing {
    let mut timing = Timing { init: Vec::new(), first: Vec::new() };
    for i in 0..starts {
        let (runtime_api, mut received, first_poll) = start_runtime_observed(payload(i)).await;
        let started = Instant::now();
        let function = run_lambda(binary, &runtime_api, env);
        let (kind, response) = answer(&mut received).await;
        let answered = Instant::now();
        assert_eq!(kind, "response", "{binary}: {response}");
        let status = response.get("statusCode").and_then(Value::as_u64).unwrap_or(200);
        assert!(status < 300, "{binary}: {response}");
        let polled = *first_poll.get().expect("the function polled");
        timing.init.push(polled - started);
        timing.first.push(answered - polled);
        drop(function);
    }
    timing
}

fn report(binary: &str, timing: &Timing, hello: &Timing) {
    let path = workspace_binary(binary);
    let bytes = std::fs::read(&path).expect("binary");
    let mut zip = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    zip.write_all(&bytes).expect("deflate");
    let zipped = zip.finish().expect("deflate").len();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let init = percentile(&timing.init, 50);
    println!(
        "{binary:<12} {:>8.1}ms {:>8.1}ms {:>10.2} {:>9.1}ms {:>9.1}ms {:>7.1}MB {:>7.1}MB",
        ms(init),
        ms(percentile(&timing.init, 90)),
        ms(init) / ms(percentile(&hello.init, 50)),
        ms(percentile(&timing.first, 50)),
        ms(percentile(&timing.first, 90)),
        bytes.len() as f64 / 1e6,
        zipped as f64 / 1e6,
    );
}

fn percentile(values: &[Duration], p: usize) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
