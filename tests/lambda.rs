//! A fake of the Lambda Runtime API, and the function binaries run against it as Lambda runs
//! them: for the tests of the built binaries and the cold-start benchmark.

use crate::workspace_binary;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use http::HeaderMap;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The X-Ray trace header of every invocation the fake runtime hands out.
pub const TRACE: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";

#[derive(Clone)]
struct FakeRuntime {
    invocations: Arc<Mutex<VecDeque<(String, String)>>>,
    /// When the function first asked for work: the end of its init.
    first_poll: Arc<OnceLock<Instant>>,
    answers: mpsc::UnboundedSender<(String, String)>,
}

/// Serves the Runtime API on a free port; returns its address and the answers channel
/// (kind, body) where kind is `response`, `error` or `init-error`.
pub async fn start_runtime(payload: Value) -> (String, mpsc::UnboundedReceiver<(String, String)>) {
    let (address, received, _) = start_runtime_observed(payload).await;
    (address, received)
}

/// As `start_runtime`, and when the function first polled for an invocation.
pub async fn start_runtime_observed(
    payload: Value,
) -> (String, mpsc::UnboundedReceiver<(String, String)>, Arc<OnceLock<Instant>>) {
    let (answers, received) = mpsc::unbounded_channel();
    let first_poll = Arc::new(OnceLock::new());
    let runtime = FakeRuntime {
        invocations: Arc::new(Mutex::new(VecDeque::from([("request-1".to_string(), payload.to_string())]))),
        first_poll: first_poll.clone(),
        answers,
    };
    let app = axum::Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next_invocation))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(|State(rt): State<FakeRuntime>, Path(_id): Path<String>, body: String| async move {
                rt.answers.send(("response".into(), body)).ok();
                http::StatusCode::ACCEPTED
            }),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/error",
            post(|State(rt): State<FakeRuntime>, Path(_id): Path<String>, body: String| async move {
                rt.answers.send(("error".into(), body)).ok();
                http::StatusCode::ACCEPTED
            }),
        )
        .route(
            "/2018-06-01/runtime/init/error",
            post(|State(rt): State<FakeRuntime>, body: String| async move {
                rt.answers.send(("init-error".into(), body)).ok();
                http::StatusCode::ACCEPTED
            }),
        )
        .with_state(runtime);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (address, received, first_poll)
}

async fn next_invocation(State(runtime): State<FakeRuntime>) -> (HeaderMap, String) {
    runtime.first_poll.get_or_init(Instant::now);
    loop {
        let next = runtime.invocations.lock().expect("lock").pop_front();
        if let Some((id, payload)) = next {
            let mut headers = HeaderMap::new();
            let deadline = chrono::Utc::now().timestamp_millis() + 30_000;
            headers.insert("lambda-runtime-aws-request-id", id.parse().expect("header"));
            headers.insert("lambda-runtime-deadline-ms", deadline.to_string().parse().expect("header"));
            headers.insert(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:000000000000:function:test".parse().expect("header"),
            );
            headers.insert("content-type", "application/json".parse().expect("header"));
            headers.insert("lambda-runtime-trace-id", TRACE.parse().expect("header"));
            return (headers, payload);
        }
        // No more work: a real runtime would freeze the process here.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An API Gateway HTTP API (payload v2) request, as the ingest and api functions receive it.
pub fn api_gateway_request(method: &str, path: &str, query: &str, authorization: &str, body: Option<&Value>) -> Value {
    let mut request = json!({
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": query,
        "headers": {"content-type": "application/json", "authorization": authorization, "host": "api.example"},
        "requestContext": {
            "accountId": "000000000000", "apiId": "api", "domainName": "api.example", "domainPrefix": "api",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "198.51.100.23", "userAgent": "test"},
            "requestId": "r-1", "routeKey": "$default", "stage": "$default", "time": "26/Nov/2026:12:00:00 +0000", "timeEpoch": 0
        },
        "isBase64Encoded": false
    });
    if let Some(body) = body {
        request["body"] = Value::from(body.to_string());
    }
    request
}

/// A function binary, running; its stdout (the JSON logs and metric lines CloudWatch would
/// receive) goes to a file.
pub struct Running {
    child: Child,
    stdout: std::path::PathBuf,
}

impl Running {
    /// Every stdout line, parsed as JSON (the function logs only JSON on Lambda).
    pub fn stdout_lines(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("not a JSON line ({err}): {line}")))
            .collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
        std::fs::remove_file(&self.stdout).ok();
    }
}

pub fn run_lambda(binary: &str, runtime_api: &str, env: &[(&str, String)]) -> Running {
    let mut command = Command::new(workspace_binary(binary));
    command
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", binary)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test-stream")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "test-group")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .stderr(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let stdout = std::env::temp_dir().join(format!("evtrack-{binary}-{}.log", uuid::Uuid::now_v7().simple()));
    command.stdout(std::fs::File::create(&stdout).expect("log file"));
    Running { child: command.spawn().expect("lambda binary starts"), stdout }
}

pub async fn answer(received: &mut mpsc::UnboundedReceiver<(String, String)>) -> (String, Value) {
    let (kind, body) = tokio::time::timeout(Duration::from_secs(60), received.recv())
        .await
        .expect("the function answered within 60 s")
        .expect("answer");
    (kind, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}
