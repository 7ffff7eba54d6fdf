//! Trends from the raw rows: one series (a type, perhaps a name, property filters) counted per
//! time bucket, with an optional breakdown by one property (its top values and the rest). The
//! rollups answer the plain counts (`rollups`); this answers what they cannot: property
//! filters, breakdowns, unique users, time zones whose days do not start on a UTC hour.

use super::erasure::{ERASABLE_IDS, not_being_erased};
use super::lists::{JsonDocument, JsonFilter};
use super::live::LIVE_EVENTS;
use super::rollups::{USER_KEY, and};
use super::{Store, StoreError, placeholders, required, to_db_time};
use crate::event::EventType;
use crate::ids::ProjectId;
use crate::sketch::{UserSet, user_hash};
use chrono::{DateTime, Utc};
use mysql_async::Value;

/// What a series counts.
#[derive(Debug, Clone)]
pub struct Series {
    /// `None`: events of every type.
    pub kind: Option<EventType>,
    /// `None`: every event of the type.
    pub name: Option<String>,
    pub filters: Vec<JsonFilter>,
}

impl Series {
    /// Whether this series, its filters aside, counts events of `kind` named `name` (`""`:
    /// unnamed), names compared as SQL compares them.
    pub fn counts_name(&self, kind: EventType, name: &str) -> bool {
        self.kind.is_none_or(|wanted| wanted == kind)
            && self.name.as_ref().is_none_or(|wanted| super::same_text(wanted, name))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    Events,
    /// Distinct users: a userId, or the anonymousId of an event without one.
    Users,
}

/// A property to break a series down by.
#[derive(Debug, Clone)]
pub struct BreakdownBy {
    pub document: JsonDocument,
    pub path: Vec<String>,
    /// How many of its values (by events in the range) get their own line.
    pub top: usize,
}

/// One line of a breakdown.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Line {
    /// The property's value as text.
    Value(String),
    /// Events without the property (or with null).
    Missing,
    /// Every value past the top ones.
    Other,
}

/// A series per bucket: the line (`None` without a breakdown) and a count per bucket.
pub type Counted = Vec<(Option<Line>, Vec<u64>)>;

const SECONDS: &str = "TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', timestamp)";

impl Store {
    /// `series` counted by `measure` in the buckets that start at `starts` (Unix seconds,
    /// ascending) and end at `end`, broken down by `breakdown`.
    pub async fn raw_trend(
        &self,
        project: ProjectId,
        series: &Series,
        measure: Measure,
        starts: &[i64],
        end: i64,
        breakdown: Option<&BreakdownBy>,
    ) -> Result<Counted, StoreError> {
        let Some(&first) = starts.first() else { return Ok(Vec::new()) };
        let mut conn = self.conn().await?;
        let (mut conditions, mut condition_params) = where_of(project, series, first, end);
        let erasing = not_being_erased(&mut conn, project, ERASABLE_IDS, &mut condition_params).await?;
        conditions = format!("{conditions} {}", and(erasing));
        // The breakdown's value (its SQL, with the path as its parameter).
        let value = breakdown.map(|by| (by.document.text_sql(), Value::from(super::lists::json_path(&by.path))));

        // The breakdown's top values by events in the whole range.
        let mut top: Vec<String> = Vec::new();
        if let (Some(by), Some((value, path))) = (breakdown, &value) {
            let mut params = vec![path.clone()];
            params.extend(condition_params.iter().cloned());
            params.push(Value::from(by.top as u64));
            let sql = format!(
                "SELECT {value} AS v, COUNT(*) FROM {LIVE_EVENTS} e WHERE {conditions}
                 GROUP BY v HAVING v IS NOT NULL ORDER BY 2 DESC, 1 LIMIT ?"
            );
            let rows = self.capped_read(&mut conn, &sql, params).await?;
            top = rows.iter().map(|row| required::<String>(row, 0)).collect::<Result<_, _>>()?;
        }

        let measure_sql = match measure {
            Measure::Events => "COUNT(*)".to_string(),
            Measure::Users => format!("COUNT(DISTINCT {USER_KEY})"),
        };
        // Parameters in the statement's order: bucket starts, the breakdown's, the conditions'.
        let mut params: Vec<Value> = starts.iter().map(|&start| Value::from(start)).collect();
        let (line, group) = match &value {
            Some((value, path)) if !top.is_empty() => {
                let list = placeholders(top.len());
                // The value when it is a top one; whether it is another one.
                let sql = format!(
                    "IF({value} IN ({list}), {value}, NULL) AS line, ({value} IS NOT NULL AND {value} NOT IN ({list})) AS other"
                );
                params.push(path.clone());
                params.extend(top.iter().map(|v| Value::from(v.as_str())));
                params.push(path.clone());
                params.push(path.clone());
                params.push(path.clone());
                params.extend(top.iter().map(|v| Value::from(v.as_str())));
                (sql, ", line, other")
            }
            // No breakdown, or one with no value at all (every event is missing the property).
            _ => ("NULL AS line, 0 AS other".to_string(), ""),
        };
        params.extend(condition_params);
        let sql = format!(
            "SELECT INTERVAL({SECONDS}, {}) - 1 AS bucket, {line}, {measure_sql} FROM {LIVE_EVENTS} e
             WHERE {conditions} GROUP BY bucket{group}",
            placeholders(starts.len())
        );
        let mut lines: Counted = Vec::new();
        // Up to a row per bucket and line: added up as they are read.
        let add = |(bucket, value, other, count): (i64, Option<String>, i64, u64)| {
            let line = match (breakdown, value, other != 0) {
                (None, _, _) => None,
                (Some(_), _, true) => Some(Line::Other),
                // Grouped per bucket under PAD SPACE, a value's spelling may differ from bucket
                // to bucket ("pro", "pro "): one line, without the trailing spaces, as the
                // rollups answer it.
                (Some(_), Some(value), false) => Some(Line::Value(without_trailing_spaces(value))),
                (Some(_), None, false) => Some(Line::Missing),
            };
            let Ok(bucket) = usize::try_from(bucket) else { return Ok(()) };
            let index = match lines.iter().position(|(seen, _)| *seen == line) {
                Some(index) => index,
                None => {
                    lines.push((line, vec![0; starts.len()]));
                    lines.len() - 1
                }
            };
            if let Some(slot) = lines[index].1.get_mut(bucket) {
                *slot += count;
            }
            Ok(())
        };
        self.capped_read_each(&mut conn, &sql, params, add).await?;
        lines.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(lines)
    }
}

impl Store {
    /// The users of `series` in each bucket that starts at `starts` (Unix seconds, ascending;
    /// the last ends at `end`), exactly.
    pub async fn raw_users(
        &self,
        project: ProjectId,
        series: &Series,
        starts: &[i64],
        end: i64,
    ) -> Result<Vec<UserSet>, StoreError> {
        let mut sets = vec![UserSet::default(); starts.len()];
        let Some(&first) = starts.first() else { return Ok(sets) };
        let mut conn = self.conn().await?;
        let (conditions, mut condition_params) = where_of(project, series, first, end);
        let erasing = and(not_being_erased(&mut conn, project, ERASABLE_IDS, &mut condition_params).await?);
        let mut params: Vec<Value> = starts.iter().map(|&start| Value::from(start)).collect();
        params.extend(condition_params);
        params.push(Value::from(self.max_rows_read as u64 + 1));
        let sql = format!(
            "SELECT DISTINCT INTERVAL({SECONDS}, {}) - 1 AS bucket, {USER_KEY} FROM {LIVE_EVENTS} e
             WHERE {conditions} {erasing} LIMIT ?",
            placeholders(starts.len())
        );
        let add = |(bucket, user): (i64, String)| {
            if let Some(set) = usize::try_from(bucket).ok().and_then(|bucket| sets.get_mut(bucket)) {
                set.insert(user_hash(&user));
            }
            Ok(())
        };
        if self.capped_read_each(&mut conn, &sql, params, add).await? > self.max_rows_read {
            return Err(StoreError::TooBig);
        }
        Ok(sets)
    }
}

/// `text` as SQL compares it (PAD SPACE: trailing spaces make no difference).
fn without_trailing_spaces(mut text: String) -> String {
    text.truncate(crate::ids::as_compared(&text).len());
    text
}

/// The rows of a series in `[from, to)` (Unix seconds), and the parameters.
fn where_of(project: ProjectId, series: &Series, from: i64, to: i64) -> (String, Vec<Value>) {
    let mut params = vec![Value::from(project.0), Value::from(db_time(from)), Value::from(db_time(to))];
    let condition = series_condition(series, &mut params);
    (format!("project_id = ? AND timestamp >= ? AND timestamp < ? AND {condition}"), params)
}

pub(super) fn db_time(seconds: i64) -> chrono::NaiveDateTime {
    to_db_time(DateTime::<Utc>::from_timestamp(seconds, 0).unwrap_or_default())
}

/// Whether a row belongs to `series` (its type, name and filters), pushing the parameters.
pub(super) fn series_condition(series: &Series, params: &mut Vec<Value>) -> String {
    let mut conditions = vec!["TRUE".to_string()];
    if let Some(kind) = series.kind {
        conditions.push("type = ?".into());
        params.push(Value::from(kind.as_str()));
    }
    if let Some(name) = &series.name {
        conditions.push("name = ?".into());
        params.push(Value::from(name.as_str()));
    }
    for filter in &series.filters {
        conditions.push(filter.sql(params));
    }
    format!("({})", conditions.join(" AND "))
}
