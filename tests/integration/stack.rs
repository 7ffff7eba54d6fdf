//! `evtrack up` as a user runs it: a process, HTTP from outside, rows in MySQL, and a
//! Ctrl-C that stores everything accepted before it exits.

use evtrack_tests::*;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test]
async fn evtrack_up_serves_ingest_and_drains_on_ctrl_c() {
    let db = TestDb::new().await;
    // A database `up` creates itself, so drop ours first and let it.
    let name = format!("{}_up", db.name);
    let url = format!("{}/{name}?prefer_socket=false", database_server_url());
    let mut child = Command::new(workspace_binary("evtrack"))
        .arg("up")
        .env("EVTRACK_DATABASE_URL", &url)
        .env("EVTRACK_LISTEN", "127.0.0.1:0")
        .env("EVTRACK_REDIS_URL", redis_url())
        .env_remove("EVTRACK_SQS_QUEUE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("evtrack up starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut address, mut key) = (None, None);
    while address.is_none() || key.is_none() {
        let line = lines
            .next()
            .expect("evtrack up printed its address and key")
            .expect("line");
        if let Some(rest) = line.strip_prefix("evtrack is listening on ") {
            address = Some(rest.trim().to_string());
        }
        if let Some(rest) = line.strip_prefix("write key (shown once; keep it): ") {
            key = Some(rest.trim().to_string());
        }
    }
    let (address, key) = (address.expect("address"), key.expect("key"));
    let printed = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());

    let http = reqwest::Client::new();
    let mut sent = 0;
    for round in 0..20 {
        let batch = json!({"batch": (0..50).map(|i| json!({"type": "track", "event": "E", "userId": "u", "messageId": format!("e2e-{round}-{i}")})).collect::<Vec<_>>()});
        let response = http
            .post(format!("{address}/v1/batch"))
            .basic_auth(&key, Some(""))
            .json(&batch)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200);
        sent += 50;
    }
    let posthog =
        json!({"api_key": key, "batch": [{"event": "$pageview", "distinct_id": "d", "properties": {"title": "Home"}}]});
    let response = http
        .post(format!("{address}/batch/"))
        .json(&posthog)
        .send()
        .await
        .expect("request");
    assert_eq!(
        response.json::<serde_json::Value>().await.expect("json"),
        json!({"status": 1})
    );
    sent += 1;

    // Ctrl-C right after the last request: whatever is still queued must be stored.
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "evtrack up did not exit after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    let output = printed.join().expect("stdout reader");
    assert!(
        output
            .iter()
            .any(|line| line.contains("all accepted events are stored")),
        "{output:?}"
    );

    let store_url = evtrack::config::Secret::new(url.clone());
    let pool = mysql_async::Pool::new(url.as_str());
    let mut conn = pool.get_conn().await.expect("connection");
    let count: Option<u64> = mysql_async::prelude::Queryable::query_first(&mut conn, "SELECT COUNT(*) FROM events")
        .await
        .expect("count");
    drop(conn);
    pool.disconnect().await.ok();
    evtrack::store::Store::drop_database(&store_url).await.ok();
    assert_eq!(count, Some(sent), "every accepted event is in MySQL after exit");
}
