//! Failures of the services around us: the queue, the database. Nothing accepted is lost,
//! nothing is stored twice, nothing is acknowledged that was not queued.

use evtrack::keys::Scope;
use evtrack::queue::EventQueue;
use evtrack_consumer::Consumer;
use evtrack_ingest::Ingest;
use evtrack_tests::proxy::Proxy;
use evtrack_tests::*;
use http::StatusCode;
use serde_json::json;
use std::sync::Arc;

fn tracks(n: usize, prefix: &str) -> serde_json::Value {
    json!({"batch": track_messages(n, prefix, 300)})
}

fn mariadb_address() -> std::net::SocketAddr {
    let url = database_server_url();
    let host_port = url.trim_start_matches("mysql://").rsplit('@').next().unwrap_or("127.0.0.1:3306").to_string();
    std::net::ToSocketAddrs::to_socket_addrs(&host_port)
        .ok()
        .and_then(|mut addresses| addresses.next())
        .unwrap_or_else(|| panic!("cannot resolve {host_port}"))
}

/// Ingest → moto's SQS → consumer → MariaDB, the path the Lambdas take.
#[tokio::test]
async fn events_go_through_sqs_and_are_stored_once() {
    let db = TestDb::new().await;
    let (router, key, client, queue_url) = ingest_over_sqs(&db).await;
    // 1,200 events of ~400 bytes: more than one 256 KiB message.
    let reply = send(&router, post_json("/v1/batch", Some(&key), &tracks(1200, "sqs"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let messages = receive_all(&client, &queue_url).await;
    assert!(messages.len() >= 2, "packed into {} messages", messages.len());
    assert!(messages.iter().all(|m| m.body().unwrap_or_default().len() <= 256 * 1024));
    let event = sqs_event_of(&messages);
    let consumer = Consumer::new(db.store.clone(), &config(&db, &[]));
    for _ in 0..2 {
        assert!(consumer.handle(event.clone()).await.batch_item_failures.is_empty());
    }
    assert_eq!(db.count("events WHERE message_id LIKE 'sqs-%'").await, 1200, "1,200 events, each delivered twice");
}

#[tokio::test]
async fn queue_down_answers_503_and_acknowledges_nothing() {
    let db = TestDb::new().await;
    let config = config(&db, &[]);
    let (_, key) = project_with_key(&db, &config, Scope::Write).await;
    // Nothing listens on port 1.
    let client = sqs_client("http://127.0.0.1:1");
    let queue = sqs_queue(&client, "http://127.0.0.1:1/000000000000/missing");
    let router = evtrack_ingest::router(Arc::new(Ingest::new(&config, db.store.clone(), EventQueue::Sqs(queue))));
    let reply = send(&router, post_json("/v1/batch", Some(&key), &tracks(3, "down"))).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{}", reply.json);
    assert_eq!(reply.json["code"], "queue_unavailable");
    assert!(reply.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn a_full_local_queue_answers_503_instead_of_growing() {
    let app = TestApp::with(
        TestDb::new().await,
        &[("EVTRACK_LOCAL_QUEUE_CAPACITY", "2"), ("EVTRACK_QUEUE_SEND_TIMEOUT_MS", "50")],
    )
    .await;
    for i in 0..2 {
        let reply = app.send(post_json("/v1/batch", Some(&app.key), &tracks(1, &format!("q{i}")))).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let reply = app.send(post_json("/v1/batch", Some(&app.key), &tracks(1, "q3"))).await;
    assert_eq!(
        (reply.status, reply.json["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("queue_unavailable"))
    );
    assert!(app.consume_queued().await.is_empty());
    assert_eq!(app.db.count("events").await, 2, "the two accepted, not the refused one");
}

/// The database goes away while events arrive: ingest keeps accepting (its key check is
/// cached), the consumer reports failures, and once the database is back every accepted
/// event is stored exactly once.
#[tokio::test]
async fn database_down_while_events_arrive_loses_nothing() {
    let proxy = Proxy::start(mariadb_address()).await;
    let db = TestDb::on_server(&database_server_url_via(proxy.address)).await;
    let app = TestApp::with(db, &[]).await;
    let warm = app.send(post_json("/v1/batch", Some(&app.key), &tracks(10, "before"))).await;
    assert_eq!(warm.status, StatusCode::OK);

    proxy.cut().await;
    let during = app.send(post_json("/v1/batch", Some(&app.key), &tracks(40, "during"))).await;
    assert_eq!(during.status, StatusCode::OK, "ingest accepts while the database is down: {}", during.json);
    let messages = app.take_queued().await;
    let ids: Vec<String> = messages.iter().map(|m| m.id.clone()).collect();
    let mut failed = app.deliver(&messages).await;
    failed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(failed, expected, "every message is reported for redelivery");

    proxy.restore();
    // SQS redelivers everything reported, and (at least once) some of it twice.
    for _ in 0..2 {
        assert!(app.deliver(&messages).await.is_empty());
    }
    assert_eq!(app.db.count("events WHERE message_id LIKE 'before-%'").await, 10);
    assert_eq!(app.db.count("events WHERE message_id LIKE 'during-%'").await, 40);
}

#[tokio::test]
async fn an_unknown_key_while_the_database_is_down_gets_503_so_the_sdk_retries() {
    let proxy = Proxy::start(mariadb_address()).await;
    let db = TestDb::on_server(&database_server_url_via(proxy.address)).await;
    let app = TestApp::with(db, &[]).await;
    proxy.cut().await;
    let reply = app.send(post_json("/v1/batch", Some(&app.key), &tracks(1, "x"))).await;
    assert_eq!((reply.status, reply.json["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable")));
    assert!(app.take_queued().await.is_empty());
}

/// SQS refuses U+FFFE and U+FFFF in message bodies; an event holding them still gets through.
#[tokio::test]
async fn characters_sqs_refuses_are_carried_escaped() {
    let db = TestDb::new().await;
    let (router, key, client, queue_url) = ingest_over_sqs(&db).await;
    let body = json!({"batch": [{"type": "track", "event": "E", "userId": "u", "messageId": "nonchar",
                                 "properties": {"s": "a\u{FFFF}b\u{FFFE}"}}]});
    let reply = send(&router, post_json("/v1/batch", Some(&key), &body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let messages = receive_all(&client, &queue_url).await;
    let event = sqs_event_of(&messages);
    assert!(Consumer::new(db.store.clone(), &config(&db, &[])).handle(event).await.batch_item_failures.is_empty());
    let stored: Vec<String> = db.query("SELECT JSON_VALUE(properties, '$.s') FROM events").await;
    assert_eq!(stored, vec!["a\u{FFFF}b\u{FFFE}".to_string()]);
}

/// Faults one after another on the real queue protocol (moto's SQS), each service cut behind
/// a proxy: Redis, the queue endpoint, the database, a consumer that dies before deleting its
/// batch (so SQS delivers it again), and an erasure while the user's events are queued. Then
/// every acknowledged event is stored exactly once, every quarantined event is kept, and
/// nothing of the erased user is stored.
#[tokio::test]
async fn faults_on_the_sqs_path_lose_no_acknowledged_event_and_store_none_twice() {
    use evtrack::jobs::{JobRunner, Trigger};
    use evtrack::keys::ErasedIdHasher;
    let address = |url: &str| -> std::net::SocketAddr {
        let host = url.split("://").nth(1).unwrap_or(url).split('/').next().unwrap_or_default();
        std::net::ToSocketAddrs::to_socket_addrs(host).ok().and_then(|mut a| a.next()).expect("address")
    };
    let database = Proxy::start(mariadb_address()).await;
    let queue_endpoint = Proxy::start(address(&sqs_endpoint())).await;
    let redis = Proxy::start(address(&redis_url())).await;
    let db = TestDb::on_server(&database_server_url_via(database.address)).await;
    let redis_url = format!("redis://{}", redis.address);
    let config = config(&db, &[("EVTRACK_REDIS_URL", &redis_url), ("EVTRACK_RATE_LIMIT_EVENTS_PER_SECOND", "100000")]);
    let (project, key) = project_with_key(&db, &config, Scope::Write).await;
    let client = sqs_client(&format!("http://{}", queue_endpoint.address));
    let queue_url = fresh_queue(&client).await;
    let ingest = Ingest::new(&config, db.store.clone(), EventQueue::Sqs(sqs_queue(&client, &queue_url)));
    let router = evtrack_ingest::router(Arc::new(ingest));
    let consumer = Consumer::new(db.store.clone(), &config);
    let mut acknowledged: Vec<String> = Vec::new();
    let mut quarantined = 0;
    // 50 events and one bad one per request; the client keeps what was acknowledged.
    let request = |prefix: &str, user: &str| {
        let mut batch: Vec<serde_json::Value> = (0..50)
            .map(|i| json!({"type": "track", "event": "E", "userId": user, "messageId": format!("{prefix}-{i}")}))
            .collect();
        batch.push(json!({"type": "track", "userId": user, "messageId": format!("{prefix}-bad")}));
        let ids: Vec<String> = (0..50).map(|i| format!("{prefix}-{i}")).collect();
        (post_json("/v1/batch", Some(&key), &json!({"batch": batch})), ids)
    };
    let mut send = async |prefix: &str, user: &str| {
        let (http_request, ids) = request(prefix, user);
        let reply = send(&router, http_request).await;
        if reply.status == StatusCode::OK {
            acknowledged.extend(ids);
            quarantined += 1;
        }
        reply.status
    };
    assert_eq!(send("normal", "u1").await, StatusCode::OK);
    redis.cut().await;
    assert_eq!(send("redis-down", "u1").await, StatusCode::OK, "rate limits count per instance without Redis");
    queue_endpoint.cut().await;
    assert_eq!(send("queue-down", "u1").await, StatusCode::SERVICE_UNAVAILABLE, "not acknowledged");
    queue_endpoint.restore();
    assert_eq!(send("queue-down", "u1").await, StatusCode::OK, "the SDK's retry");
    assert_eq!(send("erase-me-before", "erase-me").await, StatusCode::OK);
    let receiver = sqs_client(&sqs_endpoint());
    let first = receive_all(&receiver, &queue_url).await;

    // The database goes away: every message is reported failed, SQS keeps them.
    database.cut().await;
    let failed = consumer.handle(sqs_event_of(&first)).await.batch_item_failures.len();
    assert_eq!(failed, first.len(), "nothing stored, all kept for redelivery");
    database.restore();
    // A consumer that stores half the batch and dies before deleting it: all of it again.
    let half = &first[..first.len() / 2];
    assert!(consumer.handle(sqs_event_of(half)).await.batch_item_failures.is_empty());
    assert!(consumer.handle(sqs_event_of(&first)).await.batch_item_failures.is_empty());

    // Erasure while more of the user's events are queued.
    let project_id = db.store.project_id(project).await.expect("lookup").expect("project");
    db.store.request_erasure(project_id, "erase-me", &ErasedIdHasher::from_config(&config)).await.expect("erasure");
    assert_eq!(send("erase-me-after", "erase-me").await, StatusCode::OK);
    let second = receive_all(&receiver, &queue_url).await;
    assert!(consumer.handle(sqs_event_of(&second)).await.batch_item_failures.is_empty());
    let cleanup = evtrack_cleanup::in_process(db.store.clone(), &config);
    cleanup.run(Trigger::new(chrono::Utc::now(), "test")).await.expect("cleanup runs");

    let kept: Vec<&String> = acknowledged.iter().filter(|id| !id.starts_with("erase-me")).collect();
    let stored: Vec<String> = db.query("SELECT message_id FROM events").await;
    let distinct: std::collections::HashSet<&str> = stored.iter().map(String::as_str).collect();
    assert_eq!(distinct.len(), stored.len(), "no event stored twice");
    assert!(kept.iter().all(|id| distinct.contains(id.as_str())), "every acknowledged event stored");
    assert_eq!(stored.len(), kept.len(), "and nothing else");
    assert_eq!(db.count("events WHERE user_id = 'erase-me'").await, 0, "nothing of the erased user");
    // The erased user's quarantined events go with the erasure; the others are kept.
    let rejected = db.count("rejected_events").await;
    assert_eq!(rejected, quarantined - 2, "every other quarantined event kept");
    println!(
        "faults: {} events acknowledged ({} of the erased user), {} stored once each, {rejected} quarantined kept, \
         the first batch delivered 3 times ({} messages)",
        acknowledged.len(),
        acknowledged.len() - kept.len(),
        stored.len(),
        first.len()
    );
}
