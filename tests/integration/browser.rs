//! The browser path in a real browser (headless Chromium, scripts in tests/browser/): the
//! browser SDKs from npm sending to `evtrack up` from a page of another origin, and the
//! dashboard used as a person would.

use crate::stack::post_batch;
use chrono::{DateTime, Duration as Span, NaiveDate, Utc};
use evtrack_tests::*;
use mysql_async::prelude::Queryable;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Runs tests/browser/`script` with Node; it must succeed. Returns what it printed (JSON).
async fn run_browser_script(script: &str, args: &[&str]) -> Value {
    let node = std::env::var("EVTRACK_TEST_NODE").expect(
        "EVTRACK_TEST_NODE is not set: run the tests with `infra/dev.sh test`, which installs Node and Chromium",
    );
    assert!(
        std::env::var_os("EVTRACK_TEST_CHROMIUM").is_some(),
        "EVTRACK_TEST_CHROMIUM is not set: run the tests with `infra/dev.sh test`, which installs Chromium"
    );
    let script = format!("{}/browser/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = tokio::process::Command::new(&node)
        .arg(&script)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|err| panic!("{node} {script}: {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{script} failed:\n{}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(&stdout).unwrap_or_else(|err| panic!("{script} printed no JSON ({err}): {stdout}"))
}

fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// Each SDK's page views, tracks and identifies with traits, and sends one event as the page
/// is left (RudderStack by sendBeacon, analytics-next's batch with keepalive, posthog-js's
/// `$pageleave` by sendBeacon): every event is stored once, with the browser's user agent and
/// the page's URL in `context`.
#[tokio::test]
async fn the_browser_sdks_in_chromium_deliver_every_event_once_with_the_page_and_the_browser() {
    let mut stack = StackProcess::start(&[]);
    let run = format!("r{}", uuid::Uuid::now_v7().simple());
    let report = run_browser_script("sdks.mjs", &[&stack.address, &stack.key, &run]).await;
    let agent = report["userAgent"].as_str().expect("the browser's user agent");
    assert!(agent.contains("HeadlessChrome"), "{agent}");

    let shown = [("page", ""), ("track", "Clicked Buy"), ("identify", "")];
    let left = ("track", "Page Left");
    let expected: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("segment", shown.to_vec()),
        ("segment-batching", [&shown[..], &[left]].concat()),
        ("rudderstack", shown.to_vec()),
        ("rudderstack-beacon", [&shown[..], &[left]].concat()),
        // posthog-js names a page view by the page's title, and sends $pageleave on pagehide.
        (
            "posthog",
            vec![("page", "Shop"), ("track", "Clicked Buy"), ("identify", ""), ("group", ""), ("track", "$pageleave")],
        ),
    ];
    let total = expected.iter().map(|(_, events)| events.len() as u64).sum();
    let of_run = format!("JSON_VALUE(context, '$.page.url') LIKE {}", quoted(&format!("%?run={run}")));
    let stored = stack
        .wait_for_count(&format!("SELECT COUNT(*) FROM events WHERE {of_run}"), total, Duration::from_secs(30))
        .await;
    assert_eq!(stored, total, "every event of every page, once");
    for (page, events) in &expected {
        let url = report["pages"][page].as_str().expect("the page's url");
        let on_page = format!("JSON_VALUE(context, '$.page.url') = {}", quoted(url));
        let count = stack.count(&format!("SELECT COUNT(*) FROM events WHERE {on_page}")).await;
        assert_eq!(count, events.len() as u64, "{page}: {events:?}");
        for (kind, name) in events {
            let sql = format!(
                "SELECT COUNT(*) FROM events WHERE {on_page} AND type = '{kind}' AND COALESCE(name, '') = {} \
                 AND JSON_VALUE(context, '$.userAgent') = {}",
                quoted(name),
                quoted(agent)
            );
            assert_eq!(stack.count(&sql).await, 1, "{page}: one {kind} {name:?} with the browser's user agent");
        }
        let user = format!("{run}-{page}-user");
        let traits = stack
            .count(&format!(
                "SELECT COUNT(*) FROM users WHERE user_id = {} AND JSON_VALUE(traits, '$.plan') = 'pro' \
                 AND JSON_VALUE(traits, '$.email') = 'ada@example.com'",
                quoted(&user)
            ))
            .await;
        assert_eq!(traits, 1, "{page}: identify's traits are the user's");
    }
    // posthog-js's group(): the group's traits, and its user a member (by `$groups`).
    let posthog_user = format!("{run}-posthog-user");
    let group = quoted(&format!("{posthog_user}-acme"));
    let sql =
        format!("SELECT COUNT(*) FROM group_profiles WHERE group_id = {group} AND JSON_VALUE(traits, '$.seats') = 3");
    assert_eq!(stack.count(&sql).await, 1, "posthog: the group's traits");
    let sql = format!(
        "SELECT COUNT(*) FROM group_members WHERE group_id = {group} AND member_id = {}",
        quoted(&posthog_user)
    );
    assert_eq!(stack.count(&sql).await, 1, "posthog: the user is the group's member");
    assert_eq!(stack.count("SELECT COUNT(*) FROM rejected_events").await, 0, "nothing quarantined");
    let (exit, _) = stack.interrupt();
    assert!(exit.success(), "{exit:?}");
}

/// One user's day of events, as the dashboard test sends them.
struct Sent {
    user: String,
    at: DateTime<Utc>,
}

/// Retention by UTC day, any event, from what was sent: users whose first day is `day`, and
/// how many of them had an event `k` days later.
fn retention_truth(sent: &[Sent], day: NaiveDate, periods: usize) -> Vec<u64> {
    let mut days: BTreeMap<&str, BTreeSet<NaiveDate>> = BTreeMap::new();
    for event in sent {
        days.entry(&event.user).or_default().insert(event.at.date_naive());
    }
    let cohort: Vec<&BTreeSet<NaiveDate>> = days.values().filter(|active| active.first() == Some(&day)).collect();
    (0..periods)
        .map(|k| cohort.iter().filter(|active| active.contains(&(day + Span::days(k as i64)))).count() as u64)
        .collect()
}

/// The dashboard in Chromium, against what was sent: a wrong key is refused with a message;
/// with a read key, the trend, its breakdown, the top events, a funnel, a retention table and
/// a user's timeline show the sent events' numbers, and events sent while the live tail is
/// open appear in it once each. No CSP violation and no script error on the way. The
/// screenshots are left in target/screenshots/.
#[tokio::test]
async fn the_dashboard_in_chromium_shows_what_was_sent() {
    let mut stack = StackProcess::start(&[]);
    let read_key = stack.read_key("dashboard").await;
    let run = format!("r{}", uuid::Uuid::now_v7().simple());
    // Six users see the pricing page two days ago, four sign up a day ago, two buy an hour ago.
    let now = Utc::now();
    let mut messages = Vec::new();
    let mut sent = Vec::new();
    for n in 1..=6 {
        let user = format!("{run}-u{n}");
        let plan = if n % 2 == 0 { "pro" } else { "free" };
        let viewed = now - Span::days(2) + Span::minutes(n);
        let mut add = |kind: &str, name: &str, at: DateTime<Utc>| {
            let name_field = if kind == "track" { "event" } else { "name" };
            let mut message = json!({"type": kind, "userId": user, "timestamp": at.to_rfc3339(),
                "messageId": format!("{user}-{kind}-{name}"), "properties": {"plan": plan}});
            match kind {
                "identify" => message["traits"] = json!({"plan": plan}),
                "group" => {
                    message["groupId"] = json!(name);
                    message["traits"] = json!({"name": name, "plan": plan});
                }
                _ => message[name_field] = json!(name),
            }
            messages.push(message);
            sent.push(Sent { user: user.clone(), at });
        };
        // Users 1-3 are in one group, 4-6 in another.
        add("group", &format!("{run}-{}", if n <= 3 { "acme" } else { "initech" }), viewed - Span::seconds(3));
        add("identify", "", viewed - Span::seconds(2));
        add("page", "Pricing", viewed - Span::seconds(1));
        add("track", "Viewed Pricing", viewed);
        if n <= 4 {
            add("track", "Signed Up", now - Span::days(1) + Span::minutes(n));
        }
        if n <= 2 {
            add("track", "Bought", now - Span::hours(1) + Span::minutes(n));
        }
    }
    let http = reqwest::Client::new();
    post_batch(&http, &stack, messages.clone()).await;
    // Breakdowns by plan read its rollup (hours the job has not recounted yet, raw).
    let promote =
        format!("{}/v1/properties/properties.plan/promote?project={}", stack.address, stack.project_id().await);
    let promoted = http.post(promote).bearer_auth(&stack.admin_key).send().await.expect("promote");
    assert_eq!(promoted.status(), 201);
    let count =
        stack.wait_for_count("SELECT COUNT(*) FROM events", messages.len() as u64, Duration::from_secs(20)).await;
    assert_eq!(count, messages.len() as u64);
    // PostHog's company of the same key, u1 in it (as `$groups` would make it): another group,
    // which the dashboard's links tell apart from Segment's.
    let twin = |table: &str, columns: &str, values: &str| {
        format!(
            "INSERT INTO {table} ({columns}) SELECT {values} FROM group_profiles
             WHERE group_id = {} AND group_type = ''",
            quoted(&format!("{run}-acme"))
        )
    };
    let pool = mysql_async::Pool::new(stack.database_url.as_str());
    let mut conn = pool.get_conn().await.expect("connection");
    for sql in [
        twin(
            "group_profiles",
            "uid, project_id, group_id, group_type, traits, traits_at",
            "UNHEX(REPLACE(UUID(), '-', '')), project_id, group_id, 'company', '{\"seats\": 3}', traits_at",
        ),
        twin(
            "group_members",
            "project_id, group_id, group_type, member_id",
            &format!("project_id, group_id, 'company', {}", quoted(&format!("{run}-u1"))),
        ),
    ] {
        conn.query_drop(sql.as_str()).await.unwrap_or_else(|err| panic!("{sql}: {err}"));
    }
    drop(conn);
    pool.disconnect().await.ok();

    // The page and its files, under a policy that allows scripts and styles of this origin only.
    for (path, kind) in
        [("/", "text/html"), ("/dashboard/app.js", "text/javascript"), ("/dashboard/uPlot.min.css", "text/css")]
    {
        let response = http.get(format!("{}{path}", stack.address)).send().await.expect("request");
        assert_eq!(response.status(), 200, "{path}");
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        assert!(header("content-type").starts_with(kind), "{path}: {}", header("content-type"));
        assert_eq!(header("content-security-policy"), evtrack_api::DASHBOARD_CSP, "{path}");
    }
    let missing = http.get(format!("{}/dashboard/../Cargo.toml", stack.address)).send().await.expect("request");
    assert_eq!(missing.status(), 404, "only the app's own files");

    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&shots).expect("the screenshot directory");
    let shots = shots.to_str().expect("a UTF-8 path");
    let seen = run_browser_script("dashboard.mjs", &[&stack.address, &read_key, &stack.key, &run, shots]).await;

    let wrong = seen["wrong_key"].as_str().expect("a message for the wrong key");
    assert!(wrong.contains("not accepted"), "{wrong}");
    assert_eq!(seen["wrong_key_still_at_login"], true);
    assert_eq!(seen["key_in_session_storage"], "evtr_");
    assert_eq!(seen["trend"], json!([["Viewed Pricing", "6"]]));
    let canvas = &seen["trend_canvas"][0];
    assert!(canvas[0].as_u64() > Some(300) && canvas[1].as_u64() > Some(100), "the chart is drawn: {canvas}");
    assert!(seen["trend_legend"].to_string().contains("Viewed Pricing"), "{}", seen["trend_legend"]);
    let by_plan: BTreeSet<String> = seen["trend_by_plan"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|line| format!("{} = {}", line[0].as_str().unwrap_or(""), line[1].as_str().unwrap_or("")))
        .collect();
    let expected_by_plan = ["Viewed Pricing: free = 3", "Viewed Pricing: pro = 3"].map(String::from);
    assert_eq!(by_plan, BTreeSet::from(expected_by_plan));
    let source = seen["trend_by_plan_source"].as_str().unwrap_or_default();
    assert!(source.starts_with("From the rollups of properties.plan"), "{source}");
    let top: BTreeSet<(String, String, String)> = seen["top_events"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            (
                row[0].as_str().unwrap_or("").into(),
                row[1].as_str().unwrap_or("").into(),
                row[2].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    for (kind, name, events) in [
        ("track", "Viewed Pricing", "6"),
        ("page", "Pricing", "6"),
        ("identify", "(all)", "6"),
        ("track", "Signed Up", "4"),
        ("track", "Bought", "2"),
    ] {
        assert!(top.contains(&(kind.into(), name.into(), events.into())), "{kind} {name} {events} in {top:?}");
    }
    assert_eq!(seen["funnel"], json!([6, 4, 2]));

    let cohorts = seen["retention"].as_array().expect("cohorts");
    assert_eq!(cohorts.len(), 7, "a week of daily cohorts");
    let mut cohort_users = 0;
    for cohort in cohorts {
        let day = DateTime::parse_from_rfc3339(cohort["start"].as_str().expect("start")).expect("a time").date_naive();
        let returned: Vec<u64> = serde_json::from_value(cohort["returned"].clone()).expect("counts");
        assert_eq!(returned, retention_truth(&sent, day, returned.len()), "the cohort of {day}");
        cohort_users += returned[0];
    }
    assert_eq!(cohort_users, 6, "every user in one cohort");

    // u1's timeline, newest first: bought, signed up, viewed pricing, the page, identify, group.
    assert_eq!(seen["timeline"], json!(["Bought", "Signed Up", "Viewed Pricing", "Pricing", "", ""]));
    assert_eq!(seen["profile_shown"], true);
    // Its group, reached from its timeline, with its three members; the groups by id prefix.
    let (acme, initech) = (format!("{run}-acme"), format!("{run}-initech"));
    let company = format!("{acme} (company)");
    assert_eq!(seen["user_groups"], json!([acme, company]), "the first, Segment's, is followed");
    assert_eq!(seen["group_members"], json!([format!("{run}-u1"), format!("{run}-u2"), format!("{run}-u3")]));
    assert_eq!(seen["group_profile"]["traits"], json!({"name": acme, "plan": "free"}), "u3's call is the newest");
    assert_eq!(seen["group_list"], json!([acme, company, initech]));
    assert_eq!(seen["live_pings"], 5, "each event sent while the tail is open, once");
    assert_eq!(seen["live_ids_unique"], true);
    assert_eq!(
        stack.count(&format!("SELECT COUNT(*) FROM events WHERE user_id = {}", quoted(&format!("{run}-live")))).await,
        5
    );
    assert_eq!(seen["signed_out"], true);
    assert_eq!(seen["csp_violations"], json!([]), "the page keeps to its Content-Security-Policy");
    assert_eq!(seen["errors"], json!([]), "no script error");
    let expected_failures = seen["expected_failures"].to_string();
    assert!(expected_failures.contains("401"), "only the wrong key's 401: {expected_failures}");
    let (exit, _) = stack.interrupt();
    assert!(exit.success(), "{exit:?}");
}
