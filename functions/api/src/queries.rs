//! The read side's aggregates: the catalog of event names (`GET /v1/event-names`) and trends
//! (`POST /v1/query/trends`). Plain counts come from the exact hourly rollups (dirty hours and
//! the current one from raw rows); property filters, breakdowns, unique users and time zones
//! whose buckets do not start on a UTC hour are answered from the raw rows. Every answer says
//! which (`source`).

use crate::extract::{Reading, Reply, body};
use crate::lists::{MAX_JSON_FILTERS, Params, parse_json_filter};
use crate::{Api, Failure};
use axum::Json;
use axum::extract::{RawQuery, State};
use axum::response::IntoResponse;
use bytes::Bytes;
use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use evtrack::event::EventType;
use evtrack::http::ListedRouter;
use evtrack::ids::as_compared;
use evtrack::sketch::{self, EXACT_HASHES_HELD, UserCount, UserSet, UserSets};
use evtrack::store::{
    BreakdownBy, CountSource, HourCount, JsonDocument, JsonFilter, JsonOp, Line, Measure, Promoted, Sample, Series,
    ValueCount, hour_of, hour_start,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;

/// Buckets one trend may have (two months of hours, five years of days).
pub const MAX_BUCKETS: usize = 2_000;
pub const MAX_SERIES: usize = 10;
pub const MAX_BREAKDOWN_VALUES: usize = 100;
/// How long one question may take in all (several statements of up to 5 s each): an answer
/// well within API Gateway's 30 s and the api function's 29 s, never a timeout.
pub const QUESTION_BUDGET: std::time::Duration = std::time::Duration::from_secs(20);

/// `work`, or `query_too_big` once it has taken `budget`.
pub(crate) async fn within<T>(
    budget: std::time::Duration,
    work: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::time::timeout(budget, work).await.unwrap_or(Err(Failure::TooBig))
}

pub fn routes() -> ListedRouter<Arc<Api>> {
    use http::Method;
    ListedRouter::default().on(Method::GET, "/v1/event-names", event_names).on(Method::POST, "/v1/query/trends", trends)
}

/// `read` added to the reads of one answer so far (`CountSource::merged`).
fn merge(reads: &mut Option<CountSource>, read: CountSource) {
    *reads = Some(match reads.take() {
        Some(earlier) => earlier.merged(read),
        None => read,
    });
}

pub(crate) fn source_json(source: &CountSource) -> Value {
    json!({"kind": "rollup", "rollup_hours": source.rollup_hours, "raw_hours": source.raw_hours,
           "watermark": source.watermark.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)})
}

/// `GET /v1/event-names?from&to`: every (type, name) with events in the range, with counts and
/// when last seen; the range in whole UTC hours (`from` rounded down, `to` up), 30 days by
/// default.
async fn event_names(State(api): State<Arc<Api>>, project: Reading, RawQuery(query): RawQuery) -> Reply {
    let project = project.0;
    let params = Params::parse(query.as_deref(), &["project", "from", "to"])?;
    let to = params.time("to")?.unwrap_or_else(Utc::now);
    let from = params.time("from")?.unwrap_or(to - Duration::days(30));
    if from >= to {
        return Err(Failure::Invalid("from is before to".into()));
    }
    if to - from > Duration::days(MAX_BUCKETS as i64) {
        return Err(Failure::Invalid(format!("at most {MAX_BUCKETS} days from from to to")));
    }
    let (from_hour, to_hour) = (hour_of(from), hour_of(to - Duration::milliseconds(1)) + 1);
    let mut catalog = Catalog::default();
    let source = api.store.hourly_counts(project, (from_hour, to_hour), &[], |count| catalog.add(count)).await?;
    let mut names = catalog.ranked();
    // The most frequent first; a write key sending made-up names cannot make the answer
    // larger than an API Gateway answer holds.
    let left_out = names.len().saturating_sub(MAX_CATALOG_NAMES);
    names.truncate(MAX_CATALOG_NAMES);
    let data: Vec<Value> = names
        .into_iter()
        .map(|CatalogName { kind, name, events, last_at, .. }| {
            json!({"type": kind, "name": if name.is_empty() { None } else { Some(name) }, "events": events, "last_seen": last_at})
        })
        .collect();
    Ok(Json(json!({
        "data": data,
        "names_left_out": left_out,
        "from": hour_start(from_hour),
        "to": hour_start(to_hour),
        "source": source_json(&source)
    }))
    .into_response())
}

/// The catalog's names as their counts are read: one per type and name as the database
/// compares names (without trailing spaces), spelled as in its earliest hour.
#[derive(Default)]
struct Catalog {
    names: Vec<CatalogName>,
    /// By type, then by name as compared: where it is in `names`.
    index: HashMap<EventType, HashMap<String, usize>>,
}

impl Catalog {
    fn add(&mut self, count: HourCount) {
        let by_name = self.index.entry(count.kind).or_default();
        match by_name.get(as_compared(&count.name)) {
            Some(&at) => {
                let entry = &mut self.names[at];
                entry.events += count.events;
                entry.last_at = entry.last_at.max(count.last_at);
                if count.hour < entry.first_hour {
                    (entry.first_hour, entry.name) = (count.hour, count.name);
                }
            }
            None => {
                by_name.insert(as_compared(&count.name).to_string(), self.names.len());
                let HourCount { hour, kind, name, events, last_at } = count;
                self.names.push(CatalogName { first_hour: hour, kind, name, events, last_at });
            }
        }
    }

    /// The most frequent first, then by type and name.
    fn ranked(mut self) -> Vec<CatalogName> {
        self.names.sort_by(|a, b| {
            b.events.cmp(&a.events).then_with(|| (a.kind.as_str(), &a.name).cmp(&(b.kind.as_str(), &b.name)))
        });
        self.names
    }
}

/// A name of the catalog as its counts are added up.
#[derive(Debug, PartialEq)]
struct CatalogName {
    /// The first hour it is seen in: the hour whose spelling it keeps.
    first_hour: u32,
    kind: EventType,
    name: String,
    events: u64,
    last_at: DateTime<Utc>,
}

/// Names the catalog answers at most (each up to about 1 KB of text).
const MAX_CATALOG_NAMES: usize = 2_000;

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Interval {
    Hour,
    #[default]
    Day,
    Week,
    Month,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Math {
    #[default]
    Total,
    UniqueUsers,
    /// Users active in the day, the 7 days or the 30 days (in the time zone) that end with
    /// each bucket.
    Dau,
    Wau,
    Mau,
}

impl Math {
    /// The days a user stays counted after an event, for dau, wau and mau.
    fn window_days(self) -> Option<i64> {
        match self {
            Math::Total | Math::UniqueUsers => None,
            Math::Dau => Some(1),
            Math::Wau => Some(7),
            Math::Mau => Some(30),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SourceChoice {
    /// The rollups where they can answer.
    #[default]
    Auto,
    /// The raw rows (slower; the same numbers).
    Raw,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SeriesInput {
    /// `any`: events of every type.
    #[serde(rename = "type", default = "track", deserialize_with = "type_or_any")]
    kind: Option<EventType>,
    /// The name (track's event, page's or screen's name); every event of the type when absent.
    event: Option<String>,
    #[serde(default, rename = "where")]
    filters: Vec<String>,
}

impl SeriesInput {
    /// Every event, of any type.
    pub(crate) fn any() -> Self {
        SeriesInput { kind: None, event: None, filters: Vec::new() }
    }

    pub(crate) fn parse(&self) -> Result<Series, Failure> {
        if self.event.as_deref().is_some_and(|name| name.is_empty() || name.chars().count() > 255) {
            return Err(Failure::Invalid("event has 1 to 255 characters".into()));
        }
        if self.filters.len() > MAX_JSON_FILTERS {
            return Err(Failure::Invalid(format!("at most {MAX_JSON_FILTERS} where filters a series")));
        }
        let filters = self
            .filters
            .iter()
            .map(|text| parse_json_filter(text, &JsonDocument::ALL))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Series { kind: self.kind, name: self.event.clone(), filters })
    }
}

impl BreakdownInput {
    /// The property alone (a promotion names one).
    pub(crate) fn of_property(property: &str) -> Self {
        Self { property: property.to_string(), limit: default_breakdown_values() }
    }

    pub(crate) fn parse(&self) -> Result<BreakdownBy, Failure> {
        if !(1..=MAX_BREAKDOWN_VALUES).contains(&self.limit) {
            return Err(Failure::Invalid(format!("breakdown.limit is 1 to {MAX_BREAKDOWN_VALUES}")));
        }
        let parsed = parse_json_filter(&format!("{}:is_set", self.property), &JsonDocument::ALL).map_err(|_| {
            Failure::Invalid("breakdown.property is <document>.<key>[.<key>…], e.g. properties.plan".into())
        })?;
        Ok(BreakdownBy { document: parsed.document, path: parsed.path, top: self.limit })
    }
}

fn track() -> Option<EventType> {
    Some(EventType::Track)
}

fn type_or_any<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<EventType>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text == "any" {
        return Ok(None);
    }
    EventType::ALL.into_iter().find(|kind| kind.as_str() == text).map(Some).ok_or_else(|| {
        serde::de::Error::custom(format!("type is any, track, identify, page, screen, group or alias; got {text:?}"))
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BreakdownInput {
    /// `properties.plan`, `context.os.name`, …
    property: String,
    #[serde(default = "default_breakdown_values")]
    limit: usize,
}

fn default_breakdown_values() -> usize {
    25
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrendsInput {
    series: Vec<SeriesInput>,
    #[serde(deserialize_with = "crate::extract::bounded_time")]
    from: DateTime<Utc>,
    #[serde(deserialize_with = "crate::extract::bounded_time")]
    to: DateTime<Utc>,
    #[serde(default)]
    interval: Interval,
    /// An IANA time zone: buckets start at its midnights (and weeks on Monday).
    #[serde(default = "utc")]
    timezone: String,
    #[serde(default)]
    math: Math,
    breakdown: Option<BreakdownInput>,
    #[serde(default)]
    source: SourceChoice,
}

pub(crate) fn utc() -> String {
    "UTC".into()
}

/// The starts of the buckets that cover `[from, to)` in `tz`, and the end of the last.
pub(crate) fn buckets(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    interval: Interval,
    tz: Tz,
) -> Result<(Vec<DateTime<Utc>>, DateTime<Utc>), Failure> {
    let local = from.with_timezone(&tz).naive_local();
    let floor = match interval {
        Interval::Hour => local.date().and_hms_opt(local.hour(), 0, 0),
        Interval::Day => local.date().and_hms_opt(0, 0, 0),
        Interval::Week => {
            (local.date() - Duration::days(i64::from(local.weekday().num_days_from_monday()))).and_hms_opt(0, 0, 0)
        }
        Interval::Month => local.date().with_day(1).and_then(|day| day.and_hms_opt(0, 0, 0)),
    }
    .ok_or_else(|| Failure::Invalid("from is out of range".into()))?;
    let next = |at: NaiveDateTime| -> Option<NaiveDateTime> {
        match interval {
            Interval::Hour => Some(at + Duration::hours(1)),
            Interval::Day => Some(at + Duration::days(1)),
            Interval::Week => Some(at + Duration::weeks(1)),
            Interval::Month => at.checked_add_months(chrono::Months::new(1)),
        }
    };
    let mut starts = Vec::new();
    let mut at = floor;
    loop {
        // An hour the clock goes back over comes twice: a bucket each time.
        let twice = match (interval, tz.from_local_datetime(&at)) {
            (Interval::Hour, LocalResult::Ambiguous(first, second)) => {
                Some([first.with_timezone(&Utc), second.with_timezone(&Utc)])
            }
            _ => None,
        };
        for start in twice.map_or_else(|| vec![to_utc(tz, at)], Vec::from) {
            if start >= to && starts.is_empty() {
                return Err(Failure::Invalid("from and to hold no bucket".into()));
            }
            if start >= to {
                return Ok((starts, start));
            }
            if starts.last().is_none_or(|last| *last < start) {
                starts.push(start);
            }
        }
        if starts.len() > MAX_BUCKETS {
            return Err(Failure::Invalid(format!("at most {MAX_BUCKETS} buckets; ask for a larger interval")));
        }
        at = next(at).ok_or_else(|| Failure::Invalid("to is out of range".into()))?;
    }
}

pub(crate) fn time_zone(name: &str) -> Result<Tz, Failure> {
    name.parse()
        .map_err(|_| Failure::Invalid(format!("timezone is an IANA time zone (Europe/Paris, UTC); got {name:?}")))
}

/// A local time in `tz` as UTC: the earlier of two (a clock going back), or, in a gap (a
/// clock going forward, by an hour, 15 minutes or a whole day), the moment the clock jumped:
/// the local time read with the offset in force before the gap.
pub(crate) fn to_utc(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local).earliest() {
        Some(at) => at.with_timezone(&Utc),
        None => {
            // A day and more before the gap: no zone changes its clock twice in 30 hours.
            let before = tz.offset_from_utc_datetime(&(local - Duration::hours(30))).fix();
            (local - Duration::seconds(i64::from(before.local_minus_utc()))).and_utc()
        }
    }
}

/// `POST /v1/query/trends`.
async fn trends(State(api): State<Arc<Api>>, project: Reading, bytes: Bytes) -> Reply {
    let project = project.0;
    let input: TrendsInput = body(&bytes)?;
    if input.series.is_empty() || input.series.len() > MAX_SERIES {
        return Err(Failure::Invalid(format!("series holds 1 to {MAX_SERIES} series")));
    }
    if input.from >= input.to {
        return Err(Failure::Invalid("from is before to".into()));
    }
    let tz = time_zone(&input.timezone)?;
    let series = input.series.iter().map(SeriesInput::parse).collect::<Result<Vec<_>, _>>()?;
    let breakdown = input.breakdown.as_ref().map(BreakdownInput::parse).transpose()?;
    let (starts, end) = buckets(input.from, input.to, input.interval, tz)?;
    let window_days = input.math.window_days();
    if window_days.is_some() && (input.interval == Interval::Hour || breakdown.is_some()) {
        return Err(Failure::Invalid(
            "dau, wau and mau count whole days: use interval day, week or month, without a breakdown".into(),
        ));
    }
    // dau, wau and mau read the days of each bucket's window: from the first one's start.
    let days = match window_days {
        Some(days) => {
            let first_end =
                starts.get(1).copied().unwrap_or(end).with_timezone(&tz).naive_local() - Duration::days(days);
            let days = buckets(to_utc(tz, first_end), end, Interval::Day, tz).map_err(|_| {
                Failure::Invalid(format!(
                    "dau, wau and mau read one set of users a day: at most {MAX_BUCKETS} days, window included"
                ))
            })?;
            Some(days)
        }
        None => None,
    };
    let on_hours =
        starts.iter().chain([&end]).chain(days.iter().flat_map(|(days, _)| days)).all(|at| at.timestamp() % 3_600 == 0);
    let filtered = series.iter().any(|s| !s.filters.is_empty());
    // The plain shapes the rollups answer, unless `"source": "raw"` asks otherwise.
    let totals_shape = on_hours && breakdown.is_none() && !filtered;
    // Users: series of every event of a type from the users' rollup (whole hours), series of
    // one named event from the journeys' rollup (any bucket edge).
    let users_shape = breakdown.is_none()
        && series.iter().all(|s| s.is_named_only() || (on_hours && s.filters.is_empty() && s.name.is_none()));
    let auto = input.source == SourceChoice::Auto && breakdown.is_none();
    let rollable = auto && totals_shape;
    let users_rollable = auto && users_shape;
    // Said with a 422 of a read of the raw rows.
    let advice = trend_advice(TrendAsked {
        forced_raw: input.source == SourceChoice::Raw,
        rollups_would_answer: if input.math == Math::Total { totals_shape } else { users_shape },
        total: input.math == Math::Total,
        breakdown: breakdown.is_some(),
        filtered,
        on_hours,
    });

    // Totals broken down by a promoted property read its rollup.
    let promoted = match &breakdown {
        Some(by)
            if on_hours
                && input.source == SourceChoice::Auto
                && input.math == Math::Total
                && series.iter().all(|s| s.filters.is_empty()) =>
        {
            api.store.promoted_properties(project).await?.into_iter().find(|p| p.is(by.document, &by.path))
        }
        _ => None,
    };

    // Totals of series filtered on a promoted property read its rollup, where it can tell.
    let filtered_by: Vec<Option<Promoted>> = if on_hours && auto && input.math == Math::Total && !rollable {
        let promoted = api.store.promoted_properties(project).await?;
        series.iter().map(|s| rollup_filter(s, &promoted).cloned()).collect()
    } else {
        Vec::new()
    };
    let filtered_rollable = !filtered_by.is_empty()
        && series.iter().zip(&filtered_by).all(|(s, property)| s.filters.is_empty() || property.is_some());

    let question = Question { project, series: &series, starts: &starts, end, math: input.math };
    let answer = async {
        if let (Some(by), Some(property)) = (&breakdown, &promoted) {
            rollup_breakdown(&api, &question, by.top, property).await
        } else if input.math == Math::Total && (rollable || filtered_rollable) {
            match rollup_totals(&api, &question, &filtered_by).await {
                // A promoted property with many values an hour can hold more rows than the
                // raw rows' count reads.
                Err(Failure::TooBig) if filtered_rollable => raw_counts(&api, &question, None).await,
                answered => answered,
            }
        } else if input.math != Math::Total && (users_rollable || window_days.is_some()) {
            let days = days.map(|(starts, end)| (starts, end, window_days.unwrap_or(1) as usize));
            match user_counts(&api, &question, users_rollable, days.clone()).await {
                // A named event's journeys are a row per event; the raw rows' sets are read
                // per user and bucket.
                Err(Failure::TooBig) if users_rollable => user_counts(&api, &question, false, days).await,
                Err(failure) if !users_rollable => Err(failure.advised_for_raw_rows(advice)),
                answered => answered,
            }
        } else {
            raw_counts(&api, &question, breakdown.as_ref()).await.map_err(|err| err.advised_for_raw_rows(advice))
        }
    };
    let (lines, mut source, estimated) = within(QUESTION_BUDGET, answer).await?;
    if estimated {
        source["sketch"] = json!({
            "kind": "hyperloglog",
            "registers": sketch::REGISTERS,
            "relative_standard_error": sketch::RELATIVE_STANDARD_ERROR,
            "note": "hours with more than 512 users are kept as sketches: lines marked exact: false are estimates"
        });
    }
    let buckets: Vec<String> = starts.iter().map(|at| at.with_timezone(&tz).to_rfc3339()).collect();
    Ok(Json(json!({
        "buckets": buckets,
        "from": starts[0].with_timezone(&tz).to_rfc3339(),
        "to": end.with_timezone(&tz).to_rfc3339(),
        "interval": input.interval,
        "timezone": input.timezone,
        "math": input.math,
        "series": lines,
        "source": source,
    }))
    .into_response())
}

/// How a trend was asked, for the advice of a `422` from the raw rows (`trend_advice`).
struct TrendAsked {
    /// With `"source": "raw"`.
    forced_raw: bool,
    /// Whether the rollups would answer its shape without `"source": "raw"`.
    rollups_would_answer: bool,
    /// Math `total` (else users).
    total: bool,
    breakdown: bool,
    filtered: bool,
    /// Whether every bucket starts on a whole hour.
    on_hours: bool,
}

/// How to ask a trend that is too big for the raw rows so that the rollups answer, where
/// there is a way.
fn trend_advice(asked: TrendAsked) -> Option<&'static str> {
    let TrendAsked { forced_raw, rollups_would_answer, total, breakdown, filtered, on_hours } = asked;
    if forced_raw && rollups_would_answer {
        Some(crate::cohorts::UNFORCED)
    } else if !on_hours && (total || !(breakdown || filtered)) {
        // Totals of every kind, and users of series of a type, need whole hours.
        Some(
            "buckets that start on whole hours (a time zone a whole number of hours from UTC) are answered from the rollups",
        )
    } else if total && breakdown && !filtered {
        Some(
            "totals broken down by a promoted property (POST /v1/properties/{property}/promote, with an admin key), without filters, are answered from the rollups",
        )
    } else if total && filtered && !breakdown {
        Some(
            "totals whose series have at most one `eq` or `neq` filter, on a promoted property (POST /v1/properties/{property}/promote, with an admin key), are answered from the rollups",
        )
    } else {
        None
    }
}

/// What every way of answering a trend needs.
struct Question<'a> {
    project: evtrack::ids::ProjectId,
    series: &'a [Series],
    /// The buckets' starts, and the end of the last.
    starts: &'a [DateTime<Utc>],
    end: DateTime<Utc>,
    math: Math,
}

/// A trend's lines, its `source`, and whether a line is an estimate.
type Answered = (Vec<Value>, Value, bool);

/// Totals from the hourly rollups (dirty hours and the current one from the raw rows); a
/// series filtered on a promoted property (`filtered_by`, by series) from that property's.
async fn rollup_totals(
    api: &Api,
    question: &Question<'_>,
    filtered_by: &[Option<Promoted>],
) -> Result<Answered, Failure> {
    let Question { project, series, starts, end, math } = *question;
    let (from_hour, to_hour) = (hour_of(starts[0]), hour_of(end));
    let property_of = |index: usize| filtered_by.get(index).and_then(Option::as_ref);
    let selection = |property: Option<&Promoted>| -> Vec<(Option<EventType>, Option<String>)> {
        let chosen = series.iter().enumerate().filter(|(index, _)| property_of(*index) == property);
        chosen.map(|(_, s)| (s.kind, s.name.clone())).collect()
    };
    let mut values = vec![vec![0u64; starts.len()]; series.len()];
    // One read for the plain series and one per property, each its own snapshot: the answer
    // reports the most raw hours.
    let mut read: Option<CountSource> = None;
    let mut note = |source: CountSource| merge(&mut read, source);
    let plain = selection(None);
    if !plain.is_empty() {
        let add = |count: HourCount| {
            let bucket = bucket_of(starts, hour_start(count.hour));
            for (index, one) in series.iter().enumerate().filter(|(index, _)| property_of(*index).is_none()) {
                if one.counts_name(count.kind, &count.name) {
                    values[index][bucket] += count.events;
                }
            }
        };
        note(api.store.hourly_counts(project, (from_hour, to_hour), &plain, add).await?);
    }
    let mut properties: Vec<&Promoted> = filtered_by.iter().flatten().collect();
    properties.sort_by_key(|property| property.id);
    properties.dedup_by_key(|property| property.id);
    for property in &properties {
        let add = |count: ValueCount| {
            let bucket = bucket_of(starts, hour_start(count.hour));
            for (index, one) in series.iter().enumerate().filter(|(index, _)| property_of(*index) == Some(*property)) {
                if one.counts_name(count.kind, &count.name) && passes(&one.filters[0], count.value.as_deref()) {
                    values[index][bucket] += count.events;
                }
            }
        };
        let hours = (from_hour, to_hour);
        note(api.store.hourly_values(project, hours, &selection(Some(property)), property, add).await?);
    }
    let lines =
        series.iter().zip(values).enumerate().map(|(index, (one, values))| line_json(index, one, None, values, math));
    let mut source = read.as_ref().map(source_json).unwrap_or_else(|| json!({"kind": "raw"}));
    if !properties.is_empty() {
        source["properties"] = json!(properties.iter().map(|property| &property.property).collect::<Vec<_>>());
    }
    Ok((lines.collect(), source, false))
}

/// The promoted property whose rollup answers a series' one `where` filter exactly: `eq` or
/// `neq` with a value that is not a number. (A number also equals its other spellings, `5.0`
/// for `5`, and the rollup keeps a value's text, not whether it was a number.)
fn rollup_filter<'a>(series: &Series, promoted: &'a [Promoted]) -> Option<&'a Promoted> {
    let [filter] = series.filters.as_slice() else { return None };
    let (_, value) = text_comparison(filter)?;
    if value.parse::<f64>().is_ok_and(f64::is_finite) {
        return None;
    }
    promoted.iter().find(|property| property.is(filter.document, &filter.path))
}

/// An `eq` (true) or `neq` (false) filter's value.
fn text_comparison(filter: &JsonFilter) -> Option<(bool, &str)> {
    match &filter.op {
        JsonOp::Eq(value) => Some((true, value)),
        JsonOp::Neq(value) => Some((false, value)),
        _ => None,
    }
}

/// Whether events whose value of the filter's property is `value` (its text; `None`: missing)
/// pass a filter `rollup_filter` allows, as the raw rows' SQL decides: the text compared under
/// utf8mb4_bin, whose PAD SPACE ignores trailing spaces.
fn passes(filter: &JsonFilter, value: Option<&str>) -> bool {
    let Some((equal, wanted)) = text_comparison(filter) else { return false };
    let same = value.is_some_and(|value| value.trim_end_matches(' ') == wanted.trim_end_matches(' '));
    same == equal
}

/// Totals broken down by a promoted property, from its rollup (dirty hours and the current one
/// from the raw rows): the lines `raw_counts` gives, top values ranked as it ranks them (by
/// events in the range, then by value).
async fn rollup_breakdown(
    api: &Api,
    question: &Question<'_>,
    top: usize,
    property: &Promoted,
) -> Result<Answered, Failure> {
    let Question { project, series, starts, end, math } = *question;
    let selection: Vec<(Option<EventType>, Option<String>)> = series.iter().map(|s| (s.kind, s.name.clone())).collect();
    let mut cells = ValueCells::default();
    let add = |count: ValueCount| {
        let bucket = bucket_of(starts, hour_start(count.hour));
        cells.add(count, bucket);
    };
    let source =
        api.store.hourly_values(project, (hour_of(starts[0]), hour_of(end)), &selection, property, add).await?;
    let mut lines = Vec::new();
    for (index, one) in series.iter().enumerate() {
        let by_line = cells.lines(one, top, starts.len());
        lines.extend(by_line.into_iter().map(|(line, values)| line_json(index, one, Some(line), values, math)));
    }
    let mut source = source_json(&source);
    source["property"] = json!(property.property);
    Ok((lines, source, false))
}

/// A promoted property's counts as they are read, compactly: an id-like property has a
/// rollup row per event, each held here in 24 bytes with its text once (as a `ValueCount`
/// with its strings, about 130).
#[derive(Default)]
struct ValueCells {
    /// The (type, name) pairs seen, by index.
    pairs: Vec<(EventType, String)>,
    pair_of: HashMap<(EventType, String), u32>,
    /// The values seen, as the PAD SPACE collation groups them (without trailing spaces).
    values: Texts,
    cells: Vec<Cell>,
}

/// The events of one rollup row: its (type, name) pair, value and bucket.
struct Cell {
    pair: u32,
    /// `MISSING`: events without the property.
    value: u32,
    bucket: u32,
    events: u64,
}

const MISSING: u32 = u32::MAX;

impl ValueCells {
    fn add(&mut self, count: ValueCount, bucket: usize) {
        let pairs = self.pairs.len() as u32;
        let pair = *self.pair_of.entry((count.kind, count.name)).or_insert_with_key(|(kind, name)| {
            self.pairs.push((*kind, name.clone()));
            pairs
        });
        let value = count.value.map_or(MISSING, |value| self.values.index_of(as_compared(&value)));
        self.cells.push(Cell { pair, value, bucket: bucket as u32, events: count.events });
    }

    /// `one`'s lines over `buckets` buckets: its `top` values (by events, then by value),
    /// the rest, and the events without the property; ranked as `raw_counts` ranks them.
    fn lines(&self, one: &Series, top: usize, buckets: usize) -> BTreeMap<Line, Vec<u64>> {
        let of_series: Vec<bool> = self.pairs.iter().map(|(kind, name)| one.counts_name(*kind, name)).collect();
        let counts = || self.cells.iter().filter(|cell| of_series[cell.pair as usize]);
        // Every count is at least 1: a value at 0 has no events in this series.
        let mut totals = vec![0u64; self.values.len()];
        for cell in counts().filter(|cell| cell.value != MISSING) {
            totals[cell.value as usize] += cell.events;
        }
        let text = |value: u32| self.values.get(value);
        // The `top` best (most events, then the least text), kept as they are found: the
        // worst of them first out.
        let mut best: BinaryHeap<Reverse<(u64, Reverse<&str>, u32)>> = BinaryHeap::new();
        for (value, &total) in totals.iter().enumerate().filter(|(_, total)| **total > 0) {
            best.push(Reverse((total, Reverse(text(value as u32)), value as u32)));
            if best.len() > top {
                best.pop();
            }
        }
        let top: BTreeSet<u32> = best.into_iter().map(|Reverse((_, _, value))| value).collect();
        let mut by_line: BTreeMap<Line, Vec<u64>> = BTreeMap::new();
        for cell in counts() {
            let line = match cell.value {
                MISSING => Line::Missing,
                value if top.contains(&value) => Line::Value(text(value).to_string()),
                _ => Line::Other,
            };
            by_line.entry(line).or_insert_with(|| vec![0; buckets])[cell.bucket as usize] += cell.events;
        }
        by_line
    }
}

/// Texts by index, each kept once in one string: a value takes its bytes and about 13 more
/// (a `String` in a map, about 70 more).
#[derive(Default)]
struct Texts {
    all: String,
    /// Where each text ends in `all`.
    ends: Vec<usize>,
    index: hashbrown::HashTable<u32>,
    hasher: std::hash::RandomState,
}

impl Texts {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, index: u32) -> &str {
        text_at(&self.all, &self.ends, index)
    }

    /// The index of `text`, added if it is new.
    fn index_of(&mut self, text: &str) -> u32 {
        use std::hash::BuildHasher;
        let Self { all, ends, index, hasher } = self;
        let eq = |&at: &u32| text_at(all, ends, at) == text;
        let rehash = |&at: &u32| hasher.hash_one(text_at(all, ends, at));
        match index.entry(hasher.hash_one(text), eq, rehash) {
            hashbrown::hash_table::Entry::Occupied(found) => *found.get(),
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                let at = ends.len() as u32;
                vacant.insert(at);
                all.push_str(text);
                ends.push(all.len());
                at
            }
        }
    }
}

fn text_at<'a>(all: &'a str, ends: &[usize], index: u32) -> &'a str {
    let index = index as usize;
    let start = index.checked_sub(1).map_or(0, |before| ends[before]);
    &all[start..ends[index]]
}

/// Users per bucket, or per window of `days` (their starts, end and the window's length):
/// sets from the rollups (`rollable`: the journeys' for a named event, else the users') or
/// the raw rows.
async fn user_counts(
    api: &Api,
    question: &Question<'_>,
    rollable: bool,
    days: Option<(Vec<DateTime<Utc>>, DateTime<Utc>, usize)>,
) -> Result<Answered, Failure> {
    let Question { project, series, starts, end, math } = *question;
    let (set_starts, set_end) = match &days {
        Some((days, days_end, _)) => (days.as_slice(), *days_end),
        None => (starts, end),
    };
    let mut source: Option<CountSource> = None;
    let (mut lines, mut estimated) = (Vec::new(), false);
    for (index, one) in series.iter().enumerate() {
        let sets = if rollable && one.is_named_only() {
            // Each (user, millisecond) of the event once: the users' hashes, exact.
            let range = (set_starts[0].timestamp(), set_end.timestamp());
            let (steps, read) =
                api.store.rolled_journeys(project, std::slice::from_ref(one), range, Sample::ALL).await?;
            merge(&mut source, read);
            let mut sets = UserSets::new(set_starts.len(), EXACT_HASHES_HELD);
            for step in &steps {
                let at = DateTime::from_timestamp_millis(step.at).unwrap_or_default();
                sets.insert(bucket_of(set_starts, at), step.user);
            }
            sets.into_sets()
        } else if rollable {
            let mut sets = UserSets::new(set_starts.len(), EXACT_HASHES_HELD);
            let hours = (hour_of(set_starts[0]), hour_of(set_end));
            let bucket_of_hour = |hour| bucket_of(set_starts, hour_start(hour));
            let read = api.store.hourly_users(project, hours, one.kind, &mut sets, bucket_of_hour).await?;
            // Each series reads its own snapshot: the answer reports the most raw hours.
            merge(&mut source, read);
            sets.into_sets()
        } else {
            let seconds: Vec<i64> = set_starts.iter().map(DateTime::timestamp).collect();
            api.store.raw_users(project, one, &seconds, set_end.timestamp()).await?
        };
        let counts: Vec<UserCount> = match &days {
            None => sets.iter().map(UserSet::count).collect(),
            Some((_, _, window)) => windows(starts, end, set_starts, &sets, *window),
        };
        estimated |= counts.iter().any(|count| !count.exact);
        let mut line = line_json(index, one, None, counts.iter().map(|count| count.users).collect(), math);
        line["exact"] = json!(counts.iter().all(|count| count.exact));
        lines.push(line);
    }
    let source = source.as_ref().map(source_json).unwrap_or_else(|| json!({"kind": "raw"}));
    Ok((lines, source, estimated))
}

/// Events or users per bucket from the raw rows, broken down by `breakdown`.
async fn raw_counts(api: &Api, question: &Question<'_>, breakdown: Option<&BreakdownBy>) -> Result<Answered, Failure> {
    let Question { project, series, starts, end, math } = *question;
    let measure = if math == Math::UniqueUsers { Measure::Users } else { Measure::Events };
    let seconds: Vec<i64> = starts.iter().map(DateTime::timestamp).collect();
    let mut lines = Vec::new();
    for (index, one) in series.iter().enumerate() {
        let counted = api.store.raw_trend(project, one, measure, &seconds, end.timestamp(), breakdown).await?;
        if counted.is_empty() && breakdown.is_none() {
            lines.push(line_json(index, one, None, vec![0; starts.len()], math));
        }
        for (line, values) in counted {
            lines.push(line_json(index, one, line, values, math));
        }
    }
    Ok((lines, json!({"kind": "raw"}), false))
}

/// The bucket (of those starting at `starts`) that `at` falls in.
fn bucket_of(starts: &[DateTime<Utc>], at: DateTime<Utc>) -> usize {
    starts.partition_point(|start| *start <= at).saturating_sub(1)
}

/// For each bucket, the users of the `window` days (`day_sets`, starting at `day_starts`)
/// that end where the bucket ends. By index, not by clock: a day that starts at 01:00 (a
/// clock change at midnight) is still one day.
fn windows(
    starts: &[DateTime<Utc>],
    end: DateTime<Utc>,
    day_starts: &[DateTime<Utc>],
    day_sets: &[UserSet],
    window: usize,
) -> Vec<UserCount> {
    let ranges = starts.iter().skip(1).chain([&end]).map(|bucket_end| {
        let last = day_starts.partition_point(|day| day < bucket_end);
        last.saturating_sub(window)..last
    });
    if day_sets.iter().all(|set| matches!(set, UserSet::Exact(_))) {
        return sliding_exact(ranges, day_sets);
    }
    ranges
        .map(|range| {
            let mut union = UserSet::default();
            day_sets[range].iter().for_each(|set| union.merge(set));
            union.count()
        })
        .collect()
}

/// `windows` over exact sets: each day's users added once as the window reaches it and taken
/// away as it leaves (a union per bucket would hash every user `window` times).
fn sliding_exact(ranges: impl Iterator<Item = std::ops::Range<usize>>, day_sets: &[UserSet]) -> Vec<UserCount> {
    let mut in_window: std::collections::HashMap<u64, u32> = std::collections::HashMap::new();
    // `in_window` holds the users of the days `low..high`.
    let (mut low, mut high) = (0, 0);
    let mut counts = Vec::new();
    for range in ranges {
        for set in &day_sets[low..range.start.min(high)] {
            let UserSet::Exact(users) = set else { continue };
            for user in users {
                if let Some(days) = in_window.get_mut(user) {
                    *days -= 1;
                    if *days == 0 {
                        in_window.remove(user);
                    }
                }
            }
        }
        low = range.start;
        high = high.max(low);
        for set in &day_sets[high..range.end.max(high)] {
            let UserSet::Exact(users) = set else { continue };
            users.iter().for_each(|user| *in_window.entry(*user).or_default() += 1);
        }
        high = high.max(range.end);
        counts.push(UserCount { users: in_window.len() as u64, exact: true });
    }
    counts
}

fn line_json(index: usize, series: &Series, line: Option<Line>, values: Vec<u64>, math: Math) -> Value {
    let total: u64 = values.iter().sum();
    let kind = series.kind.map_or("any", EventType::as_str);
    let mut answer = json!({"series": index, "type": kind, "event": series.name, "values": values});
    if math == Math::Total {
        answer["total"] = json!(total);
    } else {
        // Counts from the raw rows are exact; sets from the rollups may be estimates.
        answer["exact"] = json!(true);
    }
    match line {
        None => {}
        Some(Line::Value(value)) => answer["breakdown"] = json!({"kind": "value", "value": value}),
        Some(Line::Missing) => answer["breakdown"] = json!({"kind": "missing"}),
        Some(Line::Other) => answer["breakdown"] = json!({"kind": "other"}),
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use evtrack::store::same_text;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).expect("time").with_timezone(&Utc)
    }

    #[test]
    fn the_catalog_in_any_order_of_its_rows_answers_as_the_sorted_rows_did() {
        // An hour has one spelling of a name (the database groups names without trailing
        // spaces); spellings differ between hours.
        let spellings = ["Signed Up", "Signed Up ", "Signed Up  ", "Bought", "Bought "];
        let mut seed = 7u64;
        let mut next = |below: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % below
        };
        let mut counts = Vec::new();
        for hour in 0..60u32 {
            for kind in [EventType::Track, EventType::Page] {
                for stem in [0, 3] {
                    let spelling = spellings[stem + next(if stem == 0 { 3 } else { 2 }) as usize];
                    let last_at = hour_start(hour) + Duration::seconds(next(3_600) as i64);
                    let events = 1 + next(5);
                    counts.push(HourCount { hour, kind, name: spelling.to_string(), events, last_at });
                }
            }
        }
        // The old way: sorted by hour, type and name, the first spelling kept.
        let mut sorted = counts.clone();
        sorted.sort_by(|a, b| (a.hour, a.kind.as_str(), &a.name).cmp(&(b.hour, b.kind.as_str(), &b.name)));
        let mut expected = Catalog::default();
        sorted.into_iter().for_each(|count| expected.add(count));
        let expected = expected.ranked();
        assert_eq!(expected.len(), 4);
        for _ in 0..20 {
            for at in (1..counts.len()).rev() {
                counts.swap(at, next(at as u64 + 1) as usize);
            }
            let mut catalog = Catalog::default();
            counts.iter().cloned().for_each(|count| catalog.add(count));
            assert_eq!(catalog.ranked(), expected);
        }
    }

    /// A breakdown's lines as they were computed from every count held (before `ValueCells`).
    fn lines_as_before(
        counts: &[(ValueCount, usize)],
        one: &Series,
        top: usize,
        buckets: usize,
    ) -> BTreeMap<Line, Vec<u64>> {
        let counts: Vec<&(ValueCount, usize)> = counts
            .iter()
            .filter(|(c, _)| {
                one.kind.is_none_or(|kind| kind == c.kind)
                    && one.name.as_ref().is_none_or(|name| same_text(name, &c.name))
            })
            .collect();
        let key = |value: &str| value.trim_end_matches(' ').to_string();
        let mut totals: BTreeMap<String, u64> = BTreeMap::new();
        for (count, _) in &counts {
            if let Some(value) = &count.value {
                *totals.entry(key(value)).or_default() += count.events;
            }
        }
        let mut ranked: Vec<(String, u64)> = totals.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let top: BTreeSet<String> = ranked.into_iter().take(top).map(|(value, _)| value).collect();
        let mut by_line: BTreeMap<Line, Vec<u64>> = BTreeMap::new();
        for (count, bucket) in &counts {
            let line = match &count.value {
                None => Line::Missing,
                Some(value) if top.contains(&key(value)) => Line::Value(key(value)),
                Some(_) => Line::Other,
            };
            by_line.entry(line).or_insert_with(|| vec![0; buckets])[*bucket] += count.events;
        }
        by_line
    }

    #[test]
    fn a_breakdown_from_cells_in_any_order_has_the_lines_it_had_from_every_count_held() {
        let names = ["Buy", "Buy ", "Sell"];
        let values = [Some("a"), Some("a "), Some("b"), Some("c"), Some("c  "), None, Some("d"), Some("e")];
        let mut seed = 11u64;
        let mut next = |below: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % below
        };
        let buckets = 6;
        let mut counts: Vec<(ValueCount, usize)> = (0..400)
            .map(|_| {
                let count = ValueCount {
                    hour: next(100) as u32,
                    kind: [EventType::Track, EventType::Page][next(2) as usize],
                    name: names[next(3) as usize].to_string(),
                    value: values[next(values.len() as u64) as usize].map(str::to_string),
                    // Small counts: many values tie.
                    events: 1 + next(3),
                };
                (count, next(buckets as u64) as usize)
            })
            .collect();
        let series = |kind: Option<EventType>, name: Option<&str>| Series {
            kind,
            name: name.map(str::to_string),
            filters: Vec::new(),
        };
        let all_series = [
            series(None, None),
            series(Some(EventType::Track), None),
            series(Some(EventType::Track), Some("Buy")),
            series(Some(EventType::Page), Some("Buy  ")),
            series(Some(EventType::Page), Some("Sell")),
            series(Some(EventType::Screen), None),
        ];
        for round in 0..10 {
            for at in (1..counts.len()).rev() {
                counts.swap(at, next(at as u64 + 1) as usize);
            }
            let mut cells = ValueCells::default();
            counts.iter().for_each(|(count, bucket)| cells.add(count.clone(), *bucket));
            for one in &all_series {
                for top in [0, 1, 2, 3, 10] {
                    let expected = lines_as_before(&counts, one, top, buckets);
                    assert_eq!(cells.lines(one, top, buckets), expected, "round {round}, {one:?}, top {top}");
                }
            }
        }
    }

    #[test]
    fn texts_are_kept_once_each_by_the_index_they_were_first_given() {
        let mut texts = Texts::default();
        let words: Vec<String> = (0..10_000).map(|n| format!("value-{}", n % 2_500)).collect();
        let indexes: Vec<u32> = words.iter().map(|word| texts.index_of(word)).collect();
        assert_eq!(texts.len(), 2_500);
        assert_eq!(&indexes[..3], &[0, 1, 2]);
        for (word, index) in words.iter().zip(&indexes) {
            assert_eq!(texts.get(*index), word);
            assert_eq!(*index as usize, words.iter().position(|first| first == word).expect("seen"));
        }
        assert_eq!(texts.index_of(""), 2_500, "the empty text is a text too");
        assert_eq!(texts.get(2_500), "");
        assert_eq!(texts.get(2_499), "value-2499");
    }

    #[test]
    fn a_trend_too_big_for_the_raw_rows_is_told_the_way_the_rollups_answer_it() {
        let asked = |forced_raw, rollups_would_answer, total, breakdown, filtered, on_hours| {
            let asked = TrendAsked { forced_raw, rollups_would_answer, total, breakdown, filtered, on_hours };
            trend_advice(asked).unwrap_or("none")
        };
        // Forced to the raw rows: leave out `source` where the rollups would answer, else as asked.
        assert!(asked(true, true, true, false, false, true).contains("source"));
        assert_eq!(asked(true, false, false, false, true, true), "none");
        assert!(asked(true, false, true, true, false, true).contains("broken down by a promoted property"));
        assert!(asked(false, false, true, true, false, true).contains("broken down by a promoted property"));
        assert!(asked(false, false, true, false, true, true).contains("filter, on a promoted property"));
        // Off whole hours, totals of every kind need them first; so do users of a type.
        assert!(asked(false, false, true, true, false, false).contains("whole hours"));
        assert!(asked(false, false, false, false, false, false).contains("whole hours"));
        // Users of a filtered series, or broken down: no rollup holds them.
        assert_eq!(asked(false, false, false, false, true, true), "none");
        assert_eq!(asked(false, false, false, true, false, false), "none");
    }

    #[test]
    fn days_start_at_the_zones_midnight_across_a_clock_change() {
        let tz: Tz = "Europe/Paris".parse().expect("zone");
        let (starts, end) =
            buckets(at("2026-10-24T12:00:00Z"), at("2026-10-26T23:00:00Z"), Interval::Day, tz).expect("buckets");
        let local: Vec<String> = starts.iter().map(|s| s.with_timezone(&tz).to_rfc3339()).collect();
        assert_eq!(local, ["2026-10-24T00:00:00+02:00", "2026-10-25T00:00:00+02:00", "2026-10-26T00:00:00+01:00"]);
        assert_eq!(end.with_timezone(&tz).to_rfc3339(), "2026-10-27T00:00:00+01:00");
        // The day the clocks go back has 25 hours.
        assert_eq!((starts[2] - starts[1]).num_hours(), 25);
    }

    #[test]
    fn the_hour_the_clocks_go_back_over_is_two_buckets() {
        let tz: Tz = "Europe/Paris".parse().expect("zone");
        let (starts, end) =
            buckets(at("2026-10-24T22:00:00Z"), at("2026-10-25T23:00:00Z"), Interval::Hour, tz).expect("hours");
        assert_eq!(starts.len(), 25, "a day of 25 hours");
        assert!(starts.windows(2).all(|pair| (pair[1] - pair[0]).num_hours() == 1));
        let local: Vec<String> = starts[2..4].iter().map(|s| s.with_timezone(&tz).to_rfc3339()).collect();
        assert_eq!(local, ["2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00"]);
        assert_eq!(end, at("2026-10-25T23:00:00Z"));
    }

    #[test]
    fn a_day_that_starts_in_a_gap_starts_when_the_clock_jumped() {
        // Kathmandu went from +5:30 to +5:45 at 1986-01-01 00:00: that day began at 00:15.
        let tz: Tz = "Asia/Kathmandu".parse().expect("zone");
        let (days, _) =
            buckets(at("1985-12-30T12:00:00Z"), at("1986-01-02T12:00:00Z"), Interval::Day, tz).expect("days");
        assert_eq!(days[2], at("1985-12-31T18:30:00Z"));
        assert_eq!(days[2].with_timezone(&tz).to_rfc3339(), "1986-01-01T00:15:00+05:45");
        // Samoa skipped 2011-12-30 whole: its buckets go from the 29th to the 31st.
        let tz: Tz = "Pacific/Apia".parse().expect("zone");
        let (days, _) =
            buckets(at("2011-12-29T12:00:00Z"), at("2011-12-31T12:00:00Z"), Interval::Day, tz).expect("days");
        let local: Vec<String> = days.iter().map(|s| s.with_timezone(&tz).to_rfc3339()).collect();
        assert_eq!(local, ["2011-12-29T00:00:00-10:00", "2011-12-31T00:00:00+14:00", "2012-01-01T00:00:00+14:00"]);
        // Monrovia skipped 44 minutes 30 seconds at 1972-01-07 00:00 (it panicked here).
        let tz: Tz = "Africa/Monrovia".parse().expect("zone");
        let (days, end) =
            buckets(at("1972-01-07T00:50:00Z"), at("1972-01-07T00:55:00Z"), Interval::Day, tz).expect("a day");
        assert_eq!(days, [at("1972-01-07T00:44:30Z")]);
        assert_eq!(end, at("1972-01-08T00:00:00Z"));
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        let (starts, _) =
            buckets(at("2026-12-02T10:00:00Z"), at("2026-12-20T00:00:00Z"), Interval::Week, Tz::UTC).expect("weeks");
        assert_eq!(starts[0], at("2026-11-30T00:00:00Z"));
        assert_eq!(starts.len(), 3);
        let (starts, end) =
            buckets(at("2026-01-31T10:00:00Z"), at("2026-03-01T00:00:00Z"), Interval::Month, Tz::UTC).expect("months");
        assert_eq!(starts, [at("2026-01-01T00:00:00Z"), at("2026-02-01T00:00:00Z")]);
        assert_eq!(end, at("2026-03-01T00:00:00Z"));
    }

    #[test]
    fn a_half_hour_zone_has_buckets_off_the_utc_hour() {
        let tz: Tz = "Asia/Kolkata".parse().expect("zone");
        let (starts, _) =
            buckets(at("2026-12-01T00:00:00Z"), at("2026-12-03T00:00:00Z"), Interval::Day, tz).expect("days");
        assert!(starts.iter().all(|start| start.timestamp() % 3_600 == 1_800));
    }

    #[test]
    fn windows_count_whole_days_when_a_clock_change_skips_midnight() {
        // Santiago's clocks go from 00:00 to 01:00 on 2026-09-06: that day starts at 01:00.
        let tz: Tz = "America/Santiago".parse().expect("zone");
        let (days, end) =
            buckets(at("2026-09-04T12:00:00Z"), at("2026-09-08T12:00:00Z"), Interval::Day, tz).expect("days");
        assert_eq!(days[2].with_timezone(&tz).to_rfc3339(), "2026-09-06T01:00:00-03:00");
        // Day k has users k*10 .. k*10+k+1.
        let sets: Vec<UserSet> = (0..days.len() as u64)
            .map(|day| {
                let mut set = UserSet::default();
                (0..=day).for_each(|user| set.insert(sketch::user_hash(&(day * 10 + user).to_string())));
                set
            })
            .collect();
        let dau: Vec<u64> = windows(&days, end, &days, &sets, 1).iter().map(|count| count.users).collect();
        assert_eq!(dau, [1, 2, 3, 4, 5]);
        let two_days: Vec<u64> = windows(&days, end, &days, &sets, 2).iter().map(|count| count.users).collect();
        assert_eq!(two_days, [1, 3, 5, 7, 9]);
    }

    #[test]
    fn sliding_windows_over_exact_sets_equal_unions() {
        // A fixed pseudo-random sequence (xorshift): the same sets every run.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |below: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below
        };
        let (days, end) =
            buckets(at("2026-01-01T00:00:00Z"), at("2026-04-01T00:00:00Z"), Interval::Day, Tz::UTC).expect("days");
        let sets: Vec<UserSet> = days
            .iter()
            .map(|_| {
                let mut set = UserSet::default();
                (0..next(40)).for_each(|_| set.insert(next(200)));
                set
            })
            .collect();
        for (interval, window) in [(Interval::Day, 1), (Interval::Day, 7), (Interval::Week, 1), (Interval::Month, 30)] {
            let (starts, _) = buckets(days[0], end, interval, Tz::UTC).expect("buckets");
            let sliding = windows(&starts, end, &days, &sets, window);
            let unions: Vec<UserCount> = starts
                .iter()
                .skip(1)
                .chain([&end])
                .map(|bucket_end| {
                    let last = days.partition_point(|day| day < bucket_end);
                    let mut union = UserSet::default();
                    sets[last.saturating_sub(window)..last].iter().for_each(|set| union.merge(set));
                    union.count()
                })
                .collect();
            assert_eq!(sliding, unions, "{interval:?} {window}");
        }
    }

    #[tokio::test]
    async fn a_question_past_its_budget_is_too_big() {
        let slow = async {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            Ok(())
        };
        let answer = within(std::time::Duration::from_millis(20), slow).await;
        assert!(matches!(answer, Err(Failure::TooBig)));
    }

    #[test]
    fn too_many_buckets_is_a_clear_error() {
        let result = buckets(at("2020-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z"), Interval::Hour, Tz::UTC);
        assert!(matches!(result, Err(Failure::Invalid(message)) if message.contains("at most 2000 buckets")));
    }
}
