//! `evtrack up` as a user runs it: a process, HTTP from outside (curl-like requests and the
//! real SDKs), rows in MySQL, and a Ctrl-C that stores everything accepted before it exits.

use evtrack_tests::*;
use serde_json::json;
use std::time::Duration;

/// Posts a Segment batch with the stack's key; it must be accepted.
pub(crate) async fn post_batch(http: &reqwest::Client, stack: &StackProcess, messages: Vec<serde_json::Value>) {
    let response = http
        .post(format!("{}/v1/batch", stack.address))
        .basic_auth(&stack.key, Some(""))
        .json(&json!({"batch": messages}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn evtrack_up_serves_ingest_and_drains_on_ctrl_c() {
    let mut stack = StackProcess::start(&[]);
    let http = reqwest::Client::new();
    let mut sent = 0;
    for round in 0..20 {
        post_batch(&http, &stack, track_messages(50, &format!("e2e-{round}"), 0)).await;
        sent += 50;
    }
    let posthog = json!({"api_key": stack.key, "batch": [{"event": "$pageview", "distinct_id": "d", "properties": {"title": "Home"}}]});
    let response = http.post(format!("{}/batch/", stack.address)).json(&posthog).send().await.expect("request");
    assert_eq!(response.json::<serde_json::Value>().await.expect("json"), json!({"status": 1}));
    sent += 1;

    // Ctrl-C right after the last request: whatever is still queued must be stored.
    let (exit, output) = stack.interrupt();
    assert!(exit.success(), "{exit:?}");
    assert!(output.iter().any(|line| line.contains("all accepted events are stored")), "{output:?}");
    assert_eq!(stack.count("SELECT COUNT(*) FROM events").await, sent, "every accepted event is in MySQL after exit");
}

/// Runs an SDK script (tests/sdk/) with the interpreter named by `interpreter_variable`,
/// against `stack`; it must report no SDK error. Returns the run id (the prefix of every id
/// it sent) and the counts it printed.
async fn run_sdk_script(stack: &StackProcess, interpreter_variable: &str, script: &str) -> (String, serde_json::Value) {
    let interpreter = std::env::var(interpreter_variable).unwrap_or_else(|_| {
        panic!("{interpreter_variable} is not set: run the tests with `infra/dev.sh test`, which installs the SDKs")
    });
    let script = format!("{}/{script}", env!("CARGO_MANIFEST_DIR"));
    let run = format!("r{}", uuid::Uuid::now_v7().simple());
    let output = tokio::process::Command::new(&interpreter)
        .args([&script, &stack.address, &stack.key, &run])
        .output()
        .await
        .unwrap_or_else(|err| panic!("{interpreter} {script}: {err}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "SDKs reported errors: {stderr}");
    (run, serde_json::from_slice(&output.stdout).expect("counts"))
}

/// The Python SDKs, unchanged but for their host, against the running stack.
#[tokio::test]
async fn the_real_python_sdks_deliver_every_call() {
    let stack = StackProcess::start(&[]);
    let (run, sent) = run_sdk_script(&stack, "EVTRACK_TEST_PYTHON", "sdk/python_sdks.py").await;
    assert_eq!(sent, json!({"segment": 12, "rudder": 6, "posthog": 5}));

    let total = stack.wait_for_count("SELECT COUNT(*) FROM events", 23, Duration::from_secs(20)).await;
    assert_eq!(total, 23, "12 Segment + 6 RudderStack + 5 PostHog calls");
    for sdk in ["segment", "segment-gzip", "rudder"] {
        let per_type =
            stack.count(&format!("SELECT COUNT(DISTINCT type) FROM events WHERE user_id = '{run}-{sdk}-user'")).await;
        assert_eq!(per_type, 6, "{sdk}: identify, track, page, screen, group, alias");
        let traits = stack
            .count(&format!(
                "SELECT COUNT(*) FROM users WHERE user_id = '{run}-{sdk}-user' AND JSON_VALUE(traits, '$.plan') = 'pro'"
            ))
            .await;
        assert_eq!(traits, 1, "{sdk}: identify traits in users");
        let links = stack.count(&format!("SELECT COUNT(*) FROM aliases WHERE user_id = '{run}-{sdk}-user'")).await;
        assert_eq!(links, 2, "{sdk}: the anonymous id and the alias");
    }
    let posthog_user = format!("{run}-posthog-user");
    assert_eq!(
        stack.count(&format!("SELECT COUNT(*) FROM users WHERE user_id = '{posthog_user}' AND JSON_VALUE(traits, '$.email') = 'ada@example.com'")).await,
        1,
        "posthog set() becomes the user's traits"
    );
    assert_eq!(
        stack
            .count(&format!(
                "SELECT COUNT(*) FROM aliases WHERE alias = '{run}-posthog-anon' AND user_id = '{posthog_user}'"
            ))
            .await,
        1,
        "posthog alias() links the previous id"
    );
    assert_eq!(
        stack.count(&format!("SELECT COUNT(*) FROM group_profiles WHERE group_id = '{run}-posthog-acme'")).await,
        1
    );
    // The member comes from capture(groups=…); group_identify makes none.
    let members = format!("SELECT COUNT(*) FROM group_members WHERE group_id = '{run}-posthog-acme'");
    assert_eq!(stack.count(&members).await, 1, "posthog: one member");
    assert_eq!(stack.count(&format!("{members} AND member_id = '{posthog_user}'")).await, 1, "the user");
    // Skew correction ran on every SDK's events: none lands more than a minute from receipt.
    assert_eq!(
        stack.count("SELECT COUNT(*) FROM events WHERE ABS(TIMESTAMPDIFF(SECOND, timestamp, received_at)) > 60").await,
        0
    );
}

/// With EVTRACK_SQS_QUEUE_URL set, `evtrack up` queues to SQS and long-polls it like the
/// Lambda event source mapping, deleting what is stored or rejected, and nothing else.
#[tokio::test]
async fn evtrack_up_with_sqs_stores_everything_and_empties_the_queue() {
    let endpoint = sqs_endpoint();
    let client = sqs_client(&endpoint);
    let queue_url = fresh_queue(&client).await;
    let mut stack = StackProcess::start(&[
        ("EVTRACK_SQS_QUEUE_URL", &queue_url),
        ("AWS_ENDPOINT_URL_SQS", &endpoint),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ]);
    client.send_message().queue_url(&queue_url).message_body("not an envelope").send().await.expect("poison sent");
    let http = reqwest::Client::new();
    for round in 0..5 {
        post_batch(&http, &stack, track_messages(20, &format!("sqs-{round}"), 0)).await;
    }
    let stored = stack.wait_for_count("SELECT COUNT(*) FROM events", 100, Duration::from_secs(30)).await;
    assert_eq!(stored, 100);
    let rejected = stack.wait_for_count("SELECT COUNT(*) FROM rejected_events", 1, Duration::from_secs(30)).await;
    assert_eq!(rejected, 1, "the poison message is kept with its reason");

    let started = std::time::Instant::now();
    let left = loop {
        let attributes = client
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
            .send()
            .await
            .expect("attributes");
        let count = |name: aws_sdk_sqs::types::QueueAttributeName| -> u64 {
            attributes.attributes().and_then(|a| a.get(&name)).and_then(|v| v.parse().ok()).unwrap_or(u64::MAX)
        };
        let left = count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            + count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible);
        if left == 0 || started.elapsed() > Duration::from_secs(15) {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(left, 0, "every stored or rejected message is deleted from the queue");
    let (exit, _) = stack.interrupt();
    assert!(exit.success(), "{exit:?}");
}

/// The Node SDKs, unchanged but for their host, against the running stack.
#[tokio::test]
async fn the_real_node_sdks_deliver_every_call() {
    let stack = StackProcess::start(&[]);
    let (run, sent) = run_sdk_script(&stack, "EVTRACK_TEST_NODE", "sdk/node/send.mjs").await;
    assert_eq!(sent, json!({"segment-node": 6, "posthog-node": 4}));

    let total = stack.wait_for_count("SELECT COUNT(*) FROM events", 10, Duration::from_secs(20)).await;
    assert_eq!(total, 10, "6 analytics-node + 4 posthog-node calls");
    let segment_user = format!("{run}-segment-node-user");
    assert_eq!(
        stack.count(&format!("SELECT COUNT(DISTINCT type) FROM events WHERE user_id = '{segment_user}'")).await,
        6,
        "identify, track, page, screen, group, alias"
    );
    // analytics-node's own messageIds (`node-next-<ms>-<uuid>`) are kept.
    assert_eq!(
        stack
            .count(&format!(
                "SELECT COUNT(*) FROM events WHERE user_id = '{segment_user}' AND message_id LIKE 'node-next-%'"
            ))
            .await,
        6
    );
    let posthog_user = format!("{run}-posthog-node-user");
    assert_eq!(
        stack.count(&format!("SELECT COUNT(*) FROM users WHERE user_id IN ('{segment_user}', '{posthog_user}')")).await,
        2
    );
    assert_eq!(
        stack
            .count(&format!(
                "SELECT COUNT(*) FROM aliases WHERE alias = '{run}-posthog-node-anon' AND user_id = '{posthog_user}'"
            ))
            .await,
        1,
        "posthog-node alias() links the anonymous id to the user"
    );
    // capture({groups}) makes the user a member; groupIdentify({distinctId}) adds no other.
    let members = format!("SELECT COUNT(*) FROM group_members WHERE group_id = '{run}-posthog-node-acme'");
    assert_eq!(stack.count(&members).await, 1, "posthog-node: one member");
    assert_eq!(stack.count(&format!("{members} AND member_id = '{posthog_user}'")).await, 1, "the user");
}

/// Gzip bombs are refused at the inflated-size limit: memory stays flat while they arrive.
#[tokio::test]
async fn gzip_bombs_do_not_grow_memory() {
    let stack = StackProcess::start(&[]);
    // 200 MB of JSON whitespace, about 200 KB compressed: under the 500 KB body limit.
    let bomb = bytes::Bytes::from(gzip(&vec![b' '; 200 * 1024 * 1024]));
    let http = reqwest::Client::new();
    let before = memory_kib(stack.pid(), "VmHWM");
    let sends = (0..8).map(|_| {
        http.post(format!("{}/v1/batch", stack.address))
            .basic_auth(&stack.key, Some(""))
            .header("content-encoding", "gzip")
            .body(bomb.clone())
            .send()
    });
    for response in futures::future::join_all(sends).await {
        let response = response.expect("request");
        assert_eq!(response.status(), 413);
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["code"], "request_too_large");
    }
    let after = memory_kib(stack.pid(), "VmHWM");
    // Inflating all eight would take 1.6 GB; the cap keeps each below 512 KB.
    assert!(after < before + 64 * 1024, "peak RSS grew from {before} KiB to {after} KiB");
}

/// Keys created, rotated, revoked and used through the running stack, with every log level
/// on:
/// no plaintext key appears in anything the process writes after start-up.
#[tokio::test]
async fn no_plaintext_key_reaches_the_logs() {
    let mut stack = StackProcess::start(&[("RUST_LOG", "trace")]);
    let http = reqwest::Client::new();
    let admin = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{}{path}", stack.address)).bearer_auth(&stack.admin_key)
    };
    let projects: serde_json::Value =
        admin(reqwest::Method::GET, "/v1/projects").send().await.expect("list").json().await.expect("json");
    let project = projects["data"][0]["id"].as_str().expect("the development project").to_string();
    let created: serde_json::Value = admin(reqwest::Method::POST, "/v1/keys")
        .json(&json!({"scope": "write", "project": project, "name": "logged?"}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let (id, first) = (created["id"].as_str().expect("id"), created["key"].as_str().expect("key").to_string());
    let rotated: serde_json::Value = admin(reqwest::Method::POST, &format!("/v1/keys/{id}/rotate"))
        .send()
        .await
        .expect("rotate")
        .json()
        .await
        .expect("json");
    let second = rotated["key"].as_str().expect("key").to_string();
    let mut secrets = vec![first, second, stack.key.clone(), stack.admin_key.clone()];
    for key in secrets.clone() {
        let response = http
            .post(format!("{}/v1/track", stack.address))
            .basic_auth(&key, Some(""))
            .json(&json!({"userId": "u", "event": "E"}))
            .send()
            .await
            .expect("track");
        assert!([200, 403].contains(&response.status().as_u16()));
        // A near miss (one character off) is refused and must not be logged either.
        let mut near = key.clone();
        near.replace_range(8..9, if &key[8..9] == "x" { "y" } else { "x" });
        http.post(format!("{}/v1/track", stack.address)).basic_auth(&near, Some("")).send().await.expect("track");
        secrets.push(near);
    }
    admin(reqwest::Method::POST, &format!("/v1/keys/{}/revoke", rotated["id"].as_str().expect("id")))
        .send()
        .await
        .expect("revoke");
    assert_eq!(stack.wait_for_count("SELECT COUNT(*) FROM events", 3, Duration::from_secs(10)).await, 3);
    let (_, stdout) = stack.interrupt();
    let logs = std::fs::read_to_string(&stack.log_path).expect("logs");
    assert!(logs.contains("key rotated") && logs.contains("events queued"), "debug logs were captured: {logs}");
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a key is in the logs");
        assert!(!stdout.iter().any(|line| line.contains(secret.as_str())), "a key was printed after start-up");
    }
}

/// The quarantine end to end: an event over the size limit is kept (its request answered
/// 200), listed with `evtrack rejected list`, and replayed with `evtrack rejected replay`
/// once the limit is raised — then it is a stored event, and the quarantine is empty. The
/// replayed event gets what its batch gave its neighbour: the batch's context, and its time
/// corrected by the batch's sentAt against the first receipt (not the replay's). 300 more
/// take the replay over more than one page of the quarantine.
#[tokio::test]
async fn a_quarantined_event_is_listed_then_replayed_after_the_fix_and_stored_once() {
    let mut stack = StackProcess::start(&[("EVTRACK_MAX_EVENT_BYTES", "1000")]);
    let http = reqwest::Client::new();
    for request in 0..2 {
        let many: Vec<serde_json::Value> = (0..150)
            .map(|n| {
                json!({"type": "track", "event": "Many", "userId": "u", "messageId": format!("many-{request}-{n}"),
                            "properties": {"blob": "m".repeat(1500)}})
            })
            .collect();
        let response = http
            .post(format!("{}/v1/batch", stack.address))
            .basic_auth(&stack.key, Some(""))
            .json(&json!({"batch": many}))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200);
    }
    let kept = stack.wait_for_count("SELECT COUNT(*) FROM rejected_events", 300, Duration::from_secs(20)).await;
    assert_eq!(kept, 300, "quarantined before the next request's, which lists first");
    // A client whose clock is an hour fast.
    let client_clock = chrono::Utc::now() + chrono::Duration::hours(1);
    let at = |seconds| (client_clock + chrono::Duration::seconds(seconds)).to_rfc3339();
    let big = json!({"type": "track", "event": "Big", "userId": "u", "messageId": "big-1",
                     "timestamp": at(0), "properties": {"blob": "b".repeat(3000)}});
    let small = json!({"type": "track", "event": "Small", "userId": "u", "messageId": "small-1",
                       "timestamp": at(1)});
    let library = json!({"name": "analytics-python", "version": "2.4.0"});
    let response = http
        .post(format!("{}/v1/batch", stack.address))
        .basic_auth(&stack.key, Some(""))
        .json(&json!({"batch": [small, big], "sentAt": at(5), "context": {"library": library}}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.expect("json");
    assert_eq!(answer["rejected"]["events"][0]["code"], "event_too_large", "{answer}");
    let wait = Duration::from_secs(20);
    assert_eq!(stack.wait_for_count("SELECT COUNT(*) FROM events", 1, wait).await, 1);
    assert_eq!(stack.wait_for_count("SELECT COUNT(*) FROM rejected_events", 301, wait).await, 301);

    assert_eq!(stack.count("SELECT COUNT(*) FROM projects").await, 1);
    let pool = mysql_async::Pool::new(stack.database_url.as_str());
    let mut conn = pool.get_conn().await.expect("connection");
    let uid: Option<Vec<u8>> =
        mysql_async::prelude::Queryable::query_first(&mut conn, "SELECT uid FROM projects").await.expect("uid");
    drop(conn);
    pool.disconnect().await.ok();
    let project = uuid::Uuid::from_slice(&uid.expect("project")).expect("uuid").to_string();
    let database_url = stack.database_url.clone();
    let evtrack = |args: &[&str]| {
        let output = std::process::Command::new(workspace_binary("evtrack"))
            .args(args.iter().map(|arg| arg.replace("{project}", &project)))
            .env("EVTRACK_DATABASE_URL", &database_url)
            .output()
            .expect("evtrack runs");
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let listed: serde_json::Value =
        serde_json::from_str(&evtrack(&["rejected", "list", "--project", "{project}", "--json"])).expect("JSON");
    assert_eq!(listed[0]["code"], "event_too_large", "{listed}");
    assert_eq!(listed[0]["source"], "segment");
    assert_eq!(listed[0]["batch"], json!({"sentAt": at(5), "context": {"library": library}}));

    // A write key of another project is refused before anything is sent: ingest would store
    // the events in that project, and the replay would then drop them from this quarantine.
    let other_key = {
        let admin = |method: reqwest::Method, path: &str| {
            http.request(method, format!("{}{path}", stack.address)).bearer_auth(&stack.admin_key)
        };
        let post = |path: &str, body: serde_json::Value| {
            let request = admin(reqwest::Method::POST, path).json(&body);
            async move { request.send().await.expect("request").json::<serde_json::Value>().await.expect("json") }
        };
        let other = post("/v1/projects", json!({"name": "another"})).await;
        let key = post("/v1/keys", json!({"scope": "write", "project": other["id"], "name": "another's"})).await;
        key["key"].as_str().expect("a write key").to_string()
    };
    let refused = std::process::Command::new(workspace_binary("evtrack"))
        .args(["rejected", "replay", "--project", &project, "--url", &stack.address, "--key", &other_key])
        .env("EVTRACK_DATABASE_URL", &database_url)
        .output()
        .expect("evtrack runs");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("another project"), "{stderr}");
    assert_eq!(stack.count("SELECT COUNT(*) FROM rejected_events").await, 301, "nothing replayed");
    assert_eq!(stack.count("SELECT COUNT(*) FROM events").await, 1);

    // The fix: a larger limit. Then the replay, through ingest as a client would send it.
    stack.restart(&[("EVTRACK_MAX_EVENT_BYTES", "32768")]);
    let url = stack.address.clone();
    let key = stack.key.clone();
    let replayed = evtrack(&["rejected", "replay", "--project", "{project}", "--url", &url, "--key", &key, "--json"]);
    let replayed: serde_json::Value = serde_json::from_str(replayed.trim()).expect("JSON");
    assert_eq!((replayed["accepted"].as_u64(), replayed["rejected_again"].as_u64()), (Some(301), Some(0)));
    let stored = stack.wait_for_count("SELECT COUNT(*) FROM events WHERE message_id = 'big-1'", 1, wait).await;
    assert_eq!(stored, 1);
    assert_eq!(stack.wait_for_count("SELECT COUNT(*) FROM events", 302, wait).await, 302);
    assert_eq!(stack.count("SELECT COUNT(*) FROM rejected_events").await, 0, "the quarantine is empty");
    // Sent a second before its neighbour by the client's clock: stored a second before it.
    let millis_apart = "SELECT TIMESTAMPDIFF(MICROSECOND, big.timestamp, small.timestamp) DIV 1000
        FROM events big JOIN events small ON small.message_id = 'small-1' WHERE big.message_id = 'big-1'";
    assert_eq!(stack.count(millis_apart).await, 1000);
    let same_library = "SELECT COUNT(*) FROM events
        WHERE JSON_VALUE(context, '$.library.name') = 'analytics-python'";
    assert_eq!(stack.count(same_library).await, 2);
    // A second replay finds nothing; the events stay stored once.
    let again = evtrack(&["rejected", "replay", "--project", "{project}", "--url", &url, "--key", &key, "--json"]);
    assert!(again.contains("\"accepted\":0"), "{again}");
    // One an earlier release quarantined with a batch context over this release's bound:
    // ingest refuses its request whole, so it is left where it is, and the replay goes on.
    let old_row = format!(
        "INSERT INTO rejected_events (uid, project_id, queue_message_id, item_index, reason_code, reason, source, raw,
                                      batch_fields, received_at)
         SELECT UNHEX(REPLACE(UUID(), '-', '')), id, 'an-older-release', 0, 'event_too_large', 'too large', 'segment',
                '{{\"type\":\"track\",\"event\":\"Old\",\"userId\":\"u\",\"messageId\":\"old-1\"}}',
                JSON_OBJECT('context', JSON_OBJECT('blob', REPEAT('c', 20000))), NOW(3)
         FROM projects WHERE uid = UNHEX(REPLACE('{project}', '-', ''))"
    );
    let pool = mysql_async::Pool::new(stack.database_url.as_str());
    let mut conn = pool.get_conn().await.expect("connection");
    mysql_async::prelude::Queryable::query_drop(&mut conn, old_row).await.expect("an older row");
    drop(conn);
    pool.disconnect().await.ok();
    let left = evtrack(&["rejected", "replay", "--project", "{project}", "--url", &url, "--key", &key, "--json"]);
    assert!(left.contains("\"skipped\":1"), "{left}");
    assert_eq!(stack.count("SELECT COUNT(*) FROM rejected_events").await, 1, "left in the quarantine");
    let (exit, _) = stack.interrupt();
    assert!(exit.success());
    assert_eq!(stack.count("SELECT COUNT(*) FROM events").await, 302);
}

/// What `evtrack up` acknowledged survives `kill -9`: 100,000 events in 1,000 requests, 16 at
/// a time, the stack killed midway; after a restart on the same database and queue journal,
/// every acknowledged event is stored, exactly once.
#[tokio::test]
async fn every_event_acknowledged_before_a_kill_9_is_stored_exactly_once_after_the_restart() {
    use std::sync::{Arc, Mutex};
    let mut stack = StackProcess::start(&[]);
    let http = reqwest::Client::new();
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let (address, key) = (stack.address.clone(), stack.key.clone());
    let limit = Arc::new(tokio::sync::Semaphore::new(16));
    let senders: Vec<_> = (0..1_000)
        .map(|request| {
            let (http, address, key, limit, acknowledged) =
                (http.clone(), address.clone(), key.clone(), limit.clone(), acknowledged.clone());
            tokio::spawn(async move {
                let _permit = limit.acquire().await.expect("semaphore");
                let ids: Vec<String> = (0..100).map(|_| uuid::Uuid::now_v7().to_string()).collect();
                let batch: Vec<_> = ids
                    .iter()
                    .map(|id| {
                        json!({"type": "track", "event": "Crash test", "userId": id, "messageId": id,
                                     "properties": {"pad": "p".repeat(200)}})
                    })
                    .collect();
                let sent = http
                    .post(format!("{address}/v1/batch"))
                    .basic_auth(&key, Some(""))
                    .json(&json!({"batch": batch}))
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await;
                if sent.is_ok_and(|response| response.status() == 200) {
                    acknowledged.lock().expect("lock").extend(ids);
                }
                request
            })
        })
        .collect();
    // Midway: kill -9 once 30,000 events are acknowledged.
    let started = std::time::Instant::now();
    while acknowledged.lock().expect("lock").len() < 30_000 {
        assert!(started.elapsed() < Duration::from_secs(120), "the stack accepts events");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stored_at_kill = stack.crash_and_restart(&[]).await;
    for sender in senders {
        sender.await.expect("sender");
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    let wait = Duration::from_secs(120);
    // Requests in flight at the kill may or may not have been stored: at least the acknowledged.
    let deadline = std::time::Instant::now() + wait;
    while stack.count("SELECT COUNT(*) FROM events").await < acknowledged.len() as u64
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pool = mysql_async::Pool::new(stack.database_url.as_str());
    let mut conn = pool.get_conn().await.expect("connection");
    let ids: Vec<String> =
        mysql_async::prelude::Queryable::query(&mut conn, "SELECT message_id FROM events").await.expect("ids");
    let distinct: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(distinct.len(), ids.len(), "no event stored twice");
    let missing = acknowledged.iter().filter(|id| !distinct.contains(id.as_str())).count();
    println!(
        "kill -9: {} events acknowledged, {stored_at_kill} stored at the kill, {} stored after the restart, {missing} missing",
        acknowledged.len(),
        ids.len()
    );
    assert_eq!(missing, 0, "every acknowledged event is stored");
    drop(conn);
    pool.disconnect().await.ok();
}
