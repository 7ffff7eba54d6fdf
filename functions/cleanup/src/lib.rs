//! evtrack cleanup: the scheduled data lifecycle, once per schedule slot.
//!
//! Steps, each idempotent, chunked (no statement deletes more than `chunk_rows` rows) and
//! recorded in the job ledger; ages are measured from the slot's time:
//! 1. GDPR erasures: ids linked to an erased user after its erasure joined it
//!    (`store::late_links`); every row holding an erased user's id or an id linked to it,
//!    then the request becomes an audit record without the ids;
//! 2. retention: events older than their project's `retention_days`;
//! 3. purge of rows soft-deleted longer than the grace period (events, users, keys, then
//!    projects with everything that belongs to them);
//! 4. the dedupe hour of rows a release before it stored (`store::dedupe`), duplicates
//!    deleted;
//! 5. pruning of rejected events, job runs, erasure audit records, suppressions and the
//!    audit trail past their own retention.
//!
//! The same function runs the rollups job (`rollups`, every minute): every hour marked dirty
//! by the slot recomputed from the raw rows, one hour a chunk (`store::rollups`); then the
//! counts of demoted properties deleted.

use chrono::{DateTime, Utc};
use evtrack::Config;
use evtrack::config::{CleanupPolicy, SUPPRESSION_DAYS};
use evtrack::jobs::{InProcess, Job, JobError, JobRunners, JobTx, Run, StepKind};
use evtrack::store::{ChunkResult, Prunable, SoftTable, Store, StoreError};
use std::time::{Duration, Instant};

pub const JOB: &str = "cleanup";
pub const ROLLUPS_JOB: &str = "rollups";
/// PlanetScale refuses statements touching more than 100k rows.
const MAX_CHUNK_ROWS: u64 = 100_000;

pub struct Cleanup {
    policy: CleanupPolicy,
}

/// The cleanup job on `store`, as its Lambda, the local stack and the tests run it.
pub fn in_process(store: Store, config: &Config) -> InProcess<Cleanup> {
    InProcess::new(store, Cleanup::new(config.cleanup.clone()), config.job_lease)
}

/// Both jobs of the cleanup function (the rollups run as its database user too).
pub fn runners(store: Store, config: &Config) -> JobRunners {
    JobRunners::default()
        .with(JOB, in_process(store.clone(), config))
        .with(ROLLUPS_JOB, InProcess::new(store, Rollups, config.job_lease))
}

impl Cleanup {
    pub fn new(policy: CleanupPolicy) -> Self {
        let chunk_rows = policy.chunk_rows.clamp(1, MAX_CHUNK_ROWS);
        Self { policy: CleanupPolicy { chunk_rows, ..policy } }
    }
}

impl Job for Cleanup {
    const NAME: &'static str = JOB;

    async fn steps(&self, run: &Run) -> Result<(), JobError> {
        run.steps::<CleanupStep>(&Context { policy: self.policy.clone(), slot: run.slot() }).await
    }
}

/// What every step of a run measures from.
struct Context {
    policy: CleanupPolicy,
    slot: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy)]
enum CleanupStep {
    LateLinks,
    Erasures,
    Retention,
    Purge(SoftTable),
    PurgeProjects,
    DedupeHours,
    Prune(Prunable),
}

impl StepKind for CleanupStep {
    type Context = Context;
    const ALL: &'static [CleanupStep] = &[
        CleanupStep::LateLinks,
        CleanupStep::Erasures,
        CleanupStep::Retention,
        CleanupStep::Purge(SoftTable::Events),
        CleanupStep::Purge(SoftTable::Users),
        CleanupStep::Purge(SoftTable::Keys),
        CleanupStep::PurgeProjects,
        CleanupStep::DedupeHours,
        CleanupStep::Prune(Prunable::RejectedEvents),
        CleanupStep::Prune(Prunable::JobRuns),
        CleanupStep::Prune(Prunable::ErasureAudit),
        CleanupStep::Prune(Prunable::Suppressions),
        CleanupStep::Prune(Prunable::AuditLog),
    ];

    fn name(self) -> &'static str {
        match self {
            CleanupStep::LateLinks => "late_links",
            CleanupStep::Erasures => "erasures",
            CleanupStep::Retention => "retention",
            CleanupStep::Purge(SoftTable::Events) => "purge_deleted_events",
            CleanupStep::Purge(SoftTable::Users) => "purge_deleted_users",
            CleanupStep::Purge(SoftTable::Keys) => "purge_deleted_keys",
            CleanupStep::PurgeProjects => "purge_deleted_projects",
            CleanupStep::DedupeHours => "dedupe_hours",
            CleanupStep::Prune(Prunable::RejectedEvents) => "prune_rejected_events",
            CleanupStep::Prune(Prunable::JobRuns) => "prune_job_runs",
            CleanupStep::Prune(Prunable::ErasureAudit) => "prune_erasure_audit",
            CleanupStep::Prune(Prunable::Suppressions) => "prune_suppressions",
            CleanupStep::Prune(Prunable::AuditLog) => "prune_audit_log",
        }
    }

    async fn chunk(
        self,
        context: &Context,
        tx: &mut JobTx<'_>,
        resume_after: Option<&str>,
    ) -> Result<ChunkResult, StoreError> {
        let Context { policy, slot } = context;
        let limit = policy.chunk_rows;
        let purge_before = *slot - policy.soft_delete_grace;
        Ok(match self {
            CleanupStep::LateLinks => Store::adopt_late_links(tx, resume_after).await?,
            CleanupStep::Erasures => Store::erase_chunk(tx, resume_after, limit).await?,
            CleanupStep::Retention => Store::delete_expired_events(tx, *slot, resume_after, limit).await?,
            CleanupStep::Purge(table) => {
                ChunkResult::limited(Store::purge_deleted(tx, table, purge_before, limit).await?, limit)
            }
            CleanupStep::PurgeProjects => Store::purge_deleted_project(tx, purge_before, limit).await?,
            CleanupStep::DedupeHours => Store::repair_dedupe_hours(tx, resume_after, limit).await?,
            CleanupStep::Prune(table) => {
                let kept_for = match table {
                    Prunable::RejectedEvents => policy.rejected_events_retention,
                    Prunable::JobRuns => policy.job_runs_retention,
                    Prunable::ErasureAudit => policy.erasure_audit_retention,
                    Prunable::Suppressions => chrono::Duration::days(SUPPRESSION_DAYS),
                    Prunable::AuditLog => policy.audit_log_retention,
                };
                ChunkResult::limited(Store::prune(tx, table, *slot - kept_for, limit).await?, limit)
            }
        })
    }
}

/// Keeps the rollups exact and fresh: recomputes every hour marked dirty before the slot.
pub struct Rollups;

/// How long one run of the rollups job keeps taking chunks: within the minute between slots,
/// so that runs do not pile up on a backlog (each next run goes on with it).
pub const ROLLUPS_RUN_BUDGET: Duration = Duration::from_secs(45);
/// Of that, the most the deletion of demoted properties' counts takes, first: a backlog of
/// dirty hours cannot hold it back for good, nor can it hold the hours back for long.
const DEMOTED_PROPERTIES_BUDGET: Duration = Duration::from_secs(5);

impl Job for Rollups {
    const NAME: &'static str = ROLLUPS_JOB;

    async fn steps(&self, run: &Run) -> Result<(), JobError> {
        run.steps::<RollupStep>(&(run.slot(), Instant::now())).await
    }
}

/// The rollups job's steps: the counts of demoted properties deleted (for a few seconds),
/// then dirty hours (and backfills) recounted.
#[derive(Debug, Clone, Copy)]
enum RollupStep {
    DemotedProperties,
    Hours,
}

/// Rows of a demoted property's counts one chunk deletes.
const DEMOTED_ROWS_PER_CHUNK: u64 = 10_000;

impl StepKind for RollupStep {
    /// The slot, and when the run started (each step stops taking chunks by its budget).
    type Context = (DateTime<Utc>, Instant);
    const ALL: &'static [RollupStep] = &[RollupStep::DemotedProperties, RollupStep::Hours];

    fn name(self) -> &'static str {
        match self {
            RollupStep::Hours => "rollups",
            RollupStep::DemotedProperties => "demoted_properties",
        }
    }

    async fn chunk(
        self,
        (slot, started): &(DateTime<Utc>, Instant),
        tx: &mut JobTx<'_>,
        _resume_after: Option<&str>,
    ) -> Result<ChunkResult, StoreError> {
        let budget = match self {
            RollupStep::DemotedProperties => DEMOTED_PROPERTIES_BUDGET,
            RollupStep::Hours => ROLLUPS_RUN_BUDGET,
        };
        if started.elapsed() >= budget {
            return Ok(ChunkResult { rows: 0, resume_after: None, done: true });
        }
        let rows = match self {
            RollupStep::Hours => Store::refresh_dirty_hour(tx, *slot).await?,
            RollupStep::DemotedProperties => Store::purge_demoted_property(tx, DEMOTED_ROWS_PER_CHUNK).await?,
        };
        Ok(match rows {
            Some(rows) => ChunkResult { rows, resume_after: None, done: false },
            None => ChunkResult { rows: 0, resume_after: None, done: true },
        })
    }
}
