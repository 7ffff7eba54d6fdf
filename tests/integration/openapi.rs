//! The ingest and api routes against their OpenAPI descriptions (functions/*/openapi.yaml):
//! schemathesis generates requests from them and checks every answer — no 5xx, status codes,
//! content types, headers and bodies as described.

use evtrack_tests::*;
use std::path::PathBuf;

#[tokio::test]
async fn ingest_answers_as_its_openapi_description_says() {
    let stack = StackProcess::start(&[]);
    let auth = ["--auth".to_string(), format!("{}:", stack.key)];
    schemathesis(&stack, concat!(env!("CARGO_MANIFEST_DIR"), "/../functions/ingest/openapi.yaml"), &auth, 28).await;
}

#[tokio::test]
async fn the_api_answers_as_its_openapi_description_says() {
    let stack = StackProcess::start(&[]);
    let auth = ["--header".to_string(), format!("Authorization: Bearer {}", stack.admin_key)];
    schemathesis(&stack, concat!(env!("CARGO_MANIFEST_DIR"), "/../functions/api/openapi.yaml"), &auth, 42).await;
}

/// The read side with a read key of a project that has events: the questions schemathesis
/// generates are answered from real rows (an admin key without `project` stops at the 400).
#[tokio::test]
async fn the_read_side_answers_as_its_openapi_description_says_with_a_read_key() {
    let stack = StackProcess::start(&[]);
    let client = reqwest::Client::new();
    let key = stack.read_key("schemathesis").await;
    let events: Vec<serde_json::Value> = (0..200)
        .map(|n| {
            let (kind, plan) = (["track", "page", "identify", "group"][n % 4], ["pro", "free"][n % 2]);
            serde_json::json!({"type": kind, "event": format!("Event {}", n % 7), "name": "Home",
                "userId": format!("user-{}", n % 23), "groupId": format!("group-{}", n % 5),
                "properties": {"plan": plan, "n": n}, "traits": {"plan": plan}})
        })
        .collect();
    client
        .post(format!("{}/v1/batch", stack.address))
        .basic_auth(&stack.key, Some(""))
        .json(&serde_json::json!({"batch": events}))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("a batch");
    let auth = ["--header".to_string(), format!("Authorization: Bearer {key}")];
    let read_side =
        ["--include-path-regex".to_string(), "^/v1/(query/|events|event-names|users|groups|properties)".to_string()];
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/../functions/api/openapi.yaml");
    schemathesis(&stack, spec, &[&auth[..], &read_side[..]].concat(), 24).await;
}

/// Runs schemathesis on `spec` against `stack`; every one of `operations` must pass.
async fn schemathesis(stack: &StackProcess, spec: &str, auth: &[String], operations: usize) {
    let python = std::env::var("EVTRACK_TEST_PYTHON")
        .expect("EVTRACK_TEST_PYTHON is not set: run the tests with `infra/dev.sh test`, which installs schemathesis");
    let schemathesis = PathBuf::from(python).with_file_name("schemathesis");
    let report = std::env::temp_dir().join(format!("evtrack-schemathesis-{}", uuid::Uuid::now_v7().simple()));
    let output = tokio::process::Command::new(&schemathesis)
        .current_dir(std::env::temp_dir())
        .args(["run", spec, "--url", &stack.address])
        .args(auth)
        .args(["--max-examples", "25", "--seed", "1", "--workers", "1"])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance",
        ])
        .arg("--report-dir")
        .arg(&report)
        .output()
        .await
        .unwrap_or_else(|err| panic!("{} must be installed: {err}", schemathesis.display()));
    std::fs::remove_dir_all(&report).ok();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(&format!("{operations} passed")), "every operation was tested:\n{stdout}");
}
