//! The read side's lists (`GET /v1/events`, `/v1/users/{id}/events`, `/v1/events/live`,
//! `/v1/users`, `/v1/groups`) against real MariaDB: every filter answers what the same question asked of
//! every sent event answers, page after page, with pages cut short by the bound on rows
//! examined; and no list shows another project's data.

use crate::lifecycle::batch;
use evtrack::ids::ProjectId;
use evtrack::keys::Scope;
use evtrack::store::{EventFilter, EventPosition};
use evtrack_tests::{TestApp, TestDb, api_request, issue_key};
use http::StatusCode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::HashSet;
use uuid::Uuid;

const USERS: [&str; 3] = ["u-ada", "u-bob", "u-cy"];
const TRACK_NAMES: [&str; 4] = ["Signed Up", "Viewed", "Bought", "a%b_c"];
const PAGE_NAMES: [&str; 2] = ["Home", "Pricing"];

/// `count` events of a few users and anonymous visitors, with ties in time, names with LIKE
/// wildcards and properties of every JSON kind a filter meets.
fn events(run: &str, count: usize, rng: &mut StdRng) -> Vec<Value> {
    let base = chrono::Utc::now() - chrono::Duration::days(2);
    let tied = [base + chrono::Duration::seconds(100), base + chrono::Duration::seconds(7_000)];
    let mut sent = Vec::new();
    for (index, user) in USERS.iter().enumerate() {
        // The identify that links the user's browser to the user.
        sent.push(
            json!({"type": "identify", "userId": format!("{user}-{run}"), "anonymousId": format!("anon-{index}-{run}"),
            "traits": {"plan": if index == 0 { json!("pro") } else { json!(null) }},
            "timestamp": base.to_rfc3339(), "messageId": format!("{run}-identify-{index}")}),
        );
    }
    for n in 0..count {
        let at = if rng.random_bool(0.2) {
            tied[rng.random_range(0..2)]
        } else {
            base + chrono::Duration::milliseconds(rng.random_range(0..36 * 3_600_000))
        };
        let who = rng.random_range(0..5);
        let (user_id, anonymous_id) = match who {
            0..=2 if rng.random_bool(0.7) => {
                (json!(format!("{}-{run}", USERS[who])), json!(format!("anon-{who}-{run}")))
            }
            // A browser shared with another user: its anonymous id on that user's events, which
            // are not this user's (a timeline walks past them).
            0..=2 if rng.random_bool(0.3) => {
                (json!(format!("{}-{run}", USERS[(who + 1) % 3])), json!(format!("anon-{who}-{run}")))
            }
            0..=2 => (Value::Null, json!(format!("anon-{who}-{run}"))),
            _ => (Value::Null, json!(format!("anon-z{who}-{run}"))),
        };
        // None: not sent; Some(null): sent as a JSON null.
        let plan = [Some(json!("pro")), Some(json!("free")), Some(json!("Pro")), Some(Value::Null), None];
        let number = [Some(json!(1)), Some(json!(2)), Some(json!(10)), Some(json!("10")), Some(json!(10.0)), None];
        let tag = ["50%off", "x_y", "plain"][rng.random_range(0..3)];
        let mut properties = json!({"tag": tag});
        if let Some(plan) = &plan[rng.random_range(0..5)] {
            properties["plan"] = plan.clone();
        }
        if let Some(number) = &number[rng.random_range(0..number.len())] {
            properties["n"] = number.clone();
        }
        let mut event = json!({"userId": user_id, "anonymousId": anonymous_id, "properties": properties,
            "context": {"page": {"path": format!("/p/{}", n % 7)}},
            "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), "messageId": format!("{run}-{n}")});
        if rng.random_bool(0.25) {
            event["type"] = json!("page");
            event["name"] = json!(PAGE_NAMES[rng.random_range(0..2)]);
        } else {
            event["type"] = json!("track");
            event["event"] = json!(TRACK_NAMES[rng.random_range(0..4)]);
        }
        sent.push(event);
    }
    sent
}

/// A filter of the test, as query parameters and as a check of one sent event.
struct Question {
    query: String,
    /// For `user_id`: the user and its anonymous id.
    subjects: Option<[String; 2]>,
    check: Box<dyn Fn(&Value) -> bool>,
}

fn name_of(event: &Value) -> Option<&str> {
    event.get("event").or_else(|| event.get("name")).and_then(Value::as_str)
}

/// A JSON value as text, as `JSON_UNQUOTE` gives it.
fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn document<'a>(event: &'a Value, path: &str) -> Option<&'a Value> {
    let (document, key) = path.split_once('.').expect("document.key");
    event.get(document)?.get(key)
}

fn eq(value: Option<&Value>, wanted: &str) -> bool {
    let Some(value) = value else { return false };
    text(value) == wanted || (value.is_number() && wanted.parse::<f64>().ok() == value.as_f64())
}

fn questions(run: &str, from: &str, to: &str) -> Vec<Question> {
    let at = |event: &Value| event["timestamp"].as_str().unwrap_or_default().to_string();
    let (from_at, to_at) = (from.to_string(), to.to_string());
    let q = |query: &str, check: Box<dyn Fn(&Value) -> bool>| Question { query: query.into(), subjects: None, check };
    let user = format!("{}-{run}", USERS[1]);
    let anonymous = format!("anon-1-{run}");
    let visitor = format!("anon-z3-{run}");
    vec![
        q("", Box::new(|_| true)),
        q("type=track", Box::new(|e| e["type"] == "track")),
        q("name=Bought", Box::new(|e| name_of(e) == Some("Bought"))),
        q(
            "type=track&name=Bought&name=Viewed",
            Box::new(|e| e["type"] == "track" && matches!(name_of(e), Some("Bought" | "Viewed"))),
        ),
        q("name=Home", Box::new(|e| name_of(e) == Some("Home"))),
        q("name=a%25b_c", Box::new(|e| name_of(e) == Some("a%b_c"))),
        q("type=identify,page", Box::new(|e| e["type"] == "identify" || e["type"] == "page")),
        q(&format!("anonymous_id={visitor}"), Box::new(move |e| e["anonymousId"] == visitor.as_str())),
        q("where=properties.plan:eq:pro", Box::new(|e| eq(document(e, "properties.plan"), "pro"))),
        q("where=properties.plan:neq:pro", Box::new(|e| !eq(document(e, "properties.plan"), "pro"))),
        q("where=properties.n:eq:10", Box::new(|e| eq(document(e, "properties.n"), "10"))),
        q("where=properties.n:neq:10", Box::new(|e| !eq(document(e, "properties.n"), "10"))),
        q(
            "where=properties.n:lt:1.5",
            Box::new(|e| document(e, "properties.n").and_then(Value::as_f64).is_some_and(|n| n < 1.5)),
        ),
        q(
            "where=properties.n:gt:1&where=properties.n:lt:10",
            Box::new(|e| document(e, "properties.n").and_then(Value::as_f64).is_some_and(|n| n > 1.0 && n < 10.0)),
        ),
        q(
            "where=properties.tag:contains:50%25",
            Box::new(|e| document(e, "properties.tag").is_some_and(|tag| text(tag).contains("50%"))),
        ),
        q(
            "where=properties.tag:contains:_",
            Box::new(|e| document(e, "properties.tag").is_some_and(|tag| text(tag).contains('_'))),
        ),
        q(
            "where=properties.plan:is_set",
            Box::new(|e| document(e, "properties.plan").is_some_and(|plan| !plan.is_null())),
        ),
        q("where=traits.plan:is_set", Box::new(|e| document(e, "traits.plan").is_some_and(|plan| !plan.is_null()))),
        q("where=context.page.path:eq:/p/3", Box::new(|e| e["context"]["page"]["path"] == "/p/3")),
        q(
            &format!("type=page&from={from}&to={to}"),
            Box::new(move |e| e["type"] == "page" && at(e) >= from_at && at(e) < to_at),
        ),
        Question {
            query: format!("user_id={user}"),
            subjects: Some([user.clone(), anonymous.clone()]),
            check: Box::new(|_| true),
        },
        Question {
            query: format!("user_id={user}&where=properties.plan:eq:free&type=track"),
            subjects: Some([user, anonymous]),
            check: Box::new(|e| e["type"] == "track" && eq(document(e, "properties.plan"), "free")),
        },
    ]
}

/// Every page of `path` with `limit` items each: the messageIds in order, and how many pages
/// came back short with a cursor.
async fn walk(app: &TestApp, key: &str, path: &str, limit: usize) -> (Vec<String>, usize, Vec<String>) {
    let (mut ids, mut short, mut times) = (Vec::new(), 0, Vec::new());
    let mut cursor: Option<String> = None;
    for _ in 0..2_000 {
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut uri = format!("{path}{separator}limit={limit}");
        if let Some(cursor) = &cursor {
            uri.push_str(&format!("&cursor={cursor}"));
        }
        let reply = app.send(api_request("GET", &uri, key, None)).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.json);
        let data = reply.json["data"].as_array().expect("data");
        for event in data {
            ids.push(event["messageId"].as_str().expect("messageId").to_string());
            times.push(event["timestamp"].as_str().expect("timestamp").to_string());
        }
        cursor = reply.json["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            return (ids, short, times);
        }
        if data.len() < limit {
            short += 1;
        }
    }
    panic!("{path}: no end after 2,000 pages");
}

#[tokio::test]
async fn every_event_filter_answers_what_the_same_question_of_every_event_answers_page_after_page() {
    // A small bound on rows examined, so that filtered pages come back short.
    let app = TestApp::with(TestDb::new().await, &[("EVTRACK_LIST_ROWS_EXAMINED", "40")]).await;
    let run = uuid::Uuid::now_v7().simple().to_string()[..12].to_string();
    let mut rng = StdRng::seed_from_u64(0x11575);
    let sent = events(&run, 500, &mut rng);
    for chunk in sent.chunks(100) {
        let reply = app.send(batch(&app.key, chunk.to_vec())).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    }
    assert!(app.consume_queued().await.is_empty());
    let project = app.project;
    let (_, read) = issue_key(&app.db.store, &app.config, Some(project), Scope::Read, "read").await;
    let read = read.reveal().to_string();

    // Soft-deleted events leave every list.
    let mut deleted = HashSet::new();
    for n in [3, 50, 51, 200, 333] {
        let message_id = format!("{run}-{n}");
        let uids: Vec<Vec<u8>> =
            app.db.query(&format!("SELECT uid FROM events WHERE message_id = '{message_id}'")).await;
        let uid = uuid::Uuid::from_slice(&uids[0]).expect("uid");
        let path = format!("/v1/events/{uid}?project={project}");
        assert_eq!(app.send(api_request("DELETE", &path, &app.admin, None)).await.status, StatusCode::OK);
        deleted.insert(message_id);
    }

    let from = (chrono::Utc::now() - chrono::Duration::hours(40)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let to = (chrono::Utc::now() - chrono::Duration::hours(30)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (mut checked, mut short_pages) = (0, 0);
    for question in questions(&run, &from, &to) {
        let subjects = question.subjects.clone();
        let belongs = |event: &Value| match &subjects {
            None => true,
            Some(ids) => {
                let is = |field: &str| event[field].as_str().is_some_and(|id| ids.iter().any(|own| own == id));
                is("userId") || (event["userId"].is_null() && is("anonymousId"))
            }
        };
        let mut expected: Vec<&Value> = sent
            .iter()
            .filter(|event| !deleted.contains(event["messageId"].as_str().unwrap_or_default()))
            .filter(|event| belongs(event) && (question.check)(event))
            .collect();
        expected.sort_by_key(|event| {
            std::cmp::Reverse(
                chrono::DateTime::parse_from_rfc3339(event["timestamp"].as_str().unwrap_or_default()).expect("time"),
            )
        });
        let query = question.query.replace(' ', "%20");
        for (key, path) in [
            (read.as_str(), format!("/v1/events?{query}")),
            (app.admin.as_str(), format!("/v1/events?project={project}&{query}")),
        ] {
            let (ids, short, times) = walk(&app, key, &path, 7).await;
            let unique: HashSet<&String> = ids.iter().collect();
            assert_eq!(unique.len(), ids.len(), "{path}: an event twice");
            let wanted: HashSet<String> =
                expected.iter().map(|event| event["messageId"].as_str().unwrap_or_default().to_string()).collect();
            let got: HashSet<String> = ids.iter().cloned().collect();
            assert_eq!(
                got.len(),
                wanted.len(),
                "{path}: {} events, expected {}; missing {:?}, extra {:?}",
                got.len(),
                wanted.len(),
                wanted.difference(&got).take(5).collect::<Vec<_>>(),
                got.difference(&wanted).take(5).collect::<Vec<_>>()
            );
            assert_eq!(got, wanted, "{path}");
            let parsed: Vec<_> =
                times.iter().map(|at| chrono::DateTime::parse_from_rfc3339(at).expect("time")).collect();
            assert!(parsed.windows(2).all(|pair| pair[0] >= pair[1]), "{path}: newest first");
            checked += ids.len();
            short_pages += short;
        }
    }
    assert!(short_pages > 0, "some pages were cut short by the bound on rows examined");
    println!("event lists: {checked} events checked over every page; {short_pages} pages cut short");

    // The timeline route is the user filter.
    let user = format!("{}-{run}", USERS[0]);
    let (by_route, _, _) = walk(&app, &read, &format!("/v1/users/{user}/events"), 50).await;
    let (by_filter, _, _) = walk(&app, &read, &format!("/v1/events?user_id={user}"), 50).await;
    assert!(!by_route.is_empty());
    assert_eq!(by_route, by_filter);

    // `fields=` keeps what is asked for.
    let reply = app.send(api_request("GET", "/v1/events?limit=3&fields=id,type,timestamp", &read, None)).await;
    let first = reply.json["data"][0].as_object().expect("an event");
    assert_eq!(first.keys().map(String::as_str).collect::<HashSet<_>>(), HashSet::from(["id", "type", "timestamp"]));
}

#[tokio::test]
async fn bad_list_questions_get_clear_errors_and_cursors_stay_with_their_question() {
    let app = TestApp::new().await;
    let (_, read) = issue_key(&app.db.store, &app.config, Some(app.project), Scope::Read, "read").await;
    let read = read.reveal().to_string();
    let messages: Vec<Value> =
        (0..5).map(|n| json!({"type": "track", "event": "E", "userId": "u", "messageId": format!("m-{n}")})).collect();
    assert_eq!(app.send(batch(&app.key, messages)).await.status, StatusCode::OK);
    assert!(app.consume_queued().await.is_empty());
    for (query, says) in [
        ("wher=properties.a:eq:1", "unknown query parameter wher"),
        ("where=plan:eq:pro", "where is <document>"),
        ("where=properties.n:gt:many", "compares with a number"),
        ("type=click", "type is one of"),
        ("limit=0", "limit is 1 to 1000"),
        ("limit=1001", "limit is 1 to 1000"),
        ("from=yesterday", "RFC 3339"),
        ("from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z", "from is before to"),
        ("fields=id,secret", "fields are some of"),
        ("limit=1&limit=2", "given twice"),
    ] {
        let reply = app.send(api_request("GET", &format!("/v1/events?{query}"), &read, None)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}: {}", reply.json);
        assert!(reply.json["message"].as_str().unwrap_or_default().contains(says), "{query}: {}", reply.json);
    }
    // The catalog's range and a counting question's filters are bounded too.
    let reply = app.send(api_request("GET", "/v1/event-names?from=0001-01-01T00:00:00Z", &read, None)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.json);
    assert!(reply.json["message"].as_str().unwrap_or_default().contains("at most 2000 days"), "{}", reply.json);
    let filters: Vec<String> = (0..11).map(|n| format!("properties.p{n}:is_set")).collect();
    let question = json!({"series": [{"event": "E", "where": filters}], "from": "2026-12-01T00:00:00Z", "to": "2026-12-02T00:00:00Z"});
    let reply = app.send(api_request("POST", "/v1/query/trends", &read, Some(&question))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.json);
    assert!(reply.json["message"].as_str().unwrap_or_default().contains("at most 10 where filters"), "{}", reply.json);
    // Times past the year 9999 (chrono reads them; a bucket added to one overflowed).
    let far = "+262142-12-31T00:00:00Z";
    let question = json!({"series": [{"event": "E"}], "from": far, "to": far});
    let reply = app.send(api_request("POST", "/v1/query/trends", &read, Some(&question))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.json);
    assert!(reply.json["message"].as_str().unwrap_or_default().contains("years 1 to 9999"), "{}", reply.json);
    let question = json!({"steps": [{"event": "E"}, {"event": "E"}], "from": "2026-12-01T00:00:00Z", "to": far});
    let reply = app.send(api_request("POST", "/v1/query/funnels", &read, Some(&question))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.json);
    let reply = app.send(api_request("POST", "/v1/query/retention", &read, Some(&json!({"from": far})))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.json);
    // A cursor of one question is refused for another.
    let reply = app.send(api_request("GET", "/v1/events?limit=2&type=track", &read, None)).await;
    let cursor = reply.json["next_cursor"].as_str().expect("a cursor").to_string();
    let reply =
        app.send(api_request("GET", &format!("/v1/events?limit=2&type=page&cursor={cursor}"), &read, None)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json["code"], "invalid_cursor");
    let reply =
        app.send(api_request("GET", &format!("/v1/events?limit=4&type=track&cursor={cursor}"), &read, None)).await;
    assert_eq!(reply.status, StatusCode::OK, "another page size keeps the cursor");
    assert_eq!(reply.json["data"].as_array().map(Vec::len), Some(3));
    // A user without events or profile: an empty timeline, not an error.
    let reply = app.send(api_request("GET", "/v1/users/nobody/events", &read, None)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["data"], json!([]));
}

/// The body of a GET answered as NDJSON (not JSON), as text.
async fn ndjson_text(app: &TestApp, uri: &str, key: &str) -> String {
    use tower::ServiceExt;
    let request = api_request("GET", uri, key, None);
    let response = app.router.clone().oneshot(request).await.expect("answer");
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Sends `messages` with `key` and stores them.
async fn store(app: &TestApp, key: &str, messages: Vec<Value>) {
    let reply = app.send(batch(key, messages)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert!(app.consume_queued().await.is_empty());
}

#[tokio::test]
async fn each_list_shows_its_own_project_only_to_the_keys_allowed_on_it() {
    let app = TestApp::new().await;
    let run = uuid::Uuid::now_v7().simple().to_string();
    let (mine, theirs) = (format!("mine-{run}"), format!("theirs-{run}"));
    let other = app.db.store.create_project("other").await.expect("project").id;
    let (_, other_write) = issue_key(&app.db.store, &app.config, Some(other), Scope::Write, "w").await;
    let (_, other_read) = issue_key(&app.db.store, &app.config, Some(other), Scope::Read, "r").await;
    let (_, read) = issue_key(&app.db.store, &app.config, Some(app.project), Scope::Read, "r").await;
    let (read, other_read) = (read.reveal().to_string(), other_read.reveal().to_string());
    for (key, marker) in [(app.key.clone(), &mine), (other_write.reveal().to_string(), &theirs)] {
        let messages = vec![
            json!({"type": "identify", "userId": marker, "traits": {"mark": marker}, "messageId": format!("{marker}-1")}),
            json!({"type": "track", "userId": marker, "event": marker, "properties": {"mark": marker}, "messageId": format!("{marker}-2")}),
            json!({"type": "group", "userId": marker, "groupId": marker, "traits": {"mark": marker}, "messageId": format!("{marker}-3")}),
        ];
        store(&app, &key, messages).await;
    }
    // The live tail shows events once settled.
    tokio::time::sleep(std::time::Duration::from_millis(evtrack::store::LIVE_SETTLE_MS as u64 + 300)).await;

    let (project, stranger) = (app.project, uuid::Uuid::now_v7());
    let day = |days: i64| (chrono::Utc::now() + chrono::Duration::days(days)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let range = format!("from={}&to={}", day(-1), day(1));
    let timeline = format!("/v1/users/{mine}/events");
    let export = format!("/v1/events/export?{range}");
    let names = format!("/v1/event-names?{range}");
    let (group, members) = (format!("/v1/groups/{mine}"), format!("/v1/groups/{mine}/members"));
    let groups_of_user = format!("/v1/users/{mine}/groups");
    let routes = [
        "/v1/events",
        "/v1/events/live",
        "/v1/users",
        timeline.as_str(),
        export.as_str(),
        names.as_str(),
        "/v1/groups",
        group.as_str(),
        members.as_str(),
        groups_of_user.as_str(),
    ];
    let mut checked = 0;
    for route in routes {
        // My group, by id: another project has none of that id.
        let by_id = route.starts_with("/v1/groups/");
        let with = |query: &str| match (query.is_empty(), route.contains('?')) {
            (true, _) => route.to_string(),
            (false, true) => format!("{route}&{query}"),
            (false, false) => format!("{route}?{query}"),
        };
        let cases: [(&str, String, StatusCode, Option<bool>); 8] = [
            (&app.key, with(""), StatusCode::FORBIDDEN, None),
            (&read, with(""), StatusCode::OK, Some(true)),
            (&read, with(&format!("project={other}")), StatusCode::NOT_FOUND, None),
            if by_id {
                (&other_read, with(""), StatusCode::NOT_FOUND, None)
            } else {
                (&other_read, with(""), StatusCode::OK, Some(false))
            },
            (&app.admin, with(""), StatusCode::BAD_REQUEST, None),
            (&app.admin, with(&format!("project={project}")), StatusCode::OK, Some(true)),
            (&app.admin, with(&format!("project={stranger}")), StatusCode::NOT_FOUND, None),
            ("evtr_not_a_key", with(""), StatusCode::UNAUTHORIZED, None),
        ];
        for (key, uri, status, shows_mine) in cases {
            let reply = app.send(api_request("GET", &uri, key, None)).await;
            assert_eq!(reply.status, status, "{uri}: {}", reply.json);
            // The export answers NDJSON: its lines, as text.
            let body = if reply.json.is_null() { ndjson_text(&app, &uri, key).await } else { reply.json.to_string() };
            match shows_mine {
                // Another project's data never, whatever the route and key.
                Some(true) => assert!(body.contains(&mine) && !body.contains(&theirs), "{uri}: {body}"),
                Some(false) => {
                    assert!(!body.contains(&mine), "{uri}: {body}");
                    // The other project's own lists show its data (the timeline asks for my user).
                    if !route.contains(&mine) {
                        assert!(body.contains(&theirs), "{uri}: {body}");
                    }
                }
                None => assert!(!body.contains(&mine) && !body.contains(&theirs), "{uri}: {body}"),
            }
            checked += 1;
        }
    }
    // The aggregates: a question names what it counts, so the answer is checked by its numbers.
    // Each route, its question, and what the answer counts.
    type Count = fn(&Value) -> Value;
    let aggregates: [(&str, Value, Count); 3] = [
        ("trends", json!({"series": [{"event": mine}], "from": day(-1), "to": day(1)}), |answer| {
            answer["series"][0]["total"].clone()
        }),
        ("funnels", json!({"steps": [{"event": mine}, {"event": mine}], "from": day(-1), "to": day(1)}), |answer| {
            answer["steps"][0]["users"].clone()
        }),
        (
            "retention",
            json!({"cohort_event": {"event": mine}, "from": day(-1), "interval": "day", "periods": 3}),
            |answer| {
                json!(
                    answer["cohorts"]
                        .as_array()
                        .map_or(0, |cohorts| cohorts.iter().filter_map(|c| c["users"].as_u64()).sum::<u64>())
                )
            },
        ),
    ];
    for (route, question, count) in &aggregates {
        for (key, project_param, status, expected) in [
            (read.as_str(), String::new(), StatusCode::OK, Some(1)),
            (other_read.as_str(), String::new(), StatusCode::OK, Some(0)),
            (read.as_str(), format!("?project={other}"), StatusCode::NOT_FOUND, None),
            (app.key.as_str(), String::new(), StatusCode::FORBIDDEN, None),
            (app.admin.as_str(), format!("?project={project}"), StatusCode::OK, Some(1)),
            (app.admin.as_str(), format!("?project={other}"), StatusCode::OK, Some(0)),
        ] {
            let uri = format!("/v1/query/{route}{project_param}");
            let reply = app.send(api_request("POST", &uri, key, Some(question))).await;
            assert_eq!(reply.status, status, "{uri}: {}", reply.json);
            if let Some(expected) = expected {
                assert_eq!(count(&reply.json), json!(expected), "{uri}: {}", reply.json);
            }
            checked += 1;
        }
    }
    println!("tenant matrix: {checked} requests over {} routes", routes.len() + aggregates.len());
}

#[tokio::test]
async fn the_live_tail_shows_each_stored_event_once_in_the_order_stored() {
    let app = TestApp::new().await;
    let (_, read) = issue_key(&app.db.store, &app.config, Some(app.project), Scope::Read, "r").await;
    let read = read.reveal().to_string();
    let first: Vec<Value> = (0..5)
        .map(|n| json!({"type": "track", "event": "Early", "userId": "u", "messageId": format!("early-{n}")}))
        .collect();
    store(&app, &app.key, first).await;
    tokio::time::sleep(std::time::Duration::from_millis(evtrack::store::LIVE_SETTLE_MS as u64 + 300)).await;
    // Opened now: the newest settled events, and a cursor.
    let reply = app.send(api_request("GET", "/v1/events/live?limit=3", &read, None)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let opened: Vec<&str> =
        reply.json["data"].as_array().expect("data").iter().filter_map(|e| e["messageId"].as_str()).collect();
    assert_eq!(opened.len(), 3, "{}", reply.json);
    let mut cursor = reply.json["next_cursor"].as_str().expect("cursor").to_string();

    // Then three waves of new events, polled as a dashboard does, two at a time.
    let mut seen = Vec::new();
    for wave in 0..3 {
        let messages: Vec<Value> = (0..4)
            .map(|n| json!({"type": "track", "event": "Live", "userId": "u", "messageId": format!("live-{wave}-{n}")}))
            .collect();
        store(&app, &app.key, messages).await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while seen.len() < 12 && std::time::Instant::now() < deadline {
        let reply =
            app.send(api_request("GET", &format!("/v1/events/live?limit=2&cursor={cursor}"), &read, None)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
        seen.extend(
            reply.json["data"]
                .as_array()
                .expect("data")
                .iter()
                .filter_map(|e| e["messageId"].as_str().map(str::to_string)),
        );
        cursor = reply.json["next_cursor"].as_str().expect("always a cursor").to_string();
        if reply.json["data"].as_array().is_some_and(Vec::is_empty) {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
    let expected: Vec<String> = (0..3).flat_map(|wave| (0..4).map(move |n| format!("live-{wave}-{n}"))).collect();
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "each new event once: {seen:?}");
    // Stored in waves: a wave's events come after the previous wave's.
    let wave_of = |id: &String| id.split('-').nth(1).map(str::to_string);
    assert!(seen.windows(2).all(|pair| wave_of(&pair[0]) <= wave_of(&pair[1])), "{seen:?}");
    let reply = app.send(api_request("GET", &format!("/v1/events/live?cursor={cursor}"), &read, None)).await;
    assert_eq!(reply.json["data"], json!([]), "nothing new");
    assert_eq!(reply.json["next_cursor"].as_str(), Some(cursor.as_str()), "a quiet tail keeps its cursor");
}

/// A batch that waits for a lock commits late. The live tail passes over what commits more
/// than `LIVE_SETTLE_MS` after the time stored with it, so that time must be taken after the
/// waits: the events are inserted last.
#[tokio::test]
async fn a_batch_that_waits_for_a_lock_is_stamped_after_the_wait_so_that_the_live_tail_sees_it() {
    use mysql_async::prelude::Queryable;
    let app = TestApp::new().await;
    let at = "2026-12-01T10:00:00.000Z";
    let identify = |id: &str| json!({"type": "identify", "userId": "held", "traits": {"n": id}, "messageId": id});
    let track =
        |id: &str| json!({"type": "track", "event": "Held", "userId": "held", "timestamp": at, "messageId": id});
    store(&app, &app.key, vec![identify("held-0"), track("held-1")]).await;
    let pool = mysql_async::Pool::new(app.db.url.expose().as_str());
    let mut locker = pool.get_conn().await.expect("connection");
    locker.query_drop("SET time_zone = '+00:00'").await.expect("UTC, as the store writes");
    let hold = std::time::Duration::from_millis(1_500);

    // The batch's identify waits for the user's profile; its mark of the event's hour waits
    // for the rollups job recounting that hour.
    let lock_the_profile = "SELECT id FROM users WHERE user_id = 'held' FOR UPDATE";
    let lock_the_hour = "SELECT hour FROM rollup_dirty_hours
         WHERE hour = FLOOR(UNIX_TIMESTAMP('2026-12-01 10:00:00') / 3600) FOR UPDATE";
    for (lock, batch_ids) in [(lock_the_profile, ["held-2a", "held-2"]), (lock_the_hour, ["held-3a", "held-3"])] {
        locker.query_drop("BEGIN").await.expect("begin");
        let locked: Vec<u64> = locker.query(lock).await.expect("lock");
        assert_eq!(locked.len(), 1, "{lock}");
        let reply = app.send(batch(&app.key, vec![identify(batch_ids[0]), track(batch_ids[1])])).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
        let consumed = app.consume_queued();
        tokio::pin!(consumed);
        tokio::select! {
            failed = &mut consumed => panic!("stored while the lock was held: {failed:?}"),
            _ = tokio::time::sleep(hold) => {}
        }
        let released: String = locker.query_first("SELECT CAST(NOW(3) AS CHAR)").await.expect("now").expect("a row");
        locker.query_drop("COMMIT").await.expect("release");
        assert!(consumed.await.is_empty(), "the batch is stored");
        let sql = format!(
            "SELECT message_id, CAST(created_at AS CHAR) FROM events
             WHERE message_id IN ('{}', '{}') ORDER BY message_id",
            batch_ids[0], batch_ids[1]
        );
        let stored: Vec<(String, String)> = app.db.query(&sql).await;
        assert_eq!(stored.len(), 2, "each event once: {stored:?}");
        assert!(stored.iter().all(|(_, at)| *at >= released), "stamped after the wait ({released}): {stored:?}");
    }
    drop(locker);
    pool.disconnect().await.ok();
}

/// The messageIds of a list answer.
fn message_ids(answer: &Value) -> Vec<String> {
    answer["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|e| e["messageId"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn a_cursor_whose_row_is_purged_goes_on_right_after_it_even_among_events_of_the_same_millisecond() {
    let app = TestApp::new().await;
    let (_, read) = issue_key(&app.db.store, &app.config, Some(app.project), Scope::Read, "r").await;
    let read = read.reveal().to_string();
    let at = "2026-11-30T10:00:00.123Z";
    let messages: Vec<Value> = (0..7)
        .map(|n| json!({"type": "track", "event": "Tie", "userId": "u", "messageId": format!("tie-{n}"), "timestamp": at}))
        .collect();
    store(&app, &app.key, messages).await;

    let first = app.send(api_request("GET", "/v1/events?limit=2", &read, None)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.json);
    let mut seen = message_ids(&first.json);
    let last = seen[1].clone();
    let mut cursor = first.json["next_cursor"].as_str().expect("a cursor").to_string();

    // The store walks on from a position that lost its private id (as a cursor of an earlier
    // release has it) to the same page while the row is there.
    let project =
        app.db.query::<u64>(&format!("SELECT id FROM projects WHERE uid = X'{}'", app.project.simple())).await[0];
    let (row, uid) =
        app.db.query::<(u64, Uuid)>(&format!("SELECT id, uid FROM events WHERE message_id = '{last}'")).await[0];
    let at_time = chrono::DateTime::parse_from_rfc3339(at).expect("time").to_utc();
    let page = async |row: Option<u64>| {
        let after = EventPosition { at: at_time, uid, row };
        let page = app.db.store.list_events(ProjectId(project), &EventFilter::default(), Some(after), 2, 10_000).await;
        page.expect("a page").items.iter().map(|event| event.message_id.clone()).collect::<Vec<_>>()
    };
    assert_eq!(page(None).await, page(Some(row)).await);

    // Purged (as retention and erasure delete rows) between two pages.
    app.db.execute(&format!("DELETE FROM events WHERE message_id = '{last}'")).await;
    loop {
        let reply = app.send(api_request("GET", &format!("/v1/events?limit=2&cursor={cursor}"), &read, None)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
        seen.extend(message_ids(&reply.json));
        let Some(next) = reply.json["next_cursor"].as_str() else { break };
        cursor = next.to_string();
    }
    let mut sorted = seen.clone();
    sorted.sort();
    let expected: Vec<String> = (0..7).map(|n| format!("tie-{n}")).collect();
    assert_eq!(sorted, expected, "each event once, the purged one on the page before: {seen:?}");
}

/// The live tail walks the time each event was stored, which a batch's events share to the
/// millisecond: a tail whose cursor's event is purged goes on right after it too.
#[tokio::test]
async fn a_live_tail_whose_cursor_row_is_purged_goes_on_right_after_it() {
    let app = TestApp::new().await;
    let (_, read) = issue_key(&app.db.store, &app.config, Some(app.project), Scope::Read, "r").await;
    let read = read.reveal().to_string();
    let opened = app.send(api_request("GET", "/v1/events/live", &read, None)).await;
    assert_eq!(opened.json["data"], json!([]), "a quiet project");
    let mut cursor = opened.json["next_cursor"].as_str().expect("always a cursor").to_string();
    let messages: Vec<Value> = (0..7)
        .map(|n| json!({"type": "track", "event": "Tie", "userId": "u", "messageId": format!("tail-{n}")}))
        .collect();
    store(&app, &app.key, messages).await;
    tokio::time::sleep(std::time::Duration::from_millis(evtrack::store::LIVE_SETTLE_MS as u64 + 300)).await;
    let stored_at: Vec<u64> =
        app.db.query("SELECT COUNT(DISTINCT created_at) FROM events WHERE message_id LIKE 'tail-%'").await;
    assert_eq!(stored_at, [1], "one batch, one millisecond");

    let mut seen = Vec::new();
    for poll in 0..10 {
        let reply =
            app.send(api_request("GET", &format!("/v1/events/live?limit=2&cursor={cursor}"), &read, None)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
        let ids = message_ids(&reply.json);
        if poll == 0 {
            // Purged (as retention and erasure delete rows) between two polls.
            app.db.execute(&format!("DELETE FROM events WHERE message_id = '{}'", ids[1])).await;
        }
        let quiet = ids.is_empty();
        seen.extend(ids);
        cursor = reply.json["next_cursor"].as_str().expect("always a cursor").to_string();
        if quiet {
            break;
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    let expected: Vec<String> = (0..7).map(|n| format!("tail-{n}")).collect();
    assert_eq!(sorted, expected, "each event once, the purged one in the poll before: {seen:?}");
}

#[tokio::test]
async fn users_are_listed_by_id_prefix_and_traits() {
    let app = TestApp::with(TestDb::new().await, &[("EVTRACK_LIST_ROWS_EXAMINED", "3")]).await;
    let (_, read) = issue_key(&app.db.store, &app.config, Some(app.project), Scope::Read, "r").await;
    let read = read.reveal().to_string();
    let users: Vec<Value> = (0..12)
        .map(|n| {
            let id = if n % 4 == 0 { format!("a_{n:02}") } else { format!("ab{n:02}") };
            json!({"type": "identify", "userId": id, "traits": {"plan": if n % 3 == 0 { "pro" } else { "free" }, "seats": n}, "messageId": format!("id-{n}")})
        })
        .collect();
    store(&app, &app.key, users).await;
    let ids = |query: &str| {
        let app = &app;
        let read = read.clone();
        let query = query.to_string();
        async move {
            let (mut ids, mut cursor) = (Vec::new(), None::<String>);
            loop {
                let mut uri = format!("/v1/users?limit=2&{query}");
                if let Some(cursor) = &cursor {
                    uri.push_str(&format!("&cursor={cursor}"));
                }
                let reply = app.send(api_request("GET", &uri, &read, None)).await;
                assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.json);
                ids.extend(
                    reply.json["data"]
                        .as_array()
                        .expect("data")
                        .iter()
                        .map(|u| u["userId"].as_str().unwrap_or_default().to_string()),
                );
                cursor = reply.json["next_cursor"].as_str().map(str::to_string);
                if cursor.is_none() {
                    return ids;
                }
            }
        }
    };
    assert_eq!(ids("").await.len(), 12);
    // `_` is an id character here, not a wildcard.
    assert_eq!(ids("prefix=a_").await, ["a_00", "a_04", "a_08"]);
    assert_eq!(ids("prefix=ab&where=traits.plan:eq:pro").await, ["ab03", "ab06", "ab09"]);
    assert_eq!(ids("where=traits.seats:gt:9").await, ["ab10", "ab11"]);
    let reply = app.send(api_request("GET", "/v1/users?where=properties.plan:eq:pro", &read, None)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "users have traits only");
}

/// PostHog names a user's groups on its events (`$groups`): each event makes its user a
/// member of a group that can be read (without traits until a `$groupidentify`); a
/// `$groupidentify` makes no member by its distinct_id (`$company_acme` from a server SDK). A
/// call without traits (none, or `{}`, or an event naming the group) leaves the traits and
/// their time as they were, so that an older call arriving later still wins over the keys
/// before it. A soft-deleted user is no member to be seen.
#[tokio::test]
async fn posthog_groups_on_events_make_their_users_members_of_groups_that_can_be_read() {
    let app = TestApp::new().await;
    let (_, read) = issue_key(&app.db.store, &app.config, Some(app.project), Scope::Read, "r").await;
    let read = read.reveal().to_string();
    let posthog = |events: Value| app.store_posthog(events);
    let clicked = |user: &str, at: &str, groups: Value| json!({"event": "clicked", "distinct_id": user, "timestamp": at, "properties": {"$groups": groups}});
    posthog(json!([
        clicked("u-1", "2026-12-01T10:00:00Z", json!({"company": "acme", "project": 42})),
        clicked("u-1", "2026-12-01T09:00:00Z", json!({"company": "acme", "project": 42})),
        {"event": "$groupidentify", "distinct_id": "$company_acme", "timestamp": "2026-12-01T08:00:00Z",
         "properties": {"$group_type": "company", "$group_key": "acme", "$group_set": {"seats": 5}}},
    ]))
    .await;
    posthog(json!([clicked("u-3", "2026-12-02T10:00:00Z", json!({"company": "acme"}))])).await;
    // `beta` is first named by an event, then its traits come in older calls, in their order.
    posthog(json!([clicked("u-3", "2026-12-03T10:00:00Z", json!({"company": "beta"}))])).await;
    for (at, plan) in [("2026-12-01T10:00:00Z", "free"), ("2026-12-02T10:00:00Z", "pro")] {
        posthog(json!([{"event": "$groupidentify", "distinct_id": "$company_beta", "timestamp": at,
            "properties": {"$group_type": "company", "$group_key": "beta", "$group_set": {"plan": plan}}}]))
        .await;
    }
    let get = |uri: &str| {
        let (app, request) = (&app, api_request("GET", uri, &read, None));
        async move {
            let reply = app.send(request).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
            reply.json
        }
    };
    let ids = |page: Value, field: &str| -> Vec<String> {
        let items = page["data"].as_array().cloned().unwrap_or_default();
        items.iter().map(|item| item[field].as_str().unwrap_or_default().to_string()).collect()
    };
    let typed = |page: Value| -> Vec<(String, String)> {
        let items = page["data"].as_array().cloned().unwrap_or_default();
        let text = |value: &Value| value.as_str().unwrap_or_default().to_string();
        items.iter().map(|item| (text(&item["groupId"]), text(&item["groupType"]))).collect()
    };
    let pairs = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs.iter().map(|(id, kind)| (id.to_string(), kind.to_string())).collect()
    };
    assert_eq!(typed(get("/v1/users/u-1/groups").await), pairs(&[("42", "project"), ("acme", "company")]));
    assert_eq!(ids(get("/v1/groups/acme/members").await, "memberId"), ["u-1", "u-3"], "no `$company_acme`");
    let acme = get("/v1/groups/acme").await;
    assert_eq!(acme["groupType"], "company");
    assert_eq!(acme["traits"], json!({"seats": 5, "$group_type": "company"}));
    assert_eq!(acme["traitsAt"], "2026-12-01T08:00:00Z", "later events naming it leave its traits' time");
    // A group named only by events: readable, without traits, as old as its first naming.
    let project = get("/v1/groups/42").await;
    assert_eq!((&project["traits"], &project["traitsAt"]), (&Value::Null, &json!("2026-12-01T09:00:00Z")));
    assert_eq!(ids(get("/v1/groups").await, "groupId"), ["42", "acme", "beta"]);
    // A membership whose group is gone (cleanup deleted it as the membership was stored) is
    // not shown anywhere; the next event naming the group makes it again.
    app.db.execute("DELETE FROM group_profiles WHERE group_id = '42'").await;
    assert_eq!(ids(get("/v1/users/u-1/groups").await, "groupId"), ["acme"]);
    assert_eq!(ids(get("/v1/groups").await, "groupId"), ["acme", "beta"]);
    let members = app.send(api_request("GET", "/v1/groups/42/members", &read, None)).await;
    assert_eq!(members.status, StatusCode::NOT_FOUND);
    posthog(json!([clicked("u-1", "2026-12-01T11:00:00Z", json!({"project": 42}))])).await;
    assert_eq!(ids(get("/v1/users/u-1/groups").await, "groupId"), ["42", "acme"]);
    assert_eq!(get("/v1/groups/42").await["traitsAt"], "2026-12-01T11:00:00Z");
    // That batch read u-1's membership as stored, so the consumer now knows it (for up to 10
    // minutes) and reads it no more: were the group deleted again, u-1's events would not make
    // it again meanwhile; another member's does.
    app.db.execute("DELETE FROM group_profiles WHERE group_id = '42'").await;
    posthog(json!([clicked("u-1", "2026-12-01T12:00:00Z", json!({"project": 42}))])).await;
    assert_eq!(app.send(api_request("GET", "/v1/groups/42", &read, None)).await.status, StatusCode::NOT_FOUND);
    posthog(json!([clicked("u-2", "2026-12-01T13:00:00Z", json!({"project": 42}))])).await;
    assert_eq!(ids(get("/v1/groups/42/members").await, "memberId"), ["u-1", "u-2"]);

    // A group is its type and its key: company 42 is not project 42. Asked for by its id alone,
    // an id of groups of two types is refused with their types; `type` says which.
    posthog(json!([clicked("u-6", "2026-12-01T14:00:00Z", json!({"company": 42}))])).await;
    let ambiguous = app.send(api_request("GET", "/v1/groups/42", &read, None)).await;
    assert_eq!(ambiguous.status, StatusCode::BAD_REQUEST, "{}", ambiguous.json);
    let message = ambiguous.json["message"].as_str().unwrap_or_default();
    assert!(message.contains("\"company\"") && message.contains("\"project\""), "{message}");
    let members = app.send(api_request("GET", "/v1/groups/42/members", &read, None)).await;
    assert_eq!(members.status, StatusCode::BAD_REQUEST, "{}", members.json);
    assert_eq!(ids(get("/v1/groups/42/members?type=project").await, "memberId"), ["u-1", "u-2"]);
    assert_eq!(ids(get("/v1/groups/42/members?type=company").await, "memberId"), ["u-6"]);
    assert_eq!(get("/v1/groups/42?type=company").await["traitsAt"], "2026-12-01T14:00:00Z");
    assert_eq!(
        app.send(api_request("GET", "/v1/groups/42?type=team", &read, None)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        typed(get("/v1/groups").await),
        pairs(&[("42", "company"), ("42", "project"), ("acme", "company"), ("beta", "company")])
    );
    assert_eq!(typed(get("/v1/groups?type=project").await), pairs(&[("42", "project")]));
    // Page by page, a cursor goes on between the two 42s.
    let first = get("/v1/groups?limit=1").await;
    let cursor = first["next_cursor"].as_str().expect("a cursor").to_string();
    assert_eq!(
        typed(get(&format!("/v1/groups?limit=2&cursor={cursor}")).await),
        pairs(&[("42", "project"), ("acme", "company")])
    );

    // Segment calls name groups without a type: Segment's acme is not PostHog's company acme.
    // A group call without traits (none, or `{}`) changes nothing of the group's; of two
    // identifies with traits, the later one wins although it arrives first, and an identify
    // without traits between them does not change that.
    store(
        &app,
        &app.key,
        vec![
            json!({"type": "group", "userId": "u-4", "groupId": "acme", "traits": {"seats": 9}, "timestamp": "2026-12-02T10:00:00Z"}),
            json!({"type": "group", "userId": "u-4", "groupId": "acme", "timestamp": "2026-12-03T10:00:00Z"}),
            json!({"type": "group", "userId": "u-4", "groupId": "acme", "traits": {}, "timestamp": "2026-12-04T10:00:00Z"}),
            json!({"type": "identify", "userId": "u-5", "traits": {"plan": "free"}, "timestamp": "2026-12-01T10:00:00Z"}),
            json!({"type": "identify", "userId": "u-5", "timestamp": "2026-12-03T10:00:00Z"}),
            json!({"type": "group", "userId": "u-5", "groupId": "acme", "timestamp": "2026-12-03T10:00:00Z"}),
        ],
    )
    .await;
    store(
        &app,
        &app.key,
        vec![json!({"type": "identify", "userId": "u-5", "traits": {"plan": "pro"}, "timestamp": "2026-12-02T10:00:00Z"})],
    )
    .await;
    let segment_acme = get("/v1/groups/acme?type=").await;
    assert_eq!(segment_acme["groupType"], "");
    assert_eq!(
        (&segment_acme["traits"], &segment_acme["traitsAt"]),
        (&json!({"seats": 9}), &json!("2026-12-02T10:00:00Z"))
    );
    let company_acme = get("/v1/groups/acme?type=company").await;
    assert_eq!(
        (&company_acme["traits"]["seats"], &company_acme["traitsAt"]),
        (&json!(5), &json!("2026-12-01T08:00:00Z"))
    );
    assert_eq!(ids(get("/v1/groups/acme/members?type=company").await, "memberId"), ["u-1", "u-3"]);
    assert_eq!(ids(get("/v1/groups/acme/members?type=").await, "memberId"), ["u-4", "u-5"]);
    assert_eq!(typed(get("/v1/users/u-4/groups").await), pairs(&[("acme", "")]));
    let beta = get("/v1/groups/beta").await;
    assert_eq!(
        (&beta["traits"], &beta["traitsAt"]),
        (&json!({"plan": "pro", "$group_type": "company"}), &json!("2026-12-02T10:00:00Z")),
        "the newer of the two calls with traits, the empty ones around them left out"
    );
    assert_eq!(get("/v1/users/u-5").await["traits"], json!({"plan": "pro"}));
    // A soft-deleted user is no member to be seen, until it is restored.
    for (action, members) in [("soft-delete", vec!["u-4"]), ("restore", vec!["u-4", "u-5"])] {
        let uri = format!("/v1/users/u-5/{action}?project={}", app.project);
        assert_eq!(app.send(api_request("POST", &uri, &app.admin, None)).await.status, StatusCode::OK, "{action}");
        assert_eq!(ids(get("/v1/groups/acme/members?type=").await, "memberId"), members, "after {action}");
    }
}

#[tokio::test]
async fn groups_are_listed_by_id_prefix_and_traits_with_their_members_and_a_users_groups_and_an_erased_member_leaves_at_once()
 {
    let app = TestApp::with(TestDb::new().await, &[("EVTRACK_LIST_ROWS_EXAMINED", "3")]).await;
    let (_, read) = issue_key(&app.db.store, &app.config, Some(app.project), Scope::Read, "r").await;
    let read = read.reveal().to_string();
    // 12 groups; group n has the members m-0 … m-n (m-0 by its anonymousId alone), and its
    // traits come from two calls: the later one wins per trait, whatever order they arrive in.
    let mut calls = Vec::new();
    for n in 0..12 {
        let id = if n % 4 == 0 { format!("a_{n:02}") } else { format!("ab{n:02}") };
        for member in 0..=n {
            // Odd members' calls are a day older, with a plan the even members' calls replace.
            let at = format!("2026-12-0{}T10:00:00Z", 2 - member % 2);
            let plan = if member % 2 == 1 {
                "old"
            } else if n % 3 == 0 {
                "pro"
            } else {
                "free"
            };
            let mut call = json!({"type": "group", "groupId": id, "traits": {"plan": plan, "seats": n},
                "timestamp": at, "messageId": format!("g-{n}-{member}")});
            if member == 0 {
                call["anonymousId"] = json!("m-0");
            } else {
                call["userId"] = json!(format!("m-{member:02}"));
            }
            calls.push(call);
        }
    }
    // m-0's device becomes m-01's: m-01's groups are m-0's too.
    calls.push(json!({"type": "identify", "userId": "m-01", "anonymousId": "m-0", "messageId": "link"}));
    // m-05's own workspace, named by its id, which m-06 joined too.
    calls.push(
        json!({"type": "group", "userId": "m-05", "groupId": "m-05", "traits": {"plan": "solo"}, "messageId": "own"}),
    );
    calls.push(json!({"type": "group", "userId": "m-06", "groupId": "m-05", "messageId": "joined"}));
    calls.reverse();
    // m-0's calls stored first: its memberships are the older ones.
    let (device, rest): (Vec<Value>, Vec<Value>) = calls.into_iter().partition(|call| call["anonymousId"] == "m-0");
    store(&app, &app.key, device).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    store(&app, &app.key, rest).await;
    let pages = |uri: String| {
        let (app, read) = (&app, read.clone());
        async move {
            let (mut items, mut cursor) = (Vec::new(), None::<String>);
            loop {
                let separator = if uri.contains('?') { '&' } else { '?' };
                let mut page = format!("{uri}{separator}limit=2");
                if let Some(cursor) = &cursor {
                    page.push_str(&format!("&cursor={cursor}"));
                }
                let reply = app.send(api_request("GET", &page, &read, None)).await;
                assert_eq!(reply.status, StatusCode::OK, "{page}: {}", reply.json);
                items.extend(reply.json["data"].as_array().expect("data").iter().cloned());
                cursor = reply.json["next_cursor"].as_str().map(str::to_string);
                if cursor.is_none() {
                    return items;
                }
            }
        }
    };
    let ids = |items: Vec<Value>, field: &str| -> Vec<String> {
        items.iter().map(|item| item[field].as_str().unwrap_or_default().to_string()).collect()
    };
    assert_eq!(pages("/v1/groups".into()).await.len(), 13);
    // `_` is an id character here, not a wildcard.
    assert_eq!(ids(pages("/v1/groups?prefix=a_".into()).await, "groupId"), ["a_00", "a_04", "a_08"]);
    assert_eq!(
        ids(pages("/v1/groups?prefix=ab&where=traits.plan:eq:pro".into()).await, "groupId"),
        ["ab03", "ab06", "ab09"]
    );
    assert_eq!(ids(pages("/v1/groups?where=traits.seats:gt:9".into()).await, "groupId"), ["ab10", "ab11"]);
    let reply = app.send(api_request("GET", "/v1/groups?where=properties.plan:eq:pro", &read, None)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "groups have traits only");

    // One group: the traits of the later call per trait, and the newest call's time.
    let reply = app.send(api_request("GET", "/v1/groups/ab03", &read, None)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["groupId"], "ab03");
    assert_eq!(reply.json["traits"], json!({"plan": "pro", "seats": 3}));
    assert_eq!(reply.json["traitsAt"], "2026-12-02T10:00:00Z");
    assert!(reply.json["createdAt"].is_string() && reply.json.get("traitsCappedAt").is_none(), "{}", reply.json);
    let reply = app.send(api_request("GET", "/v1/groups/nobody", &read, None)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.json);
    assert_eq!(
        app.send(api_request("GET", "/v1/groups/nobody/members", &read, None)).await.status,
        StatusCode::NOT_FOUND
    );

    // Members page by page, in id order; a cursor belongs to its group.
    let members = ids(pages("/v1/groups/ab11/members".into()).await, "memberId");
    let mut expected: Vec<String> = (1..=11).map(|member| format!("m-{member:02}")).collect();
    expected.insert(0, "m-0".into());
    assert_eq!(members, expected);
    let reply = app.send(api_request("GET", "/v1/groups/ab11/members?limit=2", &read, None)).await;
    let cursor = reply.json["next_cursor"].as_str().expect("a cursor").to_string();
    let uri = format!("/v1/groups/ab10/members?limit=2&cursor={cursor}");
    assert_eq!(app.send(api_request("GET", &uri, &read, None)).await.status, StatusCode::BAD_REQUEST, "{uri}");

    // A user's groups, through its ids: m-03's from group 3 on, m-01's all (its device's).
    let groups_of = |user: &str| format!("/v1/users/{user}/groups");
    let of_m03 = ids(pages(groups_of("m-03")).await, "groupId");
    assert_eq!(of_m03.len(), 9);
    assert_eq!((of_m03[0].as_str(), of_m03[1].as_str(), of_m03[8].as_str()), ("a_04", "a_08", "ab11"));
    // Since the earliest membership of its ids: m-01's in group 1 is its device's.
    let of_m01 = pages(groups_of("m-01")).await;
    assert_eq!(of_m01.len(), 12);
    let members_of_ab01 = pages("/v1/groups/ab01/members".into()).await;
    let since = |items: &[Value], field: &str, id: &str| {
        items.iter().find(|item| item[field] == id).map(|item| item["addedAt"].clone()).expect("listed")
    };
    assert_eq!(since(&of_m01, "groupId", "ab01"), since(&members_of_ab01, "memberId", "m-0"));
    assert_ne!(since(&of_m01, "groupId", "ab01"), since(&members_of_ab01, "memberId", "m-01"));
    assert_eq!(ids(pages(groups_of("nobody")).await, "groupId").len(), 0);
    // A user's cursor is its own.
    let reply = app.send(api_request("GET", &format!("{}?limit=2", groups_of("m-03")), &read, None)).await;
    let cursor = reply.json["next_cursor"].as_str().expect("a cursor").to_string();
    let uri = format!("{}?limit=2&cursor={cursor}", groups_of("m-04"));
    assert_eq!(app.send(api_request("GET", &uri, &read, None)).await.status, StatusCode::BAD_REQUEST, "{uri}");

    // A member whose erasure is in progress leaves every member list at once.
    let path = format!("/v1/users/m-05?project={}", app.project);
    assert_eq!(app.send(api_request("DELETE", &path, &app.admin, None)).await.status, StatusCode::ACCEPTED);
    let members = ids(pages("/v1/groups/ab11/members".into()).await, "memberId");
    assert_eq!(members.len(), 11);
    assert!(!members.contains(&"m-05".to_string()), "{members:?}");
    assert_eq!(ids(pages(groups_of("m-05")).await, "groupId").len(), 0, "and has no groups");
    // Its own workspace is not shown either, not even among m-06's groups; cleanup then
    // deletes m-05's memberships, and keeps the workspace for m-06, shown again.
    let gone = |uri: &str| {
        let (app, read, uri) = (&app, read.clone(), uri.to_string());
        async move { app.send(api_request("GET", &uri, &read, None)).await.status == StatusCode::NOT_FOUND }
    };
    assert!(gone("/v1/groups/m-05").await && gone("/v1/groups/m-05/members").await);
    assert_eq!(pages("/v1/groups".into()).await.len(), 12);
    let of_m06 = ids(pages(groups_of("m-06")).await, "groupId");
    assert!(of_m06.len() == 6 && !of_m06.contains(&"m-05".to_string()), "{of_m06:?}");
    let slot = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    crate::lifecycle::run_cleanup(&app, &slot).await;
    assert_eq!(app.db.count("group_members WHERE member_id = 'm-05'").await, 0);
    assert_eq!(ids(pages("/v1/groups/m-05/members".into()).await, "memberId"), ["m-06"]);
    assert_eq!(ids(pages(groups_of("m-06")).await, "groupId").len(), 7);
    assert_eq!(ids(pages("/v1/groups/ab11/members".into()).await, "memberId").len(), 11);

    // Another project sees none of it.
    let other = app.db.store.create_project("other").await.expect("project").id;
    let (_, other_read) = issue_key(&app.db.store, &app.config, Some(other), Scope::Read, "r").await;
    let other_read = other_read.reveal().to_string();
    for (uri, status) in [
        ("/v1/groups", StatusCode::OK),
        ("/v1/groups/ab03", StatusCode::NOT_FOUND),
        ("/v1/groups/ab03/members", StatusCode::NOT_FOUND),
        ("/v1/users/m-03/groups", StatusCode::OK),
    ] {
        let reply = app.send(api_request("GET", uri, &other_read, None)).await;
        assert_eq!(reply.status, status, "{uri}: {}", reply.json);
        assert!(
            !reply.json.to_string().contains("ab03") && !reply.json.to_string().contains("m-0"),
            "{uri}: {}",
            reply.json
        );
    }

    // Typed twins, PostHog's team ab03 and project ab07 (m-03 in both), under the same cap of
    // 3 rows examined: the groups of one type page by page, and m-03's groups with both.
    app.store_posthog(json!([
        {"event": "x", "distinct_id": "m-03", "properties": {"$groups": {"team": "ab03", "project": "ab07"}}}]))
        .await;
    // m-05's workspace shows again since cleanup (above): 13 without a type.
    assert_eq!(pages("/v1/groups".into()).await.len(), 15);
    assert_eq!(ids(pages("/v1/groups?type=team".into()).await, "groupId"), ["ab03"]);
    assert_eq!(ids(pages("/v1/groups?type=project&prefix=ab".into()).await, "groupId"), ["ab07"]);
    assert_eq!(pages("/v1/groups?type=".into()).await.len(), 13);
    let of_m03 = pages(groups_of("m-03")).await;
    let twins: Vec<(&str, &str)> = of_m03
        .iter()
        .filter(|group| ["ab03", "ab07"].contains(&group["groupId"].as_str().unwrap_or_default()))
        .map(|group| (group["groupId"].as_str().unwrap_or_default(), group["groupType"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(twins, [("ab03", ""), ("ab03", "team"), ("ab07", ""), ("ab07", "project")]);
    assert_eq!(of_m03.len(), 11);
}

#[tokio::test]
async fn a_user_being_erased_leaves_every_list_and_every_read_by_id_at_once_before_cleanup_deletes_the_rows() {
    let app = TestApp::new().await;
    let (_, read) = issue_key(&app.db.store, &app.config, Some(app.project), Scope::Read, "r").await;
    let read = read.reveal().to_string();
    let run = uuid::Uuid::now_v7().simple().to_string();
    let (gone, anon, kept) = (format!("gone-{run}"), format!("anon-{run}"), format!("kept-{run}"));
    // A page's worth of the user's older events (an export reads 1,000 rows at a time), stored
    // first (the live tail starts with the newest stored).
    let before = chrono::Utc::now() - chrono::Duration::hours(1);
    for chunk in 0..10 {
        let events: Vec<Value> = (0..100)
            .map(|n| {
                let at = before + chrono::Duration::milliseconds(chunk * 100 + n);
                json!({"type": "track", "userId": gone, "event": "Old", "messageId": format!("{run}-old-{chunk}-{n}"),
                    "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)})
            })
            .collect();
        store(&app, &app.key, events).await;
    }
    store(
        &app,
        &app.key,
        vec![
            json!({"type": "track", "anonymousId": anon, "event": "Browsed", "messageId": format!("{run}-1")}),
            json!({"type": "identify", "userId": gone, "anonymousId": anon, "traits": {"n": 1}, "messageId": format!("{run}-2")}),
            json!({"type": "track", "userId": gone, "event": "Bought", "messageId": format!("{run}-3")}),
            json!({"type": "identify", "userId": kept, "traits": {"n": 2}, "messageId": format!("{run}-4")}),
            json!({"type": "track", "userId": kept, "event": "Bought", "messageId": format!("{run}-5")}),
        ],
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(evtrack::store::LIVE_SETTLE_MS as u64 + 300)).await;
    let path = format!("/v1/users/{gone}?project={}", app.project);
    assert_eq!(app.send(api_request("DELETE", &path, &app.admin, None)).await.status, StatusCode::ACCEPTED);
    assert_eq!(app.db.count(&format!("events WHERE message_id LIKE '{run}-%'")).await, 1_005, "cleanup has not run");
    for uri in
        ["/v1/events", "/v1/events/live", "/v1/users", &format!("/v1/users/{gone}/events"), "/v1/events?name=Bought"]
    {
        let reply = app.send(api_request("GET", uri, &read, None)).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.json);
        let body = reply.json.to_string();
        assert!(!body.contains(&gone) && !body.contains(&anon), "{uri}: {body}");
        if !uri.contains(&gone) {
            assert!(body.contains(&kept), "{uri}: {body}");
        }
    }
    // Asked for by id, too: the events of every id being erased, and the profile, answer 404.
    for (message, status) in [("1", StatusCode::NOT_FOUND), ("3", StatusCode::NOT_FOUND), ("5", StatusCode::OK)] {
        let uid: Vec<String> =
            app.db.query(&format!("SELECT HEX(uid) FROM events WHERE message_id = '{run}-{message}'")).await;
        let uri = format!("/v1/events/{}", uuid::Uuid::parse_str(&uid[0]).expect("uid"));
        assert_eq!(app.send(api_request("GET", &uri, &read, None)).await.status, status, "event {message}");
    }
    for (user, status) in [(&gone, StatusCode::NOT_FOUND), (&kept, StatusCode::OK)] {
        let reply = app.send(api_request("GET", &format!("/v1/users/{user}"), &read, None)).await;
        assert_eq!(reply.status, status, "{user}: {}", reply.json);
    }
    // Page by page, a list passes over the rows being erased (short pages with a cursor)
    // and neither stops early nor shows them.
    let (ids, short, _) = walk(&app, &read, "/v1/events", 7).await;
    assert_eq!(ids, [format!("{run}-5"), format!("{run}-4")]);
    assert!(short >= 1, "the rows being erased leave short pages: {short}");
    // So does an export, past whole reads of them.
    let range =
        |at: chrono::DateTime<chrono::Utc>| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true).replace('+', "%2B");
    let uri = format!(
        "/v1/events/export?from={}&to={}",
        range(before - chrono::Duration::minutes(1)),
        range(chrono::Utc::now() + chrono::Duration::minutes(1))
    );
    let lines = ndjson_text(&app, &uri, &read).await;
    let exported: Vec<&str> = lines.lines().collect();
    assert_eq!(exported.len(), 2, "{lines}");
    assert!(lines.contains(&format!("{run}-4")) && lines.contains(&format!("{run}-5")), "{lines}");
}

#[tokio::test]
async fn a_range_export_follows_its_cursor_in_answers_a_lambda_can_carry_and_the_cli_writes_it_whole() {
    use evtrack_tests::{StackProcess, workspace_binary};
    let stack = StackProcess::start(&[]);
    let http = reqwest::Client::new();
    // Whole seconds: stored times have milliseconds.
    let base = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() - 3 * 3_600, 0).expect("time");
    // 2,600 events of ~2 KB: more than one answer's worth.
    let padding = "x".repeat(2_000);
    for batch_index in 0..26 {
        let messages: Vec<Value> = (0..100)
            .map(|n| {
                let index = batch_index * 100 + n;
                let at = base + chrono::Duration::seconds(index);
                json!({"type": "track", "event": "Exported", "userId": format!("u{}", index % 17), "properties": {"pad": padding, "index": index},
                    "timestamp": at.to_rfc3339(), "messageId": format!("export-{index}")})
            })
            .collect();
        crate::stack::post_batch(&http, &stack, messages).await;
    }
    stack.wait_for_count("SELECT COUNT(*) FROM events", 2_600, std::time::Duration::from_secs(60)).await;
    let projects: Value = http
        .get(format!("{}/v1/projects", stack.address))
        .bearer_auth(&stack.admin_key)
        .send()
        .await
        .expect("projects")
        .json()
        .await
        .expect("json");
    let project = projects["data"][0]["id"].as_str().expect("the stack's project").to_string();
    // A window that leaves out the first 100 and the last 100 events.
    let (from, to) =
        ((base + chrono::Duration::seconds(100)).to_rfc3339(), (base + chrono::Duration::seconds(2_500)).to_rfc3339());

    let (mut answers, mut lines, mut cursor) = (0, Vec::<String>::new(), None::<String>);
    loop {
        let mut query = vec![("project", project.clone()), ("from", from.clone()), ("to", to.clone())];
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor.clone()));
        }
        let query: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(query).finish();
        let response = http
            .get(format!("{}/v1/events/export?{query}", stack.address))
            .bearer_auth(&stack.admin_key)
            .send()
            .await
            .expect("export");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/x-ndjson");
        let next = response
            .headers()
            .get(evtrack_api::EXPORT_CURSOR_HEADER)
            .map(|value| value.to_str().expect("ascii").to_string());
        let body = response.text().await.expect("body");
        assert!(body.len() <= evtrack_api::EXPORT_MAX_BYTES, "an answer of {} bytes", body.len());
        lines.extend(body.lines().map(str::to_string));
        answers += 1;
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert!(answers >= 2, "{answers} answers");
    let indexes: Vec<u64> = lines
        .iter()
        .map(|line| {
            serde_json::from_str::<Value>(line).expect("an event per line")["properties"]["index"]
                .as_u64()
                .expect("index")
        })
        .collect();
    let expected: Vec<u64> = (100..2_500).collect();
    assert!(
        indexes == expected,
        "each event of the range once, oldest first: {} events, {:?}…{:?}",
        indexes.len(),
        indexes.first(),
        indexes.last()
    );

    // The command follows the same cursors into a file.
    let output = std::env::temp_dir().join(format!("evtrack-export-{}.ndjson", uuid::Uuid::now_v7().simple()));
    let run = std::process::Command::new(workspace_binary("evtrack"))
        .args(["export", "--project", &project, "--from", &from, "--to", &to, "--url", &stack.address, "-o"])
        .arg(&output)
        .env("EVTRACK_API_KEY", &stack.admin_key)
        .output()
        .expect("evtrack export runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout} {}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("exported 2400 events"), "{stdout}");
    let written = std::fs::read_to_string(&output).expect("the file");
    std::fs::remove_file(&output).ok();
    assert_eq!(written.lines().collect::<Vec<_>>(), lines.iter().map(String::as_str).collect::<Vec<_>>());
    println!("export: {} events in {answers} answers", lines.len());
}

/// The `id` of every item of the list at `uri` (an admin's), followed by cursor until a page
/// is empty or has none, each answer under 4.5 MB; and how many pages held items.
async fn ids_page_by_page(app: &TestApp, uri: &str, id: &str) -> (Vec<String>, usize) {
    let (mut ids, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    loop {
        let mut page_uri = uri.to_string();
        if let Some(cursor) = &cursor {
            page_uri.push_str(&format!("&cursor={cursor}"));
        }
        let reply = app.send(api_request("GET", &page_uri, &app.admin, None)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
        let bytes = serde_json::to_vec(&reply.json).expect("json").len();
        assert!(bytes < 4_500_000, "{uri}: a page of {bytes} bytes");
        let data = reply.json["data"].as_array().expect("data");
        if data.is_empty() {
            break;
        }
        pages += 1;
        ids.extend(data.iter().map(|item| item[id].as_str().expect("id").to_string()));
        match reply.json["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    (ids, pages)
}

#[tokio::test]
async fn pages_of_large_events_stay_within_what_a_lambda_answer_holds_and_go_on_by_cursor() {
    let app = TestApp::with(TestDb::new().await, &[("EVTRACK_MAX_EVENT_BYTES", "131072")]).await;
    let blob = "x".repeat(120_000);
    for request in 0..10 {
        let events: Vec<Value> = (0..4)
            .map(|n| {
                json!({"type": "track", "event": "Big", "userId": "u", "messageId": format!("big-{request}-{n}"),
                            "properties": {"blob": blob}})
            })
            .collect();
        assert_eq!(app.send(batch(&app.key, events)).await.status, StatusCode::OK);
    }
    assert!(app.consume_queued().await.is_empty());
    let project = app.project;
    let mut seen = Vec::new();
    let mut pages = 0;
    for route in ["/v1/events", "/v1/events/live"] {
        if route.ends_with("live") {
            // The tail shows what has settled.
            tokio::time::sleep(std::time::Duration::from_millis(3_200)).await;
        }
        let (from_route, route_pages) =
            ids_page_by_page(&app, &format!("{route}?project={project}&limit=100"), "messageId").await;
        pages += route_pages;
        let distinct: HashSet<&String> = from_route.iter().collect();
        assert_eq!((from_route.len(), distinct.len()), (40, 40), "{route}: each event once");
        seen.extend(from_route);
    }
    assert!(pages >= 4, "40 events of 120 KB take two pages a route: {pages}");

    // Profiles too, read row by row.
    for request in 0..10 {
        let identifies: Vec<Value> = (0..4)
            .map(|n| {
                json!({"type": "identify", "userId": format!("big-user-{request}-{n}"),
                       "messageId": format!("big-identify-{request}-{n}"), "traits": {"blob": blob}})
            })
            .collect();
        assert_eq!(app.send(batch(&app.key, identifies)).await.status, StatusCode::OK);
    }
    assert!(app.consume_queued().await.is_empty());
    let uri = format!("/v1/users?project={project}&limit=100&prefix=big-user-");
    let (users, user_pages) = ids_page_by_page(&app, &uri, "userId").await;
    let distinct: HashSet<&String> = users.iter().collect();
    assert_eq!((users.len(), distinct.len()), (40, 40), "each profile once");
    assert!(user_pages >= 2, "40 profiles of 120 KB take two pages: {user_pages}");

    // A GDPR export of the 40 events' user passes what one answer carries: refused, with how to
    // make it, rather than buffered whole.
    let reply = app.send(api_request("GET", &format!("/v1/users/u/export?project={project}"), &app.admin, None)).await;
    assert_eq!(
        (reply.status, reply.json["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("export_too_large"))
    );
    assert!(reply.json["message"].as_str().is_some_and(|message| message.contains("evtrack export")), "{}", reply.json);
}
