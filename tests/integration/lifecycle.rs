//! The data lifecycle end to end: GDPR erasure (events stored and still queued), export,
//! soft delete and restore until the purge, retention at its boundary, chunked deletes,
//! and exactly-once cleanup runs — against real MariaDB and Redis.

use evtrack::queue::local::QueuedMessage;
use evtrack_tests::{TestApp, TestDb, api_request, post_json};
use http::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

pub(crate) fn batch(key: &str, messages: Vec<Value>) -> http::Request<axum::body::Body> {
    post_json("/v1/batch", Some(key), &json!({ "batch": messages }))
}

pub(crate) async fn run_cleanup(app: &TestApp, slot: &str) -> Value {
    run_job(app, "cleanup", slot).await
}

pub(crate) async fn run_job(app: &TestApp, job: &str, slot: &str) -> Value {
    let uri = format!("/v1/jobs/{job}/runs");
    let reply = app.send(api_request("POST", &uri, &app.admin, Some(&json!({"slot": slot})))).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);
    assert_eq!(reply.json["run"]["state"], "succeeded", "{}", reply.json);
    reply.json
}

pub(crate) fn step_rows(outcome: &Value, step: &str) -> (u64, u64) {
    let steps = outcome["run"]["steps"].as_array().expect("steps");
    let step = steps.iter().find(|s| s["name"] == step).unwrap_or_else(|| panic!("no step {step}"));
    (step["rows"].as_u64().unwrap_or_default(), step["chunks"].as_u64().unwrap_or_default())
}

async fn event_uid(app: &TestApp, message_id: &str) -> Uuid {
    let uids: Vec<Vec<u8>> = app.db.query(&format!("SELECT uid FROM events WHERE message_id = '{message_id}'")).await;
    Uuid::from_slice(&uids[0]).expect("uid")
}

/// Rows of the project (or all) that hold `needle` in an id column or a raw body.
pub(crate) async fn rows_holding(app: &TestApp, needle: &str) -> u64 {
    let mut total = 0;
    for (table, columns) in [
        ("events", "CONCAT_WS('|', user_id, anonymous_id, previous_id, message_id)"),
        ("users", "user_id"),
        ("aliases", "CONCAT_WS('|', alias, user_id)"),
        ("group_members", "member_id"),
        ("rejected_events", "raw"),
        ("erasure_subjects", "subject"),
        ("erasures", "CONCAT_WS('|', COALESCE(user_id, ''), COALESCE(linked_ids, ''), subject_hash)"),
    ] {
        total += app.db.count(&format!("{table} WHERE LOCATE('{needle}', {columns}) > 0")).await;
    }
    total
}

#[tokio::test]
async fn erasure_removes_every_row_of_the_user_also_of_events_still_queued_and_keeps_an_audit_row_without_them() {
    let app = TestApp::new().await;
    let run = Uuid::now_v7().simple().to_string();
    let (user, anonymous) = (format!("erase-me-{run}"), format!("anon-{run}"));
    let project = app.project.to_string();
    // Stored before the request: an identify linking the anonymous id, tracks of both ids,
    // a group call, an alias, and a rejected event that names the user.
    let stored = vec![
        json!({"type": "identify", "userId": user, "anonymousId": anonymous, "traits": {"email": "e@example.com"}, "messageId": format!("{run}-1")}),
        json!({"type": "track", "userId": user, "event": "Bought", "messageId": format!("{run}-2")}),
        json!({"type": "page", "anonymousId": anonymous, "name": "Home", "messageId": format!("{run}-3")}),
        json!({"type": "group", "userId": user, "groupId": "acme", "messageId": format!("{run}-4")}),
        json!({"type": "alias", "userId": user, "previousId": format!("old-{run}"), "messageId": format!("{run}-5")}),
        json!({"type": "track", "userId": "someone-else", "event": "Kept", "messageId": format!("{run}-6")}),
    ];
    assert_eq!(app.send(batch(&app.key, stored)).await.status, StatusCode::OK);
    assert!(app.consume_queued().await.is_empty());
    let poison = json!({"v": 1, "project": app.project, "key": Uuid::now_v7(), "received_at": "2026-11-26T00:00:00Z",
                        "events": [{"type": "track", "userId": user}]});
    app.deliver(&[QueuedMessage { id: format!("poison-{run}"), body: poison.to_string(), receive_count: 1 }]).await;
    assert_eq!(app.db.count(&format!("rejected_events WHERE LOCATE('{user}', raw) > 0")).await, 1);
    // The same user id in another project must stay.
    let other = app.send(api_request("POST", "/v1/projects", &app.admin, Some(&json!({"name": "other"})))).await;
    let other_project = other.json["id"].as_str().expect("id").to_string();
    let other_key = app
        .send(api_request("POST", "/v1/keys", &app.admin, Some(&json!({"scope": "write", "project": other_project}))))
        .await
        .json["key"]
        .as_str()
        .expect("key")
        .to_string();
    let theirs =
        json!({"type": "track", "userId": user, "event": "Other project", "messageId": format!("{run}-other")});
    assert_eq!(app.send(batch(&other_key, vec![theirs])).await.status, StatusCode::OK);
    assert!(app.consume_queued().await.is_empty());
    // Queued before the request, stored after it: must never land.
    let queued = vec![
        json!({"type": "track", "userId": user, "event": "Late", "messageId": format!("{run}-7")}),
        json!({"type": "screen", "anonymousId": anonymous, "name": "Late", "messageId": format!("{run}-8")}),
    ];
    assert_eq!(app.send(batch(&app.key, queued)).await.status, StatusCode::OK);
    let in_queue = app.take_queued().await;
    assert!(rows_holding(&app, &user).await >= 6);

    let erase = api_request("DELETE", &format!("/v1/users/{user}?project={project}"), &app.admin, None);
    let reply = app.send(erase).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.json);
    assert_eq!(reply.json["status"], "pending");
    let erasure = reply.json["id"].as_str().expect("erasure id").to_string();

    // The queued events arrive after the request: dropped.
    assert!(app.deliver(&in_queue).await.is_empty());
    assert_eq!(app.db.count(&format!("events WHERE message_id IN ('{run}-7', '{run}-8')")).await, 0);

    let outcome = run_cleanup(&app, "2026-11-26T10:00:00Z").await;
    assert!(step_rows(&outcome, "erasures").0 >= 8, "{outcome}");
    // Only the other project's event may hold the user id; nothing holds the linked ids.
    for (needle, expected) in [(&user, 1), (&anonymous, 0), (&format!("old-{run}"), 0)] {
        assert_eq!(rows_holding(&app, needle).await, expected, "{needle}");
    }
    assert_eq!(app.db.count(&format!("events WHERE message_id = '{run}-other'")).await, 1, "other project untouched");
    assert_eq!(app.db.count(&format!("events WHERE message_id = '{run}-6'")).await, 1, "other users untouched");

    let audit = app.send(api_request("GET", &format!("/v1/erasures/{erasure}"), &app.admin, None)).await;
    assert_eq!(audit.json["status"], "done", "{}", audit.json);
    assert_eq!(audit.json["events_deleted"], 5, "{}", audit.json);
    assert_eq!((audit.json["profiles_deleted"].as_u64(), audit.json["rejected_deleted"].as_u64()), (Some(1), Some(1)));
    assert!(!audit.json.to_string().contains(&user), "the audit record holds no personal data");
    assert_eq!(app.db.count("erasure_subjects").await, 0, "a done erasure holds no ids");
    let row: Vec<(Option<String>, Option<String>)> = app.db.query("SELECT user_id, linked_ids FROM erasures").await;
    assert_eq!(row, vec![(None, None)]);
    assert_eq!((audit.json["ids"].as_u64(), audit.json["ids_remaining"].as_u64()), (Some(3), Some(0)));

    // Events sent later under the erased ids are dropped too (the suppression list), and so
    // are quarantined ones naming them, where cleanup has scanned the quarantine already: an
    // event ingest refused (no event name) beside a good one, and one the consumer refused.
    let again = vec![
        json!({"type": "track", "userId": user, "event": "Back", "messageId": format!("{run}-9")}),
        json!({"type": "track", "userId": user, "messageId": format!("{run}-10")}),
        json!({"type": "track", "userId": "someone-else", "event": "Kept", "messageId": format!("{run}-11")}),
    ];
    assert_eq!(app.send(batch(&app.key, again)).await.status, StatusCode::OK);
    assert!(app.consume_queued().await.is_empty());
    assert!(
        app.deliver(&[QueuedMessage { id: format!("poison-again-{run}"), body: poison.to_string(), receive_count: 1 }])
            .await
            .is_empty()
    );
    assert_eq!(app.db.count(&format!("events WHERE message_id IN ('{run}-9', '{run}-11')")).await, 1);
    assert_eq!(app.db.count(&format!("rejected_events WHERE LOCATE('{user}', raw) > 0")).await, 0);
    assert_eq!(app.db.count(&format!("rejected_events WHERE LOCATE('{anonymous}', raw) > 0")).await, 0);
}

#[tokio::test]
async fn an_export_holds_everything_about_the_user_and_ends_with_its_count() {
    let app = TestApp::new().await;
    let events = vec![
        json!({"type": "identify", "userId": "u-export", "anonymousId": "a-export", "traits": {"plan": "pro"}, "messageId": "x1"}),
        json!({"type": "track", "userId": "u-export", "event": "One", "properties": {"n": 1}, "messageId": "x2"}),
        json!({"type": "track", "anonymousId": "a-export", "event": "Before login", "messageId": "x3"}),
        json!({"type": "group", "userId": "u-export", "groupId": "g-1", "messageId": "x4"}),
        json!({"type": "track", "userId": "someone-else", "event": "Not theirs", "messageId": "x5"}),
    ];
    assert_eq!(app.send(batch(&app.key, events)).await.status, StatusCode::OK);
    assert!(app.consume_queued().await.is_empty());
    let deleted = event_uid(&app, "x2").await;
    let path = format!("/v1/events/{deleted}?project={}", app.project);
    assert_eq!(app.send(api_request("DELETE", &path, &app.admin, None)).await.status, StatusCode::OK);

    let request = api_request("GET", &format!("/v1/users/u-export/export?project={}", app.project), &app.admin, None);
    let response = tower::ServiceExt::oneshot(app.router.clone(), request).await.expect("response");
    assert_eq!(response.headers()[http::header::CONTENT_TYPE], "application/x-ndjson");
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
    let lines: Vec<Value> =
        String::from_utf8_lossy(&body).lines().map(|line| serde_json::from_str(line).expect("json")).collect();
    assert_eq!(lines[0]["profile"]["traits"], json!({"plan": "pro"}));
    assert_eq!(lines[1]["ids"], json!(["a-export"]));
    assert_eq!(lines[2]["groupIds"], json!(["g-1"]));
    let exported: Vec<&str> =
        lines.iter().filter(|l| l["type"] == "event").filter_map(|l| l["event"]["messageId"].as_str()).collect();
    assert_eq!(exported, vec!["x1", "x2", "x3", "x4"], "soft-deleted events are still held, so exported");
    assert_eq!(lines.last().expect("end"), &json!({"type": "end", "events": 4}));

    // The command line writes the same lines to a file that only its owner can read (one that
    // was there, readable by all, is emptied and narrowed).
    let output = std::env::temp_dir().join(format!("export-{}.ndjson", Uuid::now_v7().simple()));
    std::fs::write(&output, "an older export, longer than the new one\n".repeat(1000)).expect("an older file");
    std::fs::set_permissions(&output, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");
    let status = std::process::Command::new(evtrack_tests::workspace_binary("evtrack"))
        .args(["export", "--project", &app.project.to_string(), "--user", "u-export", "-o"])
        .arg(&output)
        .env("EVTRACK_DATABASE_URL", app.db.url.expose())
        .output()
        .expect("evtrack export");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let written = std::fs::read_to_string(&output).expect("file");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&output).expect("metadata").permissions());
    std::fs::remove_file(&output).ok();
    assert_eq!(mode & 0o777, 0o600, "an export is its owner's alone");
    assert_eq!(written.lines().count(), lines.len());
    assert!(written.ends_with("{\"events\":4,\"type\":\"end\"}\n") || written.contains("\"type\":\"end\""));
}

#[tokio::test]
async fn soft_deleted_events_users_keys_and_projects_are_invisible_restorable_and_purged_after_the_grace() {
    let app = TestApp::with(TestDb::new().await, &[("EVTRACK_KEY_CACHE_SECONDS", "0")]).await;
    let project = app.project;
    let events = vec![
        json!({"type": "identify", "userId": "u-soft", "traits": {"a": 1}, "messageId": "s1"}),
        json!({"type": "track", "userId": "u-soft", "event": "E", "messageId": "s2"}),
    ];
    assert_eq!(app.send(batch(&app.key, events)).await.status, StatusCode::OK);
    assert!(app.consume_queued().await.is_empty());
    let event = event_uid(&app, "s2").await;
    let event_path = format!("/v1/events/{event}?project={project}");
    let user_path = |suffix: &str| format!("/v1/users/u-soft{suffix}?project={project}");
    let get = |path: String| app.send(api_request("GET", &path, &app.admin, None));
    let post = |path: String| app.send(api_request("POST", &path, &app.admin, None));

    assert_eq!(get(event_path.clone()).await.json["name"], "E");
    assert_eq!(get(user_path("")).await.json["traits"], json!({"a": 1}));
    // A read key reads its own project; an admin key must name it.
    let read = app
        .send(api_request("POST", "/v1/keys", &app.admin, Some(&json!({"scope": "read", "project": project}))))
        .await
        .json["key"]
        .as_str()
        .expect("key")
        .to_string();
    assert_eq!(app.send(api_request("GET", &format!("/v1/events/{event}"), &read, None)).await.status, StatusCode::OK);
    assert_eq!(get(format!("/v1/events/{event}")).await.status, StatusCode::BAD_REQUEST);
    let elsewhere = format!("/v1/events/{event}?project={}", Uuid::now_v7());
    assert_eq!(app.send(api_request("GET", &elsewhere, &read, None)).await.status, StatusCode::NOT_FOUND);

    assert_eq!(app.send(api_request("DELETE", &event_path, &app.admin, None)).await.status, StatusCode::OK);
    assert_eq!(post(user_path("/soft-delete")).await.status, StatusCode::OK);
    assert_eq!(get(event_path.clone()).await.status, StatusCode::NOT_FOUND);
    assert_eq!(get(user_path("")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.send(api_request("GET", &format!("/v1/events/{event}"), &read, None)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(post(format!("/v1/events/{event}/restore?project={project}")).await.status, StatusCode::OK);
    assert_eq!(post(user_path("/restore")).await.status, StatusCode::OK);
    assert_eq!(get(event_path.clone()).await.status, StatusCode::OK, "restored");
    assert_eq!(get(user_path("")).await.status, StatusCode::OK, "restored");

    // Keys: deleted → refused and unlisted; restored → working.
    let key_id = app.db.query::<Vec<u8>>("SELECT uid FROM api_keys WHERE scope = 'write'").await;
    let key_id = Uuid::from_slice(&key_id[0]).expect("uid");
    let track = || post_json("/v1/track", Some(&app.key), &json!({"userId": "u", "event": "E"}));
    assert_eq!(
        app.send(api_request("DELETE", &format!("/v1/keys/{key_id}"), &app.admin, None)).await.status,
        StatusCode::OK
    );
    assert_eq!(app.send(track()).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(get(format!("/v1/keys/{key_id}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(post(format!("/v1/keys/{key_id}/restore")).await.status, StatusCode::OK);
    assert_eq!(app.send(track()).await.status, StatusCode::OK);
    app.take_queued().await;

    // Deleted again and past the 30-day grace: purged, no longer restorable.
    app.send(api_request("DELETE", &event_path, &app.admin, None)).await;
    post(user_path("/soft-delete")).await;
    app.db.execute("UPDATE events SET deleted_at = '2026-10-26 09:59:59' WHERE deleted_at IS NOT NULL").await;
    app.db.execute("UPDATE users SET deleted_at = '2026-10-26 10:00:01' WHERE deleted_at IS NOT NULL").await;
    let outcome = run_cleanup(&app, "2026-11-25T10:00:00Z").await;
    assert_eq!(step_rows(&outcome, "purge_deleted_events").0, 1, "deleted 30 days and 1 s before the slot");
    assert_eq!(step_rows(&outcome, "purge_deleted_users").0, 0, "deleted 1 s less than 30 days before the slot");
    assert_eq!(post(format!("/v1/events/{event}/restore?project={project}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(post(user_path("/restore")).await.status, StatusCode::OK, "still inside its grace");

    // A project past its grace goes with everything that belongs to it.
    let path = format!("/v1/projects/{project}");
    assert_eq!(app.send(api_request("DELETE", &path, &app.admin, None)).await.status, StatusCode::OK);
    assert_eq!(get(user_path("")).await.status, StatusCode::NOT_FOUND, "a deleted project's data is invisible");
    app.db.execute("UPDATE projects SET deleted_at = '2026-10-01 00:00:00' WHERE deleted_at IS NOT NULL").await;
    run_cleanup(&app, "2026-11-25T11:00:00Z").await;
    for table in ["projects", "events", "users", "api_keys WHERE scope <> 'admin'"] {
        assert_eq!(app.db.count(table).await, 0, "{table} purged with its project");
    }
    assert_eq!(post(format!("{path}/restore")).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn retention_deletes_exactly_the_events_older_than_the_cutoff_in_chunks() {
    let app = TestApp::with(TestDb::new().await, &[("EVTRACK_CLEANUP_CHUNK_ROWS", "10")]).await;
    let path = format!("/v1/projects/{}", app.project);
    let reply = app.send(api_request("PATCH", &path, &app.admin, Some(&json!({"retention_days": 30})))).await;
    assert_eq!(reply.status, StatusCode::OK);
    let keep_all = app.db.store.create_project("keeps everything").await.expect("project");
    let keep_all: Vec<u64> =
        app.db.query(&format!("SELECT id FROM projects WHERE uid = UNHEX('{}')", keep_all.id.simple())).await;
    let project: Vec<u64> =
        app.db.query(&format!("SELECT id FROM projects WHERE uid = UNHEX('{}')", app.project.simple())).await;
    // The slot is 2026-11-26 00:00:00; the cut-off 30 days before: 2026-10-27 00:00:00.
    let mut rows = Vec::new();
    for n in 0..35 {
        rows.push((project[0], format!("old-{n}"), format!("2026-10-{:02} 12:00:00.000", 1 + n % 26)));
    }
    rows.push((project[0], "just-before".into(), "2026-10-26 23:59:59.999".into()));
    rows.push((project[0], "at-cutoff".into(), "2026-10-27 00:00:00.000".into()));
    rows.push((project[0], "just-after".into(), "2026-10-27 00:00:00.001".into()));
    rows.push((project[0], "recent".into(), "2026-11-25 00:00:00.000".into()));
    rows.push((keep_all[0], "other-old".into(), "2020-01-01 00:00:00.000".into()));
    for (project, message, at) in rows {
        app.db
            .execute(&format!(
                "INSERT INTO events (uid, project_id, message_id, type, timestamp, received_at)
                 VALUES (UNHEX(REPLACE(UUID(), '-', '')), {project}, '{message}', 'track', '{at}', '{at}')"
            ))
            .await;
    }
    let outcome = run_cleanup(&app, "2026-11-26T00:00:00Z").await;
    let (rows, chunks) = step_rows(&outcome, "retention");
    assert_eq!(rows, 36, "35 old ones and the one a millisecond before the cut-off");
    assert!(chunks >= 4, "at most 10 rows a statement: 36 rows took {chunks} chunks");
    let left: Vec<String> = app.db.query("SELECT message_id FROM events ORDER BY timestamp").await;
    assert_eq!(left, vec!["other-old", "at-cutoff", "just-after", "recent"]);
}

#[tokio::test]
async fn ten_concurrent_cleanup_triggers_run_once_even_with_redis_down_and_old_logs_are_pruned() {
    let db = TestDb::new().await;
    let app = TestApp::with(db, &[("EVTRACK_REDIS_URL", "redis://127.0.0.1:1")]).await;
    app.db
        .execute(
            "INSERT INTO rejected_events (uid, queue_message_id, item_index, reason, raw, created_at)
             VALUES (UNHEX(REPLACE(UUID(), '-', '')), 'old', -1, 'test', 'x', '2026-09-01 00:00:00'),
                    (UNHEX(REPLACE(UUID(), '-', '')), 'new', -1, 'test', 'x', '2026-11-25 00:00:00')",
        )
        .await;
    app.db
        .execute(
            "INSERT INTO job_runs (id, uid, job, slot, state, lease_until, triggered_by, created_at)
             VALUES (900, UNHEX(REPLACE(UUID(), '-', '')), 'cleanup', '2026-07-01 00:00:00', 'succeeded',
                     '2026-07-01 00:00:00', 'schedule', '2026-07-01 00:00:00')",
        )
        .await;
    app.db.execute("INSERT INTO job_steps (run_id, step, done) VALUES (900, 'a', 1), (900, 'b', 1)").await;
    let body = json!({"slot": "2026-11-26T12:00:00Z"});
    let requests = (0..10).map(|_| app.send(api_request("POST", "/v1/jobs/cleanup/runs", &app.admin, Some(&body))));
    let replies = futures::future::join_all(requests).await;
    let statuses: Vec<u16> = replies.iter().map(|reply| reply.status.as_u16()).collect();
    assert_eq!(statuses.iter().filter(|status| **status == 201).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|status| **status == 200).count(), 9, "{statuses:?}");
    assert_eq!(app.db.count("job_runs WHERE job = 'cleanup'").await, 1);
    let ran = replies.iter().find(|reply| reply.status == StatusCode::CREATED).expect("the run");
    assert_eq!(step_rows(&ran.json, "prune_rejected_events").0, 1, "30-day retention of rejected events");
    let left: Vec<String> = app.db.query("SELECT queue_message_id FROM rejected_events").await;
    assert_eq!(left, vec!["new"]);
    assert_eq!(step_rows(&ran.json, "prune_job_runs").0, 3, "a 90-day-old run and its two steps");
    assert_eq!(app.db.count("job_runs WHERE id = 900").await + app.db.count("job_steps WHERE run_id = 900").await, 0);
    assert_eq!(app.db.count("job_runs").await, 1, "the running run itself is kept");
}

/// A job slot in the future would measure every age from then: purge soft-deleted rows with
/// no grace, expire retained events, drop suppressions. Refused on the api and by the ledger
/// (whoever triggers it), and a slot within the allowed clock skew never cuts past now.
#[tokio::test]
async fn a_future_slot_is_refused_and_cut_offs_never_pass_now() {
    let app = TestApp::new().await;
    let body = json!({"batch": [{"type": "track", "event": "E", "userId": "u", "messageId": "kept"}]});
    assert_eq!(app.send(post_json("/v1/batch", Some(&app.key), &body)).await.status, StatusCode::OK);
    assert!(app.consume_queued().await.is_empty());
    // Soft-deleted 20 s less than the grace period ago: not purgeable yet.
    let grace_days = app.config.cleanup.soft_delete_grace.num_days();
    app.db
        .execute(&format!(
            "UPDATE events SET deleted_at = NOW(3) - INTERVAL {grace_days} DAY + INTERVAL 20 SECOND \
             WHERE message_id = 'kept'"
        ))
        .await;

    for slot in ["9999-01-01T00:00:00Z", &(chrono::Utc::now() + chrono::Duration::minutes(30)).to_rfc3339()] {
        let reply =
            app.send(api_request("POST", "/v1/jobs/cleanup/runs", &app.admin, Some(&json!({"slot": slot})))).await;
        assert_eq!((reply.status, reply.json["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));
        assert!(reply.json["message"].as_str().is_some_and(|m| m.contains("future")), "{}", reply.json);
    }
    // The ledger refuses it too (the command line, a crafted Scheduler input), by the
    // database's clock.
    let tomorrow = evtrack::jobs::Trigger::new(chrono::Utc::now() + chrono::Duration::days(1), "cli");
    let refused = app.jobs.run("cleanup", tomorrow).await.expect("a job");
    assert!(matches!(refused, Err(evtrack::jobs::JobError::FutureSlot { .. })), "{refused:?}");
    assert_eq!(app.db.count("job_runs").await, 0, "no run was made for a future slot");

    // 50 s ahead is within the skew: it runs, and its cut-offs are measured from now.
    let near = (chrono::Utc::now() + chrono::Duration::seconds(50)).to_rfc3339();
    let outcome = run_cleanup(&app, &near).await;
    assert_eq!(step_rows(&outcome, "purge_deleted_events").0, 0);
    assert_eq!(app.db.count("events WHERE message_id = 'kept'").await, 1, "not purged before its grace ended");
}

#[tokio::test]
async fn a_failed_cleanup_step_does_not_keep_the_later_steps_from_running_and_its_retry_runs_only_it() {
    let app = TestApp::new().await;
    // Past their retention at the slot: a rejected event (its step will fail) and an audit
    // record (a later step).
    app.db
        .execute(
            "INSERT INTO rejected_events (uid, project_id, queue_message_id, item_index, reason, raw, created_at)
             VALUES (UNHEX(REPLACE(UUID(), '-', '')), NULL, 'old', -1, 'old', 'raw', '2025-01-01')",
        )
        .await;
    app.db
        .execute(
            "INSERT INTO audit_log (uid, actor_key_uid, action, status, request_id, created_at)
             VALUES (UNHEX(REPLACE(UUID(), '-', '')), UNHEX(REPLACE(UUID(), '-', '')), 'test.old', 200, 'r', '2025-01-01')",
        )
        .await;
    // The cleanup user loses its right to prune rejected events.
    let (database, cleanup) = (app.db.name.clone(), app.db.user_of("cleanup"));
    app.db.execute(&format!("REVOKE DELETE ON `{database}`.`rejected_events` FROM '{cleanup}'@'%'")).await;
    let slot = json!({"slot": "2026-11-30T10:00:00Z"});
    let failed = app.send(api_request("POST", "/v1/jobs/cleanup/runs", &app.admin, Some(&slot))).await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY, "{}", failed.json);
    let runs = app.send(api_request("GET", "/v1/jobs/cleanup/runs", &app.admin, None)).await;
    let steps = runs.json["data"][0]["steps"].as_array().expect("steps").clone();
    let done: Vec<(&str, bool)> =
        steps.iter().map(|step| (step["name"].as_str().expect("name"), step["done"] == true)).collect();
    assert!(done.contains(&("prune_rejected_events", false)), "{done:?}");
    assert!(done.contains(&("prune_audit_log", true)), "the later steps ran: {done:?}");
    assert_eq!(app.db.count("audit_log WHERE action = 'test.old'").await, 0);
    assert_eq!(app.db.count("rejected_events").await, 1);

    // Given the right back, the retry of the slot runs the failed step only.
    app.db.execute(&format!("GRANT DELETE ON `{database}`.`rejected_events` TO '{cleanup}'@'%'")).await;
    let retried = run_cleanup(&app, "2026-11-30T10:00:00Z").await;
    assert_eq!(app.db.count("rejected_events").await, 0);
    let before = json!({"run": runs.json["data"][0]});
    assert_eq!(step_rows(&retried, "prune_audit_log"), step_rows(&before, "prune_audit_log"), "not run again");
}

#[tokio::test]
async fn rows_an_earlier_release_stored_without_their_hour_get_it_and_their_duplicates_go() {
    let app = TestApp::with(TestDb::new().await, &[("EVTRACK_CLEANUP_CHUNK_ROWS", "2")]).await;
    let at = "2026-11-20T10:15:00.000Z";
    let sent: Vec<Value> = ["twin", "alone-1", "alone-2", "alone-3"]
        .iter()
        .map(|id| json!({"type": "track", "event": "Tick", "userId": "u1", "messageId": id, "timestamp": at}))
        .collect();
    // Stored by a consumer of the release before migration 0008, which leaves the hour at 0;
    // the twin's message is delivered again, to this release, which stores it at its hour.
    assert_eq!(app.send(batch(&app.key, sent[1..].to_vec())).await.status, StatusCode::OK);
    let queued = app.take_queued().await;
    assert!(app.deliver(&queued).await.is_empty(), "stored");
    assert_eq!(app.send(batch(&app.key, sent[..1].to_vec())).await.status, StatusCode::OK);
    let twin = app.take_queued().await;
    assert!(app.deliver(&twin).await.is_empty(), "stored");
    run_job(&app, "rollups", &next_slot().await).await;
    let hour = (chrono::DateTime::parse_from_rfc3339(at).expect("time").timestamp() / 3600) as u32;
    let counted = "SELECT CAST(SUM(events) AS UNSIGNED) FROM rollup_event_hours WHERE name = 'Tick'";
    assert_eq!(app.db.query::<u64>(counted).await, vec![4]);
    app.db.execute("UPDATE events SET dedupe_hour = 0").await;
    assert!(app.deliver(&twin).await.is_empty(), "delivered again");
    assert_eq!(app.db.count("events WHERE dedupe_hour = 0").await, 4);
    assert_eq!(app.db.count("events WHERE message_id = 'twin'").await, 2, "stored twice");
    // The redelivery marked its hour: the rollups count both copies.
    run_job(&app, "rollups", &next_slot().await).await;
    assert_eq!(app.db.query::<u64>(counted).await, vec![5]);

    let outcome = run_cleanup(&app, &next_slot().await).await;
    let (rows, chunks) = step_rows(&outcome, "dedupe_hours");
    // Two rows a chunk, by id: the twin stored at 0 is the oldest row its update meets with
    // its hour taken (left at 0 by UPDATE IGNORE), then deleted.
    assert_eq!(rows, 4, "three given their hour, one duplicate deleted: {outcome}");
    assert!(chunks >= 2, "two rows a chunk: {chunks}");
    let hours: Vec<(String, u32)> =
        app.db.query("SELECT message_id, dedupe_hour FROM events ORDER BY message_id").await;
    let expected: Vec<(String, u32)> =
        ["alone-1", "alone-2", "alone-3", "twin"].iter().map(|id| (id.to_string(), hour)).collect();
    assert_eq!(hours, expected, "each event once, at its hour");

    // Its delete marked the hour: counted again without it.
    run_job(&app, "rollups", &next_slot().await).await;
    assert_eq!(app.db.query::<u64>(counted).await, vec![4]);
    // A retry of an event the earlier release stored is now a no-op.
    assert_eq!(app.send(batch(&app.key, sent[1..2].to_vec())).await.status, StatusCode::OK);
    let queued = app.take_queued().await;
    assert!(app.deliver(&queued).await.is_empty(), "delivered");
    assert_eq!(app.db.count("events WHERE message_id = 'alone-1'").await, 1);
}

/// A slot after everything done so far (slots are whole seconds, a job runs once per slot,
/// and the rollups job takes the hours marked before its slot).
async fn next_slot() -> String {
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test]
async fn a_link_that_arrives_after_its_users_erasure_joins_it_where_the_link_rules_make_the_id_the_users() {
    let app = TestApp::new().await;
    let track = |anonymous: &str, id: &str| json!({"type": "track", "event": "Opened", "anonymousId": anonymous, "messageId": id});
    let identify = |user: &str, anonymous: &str, id: &str| json!({"type": "identify", "userId": user, "anonymousId": anonymous, "messageId": id});
    let deliver = |events: Vec<Value>| async {
        assert_eq!(app.send(batch(&app.key, events)).await.status, StatusCode::OK);
        let queued = app.take_queued().await;
        assert!(app.deliver(&queued).await.is_empty(), "stored");
        queued
    };
    let noted = || app.db.query::<String>("SELECT late_id FROM erasure_late_links ORDER BY late_id");
    deliver(vec![
        identify("u1", "web-1", "b1"),
        json!({"type": "track", "event": "Bought", "userId": "u1", "messageId": "b2"}),
        // Ids the link rules keep from u1: one linked first to u2, one with a profile of its
        // own, one whose events all carry another user's id, and a user id that alias names.
        identify("u2", "theirs", "b3"),
        track("theirs", "b4"),
        json!({"type": "identify", "userId": "known", "messageId": "b5"}),
        track("known", "b6"),
        json!({"type": "track", "event": "Opened", "userId": "u3", "anonymousId": "shared", "messageId": "b7"}),
        json!({"type": "track", "event": "Opened", "userId": "alice", "messageId": "b8"}),
    ])
    .await;
    let path = format!("/v1/users/u1?project={}", app.project);
    let reply = app.send(api_request("DELETE", &path, &app.admin, None)).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.json);
    let audit_path = format!("/v1/erasures/{}", reply.json["id"].as_str().expect("erasure id"));
    run_cleanup(&app, "2026-11-26T10:00:00Z").await;
    let audit = app.send(api_request("GET", &audit_path, &app.admin, None)).await.json;
    assert_eq!((audit["status"].as_str(), audit["ids"].as_u64()), (Some("done"), Some(2)), "{audit}");

    // A phone that was offline comes back: its anonymous events, then the identify of the
    // erased user; and links of u1 to ids that are not its own, and to a made-up id.
    let phone = deliver(vec![
        track("phone", "p1"),
        track("phone", "p2"),
        identify("u1", "phone", "p3"),
        json!({"type": "track", "event": "Opened", "userId": "u1", "anonymousId": "phone", "messageId": "p4"}),
        identify("u1", "theirs", "p5"),
        identify("u1", "known", "p6"),
        identify("u1", "shared", "p7"),
        identify("u1", "made-up", "p8"),
        json!({"type": "alias", "userId": "u1", "previousId": "alice", "messageId": "p9"}),
        // A tablet whose identify comes before its anonymous events (SQS keeps no order).
        identify("u1", "tablet", "p10"),
    ])
    .await;
    assert_eq!(app.db.count("events WHERE anonymous_id = 'phone'").await, 2, "the anonymous events landed");
    assert_eq!(app.db.count("events WHERE user_id = 'u1'").await, 0, "the erased user's did not");
    let all_noted = ["known", "made-up", "phone", "shared", "tablet", "theirs"];
    assert_eq!(noted().await, all_noted, "identify's anonymous ids, not alias's previousId");
    assert!(app.deliver(&phone).await.is_empty(), "delivered again");
    assert_eq!(noted().await, all_noted, "noted once");
    assert_eq!(app.db.count("erasure_late_links WHERE LOCATE('u1', late_id) > 0").await, 0);

    let outcome = run_cleanup(&app, "2026-11-26T11:00:00Z").await;
    assert_eq!(step_rows(&outcome, "late_links").0, 6, "{outcome}");
    assert_eq!(app.db.count("events WHERE anonymous_id = 'phone'").await, 0, "the phone's events are erased");
    let kept = "events WHERE anonymous_id IN ('theirs', 'known', 'shared') OR user_id = 'alice'";
    assert_eq!(app.db.count(kept).await, 5, "the others' stay (b3, b4, b6, b7, b8)");
    let audit = app.send(api_request("GET", &audit_path, &app.admin, None)).await.json;
    assert_eq!((audit["status"].as_str(), audit["ids"].as_u64()), (Some("done"), Some(3)), "{audit}");
    assert_eq!(audit["events_deleted"], 4, "two of u1 and two of the phone: {audit}");
    // Ids holding no anonymous events (yet) wait for them; the others are settled.
    assert_eq!(noted().await, ["made-up", "shared", "tablet"]);

    // What the phone sends later is dropped, also as a user id linking on (no chain: the
    // phone's id is not an erasure's own user id).
    deliver(vec![track("phone", "p11"), identify("phone", "phone-2", "p12"), track("phone-2", "p13")]).await;
    assert_eq!(rows_holding(&app, "phone").await, 1, "only phone-2's own event");
    assert_eq!(app.db.count("events WHERE anonymous_id = 'phone-2'").await, 1);

    // The tablet's anonymous events arrive; a later run finds them and erases them.
    deliver(vec![track("tablet", "t1"), track("tablet", "t2")]).await;
    app.db.execute("UPDATE erasure_late_links SET checked_at = checked_at - INTERVAL 1 HOUR").await;
    let outcome = run_cleanup(&app, "2026-11-26T12:00:00Z").await;
    assert!(step_rows(&outcome, "late_links").0 >= 3, "{outcome}");
    assert_eq!(app.db.count("events WHERE anonymous_id IN ('tablet', 'phone-2')").await, 1, "phone-2's stays");
    assert_eq!(noted().await, ["made-up", "shared"]);
    let audit = app.send(api_request("GET", &audit_path, &app.admin, None)).await.json;
    assert_eq!((audit["ids"].as_u64(), audit["events_deleted"].as_u64()), (Some(4), Some(6)), "{audit}");

    // A consumer whose user lacks the new grant stores the batch and only logs the link.
    let (database, consumer) = (app.db.name.clone(), app.db.user_of("consumer"));
    app.db.execute(&format!("REVOKE INSERT ON `{database}`.`erasure_late_links` FROM '{consumer}'@'%'")).await;
    deliver(vec![track("watch", "w1"), identify("u1", "watch", "w2")]).await;
    assert_eq!(app.db.count("events WHERE anonymous_id = 'watch'").await, 1);
    assert_eq!(noted().await, ["made-up", "shared"]);
}

#[tokio::test]
async fn an_erasure_covers_the_id_with_trailing_spaces_as_the_database_compares_them() {
    let app = TestApp::new().await;
    let track = |user: &str, id: &str| json!({"type": "track", "event": "Opened", "userId": user, "messageId": id});
    let stored = vec![
        track("pad", "s1"),
        track("pad  ", "s2"),
        // Quarantined: a track without its event name.
        json!({"type": "track", "userId": "pad ", "messageId": "s3"}),
    ];
    assert_eq!(app.send(batch(&app.key, stored)).await.status, StatusCode::OK);
    assert!(app.consume_queued().await.is_empty());
    assert_eq!(app.db.count("events").await, 2);
    assert_eq!(app.db.count("rejected_events").await, 1);
    // An export of `pad` holds both, as the erasure deletes both.
    let request = api_request("GET", &format!("/v1/users/pad/export?project={}", app.project), &app.admin, None);
    let response = tower::ServiceExt::oneshot(app.router.clone(), request).await.expect("export");
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
    let lines: Vec<Value> =
        String::from_utf8_lossy(&body).lines().map(|line| serde_json::from_str(line).expect("json")).collect();
    let exported: Vec<&str> =
        lines.iter().filter(|l| l["type"] == "event").filter_map(|l| l["event"]["messageId"].as_str()).collect();
    assert_eq!(exported.len(), 2, "{exported:?}");
    assert_eq!(lines.last().expect("end"), &json!({"type": "end", "events": 2}));

    let path = format!("/v1/users/pad?project={}", app.project);
    assert_eq!(app.send(api_request("DELETE", &path, &app.admin, None)).await.status, StatusCode::ACCEPTED);
    run_cleanup(&app, "2026-11-26T10:00:00Z").await;
    assert_eq!(app.db.count("events").await, 0);
    assert_eq!(app.db.count("rejected_events").await, 0, "the quarantined event naming `pad `");
    // Suppressed too: the database would have erased its rows as `pad`'s; also with both
    // forms in one batch (they share a hash).
    for n in 0..5 {
        let both = vec![
            json!({"type": "identify", "userId": "pad", "anonymousId": "pad-phone", "messageId": format!("i{n}")}),
            track("pad ", &format!("t{n}")),
            track("pad   ", &format!("u{n}")),
        ];
        assert_eq!(app.send(batch(&app.key, both)).await.status, StatusCode::OK);
        assert!(app.consume_queued().await.is_empty());
    }
    assert_eq!(app.db.count("events").await, 0);
    assert_eq!(app.db.count("users").await + app.db.count("aliases").await, 0);
}

#[tokio::test]
async fn made_up_links_to_an_erased_user_do_not_keep_a_real_one_out() {
    let app = TestApp::new().await;
    let identify = |anonymous: &str, id: &str| json!({"type": "identify", "userId": "u1", "anonymousId": anonymous, "messageId": id});
    let deliver = |events: Vec<Value>| async {
        assert_eq!(app.send(batch(&app.key, events)).await.status, StatusCode::OK);
        assert!(app.consume_queued().await.is_empty());
    };
    deliver(vec![identify("web", "w1")]).await;
    let path = format!("/v1/users/u1?project={}", app.project);
    assert_eq!(app.send(api_request("DELETE", &path, &app.admin, None)).await.status, StatusCode::ACCEPTED);
    run_cleanup(&app, "2026-11-26T10:00:00Z").await;
    // A sender knowing the erased id links 1,000 made-up ids to it: as many as one erased user
    // may have waiting. They wait (no events); one more is not noted until they are looked at.
    for part in 0..2 {
        deliver((0..500).map(|n| identify(&format!("fake-{part}-{n}"), &format!("f{part}-{n}"))).collect()).await;
    }
    deliver(vec![identify("fake-over", "f-over")]).await;
    assert_eq!(app.db.count("erasure_late_links").await, 1_000, "capped");
    run_cleanup(&app, "2026-11-26T11:00:00Z").await;
    assert_eq!(app.db.count("erasure_late_links WHERE checked_at IS NOT NULL").await, 1_000, "waiting");

    // The real phone's link is still noted, and joins.
    deliver(vec![
        json!({"type": "track", "event": "Opened", "anonymousId": "phone", "messageId": "p1"}),
        identify("phone", "p2"),
    ])
    .await;
    run_cleanup(&app, "2026-11-26T12:00:00Z").await;
    assert_eq!(app.db.count("events WHERE anonymous_id = 'phone'").await, 0, "erased");
    // A made-up id beyond the waiting cap is dropped when looked at.
    app.db.execute("UPDATE erasure_late_links SET checked_at = NULL WHERE late_id = 'fake-0-0'").await;
    app.db.execute("DELETE FROM erasure_late_links WHERE late_id = 'fake-0-1'").await;
    deliver(vec![identify("fake-more", "f-more-1"), identify("fake-more-2", "f-more-2")]).await;
    run_cleanup(&app, "2026-11-26T13:00:00Z").await;
    assert_eq!(app.db.count("erasure_late_links").await, 1_000, "at most 1,000 wait");
}

#[tokio::test]
async fn an_erasure_in_progress_hides_only_what_it_deletes() {
    let app = TestApp::new().await;
    let at = "2026-11-20T10:15:00.000Z";
    let events = vec![
        json!({"type": "identify", "userId": "alice", "anonymousId": "shared-device", "messageId": "a1", "timestamp": at}),
        json!({"type": "track", "event": "Gone", "userId": "alice", "messageId": "a2", "timestamp": at}),
        // Another person on the same device: their event, not alice's.
        json!({"type": "track", "event": "Kept", "userId": "bob", "anonymousId": "shared-device", "messageId": "b1", "timestamp": at}),
    ];
    assert_eq!(app.send(batch(&app.key, events)).await.status, StatusCode::OK);
    assert!(app.consume_queued().await.is_empty());
    let path = format!("/v1/users/alice?project={}", app.project);
    assert_eq!(app.send(api_request("DELETE", &path, &app.admin, None)).await.status, StatusCode::ACCEPTED);

    // While the erasure is pending: bob's event is listed and counted by the rollups.
    let list = app.send(api_request("GET", &format!("/v1/events?project={}", app.project), &app.admin, None)).await;
    let names: Vec<&str> =
        list.json["data"].as_array().expect("data").iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(names, ["Kept"], "{}", list.json);
    run_job(&app, "rollups", &next_slot().await).await;
    let counted = |name: &str| {
        format!("SELECT CAST(COALESCE(SUM(events), 0) AS UNSIGNED) FROM rollup_event_hours WHERE name = '{name}'")
    };
    assert_eq!(app.db.query::<u64>(&counted("Kept")).await, vec![1]);

    // Once done, the same: what it hid is what it deleted.
    run_cleanup(&app, &next_slot().await).await;
    run_job(&app, "rollups", &next_slot().await).await;
    assert_eq!(app.db.query::<u64>(&counted("Kept")).await, vec![1]);
    assert_eq!(app.db.query::<u64>(&counted("Gone")).await, vec![0]);
    assert_eq!(app.db.count("events WHERE user_id = 'bob'").await, 1);
}
