//! The read side's aggregates against real MariaDB: trends and the event-name catalog answered
//! from the rollups equal the same questions answered from the raw rows, and both equal what
//! was sent — before the rollup step has run, after it, and after duplicates, soft deletes,
//! restores, an erasure and retention changed the data.

use crate::lifecycle::{batch, run_cleanup, run_job, step_rows};
use evtrack::keys::Scope;
use evtrack_tests::{TestApp, api_request, issue_key};
use http::StatusCode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};

const NAMES: [&str; 4] = ["Bought", "Viewed", "Signed Up", "Shared"];
const DAY: i64 = 86_400;

/// A sent event, as the truth the answers are checked against.
#[derive(Clone)]
struct Sent {
    message_id: String,
    kind: &'static str,
    name: Option<&'static str>,
    user: String,
    plan: Option<&'static str>,
    at: chrono::DateTime<chrono::Utc>,
}

impl Sent {
    fn json(&self) -> Value {
        let mut event = json!({"type": self.kind, "userId": self.user, "messageId": self.message_id,
            "timestamp": self.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), "properties": {}});
        match (self.kind, self.name) {
            ("track", Some(name)) => event["event"] = json!(name),
            (_, Some(name)) => event["name"] = json!(name),
            _ => {}
        }
        if let Some(plan) = self.plan {
            event["properties"]["plan"] = json!(plan);
        }
        event
    }
}

fn generate(count: usize, now: i64, rng: &mut StdRng) -> Vec<Sent> {
    (0..count)
        .map(|n| {
            let kind = ["track", "track", "track", "page", "identify"][rng.random_range(0..5)];
            let name = match kind {
                "track" => Some(NAMES[rng.random_range(0..4)]),
                "page" => Some(["Home", "Pricing"][rng.random_range(0..2)]),
                _ => None,
            };
            Sent {
                message_id: format!("q-{n}"),
                kind,
                name,
                user: format!("user-{}", rng.random_range(0..30)),
                plan: [Some("pro"), Some("free"), Some("team"), None][rng.random_range(0..4)],
                at: chrono::DateTime::from_timestamp_millis(
                    (now - 6 * DAY) * 1_000 + rng.random_range(0..6 * DAY * 1_000),
                )
                .expect("time"),
            }
        })
        .collect()
}

/// What a trend of `kind`/`name` counts per UTC day from `from` (Unix seconds), by the truth.
fn truth_per_day(live: &[&Sent], kind: &str, name: Option<&str>, from: i64, days: usize, users: bool) -> Vec<u64> {
    let mut sets: Vec<HashSet<&str>> = vec![HashSet::new(); days];
    let mut counts = vec![0u64; days];
    for event in live.iter().filter(|e| e.kind == kind && (name.is_none() || e.name == name)) {
        let day = (event.at.timestamp() - from).div_euclid(DAY);
        if (0..days as i64).contains(&day) {
            counts[day as usize] += 1;
            sets[day as usize].insert(&event.user);
        }
    }
    if users { sets.iter().map(|set| set.len() as u64).collect() } else { counts }
}

struct Checker<'a> {
    app: &'a TestApp,
    read: String,
    from: String,
    to: String,
    from_seconds: i64,
    /// Breakdowns answered from a promoted property's rollup.
    breakdowns_from_rollup: std::cell::Cell<usize>,
    /// Filtered totals answered from a promoted property's rollup.
    filters_from_rollup: std::cell::Cell<usize>,
}

impl Checker<'_> {
    async fn trend(&self, question: Value) -> Value {
        self.query("trends", question).await
    }

    /// A trend as asked (from the rollups where they answer) and with `"source": "raw"`.
    async fn trend_and_raw(&self, question: Value) -> (Value, Value) {
        let auto = self.trend(question.clone()).await;
        let mut raw_question = question;
        raw_question["source"] = json!("raw");
        (auto, self.trend(raw_question).await)
    }

    /// Every question, from the rollups (auto), from the raw rows, and against the truth.
    /// Returns the rollup hours the auto answers used.
    async fn check(&self, sent: &[Sent], gone: &HashSet<String>, moment: &str) -> usize {
        let live: Vec<&Sent> = sent.iter().filter(|e| !gone.contains(&e.message_id)).collect();
        let series = json!([{"event": "Bought"}, {"event": "Viewed"}, {"type": "page"}, {"type": "identify"}]);
        let mut rollup_hours = 0;
        for (interval, timezone) in
            [("day", "UTC"), ("hour", "UTC"), ("week", "UTC"), ("day", "Europe/Paris"), ("day", "Asia/Kolkata")]
        {
            let question =
                json!({"series": series, "from": self.from, "to": self.to, "interval": interval, "timezone": timezone});
            let (auto, raw) = self.trend_and_raw(question).await;
            assert_eq!(
                auto["series"], raw["series"],
                "{moment}: {interval} {timezone}: rollup {} against raw",
                auto["source"]
            );
            assert_eq!(auto["buckets"], raw["buckets"]);
            if timezone == "Asia/Kolkata" {
                assert_eq!(auto["source"]["kind"], "raw", "days off the UTC hour come from the raw rows");
            } else {
                assert_eq!(auto["source"]["kind"], "rollup");
                rollup_hours += auto["source"]["rollup_hours"].as_u64().unwrap_or_default() as usize;
            }
            if (interval, timezone) == ("day", "UTC") {
                for (index, (kind, name)) in
                    [("track", Some("Bought")), ("track", Some("Viewed")), ("page", None), ("identify", None)]
                        .into_iter()
                        .enumerate()
                {
                    let expected = truth_per_day(&live, kind, name, self.from_seconds, 6, false);
                    assert_eq!(auto["series"][index]["values"], json!(expected), "{moment}: {kind} {name:?}");
                }
            }
        }
        // Unique users and a property filter: the raw rows against the truth.
        let question = json!({"series": [{"event": "Bought"}, {"event": "Bought", "where": ["properties.plan:eq:pro"]}],
            "from": self.from, "to": self.to, "math": "unique_users"});
        let answer = self.trend(question).await;
        assert_eq!(answer["source"]["kind"], "raw");
        assert_eq!(
            answer["series"][0]["values"],
            json!(truth_per_day(&live, "track", Some("Bought"), self.from_seconds, 6, true)),
            "{moment}"
        );
        let pro: Vec<&Sent> = live.iter().copied().filter(|e| e.plan == Some("pro")).collect();
        assert_eq!(
            answer["series"][1]["values"],
            json!(truth_per_day(&pro, "track", Some("Bought"), self.from_seconds, 6, true)),
            "{moment}"
        );
        // Hourly unique users over the last two days.
        let from = self.from_seconds + 4 * DAY;
        let iso = |seconds: i64| chrono::DateTime::from_timestamp(seconds, 0).expect("time").to_rfc3339();
        let question = json!({"series": [{"event": "Viewed"}], "from": iso(from), "to": self.to, "interval": "hour", "math": "unique_users"});
        let answer = self.trend(question).await;
        let mut hourly: Vec<HashSet<&str>> = vec![HashSet::new(); 48];
        for event in live.iter().filter(|e| e.name == Some("Viewed")) {
            let hour = (event.at.timestamp() - from).div_euclid(3_600);
            if (0..48).contains(&hour) {
                hourly[hour as usize].insert(&event.user);
            }
        }
        let expected: Vec<u64> = hourly.iter().map(|users| users.len() as u64).collect();
        assert!(expected.iter().sum::<u64>() > 0);
        assert_eq!(answer["series"][0]["values"], json!(expected), "{moment}: hourly unique users");
        // Breakdowns (from the rollup of the property once it is promoted): equal to the raw rows.
        for (interval, timezone) in [("week", "UTC"), ("day", "Europe/Paris"), ("hour", "UTC")] {
            let question = json!({"series": [{"event": "Viewed"}, {"type": "page"}, {"type": "any"}],
                "from": self.from, "to": self.to, "interval": interval, "timezone": timezone,
                "breakdown": {"property": "properties.plan", "limit": 2}});
            let (auto, raw) = self.trend_and_raw(question).await;
            assert_eq!(auto["series"], raw["series"], "{moment}: breakdown {interval} {timezone}: {}", auto["source"]);
            let from_rollup = auto["source"]["kind"] == "rollup";
            assert_eq!(from_rollup, auto["source"]["property"] == "properties.plan", "{moment}: {}", auto["source"]);
            self.breakdowns_from_rollup.set(self.breakdowns_from_rollup.get() + usize::from(from_rollup));
        }
        // Totals filtered on the plan (eq, neq; from its rollup once promoted): equal to the raw
        // rows and to the truth.
        for (op, is_pro) in [("eq", true), ("neq", false)] {
            let question = json!({"series": [{"event": "Viewed", "where": [format!("properties.plan:{op}:pro")]}, {"type": "page"}],
                "from": self.from, "to": self.to, "interval": "day"});
            let (auto, raw) = self.trend_and_raw(question).await;
            assert_eq!(auto["series"], raw["series"], "{moment}: plan {op} pro: {}", auto["source"]);
            let from_rollup = auto["source"]["kind"] == "rollup";
            assert_eq!(
                from_rollup,
                auto["source"]["properties"] == json!(["properties.plan"]),
                "{moment}: {}",
                auto["source"]
            );
            self.filters_from_rollup.set(self.filters_from_rollup.get() + usize::from(from_rollup));
            let chosen: Vec<&Sent> = live.iter().copied().filter(|e| (e.plan == Some("pro")) == is_pro).collect();
            let expected = truth_per_day(&chosen, "track", Some("Viewed"), self.from_seconds, 6, false);
            assert_eq!(auto["series"][0]["values"], json!(expected), "{moment}: plan {op} pro");
        }
        // A breakdown: the top two plans, the rest, and the events without one.
        let question = json!({"series": [{"event": "Viewed"}], "from": self.from, "to": self.to, "interval": "week",
            "breakdown": {"property": "properties.plan", "limit": 2}});
        let answer = self.trend(question).await;
        let viewed: Vec<&Sent> = live.iter().copied().filter(|e| e.name == Some("Viewed")).collect();
        let mut by_plan: BTreeMap<Option<&str>, u64> = BTreeMap::new();
        for event in &viewed {
            *by_plan.entry(event.plan).or_default() += 1;
        }
        let lines = answer["series"].as_array().expect("lines");
        let total = |kind: &str| -> u64 {
            lines
                .iter()
                .filter(|line| line["breakdown"]["kind"] == kind)
                .filter_map(|line| line["total"].as_u64())
                .sum()
        };
        assert_eq!(total("missing"), by_plan.get(&None).copied().unwrap_or_default(), "{moment}: {answer}");
        assert_eq!(total("value") + total("other") + total("missing"), viewed.len() as u64, "{moment}");
        let mut plans: Vec<(u64, &str)> = by_plan.iter().filter_map(|(plan, n)| plan.map(|plan| (*n, plan))).collect();
        plans.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        let shown: HashSet<&str> = lines.iter().filter_map(|line| line["breakdown"]["value"].as_str()).collect();
        assert_eq!(shown, plans.iter().take(2).map(|(_, plan)| *plan).collect::<HashSet<_>>(), "{moment}: the top two");

        self.check_users(&live, moment).await;
        self.check_funnel(&live, moment).await;
        self.check_retention(&live, moment).await;

        // The catalog.
        let uri = format!("/v1/event-names?from={}&to={}", self.from.replace('+', "%2B"), self.to.replace('+', "%2B"));
        let reply = self.app.send(api_request("GET", &uri, &self.read, None)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
        let mut expected: HashMap<(String, Option<String>), u64> = HashMap::new();
        for event in &live {
            *expected.entry((event.kind.to_string(), event.name.map(str::to_string))).or_default() += 1;
        }
        let listed: HashMap<(String, Option<String>), u64> = reply.json["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|entry| {
                let key = (
                    entry["type"].as_str().unwrap_or_default().to_string(),
                    entry["name"].as_str().map(str::to_string),
                );
                (key, entry["events"].as_u64().unwrap_or_default())
            })
            .collect();
        assert_eq!(listed, expected, "{moment}: the catalog");
        rollup_hours
    }
}

impl Checker<'_> {
    /// Unique users of any type, of tracks and of one named event, and dau/wau/mau: the
    /// rollups' sets (the users' rollup, and the journeys' for the named event), the raw rows
    /// and the truth agree (and are exact: every hour has fewer than 512 users).
    async fn check_users(&self, live: &[&Sent], moment: &str) {
        let questions = [
            (json!([{"type": "any"}, {"type": "track"}]), vec![(None, None), (Some("track"), None)]),
            (json!([{"event": "Viewed"}]), vec![(Some("track"), Some("Viewed"))]),
        ];
        for (series, truths) in questions {
            let named = truths.iter().all(|(_, name)| name.is_some());
            for (math, window) in [("unique_users", 1), ("dau", 1), ("wau", 7), ("mau", 30)] {
                for timezone in ["UTC", "Europe/Paris", "Asia/Kolkata"] {
                    let question =
                        json!({"series": series, "from": self.from, "to": self.to, "math": math, "timezone": timezone});
                    let (auto, raw) = self.trend_and_raw(question).await;
                    assert_eq!(auto["series"], raw["series"], "{moment}: {math} {timezone}: rollup against raw");
                    // Days off the UTC hour need the raw rows, but for a named event's journeys.
                    let expected_kind = if timezone == "Asia/Kolkata" && !named { "raw" } else { "rollup" };
                    assert_eq!(auto["source"]["kind"], expected_kind, "{moment}: {math} {timezone} {series}");
                    assert!(auto["source"].get("sketch").is_none(), "small hours stay exact");
                    if timezone != "UTC" {
                        continue;
                    }
                    for (index, (kind, name)) in truths.iter().enumerate() {
                        let expected: Vec<u64> = (0..6)
                            .map(|day| {
                                let end = self.from_seconds + (day + 1) * DAY;
                                let users: HashSet<&str> = live
                                    .iter()
                                    .filter(|e| {
                                        kind.is_none_or(|kind| e.kind == kind) && (name.is_none() || e.name == *name)
                                    })
                                    .filter(|e| (end - window * DAY..end).contains(&e.at.timestamp()))
                                    .map(|e| e.user.as_str())
                                    .collect();
                                users.len() as u64
                            })
                            .collect();
                        assert_eq!(
                            auto["series"][index]["values"],
                            json!(expected),
                            "{moment}: {math} {kind:?} {name:?}"
                        );
                        assert_eq!(auto["series"][index]["exact"], true);
                    }
                }
            }
        }
    }

    /// Viewed → Bought → Shared within a day, and by plan: against a brute-force count.
    async fn check_funnel(&self, live: &[&Sent], moment: &str) {
        let steps = ["Viewed", "Bought", "Shared"];
        let window = 24 * 3_600 * 1_000;
        let question = json!({"steps": steps.iter().map(|name| json!({"event": name})).collect::<Vec<_>>(),
            "from": self.from, "to": self.to, "window_hours": 24, "breakdown": {"property": "properties.plan", "limit": 2}});
        let reply = self.app.send(api_request("POST", "/v1/query/funnels", &self.read, Some(&question))).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
        let mut by_user: HashMap<&str, Vec<&Sent>> = HashMap::new();
        for event in live.iter().filter(|e| e.kind == "track") {
            by_user.entry(&event.user).or_default().push(event);
        }
        let (from, to) = (self.from_seconds * 1_000, (self.from_seconds + 6 * DAY) * 1_000);
        let mut expected = [0u64; 3];
        for events in by_user.values_mut() {
            events.sort_by_key(|e| e.at);
            // Each entry: the earliest next step after the last, within the window.
            let mut furthest = None;
            for (start, entry) in events.iter().enumerate() {
                let entered = entry.at.timestamp_millis();
                if entry.name != Some(steps[0]) || !(from..to).contains(&entered) {
                    continue;
                }
                let (mut level, mut at) = (0, start);
                while level + 1 < steps.len() {
                    match events[at + 1..]
                        .iter()
                        .position(|e| e.name == Some(steps[level + 1]) && e.at.timestamp_millis() - entered <= window)
                    {
                        Some(next) => (level, at) = (level + 1, at + 1 + next),
                        None => break,
                    }
                }
                furthest = furthest.max(Some(level));
            }
            if let Some(level) = furthest {
                expected.iter_mut().take(level + 1).for_each(|count| *count += 1);
            }
        }
        let users: Vec<u64> = reply.json["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .map(|step| step["users"].as_u64().expect("users"))
            .collect();
        assert_eq!(users, expected, "{moment}: the funnel");
        assert!(expected[0] > 0 && expected[2] > 0, "the data has conversions: {expected:?}");
        let lines = reply.json["breakdown"].as_array().expect("breakdown");
        for step in 0..3 {
            let summed: u64 = lines.iter().map(|line| line["steps"][step]["users"].as_u64().expect("users")).sum();
            assert_eq!(summed, expected[step], "{moment}: the breakdown sums to the funnel");
        }

        // Without the breakdown: from the journeys' rollup, equal to the truth and the raw rows;
        // also with a step repeated (events of one user and millisecond share a rollup row).
        let mut plain = question.clone();
        plain.as_object_mut().expect("object").remove("breakdown");
        let mut repeated = plain.clone();
        repeated["steps"] = json!([{"event": "Viewed"}, {"event": "Viewed"}, {"event": "Bought"}]);
        for (question, truth) in [(plain, Some(&users)), (repeated, None)] {
            let auto = self.query("funnels", question.clone()).await;
            assert_eq!(auto["source"]["kind"], "rollup", "{moment}: {}", auto["source"]);
            let mut raw_question = question;
            raw_question["source"] = json!("raw");
            let raw = self.query("funnels", raw_question).await;
            assert_eq!(auto["steps"], raw["steps"], "{moment}: funnel rollup {} against raw", auto["source"]);
            if let Some(truth) = truth {
                let users: Vec<u64> = auto["steps"]
                    .as_array()
                    .expect("steps")
                    .iter()
                    .map(|s| s["users"].as_u64().expect("users"))
                    .collect();
                assert_eq!(&users, truth, "{moment}: the funnel from the rollup");
            }
        }
    }

    async fn query(&self, route: &str, question: Value) -> Value {
        let reply =
            self.app.send(api_request("POST", &format!("/v1/query/{route}"), &self.read, Some(&question))).await;
        assert_eq!(reply.status, StatusCode::OK, "{question}: {}", reply.json);
        reply.json
    }

    /// Daily cohorts by first event (any, from the activity rollup; or a Viewed, from the
    /// journeys' rollup), returning with a Bought or any event: against the truth, and the
    /// rollups against the raw rows.
    async fn check_retention(&self, live: &[&Sent], moment: &str) {
        for (cohort_event, return_event) in [(None, Some("Bought")), (Some("Viewed"), Some("Bought")), (None, None)] {
            let mut question = json!({"from": self.from, "interval": "day", "periods": 6});
            if let Some(name) = cohort_event {
                question["cohort_event"] = json!({"event": name});
            }
            if let Some(name) = return_event {
                question["return_event"] = json!({"event": name});
            }
            let answer = self.query("retention", question.clone()).await;
            assert_eq!(answer["source"]["kind"], "rollup", "{moment}: {}", answer["source"]);
            assert!(answer["source"].get("sample").is_none(), "{moment}: every user: {}", answer["source"]);
            question["source"] = json!("raw");
            let raw = self.query("retention", question).await;
            assert_eq!(answer["cohorts"], raw["cohorts"], "{moment}: retention rollup against raw");
            let mut first: HashMap<&str, i64> = HashMap::new();
            let mut bought: HashSet<(&str, i64)> = HashSet::new();
            for event in live {
                let day = (event.at.timestamp() - self.from_seconds).div_euclid(DAY);
                if cohort_event.is_none_or(|name| event.kind == "track" && event.name == Some(name)) {
                    let joined = first.entry(&event.user).or_insert(day);
                    *joined = (*joined).min(day);
                }
                if return_event.is_none_or(|name| event.name == Some(name)) {
                    bought.insert((&event.user, day));
                }
            }
            for (cohort, answer) in answer["cohorts"].as_array().expect("cohorts").iter().enumerate() {
                let members: Vec<&str> =
                    first.iter().filter(|(_, day)| **day == cohort as i64).map(|(user, _)| *user).collect();
                let mut expected = vec![members.len() as u64];
                for later in cohort as i64 + 1..6 {
                    expected.push(members.iter().filter(|user| bought.contains(&(**user, later))).count() as u64);
                }
                let asked = (cohort_event, return_event);
                assert_eq!(answer["returned"], json!(expected), "{moment}: {asked:?} cohort {cohort}");
            }
        }
    }
}

/// Runs cleanup, then the rollups job (as their schedules do); the runs' outcomes.
async fn cleanup_now(app: &TestApp) -> (Value, Value) {
    // Slots are whole seconds: one run per second.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let slot = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    (run_cleanup(app, &slot).await, run_job(app, "rollups", &slot).await)
}

#[tokio::test]
async fn trends_and_the_catalog_from_rollups_equal_the_raw_rows_and_what_was_sent_through_every_change() {
    let app = TestApp::new().await;
    let (_, read) = issue_key(&app.db.store, &app.config, Some(app.project), Scope::Read, "read").await;
    // Six whole UTC days before today: every hour of them can be rolled up.
    let now = chrono::Utc::now().timestamp() / DAY * DAY;
    let mut rng = StdRng::seed_from_u64(12);
    let sent = generate(900, now, &mut rng);
    for chunk in sent.chunks(100) {
        let reply = app.send(batch(&app.key, chunk.iter().map(Sent::json).collect())).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    }
    assert!(app.consume_queued().await.is_empty());
    let iso = |seconds: i64| chrono::DateTime::from_timestamp(seconds, 0).expect("time").to_rfc3339();
    let checker = Checker {
        app: &app,
        read: read.reveal().to_string(),
        from: iso(now - 6 * DAY),
        to: iso(now),
        from_seconds: now - 6 * DAY,
        breakdowns_from_rollup: std::cell::Cell::new(0),
        filters_from_rollup: std::cell::Cell::new(0),
    };
    let mut gone: HashSet<String> = HashSet::new();

    // Hours without events or marks count as rolled up (zero) from the start.
    let before = checker.check(&sent, &gone, "before the rollup step").await;
    let (_, rollups) = cleanup_now(&app).await;
    assert!(step_rows(&rollups, "rollups").0 > 0, "{rollups}");
    let after = checker.check(&sent, &gone, "after the rollup step").await;
    assert!(after > before, "the rollups answer for the hours with events: {before} then {after} hours");
    // Hours rolled up by a release before the users' rollups (their events counted, their
    // users not) are read raw, and marked for the rollups job by the read.
    // So are hours rolled up without their journeys (before migration 0013).
    app.db.execute("DELETE FROM rollup_user_hours WHERE hour % 3 = 0").await;
    app.db.execute("DELETE FROM rollup_journey_hours WHERE hour % 3 = 1").await;
    // And hours whose users a release before the activity rollup rolled up again, leaving
    // their activity as it was (here: none).
    app.db.execute("UPDATE rollup_user_hours SET with_activity = FALSE WHERE hour % 3 = 2").await;
    app.db.execute("DELETE FROM rollup_activity_hours WHERE hour % 3 = 2").await;
    checker.check(&sent, &gone, "with a third of the hours' users, journeys and activity not rolled up").await;
    let (_, rollups) = cleanup_now(&app).await;
    assert!(step_rows(&rollups, "rollups").0 > 0, "the read marked them: {rollups}");
    checker.check(&sent, &gone, "after the rollups job rolled their users up").await;
    assert_eq!(app.db.count("rollup_dirty_hours").await, 0);

    // Promoting a property: its backfill marks every hour, read raw until the job recounts them.
    assert_eq!(checker.breakdowns_from_rollup.get(), 0);
    let promote = format!("/v1/properties/properties.plan/promote?project={}", app.project);
    let reply = app.send(api_request("POST", &promote, &app.admin, None)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);
    assert_eq!(reply.json["property"], "properties.plan");
    assert_eq!(app.send(api_request("POST", &promote, &app.admin, None)).await.status, StatusCode::OK, "once");
    assert!(app.db.count("rollup_property_backfill").await > 0, "the backfill");
    assert_eq!(app.db.count("rollup_dirty_hours").await, 0, "other questions keep their rollups");
    checker.check(&sent, &gone, "right after promoting properties.plan").await;
    cleanup_now(&app).await;
    assert_eq!(app.db.count("rollup_property_backfill").await, 0);
    assert!(app.db.count("rollup_property_hours").await > 0);
    checker.check(&sent, &gone, "after the backfill").await;
    assert_eq!(checker.breakdowns_from_rollup.get(), 6, "breakdowns read the promoted property's rollup");
    assert_eq!(checker.filters_from_rollup.get(), 4, "filtered totals read the promoted property's rollup");

    // Duplicates change nothing; soft deletes and restores, an erasure do.
    let duplicates: Vec<Value> = sent.iter().take(60).map(Sent::json).collect();
    assert_eq!(app.send(batch(&app.key, duplicates)).await.status, StatusCode::OK);
    assert!(app.consume_queued().await.is_empty());
    let project = app.project;
    for (n, event) in sent.iter().enumerate().skip(100).step_by(37).take(12) {
        let uids: Vec<Vec<u8>> =
            app.db.query(&format!("SELECT uid FROM events WHERE message_id = '{}'", event.message_id)).await;
        let uid = uuid::Uuid::from_slice(&uids[0]).expect("uid");
        let path = format!("/v1/events/{uid}?project={project}");
        assert_eq!(app.send(api_request("DELETE", &path, &app.admin, None)).await.status, StatusCode::OK);
        if n % 3 == 0 {
            let restore = format!("/v1/events/{uid}/restore?project={project}");
            assert_eq!(app.send(api_request("POST", &restore, &app.admin, None)).await.status, StatusCode::OK);
        } else {
            gone.insert(event.message_id.clone());
        }
    }
    let erased = "user-7";
    let path = format!("/v1/users/{erased}?project={project}");
    assert_eq!(app.send(api_request("DELETE", &path, &app.admin, None)).await.status, StatusCode::ACCEPTED);
    gone.extend(sent.iter().filter(|e| e.user == erased).map(|e| e.message_id.clone()));
    checker.check(&sent, &gone, "after deletes, restores and an erasure request").await;
    cleanup_now(&app).await;
    assert_eq!(app.db.count(&format!("events WHERE user_id = '{erased}'")).await, 0, "erased");
    checker.check(&sent, &gone, "after cleanup erased and the rollups caught up").await;

    // Retention: three days kept.
    let reply = app
        .send(api_request("PATCH", &format!("/v1/projects/{project}"), &app.admin, Some(&json!({"retention_days": 3}))))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let (run, _) = cleanup_now(&app).await;
    let cutoff =
        chrono::DateTime::parse_from_rfc3339(run["run"]["slot"].as_str().expect("slot")).expect("slot").timestamp()
            - 3 * DAY;
    gone.extend(sent.iter().filter(|e| e.at.timestamp() < cutoff).map(|e| e.message_id.clone()));
    checker.check(&sent, &gone, "after retention").await;
    println!("rollups: {} of 900 events live at the end, every answer equal three ways", sent.len() - gone.len());

    // Promotions: listed with a read key, refused past the limit and for what is no property.
    let reply = app.send(api_request("GET", "/v1/properties/promoted", &checker.read, None)).await;
    assert_eq!(reply.json["data"][0]["property"], "properties.plan", "{}", reply.json);
    for n in 1..evtrack::store::MAX_PROMOTED {
        let path = format!("/v1/properties/context.p{n}/promote?project={project}");
        assert_eq!(app.send(api_request("POST", &path, &app.admin, None)).await.status, StatusCode::CREATED);
    }
    let path = format!("/v1/properties/traits.one_too_many/promote?project={project}");
    let reply = app.send(api_request("POST", &path, &app.admin, None)).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.json);
    let path = format!("/v1/properties/plan/promote?project={project}");
    assert_eq!(app.send(api_request("POST", &path, &app.admin, None)).await.status, StatusCode::BAD_REQUEST);
    let path = format!("/v1/properties/properties.plan/promote?project={project}");
    assert_eq!(app.send(api_request("POST", &path, &checker.read, None)).await.status, StatusCode::FORBIDDEN);

    // Demoting one frees its slot at once; breakdowns by it read the raw rows again, and the
    // rollups job deletes its counts (once the backfills of the promotions above are done:
    // recounting an hour deletes them too).
    cleanup_now(&app).await;
    let plan_id: u64 = app.db.query("SELECT id FROM promoted_properties WHERE property = 'properties.plan'").await[0];
    let counted = format!("rollup_property_hours WHERE property_id = {plan_id}");
    assert!(app.db.count(&counted).await > 0);
    assert_eq!(app.send(api_request("DELETE", &path, &checker.read, None)).await.status, StatusCode::FORBIDDEN);
    let reply = app.send(api_request("DELETE", &path, &app.admin, None)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["property"], "properties.plan");
    assert_eq!(app.send(api_request("DELETE", &path, &app.admin, None)).await.status, StatusCode::NOT_FOUND, "once");
    let reply = app.send(api_request("POST", &path, &app.admin, None)).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "promoted again before its counts are gone: {}", reply.json);
    let question = json!({"series": [{"event": "Bought"}], "from": checker.from, "to": checker.to,
        "breakdown": {"property": "properties.plan"}});
    let answer = checker.query("trends", question).await;
    assert!(answer["source"].get("property").is_none(), "not from the demoted rollup: {}", answer["source"]);
    let (_, rollups) = cleanup_now(&app).await;
    assert!(step_rows(&rollups, "demoted_properties").0 > 0, "{rollups}");
    assert_eq!(app.db.count(&counted).await, 0, "the demoted property's counts are deleted");
    assert_eq!(app.db.count("rollup_property_purge").await, 0);
    assert_eq!(app.db.count("promoted_properties WHERE property = 'properties.plan'").await, 0);
    let path = format!("/v1/properties/traits.one_too_many/promote?project={project}");
    assert_eq!(app.send(api_request("POST", &path, &app.admin, None)).await.status, StatusCode::CREATED, "a free slot");
    let actions: Vec<String> = app.db.query("SELECT action FROM audit_log WHERE action LIKE 'property.%'").await;
    assert!(actions.contains(&"property.demote".to_string()), "{actions:?}");
}

/// Every statement the read side runs, asked of the database with EXPLAIN: none reads the
/// events table (or the profiles and memberships) whole (a full table or index scan), whatever
/// the question. The project's
/// events sit among another project's, so that the planner has a reason to pick an index.
#[tokio::test]
async fn every_read_side_statement_reads_events_through_an_index() {
    let (app, read) = app_with_read_key().await;
    let other = app.db.store.create_project("other").await.expect("project").id;
    let (_, other_key) = issue_key(&app.db.store, &app.config, Some(other), Scope::Write, "w").await;
    let now = chrono::Utc::now().timestamp() / DAY * DAY;
    let mut rng = StdRng::seed_from_u64(21);
    for (key, count) in [(app.key.clone(), 600), (other_key.reveal().to_string(), 3_000)] {
        for chunk in generate(count, now, &mut rng).chunks(100) {
            let reply = app.send(batch(&key, chunk.iter().map(Sent::json).collect())).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
        }
    }
    let groups: Vec<Value> = (0..20)
        .map(|n| {
            let plan = ["pro", "free"][n % 2];
            json!({"type": "group", "userId": format!("user-{}", n % 7), "groupId": format!("g-{}", n % 5),
                "traits": {"plan": plan}, "messageId": format!("group-{n}")})
        })
        .collect();
    assert_eq!(app.send(batch(&app.key, groups)).await.status, StatusCode::OK);
    assert!(app.consume_queued().await.is_empty());
    cleanup_now(&app).await;
    // Promoted after the rollups ran: a breakdown by it reads every hour raw (the backfill).
    let promote = format!("/v1/properties/properties.plan/promote?project={}", app.project);
    assert_eq!(app.send(api_request("POST", &promote, &app.admin, None)).await.status, StatusCode::CREATED);
    app.reads.take();

    let iso =
        |seconds: i64| chrono::DateTime::from_timestamp(seconds, 0).expect("time").to_rfc3339().replace('+', "%2B");
    let (from, to) = (iso(now - 6 * DAY), iso(now));
    let gets = [
        "/v1/events".to_string(),
        format!("/v1/events?from={from}&to={to}&type=page"),
        "/v1/events?name=Bought&name=Viewed".to_string(),
        "/v1/events?user_id=user-3".to_string(),
        "/v1/events?where=properties.plan:eq:pro".to_string(),
        "/v1/events/live".to_string(),
        format!("/v1/events/export?from={from}&to={to}"),
        "/v1/users?prefix=user-1".to_string(),
        "/v1/users/user-3/events".to_string(),
        format!("/v1/event-names?from={from}&to={to}"),
        "/v1/groups?prefix=g-".to_string(),
        "/v1/groups?where=traits.plan:eq:pro".to_string(),
        "/v1/groups/g-1/members".to_string(),
        "/v1/users/user-3/groups".to_string(),
        // A group by its id alone (which types it has) and by id and type.
        "/v1/groups/g-1".to_string(),
        "/v1/groups/g-1?type=".to_string(),
        "/v1/groups?type=&prefix=g-".to_string(),
        "/v1/groups/g-1/members?type=".to_string(),
    ];
    let mut continued = Vec::new();
    for uri in &gets {
        let reply = app.send(api_request("GET", uri, &read, None)).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.json);
    }
    // The second pages of the groups' lists: their cursors hold an (id, type) position.
    for uri in ["/v1/groups?limit=2", "/v1/groups?limit=2&type=", "/v1/groups/g-1/members?limit=1"] {
        let reply = app.send(api_request("GET", uri, &read, None)).await;
        let cursor = reply.json["next_cursor"].as_str().unwrap_or_else(|| panic!("{uri}: {}", reply.json));
        continued.push(format!("{uri}&cursor={cursor}"));
    }
    for uri in &continued {
        let reply = app.send(api_request("GET", uri, &read, None)).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.json);
    }
    let (from, to) = (iso(now - 6 * DAY).replace("%2B", "+"), iso(now).replace("%2B", "+"));
    let posts = [
        ("trends", json!({"series": [{"event": "Bought"}, {"type": "page"}], "from": from, "to": to})),
        (
            "trends",
            json!({"series": [{"event": "Bought"}], "from": from, "to": to, "source": "raw",
            "breakdown": {"property": "properties.plan"}}),
        ),
        (
            "trends",
            json!({"series": [{"event": "Bought"}, {"type": "page"}], "from": from, "to": to,
            "breakdown": {"property": "properties.plan"}}),
        ),
        ("trends", json!({"series": [{"type": "any"}], "from": from, "to": to, "math": "mau"})),
        (
            "trends",
            json!({"series": [{"event": "Viewed", "where": ["properties.plan:eq:pro"]}], "from": from, "to": to,
            "math": "wau", "timezone": "Asia/Kolkata"}),
        ),
        ("funnels", json!({"steps": [{"event": "Viewed"}, {"event": "Bought"}], "from": from, "to": to})),
        (
            "funnels",
            json!({"steps": [{"event": "Viewed"}, {"event": "Bought"}], "from": from, "to": to, "source": "raw"}),
        ),
        ("funnels", json!({"steps": [{"type": "page"}, {"event": "Bought"}], "from": from, "to": to})),
        ("retention", json!({"from": from, "interval": "day", "periods": 6, "return_event": {"event": "Bought"}})),
        ("retention", json!({"from": from, "interval": "week", "periods": 2, "cohort_by": "first_ever"})),
        (
            "retention",
            json!({"from": from, "interval": "day", "periods": 6, "cohort_event": {"event": "Viewed"},
            "return_event": {"event": "Bought"}}),
        ),
    ];
    for (route, question) in &posts {
        let reply = app.send(api_request("POST", &format!("/v1/query/{route}"), &read, Some(question))).await;
        assert_eq!(reply.status, StatusCode::OK, "{route} {question}: {}", reply.json);
    }

    let statements = app.reads.take();
    assert!(statements.len() >= gets.len() + continued.len() + posts.len(), "{} statements recorded", statements.len());
    let pool = mysql_async::Pool::new(mysql_async::Opts::from_url(app.db.url.expose()).expect("url"));
    let mut conn = pool.get_conn().await.expect("connection");
    let mut accesses: Vec<(String, String)> = Vec::new();
    for (sql, params) in &statements {
        use mysql_async::prelude::Queryable;
        let plan: Vec<mysql_async::Row> =
            conn.exec(format!("EXPLAIN {sql}"), params.clone()).await.unwrap_or_else(|err| panic!("{sql}: {err}"));
        for step in &plan {
            let column = |name: &str| step.get::<Option<String>, _>(name).flatten();
            let (table, access, key) = (column("table"), column("type"), column("key"));
            // The journeys' and the activity's rollups are as big as the events table, but
            // narrow: read by ranges too; and profiles and group memberships.
            let indexed = ["events", "e", "rollup_journey_hours", "rollup_activity_hours"];
            let profiles = ["users", "group_profiles", "p", "group_members", "m"];
            if table.as_deref().is_some_and(|table| indexed.contains(&table) || profiles.contains(&table)) {
                accesses.push((access.clone().unwrap_or_default(), key.clone().unwrap_or_default()));
                assert!(
                    !matches!(access.as_deref(), Some("ALL") | Some("index")) && key.is_some(),
                    "reads {table:?} without an index ({access:?}, key {key:?}):\n{sql}"
                );
            }
        }
    }
    assert!(accesses.len() >= statements.len(), "every statement reads events, journeys or profiles: {accesses:?}");
    println!(
        "EXPLAIN: {} read statements, each reads events through an index: {:?}",
        statements.len(),
        accesses.iter().collect::<std::collections::BTreeSet<_>>()
    );
    drop(conn);
    pool.disconnect().await.ok();
}

/// A test app, and a read key of its project.
async fn app_with_read_key() -> (TestApp, String) {
    app_with_read_key_and(&[]).await
}

/// `app_with_read_key`, with settings of its own.
async fn app_with_read_key_and(overrides: &[(&str, &str)]) -> (TestApp, String) {
    let app = TestApp::with(evtrack_tests::TestDb::new().await, overrides).await;
    let (_, read) = issue_key(&app.db.store, &app.config, Some(app.project), Scope::Read, "read").await;
    let read = read.reveal().to_string();
    (app, read)
}

/// A Unix time (seconds) as SDKs send times: RFC 3339 in UTC, to the millisecond.
fn sdk_time(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0).expect("time").to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A visitor who signs up counts as one user: their anonymous events count as the user their
/// anonymousId was first linked to (identify), whether the link comes before or after the
/// hours were rolled up, in the rollups and the raw rows alike; a later link of the same id to
/// another user changes nothing.
#[tokio::test]
async fn a_visitor_who_signs_up_counts_as_one_user_in_trends_funnels_and_retention() {
    let (app, read) = app_with_read_key().await;
    let today = chrono::Utc::now().timestamp() / DAY * DAY;
    let at = sdk_time;
    let (day1, day2) = (today - 3 * DAY, today - 2 * DAY);
    let send = |events: Vec<Value>| async {
        let reply = app.send(batch(&app.key, events)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
        assert!(app.consume_queued().await.is_empty());
    };
    // Two visitors see the pricing page on day 1; the first signs up on day 2 (the SDK sends
    // its anonymousId along, but nothing has linked it yet).
    send(vec![
        json!({"type": "page", "name": "Pricing", "anonymousId": "anon-1", "messageId": "v-1", "timestamp": at(day1 + 36_000)}),
        json!({"type": "page", "name": "Pricing", "anonymousId": "anon-2", "messageId": "v-2", "timestamp": at(day1 + 39_600)}),
        json!({"type": "track", "event": "Signed Up", "userId": "u-1", "anonymousId": "anon-1", "messageId": "v-3",
               "timestamp": at(day2 + 36_000)}),
    ])
    .await;
    cleanup_now(&app).await;
    // Users active in the week to the end of day 2; Pricing → Signed Up; daily retention.
    let (from, to) = (at(day1), at(today));
    let questions = [
        json!({"series": [{"type": "any"}, {"type": "page", "event": "Pricing"}], "from": from, "to": to,
               "interval": "day", "math": "wau"}),
        json!({"steps": [{"type": "page", "event": "Pricing"}, {"event": "Signed Up"}], "from": from, "to": to}),
        json!({"from": from, "interval": "day", "periods": 2}),
    ];
    let answers = |moment: &'static str| visitor_answers(&app, &read, &questions, moment);
    // Before the link: three users in the week, nobody converts, day 1's cohort never returns.
    assert_eq!(answers("before the link").await, json!([3, 2, 0, 2, [2, 0]]));

    // The identify that links anon-1 to u-1 comes now, after day 1 and 2 were rolled up: the
    // hour of anon-1's page view is marked, and answers are exact before the job runs again.
    send(vec![json!({"type": "identify", "userId": "u-1", "anonymousId": "anon-1", "messageId": "v-4"})]).await;
    let hour_of_view = (day1 + 36_000) / 3_600;
    assert_eq!(app.db.count(&format!("rollup_dirty_hours WHERE hour = {hour_of_view}")).await, 1);
    assert_eq!(app.db.count(&format!("rollup_dirty_hours WHERE hour = {}", hour_of_view + 1)).await, 0);
    let linked = json!([2, 2, 1, 2, [2, 1]]);
    assert_eq!(answers("after the link, before the job").await, linked);
    // The rollups' watermark: the mark the job has yet to count, then the time of the answer.
    let watermark = || async {
        let reply = app.send(api_request("POST", "/v1/query/trends", &read, Some(&questions[0]))).await;
        let text = reply.json["source"]["watermark"].as_str().expect("a rollup answer has a watermark").to_string();
        chrono::DateTime::parse_from_rfc3339(&text).expect("a time").with_timezone(&chrono::Utc)
    };
    let marked: Vec<chrono::NaiveDateTime> =
        app.db.query(&format!("SELECT marked_at FROM rollup_dirty_hours WHERE hour = {hour_of_view}")).await;
    assert_eq!(watermark().await, marked[0].and_utc(), "the view's hour, marked by the link");
    cleanup_now(&app).await;
    assert_eq!(answers("after the link and the job").await, linked);
    let asked = chrono::Utc::now() - chrono::Duration::milliseconds(1);
    assert!(watermark().await >= asked, "no past hour is left to count");

    // anon-1 linked again, to somebody else: the first link stands, nothing is marked.
    send(vec![json!({"type": "identify", "userId": "u-9", "anonymousId": "anon-1", "messageId": "v-5"})]).await;
    assert_eq!(app.db.count(&format!("rollup_dirty_hours WHERE hour = {hour_of_view}")).await, 0);
    cleanup_now(&app).await;
    assert_eq!(answers("after a second link of the same id").await, linked);
}

/// An erasure deletes the links to the user it erases. An id it keeps (one with a profile of
/// its own is never erased through a link) then no longer counts its anonymous events as the
/// erased user: the hours of those events are recounted, and the rollups agree with the raw
/// rows after the erasure.
#[tokio::test]
async fn an_erasure_that_takes_an_ids_first_link_recounts_the_hours_of_its_anonymous_events() {
    let (app, read) = app_with_read_key().await;
    let day1 = chrono::Utc::now().timestamp() / DAY * DAY - 3 * DAY;
    let at = sdk_time;
    // On day 1 "old-id" is a user of its own, and it also sent a page view without a userId;
    // on day 2 it was aliased to "u-1", its first link: the page view counts as u-1.
    let events = vec![
        json!({"type": "identify", "userId": "old-id", "messageId": "e-1", "timestamp": at(day1 + 3_600)}),
        json!({"type": "page", "name": "Home", "anonymousId": "old-id", "messageId": "e-2", "timestamp": at(day1 + 7_200)}),
        json!({"type": "alias", "previousId": "old-id", "userId": "u-1", "messageId": "e-3", "timestamp": at(day1 + DAY)}),
    ];
    let reply = app.send(batch(&app.key, events)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert!(app.consume_queued().await.is_empty());
    cleanup_now(&app).await;
    let users_on_day1 = || async {
        let question = json!({"series": [{"type": "any"}], "from": at(day1), "to": at(day1 + DAY),
                              "interval": "day", "math": "unique_users"});
        let mut answers = Vec::new();
        for source in ["rollup", "raw"] {
            let mut question = question.clone();
            if source == "raw" {
                question["source"] = json!("raw");
            }
            let reply = app.send(api_request("POST", "/v1/query/trends", &read, Some(&question))).await;
            assert_eq!(reply.status, StatusCode::OK, "{question}: {}", reply.json);
            answers.push(reply.json["series"][0]["values"][0].clone());
        }
        answers
    };
    assert_eq!(users_on_day1().await, [json!(2), json!(2)], "old-id, and u-1 through the page view");

    let path = format!("/v1/users/u-1?project={}", app.project);
    assert_eq!(app.send(api_request("DELETE", &path, &app.admin, None)).await.status, StatusCode::ACCEPTED);
    cleanup_now(&app).await;
    assert_eq!(app.db.count("aliases").await, 0, "the link went with u-1");
    assert_eq!(app.db.count("events WHERE message_id = 'e-2'").await, 1, "old-id's page view is not u-1's to erase");
    assert_eq!(
        users_on_day1().await,
        [json!(1), json!(1)],
        "the page view counts as old-id now: the rollups as the raw rows"
    );
}

/// Counts leave out a user whose erasure is in progress however many erasures are: past the
/// thousand a read names by id, it joins them all, as lists do.
#[tokio::test]
async fn counts_leave_out_a_user_being_erased_behind_a_thousand_other_erasures_in_progress() {
    let (app, read) = app_with_read_key().await;
    let day1 = chrono::Utc::now().timestamp() / DAY * DAY - 3 * DAY;
    let events: Vec<Value> = ["u-gone", "u-kept"]
        .iter()
        .map(|user| {
            json!({"type": "track", "event": "Bought", "userId": user, "messageId": format!("{user}-1"),
                   "timestamp": sdk_time(day1 + 3_600)})
        })
        .collect();
    let reply = app.send(batch(&app.key, events)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert!(app.consume_queued().await.is_empty());
    cleanup_now(&app).await;
    let bought = || async {
        let question = json!({"series": [{"event": "Bought"}], "from": sdk_time(day1), "to": sdk_time(day1 + DAY),
                              "interval": "day"});
        let mut answers = Vec::new();
        for source in ["auto", "raw"] {
            let mut question = question.clone();
            question["source"] = json!(source);
            let reply = app.send(api_request("POST", "/v1/query/trends", &read, Some(&question))).await;
            assert_eq!(reply.status, StatusCode::OK, "{question}: {}", reply.json);
            answers.push(reply.json["series"][0]["values"][0].clone());
        }
        answers
    };
    assert_eq!(bought().await, [json!(2), json!(2)]);

    // A thousand erasures in progress, of ids with no events, requested before u-gone's.
    let project =
        app.db.query::<u64>(&format!("SELECT id FROM projects WHERE uid = X'{}'", app.project.simple())).await[0];
    let backlog: Vec<String> = (0..1_000)
        .map(|n| format!("(UNHEX(MD5('backlog-{n}')), {project}, UNHEX(SHA2('backlog-{n}', 256)))"))
        .collect();
    app.db
        .execute(&format!("INSERT INTO erasures (uid, project_id, subject_hash) VALUES {}", backlog.join(", ")))
        .await;
    let path = format!("/v1/users/u-gone?project={}", app.project);
    assert_eq!(app.send(api_request("DELETE", &path, &app.admin, None)).await.status, StatusCode::ACCEPTED);
    assert_eq!(bought().await, [json!(1), json!(1)], "the hour marked by the request, read raw");
    // The rollups job alone (cleanup would carry the erasures out), in a slot of its own.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let slot = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    run_job(&app, "rollups", &slot).await;
    assert_eq!(app.db.count("rollup_dirty_hours").await, 0);
    assert_eq!(bought().await, [json!(1), json!(1)], "the hour rolled up again, without u-gone");
    assert_eq!(app.db.count("events WHERE user_id = 'u-gone'").await, 1, "cleanup has not run");
}

/// Retention by first cohort event ever counts new users only: a user who had the cohort
/// event before the range is in no cohort, where by first in the range they join the first
/// cohort they are active in. The rollups (a named cohort event), the raw rows and `any` event
/// agree.
#[tokio::test]
async fn retention_by_first_event_ever_leaves_out_users_seen_before_the_range() {
    let (app, read) = app_with_read_key().await;
    let today = chrono::Utc::now().timestamp() / DAY * DAY;
    let at = sdk_time;
    let (day1, day2) = (today - 3 * DAY, today - 2 * DAY);
    let visits = [
        ("u-old", today - 6 * DAY),
        ("u-old", day1),
        ("u-new", day1),
        ("u-old", day2),
        ("u-new", day2),
        ("u-late", day2),
    ];
    let events: Vec<Value> = visits
        .iter()
        .enumerate()
        .map(|(n, (user, day))| {
            json!({"type": "track", "event": "Visited", "userId": user, "messageId": format!("r-{n}"),
                   "timestamp": at(day + 36_000)})
        })
        .collect();
    let reply = app.send(batch(&app.key, events)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert!(app.consume_queued().await.is_empty());
    cleanup_now(&app).await;

    for (cohort_by, expected) in [("first_in_range", json!([[2, 2], [1]])), ("first_ever", json!([[1, 1], [1]]))] {
        let visited = json!({"event": "Visited"});
        // The question, and where its rows come from: named events from the journeys' rollup,
        // any event from the activity's.
        let any = json!({"type": "any"});
        let ways = [
            (&visited, &visited, "auto", "rollup"),
            (&visited, &visited, "raw", "raw"),
            (&visited, &any, "auto", "rollup"),
            (&any, &any, "auto", "rollup"),
            (&any, &any, "raw", "raw"),
        ];
        for (cohort_event, return_event, source, read_from) in ways {
            let question = json!({"from": at(day1), "interval": "day", "periods": 2, "cohort_event": cohort_event,
                                  "return_event": return_event, "cohort_by": cohort_by, "source": source});
            let reply = app.send(api_request("POST", "/v1/query/retention", &read, Some(&question))).await;
            assert_eq!(reply.status, StatusCode::OK, "{question}: {}", reply.json);
            let table: Vec<Value> =
                reply.json["cohorts"].as_array().expect("cohorts").iter().map(|c| c["returned"].clone()).collect();
            assert_eq!(json!(table), expected, "{question}: {}", reply.json);
            assert_eq!(reply.json["cohort_by"], cohort_by);
            assert_eq!(reply.json["source"]["kind"], read_from, "{question}: {}", reply.json);
            let before = &reply.json["source"]["before_range"];
            if cohort_by == "first_ever" {
                // Read as the range was, so that users are hashed alike.
                assert_eq!(before["kind"], read_from, "{question}: the users before the range, read from: {before}");
                assert_eq!(before["rows"], 1, "{question}: u-old's first visit: {before}");
                assert_eq!(before["users_left_out"], 1, "{question}: u-old: {before}");
            } else {
                assert!(before.is_null(), "{before}");
            }
        }
    }
    let wrong = json!({"from": at(day1), "cohort_by": "first_time"});
    let reply = app.send(api_request("POST", "/v1/query/retention", &read, Some(&wrong))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.json);
}

/// What `a_visitor_who_signs_up…` asks (`questions`: a trend of weekly users, a funnel, a
/// retention), from the rollups and from the raw rows, which must agree: users of any type and
/// of Pricing in the week to day 2, users converting, day 1's cohort and its returns.
async fn visitor_answers(app: &TestApp, read: &str, questions: &[Value; 3], moment: &str) -> Value {
    let mut seen = Vec::new();
    for raw in [false, true] {
        let mut answers = Vec::new();
        for (route, question) in ["trends", "funnels", "retention"].into_iter().zip(questions) {
            let mut question = question.clone();
            if raw {
                question["source"] = json!("raw");
            }
            let reply = app.send(api_request("POST", &format!("/v1/query/{route}"), read, Some(&question))).await;
            assert_eq!(reply.status, StatusCode::OK, "{question}: {}", reply.json);
            answers.push(reply.json);
        }
        let [trend, funnel, retention] = &answers[..] else { unreachable!("three answers") };
        let cohort = &retention["cohorts"][0];
        seen.push(json!([
            trend["series"][0]["values"][1],
            trend["series"][1]["values"][1],
            funnel["steps"][1]["users"],
            cohort["users"],
            cohort["returned"]
        ]));
    }
    assert_eq!(seen[0], seen[1], "{moment}: the rollups against the raw rows");
    seen.remove(0)
}

/// A question past the rows one question may read (`EVTRACK_MAX_ROWS_READ`, 5 here) answers
/// `422 query_too_big`; from the raw rows it says how to ask so that the rollups answer,
/// and asked that way it is answered.
#[tokio::test]
async fn a_question_too_big_for_the_raw_rows_answers_422_saying_how_the_rollups_would_answer_it() {
    let (app, read) = app_with_read_key_and(&[("EVTRACK_MAX_ROWS_READ", "5")]).await;
    let day = chrono::Utc::now().timestamp() / DAY * DAY - 2 * DAY;
    // Eight users visit; two of them buy.
    let events: Vec<Value> = (0..8)
        .map(|n| {
            json!({"type": "track", "event": "Visited", "userId": format!("u-{n}"), "messageId": format!("v-{n}"),
                        "properties": {"plan": format!("plan-{n}")}, "timestamp": sdk_time(day + 60 * n)})
        })
        .chain((0..2).map(|n| {
            json!({"type": "track", "event": "Bought", "userId": format!("u-{n}"), "messageId": format!("b-{n}"),
                                     "timestamp": sdk_time(day + 3_600 + 60 * n)})
        }))
        .collect();
    let reply = app.send(batch(&app.key, events)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert!(app.consume_queued().await.is_empty());
    let ask = |path: &'static str, question: Value| {
        let app = &app;
        let read = &read;
        async move { app.send(api_request("POST", path, read, Some(&question))).await }
    };
    let from = sdk_time(day);
    let too_big = |reply: &evtrack_tests::Reply, advice: &str| {
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reply.json);
        assert_eq!(reply.json["code"], "query_too_big");
        let message = reply.json["message"].as_str().expect("a message");
        assert!(message.contains("shorter time range"), "{message}");
        assert!(message.contains(advice), "{message} should say: {advice}");
    };

    // Retention on any event would read every event of the range (10 rows, none rolled up
    // yet): answered from a sample of the users, and said so. Its counts are the sample's
    // users (those whose hash is below the sample's bound) scaled up.
    let any = json!({"from": from, "interval": "day", "periods": 2});
    let funnel = json!({"steps": [{"event": "Visited"}, {"event": "Bought"}], "from": from, "to": sdk_time(day + DAY)});
    // The users' hashes as the rollups compute them (`USER_HASH`).
    let hashes = (0..8)
        .map(|n| format!("SELECT CAST(CONV(LEFT(MD5('u-{n}'), 16), 16, 10) AS UNSIGNED)"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let hashes: Vec<u64> = app.db.query(&hashes).await;
    // How many of `users` (u-0 …) the answer's sample takes, scaled up as the answer scales.
    let taken = |answer: &Value, users: std::ops::Range<usize>| {
        let one_in = answer["source"]["sample"]["one_in"].as_u64().expect("a sample");
        assert!(one_in > 1, "{}", answer["source"]);
        let bound = (u128::from(u64::MAX) + 1) / u128::from(one_in);
        hashes[users].iter().filter(|hash| u128::from(**hash) < bound).count() as u64 * one_in
    };
    // First with every hour dirty (read raw, sampled there), then rolled up (the rollups'
    // rows sampled).
    for rolled_up in [false, true] {
        if rolled_up {
            cleanup_now(&app).await;
        }
        let reply = ask("/v1/query/retention", any.clone()).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
        assert_eq!(reply.json["source"]["raw_hours"] == 0, rolled_up, "{}", reply.json["source"]);
        let users = taken(&reply.json, 0..8);
        assert_eq!(reply.json["cohorts"][0]["users"], json!(users), "{hashes:?}");
        // Everyone's events were on the first day: nobody came back on the second.
        assert_eq!(reply.json["cohorts"][0]["returned"], json!([users, 0]));
        // So is a funnel of named steps (10 rows as well).
        let reply = ask("/v1/query/funnels", funnel.clone()).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
        let users: Vec<u64> = (0..2).map(|step| reply.json["steps"][step]["users"].as_u64().expect("users")).collect();
        assert_eq!(users, [taken(&reply.json, 0..8), taken(&reply.json, 0..2)], "{hashes:?}: {}", reply.json);
    }
    // A cohort event with a filter is read from the raw rows: too big, and said how.
    let filtered = json!({"from": from, "interval": "day", "periods": 2,
                          "cohort_event": {"event": "Visited", "where": ["properties.plan:is_set"]}});
    too_big(&ask("/v1/query/retention", filtered).await, "without `where` filters");
    // Forced to the raw rows, a question the rollups could answer says so.
    let visits = json!({"from": from, "interval": "day", "periods": 2, "source": "raw",
                        "cohort_event": {"event": "Visited"}, "return_event": {"event": "Visited"}});
    too_big(&ask("/v1/query/retention", visits).await, "without `\"source\": \"raw\"`");
    // Named events within the cap, as the advice says: answered from the rollups.
    let purchases = json!({"from": from, "interval": "day", "periods": 2,
                           "cohort_event": {"event": "Bought"}, "return_event": {"event": "Bought"}});
    let reply = ask("/v1/query/retention", purchases).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["source"]["kind"], "rollup");
    assert_eq!(reply.json["source"]["max_rows"], 5);
    assert_eq!(reply.json["cohorts"][0]["users"], 2);

    // A funnel with a filtered step reads the raw rows.
    let funnel = json!({"steps": [{"event": "Visited", "where": ["properties.plan:is_set"]}, {"event": "Bought"}],
                        "from": from, "to": sdk_time(day + DAY)});
    too_big(&ask("/v1/query/funnels", funnel.clone()).await, "without `where` filters");
    // Forced to the raw rows too: the rollups would not answer it either way, and it is told so.
    let mut forced = funnel;
    forced["source"] = json!("raw");
    too_big(&ask("/v1/query/funnels", forced).await, "without `where` filters");

    // A breakdown by a promoted property reads raw the hours its backfill has yet to count, a
    // group per value: eight plans pass the 5 as well.
    let promote = format!("/v1/properties/properties.plan/promote?project={}", app.project);
    let reply = app.send(api_request("POST", &promote, &app.admin, None)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);
    let by_plan = json!({"series": [{"event": "Visited"}], "from": from, "to": sdk_time(day + DAY), "interval": "day",
                         "breakdown": {"property": "properties.plan"}});
    let reply = ask("/v1/query/trends", by_plan).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reply.json);
    assert_eq!(reply.json["code"], "query_too_big");
    let message = reply.json["message"].as_str().expect("a message");
    assert!(!message.contains("raw events"), "the rollup's answer refused it, not a read of the raw rows: {message}");

    // The catalog holds at most as many counts (one per hour, type and name): six more names
    // pass the 5.
    let names: Vec<Value> = (0..6)
        .map(|n| {
            json!({"type": "track", "event": format!("Name {n}"), "userId": "u-0", "messageId": format!("n-{n}"),
                   "timestamp": sdk_time(day + 7_200)})
        })
        .collect();
    let reply = app.send(batch(&app.key, names)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert!(app.consume_queued().await.is_empty());
    let reply = app.send(api_request("GET", &format!("/v1/event-names?from={from}"), &read, None)).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reply.json);
    assert_eq!(reply.json["code"], "query_too_big");
}

/// Names and ids that differ only by trailing spaces are one name and one user to SQL (its
/// collation pads), so the rollups, which the job tallies row by row, count them as the raw
/// rows do: in trends, funnels, retention and the catalog; a nameless event counts in the
/// hour's users and activity, and in no journey.
#[tokio::test]
async fn names_and_ids_apart_only_by_trailing_spaces_count_as_one_in_the_rollups_as_in_the_raw_rows() {
    let (app, read) = app_with_read_key().await;
    let day1 = chrono::Utc::now().timestamp() / DAY * DAY - 3 * DAY;
    let day2 = day1 + DAY;
    let at = |seconds: i64| sdk_time(seconds);
    let track = |id: &str, name: &str, user: &str, seconds: i64| json!({"type": "track", "event": name, "userId": user, "messageId": id, "timestamp": at(seconds)});
    let events = vec![
        track("t-1", "Buy", "ann", day1 + 36_000),
        track("t-2", "Buy  ", "ann  ", day1 + 36_060),
        track("t-3", "Buy", "bob", day1 + 36_120),
        json!({"type": "page", "userId": "cy", "messageId": "t-4", "timestamp": at(day1 + 36_180)}),
        json!({"type": "identify", "userId": "ann", "messageId": "t-5", "timestamp": at(day1 + 36_240)}),
        track("t-6", "Buy ", "bob", day2 + 36_000),
        track("t-8", ODD_NAME, "bob", day2 + 36_120),
        json!({"type": "page", "userId": "cy ", "messageId": "t-7", "timestamp": at(day2 + 36_060)}),
    ];
    let reply = app.send(batch(&app.key, events)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert!(app.consume_queued().await.is_empty());
    cleanup_now(&app).await;
    assert_eq!(app.db.count("rollup_dirty_hours").await, 0, "every hour rolled up");

    let (from, to) = (at(day1), at(day2 + DAY));
    let questions = [
        ("trends", json!({"series": [{"event": "Buy"}], "from": from, "to": to, "interval": "day"})),
        (
            "trends",
            json!({"series": [{"event": "Buy"}], "from": from, "to": to, "interval": "day", "math": "unique_users"}),
        ),
        (
            "trends",
            json!({"series": [{"type": "any"}], "from": from, "to": to, "interval": "day", "math": "unique_users"}),
        ),
        ("funnels", json!({"steps": [{"event": "Buy"}, {"event": "Buy"}], "from": from, "to": to})),
        ("retention", json!({"from": from, "interval": "day", "periods": 2})),
    ];
    let mut seen = Vec::new();
    for raw in [false, true] {
        let mut answers = Vec::new();
        for (route, question) in &questions {
            let mut question = question.clone();
            if raw {
                question["source"] = json!("raw");
            }
            let reply = app.send(api_request("POST", &format!("/v1/query/{route}"), &read, Some(&question))).await;
            assert_eq!(reply.status, StatusCode::OK, "{question}: {}", reply.json);
            answers.push(reply.json);
        }
        let values = |n: usize| answers[n]["series"][0]["values"].clone();
        let cohort = &answers[4]["cohorts"][0];
        seen.push(json!([
            values(0),
            values(1),
            values(2),
            answers[3]["steps"][1]["users"],
            cohort["users"],
            cohort["returned"]
        ]));
    }
    assert_eq!(seen[0], seen[1], "the rollups against the raw rows");
    // Buy: 3 events of ann and bob on day 1, bob's on day 2; users of any event: ann, bob and
    // cy on day 1, bob and cy on day 2; both of Buy's users did it twice; day 1's cohort of 3,
    // 2 of whom came back.
    assert_eq!(seen[0], json!([[3, 1], [2, 1], [3, 2], 2, 3, [3, 2]]));
    let names = app.send(api_request("GET", &format!("/v1/event-names?from={from}&to={to}"), &read, None)).await;
    assert_eq!(names.status, StatusCode::OK, "{}", names.json);
    let buys: Vec<&Value> = names.json["data"]
        .as_array()
        .expect("names")
        .iter()
        .filter(|name| name["name"].as_str().is_some_and(|name| name.trim_end() == "Buy"))
        .collect();
    assert_eq!(buys.len(), 1, "one name: {}", names.json);
    assert_eq!(buys[0]["events"], 4, "{}", names.json);
    let odd = names.json["data"].as_array().expect("names").iter().find(|name| name["name"] == ODD_NAME);
    assert_eq!(odd.map(|name| &name["events"]), Some(&json!(1)), "kept as sent: {}", names.json);
}

/// A property's values apart only by trailing spaces are one line of a breakdown, spelled
/// without them: from the promoted property's rollup, from the raw rows (grouped per day, each
/// day's group keeps the spelling it met first: the raw rows answered two lines, "pro" and
/// "pro "), and in a funnel's breakdown.
#[tokio::test]
async fn values_apart_only_by_trailing_spaces_are_one_line_of_a_breakdown_from_the_rollups_and_the_raw_rows() {
    let (app, read) = app_with_read_key().await;
    let promote = format!("/v1/properties/properties.plan/promote?project={}", app.project);
    assert_eq!(app.send(api_request("POST", &promote, &app.admin, None)).await.status, StatusCode::CREATED);
    let day1 = chrono::Utc::now().timestamp() / DAY * DAY - 3 * DAY;
    let day2 = day1 + DAY;
    let buy = |id: &str, user: &str, plan: Option<&str>, seconds: i64| {
        let mut event =
            json!({"type": "track", "event": "Buy", "userId": user, "messageId": id, "timestamp": sdk_time(seconds)});
        if let Some(plan) = plan {
            event["properties"] = json!({"plan": plan});
        }
        event
    };
    // Day 1 meets "pro" first, day 2 "pro ".
    let events = vec![
        buy("b-1", "ann", Some("pro"), day1 + 3_600),
        buy("b-2", "bob", Some("pro "), day1 + 7_200),
        buy("b-3", "cy", Some("pro "), day2 + 3_600),
        buy("b-4", "dee", Some("pro"), day2 + 7_200),
        buy("b-5", "eve", Some("pro  "), day2 + 7_300),
        buy("b-6", "fay", Some("team"), day2 + 7_400),
        buy("b-7", "gus", None, day2 + 7_500),
    ];
    assert_eq!(app.send(batch(&app.key, events)).await.status, StatusCode::OK);
    assert!(app.consume_queued().await.is_empty());
    cleanup_now(&app).await;
    assert_eq!(app.db.count("rollup_dirty_hours").await + app.db.count("rollup_property_backfill").await, 0);

    let (from, to) = (sdk_time(day1), sdk_time(day2 + DAY));
    let question = json!({"series": [{"event": "Buy"}], "from": from, "to": to, "interval": "day",
        "breakdown": {"property": "properties.plan", "limit": 2}});
    let mut answers = Vec::new();
    for source in ["auto", "raw"] {
        let mut question = question.clone();
        question["source"] = json!(source);
        let reply = app.send(api_request("POST", "/v1/query/trends", &read, Some(&question))).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
        let lines: Vec<(Value, Value)> = reply.json["series"]
            .as_array()
            .expect("series")
            .iter()
            .map(|line| (line["breakdown"].clone(), line["values"].clone()))
            .collect();
        answers.push((reply.json["source"]["kind"].clone(), lines));
    }
    let expected = vec![
        (json!({"kind": "value", "value": "pro"}), json!([2, 3])),
        (json!({"kind": "value", "value": "team"}), json!([0, 1])),
        (json!({"kind": "missing"}), json!([0, 1])),
    ];
    assert_eq!(answers[0], (json!("rollup"), expected.clone()), "from the rollups");
    assert_eq!(answers[1], (json!("raw"), expected), "from the raw rows");

    let funnel = json!({"steps": [{"event": "Buy"}, {"event": "Buy"}], "from": from, "to": to,
        "breakdown": {"property": "properties.plan", "limit": 5}});
    let reply = app.send(api_request("POST", "/v1/query/funnels", &read, Some(&funnel))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let lines: Vec<(Value, Value)> = reply.json["breakdown"]
        .as_array()
        .expect("breakdown")
        .iter()
        .map(|line| (line["value"].clone(), line["steps"][0]["users"].clone()))
        .collect();
    assert!(lines.contains(&(json!("pro"), json!(5))), "one line of pro's 5 users: {}", reply.json["breakdown"]);
    assert!(!lines.iter().any(|(value, _)| value.as_str().is_some_and(|value| value.ends_with(' '))), "{lines:?}");
}

/// A name with what SQL and JSON escape, and characters of four bytes.
const ODD_NAME: &str = "Café ☕ \"quoted\" back\\slash 'single' 😀";

/// A busy hour is read in slices (50,000 rows at a time) with its journeys written after each:
/// 60,000 events in one hour, seven to a millisecond (the same event of the same user), so
/// that a slice ends inside a millisecond whose journey goes on in the next. The rollups then
/// hold exactly what SQL's `GROUP BY` makes of the same rows.
#[tokio::test]
async fn a_busy_hour_is_rolled_up_in_slices_exactly_as_sql_groups_it() {
    let app = TestApp::new().await;
    let project: u64 =
        app.db.query(&format!("SELECT id FROM projects WHERE uid = UNHEX('{}')", app.project.simple())).await[0];
    let hour = (chrono::Utc::now().timestamp() / 3_600 - 30) as u32;
    let start = chrono::DateTime::from_timestamp(i64::from(hour) * 3_600, 0).expect("time").naive_utc();
    let start = start.format("%Y-%m-%d %H:%M:%S");
    app.db
        .execute(&format!(
            "INSERT INTO events (uid, project_id, message_id, type, name, user_id, timestamp, received_at)
             SELECT UNHEX(REPLACE(UUID(), '-', '')), {project}, CONCAT('busy-', seq), IF(seq DIV 7 % 5 = 0, 'page', 'track'),
                    IF(seq DIV 7 % 11 = 0, NULL, CONCAT('Step ', seq DIV 7 % 4)), CONCAT('user-', seq DIV 7 % 3),
                    TIMESTAMP'{start}' + INTERVAL (seq DIV 7) * 37000 MICROSECOND, NOW(3)
             FROM seq_0_to_59999"
        ))
        .await;
    app.db
        .execute(&format!(
            "INSERT INTO rollup_dirty_hours (project_id, hour, marked_at) VALUES ({project}, {hour}, NOW(3) - INTERVAL 1 MINUTE)"
        ))
        .await;
    cleanup_now(&app).await;
    assert_eq!(app.db.count("rollup_dirty_hours").await, 0, "the hour is rolled up");

    // Each rollup's rows for the hour against the same rows grouped by SQL, as text.
    let db = &app.db;
    let sorted = |sql: String| async move {
        let mut rows: Vec<String> = db.query(&sql).await;
        rows.sort();
        rows
    };
    let hash = "CAST(CONV(LEFT(MD5(TRIM(TRAILING ' ' FROM user_id)), 16), 16, 10) AS UNSIGNED)";
    let ms = format!("TIMESTAMPDIFF(MICROSECOND, TIMESTAMP'{start}', timestamp) DIV 1000");
    let rows = format!("FROM events WHERE project_id = {project} AND message_id LIKE 'busy-%'");
    // (what, at least so many rows, the rollup and its columns, the same from the rows).
    let checks = [
        (
            "the journeys",
            5_000,
            "rollup_journey_hours",
            "type, name, user_hash, at_ms, events",
            format!("type, name, {hash}, {ms}, COUNT(*)"),
            format!("AND name IS NOT NULL GROUP BY type, name, {hash}, {ms}"),
        ),
        (
            "the activity",
            3,
            "rollup_activity_hours",
            "user_hash, first_ms, last_ms",
            format!("{hash}, MIN({ms}), MAX({ms})"),
            format!("GROUP BY {hash}"),
        ),
        (
            "the counts",
            2,
            "rollup_event_hours",
            "type, name, events, last_at",
            "type, COALESCE(name, ''), COUNT(*), MAX(timestamp)".to_string(),
            "GROUP BY type, COALESCE(name, '')".to_string(),
        ),
    ];
    for (what, at_least, rollup, columns, grouped, grouping) in checks {
        let rolled_up = sorted(format!("SELECT CONCAT_WS('|', {columns}) FROM {rollup} WHERE hour = {hour}")).await;
        let grouped = sorted(format!("SELECT CONCAT_WS('|', {grouped}) {rows} {grouping}")).await;
        assert!(grouped.len() >= at_least, "{what}: {} rows", grouped.len());
        assert_eq!(rolled_up, grouped, "{what}");
    }
    let users: Vec<u64> = app.db.query(&format!("SELECT COUNT(*) FROM rollup_user_hours WHERE hour = {hour}")).await;
    assert_eq!(users, [2], "users of each type");
}

#[tokio::test]
async fn the_catalog_lists_the_most_frequent_names_up_to_its_cap_and_says_how_many_more() {
    let (app, read) = app_with_read_key().await;
    let mut events: Vec<Value> = (0..2_005)
        .map(|n| json!({"type": "track", "event": format!("made-up-{n:04}"), "userId": "u", "messageId": format!("m-{n}")}))
        .collect();
    // The most frequent, and the same name sent with a trailing space: one entry.
    events.push(json!({"type": "track", "event": "Frequent", "userId": "u", "messageId": "f-1"}));
    events.push(json!({"type": "track", "event": "Frequent ", "userId": "u", "messageId": "f-2"}));
    for part in events.chunks(1_000) {
        assert_eq!(app.send(batch(&app.key, part.to_vec())).await.status, StatusCode::OK);
    }
    assert!(app.consume_queued().await.is_empty());
    let reply = app.send(api_request("GET", "/v1/event-names", &read, None)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let data = reply.json["data"].as_array().expect("data");
    assert_eq!((data.len(), reply.json["names_left_out"].as_u64()), (2_000, Some(6)));
    assert_eq!((data[0]["name"].as_str(), data[0]["events"].as_u64()), (Some("Frequent"), Some(2)));
}
