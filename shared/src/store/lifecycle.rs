//! Soft delete and restore of events, users and keys; the reads of events and users; GDPR
//! erasure requests and exports; and the chunked deletes the cleanup job runs.
//!
//! Every delete here names a `LIMIT`: no statement removes more than the chunk it is given
//! (PlanetScale: 100k rows a statement, 20 s a transaction).

use super::live::{LIVE_EVENTS, LIVE_USERS};
use super::{
    ChunkResult, JobTx, Store, StoreError, column, required, required_time, time_column, to_db_time, with_timeout,
};
use crate::ids::{ProjectId, new_public_id};
use crate::model::SubjectHashes;
use chrono::{DateTime, Utc};
use mysql_async::prelude::Queryable;
use mysql_async::{Row, Transaction, TxOpts, Value};
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

/// An event as the api returns it and an export writes it.
#[derive(Debug, Serialize)]
pub struct EventView {
    pub id: Uuid,
    #[serde(rename = "messageId")]
    pub message_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: Option<String>,
    #[serde(rename = "userId")]
    pub user_id: Option<String>,
    #[serde(rename = "anonymousId")]
    pub anonymous_id: Option<String>,
    #[serde(rename = "groupId")]
    pub group_id: Option<String>,
    #[serde(rename = "previousId")]
    pub previous_id: Option<String>,
    pub properties: Option<Box<RawValue>>,
    pub traits: Option<Box<RawValue>>,
    pub context: Option<Box<RawValue>>,
    pub timestamp: DateTime<Utc>,
    #[serde(rename = "receivedAt")]
    pub received_at: DateTime<Utc>,
    pub ip: Option<String>,
    /// Only in exports, which include soft-deleted rows (they are still held).
    #[serde(rename = "deletedAt", skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
}

const EVENT_VIEW_COLUMNS: &str = "uid, message_id, type, name, user_id, anonymous_id, group_id, previous_id,
     properties, traits, context, timestamp, received_at, ip, deleted_at, id";

fn raw_json(row: &Row, index: usize) -> Option<Box<RawValue>> {
    column::<String>(row, index).and_then(|text| RawValue::from_string(text).ok())
}

fn event_view(row: &Row) -> Result<EventView, StoreError> {
    Ok(EventView {
        id: required(row, 0)?,
        message_id: required(row, 1)?,
        kind: required(row, 2)?,
        name: column(row, 3),
        user_id: column(row, 4),
        anonymous_id: column(row, 5),
        group_id: column(row, 6),
        previous_id: column(row, 7),
        properties: raw_json(row, 8),
        traits: raw_json(row, 9),
        context: raw_json(row, 10),
        timestamp: required_time(row, 11)?,
        received_at: required_time(row, 12)?,
        ip: column(row, 13),
        deleted_at: time_column(row, 14),
    })
}

/// A user profile as the api returns it.
#[derive(Debug, Serialize)]
pub struct UserView {
    pub id: Uuid,
    #[serde(rename = "userId")]
    pub user_id: String,
    pub traits: Option<Box<RawValue>>,
    #[serde(rename = "firstSeenAt")]
    pub first_seen_at: DateTime<Utc>,
    #[serde(rename = "lastSeenAt")]
    pub last_seen_at: DateTime<Utc>,
    #[serde(rename = "deletedAt", skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
}

fn user_view(row: &Row) -> Result<UserView, StoreError> {
    Ok(UserView {
        id: required(row, 0)?,
        user_id: required(row, 1)?,
        traits: raw_json(row, 2),
        first_seen_at: required_time(row, 3)?,
        last_seen_at: required_time(row, 4)?,
        deleted_at: time_column(row, 5),
    })
}

const USER_VIEW_COLUMNS: &str = "uid, user_id, traits, first_seen_at, last_seen_at, deleted_at";

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

/// What else a user's data holds: ids linked by alias and identify calls, group links.
#[derive(Debug, Serialize)]
pub struct UserLinks {
    pub aliases: Vec<String>,
    pub groups: Vec<String>,
}

impl Store {
    pub async fn event(&self, project: ProjectId, uid: Uuid) -> Result<Option<EventView>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<Row> = with_timeout(conn.exec_first(
            format!("SELECT {EVENT_VIEW_COLUMNS} FROM {LIVE_EVENTS} e WHERE project_id = ? AND uid = ?"),
            (project.0, uid),
        ))
        .await?;
        row.as_ref().map(event_view).transpose()
    }

    pub async fn user(&self, project: ProjectId, user_id: &str) -> Result<Option<UserView>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<Row> = with_timeout(conn.exec_first(
            format!("SELECT {USER_VIEW_COLUMNS} FROM {LIVE_USERS} u WHERE project_id = ? AND user_id = ?"),
            (project.0, user_id),
        ))
        .await?;
        row.as_ref().map(user_view).transpose()
    }

    /// Soft-deletes (`deleted`) or restores (`!deleted`) one row of `table` matching `key`;
    /// true if a row changed. Restoring works until cleanup purges the row.
    async fn set_deleted(
        &self,
        table: SoftTable,
        key: &str,
        params: Vec<Value>,
        deleted: bool,
    ) -> Result<bool, StoreError> {
        let table = table.name();
        let (set, state) =
            if deleted { ("CURRENT_TIMESTAMP(3)", "deleted_at IS NULL") } else { ("NULL", "deleted_at IS NOT NULL") };
        let mut conn = self.conn().await?;
        with_timeout(conn.exec_drop(format!("UPDATE {table} SET deleted_at = {set} WHERE {key} AND {state}"), params))
            .await?;
        Ok(conn.affected_rows() > 0)
    }

    pub async fn set_event_deleted(&self, project: ProjectId, uid: Uuid, deleted: bool) -> Result<bool, StoreError> {
        let params = vec![Value::from(project.0), Value::from(uid)];
        self.set_deleted(SoftTable::Events, "project_id = ? AND uid = ?", params, deleted).await
    }

    pub async fn set_user_deleted(&self, project: ProjectId, user_id: &str, deleted: bool) -> Result<bool, StoreError> {
        let params = vec![Value::from(project.0), Value::from(user_id)];
        self.set_deleted(SoftTable::Users, "project_id = ? AND user_id = ?", params, deleted).await
    }

    pub async fn set_key_deleted(&self, uid: Uuid, deleted: bool) -> Result<bool, StoreError> {
        self.set_deleted(SoftTable::Keys, "uid = ?", vec![Value::from(uid)], deleted).await
    }

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
        let subject_hash = erased_ids.hashes(project, user_id).into_iter().next().unwrap_or_default();
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

    /// For an export: the user's profile (deleted or not), the ids linked to them and their
    /// groups. `None` when nothing is held under `user_id`.
    pub async fn user_for_export(
        &self,
        project: ProjectId,
        user_id: &str,
    ) -> Result<(Option<UserView>, UserLinks), StoreError> {
        let mut conn = self.conn().await?;
        // GDPR access covers everything held, soft-deleted rows included.
        let profile: Option<Row> = with_timeout(conn.exec_first(
            format!("SELECT {USER_VIEW_COLUMNS} FROM users WHERE project_id = ? AND user_id = ? /* with deleted */"),
            (project.0, user_id),
        ))
        .await?;
        let aliases: Vec<String> =
            with_timeout(conn.exec(
                "SELECT alias FROM aliases WHERE project_id = ? AND user_id = ? ORDER BY id",
                (project.0, user_id),
            ))
            .await?;
        let mut members: Vec<&str> = vec![user_id];
        members.extend(aliases.iter().map(String::as_str));
        let list = vec!["?"; members.len()].join(",");
        let mut params: Vec<Value> = vec![Value::from(project.0)];
        params.extend(members.iter().map(|member| Value::from(*member)));
        let groups: Vec<String> = with_timeout(conn.exec(
            format!("SELECT DISTINCT group_id FROM group_members WHERE project_id = ? AND member_id IN ({list})"),
            params,
        ))
        .await?;
        Ok((profile.as_ref().map(user_view).transpose()?, UserLinks { aliases, groups }))
    }

    /// How many events carry `user_id` or an id linked to it (for an export's progress).
    pub async fn count_events_of_user(&self, project: ProjectId, user_id: &str) -> Result<u64, StoreError> {
        let (_, links) = self.user_for_export(project, user_id).await?;
        let subjects: Vec<String> = std::iter::once(user_id.to_string()).chain(links.aliases).collect();
        let (filter, mut params) = carrying_subjects(&subjects);
        params.insert(0, Value::from(project.0));
        let mut conn = self.conn().await?;
        let count: Option<u64> = with_timeout(conn.exec_first(
            format!("SELECT COUNT(*) FROM events /* with deleted */ WHERE project_id = ? AND {filter}"),
            params,
        ))
        .await?;
        Ok(count.unwrap_or(0))
    }

    /// The next page of events carrying any of `subjects` (deleted or not), in id order
    /// after `after`: an export streams these page by page.
    pub async fn events_of_subjects(
        &self,
        project: ProjectId,
        subjects: &[String],
        after: u64,
        limit: usize,
    ) -> Result<(Vec<EventView>, Option<u64>), StoreError> {
        let (filter, subject_params) = carrying_subjects(subjects);
        let mut params: Vec<Value> = vec![Value::from(project.0), Value::from(after)];
        params.extend(subject_params);
        params.push(Value::from(limit as u64));
        let mut conn = self.conn().await?;
        let rows: Vec<Row> = with_timeout(conn.exec(
            format!(
                "SELECT {EVENT_VIEW_COLUMNS} FROM events /* with deleted */
                 WHERE project_id = ? AND id > ? AND {filter} ORDER BY id LIMIT ?"
            ),
            params,
        ))
        .await?;
        let last = rows.last().and_then(|row| column::<u64>(row, 15));
        Ok((rows.iter().map(event_view).collect::<Result<_, _>>()?, last))
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

    /// Deletes up to `limit` events past their project's retention at `now`, project by
    /// project (the resume point is the last project finished).
    pub async fn delete_expired_events(
        tx: &mut JobTx<'_>,
        now: DateTime<Utc>,
        resume_after: Option<&str>,
        limit: u64,
    ) -> Result<ChunkResult, StoreError> {
        let tx = &mut tx.0;
        let after: u64 = resume_after.and_then(|text| text.parse().ok()).unwrap_or(0);
        let next: Option<(u64, u32)> = with_timeout(tx.exec_first(
            "SELECT id, retention_days FROM projects /* with deleted */
             WHERE retention_days IS NOT NULL AND id > ? ORDER BY id LIMIT 1",
            (after,),
        ))
        .await?;
        let Some((project, days)) = next else {
            return Ok(ChunkResult { rows: 0, resume_after: None, done: true });
        };
        let cutoff = now - chrono::Duration::days(i64::from(days));
        with_timeout(tx.exec_drop(
            "DELETE FROM events WHERE project_id = ? AND timestamp < ? LIMIT ?",
            (project, to_db_time(cutoff), limit),
        ))
        .await?;
        let rows = tx.affected_rows();
        // A full chunk may leave more of this project: come back to it.
        let resume = if rows == limit { after } else { project };
        Ok(ChunkResult { rows, resume_after: Some(resume.to_string()), done: false })
    }

    /// Deletes up to `limit` rows of `table` soft-deleted before `cutoff`.
    pub async fn purge_deleted(
        tx: &mut JobTx<'_>,
        table: SoftTable,
        cutoff: DateTime<Utc>,
        limit: u64,
    ) -> Result<u64, StoreError> {
        let tx = &mut tx.0;
        let sql = format!("DELETE FROM {} WHERE deleted_at < ? LIMIT ?", table.name());
        with_timeout(tx.exec_drop(sql, (to_db_time(cutoff), limit))).await?;
        Ok(tx.affected_rows())
    }

    /// Purges the first project soft-deleted before `cutoff`: up to `limit` of its dependent
    /// rows per chunk, table by table, then the project itself. Done when none is left.
    pub async fn purge_deleted_project(
        tx: &mut JobTx<'_>,
        cutoff: DateTime<Utc>,
        limit: u64,
    ) -> Result<ChunkResult, StoreError> {
        let tx = &mut tx.0;
        let project: Option<u64> = with_timeout(tx.exec_first(
            "SELECT id FROM projects WHERE deleted_at < ? ORDER BY id LIMIT 1 FOR UPDATE",
            (to_db_time(cutoff),),
        ))
        .await?;
        let Some(project) = project else {
            return Ok(ChunkResult { rows: 0, resume_after: None, done: true });
        };
        for (table, condition) in PROJECT_DEPENDENTS {
            let sql = format!("DELETE FROM {table} WHERE project_id = ? {condition} LIMIT ?");
            with_timeout(tx.exec_drop(sql, (project, limit))).await?;
            let rows = tx.affected_rows();
            if rows > 0 {
                return Ok(ChunkResult { rows, resume_after: None, done: false });
            }
        }
        with_timeout(tx.exec_drop("DELETE FROM projects WHERE id = ? LIMIT 1", (project,))).await?;
        Ok(ChunkResult { rows: tx.affected_rows(), resume_after: None, done: false })
    }

    /// Deletes up to `limit` rows of a log-like table older than `cutoff`.
    pub async fn prune(
        tx: &mut JobTx<'_>,
        table: Prunable,
        cutoff: DateTime<Utc>,
        limit: u64,
    ) -> Result<u64, StoreError> {
        let tx = &mut tx.0;
        if table == Prunable::JobRuns {
            // Steps first, then runs left without steps; a running run is never pruned.
            with_timeout(tx.exec_drop(
                "DELETE FROM job_steps WHERE run_id IN
                   (SELECT id FROM job_runs WHERE created_at < ? AND state <> 'running') LIMIT ?",
                (to_db_time(cutoff), limit),
            ))
            .await?;
            let steps = tx.affected_rows();
            with_timeout(tx.exec_drop(
                "DELETE FROM job_runs WHERE created_at < ? AND state <> 'running'
                   AND NOT EXISTS (SELECT 1 FROM job_steps s WHERE s.run_id = job_runs.id) LIMIT ?",
                (to_db_time(cutoff), limit),
            ))
            .await?;
            return Ok(steps + tx.affected_rows());
        }
        let (table, column) = table.table_and_time();
        let sql = format!("DELETE FROM {table} WHERE {column} < ? LIMIT ?");
        with_timeout(tx.exec_drop(sql, (to_db_time(cutoff), limit))).await?;
        Ok(tx.affected_rows())
    }
}

/// The condition "the event carries one of `subjects`" (as user, anonymous or previous id),
/// and its parameters.
fn carrying_subjects(subjects: &[String]) -> (String, Vec<Value>) {
    let list = vec!["?"; subjects.len().max(1)].join(",");
    let filter = format!("(user_id IN ({list}) OR anonymous_id IN ({list}) OR previous_id IN ({list}))");
    let params = (0..3).flat_map(|_| subjects.iter().map(|subject| Value::from(subject.as_str()))).collect();
    (filter, params)
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

/// Tables whose rows belong to a project, purged with it. Completed erasures are audit
/// records (no personal data): they stay for their own retention.
const PROJECT_DEPENDENTS: &[(&str, &str)] = &[
    ("events", ""),
    ("users", ""),
    ("aliases", ""),
    ("group_profiles", ""),
    ("group_members", ""),
    ("api_keys", ""),
    ("rejected_events", ""),
    ("suppressed_subjects", ""),
    ("erasures", "AND state = 'pending'"),
];

/// Tables with soft delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftTable {
    Events,
    Users,
    Keys,
}

impl SoftTable {
    fn name(self) -> &'static str {
        match self {
            SoftTable::Events => "events",
            SoftTable::Users => "users",
            SoftTable::Keys => "api_keys",
        }
    }
}

/// Tables pruned by age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prunable {
    RejectedEvents,
    JobRuns,
    /// Completed erasure requests: the audit records.
    ErasureAudit,
    Suppressions,
}

impl Prunable {
    fn table_and_time(self) -> (&'static str, &'static str) {
        match self {
            Prunable::RejectedEvents => ("rejected_events", "created_at"),
            Prunable::JobRuns => ("job_runs", "created_at"),
            Prunable::ErasureAudit => ("erasures", "completed_at"),
            Prunable::Suppressions => ("suppressed_subjects", "created_at"),
        }
    }
}
