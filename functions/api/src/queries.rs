//! The read side's aggregates: the catalog of event names (`GET /v1/event-names`) and trends
//! (`POST /v1/query/trends`). Plain counts come from the exact hourly rollups (dirty hours and
//! the current one from raw rows); property filters, breakdowns, unique users and time zones
//! whose buckets do not start on a UTC hour are answered from the raw rows. Every answer says
//! which (`source`).

use crate::extract::{Reading, Reply, body};
use crate::lists::{Params, parse_json_filter};
use crate::{Api, Failure};
use axum::Json;
use axum::extract::{RawQuery, State};
use axum::response::IntoResponse;
use bytes::Bytes;
use chrono::{DateTime, Datelike, Duration, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use evtrack::event::EventType;
use evtrack::http::ListedRouter;
use evtrack::store::{BreakdownBy, CountSource, JsonDocument, Line, Measure, Series, hour_of, hour_start};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;

/// Buckets one trend may have (two months of hours, five years of days).
pub const MAX_BUCKETS: usize = 2_000;
pub const MAX_SERIES: usize = 10;
pub const MAX_BREAKDOWN_VALUES: usize = 100;

pub fn routes() -> ListedRouter<Arc<Api>> {
    use http::Method;
    ListedRouter::default().on(Method::GET, "/v1/event-names", event_names).on(Method::POST, "/v1/query/trends", trends)
}

fn source_json(source: &CountSource) -> Value {
    json!({"kind": "rollup", "rollup_hours": source.rollup_hours, "raw_hours": source.raw_hours})
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
    let (from_hour, to_hour) = (hour_of(from), hour_of(to - Duration::milliseconds(1)) + 1);
    let (counts, source) = api.store.hourly_counts(project, from_hour, to_hour, &[]).await?;
    let mut names: Vec<(EventType, String, u64, DateTime<Utc>)> = Vec::new();
    for count in counts {
        match names.iter_mut().find(|(kind, name, _, _)| *kind == count.kind && *name == count.name) {
            Some(entry) => {
                entry.2 += count.events;
                entry.3 = entry.3.max(count.last_at);
            }
            None => names.push((count.kind, count.name, count.events, count.last_at)),
        }
    }
    names.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1))));
    let data: Vec<Value> = names
        .into_iter()
        .map(|(kind, name, events, last_at)| {
            json!({"type": kind, "name": if name.is_empty() { None } else { Some(name) }, "events": events, "last_seen": last_at})
        })
        .collect();
    Ok(Json(
        json!({"data": data, "from": hour_start(from_hour), "to": hour_start(to_hour), "source": source_json(&source)}),
    )
    .into_response())
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Interval {
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
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum SourceChoice {
    /// The rollups where they can answer.
    #[default]
    Auto,
    /// The raw rows (slower; the same numbers).
    Raw,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeriesInput {
    #[serde(rename = "type", default = "track")]
    kind: EventType,
    /// The name (track's event, page's or screen's name); every event of the type when absent.
    event: Option<String>,
    #[serde(default, rename = "where")]
    filters: Vec<String>,
}

fn track() -> EventType {
    EventType::Track
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BreakdownInput {
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
    from: DateTime<Utc>,
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

fn utc() -> String {
    "UTC".into()
}

/// The starts of the buckets that cover `[from, to)` in `tz`, and the end of the last.
fn buckets(
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
        let start = to_utc(tz, at)?;
        if start >= to {
            return Ok((starts, start));
        }
        if starts.last().is_none_or(|last| *last < start) {
            starts.push(start);
        }
        if starts.len() > MAX_BUCKETS {
            return Err(Failure::Invalid(format!("at most {MAX_BUCKETS} buckets; ask for a larger interval")));
        }
        at = next(at).ok_or_else(|| Failure::Invalid("to is out of range".into()))?;
    }
}

/// A local time in `tz` as UTC: the earlier of two (a clock going back), or the first moment
/// after a gap (a clock going forward).
fn to_utc(tz: Tz, local: NaiveDateTime) -> Result<DateTime<Utc>, Failure> {
    for minutes in [0, 30, 60, 90, 120] {
        if let Some(at) = tz.from_local_datetime(&(local + Duration::minutes(minutes))).earliest() {
            return Ok(at.with_timezone(&Utc));
        }
    }
    Err(Failure::Invalid("a bucket boundary does not exist in this time zone".into()))
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
    let tz: Tz = input.timezone.parse().map_err(|_| {
        Failure::Invalid(format!("timezone is an IANA time zone (Europe/Paris, UTC); got {:?}", input.timezone))
    })?;
    let all_documents = [JsonDocument::Properties, JsonDocument::Traits, JsonDocument::Context];
    let mut series = Vec::new();
    for given in &input.series {
        if given.event.as_deref().is_some_and(|name| name.is_empty() || name.chars().count() > 255) {
            return Err(Failure::Invalid("event has 1 to 255 characters".into()));
        }
        let filters =
            given.filters.iter().map(|text| parse_json_filter(text, &all_documents)).collect::<Result<Vec<_>, _>>()?;
        series.push(Series { kind: given.kind, name: given.event.clone(), filters });
    }
    let breakdown = match &input.breakdown {
        None => None,
        Some(given) => {
            if !(1..=MAX_BREAKDOWN_VALUES).contains(&given.limit) {
                return Err(Failure::Invalid(format!("breakdown.limit is 1 to {MAX_BREAKDOWN_VALUES}")));
            }
            let parsed = parse_json_filter(&format!("{}:is_set", given.property), &all_documents).map_err(|_| {
                Failure::Invalid("breakdown.property is <document>.<key>[.<key>…], e.g. properties.plan".into())
            })?;
            Some(BreakdownBy { document: parsed.document, path: parsed.path, top: given.limit })
        }
    };
    let (starts, end) = buckets(input.from, input.to, input.interval, tz)?;
    let on_hours = starts.iter().chain([&end]).all(|at| at.timestamp() % 3_600 == 0);
    let plain = input.math == Math::Total && breakdown.is_none() && series.iter().all(|s| s.filters.is_empty());

    let mut lines: Vec<Value> = Vec::new();
    let source = if plain && on_hours && input.source == SourceChoice::Auto {
        let selection: Vec<(EventType, Option<String>)> = series.iter().map(|s| (s.kind, s.name.clone())).collect();
        let (counts, source) = api.store.hourly_counts(project, hour_of(starts[0]), hour_of(end), &selection).await?;
        for (index, one) in series.iter().enumerate() {
            let mut values = vec![0u64; starts.len()];
            for count in
                counts.iter().filter(|c| c.kind == one.kind && one.name.as_ref().is_none_or(|name| *name == c.name))
            {
                let at = hour_start(count.hour);
                let bucket = starts.partition_point(|start| *start <= at).saturating_sub(1);
                values[bucket] += count.events;
            }
            lines.push(line_json(index, one, None, values, input.math));
        }
        source_json(&source)
    } else {
        let measure = if input.math == Math::UniqueUsers { Measure::Users } else { Measure::Events };
        let seconds: Vec<i64> = starts.iter().map(DateTime::timestamp).collect();
        for (index, one) in series.iter().enumerate() {
            let counted =
                api.store.raw_trend(project, one, measure, &seconds, end.timestamp(), breakdown.as_ref()).await?;
            if counted.is_empty() && breakdown.is_none() {
                lines.push(line_json(index, one, None, vec![0; starts.len()], input.math));
            }
            for (line, values) in counted {
                lines.push(line_json(index, one, line, values, input.math));
            }
        }
        json!({"kind": "raw"})
    };
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

fn line_json(index: usize, series: &Series, line: Option<Line>, values: Vec<u64>, math: Math) -> Value {
    let total: u64 = values.iter().sum();
    let mut answer = json!({"series": index, "type": series.kind, "event": series.name, "values": values});
    if math == Math::Total {
        answer["total"] = json!(total);
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

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).expect("time").with_timezone(&Utc)
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
    fn too_many_buckets_is_a_clear_error() {
        let result = buckets(at("2020-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z"), Interval::Hour, Tz::UTC);
        assert!(matches!(result, Err(Failure::Invalid(message)) if message.contains("at most 2000 buckets")));
    }
}
