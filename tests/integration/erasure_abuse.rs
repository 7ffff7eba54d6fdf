//! Erasure and export under attack: links planted by a write key (alias poisoning), a user
//! with 100,000 linked ids in a project with 100,000 suppressions, and an erasure that keeps
//! failing — against real MariaDB.

use crate::lifecycle::{batch, rows_holding, run_cleanup, step_rows};
use evtrack::queue::local::QueuedMessage;
use evtrack::store::MAX_LINKS_PER_USER;
use evtrack_tests::{TestApp, api_request};
use http::StatusCode;
use serde_json::{Value, json};
use std::time::Instant;

async fn send_and_store(app: &TestApp, key: &str, messages: Vec<Value>) {
    let reply = app.send(batch(key, messages)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert!(app.consume_queued().await.is_empty(), "every message stored");
}

/// The export's lines for `user` of the app's project.
async fn export(app: &TestApp, user: &str) -> Vec<Value> {
    let path = format!("/v1/users/{user}/export?project={}", app.project);
    let request = api_request("GET", &path, &app.admin, None);
    let response = tower::ServiceExt::oneshot(app.router.clone(), request).await.expect("export");
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
    String::from_utf8_lossy(&body).lines().map(|line| serde_json::from_str(line).expect("NDJSON line")).collect()
}

fn exported_message_ids(lines: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = lines
        .iter()
        .filter(|line| line["type"] == "event")
        .map(|line| line["event"]["messageId"].as_str().expect("messageId").to_string())
        .collect();
    ids.sort();
    ids
}

async fn request_erasure(app: &TestApp, user: &str) -> Value {
    let path = format!("/v1/users/{user}?project={}", app.project);
    let reply = app.send(api_request("DELETE", &path, &app.admin, None)).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.json);
    reply.json
}

async fn erasure(app: &TestApp, id: &Value) -> Value {
    let path = format!("/v1/erasures/{}", id.as_str().expect("erasure id"));
    app.send(api_request("GET", &path, &app.admin, None)).await.json
}

async fn project_row_id(app: &TestApp) -> u64 {
    app.db.query(&format!("SELECT id FROM projects WHERE uid = UNHEX('{}')", app.project.simple())).await[0]
}

#[tokio::test]
async fn alias_poisoning_neither_exports_nor_erases_another_persons_events() {
    let app = TestApp::new().await;
    // The victim: a device id, then a login on it, a purchase, a group.
    let victim = vec![
        json!({"type": "page", "anonymousId": "victim-device", "name": "Home", "messageId": "v1"}),
        json!({"type": "identify", "userId": "victim", "anonymousId": "victim-device", "traits": {"email": "v@example.com"}, "messageId": "v2"}),
        json!({"type": "track", "userId": "victim", "anonymousId": "victim-device", "event": "Paid", "messageId": "v3"}),
        json!({"type": "group", "userId": "victim", "groupId": "victim-co", "messageId": "v4"}),
    ];
    send_and_store(&app, &app.key, victim).await;
    // The attacker, with the same browser write key, claims the victim's device id and user
    // id for "me", by identify and by alias.
    let attack = vec![
        json!({"type": "identify", "userId": "me", "anonymousId": "victim-device", "messageId": "m1"}),
        json!({"type": "identify", "userId": "me", "anonymousId": "victim", "messageId": "m2"}),
        json!({"type": "alias", "userId": "me", "previousId": "victim", "messageId": "m3"}),
        json!({"type": "track", "userId": "me", "event": "Mine", "messageId": "m4"}),
    ];
    send_and_store(&app, &app.key, attack).await;

    // The export of "me" holds only the attacker's own events and no link to the victim.
    let lines = export(&app, "me").await;
    assert_eq!(lines[1]["ids"], json!([]), "{lines:?}");
    assert_eq!(exported_message_ids(&lines), ["m1", "m2", "m3", "m4"]);
    // The victim's own export is whole.
    let theirs = export(&app, "victim").await;
    assert_eq!(theirs[1]["ids"], json!(["victim-device"]));
    let victims: Vec<String> = exported_message_ids(&theirs).into_iter().filter(|id| id.starts_with('v')).collect();
    assert_eq!(victims, ["v1", "v2", "v3", "v4"]);

    // The erasure of "me" deletes the attacker's rows and nothing of the victim's.
    let requested = request_erasure(&app, "me").await;
    assert_eq!(requested["ids"], 1, "{requested}");
    run_cleanup(&app, "2026-11-30T10:00:00Z").await;
    assert_eq!(erasure(&app, &requested["id"]).await["status"], "done");
    assert_eq!(app.db.count("events WHERE message_id LIKE 'm%'").await, 0);
    assert_eq!(app.db.count("events WHERE message_id LIKE 'v%'").await, 4, "the victim's events stay");
    assert_eq!(app.db.count("users WHERE user_id = 'victim'").await, 1);
    assert_eq!(app.db.count("aliases WHERE alias = 'victim-device' AND user_id = 'victim'").await, 1);
    assert_eq!(app.db.count("group_members WHERE member_id = 'victim'").await, 1);
    // And the victim's ids are not suppressed: their next events are stored.
    let later = vec![
        json!({"type": "track", "userId": "victim", "event": "Again", "messageId": "v5"}),
        json!({"type": "page", "anonymousId": "victim-device", "name": "Again", "messageId": "v6"}),
    ];
    send_and_store(&app, &app.key, later).await;
    assert_eq!(app.db.count("events WHERE message_id IN ('v5', 'v6')").await, 2);
}

#[tokio::test]
async fn erasure_and_export_follow_legitimate_links_over_several_hops_into_every_table() {
    let app = TestApp::new().await;
    // A device aliased to a first user id, that id aliased to a second, which identifies;
    // an anonymous group call, the user's own group, and a message refused whole (no
    // project) that names the device id.
    let messages = vec![
        json!({"type": "page", "anonymousId": "hop-device", "name": "Home", "messageId": "h1"}),
        json!({"type": "alias", "previousId": "hop-device", "userId": "hop-u1", "messageId": "h2"}),
        json!({"type": "track", "userId": "hop-u1", "event": "Trial", "messageId": "h3"}),
        json!({"type": "alias", "previousId": "hop-u1", "userId": "hop-u2", "messageId": "h4"}),
        json!({"type": "identify", "userId": "hop-u2", "traits": {"plan": "pro"}, "messageId": "h5"}),
        json!({"type": "group", "anonymousId": "hop-device", "groupId": "acme", "messageId": "h6"}),
        json!({"type": "group", "userId": "hop-u2", "groupId": "hop-u2", "traits": {"name": "personal"}, "messageId": "h7"}),
        json!({"type": "track", "userId": "bystander", "event": "Kept", "messageId": "b1"}),
    ];
    send_and_store(&app, &app.key, messages).await;
    let refused = json!({"events": [{"type": "track", "anonymousId": "hop-device"}]});
    app.deliver(&[QueuedMessage { id: "refused-1".into(), body: refused.to_string(), receive_count: 1 }]).await;
    assert_eq!(app.db.count("rejected_events WHERE project_id IS NULL AND LOCATE('hop-device', raw) > 0").await, 1);

    let lines = export(&app, "hop-u2").await;
    assert_eq!(lines[1]["ids"], json!(["hop-u1", "hop-device"]), "two hops back");
    assert_eq!(lines[2]["groupIds"], json!(["acme", "hop-u2"]));
    assert_eq!(exported_message_ids(&lines), ["h1", "h2", "h3", "h4", "h5", "h6", "h7"]);

    let requested = request_erasure(&app, "hop-u2").await;
    assert_eq!(requested["ids"], 3);
    run_cleanup(&app, "2026-11-30T10:00:00Z").await;
    let done = erasure(&app, &requested["id"]).await;
    assert_eq!(done["status"], "done", "{done}");
    // The user's own group, and `acme`, which only the device's call without traits named.
    assert_eq!((done["events_deleted"].as_u64(), done["group_profiles_deleted"].as_u64()), (Some(7), Some(2)));
    for id in ["hop-u2", "hop-u1", "hop-device"] {
        assert_eq!(rows_holding(&app, id).await, 0, "{id}");
    }
    assert_eq!(app.db.count("group_profiles WHERE group_id IN ('hop-u2', 'acme')").await, 0);
    assert_eq!(app.db.count("events WHERE message_id = 'b1'").await, 1, "others untouched");
}

#[tokio::test]
async fn a_write_key_cannot_block_erasure_or_cleanup_with_100k_linked_ids_and_100k_suppressions() {
    let app = TestApp::new().await;
    let project = project_row_id(&app).await;
    // 100,000 ids linked to one user (what identify calls with fresh anonymousIds made
    // before the link cap), 2,000 of them with an anonymous event; 100,000 suppressions
    // left by earlier erasures.
    app.db
        .execute(&format!(
            "INSERT INTO aliases (uid, project_id, alias, user_id, source)
             SELECT UNHEX(REPLACE(UUID(), '-', '')), {project}, CONCAT('dev-', seq), 'big-user', 'identify'
             FROM seq_1_to_100000"
        ))
        .await;
    app.db
        .execute(&format!(
            "INSERT INTO events (uid, project_id, message_id, type, name, anonymous_id, timestamp, received_at)
             SELECT UNHEX(REPLACE(UUID(), '-', '')), {project}, CONCAT('big-', seq), 'track', 'Seen',
                    CONCAT('dev-', seq * 50), NOW(3), NOW(3)
             FROM seq_1_to_2000"
        ))
        .await;
    app.db
        .execute(&format!(
            "INSERT INTO suppressed_subjects (project_id, subject_hash)
             SELECT {project}, UNHEX(SHA2(CONCAT('earlier-', seq), 256)) FROM seq_1_to_100000"
        ))
        .await;
    // Past the cap, a new link is not recorded; the event itself is stored.
    send_and_store(
        &app,
        &app.key,
        vec![
            json!({"type": "identify", "userId": "big-user", "anonymousId": "dev-1", "messageId": "known-link"}),
            json!({"type": "identify", "userId": "big-user", "anonymousId": "one-more-device", "messageId": "new-link"}),
            json!({"type": "track", "userId": "big-user", "event": "Own", "messageId": "own"}),
        ],
    )
    .await;
    assert_eq!(app.db.count("aliases WHERE user_id = 'big-user'").await, 100_000, "cap {MAX_LINKS_PER_USER}");
    assert_eq!(app.db.count("aliases WHERE alias = 'one-more-device'").await, 0);
    assert_eq!(app.db.count("events WHERE message_id IN ('known-link', 'new-link', 'own')").await, 3);

    // The export of all of it streams to its end.
    let started = Instant::now();
    let lines = export(&app, "big-user").await;
    let export_time = started.elapsed();
    assert_eq!(lines[1]["ids"].as_array().map(Vec::len), Some(100_000));
    assert_eq!(lines.last().expect("end line")["events"], 2_003, "complete, not cut");

    let started = Instant::now();
    let requested = request_erasure(&app, "big-user").await;
    let request_time = started.elapsed();
    assert_eq!(requested["ids"], 100_001, "{requested}");
    assert!(app.db.count(&format!("suppressed_subjects WHERE project_id = {project}")).await >= 200_001);

    // The consumer looks up only its batch's ids among 200,001 suppressions: another user's
    // events are stored, a linked id's are dropped.
    let after = vec![
        json!({"type": "track", "userId": "someone-else", "event": "Kept", "messageId": "kept"}),
        json!({"type": "track", "anonymousId": "dev-77777", "event": "Dropped", "messageId": "dropped"}),
    ];
    send_and_store(&app, &app.key, after).await;
    assert_eq!(app.db.count("events WHERE message_id IN ('kept', 'dropped')").await, 1);

    let started = Instant::now();
    let outcome = run_cleanup(&app, "2026-11-30T10:00:00Z").await;
    let cleanup_time = started.elapsed();
    let done = erasure(&app, &requested["id"]).await;
    assert_eq!((done["status"].as_str(), done["ids_remaining"].as_u64()), (Some("done"), Some(0)), "{done}");
    assert_eq!(done["events_deleted"], 2_003);
    assert_eq!(done["aliases_deleted"], 100_000);
    assert_eq!(app.db.count("events WHERE anonymous_id LIKE 'dev-%' OR user_id = 'big-user'").await, 0);
    assert_eq!(app.db.count("erasure_subjects").await, 0);
    // Bounded work: a chunk per slice of 500 ids, plus one per 5,000 rows deleted, plus the
    // pass over rejected events, the completion and the end of the step.
    let (rows, chunks) = step_rows(&outcome, "erasures");
    assert_eq!(rows, 2_003 + 100_000 + 1, "events, links, the profile");
    assert!(chunks <= 100_001u64.div_ceil(500) + rows.div_ceil(5_000) + 3, "{chunks} chunks");
    println!(
        "100,001 ids: export {:.1} s, erasure request {:.1} s, cleanup {:.1} s in {chunks} chunks",
        export_time.as_secs_f64(),
        request_time.as_secs_f64(),
        cleanup_time.as_secs_f64()
    );
}

#[tokio::test]
async fn a_failing_erasure_is_retried_and_reported_and_stops_neither_later_erasures_nor_other_steps() {
    let app = TestApp::new().await;
    send_and_store(
        &app,
        &app.key,
        vec![
            json!({"type": "track", "userId": "cursed", "event": "A", "messageId": "c1"}),
            json!({"type": "track", "userId": "fine", "event": "B", "messageId": "f1"}),
            json!({"type": "track", "userId": "deleted-long-ago", "event": "C", "messageId": "d1"}),
        ],
    )
    .await;
    // Soft-deleted long before the slot: the purge step must still run.
    app.db.execute("UPDATE events SET deleted_at = '2026-09-01' WHERE message_id = 'd1'").await;
    // The database refuses to delete the first user's events (as a corrupt page or a
    // statement timeout would, every time).
    app.db
        .execute(
            "CREATE TRIGGER refuse_cursed BEFORE DELETE ON events FOR EACH ROW
             BEGIN
               IF OLD.user_id = 'cursed' THEN
                 SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the test trigger';
               END IF;
             END",
        )
        .await;
    let cursed = request_erasure(&app, "cursed").await;
    let fine = request_erasure(&app, "fine").await;

    let outcome = run_cleanup(&app, "2026-11-30T10:00:00Z").await;
    let steps = outcome["run"]["steps"].as_array().expect("steps");
    assert!(steps.iter().all(|step| step["done"] == true), "{outcome}");
    let failed = erasure(&app, &cursed["id"]).await;
    assert_eq!((failed["status"].as_str(), failed["attempts_failed"].as_u64()), (Some("pending"), Some(1)));
    assert!(failed["last_error"].as_str().is_some_and(|error| error.contains("refused by the test trigger")));
    assert_eq!(erasure(&app, &fine["id"]).await["status"], "done", "a later erasure is not held up");
    assert_eq!(app.db.count("events WHERE message_id IN ('f1', 'd1')").await, 0, "erasure and purge ran");
    assert_eq!(app.db.count("events WHERE message_id = 'c1'").await, 1);

    // Fixed: the next run erases it.
    app.db.execute("DROP TRIGGER refuse_cursed").await;
    run_cleanup(&app, "2026-11-30T11:00:00Z").await;
    let retried = erasure(&app, &cursed["id"]).await;
    assert_eq!((retried["status"].as_str(), retried["last_error"].as_str()), (Some("done"), None), "{retried}");
    assert_eq!(app.db.count("events WHERE message_id = 'c1'").await, 0);
}

#[tokio::test]
async fn an_erasure_requested_by_the_previous_release_is_still_carried_out() {
    let app = TestApp::new().await;
    let project = project_row_id(&app).await;
    send_and_store(
        &app,
        &app.key,
        vec![
            json!({"type": "track", "userId": "old-request", "event": "A", "messageId": "o1"}),
            json!({"type": "page", "anonymousId": "old-device", "name": "Home", "messageId": "o2"}),
        ],
    )
    .await;
    // As the release before erasure ids were rows wrote it: the ids only in the request row.
    app.db
        .execute(&format!(
            "INSERT INTO erasures (uid, project_id, subject_hash, user_id, linked_ids)
             VALUES (UNHEX(REPLACE(UUID(), '-', '')), {project}, UNHEX(SHA2('x', 256)), 'old-request', '[\"old-device\"]')"
        ))
        .await;
    run_cleanup(&app, "2026-11-30T10:00:00Z").await;
    assert_eq!(app.db.count("events").await, 0, "both ids erased");
    let row: Vec<(String, Option<String>, u64)> =
        app.db.query("SELECT state, user_id, events_deleted FROM erasures").await;
    assert_eq!(row, vec![("done".to_string(), None, 2)]);
}

/// An erasure of more ids than one chunk takes (500): a workspace named by an id of the first
/// chunk whose other member is an id of a later one goes too, since no one outside the
/// erasure is in it, and so does a group without traits that only the ids joined; a group
/// with a member outside the erasure stays, and so does a typed twin (PostHog's company of
/// the same key as a Segment group) with traits and a bystander.
#[tokio::test]
async fn an_erasure_over_several_chunks_deletes_a_workspace_whose_members_are_all_erased() {
    let app = TestApp::new().await;
    // User `a` with 600 devices; `a` names a workspace that its last device (in the second
    // chunk, by id order) joined too, and a team with a bystander.
    let mut messages: Vec<Value> = (0..600)
        .map(|n| json!({"type": "identify", "userId": "a", "anonymousId": format!("b-{n:03}"), "messageId": format!("i{n}")}))
        .collect();
    messages.extend([
        json!({"type": "group", "userId": "a", "groupId": "a", "traits": {"owner": "a@example.com"}, "messageId": "g1"}),
        json!({"type": "group", "anonymousId": "b-599", "groupId": "a", "messageId": "g2"}),
        json!({"type": "group", "anonymousId": "b-599", "groupId": "b-599", "messageId": "g3"}),
        json!({"type": "group", "userId": "bystander", "groupId": "b-599", "messageId": "g4"}),
        // As analytics-next sends a group call without traits.
        json!({"type": "group", "anonymousId": "b-000", "groupId": "a-example-com", "traits": {}, "messageId": "g5"}),
        json!({"type": "group", "anonymousId": "b-599", "groupId": "a-example-com", "messageId": "g6"}),
        json!({"type": "group", "userId": "a", "groupId": "shared", "messageId": "g7"}),
        json!({"type": "group", "userId": "bystander", "groupId": "shared", "messageId": "g8"}),
        // Segment's acme, without traits; PostHog's company acme (below) is its typed twin.
        json!({"type": "group", "anonymousId": "b-001", "groupId": "acme", "messageId": "g9"}),
    ]);
    send_and_store(&app, &app.key, messages).await;
    // b-599 names PostHog's workspace of that key too, twice: the second batch reads its
    // membership as stored, and the consumer keeps it in memory.
    let named_by = |id: &str, uuid: &str| json!({"event": "clicked", "distinct_id": id, "uuid": uuid, "properties": {"$groups": {"workspace": "a-example-com"}}});
    let posthog = |events: Vec<Value>| app.store_posthog(Value::from(events));
    for uuid in ["0193a000-0000-7000-8000-000000000001", "0193a000-0000-7000-8000-000000000002"] {
        posthog(vec![named_by("b-599", uuid)]).await;
    }
    assert_eq!(app.db.count("group_members WHERE group_type = 'workspace' AND member_id = 'b-599'").await, 1);
    let in_company = |id: &str, uuid: &str| json!({"event": "clicked", "distinct_id": id, "uuid": uuid, "properties": {"$groups": {"company": "acme"}}});
    posthog(vec![
        in_company("b-001", "0193a000-0000-7000-8000-000000000003"),
        in_company("bystander", "0193a000-0000-7000-8000-000000000004"),
        json!({"event": "$groupidentify", "distinct_id": "$company_acme", "uuid": "0193a000-0000-7000-8000-000000000005",
               "properties": {"$group_type": "company", "$group_key": "acme", "$group_set": {"plan": "pro"}}}),
    ])
    .await;
    assert_eq!(app.db.count("group_profiles WHERE group_id = 'acme'").await, 2, "the twins");
    let requested = request_erasure(&app, "a").await;
    assert_eq!(requested["ids"], 601, "{requested}");
    run_cleanup(&app, "2026-11-30T10:00:00Z").await;
    let done = erasure(&app, &requested["id"]).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(app.db.count("group_profiles WHERE group_id = 'a'").await, 0, "the workspace goes");
    // Segment's a-example-com and PostHog's workspace of that key.
    assert_eq!(app.db.count("group_profiles WHERE group_id = 'a-example-com'").await, 0, "named by them alone");
    assert_eq!(app.db.count("group_profiles WHERE group_id IN ('b-599', 'shared')").await, 2, "the bystander's");
    // The erased id's traitless acme goes; its typed twin, with traits and the bystander, stays.
    let acme: Vec<(String, String)> = app
        .db
        .query("SELECT group_type, JSON_EXTRACT(traits, '$.plan') FROM group_profiles WHERE group_id = 'acme'")
        .await;
    assert_eq!(acme, [("company".to_string(), "\"pro\"".to_string())]);
    let members: Vec<(String, String)> = app
        .db
        .query("SELECT group_id, group_type FROM group_members WHERE member_id = 'bystander' ORDER BY 1, 2")
        .await;
    let expected =
        [("acme", "company"), ("b-599", ""), ("shared", "")].map(|(id, kind)| (id.to_string(), kind.to_string()));
    assert_eq!(members, expected);
    assert_eq!(app.db.count("group_members").await, 3, "the bystander's memberships alone");

    // The consumer still holds the erased id's membership as known, but never looks it up: the
    // erased id's events are left out first. A newcomer's PostHog event naming the group (not
    // known) makes it again.
    posthog(vec![
        named_by("newcomer", "0193a000-0000-7000-8000-000000000009"),
        named_by("b-599", "0193a000-0000-7000-8000-000000000010"),
    ])
    .await;
    assert_eq!(app.db.count("group_profiles WHERE group_id = 'a-example-com'").await, 1);
    let members: Vec<String> =
        app.db.query("SELECT member_id FROM group_members WHERE group_id = 'a-example-com'").await;
    assert_eq!(members, ["newcomer"]);
}
