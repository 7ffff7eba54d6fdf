//! Rejected events (the quarantine): listed by the api and the command line, replayed by the
//! command line through ingest, and pruned by cleanup after their retention.

use super::erasure::json_strings;
use super::{
    IDS_PER_STATEMENT, Store, StoreError, column, placeholders, required, required_time, time_column, to_db_time,
    with_timeout,
};
use crate::ids::{ProjectId, as_compared};
use chrono::{DateTime, Utc};
use mysql_async::prelude::Queryable;
use mysql_async::{Row, Value};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// Which rejected events to list.
#[derive(Debug, Clone, Default)]
pub struct RejectedFilter {
    /// A reason code (`invalid_value`, `event_too_large`, …).
    pub code: Option<String>,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
}

/// One rejected event, as the api and the command line show it.
#[derive(Debug, Clone, Serialize)]
pub struct RejectedEvent {
    pub id: Uuid,
    pub code: String,
    pub reason: String,
    /// The event (or message) as it was sent; not always JSON (it is what could not be read).
    pub raw: String,
    /// The wire format its request came in (`segment`, `segment:<type>`, `posthog`); none when
    /// the consumer refused it (then it cannot be replayed as sent).
    pub source: Option<String>,
    /// Its position in its request (or queue message; -1: the whole message).
    pub index: i32,
    pub received_at: Option<DateTime<Utc>>,
    pub recorded_at: DateTime<Utc>,
    /// The batch-level fields of its request (`sentAt`, `context`, `integrations`), as sent.
    #[serde(skip_serializing_if = "crate::event::wire::BatchFields::is_empty")]
    pub batch: crate::event::wire::BatchFields,
    /// Where it is in the walk, for the next page of this process (never shown).
    #[serde(skip)]
    pub position: RejectedPosition,
}

/// A rejected event's place in a walk, newest first: its private row (shown to nobody; a
/// cursor carries it hidden).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RejectedPosition(u64);

impl RejectedPosition {
    pub fn of_row(row: u64) -> Self {
        Self(row)
    }

    pub fn row(self) -> u64 {
        self.0
    }
}

/// Where a page of rejected events starts.
#[derive(Debug, Clone, Copy)]
pub enum RejectedAfter {
    /// After an event a client saw (its public id, from a cursor).
    Event(Uuid),
    /// After a row this process read: holds once that row is gone too (a replay removes
    /// what it sent, and the next page must start below it, not end).
    Row(RejectedPosition),
}

impl Store {
    /// Of `events` (of `project`), those naming an id of an erasure in progress: any string of
    /// the event or its batch fields, as cleanup's scan matches them.
    pub async fn rejected_naming_ids_being_erased(
        &self,
        project: ProjectId,
        events: &[RejectedEvent],
    ) -> Result<HashSet<Uuid>, StoreError> {
        let mut conn = self.conn().await?;
        let pending: Option<u64> = with_timeout(
            conn.exec_first("SELECT id FROM erasures WHERE state = 'pending' AND project_id = ? LIMIT 1", (project.0,)),
        )
        .await?;
        if pending.is_none() {
            return Ok(HashSet::new());
        }
        let mut naming: HashMap<String, Vec<Uuid>> = HashMap::new();
        for event in events {
            let batch = serde_json::to_vec(&event.batch).unwrap_or_default();
            for text in json_strings(event.raw.as_bytes()).chain(json_strings(&batch)) {
                // Keyed as the database compares ids with the erasure's.
                naming.entry(as_compared(&text).to_string()).or_default().push(event.id);
            }
        }
        let texts: Vec<&String> = naming.keys().collect();
        let mut erasing = HashSet::new();
        for slice in texts.chunks(IDS_PER_STATEMENT) {
            let mut params = vec![Value::from(project.0)];
            params.extend(slice.iter().map(|text| Value::from(text.as_str())));
            let sql = format!(
                "SELECT DISTINCT s.subject FROM erasures x JOIN erasure_subjects s ON s.erasure_id = x.id
                 WHERE x.state = 'pending' AND x.project_id = ? AND s.subject IN ({})",
                placeholders(slice.len())
            );
            let subjects: Vec<String> = with_timeout(conn.exec(sql, params)).await?;
            erasing.extend(subjects.iter().filter_map(|subject| naming.get(as_compared(subject))).flatten());
        }
        Ok(erasing)
    }

    /// Rejected events of `project` (`None`: the queue messages refused whole, which name no
    /// project one can trust) matching `filter`, newest first, after `after`.
    pub async fn rejected_events(
        &self,
        project: Option<ProjectId>,
        filter: &RejectedFilter,
        after: Option<RejectedAfter>,
        limit: usize,
    ) -> Result<Vec<RejectedEvent>, StoreError> {
        let at = |time: Option<DateTime<Utc>>| time.map_or(Value::NULL, |at| Value::from(to_db_time(at)));
        let code = || Value::from(filter.code.as_deref());
        let mut params = vec![
            Value::from(project.map(|p| p.0)),
            code(),
            code(),
            at(filter.from),
            at(filter.from),
            at(filter.to),
            at(filter.to),
        ];
        let below = match after {
            None => "",
            Some(RejectedAfter::Event(uid)) => {
                params.push(Value::from(uid));
                "AND id < (SELECT id FROM rejected_events WHERE uid = ?)"
            }
            Some(RejectedAfter::Row(RejectedPosition(id))) => {
                params.push(Value::from(id));
                "AND id < ?"
            }
        };
        params.push(Value::from(limit as u64));
        let mut conn = self.conn().await?;
        let rows: Vec<Row> = with_timeout(conn.exec(
            format!(
                "SELECT uid, reason_code, reason, raw, source, item_index, received_at, created_at, batch_fields, id
                 FROM rejected_events
                 WHERE project_id <=> ?
                   AND (? IS NULL OR reason_code = ?)
                   AND (? IS NULL OR created_at >= ?)
                   AND (? IS NULL OR created_at < ?)
                   {below}
                 ORDER BY id DESC LIMIT ?"
            ),
            params,
        ))
        .await?;
        rows.iter()
            .map(|row| {
                Ok(RejectedEvent {
                    id: required(row, 0)?,
                    code: required(row, 1)?,
                    reason: required(row, 2)?,
                    raw: String::from_utf8_lossy(&required::<Vec<u8>>(row, 3)?).into_owned(),
                    source: column(row, 4),
                    index: required(row, 5)?,
                    received_at: time_column(row, 6),
                    recorded_at: required_time(row, 7)?,
                    batch: column::<String>(row, 8)
                        .and_then(|text| serde_json::from_str(&text).ok())
                        .unwrap_or_default(),
                    position: RejectedPosition(required(row, 9)?),
                })
            })
            .collect()
    }

    /// Forgets rejected events of `project` (`None`: messages refused whole) once replayed
    /// (what the replay sent is stored or quarantined again by the normal path).
    pub async fn delete_rejected_events(&self, project: Option<ProjectId>, ids: &[Uuid]) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn().await?;
        let mut params = vec![Value::from(project.map(|p| p.0))];
        params.extend(ids.iter().map(|id| Value::from(*id)));
        let sql =
            format!("DELETE FROM rejected_events WHERE project_id <=> ? AND uid IN ({})", placeholders(ids.len()));
        with_timeout(conn.exec_drop(sql, params)).await?;
        Ok(conn.affected_rows())
    }
}
