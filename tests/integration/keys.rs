//! API keys end to end: scopes, expiry, rotation grace, revocation, the admin API, signed
//! cursors and the keyring's rotation — against real MariaDB and Redis.

use evtrack::jobs::{Outcome, Trigger};
use evtrack_tests::{TestApp, TestDb, api_request, config, post_json, send_from, without_request_id};
use http::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

fn track(key: &str) -> http::Request<axum::body::Body> {
    post_json("/v1/track", Some(key), &json!({"userId": "u1", "event": "Key Test"}))
}

async fn create_key(app: &TestApp, body: Value) -> Value {
    let reply = app.send(api_request("POST", "/v1/keys", &app.admin, Some(&body))).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);
    reply.json
}

async fn write_key(app: &TestApp) -> (String, String) {
    let created = create_key(app, json!({"scope": "write", "project": app.project, "name": "k"})).await;
    (created["id"].as_str().expect("id").to_string(), created["key"].as_str().expect("key").to_string())
}

async fn rotate_keys(app: &TestApp, slot: &str) -> Outcome {
    let trigger = Trigger::new(slot.parse().expect("slot"), "test");
    app.jobs.run("rotate-keys", trigger).await.expect("a job").expect("rotate-keys runs")
}

#[tokio::test]
async fn missing_malformed_unknown_expired_revoked_and_post_grace_keys_get_one_401_body() {
    let app = TestApp::with(TestDb::new().await, &[("EVTRACK_KEY_CACHE_SECONDS", "0")]).await;
    let (expired_id, expired) = write_key(&app).await;
    app.db.execute(&format!("UPDATE api_keys SET expires_at = NOW(3) - INTERVAL 1 SECOND WHERE uid = UNHEX(REPLACE('{expired_id}', '-', ''))")).await;
    let (revoked_id, revoked) = write_key(&app).await;
    let reply = app.send(api_request("POST", &format!("/v1/keys/{revoked_id}/revoke"), &app.admin, None)).await;
    assert_eq!((reply.status, reply.json["status"].as_str()), (StatusCode::OK, Some("revoked")));
    let (rotated_id, rotated) = write_key(&app).await;
    let reply = app
        .send(api_request(
            "POST",
            &format!("/v1/keys/{rotated_id}/rotate"),
            &app.admin,
            Some(&json!({"grace_hours": 0})),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let successor = reply.json["key"].as_str().expect("new key").to_string();
    let unknown = evtrack::keys::ApiKey::generate(evtrack::keys::Scope::Write).reveal().to_string();

    let mut bodies = Vec::new();
    for key in [None, Some("not-a-key"), Some(unknown.as_str()), Some(&expired), Some(&revoked), Some(&rotated)] {
        let request = match key {
            Some(key) => track(key),
            None => post_json("/v1/track", None, &json!({"userId": "u1", "event": "E"})),
        };
        let reply = app.send(request).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{key:?}: {}", reply.json);
        bodies.push(without_request_id(reply.json));
    }
    assert!(bodies.windows(2).all(|pair| pair[0] == pair[1]), "one body for all: {bodies:?}");
    assert_eq!(app.send(track(&successor)).await.status, StatusCode::OK, "the successor works at once");
    assert!(app.take_queued().await.len() == 1, "only the successor's event was queued");

    // The same on the api, for admin keys.
    let expired_admin =
        create_key(&app, json!({"scope": "admin", "name": "short"})).await["id"].as_str().expect("id").to_string();
    app.db
        .execute(&format!(
            "UPDATE api_keys SET expires_at = NOW(3) WHERE uid = UNHEX(REPLACE('{expired_admin}', '-', ''))"
        ))
        .await;
    let api_bodies: Vec<Value> = futures_of(&app, &["", "evta_x", &unknown.replace("evtw_", "evta_")])
        .await
        .into_iter()
        .map(without_request_id)
        .collect();
    assert!(api_bodies.iter().all(|body| body == &api_bodies[0] && body["code"] == "unauthorized"), "{api_bodies:?}");
}

async fn futures_of(app: &TestApp, keys: &[&str]) -> Vec<Value> {
    let mut bodies = Vec::new();
    for key in keys {
        let reply = app.send(api_request("GET", "/v1/projects", key, None)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        bodies.push(reply.json);
    }
    bodies
}

#[tokio::test]
async fn a_rotated_key_works_during_its_grace_period_and_not_after() {
    let app = TestApp::with(TestDb::new().await, &[("EVTRACK_KEY_CACHE_SECONDS", "0")]).await;
    let (old_id, old) = write_key(&app).await;
    let reply = app.send(api_request("POST", &format!("/v1/keys/{old_id}/rotate"), &app.admin, None)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);
    let new = reply.json["key"].as_str().expect("key").to_string();
    assert_ne!(new, old);
    let info = app.send(api_request("GET", &format!("/v1/keys/{old_id}"), &app.admin, None)).await.json;
    assert_eq!(info["status"], "rotating");
    assert_eq!(info["replaced_by"], reply.json["id"]);
    let grace_ends: chrono::DateTime<chrono::Utc> =
        info["grace_ends_at"].as_str().expect("grace").parse().expect("time");
    let hours = (grace_ends - chrono::Utc::now()).num_minutes() as f64 / 60.0;
    assert!((23.9..=24.0).contains(&hours), "default grace is 24 h, got {hours}");

    assert_eq!(app.send(track(&old)).await.status, StatusCode::OK, "old key inside the grace period");
    assert_eq!(app.send(track(&new)).await.status, StatusCode::OK, "new key");
    // A rotated key cannot be rotated again: its successor can.
    let again = app.send(api_request("POST", &format!("/v1/keys/{old_id}/rotate"), &app.admin, None)).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    // Grace over (moved into the past rather than waiting 24 h).
    app.db
        .execute(&format!("UPDATE api_keys SET grace_ends_at = NOW(3) WHERE uid = UNHEX(REPLACE('{old_id}', '-', ''))"))
        .await;
    assert_eq!(app.send(track(&old)).await.status, StatusCode::UNAUTHORIZED, "old key after the grace period");
    assert_eq!(app.send(track(&new)).await.status, StatusCode::OK);
    // Grace periods beyond the cap are refused.
    let (other_id, _) = write_key(&app).await;
    let capped = app
        .send(api_request(
            "POST",
            &format!("/v1/keys/{other_id}/rotate"),
            &app.admin,
            Some(&json!({"grace_hours": 169})),
        ))
        .await;
    assert_eq!(capped.status, StatusCode::BAD_REQUEST);
    assert!(capped.json["message"].as_str().unwrap_or_default().contains("0 to 168 hours"), "{}", capped.json);

    // rotate-keys marks the ended key; the report names nothing secret.
    let outcome = rotate_keys(&app, "2026-11-26T01:00:00Z").await;
    let steps = &outcome.run().steps;
    let ended = steps.iter().find(|step| step.name == "end_grace_periods").expect("step");
    assert_eq!(ended.rows, 1);
    let reason: Vec<Option<String>> = app
        .db
        .query(&format!("SELECT ended_reason FROM api_keys WHERE uid = UNHEX(REPLACE('{old_id}', '-', ''))"))
        .await;
    assert_eq!(reason, vec![Some("rotated".to_string())]);
}

#[tokio::test]
async fn a_revoked_key_stops_within_the_ingest_cache_time_and_at_once_on_the_api() {
    let app = TestApp::with(TestDb::new().await, &[("EVTRACK_KEY_CACHE_SECONDS", "1")]).await;
    let (id, key) = write_key(&app).await;
    assert_eq!(app.send(track(&key)).await.status, StatusCode::OK);
    let reply = app.send(api_request("POST", &format!("/v1/keys/{id}/revoke"), &app.admin, None)).await;
    assert_eq!(reply.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(app.send(track(&key)).await.status, StatusCode::UNAUTHORIZED, "after the 1 s cache time");

    let admin = create_key(&app, json!({"scope": "admin", "name": "second admin"})).await;
    let (admin_id, admin_key) = (admin["id"].as_str().expect("id"), admin["key"].as_str().expect("key"));
    assert_eq!(app.send(api_request("GET", "/v1/projects", admin_key, None)).await.status, StatusCode::OK);
    let itself = app.send(api_request("POST", &format!("/v1/keys/{admin_id}/revoke"), admin_key, None)).await;
    assert_eq!(itself.status, StatusCode::CONFLICT, "a key cannot lock its holder out");
    app.send(api_request("POST", &format!("/v1/keys/{admin_id}/revoke"), &app.admin, None)).await;
    assert_eq!(
        app.send(api_request("GET", "/v1/projects", admin_key, None)).await.status,
        StatusCode::UNAUTHORIZED,
        "the api checks every request"
    );
}

/// A read key's list runs beside the key's own check once the key was seen valid (the api's
/// speculation): revoked, the next request is refused, and nothing of the read comes back.
#[tokio::test]
async fn a_read_key_revoked_between_two_pages_gets_401_and_no_rows() {
    let app = TestApp::new().await;
    assert_eq!(app.send(track(&app.key)).await.status, StatusCode::OK);
    app.consume_queued().await;
    let created = create_key(&app, json!({"scope": "read", "project": app.project, "name": "reader"})).await;
    let (id, read) = (created["id"].as_str().expect("id"), created["key"].as_str().expect("key"));
    for attempt in ["checked first", "read beside its check"] {
        let reply = app.send(api_request("GET", "/v1/events?limit=5", read, None)).await;
        assert_eq!(reply.status, StatusCode::OK, "{attempt}: {}", reply.json);
        assert_eq!(reply.json["data"][0]["name"], "Key Test", "{attempt}");
        // Another project's id is answered as missing, with or without a check first.
        let other = format!("/v1/events?project={}", uuid::Uuid::now_v7());
        assert_eq!(app.send(api_request("GET", &other, read, None)).await.status, StatusCode::NOT_FOUND, "{attempt}");
    }
    let refused = app.send(api_request("GET", "/v1/projects", read, None)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "an admin route stays refused: {}", refused.json);
    app.send(api_request("POST", &format!("/v1/keys/{id}/revoke"), &app.admin, None)).await;
    for path in ["/v1/events?limit=5", "/v1/users", "/v1/event-names"] {
        let reply = app.send(api_request("GET", path, read, None)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path}: at once after the revocation");
        assert_eq!(reply.json["code"], "unauthorized", "{path}");
        assert!(!reply.json.to_string().contains("Key Test"), "{path}: no row of the read: {}", reply.json);
    }
}

/// The speculation runs: while the key table is locked, so that the request's own key check
/// waits, a read key seen valid reads its page, and its answer waits for the check.
#[tokio::test]
async fn a_read_key_seen_valid_reads_its_page_while_its_check_waits_and_answers_after_it() {
    use mysql_async::prelude::Queryable;
    let app = TestApp::new().await;
    assert_eq!(app.send(track(&app.key)).await.status, StatusCode::OK);
    app.consume_queued().await;
    let created = create_key(&app, json!({"scope": "read", "project": app.project, "name": "reader"})).await;
    let read = created["key"].as_str().expect("key");
    let page = || api_request("GET", "/v1/events?limit=5", read, None);
    assert_eq!(app.send(page()).await.status, StatusCode::OK, "the key is seen valid");
    app.reads.take();

    let pool = mysql_async::Pool::new(app.db.url.expose().as_str());
    let mut locker = pool.get_conn().await.expect("connection");
    locker.query_drop("LOCK TABLES api_keys WRITE").await.expect("lock");
    let request = app.send(page());
    tokio::pin!(request);
    // The check gives up after the store's 10 s statement timeout (503): look well before.
    let mut waited = Duration::ZERO;
    while app.reads.take().is_empty() {
        tokio::select! {
            reply = &mut request => panic!("answered (its check timed out?) before the page was read: {}", reply.json),
            _ = tokio::time::sleep(Duration::from_millis(10)) => waited += Duration::from_millis(10),
        }
        assert!(waited < Duration::from_secs(7), "the page was not read while its check waited");
    }
    // The page's statement has been sent; the answer still waits for the check.
    tokio::select! {
        reply = &mut request => panic!("answered before its key check ended: {}", reply.json),
        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
    }
    locker.query_drop("UNLOCK TABLES").await.expect("unlock");
    let reply = request.await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["data"][0]["name"], "Key Test");
    drop(locker);
    pool.disconnect().await.ok();
}

#[tokio::test]
async fn each_scope_is_refused_outside_its_routes_with_403() {
    let app = TestApp::new().await;
    let read = create_key(&app, json!({"scope": "read", "project": app.project})).await["key"]
        .as_str()
        .expect("key")
        .to_string();
    for key in [&app.key, &read] {
        let reply = app.send(api_request("GET", "/v1/projects", key, None)).await;
        assert_eq!((reply.status, reply.json["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    }
    for key in [&app.admin, &read] {
        assert_eq!(app.send(track(key)).await.status, StatusCode::FORBIDDEN);
    }
    assert!(app.take_queued().await.is_empty());
}

#[tokio::test]
async fn a_checksum_typo_is_refused_without_a_database_query() {
    // Both routers point at a port where nothing listens: any lookup would answer 503.
    let db = TestDb::new().await;
    let key = evtrack::keys::ApiKey::generate(evtrack::keys::Scope::Write).reveal().to_string();
    let mut typo = key.clone();
    let last = typo.pop().expect("char");
    typo.push(if last == 'a' { 'b' } else { 'a' });
    let dead = config(&db, &[("EVTRACK_DATABASE_URL", "mysql://root@127.0.0.1:9/evtrack?prefer_socket=false")]);
    let store = evtrack::store::Store::from_config(&dead).expect("pool");
    let (queue, _receiver) = evtrack::queue::local::channel(4, Duration::from_millis(10));
    let ingest = std::sync::Arc::new(evtrack_ingest::Ingest::new(
        &dead,
        store.clone(),
        evtrack::queue::EventQueue::Local(queue),
    ));
    let router = evtrack_ingest::router(ingest);
    let reply = evtrack_tests::send(&router, track(&typo)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "typo: refused before any lookup");
    let reply = evtrack_tests::send(&router, track(&key)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "a well-formed key does need the database");

    let keyring = evtrack::keys::keyring::Keyring::from_config(store.clone(), &dead).expect("keyring");
    let keyring = std::sync::Arc::new(keyring);
    let jobs = evtrack::jobs::JobRunners::default();
    let api = evtrack_api::router(std::sync::Arc::new(evtrack_api::Api::new(&dead, store, keyring, jobs)));
    let admin_typo = typo.replace("evtw_", "evta_");
    let reply = evtrack_tests::send(&api, api_request("GET", "/v1/projects", &admin_typo, None)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_database_row_alone_cannot_authenticate() {
    use sha2::{Digest, Sha256};
    let app = TestApp::with(TestDb::new().await, &[("EVTRACK_KEY_CACHE_SECONDS", "0")]).await;
    let rows: Vec<(Vec<u8>, String)> =
        app.db.query("SELECT key_hash, display_prefix FROM api_keys WHERE scope = 'admin'").await;
    let (hash, prefix) = rows.into_iter().next().expect("the admin key's row");
    assert!(app.admin.starts_with(&prefix) && app.admin.len() > prefix.len(), "only a prefix is stored");
    let hex: String = hash.iter().map(|byte| format!("{byte:02x}")).collect();
    use base64::Engine;
    for candidate in [hex.clone(), base64::engine::general_purpose::STANDARD.encode(&hash), prefix.clone()] {
        let reply = app.send(api_request("GET", "/v1/projects", &candidate, None)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{candidate}");
    }
    // A row forged with someone's own key, hashed without the server's pepper.
    let forged = evtrack::keys::ApiKey::generate(evtrack::keys::Scope::Admin);
    let digest: String = Sha256::digest(forged.reveal().as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect();
    app.db
        .execute(&format!(
            "INSERT INTO api_keys (uid, scope, key_hash, pepper_version, display_prefix)
             VALUES (UNHEX(REPLACE(UUID(), '-', '')), 'admin', UNHEX('{digest}'), 1, '{}')",
            forged.display_prefix()
        ))
        .await;
    let reply = app.send(api_request("GET", "/v1/projects", forged.reveal(), None)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "a forged row needs the pepper");
    assert_eq!(app.send(api_request("GET", "/v1/projects", &app.admin, None)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn projects_can_be_created_changed_deleted_and_restored_and_a_deleted_projects_keys_stop_at_once() {
    let app = TestApp::with(TestDb::new().await, &[("EVTRACK_KEY_CACHE_SECONDS", "0")]).await;
    let created = app
        .send(api_request("POST", "/v1/projects", &app.admin, Some(&json!({"name": "Shop", "retention_days": 30}))))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.json);
    assert_eq!(
        (created.json["retention_days"].as_u64(), created.json["ip_policy"].as_str()),
        (Some(30), Some("truncate"))
    );
    let id = created.json["id"].as_str().expect("id").to_string();
    let path = format!("/v1/projects/{id}");

    let patched = app
        .send(api_request("PATCH", &path, &app.admin, Some(&json!({"ip_policy": "none", "retention_days": null}))))
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.json);
    assert_eq!((patched.json["name"].as_str(), patched.json["retention_days"].as_u64()), (Some("Shop"), None));
    assert_eq!(patched.json["ip_policy"], "none");
    for (body, needle) in [
        (json!({"ip_policy": "some"}), "unknown variant"),
        (json!({"retention": 3}), "unknown field"),
        (json!({"retention_days": 0}), "retention_days"),
        (json!({"name": ""}), "name"),
    ] {
        let reply = app.send(api_request("PATCH", &path, &app.admin, Some(&body))).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(reply.json["message"].as_str().unwrap_or_default().contains(needle), "{body}: {}", reply.json);
    }

    let key =
        create_key(&app, json!({"scope": "write", "project": id})).await["key"].as_str().expect("key").to_string();
    assert_eq!(app.send(track(&key)).await.status, StatusCode::OK);
    let queued = app.take_queued().await;
    assert!(!queued[0].body.contains("\"ip\":\"203."), "ip_policy none stores no address: {}", queued[0].body);

    assert_eq!(app.send(api_request("DELETE", &path, &app.admin, None)).await.status, StatusCode::OK);
    assert_eq!(app.send(track(&key)).await.status, StatusCode::UNAUTHORIZED, "a deleted project's key stops at once");
    assert_eq!(app.send(api_request("GET", &path, &app.admin, None)).await.status, StatusCode::NOT_FOUND);
    let deleted = app.send(api_request("GET", "/v1/projects?deleted=true", &app.admin, None)).await;
    assert_eq!(deleted.json["data"][0]["id"].as_str(), Some(id.as_str()));
    let live = app.send(api_request("GET", "/v1/projects", &app.admin, None)).await;
    assert!(live.json["data"].as_array().expect("data").iter().all(|project| project["id"] != id.as_str()));

    let restored = app.send(api_request("POST", &format!("{path}/restore"), &app.admin, None)).await;
    assert_eq!(restored.status, StatusCode::OK);
    assert_eq!(app.send(track(&key)).await.status, StatusCode::OK, "restored with its keys");
    let again = app.send(api_request("POST", &format!("{path}/restore"), &app.admin, None)).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "nothing to restore");
    let missing = app.send(api_request("GET", "/v1/projects/not-a-uuid", &app.admin, None)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // Deleted longer ago than the grace: the cleanup job may be purging it table by table,
    // so it is not restored half gone.
    assert_eq!(app.send(api_request("DELETE", &path, &app.admin, None)).await.status, StatusCode::OK);
    let backdate = format!(
        "UPDATE projects SET deleted_at = NOW(3) - INTERVAL 31 DAY WHERE uid = UNHEX(REPLACE('{id}', '-', ''))"
    );
    app.db.execute(&backdate).await;
    let late = app.send(api_request("POST", &format!("{path}/restore"), &app.admin, None)).await;
    assert_eq!(late.status, StatusCode::CONFLICT, "{}", late.json);
    assert!(late.json["message"].as_str().unwrap_or_default().contains("being purged"), "{}", late.json);
}

#[tokio::test]
async fn keys_are_created_with_scope_defaults_listed_without_secrets_and_refused_when_inconsistent() {
    let app = TestApp::new().await;
    let created = create_key(&app, json!({"scope": "read", "project": app.project, "name": "dashboard"})).await;
    let expires: chrono::DateTime<chrono::Utc> = created["expires_at"].as_str().expect("expiry").parse().expect("time");
    assert_eq!((expires - chrono::Utc::now()).num_days(), 179, "read keys expire after 180 days by default");
    let never = create_key(&app, json!({"scope": "write", "project": app.project, "never_expires": true})).await;
    assert!(never["expires_at"].is_null());

    for (body, status) in [
        (json!({"scope": "write"}), StatusCode::BAD_REQUEST),
        (json!({"scope": "admin", "project": app.project}), StatusCode::BAD_REQUEST),
        (json!({"scope": "owner", "project": app.project}), StatusCode::BAD_REQUEST),
        (
            json!({"scope": "write", "project": app.project, "expires_in_days": 5, "never_expires": true}),
            StatusCode::BAD_REQUEST,
        ),
        // A project that does not exist is missing, like another tenant's (not "invalid").
        (json!({"scope": "write", "project": uuid::Uuid::now_v7()}), StatusCode::NOT_FOUND),
    ] {
        let reply = app.send(api_request("POST", "/v1/keys", &app.admin, Some(&body))).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.json);
    }

    let listed = app.send(api_request("GET", &format!("/v1/keys?project={}", app.project), &app.admin, None)).await;
    assert_eq!(listed.status, StatusCode::OK);
    let text = listed.json.to_string();
    assert_eq!(listed.json["data"].as_array().expect("data").len(), 3, "the test key, dashboard, never");
    for secret in [created["key"].as_str().expect("key"), never["key"].as_str().expect("key"), &app.key] {
        assert!(!text.contains(secret), "a listing never shows a key");
    }
    assert!(!text.contains("hash"));

    // A successor lives as long as its key was made to (at most the scope's default).
    let weekly = create_key(&app, json!({"scope": "read", "project": app.project, "expires_in_days": 7})).await;
    let expiry_of_successor = async |key: &serde_json::Value| {
        let path = format!("/v1/keys/{}/rotate", key["id"].as_str().expect("id"));
        let rotated = app.send(api_request("POST", &path, &app.admin, None)).await;
        assert_eq!(rotated.status, StatusCode::CREATED, "{}", rotated.json);
        rotated.json["expires_at"].as_str().map(|at| at.parse::<chrono::DateTime<chrono::Utc>>().expect("time"))
    };
    let days_left =
        |at: Option<chrono::DateTime<chrono::Utc>>| (at.expect("an expiry") - chrono::Utc::now()).num_days();
    assert_eq!(days_left(expiry_of_successor(&weekly).await), 6, "a week's key, a week's successor");
    assert_eq!(days_left(expiry_of_successor(&never).await), 364, "the write default for a key that never expired");
}

#[tokio::test]
async fn use_of_a_key_is_recorded_without_ingest_writing_to_the_database() {
    let app = TestApp::new().await;
    const NEVER_USED: &str = "api_keys WHERE scope = 'write' AND last_used_at IS NULL";
    assert_eq!(app.send(track(&app.key)).await.status, StatusCode::OK);
    assert_eq!(app.db.count(NEVER_USED).await, 1, "ingest wrote nothing");
    assert!(app.consume_queued().await.is_empty());
    assert_eq!(app.db.count(NEVER_USED).await, 0, "the consumer recorded the use");
    app.send(api_request("GET", "/v1/projects", &app.admin, None)).await;
    assert_eq!(app.db.count("api_keys WHERE scope = 'admin' AND last_used_at IS NOT NULL").await, 1);
}

#[tokio::test]
async fn cursors_signed_by_a_key_in_its_overlap_verify_and_by_a_retired_key_do_not() {
    let app = TestApp::new().await;
    for name in ["b", "c", "d"] {
        app.send(api_request("POST", "/v1/projects", &app.admin, Some(&json!({"name": name})))).await;
    }
    let page = |cursor: Option<&str>| {
        let path = match cursor {
            Some(cursor) => format!("/v1/projects?limit=1&cursor={cursor}"),
            None => "/v1/projects?limit=1".to_string(),
        };
        app.send(api_request("GET", &path, &app.admin, None))
    };
    let first = page(None).await;
    let old_cursor = first.json["next_cursor"].as_str().expect("a next page").to_string();
    assert_eq!(page(Some(&old_cursor)).await.status, StatusCode::OK);
    let old_kid = old_cursor.split('.').nth(1).expect("kid").to_string();

    // Tampering, or carrying a cursor to another list, is refused.
    // The payload's first character carries six whole bits of the signed payload (a last
    // base64 character may carry only padding bits); it is replaced by a different one.
    let mut parts: Vec<String> = old_cursor.split('.').map(str::to_string).collect();
    let payload = &mut parts[2];
    let replacement = if payload.starts_with('A') { "B" } else { "A" };
    payload.replace_range(0..1, replacement);
    let tampered = parts.join(".");
    assert_ne!(tampered, old_cursor);
    assert_eq!(page(Some(&tampered)).await.json["code"], "invalid_cursor");
    let other_list = app.send(api_request("GET", &format!("/v1/keys?cursor={old_cursor}"), &app.admin, None)).await;
    assert_eq!(other_list.json["code"], "invalid_cursor");

    // The signing window closes: rotate-keys adds the next key; the old one is in its overlap.
    app.db.execute("UPDATE signing_keys SET signs_until = NOW(3)").await;
    let outcome = rotate_keys(&app, "2026-11-26T02:00:00Z").await;
    assert_eq!(outcome.run().steps.iter().find(|s| s.name == "add_signing_key").map(|s| s.rows), Some(1));
    app.keyring.refresh().await.expect("keyring");
    assert_eq!(page(Some(&old_cursor)).await.status, StatusCode::OK, "a key in its overlap still verifies");
    let new_cursor = page(None).await.json["next_cursor"].as_str().expect("cursor").to_string();
    assert_ne!(new_cursor.split('.').nth(1), Some(old_kid.as_str()), "the new key signs");

    // The overlap ends: rotate-keys retires the old key.
    app.db.execute(&format!("UPDATE signing_keys SET verifies_until = NOW(3) WHERE uid = UNHEX('{old_kid}')")).await;
    let outcome = rotate_keys(&app, "2026-11-26T03:00:00Z").await;
    assert_eq!(outcome.run().steps.iter().find(|s| s.name == "retire_signing_keys").map(|s| s.rows), Some(1));
    app.keyring.refresh().await.expect("keyring");
    let reply = page(Some(&old_cursor)).await;
    assert_eq!((reply.status, reply.json["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_cursor")));
    assert_eq!(page(Some(&new_cursor)).await.status, StatusCode::OK);
    let sealed: Vec<Vec<u8>> = app.db.query("SELECT secret_sealed FROM signing_keys").await;
    assert!(sealed.iter().all(|secret| secret.len() == 12 + 32 + 16), "nonce + sealed secret + tag");
}

#[tokio::test]
async fn two_rotate_keys_invocations_for_one_slot_run_once() {
    let app = TestApp::new().await;
    let jobs = &app.jobs;
    let trigger = Trigger::new("2026-11-26T04:00:00Z".parse().expect("slot"), "schedule");
    let (one, two) = tokio::join!(jobs.run("rotate-keys", trigger), jobs.run("rotate-keys", trigger));
    let (one, two) = (one.expect("a job"), two.expect("a job"));
    let outcomes = [one.expect("first"), two.expect("second")];
    let ran = outcomes.iter().filter(|outcome| matches!(outcome, Outcome::Ran(_))).count();
    assert_eq!(ran, 1, "exactly one invocation ran the slot");
    assert_eq!(app.db.count("job_runs WHERE job = 'rotate-keys'").await, 1);
    assert_eq!(app.db.count("signing_keys").await, 1, "one signing key added, not two");
    // A later retry of the same slot (Scheduler retries) does nothing either.
    let retry = jobs.run("rotate-keys", trigger).await.expect("a job").expect("retry");
    assert!(matches!(retry, Outcome::AlreadyTaken(_)));
    let listed = app.send(api_request("GET", "/v1/jobs/rotate-keys/runs", &app.admin, None)).await;
    assert_eq!(listed.json["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed.json["data"][0]["state"], "succeeded");
    let triggered = app
        .send(api_request(
            "POST",
            "/v1/jobs/rotate-keys/runs",
            &app.admin,
            Some(&json!({"slot": "2026-11-26T04:00:00Z"})),
        ))
        .await;
    assert_eq!((triggered.status, triggered.json["ran"].as_bool()), (StatusCode::OK, Some(false)));
    let unknown = app.send(api_request("POST", "/v1/jobs/nope/runs", &app.admin, None)).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn keys_expiring_soon_are_reported_and_expired_ones_marked() {
    let app = TestApp::new().await;
    create_key(&app, json!({"scope": "write", "project": app.project, "expires_in_days": 3})).await;
    let (expired_id, _) = write_key(&app).await;
    app.db
        .execute(&format!(
            "UPDATE api_keys SET expires_at = NOW(3) WHERE uid = UNHEX(REPLACE('{expired_id}', '-', ''))"
        ))
        .await;
    let outcome = rotate_keys(&app, "2026-11-26T05:00:00Z").await;
    let rows = |name: &str| outcome.run().steps.iter().find(|step| step.name == name).map(|step| step.rows);
    assert_eq!(rows("report_expiring_keys"), Some(1));
    assert_eq!(rows("mark_expired_keys"), Some(1));
    let info = app.send(api_request("GET", &format!("/v1/keys/{expired_id}"), &app.admin, None)).await;
    assert_eq!(info.json["status"], "expired");
}

#[tokio::test]
async fn keys_hashed_under_the_previous_pepper_keep_working_after_a_pepper_rotation() {
    let db = TestDb::new().await;
    let before = config(&db, &[("EVTRACK_KEY_PEPPER", "pepper-one"), ("EVTRACK_KEY_PEPPER_VERSION", "1")]);
    let (_, old_key) = evtrack_tests::project_with_key(&db, &before, evtrack::keys::Scope::Write).await;
    let after = [
        ("EVTRACK_KEY_PEPPER", "pepper-two"),
        ("EVTRACK_KEY_PEPPER_VERSION", "2"),
        ("EVTRACK_KEY_PEPPER_PREVIOUS", "pepper-one"),
        ("EVTRACK_KEY_PEPPER_PREVIOUS_VERSION", "1"),
    ];
    let app = TestApp::with(db, &after).await;
    assert_eq!(app.send(track(&old_key)).await.status, StatusCode::OK, "hashed under pepper 1");
    assert_eq!(app.send(track(&app.key)).await.status, StatusCode::OK, "hashed under pepper 2");
    let versions: Vec<u16> = app.db.query("SELECT pepper_version FROM api_keys ORDER BY id").await;
    assert_eq!(versions, vec![1, 2, 2]);
    // Without the previous pepper, keys of pepper 1 stop working.
    let config = config(&app.db, &after[..2]);
    let store = app.db.store.clone();
    let (queue, _receiver) = evtrack::queue::local::channel(4, Duration::from_millis(10));
    let ingest = evtrack_ingest::Ingest::new(&config, store, evtrack::queue::EventQueue::Local(queue));
    let router = evtrack_ingest::router(std::sync::Arc::new(ingest));
    assert_eq!(evtrack_tests::send(&router, track(&old_key)).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_corrupt_row_is_a_logged_500_on_the_api_and_ingest() {
    let app = TestApp::new().await;
    // Without strict mode MariaDB stores an unknown ENUM value as '' (a manual edit gone wrong).
    let corrupt = format!(
        "SET SESSION sql_mode = ''; UPDATE projects SET ip_policy = 'bogus' WHERE uid = UNHEX('{}')",
        app.project.simple()
    );
    app.db.execute(&corrupt).await;
    let reply = app.send(api_request("GET", &format!("/v1/projects/{}", app.project), &app.admin, None)).await;
    assert_eq!((reply.status, reply.json["code"].as_str()), (StatusCode::INTERNAL_SERVER_ERROR, Some("internal")));
    assert!(!reply.json.to_string().contains("bogus"), "no detail of the row: {}", reply.json);
    // Ingest too: not a retryable 503 that SDKs would resend forever.
    let reply = app.send(track(&app.key)).await;
    assert_eq!((reply.status, reply.json["code"].as_str()), (StatusCode::INTERNAL_SERVER_ERROR, Some("internal")));
    assert!(app.take_queued().await.is_empty());
}

#[tokio::test]
async fn an_admin_key_for_ever_or_for_longer_than_90_days_is_refused() {
    let app = TestApp::new().await;
    for body in [json!({"scope": "admin", "never_expires": true}), json!({"scope": "admin", "expires_in_days": 91})] {
        let reply = app.send(api_request("POST", "/v1/keys", &app.admin, Some(&body))).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}: {}", reply.json);
        assert!(reply.json["message"].as_str().is_some_and(|m| m.contains("at most 90 days")), "{}", reply.json);
    }
    let body = json!({"scope": "admin", "expires_in_days": 90});
    assert_eq!(app.send(api_request("POST", "/v1/keys", &app.admin, Some(&body))).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn the_api_lambdas_404_carries_the_security_headers() {
    let app = TestApp::new().await;
    let api = evtrack_api::Api::new(&app.config, app.db.store.clone(), app.keyring.clone(), app.jobs.clone());
    let router = evtrack_api::standalone_router(std::sync::Arc::new(api));
    let reply = evtrack_tests::send(&router, api_request("GET", "/v1/nothing-here", &app.admin, None)).await;
    assert_eq!((reply.status, reply.json["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    assert_eq!(reply.headers["x-content-type-options"], "nosniff");
    assert!(reply.headers.contains_key("content-security-policy"));
}

#[tokio::test]
async fn guessing_keys_from_one_address_is_throttled_on_ingest_and_api_but_not_other_addresses() {
    use std::net::IpAddr;
    let app = TestApp::with(TestDb::new().await, &[("EVTRACK_AUTH_FAILURES_PER_MINUTE", "5")]).await;
    // Counted per minute: start early in one, so that the count does not roll over midway.
    let second = chrono::Utc::now().timestamp() % 60;
    if second > 50 {
        tokio::time::sleep(std::time::Duration::from_secs((61 - second) as u64)).await;
    }
    // Addresses of this run only (Redis is shared with every other test).
    let octet = |n: u128| (uuid::Uuid::now_v7().as_u128() >> n) as u8;
    let attacker = IpAddr::from([198, 18, octet(0), octet(8)]);
    let neighbour = IpAddr::from([198, 19, octet(16), octet(24)]);
    let guess =
        |n: usize| post_json("/v1/track", Some(&format!("evtw_guess{n}")), &json!({"userId": "u", "event": "E"}));
    for n in 0..5 {
        assert_eq!(send_from(&app.router, attacker, guess(n)).await.status, StatusCode::UNAUTHORIZED);
    }
    // Now the address is refused before its key is looked at, on ingest and on the api, even
    // with a valid key, until the minute ends.
    let valid = post_json("/v1/track", Some(&app.key), &json!({"userId": "u", "event": "E"}));
    let throttled = send_from(&app.router, attacker, valid).await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS, "{}", throttled.json);
    assert_eq!(throttled.json["code"], "too_many_failed_authentications");
    assert!(throttled.headers.contains_key(http::header::RETRY_AFTER));
    let api = send_from(&app.router, attacker, api_request("GET", "/v1/projects", &app.admin, None)).await;
    assert_eq!(api.status, StatusCode::TOO_MANY_REQUESTS);
    // Another address is not affected.
    let valid = post_json("/v1/track", Some(&app.key), &json!({"userId": "u", "event": "E"}));
    assert_eq!(send_from(&app.router, neighbour, valid).await.status, StatusCode::OK);
    assert_eq!(send_from(&app.router, neighbour, guess(9)).await.status, StatusCode::UNAUTHORIZED);
}
