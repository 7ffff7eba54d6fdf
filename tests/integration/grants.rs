//! Least privilege in the database: every function's user (shared/src/store/grants.rs) may run what
//! its function runs — every TestApp test runs each function as its own user — and is
//! refused everything else it must not do.

use evtrack_tests::*;
use mysql_async::prelude::Queryable;

/// Statements each user must be refused (MySQL error 1142/1143: command denied).
const REFUSED: &[(&str, &[&str])] = &[
    (
        "ingest",
        &[
            "INSERT INTO events (message_id) VALUES ('x')",
            "SELECT COUNT(*) FROM events",
            "UPDATE api_keys SET last_used_at = NULL",
        ],
    ),
    (
        "consumer",
        &[
            "DELETE FROM events",
            "DELETE FROM users",
            "UPDATE api_keys SET key_hash = key_hash",
            "SELECT COUNT(*) FROM erasures",
            // Memberships are only added.
            "UPDATE group_members SET member_id = 'x'",
        ],
    ),
    (
        "api",
        &[
            "DELETE FROM events",
            "DELETE FROM users",
            "DELETE FROM projects",
            "DELETE FROM api_keys",
            "UPDATE events SET properties = '{}'",
            "DELETE FROM job_runs",
        ],
    ),
    (
        "cleanup",
        &[
            "INSERT INTO events (message_id) VALUES ('x')",
            "UPDATE events SET deleted_at = NULL",
            "UPDATE projects SET name = 'x'",
        ],
    ),
    ("rotate-keys", &["DELETE FROM events", "SELECT COUNT(*) FROM events", "UPDATE api_keys SET key_hash = key_hash"]),
];

/// Only the migrator changes the schema.
const SCHEMA_CHANGES: [&str; 3] =
    ["CREATE TABLE probe (a INT)", "ALTER TABLE events ADD COLUMN probe INT", "DROP TABLE events"];

#[tokio::test]
async fn each_function_user_is_refused_what_it_must_not_do() {
    let db = TestDb::new().await;
    let users = db.function_users().await;
    let mut checked = 0;
    for (function, statements) in REFUSED {
        let mut conn = mysql_async::Conn::from_url(users.url(function).expose().as_str()).await.expect("connects");
        for statement in statements.iter().chain(SCHEMA_CHANGES.iter()) {
            match conn.query_drop(*statement).await {
                Err(mysql_async::Error::Server(err)) if [1142, 1143].contains(&err.code) => checked += 1,
                other => panic!("{function} must be refused {statement:?}, got {other:?}"),
            }
        }
        conn.disconnect().await.ok();
    }
    assert_eq!(checked, REFUSED.iter().map(|(_, s)| s.len() + SCHEMA_CHANGES.len()).sum::<usize>());
    assert_eq!(db.count("events").await, 0, "nothing was written");

    // The migrator may change the schema.
    let mut migrator = mysql_async::Conn::from_url(users.url("migrator").expose().as_str()).await.expect("connects");
    migrator.query_drop("CREATE TABLE probe (a INT)").await.expect("the migrator creates tables");
    migrator.query_drop("DROP TABLE probe").await.expect("and drops them");
    migrator.disconnect().await.ok();
}

#[test]
fn the_grants_file_is_what_evtrack_db_grants_prints() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/db/grants.sql");
    let file = std::fs::read_to_string(path).expect("infra/db/grants.sql");
    assert_eq!(
        file,
        evtrack::store::grants::grants_sql("evtrack", "evtrack"),
        "regenerate it: cargo run -p evtrack-cli --bin evtrack -- db grants > infra/db/grants.sql"
    );
}

/// Two environments on one database server: `evtrack db users` and `db grants` with a prefix
/// of their own make and grant a second set of users, whose URLs reach the database with only
/// their function's rights; a prefix that cannot be a MySQL user name is refused. (The users
/// are dropped with the test database.)
#[tokio::test]
async fn a_second_environment_on_the_same_server_gets_users_of_its_own() {
    let db = TestDb::new().await;
    let prefix = db.users_prefix();
    let opts = mysql_async::Opts::from_url(db.url.expose()).expect("url");
    let (host, port) = (opts.ip_or_hostname().to_string(), opts.tcp_port().to_string());
    let run = |args: &[&str]| {
        let output = std::process::Command::new(workspace_binary("evtrack")).args(args).output().expect("evtrack runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let (ok, users, stderr) =
        run(&["db", "users", "--database", &db.name, "--user-prefix", &prefix, "--host", &host, "--port", &port]);
    assert!(ok, "{stderr}");
    let (ok, grants, stderr) = run(&["db", "grants", "--database", &db.name, "--user-prefix", &prefix]);
    assert!(ok, "{stderr}");
    assert!(!grants.contains("'evtrack_"), "no other environment's users are touched:\n{grants}");

    let statements = |text: &str| -> Vec<String> {
        text.lines().filter(|line| !line.starts_with("--") && !line.trim().is_empty()).map(str::to_string).collect()
    };
    for statement in statements(&users).into_iter().chain(statements(&grants)) {
        db.execute(&statement).await;
    }
    let url = users
        .lines()
        .find_map(|line| line.strip_prefix("-- consumer").map(str::trim))
        .expect("the consumer's URL")
        .replace("?require_ssl=true", "");
    assert!(url.contains(&format!("{prefix}_consumer:")), "{url}");
    let mut consumer = mysql_async::Conn::from_url(url.as_str()).await.expect("the consumer's user connects");
    let _: Vec<u64> = consumer.query("SELECT COUNT(*) FROM events").await.expect("reads events");
    match consumer.query_drop("DELETE FROM events").await {
        Err(mysql_async::Error::Server(err)) if err.code == 1142 => {}
        other => panic!("the consumer must be refused DELETE, got {other:?}"),
    }
    consumer.disconnect().await.ok();

    for bad in ["evtrack-staging", "a_prefix_longer_than_twenty", ""] {
        let (ok, _, stderr) = run(&["db", "grants", "--user-prefix", bad]);
        assert!(!ok && stderr.contains("user prefix"), "{bad:?}: {stderr}");
    }
}
