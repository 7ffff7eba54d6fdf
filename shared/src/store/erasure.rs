//! GDPR erasure: the request (which suppresses the user's ids at once), its progress and
//! audit record, and the chunked deletes cleanup runs for it.
//!
//! Every delete names a `LIMIT`: no statement removes more than the chunk it is given
//! (PlanetScale: 100k rows a statement, 20 s a transaction).

use super::{ChunkResult, JobTx, Store, StoreError, column, required, required_time, time_column, with_timeout};
use crate::ids::{ProjectId, new_public_id};
use crate::model::SubjectHashes;
use chrono::{DateTime, Utc};
use mysql_async::prelude::Queryable;
use mysql_async::{Row, Transaction, TxOpts, Value};
use serde::Serialize;
use uuid::Uuid;

/// An erasure request's progress; once done, its audit record (no personal data).
#[derive(Debug, Serialize)]
pub struct ErasureInfo {
    pub id: Uuid,
    /// `None` once the project itself was purged.
    pub project: Option<Uuid>,
    /// `pending` or `done`.
    pub status: String,
    /// HMAC-SHA256 of the user id (hex), to match a later question about the same user.
    pub subject_hash: String,
    pub events_deleted: u64,
    pub profiles_deleted: u64,
    pub aliases_deleted: u64,
    pub group_links_deleted: u64,
    pub rejected_deleted: u64,
    pub requested_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Records an erasure request and suppresses the user at once: their id and the ids
    /// linked to it go on the suppression list (as keyed hashes), so that the consumer drops
    /// their events from now on, also those already queued. Cleanup does the deleting.
    pub async fn request_erasure(
        &self,
        project: ProjectId,
        user_id: &str,
        erased_ids: &impl SubjectHashes,
    ) -> Result<Uuid, StoreError> {
        let mut conn = self.conn().await?;
        let mut tx = with_timeout(conn.start_transaction(TxOpts::default())).await?;
        // Exclusive against the consumer's share lock: see `events::storable`.
        let locked: Option<u64> = with_timeout(
            tx.exec_first("SELECT id FROM projects WHERE id = ? AND deleted_at IS NULL FOR UPDATE", (project.0,)),
        )
        .await?;
        if locked.is_none() {
            return Err(StoreError::NotFound("no such project".into()));
        }
        let linked: Vec<String> = with_timeout(tx.exec(
            "SELECT alias FROM aliases WHERE project_id = ? AND user_id = ? AND alias <> user_id",
            (project.0, user_id),
        ))
        .await?;
        let subjects: Vec<&str> = std::iter::once(user_id).chain(linked.iter().map(String::as_str)).collect();
        let hashes: Vec<[u8; 32]> = subjects.iter().flat_map(|subject| erased_ids.hashes(project, subject)).collect();
        with_timeout(tx.exec_batch(
            "INSERT INTO suppressed_subjects (project_id, subject_hash) VALUES (?, ?)
             ON DUPLICATE KEY UPDATE created_at = CURRENT_TIMESTAMP(3)",
            hashes.iter().map(|hash| (project.0, hash.to_vec())),
        ))
        .await?;
        let uid = new_public_id();
        // The current pepper's hash.
        let subject_hash = erased_ids
            .hashes(project, user_id)
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Invalid("no pepper to hash the user id with".into()))?;
        with_timeout(tx.exec_drop(
            "INSERT INTO erasures (uid, project_id, subject_hash, user_id, linked_ids) VALUES (?, ?, ?, ?, ?)",
            (uid, project.0, subject_hash.to_vec(), user_id, serde_json::to_string(&linked).unwrap_or_default()),
        ))
        .await?;
        with_timeout(tx.commit()).await?;
        Ok(uid)
    }

    pub async fn erasure(&self, uid: Uuid) -> Result<Option<ErasureInfo>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<Row> = with_timeout(conn.exec_first(
            "SELECT e.uid, p.uid, e.state, HEX(e.subject_hash), e.events_deleted, e.profiles_deleted,
                    e.aliases_deleted, e.group_links_deleted, e.rejected_deleted, e.requested_at, e.completed_at
             FROM erasures e LEFT JOIN projects p ON p.id = e.project_id /* with deleted */ WHERE e.uid = ?",
            (uid,),
        ))
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(ErasureInfo {
            id: required(&row, 0)?,
            project: column(&row, 1),
            status: required(&row, 2)?,
            subject_hash: required::<String>(&row, 3)?.to_lowercase(),
            events_deleted: required(&row, 4)?,
            profiles_deleted: required(&row, 5)?,
            aliases_deleted: required(&row, 6)?,
            group_links_deleted: required(&row, 7)?,
            rejected_deleted: required(&row, 8)?,
            requested_at: required_time(&row, 9)?,
            completed_at: time_column(&row, 10),
        }))
    }

    /// One chunk of the oldest pending erasure: deletes up to `limit` rows that hold the
    /// user's id or an id linked to it; when none are left, completes the request and clears
    /// the ids from it. Done when no erasure is pending.
    pub async fn erase_chunk(tx: &mut JobTx<'_>, limit: u64) -> Result<ChunkResult, StoreError> {
        let tx = &mut tx.0;
        let pending: Option<(u64, u64, Option<String>, Option<String>)> = with_timeout(tx.exec_first(
            "SELECT id, project_id, user_id, linked_ids FROM erasures WHERE state = 'pending' ORDER BY id LIMIT 1 FOR UPDATE",
            (),
        ))
        .await?;
        let Some((erasure, project, user_id, linked)) = pending else {
            return Ok(ChunkResult { rows: 0, resume_after: None, done: true });
        };
        let mut subjects: Vec<String> = user_id.into_iter().collect();
        subjects.extend(linked.and_then(|text| serde_json::from_str::<Vec<String>>(&text).ok()).unwrap_or_default());
        let list = vec!["?"; subjects.len().max(1)].join(",");
        let mut remaining = limit;
        let mut deleted = 0;
        for (counter, sql) in ERASURE_DELETES {
            if subjects.is_empty() {
                break;
            }
            let mut params: Vec<Value> = vec![Value::from(project)];
            params.extend(subjects.iter().map(|subject| Value::from(subject.as_str())));
            params.push(Value::from(remaining));
            with_timeout(tx.exec_drop(sql.replace("{list}", &list), params)).await?;
            let rows = tx.affected_rows();
            add_count(tx, erasure, counter, rows).await?;
            deleted += rows;
            remaining -= rows;
            if remaining == 0 {
                // Perhaps more: the next chunk starts over (statements that find nothing are cheap).
                return Ok(ChunkResult { rows: deleted, resume_after: None, done: false });
            }
        }
        // Rejected bodies: raw JSON that names the id in a string.
        for subject in &subjects {
            let needle = serde_json::to_string(subject).unwrap_or_default();
            with_timeout(tx.exec_drop(
                "DELETE FROM rejected_events WHERE project_id = ? AND LOCATE(?, raw) > 0 LIMIT ?",
                (project, needle.as_bytes(), remaining),
            ))
            .await?;
            let rows = tx.affected_rows();
            add_count(tx, erasure, "rejected_deleted", rows).await?;
            deleted += rows;
            remaining -= rows;
            if remaining == 0 {
                return Ok(ChunkResult { rows: deleted, resume_after: None, done: false });
            }
        }
        with_timeout(tx.exec_drop(
            "UPDATE erasures SET state = 'done', user_id = NULL, linked_ids = NULL, completed_at = CURRENT_TIMESTAMP(3)
             WHERE id = ?",
            (erasure,),
        ))
        .await?;
        Ok(ChunkResult { rows: deleted, resume_after: None, done: false })
    }
}

/// Per erasure counter, a delete of rows holding a subject (`{list}` of them). One statement
/// per indexed column, so that each uses its index.
const ERASURE_DELETES: &[(&str, &str)] = &[
    ("events_deleted", "DELETE FROM events WHERE project_id = ? AND user_id IN ({list}) LIMIT ?"),
    ("events_deleted", "DELETE FROM events WHERE project_id = ? AND anonymous_id IN ({list}) LIMIT ?"),
    ("events_deleted", "DELETE FROM events WHERE project_id = ? AND previous_id IN ({list}) LIMIT ?"),
    ("profiles_deleted", "DELETE FROM users WHERE project_id = ? AND user_id IN ({list}) LIMIT ?"),
    ("aliases_deleted", "DELETE FROM aliases WHERE project_id = ? AND user_id IN ({list}) LIMIT ?"),
    ("aliases_deleted", "DELETE FROM aliases WHERE project_id = ? AND alias IN ({list}) LIMIT ?"),
    ("group_links_deleted", "DELETE FROM group_members WHERE project_id = ? AND member_id IN ({list}) LIMIT ?"),
];

async fn add_count(tx: &mut Transaction<'_>, erasure: u64, counter: &str, rows: u64) -> Result<(), StoreError> {
    if rows == 0 {
        return Ok(());
    }
    // `counter` comes from the fixed list above.
    let sql = format!("UPDATE erasures SET {counter} = {counter} + ? WHERE id = ?");
    with_timeout(tx.exec_drop(sql, (rows, erasure))).await
}
