//! The rows funnels and retention are computed from (`crate::cohorts`): every live event of
//! a range that matches one of a few series, as (user, time, which series, breakdown value),
//! kept compact; at most `Store::max_rows_read` of them. The user is a hash of who an event
//! counts as: `USER_HASH` from the rollup (`rolled_journeys`), xxh3 of the raw rows' user
//! (`journeys`: MD5 in SQL costs the server about 0.9 µs more per row). Rows of the two compare
//! only with rows of the same way.

use super::erasure::{ERASABLE_IDS, not_being_erased};
use super::live::{LIVE_EVENTS, live_events_by};
use super::rollups::{
    CountSource, USER_HASH, USER_KEY, and, dirty_hours, hour_of_seconds, mark_dirty, read_raw_hours, snapshot,
};
use super::trends::{db_time, series_condition};
use super::{BreakdownBy, Series, Store, StoreError, with_timeout};
use crate::cohorts::Step;
use crate::event::EventType;
use crate::ids::ProjectId;
use crate::sketch::user_hash;
use mysql_async::Value;
use mysql_async::prelude::Queryable;
use std::collections::BTreeMap;

/// How many series one read matches events against (bits of `Step::matches`).
pub const MAX_SERIES: usize = 8;

/// Milliseconds in an hour: `rollup_journey_hours.at_ms` counts from the hour's start.
const HOUR_MS: i64 = 3_600_000;

impl Series {
    /// Whether `rollup_journey_hours` holds this series' events: one type and name, no filter.
    pub fn is_named_only(&self) -> bool {
        self.kind.is_some() && self.name.is_some() && self.filters.is_empty()
    }

    /// Whether this series is every event: no type, name or filter.
    pub fn is_any(&self) -> bool {
        self.kind.is_none() && self.name.is_none() && self.filters.is_empty()
    }
}

/// The distinct (type, name) pairs of some series (each `is_named_only`), with the bits of
/// the series each matches, and the SQL for an event's bits (`CASE`, with its parameters).
struct NamedSeries<'a> {
    pairs: Vec<(EventType, &'a str, u8)>,
    bits_sql: String,
    bits_params: Vec<Value>,
}

impl<'a> NamedSeries<'a> {
    fn of(series: &'a [Series]) -> Self {
        let mut pairs: Vec<(EventType, &str, u8)> = Vec::new();
        for (bit, one) in series.iter().take(MAX_SERIES).enumerate() {
            let (Some(kind), Some(name)) = (one.kind, one.name.as_deref()) else { continue };
            match pairs.iter_mut().find(|(k, n, _)| *k == kind && super::same_text(n, name)) {
                Some((_, _, bits)) => *bits |= 1 << bit,
                None => pairs.push((kind, name, 1 << bit)),
            }
        }
        let mut bits_params = Vec::new();
        let cases: String = pairs
            .iter()
            .map(|(kind, name, bits)| {
                bits_params.extend([Value::from(kind.as_str()), Value::from(*name), Value::from(*bits)]);
                " WHEN type = ? AND name = ? THEN ?"
            })
            .collect();
        let bits_sql = if pairs.is_empty() { "0".to_string() } else { format!("CASE{cases} ELSE 0 END") };
        NamedSeries { pairs, bits_sql, bits_params }
    }
}

impl Store {
    /// When the project's oldest stored event happened (Unix seconds, rounded down), if it has
    /// any: where "ever" starts for a question about users' first events. Soft-deleted rows
    /// count, so that it is a bound, never later than the oldest live event.
    pub async fn first_event_at(&self, project: ProjectId) -> Result<Option<i64>, StoreError> {
        let mut conn = self.conn().await?;
        let first: Option<Option<i64>> = with_timeout(conn.exec_first(
            "SELECT TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', MIN(timestamp))
             FROM events /* with deleted */ WHERE project_id = ?",
            (project.0,),
        ))
        .await?;
        Ok(first.flatten())
    }

    /// The live events in `[from, to)` (Unix seconds) matching any of `series` (at most 8):
    /// bit k of `matches` says it matches `series[k]`; with the value of `value_of`.
    pub async fn journeys(
        &self,
        project: ProjectId,
        series: &[Series],
        from: i64,
        to: i64,
        value_of: Option<&BreakdownBy>,
    ) -> Result<Vec<Step>, StoreError> {
        let mut conn = self.conn().await?;
        // Parameters in the statement's order: the select list's, then the conditions'.
        let mut params: Vec<Value> = Vec::new();
        let matches: Vec<String> = series
            .iter()
            .take(8)
            .enumerate()
            .map(|(bit, one)| format!("IF({}, {}, 0)", series_condition(one, &mut params), 1u8 << bit))
            .collect();
        let value = match value_of {
            Some(by) => {
                params.push(Value::from(super::lists::json_path(&by.path)));
                by.document.text_sql()
            }
            None => "NULL".to_string(),
        };
        params.extend([Value::from(project.0), Value::from(db_time(from)), Value::from(db_time(to))]);
        let any: Vec<String> = series.iter().take(8).map(|one| series_condition(one, &mut params)).collect();
        let erasing = and(not_being_erased(&mut conn, project, ERASABLE_IDS, &mut params).await?);
        params.push(Value::from(self.max_rows_read as u64 + 1));
        // Series that each name their event: one range of the name index per series (the
        // optimizer took the time index over a range of weeks, reading every event in it).
        let events = if series.iter().all(|one| one.kind.is_some() && one.name.is_some()) {
            live_events_by("ix_events_name")
        } else {
            LIVE_EVENTS.to_string()
        };
        let sql = format!(
            "SELECT {USER_KEY}, TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', timestamp) DIV 1000, {}, {value}
             FROM {events} e
             WHERE project_id = ? AND timestamp >= ? AND timestamp < ? AND ({}) {erasing} LIMIT ?",
            matches.join(" + "),
            any.join(" OR "),
        );
        self.record(&sql, &params);
        let sql = super::capped(&sql, &conn);
        let steps = with_timeout(conn.exec_map(
            sql,
            params,
            |(user, at, matches, value): (String, i64, u8, Option<String>)| Step {
                user: user_hash(&user),
                at,
                matches,
                value,
            },
        ))
        .await?;
        if steps.len() > self.max_rows_read {
            return Err(StoreError::TooBig);
        }
        Ok(steps)
    }

    /// `journeys` of series that each name one type's event without filters
    /// (`Series::is_named_only`) or are any event (`Series::is_any`; retention only: the
    /// activity rollup keeps a user's first and last event of an hour), of the users `sample`
    /// takes, as of one moment: clean hours from `rollup_journey_hours` and
    /// `rollup_activity_hours`, dirty ones and those from the current hour on from the raw rows.
    pub async fn rolled_journeys(
        &self,
        project: ProjectId,
        series: &[Series],
        (from, to): (i64, i64),
        sample: Sample,
    ) -> Result<(Vec<Step>, CountSource), StoreError> {
        let (from_hour, to_hour) = (hour_of_seconds(from), hour_of_seconds(to + 3_599));
        let (from_ms, to_ms) = (from * 1_000, to * 1_000);
        let mut conn = self.conn().await?;
        let mut tx = with_timeout(conn.start_transaction(snapshot())).await?;
        let (mut dirty, current, watermark) = dirty_hours(&mut tx, project, from_hour, to_hour).await?;
        let NamedSeries { pairs, bits_sql: bits, bits_params } = NamedSeries::of(series);
        let any_bits = any_bits(series);
        // Copies of one row past the number of series change no answer.
        let copies = series.len().min(MAX_SERIES) as u32;
        let sampled = sample.bound().map(|bound| (" AND user_hash < ?", vec![Value::from(bound)]));
        let (sampled_sql, sampled_params) = sampled.unwrap_or_default();

        let mut rolled: Vec<(u8, u32, u64, u32, u32)> = Vec::new();
        // Hours rolled up without what this read needs: read raw, and marked for the job.
        let mut unrolled: Vec<(u64, u32)> = Vec::new();
        if !pairs.is_empty() {
            // The pairs' clean hours, in both rollups (keyed by type, name and hour).
            let (ranges, pairs_params) = pair_ranges(&pairs, (from_hour, current));
            let ranges_params = [&bits_params[..], &[Value::from(project.0)], &pairs_params].concat();
            let mut params = [&ranges_params[..], &sampled_params].concat();
            params.push(Value::from(self.max_rows_read as u64 + 1));
            let sql = format!(
                "SELECT {bits}, hour, user_hash, at_ms, events FROM rollup_journey_hours
                 WHERE project_id = ? AND ({ranges}) {sampled_sql} LIMIT ?"
            );
            self.record(&sql, &params);
            let sql = super::capped(&sql, &tx);
            rolled = with_timeout(tx.exec(sql, params)).await?;
            if rolled.len() > self.max_rows_read {
                return Err(StoreError::TooBig);
            }
            // An hour whose journeys do not add up to its counts was rolled up without them (by
            // a release before migration 0013, or by the previous one during a deploy). Known of
            // all users' journeys only: a sample trusts them (releases since 0015 roll up
            // journeys, and 0015 marked every hour rolled up before it), and reads no counts.
            if sample == Sample::ALL {
                let mut journeys: BTreeMap<(u32, u8), u64> = BTreeMap::new();
                for (matches, hour, _, _, events) in &rolled {
                    *journeys.entry((*hour, *matches)).or_default() += u64::from(*events);
                }
                let sql =
                    format!("SELECT {bits}, hour, events FROM rollup_event_hours WHERE project_id = ? AND ({ranges})");
                let counted: Vec<(u8, u32, u64)> =
                    with_timeout(tx.exec(super::capped(&sql, &tx), ranges_params)).await?;
                unrolled.extend(
                    counted
                        .iter()
                        .filter(|(matches, hour, events)| journeys.get(&(*hour, *matches)) != Some(events))
                        .map(|(_, hour, _)| (project.0, *hour)),
                );
            }
        }
        let mut active: Vec<(u32, u64, u32, u32)> = Vec::new();
        let mut without_events: Vec<u32> = Vec::new();
        if any_bits != 0 {
            active = self.rolled_activity(&mut tx, project, (from_hour, current), sample).await?;
            let (stale, unrolled_hours) = activity_checks(&mut tx, project, (from_hour, current)).await?;
            without_events = stale;
            unrolled.extend(unrolled_hours.into_iter().map(|hour| (project.0, hour)));
        }
        // Marked already: not again.
        unrolled.retain(|(_, hour)| dirty.binary_search(hour).is_err());
        dirty.extend(unrolled.iter().map(|(_, hour)| *hour));
        dirty.sort_unstable();
        dirty.dedup();
        let raw = |hour: u32| hour >= current || dirty.binary_search(&hour).is_ok();

        // Past the cap the answer is too big: nothing more is kept (a rolled row may stand for
        // several steps, so the rows read alone do not bound them).
        let cap = self.max_rows_read;
        // About a step per rollup row read, never more than `keep` can hold.
        let mut steps: Vec<Step> = Vec::with_capacity((rolled.len() + active.len()).min(cap + copies as usize));
        let mut keep = |step: Step, copies: u32| {
            if steps.len() <= cap {
                steps.extend(std::iter::repeat_n(step, copies as usize));
            }
        };
        for (matches, hour, user, at_ms, events) in rolled {
            let at = i64::from(hour) * HOUR_MS + i64::from(at_ms);
            if !raw(hour) && (from_ms..to_ms).contains(&at) {
                keep(Step { user, at, matches, value: None }, events.min(copies));
            }
        }
        for (hour, user, first_ms, last_ms) in active {
            if raw(hour) || without_events.binary_search(&hour).is_ok() {
                continue;
            }
            let hour_ms = i64::from(hour) * HOUR_MS;
            let last = (last_ms != first_ms).then_some(last_ms);
            for at in std::iter::once(first_ms).chain(last).map(|ms| hour_ms + i64::from(ms)) {
                if (from_ms..to_ms).contains(&at) {
                    keep(Step { user, at, matches: any_bits, value: None }, 1);
                }
            }
        }

        let raw_hours: Vec<u32> = (from_hour..to_hour).filter(|&hour| raw(hour)).collect();
        let select = format!(
            "({bits}) | {any_bits}, {USER_HASH}, TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', timestamp) DIV 1000"
        );
        // Every event where a series is any event, else those of the pairs.
        let selection: Vec<(Option<EventType>, Option<String>)> = match any_bits {
            0 => pairs.iter().map(|(kind, name, _)| (Some(*kind), Some(name.to_string()))).collect(),
            _ => Vec::new(),
        };
        let (mut condition, mut condition_params) = super::rollups::selection_condition(&selection);
        if let Some(bound) = sample.bound() {
            condition.push_str(&format!(" AND {USER_HASH} < ?"));
            condition_params.push(Value::from(bound));
        }
        let add = |(matches, user, at): (u8, u64, i64)| {
            if (from_ms..to_ms).contains(&at) {
                keep(Step { user, at, matches, value: None }, 1);
            }
            Ok(())
        };
        let (select, condition) = ((select.as_str(), &bits_params[..]), (condition.as_str(), &condition_params[..]));
        let read = read_raw_hours(self, &mut tx, project, &raw_hours, select, condition, "", add).await?;
        with_timeout(tx.commit()).await?;
        if !unrolled.is_empty() {
            let mut tx = with_timeout(conn.start_transaction(mysql_async::TxOpts::default())).await?;
            mark_dirty(&mut tx, &mut unrolled).await?;
            with_timeout(tx.commit()).await?;
        }
        // Past the cap the rows stop short: counting what came would answer wrong.
        if read > cap || steps.len() > cap {
            return Err(StoreError::TooBig);
        }
        Ok((steps, CountSource::of(from_hour, to_hour, raw_hours.len(), watermark)))
    }

    /// The activity rollup's rows of `[from_hour, to_hour)` for the users `sample` takes:
    /// (hour, user hash, first and last millisecond in the hour).
    async fn rolled_activity(
        &self,
        tx: &mut mysql_async::Transaction<'_>,
        project: ProjectId,
        hours: (u32, u32),
        sample: Sample,
    ) -> Result<Vec<(u32, u64, u32, u32)>, StoreError> {
        let mut rows: Vec<(u32, u64, u32, u32)> = Vec::new();
        for (sql, mut params) in activity_reads(project, "hour, user_hash, first_ms, last_ms", hours, sample.bound()) {
            let sql = format!("{sql} LIMIT ?");
            params.push(Value::from((self.max_rows_read + 1 - rows.len()) as u64));
            self.record(&sql, &params);
            let sql = super::capped(&sql, &*tx);
            rows.extend(with_timeout(tx.exec::<(u32, u64, u32, u32), _, _>(sql, params)).await?);
            if rows.len() > self.max_rows_read {
                return Err(StoreError::TooBig);
            }
        }
        Ok(rows)
    }

    /// About how many rows `rolled_journeys` of `series` over `[from, to)` would hold of all
    /// users: the named series' events, and two for each of the activity rollup's rows
    /// (counted over 1 user in 1,024). For choosing a sample (`Sample::to_fit`); cheap. Hours
    /// not rolled up yet count as the rollups hold them (their activity: not at all).
    pub async fn journey_rows_estimate(
        &self,
        project: ProjectId,
        series: &[Series],
        (from, to): (i64, i64),
    ) -> Result<u64, StoreError> {
        let (from_hour, to_hour) = (hour_of_seconds(from), hour_of_seconds(to + 3_599));
        let mut conn = self.conn().await?;
        let NamedSeries { pairs, .. } = NamedSeries::of(series);
        let mut rows = 0;
        if !pairs.is_empty() {
            let (ranges, pairs_params) = pair_ranges(&pairs, (from_hour, to_hour));
            let params = [&[Value::from(project.0)], &pairs_params[..]].concat();
            let sql = format!("SELECT SUM(events) FROM rollup_event_hours WHERE project_id = ? AND ({ranges})");
            let events: Option<Option<u64>> = with_timeout(conn.exec_first(sql, params)).await?;
            rows += events.flatten().unwrap_or(0);
        }
        if any_bits(series) != 0 {
            // Counted over 1 user in 1,024.
            let one_in = Sample { log2: 10 };
            for (sql, params) in activity_reads(project, "COUNT(*)", (from_hour, to_hour), one_in.bound()) {
                let counted: Option<u64> = with_timeout(conn.exec_first(super::capped(&sql, &conn), params)).await?;
                // A row is a user's first and last event of an hour: two steps.
                rows += counted.unwrap_or(0) * one_in.one_in() * 2;
            }
        }
        Ok(rows)
    }
}

/// The condition "one of `pairs` in `[from_hour, to_hour)`" on a table keyed by type, name
/// and hour (both rollups), and its parameters.
fn pair_ranges(pairs: &[(EventType, &str, u8)], (from_hour, to_hour): (u32, u32)) -> (String, Vec<Value>) {
    let ranges = vec!["(type = ? AND name = ? AND hour >= ? AND hour < ?)"; pairs.len()].join(" OR ");
    let params = pairs
        .iter()
        .flat_map(|(kind, name, _)| [Value::from(kind.as_str()), Value::from(*name), from_hour.into(), to_hour.into()])
        .collect();
    (ranges, params)
}

/// The most hours a sampled read of the activity rollup names in one statement.
const HOURS_PER_STATEMENT: u32 = 2_000;

/// `SELECT select` of the activity rollup's rows of `[from_hour, to_hour)` whose user hash is
/// below `bound` (every row: `None`), as statements with their parameters. A sample names its
/// hours (`hour IN (…)`), so that each hour is one range of the key, (hour, hashes below the
/// bound), and only the sampled users' rows are read.
fn activity_reads(
    project: ProjectId,
    select: &str,
    (from_hour, to_hour): (u32, u32),
    bound: Option<u64>,
) -> Vec<(String, Vec<Value>)> {
    let table = "rollup_activity_hours WHERE project_id = ?";
    let Some(bound) = bound else {
        let sql = format!("SELECT {select} FROM {table} AND hour >= ? AND hour < ?");
        return vec![(sql, vec![project.0.into(), from_hour.into(), to_hour.into()])];
    };
    (from_hour..to_hour)
        .step_by(HOURS_PER_STATEMENT as usize)
        .map(|start| {
            let hours: Vec<u32> = (start..to_hour.min(start.saturating_add(HOURS_PER_STATEMENT))).collect();
            let sql = format!(
                "SELECT {select} FROM {table} AND hour IN ({}) AND user_hash < ?",
                super::placeholders(hours.len())
            );
            let mut params: Vec<Value> = vec![project.0.into()];
            params.extend(hours.into_iter().map(Value::from));
            params.push(bound.into());
            (sql, params)
        })
        .collect()
}

/// The bits of the series that are any event (`Series::is_any`).
fn any_bits(series: &[Series]) -> u8 {
    series.iter().take(MAX_SERIES).enumerate().filter(|(_, one)| one.is_any()).fold(0, |bits, (bit, _)| bits | 1 << bit)
}

/// Of `[from_hour, to_hour)`: the hours without events (whatever activity rows they hold are
/// left from before), and those whose users were rolled up without their activity (by a
/// release before migration 0015, or by the previous one during a deploy), both ascending.
async fn activity_checks(
    tx: &mut mysql_async::Transaction<'_>,
    project: ProjectId,
    (from_hour, to_hour): (u32, u32),
) -> Result<(Vec<u32>, Vec<u32>), StoreError> {
    let range = (project.0, from_hour, to_hour);
    let sql =
        "SELECT DISTINCT hour FROM rollup_event_hours WHERE project_id = ? AND hour >= ? AND hour < ? ORDER BY hour";
    let with_events: Vec<u32> = with_timeout(tx.exec(super::capped(sql, tx), range)).await?;
    let sql = "SELECT hour FROM rollup_user_hours WHERE project_id = ? AND hour >= ? AND hour < ?
               GROUP BY hour HAVING MIN(with_activity) ORDER BY hour";
    let with_activity: Vec<u32> = with_timeout(tx.exec(super::capped(sql, tx), range)).await?;
    let unrolled = with_events.iter().copied().filter(|hour| with_activity.binary_search(hour).is_err()).collect();
    let without_events = (from_hour..to_hour).filter(|hour| with_events.binary_search(hour).is_err()).collect();
    Ok((without_events, unrolled))
}

/// Which users a journey read takes: all, or 1 in `one_in()` (a power of two), by the hash
/// of who they are, the same from the rollups and from the raw rows. Counts from a sample are
/// scaled up by `one_in()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    log2: u32,
}

impl Sample {
    pub const ALL: Sample = Sample { log2: 0 };
    /// The smallest sample: 1 user in 4,096.
    const MAX_LOG2: u32 = 12;

    pub fn one_in(self) -> u64 {
        1 << self.log2
    }

    /// The hashes taken are those below this; `None`: every user.
    fn bound(self) -> Option<u64> {
        (self.log2 > 0).then(|| 1u64 << (64 - self.log2))
    }

    /// The largest sample that brings about `budget` of `rows` rows or fewer (the smallest
    /// when none does).
    pub fn to_fit(rows: u64, budget: u64) -> Sample {
        let log2 = (0..Self::MAX_LOG2).find(|log2| rows.div_ceil(1 << log2) <= budget).unwrap_or(Self::MAX_LOG2);
        Sample { log2 }
    }

    /// A sample of an eighth as many users, if there is one.
    pub fn smaller(self) -> Option<Sample> {
        (self.log2 < Self::MAX_LOG2).then(|| Sample { log2: (self.log2 + 3).min(Self::MAX_LOG2) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_takes_the_hashes_below_its_bound_and_fits_the_rows_asked() {
        assert_eq!(Sample::ALL.bound(), None);
        assert_eq!(Sample::to_fit(1_000, 1_000), Sample::ALL);
        let eighth = Sample::to_fit(8_000, 1_000);
        assert_eq!((eighth.one_in(), eighth.bound()), (8, Some(1 << 61)));
        // Rounded to the next power of two: never more rows than asked.
        assert_eq!(Sample::to_fit(8_001, 1_000).one_in(), 16);
        // Past the smallest sample: the smallest, and none smaller.
        let smallest = Sample::to_fit(u64::MAX, 1);
        assert_eq!((smallest.one_in(), smallest.smaller()), (4_096, None));
        assert_eq!(Sample::ALL.smaller().map(Sample::one_in), Some(8));
        assert_eq!(Sample { log2: 11 }.smaller().map(Sample::one_in), Some(4_096));
    }
}
