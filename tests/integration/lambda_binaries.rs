//! The built Lambda binaries, not just their handlers: each runs against a small fake of the
//! Lambda Runtime API, is fed a real event payload, and must answer it.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::post;
use evtrack::keys::Scope;
use evtrack_tests::lambda::*;
use evtrack_tests::*;
use serde_json::{Value, json};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// An HTTP proxy to `target` that keeps every request body it forwards; returns its URL.
async fn recording_proxy(target: String, bodies: Arc<Mutex<Vec<String>>>) -> String {
    let client = reqwest::Client::new();
    let forward = move |request: axum::extract::Request| {
        let (client, target, bodies) = (client.clone(), target.clone(), bodies.clone());
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.expect("body");
            bodies.lock().expect("lock").push(String::from_utf8_lossy(&body).into_owned());
            let mut forwarded = client.request(parts.method, format!("{target}{}", parts.uri));
            for (name, value) in parts.headers.iter().filter(|(name, _)| *name != http::header::HOST) {
                forwarded = forwarded.header(name, value);
            }
            let answer = forwarded.body(body).send().await.expect("the target answers");
            let mut response = axum::response::Response::builder().status(answer.status());
            for (name, value) in answer.headers() {
                response = response.header(name, value);
            }
            response.body(axum::body::Body::from(answer.bytes().await.expect("answer"))).expect("response")
        }
    };
    let app = axum::Router::new().fallback(forward);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    format!("http://{address}")
}

/// A function's binary name and its environment.
type FunctionEnv = (String, Vec<(&'static str, String)>);

/// A fake of the Lambda service's Invoke API (what the api's job runners call): each
/// invocation runs the function's real binary against a fake Runtime API with the payload,
/// and answers what it answered (an error as `X-Amz-Function-Error`). Returns its URL.
async fn start_lambda_service(functions: Vec<FunctionEnv>) -> String {
    let functions = Arc::new(functions);
    let app = axum::Router::new()
        .route(
            "/2015-03-31/functions/{name}/invocations",
            post(|State(functions): State<Arc<Vec<FunctionEnv>>>, Path(name): Path<String>, body: String| async move {
                let Some((binary, env)) = functions.iter().find(|(function, _)| *function == name) else {
                    return (
                        http::StatusCode::NOT_FOUND,
                        [("x-amzn-errortype", "ResourceNotFoundException")],
                        String::new(),
                    )
                        .into_response();
                };
                let (runtime_api, mut received) =
                    start_runtime(serde_json::from_str(&body).expect("json payload")).await;
                let _function = run_lambda(binary, &runtime_api, env);
                let (kind, answer) = answer(&mut received).await;
                let mut response = answer.to_string().into_response();
                if kind != "response" {
                    response.headers_mut().insert("x-amz-function-error", "Unhandled".parse().expect("header"));
                }
                response
            }),
        )
        .with_state(functions);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    format!("http://{address}")
}

#[tokio::test]
async fn ingest_and_consumer_binaries_answer_real_lambda_payloads() {
    let db = TestDb::new().await;
    let pepper = "lambda-test-pepper";
    let config = config(&db, &[("EVTRACK_KEY_PEPPER", pepper)]);
    let (_, key) = project_with_key(&db, &config, Scope::Write).await;
    let client = sqs_client(&sqs_endpoint());
    let queue_url = fresh_queue(&client).await;
    let sent_to_sqs = Arc::new(Mutex::new(Vec::new()));
    let env = vec![
        ("EVTRACK_DATABASE_URL", db.url.expose().clone()),
        ("EVTRACK_KEY_PEPPER", pepper.to_string()),
        ("EVTRACK_SQS_QUEUE_URL", queue_url.clone()),
        ("EVTRACK_REDIS_URL", redis_url()),
        // moto keeps no system attributes of SendMessageBatch: record what ingest sends.
        ("AWS_ENDPOINT_URL_SQS", recording_proxy(sqs_endpoint(), sent_to_sqs.clone()).await),
    ];

    let body = json!({"batch": [{"type": "track", "event": "Lambda Works", "userId": "u", "messageId": "lambda-1"}]});
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
    let request = api_gateway_request("POST", "/v1/batch", "", &format!("Basic {basic}"), Some(&body));
    let (runtime_api, mut received) = start_runtime(request).await;
    let _ingest = run_lambda("ingest", &runtime_api, &env);
    let (kind, response) = answer(&mut received).await;
    assert_eq!(kind, "response", "{response}");
    assert_eq!(response["statusCode"], 200, "{response}");
    assert_eq!(response["body"], json!({"success": true}).to_string());

    let messages = receive_all(&client, &queue_url).await;
    assert_eq!(messages.len(), 1);
    let envelope: Value = serde_json::from_str(messages[0].body().unwrap_or_default()).expect("envelope");
    assert_eq!(envelope["ip"], "198.51.100.0", "the API Gateway source IP, truncated");
    // The invocation's trace travels with the message, as its AWSTraceHeader.
    let sent = sent_to_sqs.lock().expect("lock").join("\n");
    let entries: Value = serde_json::from_str(&sent).expect("one SendMessageBatch");
    let system = &entries["Entries"][0]["MessageSystemAttributes"]["AWSTraceHeader"];
    assert_eq!((&system["DataType"], &system["StringValue"]), (&json!("String"), &json!(TRACE)), "{entries}");
    let trace = TRACE;
    let ingest_metrics: Vec<Value> =
        _ingest.stdout_lines().into_iter().filter(|line| line.get("_aws").is_some()).collect();
    for line in &ingest_metrics {
        check_emf(line).unwrap_or_else(|err| panic!("{err}: {line}"));
    }
    let request = ingest_metrics.iter().find(|line| line.get("Requests").is_some()).expect("a request metric");
    assert_eq!(
        (&request["Function"], &request["Route"], &request["Outcome"], &request["Events"]),
        (&json!("ingest"), &json!("segment_batch"), &json!("accepted"), &json!(1.0)),
        "{request}"
    );
    assert!(request["QueueSendLatency"].as_f64().is_some() && request["BytesIn"].as_f64() > Some(50.0), "{request}");

    // The SQS event the event source mapping would deliver.
    let sqs_event = json!({"Records": [{
        "messageId": messages[0].message_id(), "receiptHandle": messages[0].receipt_handle(),
        "body": messages[0].body(), "attributes": {"ApproximateReceiveCount": "1", "AWSTraceHeader": trace},
        "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:events", "awsRegion": "us-east-1"
    }]});
    let (runtime_api, mut received) = start_runtime(sqs_event).await;
    let _consumer = run_lambda("consumer", &runtime_api, &env);
    let (kind, response) = answer(&mut received).await;
    assert_eq!(kind, "response", "{response}");
    assert_eq!(response, json!({"batchItemFailures": []}));
    assert_eq!(db.count("events WHERE message_id = 'lambda-1' AND ip = '198.51.100.0'").await, 1);

    // Its log line carries the Lambda request id, its own trace and ingest's; its metrics
    // are valid EMF.
    let lines = _consumer.stdout_lines();
    let processed = lines.iter().find(|line| line["message"] == "batch processed").expect("the batch log line");
    let spans = processed["spans"].to_string();
    assert!(spans.contains("\"requestId\":\"request-1\"") && spans.contains(TRACE), "{processed}");
    assert_eq!(processed["span"]["ingest_traces"], TRACE, "{processed}");
    let metrics: Vec<&Value> = lines.iter().filter(|line| line.get("_aws").is_some()).collect();
    for line in &metrics {
        check_emf(line).unwrap_or_else(|err| panic!("{err}: {line}"));
    }
    let batch = metrics.iter().find(|line| line.get("EventsStored").is_some()).expect("batch metrics");
    assert_eq!(
        (&batch["EventsStored"], &batch["BatchSize"], &batch["Duplicates"]),
        (&json!(1.0), &json!(1.0), &json!(0.0))
    );
    assert!(batch["Lag"].as_f64().is_some() && batch["TransactionTime"].as_f64().is_some(), "{batch}");
}

#[test]
fn the_ingest_binary_refuses_to_start_with_the_development_pepper() {
    for pepper in ["", evtrack::config::DEVELOPMENT_PEPPER] {
        let output = Command::new(workspace_binary("ingest"))
            .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:1")
            .env("EVTRACK_DATABASE_URL", "mysql://ingest@127.0.0.1:1/evtrack")
            .env("EVTRACK_KEY_PEPPER", pepper)
            .env("EVTRACK_SQS_QUEUE_URL", "http://127.0.0.1:1/000000000000/q")
            .output()
            .expect("runs");
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("set EVTRACK_KEY_PEPPER_SECRET_ID"), "{stderr}");
    }
}

#[tokio::test]
async fn api_rotate_keys_and_cleanup_binaries_answer_real_lambda_payloads() {
    let db = TestDb::new().await;
    let pepper = "lambda-test-pepper";
    let master = "1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
    let config = config(&db, &[("EVTRACK_KEY_PEPPER", pepper), ("EVTRACK_MASTER_KEYS", master)]);
    let (_, admin) = issue_key(&db.store, &config, None, Scope::Admin, "lambda").await;
    // Each binary runs as its own database user, as on AWS.
    let users = db.function_users().await;
    let env_of = |function: &str| {
        vec![
            ("EVTRACK_DATABASE_URL", users.url(function).expose().clone()),
            ("EVTRACK_KEY_PEPPER", pepper.to_string()),
            ("EVTRACK_MASTER_KEYS", master.to_string()),
        ]
    };
    // The api triggers jobs by invoking their functions: a fake Lambda service runs the
    // job's binary for each Invoke.
    let lambda = start_lambda_service(vec![
        ("cleanup".to_string(), env_of("cleanup")),
        ("rotate-keys".to_string(), env_of("rotate-keys")),
    ])
    .await;
    let mut api_env = env_of("api");
    api_env.extend([
        ("EVTRACK_JOB_FUNCTION_CLEANUP", "cleanup".to_string()),
        ("EVTRACK_JOB_FUNCTION_ROLLUPS", "cleanup".to_string()),
        ("EVTRACK_JOB_FUNCTION_ROTATE_KEYS", "rotate-keys".to_string()),
        ("AWS_ENDPOINT_URL_LAMBDA", lambda),
    ]);

    let request = api_gateway_request("GET", "/v1/keys", "limit=5", &format!("Bearer {}", admin.reveal()), None);
    let (runtime_api, mut received) = start_runtime(request).await;
    let _api = run_lambda("api", &runtime_api, &api_env);
    let (kind, response) = answer(&mut received).await;
    assert_eq!((kind.as_str(), &response["statusCode"]), ("response", &json!(200)), "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().expect("body")).expect("json");
    assert_eq!(body["data"][0]["scope"], "admin", "{body}");

    // `POST /v1/jobs/cleanup/runs` on the api: it invokes the cleanup function (which runs
    // the slot as the cleanup user: the api's user may not delete); a repeat finds it ran.
    let trigger = json!({"slot": "2026-11-26T05:00:00Z"});
    for (status, ran) in [(201, true), (200, false)] {
        let request = api_gateway_request(
            "POST",
            "/v1/jobs/cleanup/runs",
            "",
            &format!("Bearer {}", admin.reveal()),
            Some(&trigger),
        );
        let (runtime_api, mut received) = start_runtime(request).await;
        let _api = run_lambda("api", &runtime_api, &api_env);
        let (kind, response) = answer(&mut received).await;
        assert_eq!((kind.as_str(), &response["statusCode"]), ("response", &json!(status)), "{response}");
        let body: Value = serde_json::from_str(response["body"].as_str().expect("body")).expect("json");
        assert_eq!(
            (&body["ran"], &body["run"]["job"], &body["run"]["state"]),
            (&json!(ran), &json!("cleanup"), &json!("succeeded")),
            "{body}"
        );
        assert_eq!(body["run"]["triggered_by"], "api", "{body}");
    }

    // The rollups job runs on the cleanup function: the api invokes it with "job": "rollups".
    let request = api_gateway_request(
        "POST",
        "/v1/jobs/rollups/runs",
        "",
        &format!("Bearer {}", admin.reveal()),
        Some(&json!({"slot": "2026-11-26T05:01:00Z"})),
    );
    let (runtime_api, mut received) = start_runtime(request).await;
    let _api = run_lambda("api", &runtime_api, &api_env);
    let (_, response) = answer(&mut received).await;
    assert_eq!(response["statusCode"], 201, "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().expect("body")).expect("json");
    assert_eq!((&body["run"]["job"], &body["run"]["state"]), (&json!("rollups"), &json!("succeeded")), "{body}");

    // EventBridge Scheduler's input, twice for one slot (Scheduler retries): one run each.
    let scheduled = json!({"scheduled_time": "2026-11-26T06:00:00Z"});
    let rollups = json!({"scheduled_time": "2026-11-26T06:00:00Z", "job": "rollups"});
    for (function, job, input) in [
        ("rotate-keys", "rotate-keys", &scheduled),
        ("cleanup", "cleanup", &scheduled),
        ("cleanup", "rollups", &rollups),
    ] {
        for expected_ran in [true, false] {
            let (runtime_api, mut received) = start_runtime(input.clone()).await;
            let _job = run_lambda(function, &runtime_api, &env_of(function));
            let (kind, response) = answer(&mut received).await;
            assert_eq!(kind, "response", "{job}: {response}");
            assert_eq!((&response["ran"], &response["run"]["job"]), (&json!(expected_ran), &json!(job)), "{response}");
            assert_eq!(response["run"]["state"], "succeeded");
            // A run reports rows and time per step as metrics.
            let steps: Vec<Value> =
                _job.stdout_lines().into_iter().filter(|line| line.get("StepRows").is_some()).collect();
            assert_eq!(steps.is_empty(), !expected_ran, "{job}: step metrics only when it ran");
            for line in &steps {
                check_emf(line).unwrap_or_else(|err| panic!("{err}: {line}"));
                assert_eq!((&line["Function"], &line["Job"]), (&json!(job), &json!(job)), "{line}");
            }
        }
    }
    assert_eq!(db.count("job_runs").await, 5);
    assert_eq!(db.count("signing_keys WHERE master_version = 1").await, 1);
}

#[test]
fn the_api_and_rotate_keys_binaries_refuse_to_start_without_a_master_key() {
    for binary in ["api", "rotate-keys"] {
        let output = Command::new(workspace_binary(binary))
            .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:1")
            .env("EVTRACK_DATABASE_URL", "mysql://api@127.0.0.1:1/evtrack")
            .env("EVTRACK_KEY_PEPPER", "a-real-pepper")
            .env_remove("EVTRACK_MASTER_KEYS")
            .env_remove("EVTRACK_MASTER_KEYS_SECRET_ID")
            .output()
            .expect("runs");
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("EVTRACK_MASTER_KEYS_SECRET_ID"), "{binary}: {stderr}");
    }
}

/// On AWS the secrets come from Secrets Manager: the api binary reads its database URL, the
/// pepper and the master keys from the secrets `*_SECRET_ID` name (moto's Secrets Manager
/// here), connects, verifies the admin key and signs a cursor with them.
#[tokio::test]
async fn the_api_binary_reads_its_secrets_from_secrets_manager() {
    use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
    let db = TestDb::new().await;
    let pepper = "lambda-test-pepper";
    let config = config(&db, &[("EVTRACK_KEY_PEPPER", pepper)]);
    let (_, admin) = issue_key(&db.store, &config, None, Scope::Admin, "sm").await;
    for name in ["a", "b"] {
        db.store.create_project(name).await.expect("project");
    }
    let secrets = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(sqs_endpoint())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
            .build(),
    );
    // Every secret setting as a secret: the api user's database URL, the pepper, the master keys.
    let users = db.function_users().await;
    let mut env = vec![
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", sqs_endpoint()),
        ("EVTRACK_JOB_FUNCTION_CLEANUP", "cleanup".to_string()),
        ("EVTRACK_JOB_FUNCTION_ROLLUPS", "cleanup".to_string()),
        ("EVTRACK_JOB_FUNCTION_ROTATE_KEYS", "rotate-keys".to_string()),
    ];
    let secrets_of = [
        ("EVTRACK_DATABASE_URL_SECRET_ID", users.url("api").expose().clone()),
        ("EVTRACK_KEY_PEPPER_SECRET_ID", pepper.to_string()),
        ("EVTRACK_MASTER_KEYS_SECRET_ID", "7:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8".to_string()),
    ];
    for (setting, value) in secrets_of {
        let secret_id = format!("evtrack-{}", uuid::Uuid::now_v7().simple());
        secrets.create_secret().name(&secret_id).secret_string(value).send().await.expect("moto's Secrets Manager");
        env.push((setting, secret_id));
    }
    let request = api_gateway_request("GET", "/v1/projects", "limit=1", &format!("Bearer {}", admin.reveal()), None);
    let (runtime_api, mut received) = start_runtime(request).await;
    let _api = run_lambda("api", &runtime_api, &env);
    let (kind, response) = answer(&mut received).await;
    assert_eq!((kind.as_str(), &response["statusCode"]), ("response", &json!(200)), "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().expect("body")).expect("json");
    assert!(body["next_cursor"].is_string(), "a signed cursor for the second page: {body}");
    assert_eq!(db.count("signing_keys WHERE master_version = 7").await, 1, "sealed under the secret's key");
}
