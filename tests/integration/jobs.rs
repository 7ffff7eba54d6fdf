//! The job ledger: one run per slot however many invocations, takeover of a run whose
//! owner stopped, fencing of a stale owner.

use evtrack::jobs::{Job, JobError, JobTx, Outcome, Run, Step, Trigger, run_once};
use evtrack::store::{ChunkResult, StoreError};
use evtrack_tests::TestDb;
use mysql_async::prelude::Queryable;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A job of two steps: `count` inserts rows in chunks of 10 up to 30 (resuming after the last
/// committed chunk), then `finish` inserts one marker row — unless told to hang there.
struct Counting {
    hang_in_finish: bool,
    chunks_run: AtomicU64,
}

struct CountStep<'a>(&'a Counting);
struct FinishStep<'a>(&'a Counting);

impl Step for CountStep<'_> {
    fn name(&self) -> &'static str {
        "count"
    }
    async fn chunk(&self, tx: &mut JobTx<'_>, resume_after: Option<&str>) -> Result<ChunkResult, StoreError> {
        self.0.chunks_run.fetch_add(1, Ordering::SeqCst);
        let from: u64 = resume_after.and_then(|text| text.parse().ok()).unwrap_or(0);
        for n in from + 1..=from + 10 {
            tx.raw().exec_drop("INSERT INTO work (n) VALUES (?)", (n,)).await.map_err(StoreError::from)?;
        }
        let to = from + 10;
        Ok(ChunkResult { rows: 10, resume_after: Some(to.to_string()), done: to >= 30 })
    }
}

impl Step for FinishStep<'_> {
    fn name(&self) -> &'static str {
        "finish"
    }
    async fn chunk(&self, tx: &mut JobTx<'_>, _: Option<&str>) -> Result<ChunkResult, StoreError> {
        if self.0.hang_in_finish {
            std::future::pending::<()>().await;
        }
        tx.raw().exec_drop("INSERT INTO work (n) VALUES (1000)", ()).await.map_err(StoreError::from)?;
        Ok(ChunkResult { rows: 1, resume_after: None, done: true })
    }
}

impl Job for Counting {
    const NAME: &'static str = "counting";
    async fn steps(&self, run: &Run) -> Result<(), JobError> {
        run.step(&CountStep(self)).await?;
        run.step(&FinishStep(self)).await
    }
}

fn counting(hang_in_finish: bool) -> Counting {
    Counting { hang_in_finish, chunks_run: AtomicU64::new(0) }
}

async fn work_table(db: &TestDb) {
    db.execute("CREATE TABLE work (n INT NOT NULL PRIMARY KEY)").await;
}

#[tokio::test]
async fn ten_concurrent_triggers_of_one_slot_make_one_run() {
    let db = TestDb::new().await;
    work_table(&db).await;
    let job = counting(false);
    let trigger = Trigger::new(chrono::Utc::now(), "test");
    let lease = Duration::from_secs(60);
    let outcomes = futures::future::join_all((0..10).map(|_| run_once(&db.store, &job, trigger, lease))).await;
    let ran = outcomes.iter().filter(|outcome| matches!(outcome, Ok(Outcome::Ran(_)))).count();
    let taken = outcomes.iter().filter(|outcome| matches!(outcome, Ok(Outcome::AlreadyTaken(_)))).count();
    assert_eq!((ran, taken), (1, 9), "{outcomes:?}");
    assert_eq!(db.count("work").await, 31, "30 counted rows and the marker, once");
    assert_eq!(job.chunks_run.load(Ordering::SeqCst), 3);
    assert_eq!(db.count("job_runs").await, 1);
}

#[tokio::test]
async fn a_run_stopped_midway_is_taken_over_after_its_lease_and_resumes_without_repeating_work() {
    let db = TestDb::new().await;
    work_table(&db).await;
    let trigger = Trigger::new(chrono::Utc::now(), "test");
    let lease = Duration::from_millis(800);
    // The first invocation commits the 3 chunks of `count`, then stalls in `finish` and is
    // abandoned (as a Lambda that timed out): its lease is never given back.
    let stalled = counting(true);
    let first = tokio::time::timeout(Duration::from_secs(2), run_once(&db.store, &stalled, trigger, lease)).await;
    assert!(first.is_err(), "the first invocation stalled");
    assert_eq!(db.count("work").await, 30);

    let second = counting(false);
    let outcome = run_once(&db.store, &second, trigger, lease).await.expect("the takeover finishes");
    let Outcome::Ran(run) = outcome else { panic!("the lease had expired: the second invocation runs") };
    assert_eq!((run.state.as_str(), run.attempts), ("succeeded", 2));
    assert_eq!(second.chunks_run.load(Ordering::SeqCst), 0, "count was done: not repeated");
    assert_eq!(db.count("work").await, 31);
    let count = run.steps.iter().find(|step| step.name == "count").expect("count step");
    assert_eq!((count.rows, count.chunks), (30, 3));
}

#[tokio::test]
async fn a_stale_owner_cannot_commit_after_a_takeover() {
    let db = TestDb::new().await;
    work_table(&db).await;
    let slot = chrono::Utc::now();
    let lease = Duration::from_millis(200);
    let evtrack::store::ClaimResult::Acquired { run_id, fence: stale_fence, .. } =
        db.store.claim_run("fenced", slot, "test", lease).await.expect("claim")
    else {
        panic!("first claim acquires")
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let taken = db.store.claim_run("fenced", slot, "test", lease).await.expect("claim");
    assert!(matches!(taken, evtrack::store::ClaimResult::Acquired { fence, .. } if fence == stale_fence + 1));
    let job = counting(false);
    let stale = db.store.fenced_chunk(run_id, stale_fence, || lease, &CountStep(&job), None).await;
    assert!(matches!(stale, Err(evtrack::store::FencedError::LeaseLost)), "{stale:?}");
    assert_eq!(db.count("work").await, 0, "nothing the stale owner did was committed");
}

#[tokio::test]
async fn a_failed_step_gives_the_lease_back_and_the_next_invocation_resumes() {
    let db = TestDb::new().await;
    // No `work` table yet: the first step fails on its first chunk.
    let trigger = Trigger::new(chrono::Utc::now(), "test");
    let lease = Duration::from_secs(60);
    let err = run_once(&db.store, &counting(false), trigger, lease).await.expect_err("fails");
    assert!(matches!(err, JobError::Step { ref step, .. } if step == "count"), "{err}");
    let errors: Vec<Option<String>> = db.query("SELECT error FROM job_steps WHERE step = 'count'").await;
    assert!(errors[0].as_deref().unwrap_or_default().contains("work"), "{errors:?}");
    work_table(&db).await;
    let outcome = run_once(&db.store, &counting(false), trigger, lease).await.expect("retry runs at once");
    assert_eq!(outcome.run().state, "succeeded");
    assert_eq!(db.count("work").await, 31);
}

#[tokio::test]
async fn a_run_stopped_unfinished_and_never_retried_is_marked_failed_by_a_later_slots_run() {
    let db = TestDb::new().await;
    work_table(&db).await;
    let now = chrono::Utc::now();
    let (abandoned, held, later) = (now - chrono::Duration::hours(2), now - chrono::Duration::hours(1), now);
    // Stalled in `finish` and given up (as a Lambda stopped at its timeout): its lease runs out
    // and no retry comes.
    let lease = Duration::from_millis(300);
    let stalling = counting(true);
    let stalled = run_once(&db.store, &stalling, Trigger::new(abandoned, "test"), lease);
    assert!(tokio::time::timeout(Duration::from_secs(1), stalled).await.is_err(), "stalled");
    // Another slot's run, its lease still held. The stalled run's lease ran out just now:
    // Lambda's retry may still come, so it is left alone.
    let claim = db.store.claim_run(Counting::NAME, held, "test", Duration::from_secs(60)).await.expect("claim");
    assert!(matches!(claim, evtrack::store::ClaimResult::Acquired { .. }));
    let states: Vec<String> = db.query("SELECT state FROM job_runs ORDER BY slot").await;
    assert_eq!(states, ["running", "running"]);

    // An hour later no retry has come.
    db.execute("UPDATE job_runs SET lease_until = lease_until - INTERVAL 1 HOUR ORDER BY slot LIMIT 1").await;
    db.execute("DELETE FROM work").await;
    let outcome = run_once(&db.store, &counting(false), Trigger::new(later, "test"), Duration::from_secs(60)).await;
    assert_eq!(outcome.expect("the later slot runs").run().state, "succeeded");
    let runs: Vec<(String, Option<String>)> = db.query("SELECT state, error FROM job_runs ORDER BY slot").await;
    let states: Vec<&str> = runs.iter().map(|(state, _)| state.as_str()).collect();
    assert_eq!(states, ["failed", "running", "succeeded"], "{runs:?}");
    assert!(runs[0].1.as_deref().is_some_and(|error| error.starts_with(evtrack::store::ABANDONED)), "{runs:?}");
    let finished: Vec<u64> = db.query("SELECT COUNT(*) FROM job_runs WHERE finished_at IS NOT NULL").await;
    assert_eq!(finished, [2]);

    // A retry of the abandoned slot that comes after all finds it ended.
    let retry = run_once(&db.store, &counting(false), Trigger::new(abandoned, "test"), lease).await.expect("answered");
    assert!(matches!(retry, Outcome::AlreadyTaken(ref run) if run.state == "failed"), "{retry:?}");
}
