//! The job ledger ("API-based cron"): scheduled work is triggered from outside (EventBridge
//! Scheduler, `POST /v1/jobs/{name}/runs`, `evtrack job run`) and runs once per (job, slot)
//! however many invocations arrive, concurrently or later.
//!
//! A run is a row under a unique (job, slot) key. An invocation owns it while it holds the
//! lease (timed by the database clock); taking the lease increments a fencing counter, and
//! every unit of work commits in a transaction that first checks the fence, so a run whose
//! owner stalled past its lease is taken over and the stale owner can no longer commit.
//! Steps record their progress (done, resume point, rows, time), so a taken-over run resumes
//! where the last committed chunk left it and never repeats committed work.
//! Redis plays no part: the database is the guarantee.

mod runners;

pub use crate::store::{JobTx, Step};
pub use runners::{InProcess, JobRunner, JobRunners, LambdaFunction};

use crate::store::{ChunkResult, ClaimResult, FencedError, MAX_SLOT_SKEW, RunInfo, Store, StoreError};
use crate::telemetry::{MetricLine, Unit};
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// After this many failed attempts a run is marked failed and its slot is not retried.
pub const MAX_ATTEMPTS: u32 = 5;

/// What EventBridge Scheduler sends (the schedule's `Input`): the slot's scheduled time.
/// Scheduler does not send the classic "Scheduled Event" envelope. The api, invoking a job
/// function, also says who triggered the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduledInvocation {
    pub scheduled_time: DateTime<Utc>,
    /// Which of the function's jobs (the cleanup function runs two); its first when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggered_by: Option<String>,
}

impl ScheduledInvocation {
    fn trigger(&self) -> Trigger {
        let by = match self.triggered_by.as_deref() {
            Some("api") => "api",
            Some("cli") => "cli",
            _ => "schedule",
        };
        Trigger::new(self.scheduled_time, by)
    }
}

/// Who asked for a slot, and which slot.
#[derive(Debug, Clone, Copy)]
pub struct Trigger {
    pub slot: DateTime<Utc>,
    /// `schedule`, `api`, `cli` or `local`.
    pub by: &'static str,
    /// When the invocation will be stopped, if it will be (a Lambda's timeout).
    pub deadline: Option<Instant>,
}

impl Trigger {
    /// Slots are whole seconds, so that retried deliveries of one scheduled time always
    /// name the same slot.
    pub fn new(slot: DateTime<Utc>, by: &'static str) -> Self {
        Self { slot: slot.trunc_subsecs(0), by, deadline: None }
    }

    /// An invocation stopped at `deadline`: its lease ends soon after (`lease_until`).
    pub fn until(self, deadline: Instant) -> Self {
        Self { deadline: Some(deadline), ..self }
    }
}

/// How long past its deadline an invocation's lease lasts.
const LEASE_PAST_DEADLINE: Duration = Duration::from_secs(10);

/// The lease to take now: `lease`, but no longer than until shortly after the invocation's
/// deadline. A Lambda stopped at its timeout runs no `fail_run`; with the whole lease (longer
/// than the timeout, so that no one takes over a live run) still held, Lambda's retries a
/// minute or two later would find the slot taken and the run would never resume.
fn lease_until(lease: Duration, deadline: Option<Instant>) -> Duration {
    match deadline {
        Some(deadline) => lease.min(deadline.saturating_duration_since(Instant::now()) + LEASE_PAST_DEADLINE),
        None => lease,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the lease on this run was taken over by another invocation")]
    LeaseLost,
    #[error("step {step} failed: {reason}")]
    Step { step: String, reason: String },
    #[error("invoking the job function {function} failed: {reason}")]
    Invoke { function: String, reason: String },
    /// A slot ahead of the clock would purge as if it were then: refused on every entry point.
    #[error("the slot {slot} lies in the future (the database's clock says {now}); slots may be at most {} s ahead", MAX_SLOT_SKEW.num_seconds())]
    FutureSlot { slot: DateTime<Utc>, now: DateTime<Utc> },
}

impl From<FencedError> for JobError {
    fn from(err: FencedError) -> Self {
        match err {
            FencedError::LeaseLost => JobError::LeaseLost,
            FencedError::Store(err) => JobError::Store(err),
        }
    }
}

/// What an invocation came to.
#[derive(Debug)]
pub enum Outcome {
    /// This invocation ran (or finished) the slot's run.
    Ran(RunInfo),
    /// The slot's run is finished or held by another invocation; nothing was done.
    AlreadyTaken(RunInfo),
}

impl Outcome {
    pub fn run(&self) -> &RunInfo {
        match self {
            Outcome::Ran(run) | Outcome::AlreadyTaken(run) => run,
        }
    }

    /// What the job Lambdas return, and the api and the command line print.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "ran": matches!(self, Outcome::Ran(_)), "run": self.run() })
    }

    /// The outcome a job Lambda returned (`to_json`).
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Answer {
            ran: bool,
            run: RunInfo,
        }
        let Answer { ran, run } = serde_json::from_slice(bytes)?;
        Ok(if ran { Outcome::Ran(run) } else { Outcome::AlreadyTaken(run) })
    }
}

/// The shape of a job's steps: a fixed list of kinds run in order, each chunk given the
/// run's context (what every step of the run measures from, such as its slot).
pub trait StepKind: Copy + Send + Sync + 'static {
    type Context: Sync;
    /// Every step, in the order a run takes them.
    const ALL: &'static [Self];
    /// The step's name in the ledger (`job_steps.step`).
    fn name(self) -> &'static str;
    fn chunk<'a>(
        self,
        context: &'a Self::Context,
        tx: &'a mut JobTx<'_>,
        resume_after: Option<&'a str>,
    ) -> impl Future<Output = Result<ChunkResult, StoreError>> + Send + 'a;
}

/// One kind of step with its run's context, as the ledger runs it.
struct KindStep<'a, K: StepKind> {
    kind: K,
    context: &'a K::Context,
}

impl<K: StepKind> Step for KindStep<'_, K> {
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn chunk<'a>(
        &'a self,
        tx: &'a mut JobTx<'_>,
        resume_after: Option<&'a str>,
    ) -> impl Future<Output = Result<ChunkResult, StoreError>> + Send + 'a {
        self.kind.chunk(self.context, tx, resume_after)
    }
}

/// A scheduled job: its name in the ledger and its steps, in order.
pub trait Job: Sync {
    const NAME: &'static str;
    fn steps(&self, run: &Run) -> impl Future<Output = Result<(), JobError>> + Send;
}

/// The run an invocation holds the lease of; steps go through it.
pub struct Run {
    job: &'static str,
    store: Store,
    run_id: u64,
    fence: u64,
    lease: Duration,
    /// The invocation's deadline (`Trigger::deadline`): each renewal's lease ends soon after.
    deadline: Option<Instant>,
    slot: DateTime<Utc>,
}

impl Run {
    /// The slot's time: steps measure ages from it (not from the clock), so that a run
    /// resumed later deletes exactly what the first attempt would have.
    pub fn slot(&self) -> DateTime<Utc> {
        self.slot
    }

    /// Runs every step of `K`, in order, over `context`. A failed step does not keep the
    /// others from running (one stuck erasure must not stop retention or the purge); the run
    /// then fails with the first step's error, and its retry runs only what is not done.
    /// A lost lease stops at once: another invocation owns the run.
    pub async fn steps<K: StepKind>(&self, context: &K::Context) -> Result<(), JobError> {
        let mut first_failure = None;
        for kind in K::ALL {
            match self.step(&KindStep { kind: *kind, context }).await {
                Ok(()) => {}
                Err(JobError::Step { step, reason }) => {
                    tracing::warn!(job = self.job, step, error = %reason, "step failed; the run goes on with the next");
                    first_failure.get_or_insert(JobError::Step { step, reason });
                }
                Err(err) => return Err(err),
            }
        }
        first_failure.map_or(Ok(()), Err)
    }

    /// Runs `step` chunk by chunk until it reports done. A step already done in this run is
    /// skipped; an unfinished one resumes after its last committed chunk.
    pub async fn step(&self, step: &impl Step) -> Result<(), JobError> {
        let name = step.name();
        let progress = self.store.step_progress(self.run_id, name).await?;
        if progress.done {
            return Ok(());
        }
        let mut resume_after = progress.resume_after;
        let (started, mut rows) = (Instant::now(), 0);
        let outcome = loop {
            // Measured when the chunk renews it: a long chunk must not carry it past the cap.
            let (lease, deadline) = (self.lease, self.deadline);
            let lease = move || lease_until(lease, deadline);
            let result =
                match self.store.fenced_chunk(self.run_id, self.fence, lease, step, resume_after.as_deref()).await {
                    Ok(result) => result,
                    Err(FencedError::LeaseLost) => break Err(JobError::LeaseLost),
                    Err(FencedError::Store(err)) => {
                        break Err(JobError::Step { step: name.to_string(), reason: err.to_string() });
                    }
                };
            rows += result.rows;
            if result.done {
                break Ok(());
            }
            resume_after = result.resume_after;
        };
        // What this invocation committed (a resumed run reports only its own part).
        MetricLine::new(self.job)
            .dimension("Job", self.job)
            .dimension("Step", name)
            .metric("StepRows", rows as f64, Unit::Count, &["Job", "Step"])
            .metric("StepDuration", started.elapsed().as_secs_f64() * 1000.0, Unit::Milliseconds, &["Job", "Step"])
            .emit();
        outcome
    }
}

/// Runs `job`'s slot unless the slot's run is finished or held by another invocation. On
/// failure the lease is given up at once, so a retried invocation resumes.
pub async fn run_once<J: Job>(store: &Store, job: &J, trigger: Trigger, lease: Duration) -> Result<Outcome, JobError> {
    let name = J::NAME;
    let claim = store.claim_run(name, trigger.slot, trigger.by, lease_until(lease, trigger.deadline)).await?;
    let (run_id, run_uid, fence, db_now) = match claim {
        ClaimResult::Taken { run_uid } => {
            let run = run_info(store, run_uid).await?;
            tracing::info!(job = name, slot = %trigger.slot, state = %run.state, "slot already taken; nothing to do");
            return Ok(Outcome::AlreadyTaken(run));
        }
        ClaimResult::Future { db_now } => return Err(JobError::FutureSlot { slot: trigger.slot, now: db_now }),
        ClaimResult::Acquired { run_id, run_uid, fence, db_now } => (run_id, run_uid, fence, db_now),
    };
    tracing::debug!(job = name, slot = %trigger.slot, fence, by = trigger.by, "job run started");
    // Ages are measured from the slot, but never from past the database's clock.
    let run = Run {
        job: name,
        store: store.clone(),
        run_id,
        fence,
        lease,
        deadline: trigger.deadline,
        slot: trigger.slot.min(db_now),
    };
    let result = match job.steps(&run).await {
        Ok(()) => store.finish_run(run_id, fence).await.map_err(JobError::from),
        Err(err) => Err(err),
    };
    if let Err(err) = result {
        let step = match &err {
            JobError::Step { step, .. } => Some(step.as_str()),
            _ => None,
        };
        if !matches!(err, JobError::LeaseLost)
            && let Err(record) = store.fail_run(run_id, fence, step, &err.to_string(), MAX_ATTEMPTS).await
        {
            tracing::warn!(job = name, error = %record, "could not record the failure; the lease will expire");
        }
        tracing::warn!(job = name, slot = %trigger.slot, error = %err, "job run failed");
        return Err(err);
    }
    let run = run_info(store, run_uid).await?;
    let rows: Vec<String> = run.steps.iter().map(|step| format!("{}={}", step.name, step.rows)).collect();
    tracing::info!(job = name, slot = %trigger.slot, rows = %rows.join(" "), "job run finished");
    Ok(Outcome::Ran(run))
}

/// Serves a job function on Lambda: each invocation carries Scheduler's input, whose
/// scheduled time names the slot and `job` the job (the first of `jobs` when absent); the
/// answer is the outcome (`Outcome::to_json`).
pub async fn serve_on_lambda(jobs: JobRunners) -> Result<(), lambda_runtime::Error> {
    let jobs = &jobs;
    lambda_runtime::run(lambda_runtime::service_fn(
        async move |event: lambda_runtime::LambdaEvent<ScheduledInvocation>| {
            let invocation = event.payload;
            let name = invocation.job.as_deref().or_else(|| jobs.first()).unwrap_or_default();
            // The context's deadline is milliseconds since 1970.
            let now_ms = u64::try_from(Utc::now().timestamp_millis()).unwrap_or_default();
            let deadline = Instant::now() + Duration::from_millis(event.context.deadline.saturating_sub(now_ms));
            let outcome = jobs
                .run(name, invocation.trigger().until(deadline))
                .await
                .ok_or_else(|| format!("this function runs no job named {name:?}"))??;
            Ok::<_, lambda_runtime::Error>(outcome.to_json())
        },
    ))
    .await
}

async fn run_info(store: &Store, run_uid: Uuid) -> Result<RunInfo, JobError> {
    Ok(store.run_info(run_uid).await?.ok_or_else(|| StoreError::Unavailable("job run vanished".into()))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_ends_soon_after_the_invocations_deadline_and_never_outlasts_the_setting() {
        let lease = Duration::from_secs(360);
        assert_eq!(lease_until(lease, None), lease, "no deadline (evtrack up, the api)");
        let in_a_minute = lease_until(lease, Some(Instant::now() + Duration::from_secs(60)));
        assert!(in_a_minute <= Duration::from_secs(70) && in_a_minute > Duration::from_secs(69), "{in_a_minute:?}");
        assert_eq!(lease_until(lease, Some(Instant::now())), LEASE_PAST_DEADLINE, "at the deadline");
        let far = Some(Instant::now() + Duration::from_secs(3_600));
        assert_eq!(lease_until(lease, far), lease);
    }
}
