//! The consumer handler the Lambda runs: exactly once under redelivery, retries and
//! concurrency; poison kept with its reason; profiles merged in event-time order.

use chrono::{Duration, SecondsFormat, Utc};
use evtrack_tests::*;
use serde_json::json;

async fn queue_batch(app: &TestApp, events: serde_json::Value) -> Vec<evtrack::queue::local::QueuedMessage> {
    let reply = app.send(post_json("/v1/batch", Some(&app.key), &json!({"batch": events}))).await;
    assert_eq!(reply.status, http::StatusCode::OK, "{}", reply.json);
    app.take_queued().await
}

fn tracks(n: usize, prefix: &str) -> serde_json::Value {
    json!(track_messages(n, prefix, 0))
}

#[tokio::test]
async fn duplicate_delivery_stores_one_row() {
    let app = TestApp::new().await;
    let messages = queue_batch(&app, tracks(50, "dup")).await;
    for _ in 0..3 {
        assert!(app.deliver(&messages).await.is_empty());
    }
    assert_eq!(app.db.count("events").await, 50, "50 events delivered 3 times");
}

#[tokio::test]
async fn a_retried_client_batch_stores_one_row_per_event() {
    let app = TestApp::new().await;
    let first = queue_batch(&app, tracks(20, "retry")).await;
    let second = queue_batch(&app, tracks(20, "retry")).await;
    let mut both = first;
    both.extend(second);
    assert!(app.deliver(&both).await.is_empty());
    assert_eq!(app.db.count("events").await, 20, "a batch sent twice, 20 rows");
}

#[tokio::test]
async fn concurrent_consumers_store_each_event_once() {
    let app = TestApp::new().await;
    let messages = queue_batch(&app, tracks(300, "conc")).await;
    let event = sqs_event(&messages);
    let runs = (0..4).map(|_| app.consumer.handle(event.clone()));
    for response in futures::future::join_all(runs).await {
        assert!(response.batch_item_failures.is_empty());
    }
    assert_eq!(app.db.count("events").await, 300, "4 concurrent consumers of the same 300 events");
}

#[tokio::test]
async fn a_poison_message_is_kept_with_its_reason_and_the_rest_is_stored() {
    let app = TestApp::new().await;
    let good = queue_batch(&app, tracks(5, "good")).await;
    // Made as ingest would (sealed), but broken inside.
    let seal = evtrack::queue::EnvelopeSeal::from_config(&app.config);
    let mut envelope: serde_json::Value = serde_json::from_str(&good[0].body).expect("envelope");
    envelope.as_object_mut().expect("object").remove("sig");
    let mut half_bad = envelope.clone();
    half_bad["events"][1] = json!({"message_id": "bad", "type": "track"});
    let mut unknown_project = envelope.clone();
    unknown_project["project"] = json!(uuid::Uuid::now_v7());
    let event = evtrack::queue::sqs::lambda_event([
        sqs_message("good", Some(&good[0].body)),
        sqs_message("not-json", Some(&seal.seal("{{{ not json }".into()))),
        sqs_message("no-body", None),
        sqs_message("unknown-project", Some(&seal.seal(unknown_project.to_string()))),
        sqs_message("half-bad", Some(&seal.seal(half_bad.to_string().replace("good-", "half-")))),
    ]);
    for _ in 0..2 {
        let response = app.consumer.handle(event.clone()).await;
        assert!(response.batch_item_failures.is_empty(), "poison is not retried");
    }
    assert_eq!(app.db.count("events WHERE message_id LIKE 'good-%'").await, 5);
    assert_eq!(
        app.db.count("events WHERE message_id LIKE 'half-%'").await,
        4,
        "the other events of the half-bad message"
    );
    let rejected: Vec<(String, i32, String)> = app
        .db
        .query("SELECT queue_message_id, item_index, reason FROM rejected_events ORDER BY queue_message_id")
        .await;
    let summary: Vec<(&str, i32)> = rejected.iter().map(|(id, index, _)| (id.as_str(), *index)).collect();
    assert_eq!(
        summary,
        vec![("half-bad", 1), ("no-body", -1), ("not-json", -1), ("unknown-project", -1)],
        "recorded once despite redelivery"
    );
    assert!(rejected[0].2.contains("event"), "{}", rejected[0].2);
    assert!(rejected[2].2.contains("undecodable envelope"), "{}", rejected[2].2);
    assert!(rejected[3].2.contains("unknown project"), "{}", rejected[3].2);
    // A purged project's data went with it: the message naming it is not kept.
    assert_eq!(app.db.count("rejected_events WHERE queue_message_id = 'unknown-project' AND LENGTH(raw) = 0").await, 1);
}

#[tokio::test]
async fn identify_traits_merge_by_event_time_whatever_the_delivery_order() {
    let app = TestApp::new().await;
    let at = |minutes: i64| (Utc::now() - Duration::minutes(minutes)).to_rfc3339_opts(SecondsFormat::Millis, true);
    let older = queue_batch(&app, json!([{"type": "identify", "userId": "u", "messageId": "i-old", "timestamp": at(10), "traits": {"plan": "free", "name": "Ada"}}])).await;
    let newer = queue_batch(&app, json!([{"type": "identify", "userId": "u", "messageId": "i-new", "timestamp": at(1), "traits": {"plan": "pro"}}])).await;
    // Newer first, then older, then the newer again (a redelivery).
    for messages in [&newer, &older, &newer] {
        assert!(app.deliver(messages).await.is_empty());
    }
    let traits: Vec<String> = app.db.query("SELECT traits FROM users WHERE user_id = 'u'").await;
    let traits: serde_json::Value = serde_json::from_str(&traits[0]).expect("json");
    assert_eq!(traits, json!({"plan": "pro", "name": "Ada"}));
}

#[tokio::test]
async fn alias_links_the_previous_id() {
    let app = TestApp::new().await;
    let messages =
        queue_batch(&app, json!([{"type": "alias", "previousId": "anon-9", "userId": "u-9", "messageId": "a-1"}]))
            .await;
    assert!(app.deliver(&messages).await.is_empty());
    let aliases: Vec<(String, String, String)> = app.db.query("SELECT alias, user_id, source FROM aliases").await;
    assert_eq!(aliases, vec![("anon-9".into(), "u-9".into(), "alias".into())]);
}

#[tokio::test]
async fn a_message_forged_onto_the_queue_is_rejected_not_stored_under_the_project_it_names() {
    let app = TestApp::new().await;
    let genuine = queue_batch(&app, tracks(1, "genuine")).await.remove(0);
    let event = json!({"type": "track", "userId": "u", "event": "Forged", "messageId": "forged-1"});
    let head = json!({"v": 2, "project": app.project, "key": uuid::Uuid::now_v7(),
                      "received_at": "2026-12-01T00:00:00Z", "ip": null, "events": [event]});
    // Unsealed; with a made-up seal; a genuine message with its event swapped.
    let unsealed = head.to_string();
    let made_up = format!("{},\"sig\":\"{}\"}}", &unsealed[..unsealed.len() - 1], "ab".repeat(32));
    let swapped = genuine.body.replace("genuine-0", "forged-2");
    assert_ne!(swapped, genuine.body);
    let forged: Vec<evtrack::queue::local::QueuedMessage> = [unsealed, made_up, swapped]
        .into_iter()
        .enumerate()
        .map(|(n, body)| evtrack::queue::local::QueuedMessage { id: format!("forged-{n}"), body, receive_count: 1 })
        .collect();
    assert!(app.deliver(&forged).await.is_empty(), "refused for good, not retried");
    assert_eq!(app.db.count("events").await, 0, "nothing stored under the project named");
    let reasons: Vec<(Option<u64>, String)> =
        app.db.query("SELECT project_id, reason FROM rejected_events ORDER BY queue_message_id").await;
    assert_eq!(reasons.len(), 3);
    for (project, reason) in reasons.into_iter().take(3) {
        assert_eq!(project, None, "the project it names is not trusted");
        assert!(reason.contains("seal"), "{reason}");
    }
    // A genuine message replayed after the queue's retention (it could bring back what was
    // erased since) is refused too.
    let seal = evtrack::queue::EnvelopeSeal::from_config(&app.config);
    let mut old: serde_json::Value = serde_json::from_str(&genuine.body).expect("envelope");
    old.as_object_mut().expect("object").remove("sig");
    old["received_at"] = json!((Utc::now() - Duration::days(20)).to_rfc3339());
    let stale =
        evtrack::queue::local::QueuedMessage { id: "stale".into(), body: seal.seal(old.to_string()), receive_count: 1 };
    assert!(app.deliver(&[stale]).await.is_empty());
    assert_eq!(app.db.count("rejected_events WHERE reason_code = 'stale_envelope' AND LENGTH(raw) = 0").await, 1);
    assert_eq!(app.db.count("events").await, 0);
    // The genuine message is stored.
    assert!(app.deliver(&[genuine]).await.is_empty());
    assert_eq!(app.db.count("events WHERE message_id = 'genuine-0'").await, 1);
}

/// A rejection the database refuses (here for its batch's fields, nested past what its JSON
/// check takes) holds back no other message's rejections: each is then recorded on its own,
/// the refused one without its batch's fields.
#[tokio::test]
async fn a_rejection_the_database_refuses_holds_back_no_other_message() {
    let app = TestApp::new().await;
    let nameless = |id: &str| json!({"type": "track", "userId": "u", "messageId": id});
    let batch = |events: serde_json::Value| json!({"batch": events, "context": {"library": {"name": "x"}}});
    let reply =
        app.send(post_json("/v1/batch", Some(&app.key), &batch(json!([nameless("n-1"), tracks(3, "ok")[0]])))).await;
    assert_eq!(reply.status, http::StatusCode::OK, "{}", reply.json);
    let first = app.take_queued().await;
    let reply = app.send(post_json("/v1/batch", Some(&app.key), &batch(json!([nameless("n-2")])))).await;
    assert_eq!(reply.status, http::StatusCode::OK, "{}", reply.json);
    let second = app.take_queued().await;
    assert_eq!((first.len(), second.len()), (2, 1), "events and quarantine travel apart");

    // The first request's quarantine message, as if its context had been nested 40 deep.
    let seal = evtrack::queue::EnvelopeSeal::from_config(&app.config);
    let (quarantine, events): (Vec<_>, Vec<_>) = first.into_iter().partition(|m| m.body.contains("\"rejected\":[{"));
    let mut envelope: serde_json::Value = serde_json::from_str(&quarantine[0].body).expect("envelope");
    envelope.as_object_mut().expect("object").remove("sig");
    envelope["batch"]["context"] = (0..40).fold(json!(1), |inner, _| json!({"n": inner}));
    let poisoned = evtrack::queue::local::QueuedMessage {
        id: "poisoned".into(),
        body: seal.seal(envelope.to_string()),
        receive_count: 1,
    };
    let mut delivery = events;
    delivery.push(poisoned);
    delivery.extend(second);
    assert_eq!(app.deliver(&delivery).await, Vec::<String>::new(), "every message done");
    assert_eq!(app.db.count("events").await, 1);
    let kept: Vec<(String, Option<String>, String)> = app
        .db
        .query("SELECT queue_message_id, batch_fields, reason FROM rejected_events ORDER BY queue_message_id")
        .await;
    assert_eq!(kept.len(), 2, "{kept:?}");
    let poisoned = kept.iter().find(|(id, _, _)| id == "poisoned").expect("the poisoned message's rejection");
    assert_eq!(poisoned.1, None);
    assert!(poisoned.2.contains("not kept"), "{}", poisoned.2);
    let other = kept.iter().find(|(id, _, _)| id != "poisoned").expect("the other message's rejection");
    assert!(other.1.as_deref().is_some_and(|fields| fields.contains("library")), "{other:?}");
}

/// Batches that identify the same users and put them in the same groups, in different orders
/// (Segment group calls; PostHog events naming companies and teams, some new, and the
/// companies' `$groupidentify`), lock the profiles and memberships in one order (the key's),
/// so that concurrent consumers neither deadlock nor roll back and retry.
#[tokio::test]
async fn concurrent_batches_of_the_same_users_in_other_orders_do_not_deadlock() {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let app = TestApp::new().await;
    let users: Vec<String> = (0..40).map(|n| format!("user-{n:02}")).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut bodies = Vec::new();
    for batch in 0..8 {
        let mut order = users.clone();
        order.shuffle(&mut rng);
        let events: Vec<serde_json::Value> = order
            .iter()
            .enumerate()
            .flat_map(|(n, user)| {
                [
                    json!({"type": "identify", "userId": user, "traits": {"batch": batch}, "messageId": format!("{batch}-{user}")}),
                    json!({"type": "group", "userId": user, "groupId": format!("g-{}", n % 10), "traits": {"batch": batch},
                        "messageId": format!("{batch}-{user}-g")}),
                ]
            })
            .collect();
        let queued = queue_batch(&app, json!(events)).await;
        assert_eq!(queued.len(), 1, "one queue message a batch");
        bodies.push(queued[0].body.clone());
        order.shuffle(&mut rng);
        let events: Vec<serde_json::Value> = order
            .iter()
            .enumerate()
            .map(|(n, user)| {
                json!({"event": "clicked", "distinct_id": user, "uuid": uuid::Uuid::now_v7().to_string(),
                    "properties": {"$groups": {"company": format!("g-{}", n % 10), "team": format!("t-{}", n % 7)}}})
            })
            // And the companies' traits (`$groupidentify`), which other batches' `$groups` name.
            .chain((0..10).map(|n| {
                json!({"event": "$groupidentify", "distinct_id": format!("$company_g-{n}"), "uuid": uuid::Uuid::now_v7().to_string(),
                    "properties": {"$group_type": "company", "$group_key": format!("g-{n}"), "$group_set": {"batch": batch}}})
            }))
            .collect();
        let body = json!({"api_key": app.key, "batch": events});
        assert_eq!(app.send(post_json("/batch/", None, &body)).await.status, http::StatusCode::OK);
        let queued = app.take_queued().await;
        assert_eq!(queued.len(), 1, "one queue message a batch");
        bodies.push(queued[0].body.clone());
    }
    let runs = bodies.iter().enumerate().map(|(n, body)| {
        let id = n.to_string();
        let app = &app;
        async move { app.consumer.process(&[evtrack_consumer::QueueMessage { id: &id, body: Some(body) }]).await }
    });
    let reports = futures::future::join_all(runs).await;
    for report in &reports {
        assert!(report.failed.is_empty(), "{report:?}");
    }
    let conflicts: Vec<u64> = reports.iter().map(|report| report.lock_conflicts).collect();
    assert_eq!(conflicts, [0; 16], "rolled back for a lock conflict");
    assert_eq!(app.db.count("events").await, 8 * 130);
    assert_eq!(app.db.count("users").await, 40);
    // Segment's g-0 … g-9 (no type) are not PostHog's company g-0 … g-9; and team t-0 … t-6.
    assert_eq!(app.db.count("group_profiles").await, 27);
    let in_teams: Vec<u64> =
        app.db.query("SELECT COUNT(DISTINCT member_id) FROM group_members WHERE group_id LIKE 't-%'").await;
    assert_eq!(in_teams, [40], "every user in a team");
}

/// A profile's traits stop growing at `PROFILE_TRAITS_MAX_BYTES`: an identify that could take
/// them past it is stored as an event, leaves the traits as they were, and the profile says
/// when that happened.
#[tokio::test]
async fn an_identify_that_would_take_a_profile_past_its_cap_leaves_the_traits_and_says_so() {
    let app = TestApp::new().await;
    let value = "x".repeat(30_000);
    // Each identify adds a key of 30 KB: the ninth (dated an hour ahead) would take the traits
    // past 256 KiB.
    let ahead = (Utc::now() + Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Millis, true);
    for n in 0..9 {
        let mut identify = json!({"type": "identify", "userId": "big", "traits": {format!("k{n}"): value}, "messageId": format!("big-{n}")});
        if n == 8 {
            identify["timestamp"] = json!(ahead);
        }
        let messages = queue_batch(&app, json!([identify])).await;
        assert!(app.deliver(&messages).await.is_empty());
    }
    assert_eq!(app.db.count("events WHERE user_id = 'big'").await, 9, "every identify is stored as an event");
    let (bytes, keys): (u64, u64) =
        app.db.query("SELECT LENGTH(traits), JSON_LENGTH(traits) FROM users WHERE user_id = 'big'").await[0];
    assert_eq!(keys, 8, "the ninth key left out");
    assert!(bytes as usize <= evtrack::store::PROFILE_TRAITS_MAX_BYTES, "{bytes}");
    let path = format!("/v1/users/big?project={}", app.project);
    let profile = app.send(api_request("GET", &path, &app.admin, None)).await;
    assert_eq!(profile.status, http::StatusCode::OK, "{}", profile.json);
    assert!(profile.json["traitsCappedAt"].is_string(), "{}", profile.json["traitsCappedAt"]);
    assert!(profile.json["traits"]["k7"].is_string() && profile.json["traits"]["k8"].is_null());

    // A call that does not grow them still changes them, and wins over the traits before the
    // refused call (whose later time the profile did not take).
    let update = json!({"type": "identify", "userId": "big", "traits": {"k0": "short"}, "messageId": "big-update"});
    assert!(app.deliver(&queue_batch(&app, json!([update])).await).await.is_empty());
    let profile = app.send(api_request("GET", &path, &app.admin, None)).await;
    let k0 = profile.json["traits"]["k0"].as_str().unwrap_or_default();
    assert!(k0 == "short", "k0 kept its {} bytes", k0.len());

    // Another user's profile is not capped, and says nothing of it.
    let small = json!({"type": "identify", "userId": "small", "traits": {"plan": "pro"}, "messageId": "small-1"});
    assert!(app.deliver(&queue_batch(&app, json!([small])).await).await.is_empty());
    let path = format!("/v1/users/small?project={}", app.project);
    let profile = app.send(api_request("GET", &path, &app.admin, None)).await;
    assert_eq!(profile.json["traits"], json!({"plan": "pro"}));
    assert!(profile.json.get("traitsCappedAt").is_none(), "{}", profile.json);
}

/// A message queued by the release before group types (its events' `member_of` without
/// `member_types`, its `$groupidentify` without `group_type`), consumed after the deploy: its
/// groups are typed from the `$groups` and `$group_type` its events kept, as the same batch
/// queued by this release would be.
#[tokio::test]
async fn a_message_of_the_release_before_group_types_joins_the_typed_groups() {
    let app = TestApp::new().await;
    // The earlier release's traits are the newer ones: they stand only if its call was typed.
    let batch = |user: &str, seats: u32, at: &str| {
        json!({"api_key": app.key, "batch": [
            {"event": "$groupidentify", "distinct_id": "$company_42", "timestamp": at,
             "properties": {"$group_type": "company", "$group_key": "42", "$group_set": {"seats": seats}}},
            {"event": "clicked", "distinct_id": user, "timestamp": "2026-12-01T09:00:00Z",
             "properties": {"$groups": {"company": "42", "project": "42"}}},
        ]})
    };
    let reply = app.send(post_json("/batch/", None, &batch("u-old", 5, "2026-12-01T08:00:00Z"))).await;
    assert_eq!(reply.status, http::StatusCode::OK, "{}", reply.json);
    let seal = evtrack::queue::EnvelopeSeal::from_config(&app.config);
    let mut stripped = 0;
    let earlier: Vec<evtrack::queue::local::QueuedMessage> = app
        .take_queued()
        .await
        .into_iter()
        .map(|message| {
            let mut envelope: serde_json::Value = serde_json::from_str(&message.body).expect("envelope");
            envelope.as_object_mut().expect("object").remove("sig");
            for event in envelope["events"].as_array_mut().expect("events") {
                let event = event.as_object_mut().expect("event");
                stripped +=
                    event.remove("member_types").is_some() as usize + event.remove("group_type").is_some() as usize;
            }
            evtrack::queue::local::QueuedMessage { body: seal.seal(envelope.to_string()), ..message }
        })
        .collect();
    // The click's types, the `$groupidentify`'s type and its (empty) member types.
    assert_eq!(stripped, 3, "the types this release queues, taken out");
    assert!(app.deliver(&earlier).await.is_empty());
    let reply = app.send(post_json("/batch/", None, &batch("u-new", 4, "2026-12-01T07:00:00Z"))).await;
    assert_eq!(reply.status, http::StatusCode::OK, "{}", reply.json);
    assert!(app.consume_queued().await.is_empty());

    let members: Vec<(String, String, String)> =
        app.db.query("SELECT group_id, group_type, member_id FROM group_members ORDER BY 1, 2, 3").await;
    let expected = [
        ("42", "company", "u-new"),
        ("42", "company", "u-old"),
        ("42", "project", "u-new"),
        ("42", "project", "u-old"),
    ];
    let expected: Vec<(String, String, String)> =
        expected.iter().map(|(id, kind, member)| (id.to_string(), kind.to_string(), member.to_string())).collect();
    assert_eq!(members, expected, "both releases' events join the same typed groups");
    let groups: Vec<(String, String, Option<String>)> = app
        .db
        .query("SELECT group_id, group_type, JSON_EXTRACT(traits, '$.seats') FROM group_profiles ORDER BY 1, 2")
        .await;
    assert_eq!(
        groups,
        vec![("42".into(), "company".into(), Some("5".into())), ("42".into(), "project".into(), None)],
        "one company 42 with the earlier release's (newer) traits, no untyped twin"
    );
}
