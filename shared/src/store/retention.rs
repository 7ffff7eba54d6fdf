//! What cleanup deletes by age: events past their project's retention, rows soft-deleted
//! longer than the grace period (and whole projects with what belongs to them), and logs and
//! audit records past their own retention.
//!
//! Every delete names a `LIMIT`: no statement removes more than the chunk it is given
//! (PlanetScale: 100k rows a statement, 20 s a transaction).

use super::soft_delete::SoftTable;
use super::{ChunkResult, JobTx, Store, StoreError, to_db_time, with_timeout};
use chrono::{DateTime, Utc};
use mysql_async::prelude::Queryable;

impl Store {
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
        // The rollups of the hours it deletes from: every clean hour with events has rollup
        // rows, and dirty ones are recomputed anyway.
        with_timeout(tx.exec_drop(
            "INSERT IGNORE INTO rollup_dirty_hours (project_id, hour)
             SELECT project_id, hour FROM rollup_event_hours WHERE project_id = ? AND hour <= ?
             GROUP BY project_id, hour ORDER BY hour",
            (project, super::rollups::hour_of(cutoff)),
        ))
        .await?;
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
        for sql in PROJECT_DEPENDENTS {
            with_timeout(tx.exec_drop(*sql, (project, limit))).await?;
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

/// Deletes of the rows that belong to a project (`project_id = ?`, `LIMIT ?`), purged with
/// it. Completed erasures are audit records (no personal data): they stay for their own
/// retention; pending ones go with the ids they hold.
const PROJECT_DEPENDENTS: &[&str] = &[
    "DELETE FROM events WHERE project_id = ? LIMIT ?",
    "DELETE FROM users WHERE project_id = ? LIMIT ?",
    "DELETE FROM aliases WHERE project_id = ? LIMIT ?",
    "DELETE FROM group_profiles WHERE project_id = ? LIMIT ?",
    "DELETE FROM group_members WHERE project_id = ? LIMIT ?",
    "DELETE FROM api_keys WHERE project_id = ? LIMIT ?",
    "DELETE FROM rejected_events WHERE project_id = ? LIMIT ?",
    "DELETE FROM suppressed_subjects WHERE project_id = ? LIMIT ?",
    "DELETE FROM erasure_late_links WHERE project_id = ? LIMIT ?",
    "DELETE FROM erasure_subjects
     WHERE erasure_id IN (SELECT id FROM erasures WHERE project_id = ? AND state = 'pending') LIMIT ?",
    "DELETE FROM erasures WHERE project_id = ? AND state = 'pending' LIMIT ?",
    "DELETE FROM rollup_event_hours WHERE project_id = ? LIMIT ?",
    "DELETE FROM rollup_user_hours WHERE project_id = ? LIMIT ?",
    "DELETE FROM rollup_journey_hours WHERE project_id = ? LIMIT ?",
    "DELETE FROM rollup_activity_hours WHERE project_id = ? LIMIT ?",
    "DELETE FROM rollup_property_hours WHERE project_id = ? LIMIT ?",
    "DELETE FROM rollup_property_backfill WHERE project_id = ? LIMIT ?",
    "DELETE FROM rollup_property_purge WHERE project_id = ? LIMIT ?",
    "DELETE FROM promoted_properties WHERE project_id = ? LIMIT ?",
    "DELETE FROM rollup_dirty_hours WHERE project_id = ? LIMIT ?",
];

/// Tables pruned by age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prunable {
    RejectedEvents,
    JobRuns,
    /// Completed erasure requests: the audit records.
    ErasureAudit,
    Suppressions,
    /// The trail of admin actions.
    AuditLog,
}

impl Prunable {
    fn table_and_time(self) -> (&'static str, &'static str) {
        match self {
            Prunable::RejectedEvents => ("rejected_events", "created_at"),
            Prunable::JobRuns => ("job_runs", "created_at"),
            Prunable::ErasureAudit => ("erasures", "completed_at"),
            Prunable::Suppressions => ("suppressed_subjects", "created_at"),
            Prunable::AuditLog => ("audit_log", "created_at"),
        }
    }
}
