//! The operator commands and the migration runner, as an operator uses them.

use evtrack::store::migrations::{MIGRATIONS, Migration};
use evtrack_tests::*;
use http::StatusCode;
use mysql_async::prelude::Queryable;
use serde_json::{Value, json};
use std::process::Command;

fn evtrack(db: &TestDb, args: &[&str]) -> Value {
    let output = Command::new(workspace_binary("evtrack"))
        .args(args)
        .env("EVTRACK_DATABASE_URL", db.url.expose())
        .output()
        .expect("evtrack runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "evtrack {args:?}: {stdout} {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(&stdout).unwrap_or_else(|err| panic!("evtrack {args:?} printed no JSON ({err}): {stdout}"))
}

#[tokio::test]
async fn project_and_key_commands_print_json_and_the_key_works() {
    let app = TestApp::new().await;
    let project = evtrack(&app.db, &["project", "create", "--name", "Web shop", "--json"]);
    assert_eq!(project["name"], "Web shop");
    let project_id = project["id"].as_str().expect("project id").to_string();
    let listed = evtrack(&app.db, &["project", "list", "--json"]);
    assert!(listed["projects"].as_array().expect("projects").iter().any(|p| p["id"] == project["id"]));

    let key = evtrack(&app.db, &["key", "create", "--project", &project_id, "--name", "server", "--json"]);
    assert_eq!((key["scope"].as_str(), key["project"].as_str()), (Some("write"), Some(project_id.as_str())));
    assert!(key["expires_at"].is_string(), "keys expire by default: {key}");
    let plaintext = key["key"].as_str().expect("key").to_string();
    assert!(plaintext.starts_with("evtw_"));

    let body = json!({"batch": [{"type": "track", "event": "E", "userId": "u", "messageId": "cli-1"}]});
    let reply = app.send(post_json("/v1/batch", Some(&plaintext), &body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert!(app.consume_queued().await.is_empty());
    let stored: Vec<String> = app
        .db
        .query("SELECT HEX(p.uid) FROM events e JOIN projects p ON p.id = e.project_id WHERE e.message_id = 'cli-1'")
        .await;
    assert_eq!(stored, vec![project_id.replace('-', "").to_uppercase()], "stored under the new project");
    // The row holds a 12-character display prefix and a keyed hash, never the key.
    let rows: Vec<(String, String)> = app
        .db
        .query("SELECT display_prefix, CONCAT_WS('|', name, display_prefix, HEX(key_hash), LENGTH(key_hash)) FROM api_keys WHERE name = 'server'")
        .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, plaintext[..12]);
    assert!(!rows[0].1.contains(&plaintext[12..]), "the secret part of the key is not stored");
}

#[tokio::test]
async fn a_migration_edited_after_it_was_applied_is_refused() {
    let db = TestDb::new().await;
    assert_eq!(db.store.migrate().await.expect("up to date"), Vec::<&str>::new(), "already applied");
    let pool = mysql_async::Pool::new(db.url.expose().as_str());
    let mut conn = pool.get_conn().await.expect("connection");
    conn.query_drop("UPDATE schema_migrations SET checksum = REPEAT('0', 64) WHERE version = 1").await.expect("update");
    drop(conn);
    pool.disconnect().await.ok();
    let err = db.store.migrate().await.expect_err("refused");
    assert!(err.to_string().contains("0001_write_path changed after it was applied"), "{err}");
}

/// Groups stored before group types: one whose `$groupidentify` kept its type as a trait
/// takes it, with its members (0020's backfill, run again here over rows written as an earlier
/// release wrote them); one named only by `$groups`, or with a type that can be none, stays
/// without one.
#[tokio::test]
async fn groups_stored_before_group_types_take_the_type_their_traits_kept() {
    let db = TestDb::new().await;
    let group = |id: &str, traits: &str| {
        format!(
            "INSERT INTO group_profiles (uid, project_id, group_id, traits, traits_at)
             VALUES (UNHEX(REPLACE(UUID(), '-', '')), 1, '{id}', {traits}, NOW(3))"
        )
    };
    db.execute(&group("acme", r#"'{"$group_type": "company", "seats": 5}'"#)).await;
    db.execute(&group("42", "NULL")).await;
    db.execute(&group("odd", r#"'{"$group_type": {"not": "a type"}}'"#)).await;
    db.execute("INSERT INTO group_members (project_id, group_id, member_id) VALUES (1, 'acme', 'u-1'), (1, '42', 'u-1'), (1, 'odd', 'u-2')").await;
    let backfill = &MIGRATIONS.iter().find(|migration| migration.version == 20).expect("0020").statements()[2..];
    assert_eq!(backfill.len(), 2, "the two UPDATEs");
    for statement in backfill {
        db.execute(statement).await;
    }
    let profiles: Vec<(String, String)> =
        db.query("SELECT group_id, group_type FROM group_profiles ORDER BY group_id").await;
    let pairs = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs.iter().map(|(id, kind)| (id.to_string(), kind.to_string())).collect()
    };
    assert_eq!(profiles, pairs(&[("42", ""), ("acme", "company"), ("odd", "")]));
    let members: Vec<(String, String)> =
        db.query("SELECT group_id, group_type FROM group_members ORDER BY group_id").await;
    assert_eq!(members, pairs(&[("42", ""), ("acme", "company"), ("odd", "")]));
}

/// A migration whose second statement fails (as a unique key over duplicates would).
const PART_WAY: Migration = Migration {
    version: 9001,
    name: "9001_part_way",
    sql: "CREATE TABLE part_way_a (x INT);\nINSERT INTO part_way_b (y) VALUES (1);\nCREATE TABLE part_way_c (z INT);\n",
};

#[tokio::test]
async fn a_migration_stopped_part_way_resumes_at_the_statement_that_failed() {
    let db = TestDb::new().await;
    let err = db.store.apply(&[PART_WAY]).await.expect_err("part_way_b is missing");
    assert!(err.to_string().contains("9001_part_way, statement 2 of 3"), "{err}");
    assert!(err.to_string().contains("resumes at this one"), "{err}");

    // The operator mends what stopped it; the first statement is not run again (it would
    // fail: part_way_a exists).
    db.execute("CREATE TABLE part_way_b (y INT)").await;
    assert_eq!(db.store.apply(&[PART_WAY]).await.expect("resumed"), vec!["9001_part_way"]);
    assert_eq!(db.query::<u64>("SELECT COUNT(*) FROM part_way_c").await, vec![0], "the last statement ran");
    assert_eq!(db.query::<u64>("SELECT COUNT(*) FROM part_way_b").await, vec![1], "the second ran once");
    assert_eq!(db.query::<u64>("SELECT COUNT(*) FROM schema_migration_steps").await, vec![0], "steps cleared");
    assert_eq!(db.store.apply(&[PART_WAY]).await.expect("applied"), Vec::<&str>::new());

    // A later text of a migration left part-way is not resumed by statement number.
    let edited =
        Migration { version: 9002, name: "9002_edited", sql: "CREATE TABLE edited_a (x INT);\nDO nothing_here;\n" };
    db.store.apply(&[edited]).await.expect_err("the second statement fails");
    let edited = Migration { sql: "CREATE TABLE edited_a (x INT);\nDO 1;\n", ..edited };
    let err = db.store.apply(&[edited]).await.expect_err("refused");
    assert!(err.to_string().contains("9002_edited was partly applied (statements 1) from a different text"), "{err}");
}

#[tokio::test]
async fn two_migration_runs_at_once_apply_each_statement_once() {
    let db = TestDb::new().await;
    // Without the lock both would run the CREATE, and the second would fail on the first's table.
    const SLOW: Migration =
        Migration { version: 9003, name: "9003_slow", sql: "DO SLEEP(1);\nCREATE TABLE slow_a (x INT);\n" };
    let (first, second) = tokio::join!(db.store.apply(&[SLOW]), db.store.apply(&[SLOW]));
    let mut applied = [first.expect("first run"), second.expect("second run")];
    applied.sort();
    assert_eq!(applied, [vec![], vec!["9003_slow"]], "one run applied it, the other found it applied");
}

#[tokio::test]
async fn admin_key_key_lifecycle_and_job_commands_work_end_to_end() {
    let app = TestApp::with(TestDb::new().await, &[("EVTRACK_KEY_CACHE_SECONDS", "0")]).await;
    let admin = evtrack(&app.db, &["admin-key", "create", "--name", "ops", "--json"]);
    assert_eq!((admin["scope"].as_str(), admin["project"].as_str()), (Some("admin"), None));
    let admin_key = admin["key"].as_str().expect("key");
    assert_eq!(app.send(api_request("GET", "/v1/projects", admin_key, None)).await.status, StatusCode::OK);

    let project = app.project.to_string();
    let key = evtrack(&app.db, &["key", "create", "--project", &project, "--expires-days", "7", "--json"]);
    let (id, old) = (key["id"].as_str().expect("id").to_string(), key["key"].as_str().expect("key").to_string());
    let rotated = evtrack(&app.db, &["key", "rotate", &id, "--grace-hours", "0", "--json"]);
    let new = rotated["key"].as_str().expect("new key").to_string();
    let track = |key: &str| post_json("/v1/track", Some(key), &json!({"userId": "u", "event": "E"}));
    assert_eq!(app.send(track(&old)).await.status, StatusCode::UNAUTHORIZED, "no grace: the old key ends at once");
    assert_eq!(app.send(track(&new)).await.status, StatusCode::OK);

    let listed = evtrack(&app.db, &["key", "list", "--project", &project, "--json"]);
    let statuses: Vec<&str> =
        listed["keys"].as_array().expect("keys").iter().filter_map(|key| key["status"].as_str()).collect();
    assert!(statuses.contains(&"rotated") && statuses.contains(&"active"), "{listed}");
    assert!(!listed.to_string().contains(&new), "listings never hold keys");

    let revoked = evtrack(&app.db, &["key", "revoke", rotated["id"].as_str().expect("id"), "--json"]);
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(app.send(track(&new)).await.status, StatusCode::UNAUTHORIZED);

    let first = evtrack(&app.db, &["job", "run", "rotate-keys", "--slot", "2026-11-26T07:00:00Z", "--json"]);
    let second = evtrack(&app.db, &["job", "run", "rotate-keys", "--slot", "2026-11-26T07:00:00Z", "--json"]);
    assert_eq!((first["ran"].as_bool(), second["ran"].as_bool()), (Some(true), Some(false)));
    assert_eq!(first["run"]["id"], second["run"]["id"]);
}

/// The built-in development pepper and master key are for a database on this machine: the
/// commands that write keys or signing keys refuse them for any other, before connecting.
#[test]
fn key_writing_commands_refuse_the_development_secrets_for_a_remote_database() {
    let id = uuid::Uuid::now_v7().to_string();
    let commands: [&[&str]; 4] = [
        &["admin-key", "create"],
        &["key", "create", "--project", &id],
        &["key", "rotate", &id],
        &["job", "run", "rotate-keys"],
    ];
    for args in commands {
        let output = Command::new(workspace_binary("evtrack"))
            .args(args)
            .env("EVTRACK_DATABASE_URL", "mysql://root@db.invalid:3306/evtrack")
            .env_remove("EVTRACK_KEY_PEPPER")
            .env_remove("EVTRACK_MASTER_KEYS")
            .output()
            .expect("evtrack runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}");
        assert!(
            stderr.contains("refusing the development default") && stderr.contains("not on this machine"),
            "{args:?}: {stderr}"
        );
    }
}

/// A signing key sealed under a master key this process lacks is skipped (and logged), not a
/// keyring that fails every list route.
#[tokio::test]
async fn an_unsealable_signing_key_is_skipped_not_fatal() {
    let app = TestApp::new().await;
    app.db
        .execute(
            "INSERT INTO signing_keys (uid, secret_sealed, master_version, signs_until, verifies_until)
             VALUES (UNHEX(REPLACE(UUID(), '-', '')), REPEAT('x', 60), 99,
                     NOW(3) + INTERVAL 30 DAY, NOW(3) + INTERVAL 37 DAY)",
        )
        .await;
    app.send(api_request("POST", "/v1/projects", &app.admin, Some(&json!({"name": "second"})))).await;
    // A page with a next one: its cursor is signed with the keyring.
    let reply = app.send(api_request("GET", "/v1/projects?limit=1", &app.admin, None)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert!(reply.json["next_cursor"].is_string(), "{}", reply.json);
}

/// After a rollback to a release whose consumer did not know this one's queue seal, the
/// messages it refused whole as forged come back with `evtrack rejected reopen`: what this
/// release's seal opens is stored once (a request a client sent again meanwhile, stored then,
/// is no-ops now), the event a message carried as quarantined is kept under its project,
/// what the seal does not open stays, and a second reopen finds nothing more.
#[tokio::test]
async fn messages_an_earlier_release_refused_for_their_seal_are_reopened_and_stored_once() {
    let app = TestApp::new().await;
    let batch = |n: usize| {
        let mut events = track_messages(50, &format!("rolled-{n}"), 0);
        if n == 2 {
            events[7] = json!({"type": "track", "event": "bad\nname", "userId": "u", "messageId": "bad-1"});
        }
        json!({"batch": events})
    };
    let mut refused = Vec::new();
    for n in 0..3 {
        let reply = app.send(post_json("/v1/batch", Some(&app.key), &batch(n))).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
        refused.extend(app.take_queued().await);
    }
    assert_eq!(refused.len(), 4, "a message per request, and one of the quarantined event");
    // A message this deployment never sealed: altered after sealing.
    let forged = refused[1].body.replace("rolled-1-0", "forged-1-0");
    // What the earlier release's consumer made of them: rejected whole, no project, body kept.
    let bodies = refused.iter().map(|message| message.body.clone()).chain([forged]);
    for (n, body) in bodies.enumerate() {
        let hex: String = body.bytes().map(|byte| format!("{byte:02x}")).collect();
        app.db
            .execute(&format!(
                "INSERT INTO rejected_events (uid, project_id, queue_message_id, item_index, reason_code, reason, raw)
                 VALUES (UNHEX(REPLACE(UUID(), '-', '')), NULL, 'sqs-{n}', -1, 'forged_envelope',
                         'envelope seal does not verify: not queued by this deployment''s ingest', UNHEX('{hex}'))"
            ))
            .await;
    }
    // The client sent the first request again after the rollback; it was stored then.
    let reply = app.send(post_json("/v1/batch", Some(&app.key), &batch(0))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(app.consume_queued().await.is_empty());
    assert_eq!(app.db.count("events").await, 50);

    let listed = evtrack(&app.db, &["rejected", "list", "--messages", "--json"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(5), "{listed}");
    assert!(listed.as_array().expect("list").iter().all(|message| message["code"] == "forged_envelope"));
    let reopened = evtrack(&app.db, &["rejected", "reopen", "--json"]);
    assert_eq!(
        reopened,
        json!({"messages": 4, "events_stored": 99, "duplicates": 50, "suppressed": 0, "rejected": 1, "left": 1})
    );
    assert_eq!(app.db.count("events").await, 149);
    assert_eq!(app.db.count("events WHERE message_id LIKE 'forged-%'").await, 0);
    let left: Vec<(Option<u64>, String)> =
        app.db.query("SELECT project_id, reason_code FROM rejected_events ORDER BY reason_code").await;
    assert_eq!(left.len(), 2, "{left:?}");
    assert_eq!(left[0].1, "forged_envelope", "the message no seal of this deployment opens stays");
    assert_eq!(left[0].0, None);
    assert_eq!(left[1].1, "invalid_value", "the quarantined event, now under its project");
    assert!(left[1].0.is_some());
    let again = evtrack(&app.db, &["rejected", "reopen", "--json"]);
    assert_eq!((again["messages"].as_u64(), again["left"].as_u64()), (Some(0), Some(1)), "{again}");
    assert_eq!(app.db.count("events").await, 149);
}

#[test]
fn evtrack_up_refuses_the_development_secrets_for_a_database_elsewhere() {
    let output = Command::new(workspace_binary("evtrack"))
        .arg("up")
        .env("EVTRACK_DATABASE_URL", "mysql://evtrack@db.example.invalid:3306/evtrack")
        .env("EVTRACK_DATABASE_INSECURE", "1")
        .env("EVTRACK_LISTEN", "127.0.0.1:0")
        .env_remove("EVTRACK_KEY_PEPPER")
        .env_remove("EVTRACK_MASTER_KEYS")
        .output()
        .expect("evtrack runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("the database is not on this machine"), "{stderr}");
}
