//! The job ledger's rows: `job_runs` (one per job and slot: lease, fence, state) and
//! `job_steps` (per-step progress), and the transaction job steps run in.

use super::{Store, StoreError, column, from_db_time, required, required_time, time_column, to_db_time, with_timeout};
use crate::ids::new_public_id;
use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, IsolationLevel, Row, Transaction, TxOpts};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The transaction a job step's chunk runs in: it holds the run's row under the fence, and
/// the store's step operations (`Store::erase_chunk`, `Store::mark_ended_keys`, …) take it.
pub struct JobTx<'c>(pub(super) Transaction<'c>);

impl<'c> JobTx<'c> {
    /// The bare transaction, for steps written outside the store (the tests' own jobs).
    #[doc(hidden)]
    pub fn raw(&mut self) -> &mut Transaction<'c> {
        &mut self.0
    }
}

/// One step of a job: a unit of work done in chunks, each chunk in the transaction that
/// checks the run's fence. A chunk must be idempotent (a crash between its commit and the
/// next chunk repeats nothing, but a chunk whose transaction failed runs again).
pub trait Step: Sync {
    fn name(&self) -> &'static str;
    fn chunk<'a>(
        &'a self,
        tx: &'a mut JobTx<'_>,
        resume_after: Option<&'a str>,
    ) -> impl Future<Output = Result<ChunkResult, StoreError>> + Send + 'a;
}

/// A run as the api and the command line show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    pub id: Uuid,
    pub job: String,
    pub slot: DateTime<Utc>,
    /// `running`, `succeeded` or `failed`.
    pub state: String,
    pub attempts: u32,
    pub triggered_by: String,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub steps: Vec<StepInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepInfo {
    pub name: String,
    pub done: bool,
    pub rows: u64,
    pub chunks: u32,
    pub duration_ms: u64,
    pub error: Option<String>,
}

/// Where a step stands in a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepProgress {
    pub done: bool,
    pub resume_after: Option<String>,
}

/// What one committed chunk of a step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkResult {
    pub rows: u64,
    /// Where the next chunk starts; `None` when the step has nothing to resume.
    pub resume_after: Option<String>,
    /// The step has no more work.
    pub done: bool,
}

impl ChunkResult {
    /// A chunk of one delete or update limited to `limit` rows: the step is done once a
    /// chunk comes back short.
    pub fn limited(rows: u64, limit: u64) -> Self {
        Self { rows, resume_after: None, done: rows < limit }
    }

    /// A step done in one unit.
    pub fn whole(rows: u64) -> Self {
        Self { rows, resume_after: None, done: true }
    }
}

/// The outcome of trying to take a slot.
#[derive(Debug)]
pub enum ClaimResult {
    /// This caller holds the lease under `fence`; `db_now` is the database's clock then.
    Acquired { run_id: u64, run_uid: Uuid, fence: u64, db_now: DateTime<Utc> },
    /// The slot lies ahead of the database's clock (beyond `MAX_SLOT_SKEW`): no run is made.
    Future { db_now: DateTime<Utc> },
    /// The slot's run is finished, or another invocation holds an unexpired lease.
    Taken { run_uid: Uuid },
}

/// How far ahead of the database's clock a slot may lie (clocks of callers drift a little).
pub const MAX_SLOT_SKEW: chrono::Duration = chrono::Duration::seconds(60);

/// The slot's run no longer belongs to this caller (its lease was taken over).
#[derive(Debug, thiserror::Error)]
pub enum FencedError {
    #[error("the lease on this run was taken over")]
    LeaseLost,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The error of a run whose invocation stopped unfinished, marked by a later slot's run.
pub const ABANDONED: &str = "abandoned: left unfinished (its invocation stopped, or failed with no retry left) and not \
    taken up within 15 minutes; a later slot's run did its work.";

const RUN_COLUMNS: &str = "id, uid, job, slot, state, attempts, triggered_by, error, created_at, finished_at";

impl Store {
    /// Creates the run of (job, slot) if it does not exist, then takes its lease if the run is
    /// unfinished and nobody holds an unexpired lease. The lease is timed by the database clock.
    pub async fn claim_run(
        &self,
        job: &str,
        slot: DateTime<Utc>,
        triggered_by: &str,
        lease: Duration,
    ) -> Result<ClaimResult, StoreError> {
        // The column keeps milliseconds: compare with what it stores.
        let slot = slot.trunc_subsecs(3);
        let mut conn = self.conn().await?;
        // A slot ahead of the clock would measure every age from the future: refused.
        let db_now: Option<NaiveDateTime> = with_timeout(conn.query_first("SELECT NOW(3)")).await?;
        let db_now = db_now.map(from_db_time).ok_or_else(|| StoreError::Unavailable("no clock".into()))?;
        if slot > db_now + MAX_SLOT_SKEW {
            return Ok(ClaimResult::Future { db_now });
        }
        with_timeout(conn.exec_drop(
            "INSERT IGNORE INTO job_runs (uid, job, slot, lease_until, triggered_by)
             VALUES (?, ?, ?, '1970-01-01 00:00:01', ?)",
            (new_public_id(), job, to_db_time(slot), triggered_by),
        ))
        .await?;
        let mut tx = with_timeout(conn.start_transaction(TxOpts::default())).await?;
        with_timeout(tx.exec_drop(
            "UPDATE job_runs SET fence = fence + 1, attempts = attempts + 1, error = NULL,
                    lease_until = NOW(6) + INTERVAL ? MICROSECOND
             WHERE job = ? AND slot = ? AND state = 'running' AND lease_until < NOW(6)",
            (micros(lease), job, to_db_time(slot)),
        ))
        .await?;
        let acquired = tx.affected_rows() == 1;
        let row: Option<(u64, Uuid, u64)> = with_timeout(
            tx.exec_first("SELECT id, uid, fence FROM job_runs WHERE job = ? AND slot = ?", (job, to_db_time(slot))),
        )
        .await?;
        with_timeout(tx.commit()).await?;
        let (run_id, run_uid, fence) = row.ok_or_else(|| StoreError::Unavailable("job run vanished".into()))?;
        if acquired && let Err(err) = mark_abandoned(&mut conn, job, slot).await {
            // Housekeeping: the run this caller holds goes on all the same.
            tracing::warn!(job, error = %err, "could not mark earlier unfinished runs");
        }
        Ok(if acquired {
            ClaimResult::Acquired { run_id, run_uid, fence, db_now }
        } else {
            ClaimResult::Taken { run_uid }
        })
    }

    /// Runs one chunk of `step` in a transaction that commits, with the chunk's progress,
    /// only if the run is still `running` under `fence`. The run's row stays locked meanwhile,
    /// so a takeover waits for the chunk to end and a chunk never commits after a takeover.
    /// Renews the lease on the way out.
    pub async fn fenced_chunk(
        &self,
        run_id: u64,
        fence: u64,
        // Measured when the chunk renews it (`jobs::lease_until`).
        lease: impl Fn() -> Duration + Send,
        step: &impl Step,
        resume_after: Option<&str>,
    ) -> Result<ChunkResult, FencedError> {
        let started = Instant::now();
        let mut conn = self.conn().await?;
        let mut tx = JobTx(fenced_transaction(&mut conn, run_id, fence).await?);
        let result = step.chunk(&mut tx, resume_after).await?;
        let mut tx = tx.0;
        with_timeout(tx.exec_drop(
            "INSERT INTO job_steps (run_id, step, done, rows_done, chunks, duration_ms, resume_after)
             VALUES (?, ?, ?, ?, 1, ?, ?)
             ON DUPLICATE KEY UPDATE done = VALUES(done), rows_done = rows_done + VALUES(rows_done),
                chunks = chunks + 1, duration_ms = duration_ms + VALUES(duration_ms),
                resume_after = VALUES(resume_after), error = NULL, updated_at = CURRENT_TIMESTAMP(3)",
            (
                run_id,
                step.name(),
                result.done,
                result.rows,
                started.elapsed().as_millis() as u64,
                result.resume_after.as_deref(),
            ),
        ))
        .await?;
        with_timeout(tx.exec_drop(
            "UPDATE job_runs SET lease_until = GREATEST(lease_until, NOW(6) + INTERVAL ? MICROSECOND) WHERE id = ?",
            (micros(lease()), run_id),
        ))
        .await?;
        with_timeout(tx.commit()).await?;
        Ok(result)
    }

    pub async fn step_progress(&self, run_id: u64, step: &str) -> Result<StepProgress, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<(bool, Option<String>)> = with_timeout(
            conn.exec_first("SELECT done, resume_after FROM job_steps WHERE run_id = ? AND step = ?", (run_id, step)),
        )
        .await?;
        Ok(row.map(|(done, resume_after)| StepProgress { done, resume_after }).unwrap_or_default())
    }

    /// Marks the run succeeded, if `fence` still holds.
    pub async fn finish_run(&self, run_id: u64, fence: u64) -> Result<(), FencedError> {
        let mut conn = self.conn().await?;
        let mut tx = fenced_transaction(&mut conn, run_id, fence).await?;
        with_timeout(tx.exec_drop(
            "UPDATE job_runs SET state = 'succeeded', finished_at = NOW(3), error = NULL WHERE id = ?",
            (run_id,),
        ))
        .await?;
        with_timeout(tx.commit()).await?;
        Ok(())
    }

    /// Records a failure and gives the lease up, so the next invocation may take over at once;
    /// after `max_attempts` the run is marked failed for good.
    pub async fn fail_run(
        &self,
        run_id: u64,
        fence: u64,
        step: Option<&str>,
        error: &str,
        max_attempts: u32,
    ) -> Result<(), StoreError> {
        let error: String = error.chars().take(2000).collect();
        let mut conn = self.conn().await?;
        with_timeout(conn.exec_drop(
            "UPDATE job_runs SET error = ?, lease_until = NOW(6),
                    state = IF(attempts >= ?, 'failed', state),
                    finished_at = IF(attempts >= ?, NOW(3), finished_at)
             WHERE id = ? AND fence = ? AND state = 'running'",
            (&error, max_attempts, max_attempts, run_id, fence),
        ))
        .await?;
        if let Some(step) = step {
            with_timeout(conn.exec_drop(
                "INSERT INTO job_steps (run_id, step, error) VALUES (?, ?, ?)
                 ON DUPLICATE KEY UPDATE error = VALUES(error), updated_at = CURRENT_TIMESTAMP(3)",
                (run_id, step, &error),
            ))
            .await?;
        }
        Ok(())
    }

    pub async fn run_info(&self, run_uid: Uuid) -> Result<Option<RunInfo>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<Row> =
            with_timeout(conn.exec_first(format!("SELECT {RUN_COLUMNS} FROM job_runs WHERE uid = ?"), (run_uid,)))
                .await?;
        match row {
            Some(row) => Ok(Some(with_steps(&mut conn, row).await?)),
            None => Ok(None),
        }
    }

    /// A job's runs, newest slot first, before `before` (a run id) if given.
    pub async fn list_runs(&self, job: &str, before: Option<Uuid>, limit: usize) -> Result<Vec<RunInfo>, StoreError> {
        let mut conn = self.conn().await?;
        let rows: Vec<Row> = with_timeout(conn.exec(
            format!(
                "SELECT {RUN_COLUMNS} FROM job_runs
                 WHERE job = ? AND (? IS NULL OR (slot, uid) < (SELECT slot, uid FROM job_runs WHERE uid = ?))
                 ORDER BY slot DESC, uid DESC LIMIT ?"
            ),
            (job, before, before, limit as u64),
        ))
        .await?;
        let mut runs = Vec::with_capacity(rows.len());
        for row in rows {
            runs.push(with_steps(&mut conn, row).await?);
        }
        Ok(runs)
    }
}

/// How long after its lease ran out a run is left for a retry to take up (Lambda retries an
/// asynchronous invocation twice, about one and three minutes after it failed).
const RETRY_HORIZON_MINUTES: u32 = 15;

/// Marks failed the runs of `job`'s earlier slots that an invocation left unfinished (stopped
/// by a Lambda's timeout or a crash, or failed with its retries spent) and that no retry took
/// up: the run of `slot` does their work (steps work from the data's state, and measure from a
/// later slot), and they end as failed rather than running for good. Found by a read that
/// takes no lock, then updated by id with the conditions checked again: a live run's row,
/// locked by its chunk, is never waited for through the index.
async fn mark_abandoned(conn: &mut Conn, job: &str, slot: DateTime<Utc>) -> Result<(), StoreError> {
    let abandoned = format!("state = 'running' AND lease_until < NOW(6) - INTERVAL {RETRY_HORIZON_MINUTES} MINUTE");
    let ids: Vec<u64> = with_timeout(conn.exec(
        format!("SELECT id FROM job_runs WHERE job = ? AND {abandoned} AND slot < ? LIMIT 1000"),
        (job, to_db_time(slot)),
    ))
    .await?;
    if ids.is_empty() {
        return Ok(());
    }
    let mut params: Vec<mysql_async::Value> = vec![ABANDONED.into()];
    params.extend(ids.iter().map(|&id| mysql_async::Value::from(id)));
    with_timeout(conn.exec_drop(
        format!(
            "UPDATE job_runs SET state = 'failed', finished_at = NOW(3),
                    error = LEFT(CONCAT(?, IFNULL(CONCAT(' Its last error: ', error), '')), 2000)
             WHERE id IN ({}) AND {abandoned}",
            super::placeholders(ids.len())
        ),
        params,
    ))
    .await?;
    tracing::warn!(job, runs = conn.affected_rows(), "runs of earlier slots left unfinished; marked failed");
    Ok(())
}

async fn with_steps(conn: &mut Conn, row: Row) -> Result<RunInfo, StoreError> {
    let run_id: u64 = required(&row, 0)?;
    let steps: Vec<(String, bool, u64, u32, u64, Option<String>)> = with_timeout(conn.exec(
        "SELECT step, done, rows_done, chunks, duration_ms, error FROM job_steps WHERE run_id = ? ORDER BY id",
        (run_id,),
    ))
    .await?;
    Ok(RunInfo {
        id: required(&row, 1)?,
        job: required(&row, 2)?,
        slot: required_time(&row, 3)?,
        state: required(&row, 4)?,
        attempts: required(&row, 5)?,
        triggered_by: required(&row, 6)?,
        error: column(&row, 7),
        created_at: required_time(&row, 8)?,
        finished_at: time_column(&row, 9),
        steps: steps
            .into_iter()
            .map(|(name, done, rows, chunks, duration_ms, error)| StepInfo {
                name,
                done,
                rows,
                chunks,
                duration_ms,
                error,
            })
            .collect(),
    })
}

/// A transaction holding the run's row lock, begun only if the run is `running` under `fence`.
async fn fenced_transaction(conn: &mut Conn, run_id: u64, fence: u64) -> Result<Transaction<'_>, FencedError> {
    let options = TxOpts::default().with_isolation_level(IsolationLevel::ReadCommitted).clone();
    let mut tx = with_timeout(conn.start_transaction(options)).await?;
    let holder: Option<(u64, String)> =
        with_timeout(tx.exec_first("SELECT fence, state FROM job_runs WHERE id = ? FOR UPDATE", (run_id,))).await?;
    if holder != Some((fence, "running".to_string())) {
        return Err(FencedError::LeaseLost);
    }
    Ok(tx)
}

fn micros(duration: Duration) -> u64 {
    duration.as_micros().min(u128::from(u64::MAX)) as u64
}
