//! Ingest through the router the Lambda runs: every body shape of PROTOCOL.md lands, and
//! every bad input gets a clear JSON error and queues nothing.

use axum::body::Body;
use chrono::{Duration, SecondsFormat, Utc};
use evtrack::keys::Scope;
use evtrack_tests::*;
use http::{Request, StatusCode};
use serde_json::{Value, json};

fn iso(at: chrono::DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

type EventRow = (String, String, Option<String>, Option<String>, Option<String>, i64, Option<String>);

/// message_id, type, name, user_id, anonymous_id, ms between timestamp and received_at, ip
async fn stored(app: &TestApp) -> Vec<EventRow> {
    app.db
        .query(
            "SELECT message_id, type, name, user_id, anonymous_id,
                    TIMESTAMPDIFF(MICROSECOND, timestamp, received_at) DIV 1000, ip
             FROM events ORDER BY message_id",
        )
        .await
}

/// (id, JSON column) rows, the JSON parsed (MariaDB and MySQL format it differently).
async fn json_rows(app: &TestApp, sql: &str) -> Vec<(String, Value)> {
    let rows: Vec<(String, String)> = app.db.query(sql).await;
    rows.into_iter().map(|(id, text)| (id, serde_json::from_str(&text).expect("JSON column"))).collect()
}

async fn assert_accepted(app: &TestApp, request: Request<Body>, expected_body: Value) {
    let reply = app.send(request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json, expected_body);
    assert_eq!(app.consume_queued().await, Vec::<String>::new(), "no message failed");
}

#[tokio::test]
async fn segment_batch_with_the_key_in_the_body_is_stored_with_corrected_timestamps() {
    let app = TestApp::new().await;
    // The client's clock runs an hour fast; its event happened 10 s before it sent the batch.
    let client_now = Utc::now() + Duration::hours(1);
    let body = json!({
        "writeKey": app.key,
        "sentAt": iso(client_now),
        "context": {"library": {"name": "analytics-python", "version": "2.3.4"}},
        "batch": [
            {"type": "track", "event": "Order Completed", "userId": "u-1", "messageId": "m-1",
             "timestamp": iso(client_now - Duration::seconds(10)), "properties": {"total": 20.5}},
            {"type": "identify", "userId": "u-1", "anonymousId": "anon-1", "messageId": "m-2",
             "timestamp": iso(client_now), "traits": {"plan": "pro"}},
        ]
    });
    assert_accepted(&app, post_json("/v1/batch", None, &body), json!({"success": true})).await;
    let rows = stored(&app).await;
    assert_eq!(
        rows,
        vec![
            (
                "m-1".into(),
                "track".into(),
                Some("Order Completed".into()),
                Some("u-1".into()),
                None,
                10_000,
                Some("203.0.113.0".into())
            ),
            (
                "m-2".into(),
                "identify".into(),
                None,
                Some("u-1".into()),
                Some("anon-1".into()),
                0,
                Some("203.0.113.0".into())
            ),
        ]
    );
    let context: Vec<String> = app.db.query("SELECT context FROM events WHERE message_id = 'm-1'").await;
    assert!(context[0].contains("analytics-python"), "batch context applies: {}", context[0]);
    assert_eq!(
        json_rows(&app, "SELECT user_id, traits FROM users").await,
        vec![("u-1".into(), json!({"plan": "pro"}))]
    );
    let aliases: Vec<(String, String, String)> = app.db.query("SELECT alias, user_id, source FROM aliases").await;
    assert_eq!(aliases, vec![("anon-1".into(), "u-1".into(), "identify".into())]);
}

#[tokio::test]
async fn the_key_in_basic_auth_or_in_both_places_is_accepted() {
    let app = TestApp::new().await;
    let message = |id: &str| json!({"batch": [{"type": "track", "event": "E", "userId": "u", "messageId": id}]});
    assert_accepted(&app, post_json("/v1/batch", Some(&app.key), &message("basic")), json!({"success": true})).await;
    let mut both = message("both");
    both["writeKey"] = json!(app.key);
    assert_accepted(&app, post_json("/v1/batch", Some(&app.key), &both), json!({"success": true})).await;
    assert_eq!(app.db.count("events").await, 2);
}

#[tokio::test]
async fn rudderstack_gzip_with_basic_auth_is_stored() {
    let app = TestApp::new().await;
    let now = Utc::now();
    let body = json!({
        "sentAt": iso(now),
        "batch": [{"type": "page", "name": "Pricing", "anonymousId": "anon-r", "messageId": "r-1",
                   "originalTimestamp": iso(now - Duration::seconds(3)), "channel": "server",
                   "properties": {"path": "/pricing"}}]
    });
    let request =
        post_bytes("/v1/batch", Some(&app.key), "application/json", Some("gzip"), gzip(body.to_string().as_bytes()));
    assert_accepted(&app, request, json!({"success": true})).await;
    let rows = stored(&app).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].1.as_str(), rows[0].2.as_deref(), rows[0].4.as_deref()),
        ("page", Some("Pricing"), Some("anon-r"))
    );
    assert_eq!(rows[0].5, 3_000, "timestamp corrected from originalTimestamp and sentAt");
}

#[tokio::test]
async fn posthog_batch_with_api_key_is_stored_and_builds_profiles() {
    let app = TestApp::new().await;
    let body = json!({
        "api_key": app.key,
        "sent_at": iso(Utc::now()),
        "batch": [
            {"event": "$identify", "distinct_id": "ph-user", "uuid": "0190a0e0-0000-7000-8000-0000000000a1",
             "properties": {"$set": {"email": "a@example.com"}, "$anon_distinct_id": "ph-anon", "$lib": "posthog-python", "$lib_version": "7.0.0"},
             "timestamp": iso(Utc::now())},
            {"event": "file uploaded", "distinct_id": "ph-user", "uuid": "0190a0e0-0000-7000-8000-0000000000a2",
             "properties": {"size": 12, "$groups": {"company": "acme"}}},
            {"event": "$groupidentify", "distinct_id": "ph-user", "uuid": "0190a0e0-0000-7000-8000-0000000000a3",
             "properties": {"$group_type": "company", "$group_key": "acme", "$group_set": {"seats": 5}}},
        ]
    });
    assert_accepted(&app, post_json("/batch/", None, &body), json!({"status": 1})).await;
    let rows = stored(&app).await;
    let kinds: Vec<(&str, Option<&str>)> = rows.iter().map(|r| (r.1.as_str(), r.2.as_deref())).collect();
    assert_eq!(kinds, vec![("identify", None), ("track", Some("file uploaded")), ("group", None)]);
    assert_eq!(
        json_rows(&app, "SELECT user_id, traits FROM users").await,
        vec![("ph-user".into(), json!({"email": "a@example.com"}))]
    );
    assert_eq!(
        json_rows(&app, "SELECT CONCAT(group_type, '/', group_id), traits FROM group_profiles").await,
        vec![("company/acme".into(), json!({"seats": 5, "$group_type": "company"}))]
    );
    // The member by the event's `$groups` (capture(groups=…)), not by the `$groupidentify`.
    let members: Vec<(String, String, String)> =
        app.db.query("SELECT group_type, group_id, member_id FROM group_members").await;
    assert_eq!(members, vec![("company".to_string(), "acme".to_string(), "ph-user".to_string())]);
    let context: Vec<String> = app.db.query("SELECT context FROM events WHERE type = 'identify'").await;
    assert!(context[0].contains("posthog-python"), "{}", context[0]);
}

#[tokio::test]
async fn posthog_capture_endpoints_take_single_events_and_arrays() {
    let app = TestApp::new().await;
    let single = json!({"api_key": app.key, "event": "signed up", "distinct_id": "d1"});
    assert_accepted(&app, post_json("/capture/", None, &single), json!({"status": 1})).await;
    let array = json!([{"event": "$pageview", "distinct_id": "d2", "properties": {"token": app.key, "title": "Home"}}]);
    let request = post_bytes("/e/", None, "text/plain", None, gzip(array.to_string().as_bytes()));
    assert_accepted(&app, request, json!({"status": 1})).await;
    assert_eq!(app.db.count("events WHERE type = 'page' AND name = 'Home'").await, 1);
    assert_eq!(app.db.count("events").await, 2);
}

#[tokio::test]
async fn browser_text_plain_single_call_is_stored() {
    let app = TestApp::new().await;
    let body = json!({
        "type": "track", "event": "Button Clicked", "anonymousId": "browser-anon",
        "messageId": "ajs-next-1714564800000-4d6ac1e1-4d7b-4d9b-8a5e-8f5e5bde0d55",
        "writeKey": app.key, "sentAt": iso(Utc::now()), "timestamp": iso(Utc::now()),
        "context": {"page": {"url": "https://shop.example/"}, "userAgent": "Mozilla/5.0"}
    });
    let request = post_bytes("/v1/t", None, "text/plain", None, body.to_string().into_bytes());
    assert_accepted(&app, request, json!({"success": true})).await;
    let rows = stored(&app).await;
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].1.as_str(), rows[0].2.as_deref()), ("track", Some("Button Clicked")));
}

#[tokio::test]
async fn beacon_with_the_key_in_the_query_is_stored() {
    let app = TestApp::new().await;
    let body = json!({"batch": [{"type": "screen", "name": "Home", "userId": "u-b", "messageId": "b-1"}]});
    let path = format!("/beacon/v1/batch?writeKey={}", app.key);
    let request = post_bytes(&path, None, "text/plain", None, body.to_string().into_bytes());
    assert_accepted(&app, request, json!({"success": true})).await;
    assert_eq!(app.db.count("events WHERE type = 'screen' AND message_id = 'b-1'").await, 1);
}

#[tokio::test]
async fn a_missing_unknown_or_malformed_key_gets_one_401_body_and_queues_nothing() {
    let app = TestApp::new().await;
    let batch = json!({"batch": [{"type": "track", "event": "E", "userId": "u"}]});
    let unknown = evtrack::keys::ApiKey::generate(Scope::Write);
    let mut bodies = Vec::new();
    for key in [None, Some("not-a-key"), Some(unknown.reveal())] {
        let reply = app.send(post_json("/v1/batch", key, &batch)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        bodies.push(without_request_id(reply.json));
    }
    assert!(bodies.iter().all(|body| body == &bodies[0]), "one body for all: {bodies:?}");
    assert_eq!(bodies[0]["code"], "unauthorized");
    assert!(bodies[0]["message"].is_string());
    assert_eq!(bodies[0]["success"], false);
    assert!(app.take_queued().await.is_empty());
}

#[tokio::test]
async fn two_different_keys_or_a_read_key_are_refused() {
    let app = TestApp::new().await;
    let (_, read_key) = project_with_key(&app.db, &app.config, Scope::Read).await;
    let batch = json!({"writeKey": app.key, "batch": [{"type": "track", "event": "E", "userId": "u"}]});
    let reply = app.send(post_json("/v1/batch", Some(&read_key), &batch)).await;
    assert_eq!((reply.status, reply.json["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("conflicting_keys")));
    let batch = json!({"batch": [{"type": "track", "event": "E", "userId": "u"}]});
    let reply = app.send(post_json("/v1/batch", Some(&read_key), &batch)).await;
    assert_eq!((reply.status, reply.json["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    assert!(app.take_queued().await.is_empty());
}

#[tokio::test]
async fn limits_are_enforced_and_named() {
    let app = TestApp::new().await;
    let event = json!({"type": "track", "event": "E", "userId": "u"});
    let too_many = json!({"batch": vec![event.clone(); 2501]});
    let reply = app.send(post_json("/v1/batch", Some(&app.key), &too_many)).await;
    assert_eq!((reply.status, reply.json["code"].as_str()), (StatusCode::BAD_REQUEST, Some("too_many_events")));
    assert!(reply.json["message"].as_str().unwrap_or_default().contains("2500"), "{}", reply.json);

    let big_event =
        json!({"batch": [{"type": "track", "event": "E", "userId": "u", "properties": {"blob": "x".repeat(33_000)}}]});
    // One event over its limit is quarantined (cut to the limit), not the request refused.
    let reply = app.send(post_json("/v1/batch", Some(&app.key), &big_event)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let quarantined = &reply.json["rejected"]["events"][0];
    assert_eq!(quarantined["code"], "event_too_large", "{}", reply.json);
    assert!(quarantined["message"].as_str().unwrap_or_default().contains("32768"), "{}", reply.json);
    assert_eq!(app.take_queued().await.len(), 1, "the quarantined event is queued to be kept");

    let events: Vec<Value> = (0..40)
        .map(|i| json!({"type": "track", "event": "E", "userId": "u", "messageId": i.to_string(), "properties": {"blob": "y".repeat(15_000)}}))
        .collect();
    let reply = app.send(post_json("/v1/batch", Some(&app.key), &json!({"batch": events}))).await;
    assert_eq!((reply.status, reply.json["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("request_too_large")));
    assert!(reply.json["message"].as_str().unwrap_or_default().contains("512000"), "{}", reply.json);
    assert!(app.take_queued().await.is_empty());
}

#[tokio::test]
async fn a_gzip_bomb_is_refused_at_the_inflated_limit() {
    let app = TestApp::new().await;
    // 100 MB of JSON whitespace compresses to about 100 KB.
    let bomb = gzip(&vec![b' '; 100 * 1024 * 1024]);
    assert!(bomb.len() < 512_000);
    let reply = app.send(post_bytes("/v1/batch", Some(&app.key), "application/json", Some("gzip"), bomb)).await;
    assert_eq!((reply.status, reply.json["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("request_too_large")));
    assert!(reply.json["message"].as_str().unwrap_or_default().contains("after decompression"));
    assert!(app.take_queued().await.is_empty());
}

/// An unknown key in the header is refused before the body is inflated or parsed: a gzip
/// bomb (or garbage) sent with a bad key costs nothing but the key check.
#[tokio::test]
async fn a_bad_header_key_is_refused_before_the_body_is_read() {
    let app = TestApp::new().await;
    let unknown = evtrack::keys::ApiKey::generate(evtrack::keys::Scope::Write).reveal().to_string();
    let bomb = gzip(&vec![b' '; 100 * 1024 * 1024]);
    for body in [bomb, b"not gzip at all".to_vec()] {
        let request = post_bytes("/v1/batch", Some(&unknown), "application/json", Some("gzip"), body);
        let reply = app.send(request).await;
        assert_eq!((reply.status, reply.json["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    }
    // A good header key with a different key in the body is still a conflict.
    let body = json!({"writeKey": unknown, "batch": [{"type": "track", "event": "E", "userId": "u"}]});
    let reply = app.send(post_json("/v1/batch", Some(&app.key), &body)).await;
    assert_eq!((reply.status, reply.json["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("conflicting_keys")));
    assert!(app.take_queued().await.is_empty());
}

#[tokio::test]
async fn hostile_input_is_refused_or_quarantined_naming_the_problem_and_stores_no_event() {
    let app = TestApp::new().await;
    let track = |extra: Value| {
        let mut event = json!({"type": "track", "event": "E", "userId": "u"});
        if let (Value::Object(event), Value::Object(extra)) = (&mut event, extra) {
            event.extend(extra);
        }
        json!({"batch": [event]}).to_string().into_bytes()
    };
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let mut deep_object = json!(1);
    for _ in 0..40 {
        deep_object = json!({"a": deep_object});
    }
    let many_properties: serde_json::Map<String, Value> = (0..10_000).map(|i| (format!("p{i}"), json!(i))).collect();
    // A request that cannot be read is refused whole (its code); an event that cannot be
    // accepted is quarantined ("quarantined": 200, kept with its reason).
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("invalid UTF-8", b"{\"batch\":[{\"type\":\"track\",\"event\":\"\xff\xfe\"}]}".to_vec(), "invalid_json"),
        ("truncated JSON", b"{\"batch\":[{\"type\":".to_vec(), "invalid_json"),
        ("empty body", Vec::new(), "invalid_json"),
        ("deep nesting", format!("{{\"batch\":[{{\"type\":\"track\",\"event\":\"E\",\"userId\":\"u\",\"properties\":{{\"a\":{deep}}}}}]}}").into_bytes(), "quarantined"),
        ("nesting the database refuses", track(json!({"properties": deep_object})), "quarantined"),
        ("huge number", b"{\"batch\":[{\"type\":\"track\",\"event\":\"E\",\"userId\":\"u\",\"properties\":{\"n\":1e400}}]}".to_vec(), "quarantined"),
        ("NUL in an id", track(json!({"userId": "a\u{0}b"})), "quarantined"),
        ("newline in an id (log injection)", track(json!({"userId": "u\n2024-01-01 INFO forged"})), "quarantined"),
        ("absurd timestamp", track(json!({"timestamp": "99999-01-01T00:00:00Z"})), "quarantined"),
        ("year 1", track(json!({"timestamp": "0001-01-01T00:00:00Z"})), "quarantined"),
        ("unknown type", b"{\"batch\":[{\"type\":\"drop table\",\"userId\":\"u\"}]}".to_vec(), "quarantined"),
        ("no user", b"{\"batch\":[{\"type\":\"track\",\"event\":\"E\"}]}".to_vec(), "quarantined"),
        ("properties not an object", track(json!({"properties": [1, 2]})), "quarantined"),
        ("batch not an array", b"{\"batch\":{}}".to_vec(), "invalid_json"),
        ("10k properties", track(json!({"properties": many_properties})), "quarantined"),
        ("long user id", track(json!({"userId": "u".repeat(300)})), "quarantined"),
    ];
    let mut quarantined = 0;
    for (name, body, code) in cases {
        let reply = app.send(post_bytes("/v1/batch", Some(&app.key), "application/json", None, body)).await;
        if code == "quarantined" {
            quarantined += 1;
            assert_eq!(reply.status, StatusCode::OK, "{name}: {}", reply.json);
            assert_eq!(reply.json["rejected"]["count"], 1, "{name}: {}", reply.json);
            let event = &reply.json["rejected"]["events"][0];
            assert!(!event["message"].as_str().unwrap_or_default().is_empty(), "{name}: {}", reply.json);
            assert!(!event["code"].as_str().unwrap_or_default().is_empty(), "{name}: {}", reply.json);
        } else {
            assert!(reply.status.is_client_error(), "{name}: {} {}", reply.status, reply.json);
            assert_eq!(reply.json["code"], code, "{name}: {}", reply.json);
            assert!(!reply.json["message"].as_str().unwrap_or_default().is_empty(), "{name}");
        }
    }
    assert!(app.consume_queued().await.is_empty());
    assert_eq!(app.db.count("events").await, 0, "no event was stored");
    assert_eq!(app.db.count("rejected_events WHERE source = 'segment'").await, quarantined, "every one kept");
}

#[tokio::test]
async fn one_bad_event_does_not_lose_its_batch_it_is_quarantined_listed_and_named_in_the_answer() {
    let app = TestApp::new().await;
    // 99 valid events and one whose name holds a newline, as the issue found it.
    let mut batch: Vec<Value> = (0..100)
        .map(|i| json!({"type": "track", "event": "Viewed", "userId": format!("u{i}"), "messageId": format!("m-{i}")}))
        .collect();
    batch[57]["event"] = json!("Viewed\nforged log line");
    let reply = app.send(post_json("/v1/batch", Some(&app.key), &json!({"batch": batch}))).await;
    assert_eq!(reply.status, StatusCode::OK, "what every SDK expects: {}", reply.json);
    assert_eq!(reply.json["success"], true);
    assert_eq!(reply.json["rejected"]["count"], 1);
    assert_eq!(reply.json["rejected"]["events"][0]["index"], 57);
    assert_eq!(reply.json["rejected"]["events"][0]["code"], "invalid_value");
    assert!(app.consume_queued().await.is_empty());
    assert_eq!(app.db.count("events").await, 99, "the good events are stored");
    let kept: Vec<(String, String, Option<String>, i32)> =
        app.db.query("SELECT reason_code, CONVERT(raw USING utf8mb4), source, item_index FROM rejected_events").await;
    assert_eq!(kept.len(), 1);
    let (code, raw, source, index) = &kept[0];
    assert_eq!((code.as_str(), source.as_deref(), *index), ("invalid_value", Some("segment"), 57));
    let sent: Value = serde_json::from_str(raw).expect("kept as sent, JSON");
    assert_eq!(sent, batch[57]);
    assert_eq!(app.db.count("rejected_events WHERE received_at IS NOT NULL").await, 1);

    // A single-event route answers 400 for its one event, and keeps it too.
    let bad = json!({"userId": "u", "event": "line\nbreak", "messageId": "single"});
    let reply = app.send(post_json("/v1/track", Some(&app.key), &bad)).await;
    assert_eq!((reply.status, reply.json["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_event")));
    // PostHog's batch: 200 with {"status": 1}, the bad event named.
    let posthog = json!({"api_key": app.key, "batch": [
        {"event": "ok", "distinct_id": "d1"},
        {"event": "no one to attribute it to"},
    ]});
    let reply = app.send(post_json("/batch/", None, &posthog)).await;
    assert_eq!((reply.status, reply.json["status"].as_i64()), (StatusCode::OK, Some(1)), "{}", reply.json);
    assert_eq!(reply.json["rejected"]["events"][0]["index"], 1, "{}", reply.json);
    assert!(app.consume_queued().await.is_empty());
    let sources: Vec<String> = app.db.query("SELECT source FROM rejected_events ORDER BY id").await;
    assert_eq!(sources, ["segment", "segment:track", "posthog"]);

    // Listed for the project: by a read key of the project, or an admin key with ?project=.
    let project = app.project;
    let read = app
        .send(api_request("POST", "/v1/keys", &app.admin, Some(&json!({"scope": "read", "project": project}))))
        .await
        .json["key"]
        .as_str()
        .expect("read key")
        .to_string();
    let listed = app.send(api_request("GET", "/v1/rejected-events", &read, None)).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.json);
    let codes: Vec<&str> =
        listed.json["data"].as_array().expect("data").iter().map(|e| e["code"].as_str().expect("code")).collect();
    assert_eq!(codes.len(), 3, "{}", listed.json);
    let by_reason = format!("/v1/rejected-events?project={project}&reason=invalid_value&limit=1");
    let page = app.send(api_request("GET", &by_reason, &app.admin, None)).await;
    assert_eq!(page.json["data"].as_array().map(Vec::len), Some(1), "{}", page.json);
    assert!(page.json["next_cursor"].is_string(), "{}", page.json);
    let none = format!("/v1/rejected-events?project={project}&from=2099-01-01T00:00:00Z");
    assert_eq!(app.send(api_request("GET", &none, &app.admin, None)).await.json["data"], json!([]));
    // Another project's read key sees its own (none).
    let other = app.send(api_request("POST", "/v1/projects", &app.admin, Some(&json!({"name": "other"})))).await;
    let other_read = app
        .send(api_request("POST", "/v1/keys", &app.admin, Some(&json!({"scope": "read", "project": other.json["id"]}))))
        .await
        .json["key"]
        .as_str()
        .expect("key")
        .to_string();
    let theirs = app.send(api_request("GET", "/v1/rejected-events", &other_read, None)).await;
    assert_eq!(theirs.json["data"], json!([]), "{}", theirs.json);
}

/// The quarantine's list goes on after a row that is gone (a replay or a purge removed it),
/// and leaves out at once what an erasure in progress names, as every read does.
#[tokio::test]
async fn the_quarantine_list_goes_on_after_a_removed_row_and_hides_what_an_erasure_in_progress_names() {
    let app = TestApp::new().await;
    let project = app.project;
    let (_, read) = evtrack_tests::issue_key(&app.db.store, &app.config, Some(project), Scope::Read, "r").await;
    let read = read.reveal().to_string();
    // Tracks without an event name are quarantined: two of q-a, then two of q-b.
    let batch: Vec<Value> = ["q-a", "q-a", "q-b", "q-b"]
        .iter()
        .enumerate()
        .map(|(n, user)| json!({"type": "track", "userId": user, "messageId": format!("q-{n}")}))
        .collect();
    let reply = app.send(post_json("/v1/batch", Some(&app.key), &json!({ "batch": batch }))).await;
    assert_eq!(reply.json["rejected"]["count"], 4, "{}", reply.json);
    assert!(app.consume_queued().await.is_empty());
    let list = |cursor: Option<String>| {
        let uri = cursor
            .map_or("/v1/rejected-events?limit=1".to_string(), |c| format!("/v1/rejected-events?limit=1&cursor={c}"));
        let (app, read) = (&app, &read);
        async move {
            let reply = app.send(api_request("GET", &uri, read, None)).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
            let ids: Vec<String> = reply.json["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|e| e["raw"].as_str().unwrap_or_default().to_string())
                .collect();
            (ids, reply.json["next_cursor"].as_str().map(str::to_string))
        }
    };
    let (first, mut cursor) = list(None).await;
    assert!(first[0].contains("q-3"), "{first:?}");
    app.db.execute("DELETE FROM rejected_events WHERE LOCATE('q-3', raw) > 0").await;
    let mut seen = Vec::new();
    while let Some(next) = cursor {
        let (page, after) = list(Some(next)).await;
        seen.extend(page);
        cursor = after;
    }
    let order: Vec<bool> = ["q-2", "q-1", "q-0"].iter().zip(&seen).map(|(id, raw)| raw.contains(id)).collect();
    assert_eq!((seen.len(), order), (3, vec![true; 3]), "{seen:?}");

    let erase = format!("/v1/users/q-a?project={project}");
    assert_eq!(app.send(api_request("DELETE", &erase, &app.admin, None)).await.status, StatusCode::ACCEPTED);
    let listed = app.send(api_request("GET", "/v1/rejected-events", &read, None)).await;
    let raws: Vec<&str> =
        listed.json["data"].as_array().expect("data").iter().filter_map(|e| e["raw"].as_str()).collect();
    assert_eq!(raws.len(), 1, "only q-b's left: {raws:?}");
    assert!(raws[0].contains("q-b"), "{raws:?}");
}

#[tokio::test]
async fn sql_and_markup_in_values_are_stored_as_data() {
    let app = TestApp::new().await;
    let nasty = "'); DROP TABLE events; -- <script>alert(1)</script>";
    let body = json!({"batch": [{"type": "track", "event": nasty, "userId": nasty, "messageId": nasty, "properties": {nasty: nasty}}]});
    assert_accepted(&app, post_json("/v1/batch", Some(&app.key), &body), json!({"success": true})).await;
    let rows = stored(&app).await;
    assert_eq!((rows[0].0.as_str(), rows[0].2.as_deref(), rows[0].3.as_deref()), (nasty, Some(nasty), Some(nasty)));
}

#[tokio::test]
async fn cors_allows_any_origin_on_ingest_without_credentials() {
    let app = TestApp::new().await;
    let preflight = Request::options("/v1/batch")
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,content-type,x-retry-count,anonymousid")
        .body(Body::empty())
        .expect("request");
    let reply = app.send(preflight).await;
    assert!(reply.status.is_success(), "{}", reply.status);
    assert_eq!(reply.headers["access-control-allow-origin"], "*");
    let allowed = reply.headers["access-control-allow-headers"].to_str().unwrap_or_default().to_lowercase();
    for header in ["authorization", "content-type", "x-retry-count", "anonymousid"] {
        assert!(allowed.contains(header), "{allowed}");
    }
    assert!(!reply.headers.contains_key("access-control-allow-credentials"));
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors_and_security_headers() {
    let app = TestApp::new().await;
    let reply = app.send(Request::get("/v1/nope").body(Body::empty()).expect("request")).await;
    assert_eq!((reply.status, reply.json["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let reply = app.send(Request::get("/v1/batch").body(Body::empty()).expect("request")).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.headers["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn a_full_rate_window_answers_429_with_retry_after() {
    let app = TestApp::with(TestDb::new().await, &[("EVTRACK_RATE_LIMIT_EVENTS_PER_SECOND", "10")]).await;
    let batch = |n: usize| json!({"batch": (0..n).map(|_| json!({"type": "track", "event": "E", "userId": "u"})).collect::<Vec<_>>()});
    // A window boundary between the two requests resets the count; try a few pairs.
    let mut refused = None;
    for _ in 0..5 {
        let first = app.send(post_json("/v1/batch", Some(&app.key), &batch(10))).await;
        assert_eq!(first.status, StatusCode::OK);
        let second = app.send(post_json("/v1/batch", Some(&app.key), &batch(1))).await;
        if second.status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(second);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
    let refused = refused.expect("the second request in a full window is refused");
    assert_eq!(refused.json["code"], "rate_limited");
    assert_eq!(refused.headers["retry-after"], "1");
}

#[tokio::test]
async fn redis_down_still_serves_and_limits_per_instance() {
    let db = TestDb::new().await;
    let app = TestApp::with(
        db,
        &[("EVTRACK_REDIS_URL", "redis://127.0.0.1:1"), ("EVTRACK_RATE_LIMIT_EVENTS_PER_SECOND", "1000000")],
    )
    .await;
    let batch = json!({"batch": [{"type": "track", "event": "E", "userId": "u", "messageId": "r-1"}]});
    for _ in 0..3 {
        let reply = app.send(post_json("/v1/batch", Some(&app.key), &batch)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    }
    assert!(app.consume_queued().await.is_empty());
    assert_eq!(app.db.count("events").await, 1, "three deliveries of one messageId, one row");
}

/// Where the hostile requests go: ingest with `evtrack up`'s in-process queue, or ingest
/// over an SQS queue (moto) that the consumer receives from and deletes from as on AWS.
enum Pipeline {
    Local(Box<TestApp>),
    Sqs { db: Box<TestDb>, router: axum::Router, key: String, client: aws_sdk_sqs::Client, queue_url: String },
}

impl Pipeline {
    fn key(&self) -> &str {
        match self {
            Pipeline::Local(app) => &app.key,
            Pipeline::Sqs { key, .. } => key,
        }
    }

    fn db(&self) -> &TestDb {
        match self {
            Pipeline::Local(app) => &app.db,
            Pipeline::Sqs { db, .. } => db,
        }
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        match self {
            Pipeline::Local(app) => app.send(request).await,
            Pipeline::Sqs { router, .. } => send(router, request).await,
        }
    }

    /// Consumes everything queued; returns the ids of messages the consumer failed.
    async fn consume_queued(&self) -> Vec<String> {
        let (db, client, queue_url) = match self {
            Pipeline::Local(app) => return app.consume_queued().await,
            Pipeline::Sqs { db, client, queue_url, .. } => (db, client, queue_url),
        };
        let messages = receive_all(client, queue_url).await;
        let consumer = evtrack_consumer::Consumer::new(db.store.clone(), &config(db, &[]));
        let failed: Vec<String> = consumer
            .handle(sqs_event_of(&messages))
            .await
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect();
        for message in messages.iter().filter(|m| !failed.contains(m.message_id.as_ref().expect("id"))) {
            let handle = message.receipt_handle.as_deref().expect("receipt handle");
            client.delete_message().queue_url(queue_url).receipt_handle(handle).send().await.expect("delete");
        }
        failed
    }
}

/// Hostile events, wrapped as each ingest route takes them: every route refuses or
/// quarantines each one — never a 5xx, never a stored event, every quarantined one kept.
#[tokio::test]
async fn hostile_events_on_every_ingest_route_are_refused_or_quarantined_and_none_is_stored() {
    hostile_events_on_every_route(Pipeline::Local(Box::new(TestApp::new().await))).await;
}

/// The same through the SQS path: quarantined events travel in SQS messages too.
#[tokio::test]
async fn hostile_events_on_every_ingest_route_through_sqs_are_refused_or_quarantined_and_none_is_stored() {
    let db = TestDb::new().await;
    let (router, key, client, queue_url) = ingest_over_sqs(&db).await;
    hostile_events_on_every_route(Pipeline::Sqs { db: Box::new(db), router, key, client, queue_url }).await;
}

async fn hostile_events_on_every_route(app: Pipeline) {
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let many: serde_json::Map<String, Value> = (0..10_000).map(|i| (format!("p{i}"), json!(i))).collect();
    let segment_events: Vec<Value> = vec![
        json!({"type": "track", "event": "E", "userId": "a\u{0}b"}),
        json!({"type": "track", "event": "E", "userId": "u\n2024-01-01 INFO forged"}),
        json!({"type": "track", "event": "E", "userId": "u", "timestamp": "99999-01-01T00:00:00Z"}),
        json!({"type": "track", "event": "E", "userId": "u", "timestamp": "0001-01-01T00:00:00Z"}),
        json!({"type": "track", "event": "E"}),
        json!({"type": "track", "event": "E", "userId": "u", "properties": [1, 2]}),
        json!({"type": "track", "event": "E", "userId": "u", "properties": many}),
        json!({"type": "track", "event": "E", "userId": "u".repeat(300)}),
        json!({"type": "track", "event": "E", "userId": "u", "messageId": "m".repeat(200)}),
        json!({"type": "track", "event": "E", "userId": "u", "context": "not an object"}),
        json!({"type": "track", "event": {"nested": "name"}, "userId": "u"}),
        json!({"type": "track", "event": "E", "userId": "u", "anonymousId": "\u{7}bell"}),
    ];
    let posthog_events: Vec<Value> = vec![
        json!({"event": "no one"}),
        json!({"event": "E", "distinct_id": "a\u{0}b"}),
        json!({"event": "E", "distinct_id": "d\nforged"}),
        json!({"event": "E", "distinct_id": "d", "timestamp": "99999-01-01T00:00:00Z"}),
        json!({"event": "E", "distinct_id": "d", "properties": [1]}),
        json!({"event": "E", "distinct_id": "d", "properties": many}),
        json!({"event": "E", "distinct_id": "d".repeat(300)}),
        json!({"event": ["not", "a", "name"], "distinct_id": "d"}),
        json!("a string, not an event"),
        json!(42),
    ];
    let mut routes: Vec<(String, &str)> =
        ["/v1/batch", "/v1/import", "/v1/b", "/beacon/v1/batch"].iter().map(|r| (r.to_string(), "batch")).collect();
    for (kind, short) in
        [("track", "t"), ("identify", "i"), ("page", "p"), ("screen", "s"), ("group", "g"), ("alias", "a")]
    {
        routes.push((format!("/v1/{kind}"), "single"));
        routes.push((format!("/v1/{short}"), "single"));
    }
    for path in ["/batch", "/capture", "/e", "/i/v0/e"] {
        routes.push((path.to_string(), "posthog"));
        routes.push((format!("{path}/"), "posthog"));
    }
    let (mut cases, mut kept) = (0, 0);
    for (route, family) in &routes {
        let bodies: Vec<Vec<u8>> = match *family {
            "posthog" => posthog_events
                .iter()
                .map(|event| json!({"api_key": app.key(), "batch": [event]}).to_string().into_bytes())
                .collect(),
            _ => {
                let track = *family == "batch" || route == "/v1/track" || route == "/v1/t";
                let mut bodies: Vec<Vec<u8>> = segment_events
                    .iter()
                    // An event's name matters to tracks only.
                    .filter(|event| track || event["event"].is_string())
                    .map(|event| {
                        let mut event = event.clone();
                        if *family == "single" {
                            // The route names the type; a short route's type is implied.
                            event.as_object_mut().expect("object").remove("type");
                            event.to_string().into_bytes()
                        } else {
                            json!({"batch": [event]}).to_string().into_bytes()
                        }
                    })
                    .collect();
                let deep_body =
                    format!("{{\"type\":\"track\",\"event\":\"E\",\"userId\":\"u\",\"properties\":{{\"a\":{deep}}}}}");
                bodies.push(if *family == "single" {
                    deep_body.into_bytes()
                } else {
                    format!("{{\"batch\":[{deep_body}]}}").into_bytes()
                });
                bodies
            }
        };
        // Whole-request garbage on every route too.
        let garbage: [&[u8]; 3] = [b"\xff\xfe{", b"{\"batch\":[{\"type\":", b""];
        for body in bodies.into_iter().chain(garbage.iter().map(|bytes| bytes.to_vec())) {
            cases += 1;
            let reply = app.send(post_bytes(route, Some(app.key()), "application/json", None, body.clone())).await;
            let shown = String::from_utf8_lossy(&body).chars().take(120).collect::<String>();
            assert!(!reply.status.is_server_error(), "{route} {shown}: {} {}", reply.status, reply.json);
            assert!(reply.json.is_object(), "{route} {shown}: a JSON answer, got {}", reply.json);
            if reply.status == StatusCode::OK {
                assert_eq!(reply.json["rejected"]["count"], 1, "{route} {shown}: {}", reply.json);
                kept += 1;
            } else if reply.json["code"] == "invalid_event" || reply.json["code"] == "event_too_large" {
                // A single-event route's one event: refused in the answer, kept all the same.
                assert!(reply.json["message"].as_str().unwrap_or_default().contains("kept"), "{}", reply.json);
                kept += 1;
            }
        }
        // Stored as it goes, so that the queue never fills.
        assert!(app.consume_queued().await.is_empty());
    }
    assert!(cases >= 200, "{cases} cases");
    assert!(app.consume_queued().await.is_empty());
    assert_eq!(app.db().count("events").await, 0, "no hostile event stored");
    assert_eq!(app.db().count("rejected_events").await, kept, "every quarantined event kept");
    println!("{cases} hostile requests on {} routes: {kept} events quarantined, the rest refused whole", routes.len());
}

/// The dedupe key is (project, hour of the event's own time, messageId) (migration 0008): a
/// retry carries the event's own timestamp, so it is a no-op however late it comes and
/// whatever sentAt it is sent with; the same messageId on an event of another hour is
/// another event.
#[tokio::test]
async fn a_retry_is_stored_once_however_late_and_the_hour_of_the_event_is_part_of_its_key() {
    let app = TestApp::new().await;
    let happened = Utc::now() - Duration::days(2);
    let send = |timestamp: chrono::DateTime<Utc>, sent_at: chrono::DateTime<Utc>| {
        let event = json!({"type": "track", "event": "E", "userId": "u", "messageId": "retried",
                           "timestamp": iso(timestamp)});
        post_json("/v1/batch", Some(&app.key), &json!({"batch": [event], "sentAt": iso(sent_at)}))
    };
    // Sent at once, then retried by a client that stamped each attempt with a new sentAt
    // (hours later): each corrected time falls in another hour, the event's own does not.
    for sent_after in [Duration::seconds(1), Duration::hours(3), Duration::hours(30)] {
        let reply = app.send(send(happened, happened + sent_after)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
        assert!(app.consume_queued().await.is_empty());
    }
    assert_eq!(app.db.count("events").await, 1, "three attempts of one event, one row");
    let reply = app.send(send(happened + Duration::hours(5), happened + Duration::hours(5))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert!(app.consume_queued().await.is_empty());
    assert_eq!(app.db.count("events").await, 2, "the same messageId five hours later is another event");
}
