//! GDPR erasure: the request (which suppresses the user's ids at once), its progress and
//! audit record, and the chunked deletes cleanup runs for it.
//!
//! Every delete names a `LIMIT`: no statement removes more than the chunk it is given
//! (PlanetScale: 100k rows a statement, 20 s a transaction), and at most `IDS_PER_CHUNK` ids:
//! a user with 100,000 linked ids is erased a slice of ids at a time. An erasure that fails
//! is recorded on its row and passed over for the rest of the run; the run goes on with
//! later erasures and the other steps, and the next run tries it again.

use super::links::linked_ids;
use super::{
    ChunkResult, IDS_PER_STATEMENT, JobTx, Store, StoreError, column, placeholders, required, required_time,
    time_column, with_timeout,
};
use crate::ids::{ProjectId, new_public_id};
use crate::model::SubjectHashes;
use crate::telemetry::{MetricLine, Unit};
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
    /// The ids erased: the user id and the ids linked to it.
    pub ids: u64,
    /// Ids still to be worked through (0 once done).
    pub ids_remaining: u64,
    pub events_deleted: u64,
    pub profiles_deleted: u64,
    pub aliases_deleted: u64,
    pub group_links_deleted: u64,
    pub group_profiles_deleted: u64,
    pub rejected_deleted: u64,
    /// Runs in which this erasure failed; it is tried again by the next run.
    pub attempts_failed: u32,
    /// The last failure, while pending.
    pub last_error: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Records an erasure request and suppresses the user at once: their id and the ids
    /// linked to it (`links`) go on the suppression list as keyed hashes, so that the
    /// consumer drops their events from now on, also those already queued. Cleanup does the
    /// deleting.
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
        let subjects: Vec<String> =
            std::iter::once(user_id.to_string()).chain(linked_ids(&mut tx, project, user_id).await?).collect();
        // The current pepper's hash.
        let subject_hash = erased_ids
            .hashes(project, user_id)
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Invalid("no pepper to hash the user id with".into()))?;
        let uid = new_public_id();
        // user_id and linked_ids: for the previous release, should it be rolled back to.
        let linked = serde_json::to_string(&subjects[1..]).unwrap_or_default();
        with_timeout(tx.exec_drop(
            "INSERT INTO erasures (uid, project_id, subject_hash, subjects, user_id, linked_ids) VALUES (?, ?, ?, ?, ?, ?)",
            (uid, project.0, subject_hash.to_vec(), subjects.len() as u64, user_id, linked),
        ))
        .await?;
        let erasure: u64 = tx.last_insert_id().ok_or_else(|| StoreError::Unavailable("no erasure id".into()))?;
        for ids in subjects.chunks(IDS_PER_STATEMENT) {
            let mut params = Vec::with_capacity(ids.len() * 2);
            for id in ids {
                params.extend([Value::from(erasure), Value::from(id.as_str())]);
            }
            let rows = vec!["(?, ?)"; ids.len()].join(",");
            let sql = format!("INSERT IGNORE INTO erasure_subjects (erasure_id, subject) VALUES {rows}");
            with_timeout(tx.exec_drop(sql, params)).await?;
            let hashes: Vec<[u8; 32]> = ids.iter().flat_map(|id| erased_ids.hashes(project, id)).collect();
            let mut params = Vec::with_capacity(hashes.len() * 2);
            for hash in &hashes {
                params.extend([Value::from(project.0), Value::from(hash.to_vec())]);
            }
            let rows = vec!["(?, ?)"; hashes.len()].join(",");
            let sql = format!(
                "INSERT INTO suppressed_subjects (project_id, subject_hash) VALUES {rows}
                 ON DUPLICATE KEY UPDATE created_at = CURRENT_TIMESTAMP(3)"
            );
            with_timeout(tx.exec_drop(sql, params)).await?;
        }
        with_timeout(tx.commit()).await?;
        Ok(uid)
    }

    pub async fn erasure(&self, uid: Uuid) -> Result<Option<ErasureInfo>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<Row> = with_timeout(conn.exec_first(
            "SELECT e.uid, p.uid, e.state, HEX(e.subject_hash), e.subjects,
                    (SELECT COUNT(*) FROM erasure_subjects s WHERE s.erasure_id = e.id),
                    e.events_deleted, e.profiles_deleted, e.aliases_deleted, e.group_links_deleted,
                    e.group_profiles_deleted, e.rejected_deleted, e.attempts_failed, e.last_error,
                    e.requested_at, e.completed_at
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
            ids: required(&row, 4)?,
            ids_remaining: required(&row, 5)?,
            events_deleted: required(&row, 6)?,
            profiles_deleted: required(&row, 7)?,
            aliases_deleted: required(&row, 8)?,
            group_links_deleted: required(&row, 9)?,
            group_profiles_deleted: required(&row, 10)?,
            rejected_deleted: required(&row, 11)?,
            attempts_failed: required(&row, 12)?,
            last_error: column(&row, 13),
            requested_at: required_time(&row, 14)?,
            completed_at: time_column(&row, 15),
        }))
    }

    /// One chunk of the oldest pending erasure after `resume_after` (the erasures that failed
    /// earlier in this run): deletes up to `limit` rows holding some of its ids, and drops
    /// the ids it has finished; with none left, completes the request. An erasure whose
    /// deletes fail is recorded as failed and passed over (the chunk's result resumes after
    /// it). Done when no erasure is left to work on in this run.
    pub async fn erase_chunk(
        tx: &mut JobTx<'_>,
        resume_after: Option<&str>,
        limit: u64,
    ) -> Result<ChunkResult, StoreError> {
        let tx = &mut tx.0;
        let passed_over: u64 = resume_after.and_then(|text| text.parse().ok()).unwrap_or(0);
        let pending: Option<(u64, u64)> = with_timeout(tx.exec_first(
            "SELECT id, project_id FROM erasures WHERE state = 'pending' AND id > ? ORDER BY id LIMIT 1 FOR UPDATE",
            (passed_over,),
        ))
        .await?;
        let Some((erasure, project)) = pending else {
            return Ok(ChunkResult { rows: 0, resume_after: resume_after.map(str::to_string), done: true });
        };
        with_timeout(tx.query_drop("SAVEPOINT erasure_chunk")).await?;
        match erase_some(tx, erasure, project, limit).await {
            Ok(rows) => Ok(ChunkResult { rows, resume_after: resume_after.map(str::to_string), done: false }),
            Err(err) => {
                // A failed statement leaves the transaction usable: undo this erasure's part,
                // record the failure and pass over it. A transaction that is gone (deadlock,
                // lost connection) has no savepoint left: then the chunk fails as a whole.
                if with_timeout(tx.query_drop("ROLLBACK TO SAVEPOINT erasure_chunk")).await.is_err() {
                    return Err(err);
                }
                let reason: String = err.to_string().chars().take(1000).collect();
                with_timeout(tx.exec_drop(
                    "UPDATE erasures SET attempts_failed = attempts_failed + 1, last_error = ? WHERE id = ?",
                    (reason.as_str(), erasure),
                ))
                .await?;
                tracing::error!(erasure, error = %reason, "erasure failed; passed over until the next run");
                MetricLine::new("cleanup").metric("ErasureFailed", 1.0, Unit::Count, &[]).emit();
                Ok(ChunkResult { rows: 0, resume_after: Some(erasure.to_string()), done: false })
            }
        }
    }
}

/// Deletes up to `limit` rows holding one slice of the erasure's ids; a slice finished is
/// dropped from `erasure_subjects`, and the erasure completes when none is left.
async fn erase_some(tx: &mut Transaction<'_>, erasure: u64, project: u64, limit: u64) -> Result<u64, StoreError> {
    let subjects: Vec<String> = with_timeout(tx.exec(
        "SELECT subject FROM erasure_subjects WHERE erasure_id = ? ORDER BY subject LIMIT ?",
        (erasure, IDS_PER_CHUNK as u64),
    ))
    .await?;
    if subjects.is_empty() {
        with_timeout(tx.exec_drop(
            "UPDATE erasures SET state = 'done', user_id = NULL, linked_ids = NULL, last_error = NULL,
                    completed_at = CURRENT_TIMESTAMP(3)
             WHERE id = ?",
            (erasure,),
        ))
        .await?;
        return Ok(0);
    }
    let list = placeholders(subjects.len());
    let mut remaining = limit;
    let mut deleted = 0;
    for (counter, sql) in ERASURE_DELETES {
        let mut params: Vec<Value> = vec![Value::from(project)];
        params.extend(subjects.iter().map(|subject| Value::from(subject.as_str())));
        params.push(Value::from(remaining));
        with_timeout(tx.exec_drop(sql.replace("{list}", &list), params)).await?;
        let rows = tx.affected_rows();
        add_count(tx, erasure, counter, rows).await?;
        (deleted, remaining) = (deleted + rows, remaining - rows);
        if remaining == 0 {
            // Perhaps more: the next chunk takes the same slice again (what is gone is cheap to look for).
            return Ok(deleted);
        }
    }
    // Rejected bodies: raw JSON naming one of the ids as a string, in the project or in none
    // (a message refused whole before its project was known).
    let needles: Vec<String> =
        subjects.iter().map(|subject| serde_json::to_string(subject).unwrap_or_default()).collect();
    let any_needle = vec!["LOCATE(?, raw) > 0"; needles.len()].join(" OR ");
    let mut params: Vec<Value> = vec![Value::from(project)];
    params.extend(needles.iter().map(|needle| Value::from(needle.as_bytes())));
    params.push(Value::from(remaining));
    with_timeout(tx.exec_drop(
        format!("DELETE FROM rejected_events WHERE (project_id = ? OR project_id IS NULL) AND ({any_needle}) LIMIT ?"),
        params,
    ))
    .await?;
    let rows = tx.affected_rows();
    add_count(tx, erasure, "rejected_deleted", rows).await?;
    (deleted, remaining) = (deleted + rows, remaining - rows);
    if remaining == 0 {
        return Ok(deleted);
    }
    let mut params: Vec<Value> = vec![Value::from(erasure)];
    params.extend(subjects.iter().map(|subject| Value::from(subject.as_str())));
    with_timeout(
        tx.exec_drop(format!("DELETE FROM erasure_subjects WHERE erasure_id = ? AND subject IN ({list})"), params),
    )
    .await?;
    Ok(deleted)
}

/// Ids one chunk works on: every statement of `ERASURE_DELETES` names this many at most.
const IDS_PER_CHUNK: usize = 500;

/// Per erasure counter, a delete of rows holding one of the ids (`{list}` of them), by the
/// rules of `links`. One statement per indexed column, so that each uses its index.
const ERASURE_DELETES: &[(&str, &str)] = &[
    ("events_deleted", "DELETE FROM events WHERE project_id = ? AND user_id IN ({list}) LIMIT ?"),
    (
        "events_deleted",
        "DELETE FROM events WHERE project_id = ? AND anonymous_id IN ({list}) AND user_id IS NULL LIMIT ?",
    ),
    ("events_deleted", "DELETE FROM events WHERE project_id = ? AND previous_id IN ({list}) LIMIT ?"),
    ("profiles_deleted", "DELETE FROM users WHERE project_id = ? AND user_id IN ({list}) LIMIT ?"),
    ("aliases_deleted", "DELETE FROM aliases WHERE project_id = ? AND user_id IN ({list}) LIMIT ?"),
    ("aliases_deleted", "DELETE FROM aliases WHERE project_id = ? AND alias IN ({list}) LIMIT ?"),
    ("group_links_deleted", "DELETE FROM group_members WHERE project_id = ? AND member_id IN ({list}) LIMIT ?"),
    ("group_profiles_deleted", "DELETE FROM group_profiles WHERE project_id = ? AND group_id IN ({list}) LIMIT ?"),
];

async fn add_count(tx: &mut Transaction<'_>, erasure: u64, counter: &str, rows: u64) -> Result<(), StoreError> {
    if rows == 0 {
        return Ok(());
    }
    // `counter` comes from the fixed list above.
    let sql = format!("UPDATE erasures SET {counter} = {counter} + ? WHERE id = ?");
    with_timeout(tx.exec_drop(sql, (rows, erasure))).await
}
