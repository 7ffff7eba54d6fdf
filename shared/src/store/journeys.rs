//! The rows funnels and retention are computed from (`crate::cohorts`): every live event of
//! a range that matches one of a few series, as (user, time, which series, breakdown value),
//! kept compact; at most `MAX_ROWS_READ` of them.

use super::erasure::{ERASABLE_IDS, not_being_erased};
use super::live::{LIVE_EVENTS, live_events_by};
use super::rollups::{USER_KEY, and};
use super::trends::{db_time, series_condition};
use super::{BreakdownBy, MAX_ROWS_READ, Series, Store, StoreError, with_timeout};
use crate::cohorts::Step;
use crate::ids::ProjectId;
use crate::sketch::user_hash;
use mysql_async::Value;
use mysql_async::prelude::Queryable;

impl Store {
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
        params.push(Value::from(MAX_ROWS_READ as u64 + 1));
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
        if steps.len() > MAX_ROWS_READ {
            return Err(StoreError::TooBig);
        }
        Ok(steps)
    }
}
