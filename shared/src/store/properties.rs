//! Promoted properties (migration 0012): a few properties per project whose values the
//! rollups count per hour, type and name, so that a trend broken down by one of them reads
//! the rollups instead of every row. Reads are exact as `hourly_counts` is: clean hours from
//! the rollup, dirty ones and the current hour from the raw rows, in one snapshot. A demoted
//! property (migration 0014) is read by nothing at once; the rollups job deletes its counts.

use super::lists::{JsonDocument, json_path};
use super::rollups::{
    CountSource, Handing, ROW_HOUR, dirty_hours, kind, read_raw_hours, selection_condition, snapshot,
};
use super::{JobTx, Store, StoreError, required, required_time, with_timeout};
use crate::event::EventType;
use crate::ids::ProjectId;
use chrono::{DateTime, Utc};
use mysql_async::prelude::Queryable;
use mysql_async::{IsolationLevel, Row, TxOpts, Value};
use serde::Serialize;

/// Properties one project may promote: each adds a read of every dirty hour to the rollups job.
pub const MAX_PROMOTED: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Promoted {
    #[serde(skip)]
    pub id: u64,
    /// As it was asked for: `properties.plan`.
    pub property: String,
    #[serde(skip)]
    document: JsonDocument,
    #[serde(skip)]
    json_path: String,
    pub promoted_at: DateTime<Utc>,
}

impl Promoted {
    /// Whether this is the property at `path` of `document`.
    pub fn is(&self, document: JsonDocument, path: &[String]) -> bool {
        self.document == document && self.json_path == json_path(path)
    }

    /// The SQL for an event's value of it, as the raw breakdown reads it, and its parameter.
    pub(super) fn value_sql(&self) -> (String, Value) {
        (self.document.text_sql(), Value::from(self.json_path.as_str()))
    }
}

/// The live events of one hour, type and name with one value of a promoted property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueCount {
    pub hour: u32,
    pub kind: EventType,
    /// `""` for events without a name.
    pub name: String,
    /// `None`: events without the property.
    pub value: Option<String>,
    pub events: u64,
}

pub enum Promotion {
    Promoted(Promoted),
    AlreadyPromoted(Promoted),
    TooMany,
    /// Demoted, and its counts not deleted yet by the rollups job.
    BeingDemoted,
}

/// The key a value is kept under: its xxh3 without trailing spaces (the PAD SPACE collation
/// groups `a` and `a ` as one, in the raw reads too); never 0, which stands for "missing".
pub(super) fn value_hash(value: Option<&str>) -> u64 {
    value.map_or(0, |value| xxhash_rust::xxh3::xxh3_64(value.trim_end_matches(' ').as_bytes()).max(1))
}

/// The promoted properties of a project, oldest first (demoted ones left out).
pub(super) async fn promoted(conn: &mut impl Queryable, project: ProjectId) -> Result<Vec<Promoted>, StoreError> {
    promoted_where(conn, project, "").await
}

/// As `promoted`, the rows share-locked until the caller commits: the rollups job counting
/// an hour holds them, so that a demotion's purge (which deletes the row) waits for it.
pub(super) async fn promoted_locked(
    conn: &mut impl Queryable,
    project: ProjectId,
) -> Result<Vec<Promoted>, StoreError> {
    promoted_where(conn, project, "LOCK IN SHARE MODE").await
}

async fn promoted_where(
    conn: &mut impl Queryable,
    project: ProjectId,
    lock: &str,
) -> Result<Vec<Promoted>, StoreError> {
    let rows: Vec<Row> = with_timeout(conn.exec(
        format!(
            "SELECT p.id, p.property, p.document, p.json_path, p.promoted_at FROM promoted_properties p
             WHERE p.project_id = ?
               AND NOT EXISTS (SELECT 1 FROM rollup_property_purge d WHERE d.project_id = p.project_id AND d.property_id = p.id)
             ORDER BY p.id {lock}"
        ),
        (project.0,),
    ))
    .await?;
    rows.iter()
        .map(|row| {
            let name: String = required(row, 2)?;
            let document = JsonDocument::from_name(&name)
                .ok_or_else(|| StoreError::Corrupt(format!("promoted property document {name}")))?;
            Ok(Promoted {
                id: required(row, 0)?,
                property: required(row, 1)?,
                document,
                json_path: required(row, 3)?,
                promoted_at: required_time(row, 4)?,
            })
        })
        .collect()
}

impl Store {
    pub async fn promoted_properties(&self, project: ProjectId) -> Result<Vec<Promoted>, StoreError> {
        let mut conn = self.conn().await?;
        promoted(&mut conn, project).await
    }

    /// Promotes the property at `path` of `document`. Its backfill: every hour with events is
    /// listed for the rollups job to recount, and a breakdown by it reads those hours raw
    /// until then.
    pub async fn promote_property(
        &self,
        project: ProjectId,
        document: JsonDocument,
        path: &[String],
    ) -> Result<Promotion, StoreError> {
        let property = format!("{}.{}", document.as_str(), path.join("."));
        let json_path = json_path(path);
        if property.chars().count() > 255 || json_path.chars().count() > 1024 {
            return Err(StoreError::Invalid("a promoted property has at most 255 characters".into()));
        }
        let mut conn = self.conn().await?;
        // REPEATABLE READ: the backfill's INSERT … SELECT then locks the rollup rows it reads,
        // so it waits for the rollups job to commit an hour it is counting for the first time
        // (whose count may not include this property) and lists that hour too.
        let options = TxOpts::default().with_isolation_level(IsolationLevel::RepeatableRead).clone();
        let mut tx = with_timeout(conn.start_transaction(options)).await?;
        // The project's row, locked: promotions of one project one at a time (the limit holds).
        with_timeout(tx.exec_drop("SELECT id FROM projects WHERE id = ? FOR UPDATE", (project.0,))).await?;
        let existing = promoted(&mut tx, project).await?;
        if let Some(found) = existing.iter().find(|promoted| promoted.is(document, path)) {
            return Ok(Promotion::AlreadyPromoted(found.clone()));
        }
        if existing.len() >= MAX_PROMOTED {
            return Ok(Promotion::TooMany);
        }
        let demoted: Option<u64> = with_timeout(tx.exec_first(
            "SELECT id FROM promoted_properties WHERE project_id = ? AND property = ?",
            (project.0, &property),
        ))
        .await?;
        if demoted.is_some() {
            return Ok(Promotion::BeingDemoted);
        }
        with_timeout(tx.exec_drop(
            "INSERT INTO promoted_properties (project_id, property, document, json_path) VALUES (?, ?, ?, ?)",
            (project.0, &property, document.as_str(), &json_path),
        ))
        .await?;
        let id = tx.last_insert_id().ok_or_else(|| StoreError::Corrupt("no id for a promotion".into()))?;
        with_timeout(tx.exec_drop(
            "INSERT INTO rollup_property_backfill (project_id, property_id, hour)
             SELECT project_id, ?, hour FROM rollup_event_hours WHERE project_id = ? GROUP BY project_id, hour",
            (id, project.0),
        ))
        .await?;
        let promoted = promoted(&mut tx, project).await?.into_iter().find(|promoted| promoted.id == id);
        with_timeout(tx.commit()).await?;
        promoted.map(Promotion::Promoted).ok_or_else(|| StoreError::Corrupt("a promotion not read back".into()))
    }

    /// Demotes the property at `path` of `document`: no read uses its counts from now on and
    /// its slot is free; the rollups job deletes its counts, then its row
    /// (`purge_demoted_property`). `None` when it is not promoted. Only inserts: the api
    /// deletes nothing.
    pub async fn demote_property(
        &self,
        project: ProjectId,
        document: JsonDocument,
        path: &[String],
    ) -> Result<Option<Promoted>, StoreError> {
        let mut conn = self.conn().await?;
        let mut tx = with_timeout(conn.start_transaction(TxOpts::default())).await?;
        // The project's row, locked as a promotion locks it.
        with_timeout(tx.exec_drop("SELECT id FROM projects WHERE id = ? FOR UPDATE", (project.0,))).await?;
        let Some(found) = promoted(&mut tx, project).await?.into_iter().find(|promoted| promoted.is(document, path))
        else {
            return Ok(None);
        };
        with_timeout(tx.exec_drop(
            "INSERT INTO rollup_property_purge (project_id, property_id) VALUES (?, ?)",
            (project.0, found.id),
        ))
        .await?;
        with_timeout(tx.commit()).await?;
        Ok(Some(found))
    }

    /// Deletes up to `limit` rows of the longest-demoted property's counts; with the last of
    /// them, its promotion, backfill and purge entry. `None` when no property is demoted. A
    /// chunk of the rollups job.
    pub async fn purge_demoted_property(tx: &mut JobTx<'_>, limit: u64) -> Result<Option<u64>, StoreError> {
        let tx = &mut tx.0;
        let next: Option<(u64, u64)> = with_timeout(tx.exec_first(
            "SELECT project_id, property_id FROM rollup_property_purge ORDER BY demoted_at, project_id, property_id LIMIT 1",
            (),
        ))
        .await?;
        let Some((project, property)) = next else { return Ok(None) };
        let delete_counts = "DELETE FROM rollup_property_hours WHERE project_id = ? AND property_id = ? LIMIT ?";
        with_timeout(tx.exec_drop(delete_counts, (project, property, limit))).await?;
        let mut deleted = tx.affected_rows();
        if deleted < limit {
            // Waits for an hour being counted with the property (`promoted_locked`), then
            // deletes what that count added.
            with_timeout(tx.exec_drop("DELETE FROM promoted_properties WHERE id = ?", (property,))).await?;
            with_timeout(tx.exec_drop(delete_counts, (project, property, limit))).await?;
            deleted += tx.affected_rows();
            for sql in [
                "DELETE FROM rollup_property_backfill WHERE project_id = ? AND property_id = ?",
                "DELETE FROM rollup_property_purge WHERE project_id = ? AND property_id = ?",
            ] {
                with_timeout(tx.exec_drop(sql, (project, property))).await?;
            }
        }
        Ok(Some(deleted))
    }

    /// The live events of `[from_hour, to_hour)` per hour, type, name and value of `property`
    /// (`selection` as in `hourly_counts`), each given to `each` as it is read (in no
    /// particular order; never all held; after an error, what was given is no answer), exact
    /// as of one moment.
    pub async fn hourly_values(
        &self,
        project: ProjectId,
        (from_hour, to_hour): (u32, u32),
        selection: &[(Option<EventType>, Option<String>)],
        property: &Promoted,
        each: impl FnMut(ValueCount) + Send,
    ) -> Result<CountSource, StoreError> {
        let mut conn = self.conn().await?;
        let mut tx = with_timeout(conn.start_transaction(snapshot())).await?;
        let (mut dirty, current, watermark) = dirty_hours(&mut tx, project, from_hour, to_hour).await?;
        // Hours the promotion's backfill has yet to count are read raw too.
        let pending: Vec<u32> = with_timeout(tx.exec(
            "SELECT hour FROM rollup_property_backfill WHERE project_id = ? AND property_id = ? AND hour >= ? AND hour < ?",
            (project.0, property.id, from_hour, to_hour),
        ))
        .await?;
        dirty.extend(pending);
        dirty.sort_unstable();
        dirty.dedup();
        let raw = |hour: u32| hour >= current || dirty.binary_search(&hour).is_ok();

        let (pairs, mut params) = selection_condition(selection);
        params.splice(0..0, [Value::from(project.0), property.id.into(), from_hour.into(), current.into()]);
        params.push(Value::from(self.max_rows_read as u64 + 1));
        // Capped by the server as the raw reads are: past it, 422 rather than a 503 to retry.
        let sql = format!(
            "SELECT hour, type, name, value, events FROM rollup_property_hours
             WHERE project_id = ? AND property_id = ? AND hour >= ? AND hour < ? {pairs} LIMIT ?"
        );
        let mut counts = Handing::new(each, self.max_rows_read);
        let mut give = |row: ValueCountRow, rolled_up: bool| {
            let count = value_count(row)?;
            let left_out = rolled_up && raw(count.hour);
            counts.give(count, left_out)
        };
        let sql = super::capped(&sql, &tx);
        // A property with a value per event (an id) keeps as many rows as the events.
        if super::read_each(&mut tx, sql, params, |row| give(row, true)).await? > self.max_rows_read {
            return Err(StoreError::TooBig);
        }
        let raw_hours: Vec<u32> = (from_hour..to_hour).filter(|&hour| raw(hour)).collect();
        let (pairs, params) = selection_condition(selection);
        let (value, path) = property.value_sql();
        let select = format!("{ROW_HOUR} AS hour, type, COALESCE(name, '') AS name, {value} AS v, COUNT(*)");
        let group = "GROUP BY 1, 2, 3, 4";
        // Every raw row is given: past the cap, `give` ends the read.
        read_raw_hours(self, &mut tx, project, &raw_hours, (&select, &[path]), (&pairs, &params), group, |row| {
            give(row, false)
        })
        .await?;
        with_timeout(tx.commit()).await?;
        Ok(CountSource::of(from_hour, to_hour, raw_hours.len(), watermark))
    }
}

/// The columns of an hour's count of a value: hour, type, name, value, events.
type ValueCountRow = (u32, String, String, Option<String>, u64);

fn value_count((hour, kind_text, name, value, events): ValueCountRow) -> Result<ValueCount, StoreError> {
    Ok(ValueCount { hour, kind: kind(&kind_text)?, name, value, events })
}
