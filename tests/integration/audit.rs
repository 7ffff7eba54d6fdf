//! Accountability: the audit trail of admin actions, and the request id that ties an error
//! answer to its logged detail — against real MariaDB.

use crate::lifecycle::{batch, run_cleanup};
use evtrack_tests::{TestApp, api_request, post_json};
use http::StatusCode;
use serde_json::{Value, json};

fn request_id(reply: &evtrack_tests::Reply) -> String {
    reply.headers.get("x-request-id").and_then(|value| value.to_str().ok()).expect("x-request-id").to_string()
}

#[tokio::test]
async fn every_admin_action_is_audited_by_key_id_request_id_and_truncated_ip_never_by_key_or_user_id() {
    let app = TestApp::new().await;
    let admin = &app.admin;
    let call = async |method: &str, path: &str, body: Option<Value>| {
        app.send(api_request(method, path, admin, body.as_ref())).await
    };
    let created = call("POST", "/v1/projects", Some(json!({"name": "audited"}))).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let project = created.json["id"].as_str().expect("id").to_string();
    call("PATCH", &format!("/v1/projects/{project}"), Some(json!({"retention_days": 90}))).await;
    let key = call("POST", "/v1/keys", Some(json!({"scope": "write", "project": project}))).await;
    let key_id = key.json["id"].as_str().expect("key id").to_string();
    let rotated = call("POST", &format!("/v1/keys/{key_id}/rotate"), Some(json!({"grace_hours": 0}))).await;
    assert_eq!(rotated.status, StatusCode::CREATED);
    let successor = rotated.json["id"].as_str().expect("successor").to_string();
    call("POST", &format!("/v1/keys/{successor}/revoke"), None).await;
    call("DELETE", &format!("/v1/keys/{key_id}"), None).await;
    call("POST", &format!("/v1/keys/{key_id}/restore"), None).await;
    let message =
        json!({"type": "identify", "userId": "audit-user", "traits": {"plan": "pro"}, "messageId": "audit-1"});
    assert_eq!(app.send(batch(&app.key, vec![message])).await.status, StatusCode::OK);
    assert!(app.consume_queued().await.is_empty());
    let event: Vec<Vec<u8>> = app.db.query("SELECT uid FROM events WHERE message_id = 'audit-1'").await;
    let event = uuid::Uuid::from_slice(&event[0]).expect("uid");
    let own = app.project;
    call("DELETE", &format!("/v1/events/{event}?project={own}"), None).await;
    call("POST", &format!("/v1/events/{event}/restore?project={own}"), None).await;
    call("POST", &format!("/v1/users/audit-user/soft-delete?project={own}"), None).await;
    call("POST", &format!("/v1/users/audit-user/restore?project={own}"), None).await;
    assert_eq!(call("GET", &format!("/v1/users/audit-user/export?project={own}"), None).await.status, StatusCode::OK);
    assert_eq!(call("DELETE", &format!("/v1/users/audit-user?project={own}"), None).await.status, StatusCode::ACCEPTED);
    call("POST", "/v1/jobs/rotate-keys/runs", Some(json!({"slot": "2026-11-30T10:00:00Z"}))).await;
    call("DELETE", &format!("/v1/projects/{project}"), None).await;
    call("POST", &format!("/v1/projects/{project}/restore"), None).await;
    // Refused after the key was accepted: recorded with its status.
    let admin_id: Vec<Vec<u8>> = app.db.query("SELECT uid FROM api_keys WHERE scope = 'admin'").await;
    let admin_id = uuid::Uuid::from_slice(&admin_id[0]).expect("uid");
    assert_eq!(call("POST", &format!("/v1/keys/{admin_id}/revoke"), None).await.status, StatusCode::CONFLICT);
    // No accepted key: nobody acted, nothing recorded.
    let stranger = app.send(api_request("POST", "/v1/projects", "evta_not-a-key", Some(&json!({"name": "x"})))).await;
    assert_eq!(stranger.status, StatusCode::UNAUTHORIZED);

    let trail = call("GET", "/v1/audit?limit=200", None).await;
    assert_eq!(trail.status, StatusCode::OK, "{}", trail.json);
    let mut records = trail.json["data"].as_array().expect("data").clone();
    records.reverse();
    let actions: Vec<(&str, u64)> = records
        .iter()
        .map(|record| (record["action"].as_str().expect("action"), record["status"].as_u64().expect("status")))
        .collect();
    assert_eq!(
        actions,
        [
            ("project.create", 201),
            ("project.update", 200),
            ("key.create", 201),
            ("key.rotate", 201),
            ("key.revoke", 200),
            ("key.delete", 200),
            ("key.restore", 200),
            ("event.delete", 200),
            ("event.restore", 200),
            ("user.delete", 200),
            ("user.restore", 200),
            ("user.export", 200),
            ("user.erase", 202),
            ("job.trigger", 201),
            ("project.delete", 200),
            ("project.restore", 200),
            ("key.revoke", 409),
        ]
    );
    for record in &records {
        assert_eq!(record["actor_key"], admin_id.to_string(), "{record}");
        assert_eq!(record["client_ip"], "203.0.113.0", "truncated: {record}");
    }
    assert_eq!(records[0]["target"], format!("project:{project}"));
    assert_eq!(records[0]["request_id"], request_id(&created), "the id the answer carried");
    assert_eq!(records[2]["target"], format!("key:{key_id}"));
    assert_eq!(records[2]["project"], project, "a key of the project");
    let user_target = records[12]["target"].as_str().expect("target");
    assert!(user_target.starts_with("user:") && user_target.len() == 5 + 64, "{user_target}");
    // Neither a key nor the user id is in the trail.
    let text = trail.json.to_string();
    assert!(!text.contains(admin.as_str()) && !text.contains("audit-user"));
    assert_eq!(app.db.count("audit_log WHERE LOCATE('audit-user', CONCAT_WS('|', action, target)) > 0").await, 0);

    // Read keys cannot read it.
    let read = call("POST", "/v1/keys", Some(json!({"scope": "read", "project": own}))).await;
    let read_key = read.json["key"].as_str().expect("key");
    assert_eq!(app.send(api_request("GET", "/v1/audit", read_key, None)).await.status, StatusCode::FORBIDDEN);

    // Cleanup prunes records past their retention (365 days before the slot).
    app.db.execute("UPDATE audit_log SET created_at = '2025-06-01' WHERE action LIKE 'key.%'").await;
    run_cleanup(&app, "2026-11-30T11:00:00Z").await;
    assert_eq!(app.db.count("audit_log WHERE action LIKE 'key.%'").await, 0);
    assert!(app.db.count("audit_log WHERE action LIKE 'project.%'").await >= 4);
}

#[tokio::test]
async fn error_answers_carry_the_request_id_and_never_the_database_text() {
    let app = TestApp::new().await;
    // The api: a 404, a 400 and a 401; ingest: a 400 and a 401.
    let answers = [
        app.send(api_request("GET", "/v1/projects/00000000-0000-0000-0000-000000000000", &app.admin, None)).await,
        app.send(api_request("POST", "/v1/projects", &app.admin, Some(&json!({"name": "x".repeat(201)})))).await,
        app.send(api_request("GET", "/v1/projects", "evta_wrong", None)).await,
        app.send(post_json("/v1/batch", Some(&app.key), &json!({"batch": "not a list"}))).await,
        app.send(post_json("/v1/batch", Some("evtw_wrong"), &json!({"batch": []}))).await,
    ];
    for reply in answers {
        assert!(reply.status.is_client_error(), "{}", reply.json);
        let id = request_id(&reply);
        assert_eq!(reply.json["request_id"], id, "{}", reply.json);
        let text = reply.json.to_string();
        assert!(!text.contains("SQL") && !text.contains("Data too long"), "{text}");
    }
    // Successful answers carry the header too, each its own id.
    let one = app.send(api_request("GET", "/v1/projects", &app.admin, None)).await;
    let two = app.send(api_request("GET", "/v1/projects", &app.admin, None)).await;
    assert_ne!(request_id(&one), request_id(&two));
}

#[tokio::test]
async fn a_handler_that_panics_answers_500_with_its_request_id_and_the_security_headers() {
    use tower::ServiceExt;
    // The same layers, in the same order, as the api's and ingest's routers.
    let router = axum::Router::new()
        .route("/boom", axum::routing::get(boom))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(evtrack::http::answer_panic))
        .layer(axum::middleware::from_fn(evtrack::http::security_headers))
        .layer(axum::middleware::from_fn(evtrack::http::request_context));
    let request = http::Request::get("/boom").body(axum::body::Body::empty()).expect("request");
    let response = router.oneshot(request).await.expect("an answer, not a dropped connection");
    assert_eq!(response.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let id = response.headers()["x-request-id"].to_str().expect("id").to_string();
    let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.expect("body");
    let json: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(json["code"], "internal");
    assert_eq!(json["request_id"], id);
    assert!(!json.to_string().contains("a bug in a handler"), "the panic's text stays in the logs");
}

async fn boom() -> &'static str {
    panic!("a bug in a handler")
}
