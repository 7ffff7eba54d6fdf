//! Funnels (`POST /v1/query/funnels`) and retention (`POST /v1/query/retention`): questions
//! about users' paths, answered by the rules of `evtrack::cohorts` from who did what when in
//! the range: from the journeys' rollup where the steps are plain names
//! (`Store::rolled_journeys`), else from the raw rows (`Store::journeys`). Capped like every
//! read: a question reading more than `Store::max_rows_read` rows, or running past the
//! statement cap, is a 422 (from the raw rows: saying how the rollups would answer).

use crate::extract::{Reading, Reply, body};
use crate::queries::{
    BreakdownInput, Interval, QUESTION_BUDGET, SeriesInput, SourceChoice, buckets, source_json, time_zone, to_utc, utc,
    within,
};
use crate::{Api, Failure};
use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use evtrack::cohorts::{self, FunnelCounts, Step};
use evtrack::event::EventType;
use evtrack::http::ListedRouter;
use evtrack::ids::ProjectId;
use evtrack::store::{BreakdownBy, Sample, Series, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;

pub const MAX_FUNNEL_STEPS: usize = 5;
pub const MAX_WINDOW_HOURS: i64 = 31 * 24;
pub const MAX_PERIODS: usize = 12;

pub fn routes() -> ListedRouter<Arc<Api>> {
    use http::Method;
    ListedRouter::default().on(Method::POST, "/v1/query/funnels", funnels).on(
        Method::POST,
        "/v1/query/retention",
        retention,
    )
}

/// Where a journey question's rows come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// `rollup_journey_hours`: every series names one type's event without filters, and no
    /// breakdown needs the events' properties.
    Rollup,
    /// The raw rows, whose users are hashed otherwise (`Store::journeys`); `rollable`: the
    /// rollups would have answered without `"source": "raw"`.
    Raw { rollable: bool },
}

impl Way {
    /// `with_any`: the rollups answer series of any event too (retention: `rolled_journeys`).
    fn of(series: &[Series], breakdown: Option<&BreakdownBy>, source: SourceChoice, with_any: bool) -> Self {
        let rollable =
            breakdown.is_none() && series.iter().all(|one| one.is_named_only() || (with_any && one.is_any()));
        if rollable && source == SourceChoice::Auto { Way::Rollup } else { Way::Raw { rollable } }
    }
}

/// The rows a sampled question reads from the rollups at most (about): enough users for
/// rates within about a percentage point, in well under a second.
const SAMPLED_ROWS: u64 = 250_000;

/// `read` of every user where the rollups' rows (`estimate` of them) fit in what a question
/// may hold; else of the largest sample of users that reads about `SAMPLED_ROWS`, and of an
/// eighth as many again while a read proves too big (rows or time). The raw rows are read
/// whole or not at all.
async fn sampled<T, Read: Future<Output = Result<T, Failure>>>(
    api: &Api,
    way: Way,
    estimate: impl Future<Output = Result<u64, StoreError>>,
    mut read: impl FnMut(Sample) -> Read,
) -> Result<(T, Sample), Failure> {
    if way != Way::Rollup {
        return Ok((read(Sample::ALL).await?, Sample::ALL));
    }
    let (estimate, cap) = (estimate.await?, api.store.max_rows_read() as u64);
    let mut sample = if estimate <= cap { Sample::ALL } else { Sample::to_fit(estimate, SAMPLED_ROWS.min(cap / 2)) };
    loop {
        match read(sample).await {
            Err(Failure::TooBig) if let Some(smaller) = sample.smaller() => sample = smaller,
            answered => return answered.map(|answer| (answer, sample)),
        }
    }
}

/// `source` saying that `sample` was read (nothing when it is every user).
fn say_sampled(source: &mut Value, sample: Sample) {
    if sample != Sample::ALL {
        source["sample"] = json!({"users": format!("1 in {}", sample.one_in()), "one_in": sample.one_in()});
    }
}

/// The rows of a journey question, read `way` (of the users `sample` takes, from the
/// rollups), with its `source`.
async fn journeys(
    api: &Api,
    project: ProjectId,
    series: &[Series],
    (from, to): (i64, i64),
    breakdown: Option<&BreakdownBy>,
    (way, sample): (Way, Sample),
) -> Result<(Vec<Step>, Value), Failure> {
    let Way::Raw { rollable } = way else {
        let (rows, counted) = api.store.rolled_journeys(project, series, (from, to), sample).await?;
        let mut source = source_json(&counted);
        source["rows"] = json!(rows.len());
        source["max_rows"] = json!(api.store.max_rows_read());
        say_sampled(&mut source, sample);
        return Ok((rows, source));
    };
    let read = api.store.journeys(project, series, from, to, breakdown).await;
    let rows = read
        .map_err(|err| Failure::from(err).advised_for_raw_rows(Some(if rollable { UNFORCED } else { NAMED_STEPS })))?;
    let source = json!({"kind": "raw", "rows": rows.len(), "max_rows": api.store.max_rows_read()});
    Ok((rows, source))
}

/// How to ask a journey question that is too big for the raw rows so that the rollups answer.
const NAMED_STEPS: &str = "funnels whose steps each name one event (not `any`), and retention on named events or any event, without `where` filters or a breakdown, are answered from the rollups (over many users, from a sample of them)";
pub(crate) const UNFORCED: &str = "without `\"source\": \"raw\"` the rollups answer it where they can";

fn describe(series: &Series) -> Value {
    json!({"type": series.kind.map_or("any", EventType::as_str), "event": series.name})
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FunnelInput {
    steps: Vec<SeriesInput>,
    #[serde(deserialize_with = "crate::extract::bounded_time")]
    from: DateTime<Utc>,
    #[serde(deserialize_with = "crate::extract::bounded_time")]
    to: DateTime<Utc>,
    /// How long after entering the funnel a user has to reach the last step.
    #[serde(default = "default_window_hours")]
    window_hours: i64,
    breakdown: Option<BreakdownInput>,
    #[serde(default)]
    source: SourceChoice,
}

fn default_window_hours() -> i64 {
    24 * 7
}

/// `POST /v1/query/funnels`: users entering with the first step in `[from, to)`, and how many
/// of them went on through each step in order within the window (which may run past `to`).
async fn funnels(State(api): State<Arc<Api>>, project: Reading, bytes: Bytes) -> Reply {
    let input: FunnelInput = body(&bytes)?;
    if !(2..=MAX_FUNNEL_STEPS).contains(&input.steps.len()) {
        return Err(Failure::Invalid(format!("steps holds 2 to {MAX_FUNNEL_STEPS} steps")));
    }
    if !(1..=MAX_WINDOW_HOURS).contains(&input.window_hours) {
        return Err(Failure::Invalid(format!("window_hours is 1 to {MAX_WINDOW_HOURS} (31 days)")));
    }
    if input.from >= input.to {
        return Err(Failure::Invalid("from is before to".into()));
    }
    let steps = input.steps.iter().map(SeriesInput::parse).collect::<Result<Vec<_>, _>>()?;
    let breakdown = input.breakdown.as_ref().map(BreakdownInput::parse).transpose()?;
    let window = Duration::hours(input.window_hours);
    let read_to = (input.to + window).min(Utc::now() + Duration::seconds(1)).max(input.to);
    let range = (input.from.timestamp(), ceil_seconds(read_to));
    let way = Way::of(&steps, breakdown.as_ref(), input.source, false);
    let estimate = api.store.journey_rows_estimate(project.0, &steps, range);
    let read = |sample| journeys(&api, project.0, &steps, range, breakdown.as_ref(), (way, sample));
    let ((rows, source), sample) = within(QUESTION_BUDGET, sampled(&api, way, estimate, read)).await?;
    let mut lines = cohorts::funnel(
        rows,
        steps.len(),
        input.from.timestamp_millis(),
        input.to.timestamp_millis(),
        window.num_milliseconds(),
    );
    // A sample's counts, scaled up to all users.
    lines.iter_mut().flat_map(|(_, counts)| counts.iter_mut()).for_each(|count| *count *= sample.one_in());
    let total = lines.iter().fold(vec![0u64; steps.len()], |sum, (_, counts)| added(sum, counts));
    let mut answer = json!({
        "steps": steps_json(&steps, &total),
        "from": input.from,
        "to": input.to,
        "window_hours": input.window_hours,
        "source": source,
    });
    if let Some(by) = &breakdown {
        answer["breakdown"] = breakdown_json(lines, by.top, &steps);
    }
    Ok(Json(answer).into_response())
}

/// `to` in whole seconds, rounded up (the rows are read by the second).
fn ceil_seconds(at: DateTime<Utc>) -> i64 {
    at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0)
}

/// Per-step counts added up.
fn added(mut sum: Vec<u64>, counts: &[u64]) -> Vec<u64> {
    sum.iter_mut().zip(counts).for_each(|(sum, count)| *sum += count);
    sum
}

/// `part` of `whole`; 0 of nobody.
fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

fn steps_json(steps: &[Series], counts: &[u64]) -> Value {
    let entered = counts.first().copied().unwrap_or(0);
    let lines: Vec<Value> = steps
        .iter()
        .zip(counts)
        .enumerate()
        .map(|(index, (step, &users))| {
            let previous = if index == 0 { users } else { counts[index - 1] };
            let mut line = describe(step);
            line["step"] = json!(index);
            line["users"] = json!(users);
            line["conversion"] = json!(rate(users, entered));
            line["from_previous"] = json!(rate(users, previous));
            line
        })
        .collect();
    json!(lines)
}

/// The top values by users entering, then `other` (the rest summed) and `missing`.
fn breakdown_json(lines: FunnelCounts, top: usize, steps: &[Series]) -> Value {
    let (mut values, missing): (Vec<_>, Vec<_>) = lines.into_iter().partition(|(value, _)| value.is_some());
    // `funnel` sorts by users entering, most first.
    let rest = values.split_off(top.min(values.len()));
    let mut answer: Vec<Value> = values
        .into_iter()
        .map(|(value, counts)| json!({"kind": "value", "value": value, "steps": steps_json(steps, &counts)}))
        .collect();
    for (kind, lines) in [("other", rest), ("missing", missing)] {
        if let Some(summed) = lines.into_iter().map(|(_, counts)| counts).reduce(|sum, counts| added(sum, &counts)) {
            answer.push(json!({"kind": kind, "steps": steps_json(steps, &summed)}));
        }
    }
    json!(answer)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionInput {
    /// The first period starts where this time's day (or week) starts in the time zone.
    #[serde(deserialize_with = "crate::extract::bounded_time")]
    from: DateTime<Utc>,
    #[serde(default = "default_retention_interval")]
    interval: Interval,
    #[serde(default = "default_periods")]
    periods: usize,
    #[serde(default = "utc")]
    timezone: String,
    /// What puts a user in a cohort (their first such event: `cohort_by`); any event when absent.
    cohort_event: Option<SeriesInput>,
    /// What counts as coming back; any event when absent.
    return_event: Option<SeriesInput>,
    #[serde(default)]
    cohort_by: CohortBy,
    #[serde(default)]
    source: SourceChoice,
}

/// Which cohort event places a user.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum CohortBy {
    /// Their first in the range: every user active in it has a cohort.
    #[default]
    FirstInRange,
    /// Their first ever: users who had one before the range are in no cohort (new users only).
    FirstEver,
}

fn default_retention_interval() -> Interval {
    Interval::Week
}

fn default_periods() -> usize {
    8
}

/// `POST /v1/query/retention`: cohorts of users by the period of their first cohort event in
/// the range (or ever: `cohort_by`), and how many of each came back (a return event) in each
/// later period.
async fn retention(State(api): State<Arc<Api>>, project: Reading, bytes: Bytes) -> Reply {
    let input: RetentionInput = body(&bytes)?;
    if !matches!(input.interval, Interval::Day | Interval::Week) {
        return Err(Failure::Invalid("interval is day or week".into()));
    }
    if !(1..=MAX_PERIODS).contains(&input.periods) {
        return Err(Failure::Invalid(format!("periods is 1 to {MAX_PERIODS}")));
    }
    let tz = time_zone(&input.timezone)?;
    let series = [
        input.cohort_event.as_ref().map_or_else(|| SeriesInput::any().parse(), SeriesInput::parse)?,
        input.return_event.as_ref().map_or_else(|| SeriesInput::any().parse(), SeriesInput::parse)?,
    ];
    // The periods: the one holding `from`, then as many as asked.
    let (first, _) = buckets(input.from, input.from + Duration::seconds(1), input.interval, tz)?;
    let length = if input.interval == Interval::Day { Duration::days(1) } else { Duration::weeks(1) };
    // The local midnight the first period starts at (to_utc moves it past a gap).
    let local_first = first[0].with_timezone(&tz).date_naive().and_time(chrono::NaiveTime::MIN);
    let mut starts = Vec::with_capacity(input.periods + 1);
    for index in 0..=input.periods as i32 {
        starts.push(to_utc(tz, local_first + length * index));
    }
    let end = starts.pop().unwrap_or(first[0]);
    let range = (starts[0].timestamp(), end.timestamp());
    let way = Way::of(&series, None, input.source, true);
    // Where "ever" starts, for new users only: who had a cohort event before the range joined
    // a cohort then.
    let history = match input.cohort_by {
        CohortBy::FirstEver => api.store.first_event_at(project.0).await?.filter(|first| *first < range.0),
        CohortBy::FirstInRange => None,
    };
    let estimate = async {
        let mut rows = api.store.journey_rows_estimate(project.0, &series, range).await?;
        if let Some(first) = history {
            rows += api.store.journey_rows_estimate(project.0, &series[..1], (first, range.0)).await?;
        }
        Ok(rows)
    };
    let read = |sample| retention_rows(&api, project.0, &series, (range, history), (way, sample));
    let ((rows, source), sample) = within(QUESTION_BUDGET, sampled(&api, way, estimate, read)).await?;
    let millis: Vec<i64> = starts.iter().map(DateTime::timestamp_millis).collect();
    let table = cohorts::retention(rows, &millis, end.timestamp_millis());
    // A sample's counts are scaled up to all users; its rates are the sample's.
    let scaled = |count: u64| count * sample.one_in();
    let cohorts: Vec<Value> = starts
        .iter()
        .zip(table)
        .map(|(start, cohort)| {
            let rates: Vec<f64> = cohort.returned.iter().map(|&back| rate(back, cohort.users)).collect();
            let returned: Vec<u64> = cohort.returned.iter().copied().map(scaled).collect();
            json!({"start": start.with_timezone(&tz).to_rfc3339(), "users": scaled(cohort.users), "returned": returned, "rates": rates})
        })
        .collect();
    Ok(Json(json!({
        "cohorts": cohorts,
        "interval": input.interval,
        "periods": input.periods,
        "timezone": input.timezone,
        "cohort_event": describe(&series[0]),
        "return_event": describe(&series[1]),
        "cohort_by": input.cohort_by,
        "to": end.with_timezone(&tz).to_rfc3339(),
        "source": source,
    }))
    .into_response())
}

/// Retention's rows over `range`, read `way` of the users `sample` takes; with `history` (where
/// "ever" starts, for new users only), without the users who had a cohort event before it.
async fn retention_rows(
    api: &Api,
    project: ProjectId,
    series: &[Series; 2],
    (range, history): ((i64, i64), Option<i64>),
    (way, sample): (Way, Sample),
) -> Result<(Vec<Step>, Value), Failure> {
    let (mut rows, mut source) = journeys(api, project, series, range, None, (way, sample)).await?;
    if let Some(first) = history {
        // Read the way the range was, so that users are hashed (and sampled) alike.
        let before_range = (first, range.0);
        let (before, mut before_source) =
            journeys(api, project, &series[..1], before_range, None, (way, sample)).await?;
        let seen: HashSet<u64> = before.iter().map(|step| step.user).collect();
        // Users the range would have put in a cohort: said in the answer.
        let left_out: HashSet<u64> = rows
            .iter()
            .filter(|step| step.matches & 1 != 0 && seen.contains(&step.user))
            .map(|step| step.user)
            .collect();
        rows.retain(|step| !seen.contains(&step.user));
        before_source["users_left_out"] = json!(left_out.len() as u64 * sample.one_in());
        source["before_range"] = before_source;
    }
    Ok((rows, source))
}
