//! Who runs a job's slot when the api or the command line triggers it: the job itself, in
//! this process (the local stack, `evtrack job run`), or its Lambda function, invoked (on
//! AWS, so that the api's role and database user need nothing the jobs do). Either way the
//! slot goes through the job ledger, so it runs once however it is triggered.

use super::{Job, JobError, Outcome, ScheduledInvocation, Trigger, run_once};
use crate::config::JOB_NAMES;
use crate::store::Store;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

/// Runs the slot a trigger names.
pub trait JobRunner: Send + Sync {
    fn run(&self, trigger: Trigger) -> BoxFuture<'_, Result<Outcome, JobError>>;
}

/// The scheduled jobs by name, each with its runner.
#[derive(Clone, Default)]
pub struct JobRunners {
    runners: Vec<(&'static str, Arc<dyn JobRunner>)>,
}

impl JobRunners {
    pub fn with(mut self, name: &'static str, runner: impl JobRunner + 'static) -> Self {
        self.runners.push((name, Arc::new(runner)));
        self
    }

    /// Runs `name`'s slot; `None` if there is no such job.
    pub async fn run(&self, name: &str, trigger: Trigger) -> Option<Result<Outcome, JobError>> {
        let (_, runner) = self.runners.iter().find(|(known, _)| *known == name)?;
        Some(runner.run(trigger).await)
    }

    /// The first job's name.
    pub fn first(&self) -> Option<&'static str> {
        self.runners.first().map(|(name, _)| *name)
    }

    /// A job's name as the ledger knows it (`rotate-keys`, `cleanup`).
    pub fn name(name: &str) -> Option<&'static str> {
        JOB_NAMES.into_iter().find(|known| *known == name)
    }
}

/// A job run in this process.
pub struct InProcess<J> {
    store: Store,
    job: J,
    lease: Duration,
}

impl<J: Job + Send + 'static> InProcess<J> {
    pub fn new(store: Store, job: J, lease: Duration) -> Self {
        Self { store, job, lease }
    }
}

impl<J: Job + Send + 'static> JobRunner for InProcess<J> {
    fn run(&self, trigger: Trigger) -> BoxFuture<'_, Result<Outcome, JobError>> {
        Box::pin(run_once(&self.store, &self.job, trigger, self.lease))
    }
}

/// How long the api waits for a job function's answer.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(25);

/// A job run by invoking its Lambda function synchronously with the input Scheduler sends.
pub struct LambdaFunction {
    client: aws_sdk_lambda::Client,
    job: &'static str,
    function: String,
}

impl LambdaFunction {
    pub fn new(client: aws_sdk_lambda::Client, job: &'static str, function: impl Into<String>) -> Self {
        Self { client, job, function: function.into() }
    }

    /// The runners of every job `functions` names (job → function name or ARN).
    pub async fn runners(functions: &[(&'static str, String)]) -> JobRunners {
        // Answer within API Gateway's 30 s; a run still going on after that finishes anyway
        // (the invocation continues), and `GET /v1/jobs/{name}/runs` shows it.
        let timeouts = aws_config::timeout::TimeoutConfig::builder().operation_timeout(INVOKE_TIMEOUT).build();
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts).load().await;
        let client = aws_sdk_lambda::Client::new(&config);
        functions.iter().fold(JobRunners::default(), |runners, (job, function)| {
            runners.with(job, Self::new(client.clone(), job, function.clone()))
        })
    }

    async fn invoke(&self, trigger: Trigger) -> Result<Outcome, JobError> {
        let failed = |reason: String| JobError::Invoke { function: self.function.clone(), reason };
        let input = ScheduledInvocation {
            scheduled_time: trigger.slot,
            job: Some(self.job.to_string()),
            triggered_by: Some(trigger.by.to_string()),
        };
        let payload = serde_json::to_vec(&input).map_err(|err| failed(err.to_string()))?;
        let output = self
            .client
            .invoke()
            .function_name(&self.function)
            .invocation_type(aws_sdk_lambda::types::InvocationType::RequestResponse)
            .payload(aws_sdk_lambda::primitives::Blob::new(payload))
            .send()
            .await
            .map_err(|err| failed(aws_sdk_lambda::error::DisplayErrorContext(&err).to_string()))?;
        let body = output.payload().map(|blob| blob.as_ref()).unwrap_or_default();
        if let Some(kind) = output.function_error() {
            // The function's own error report: {"errorType", "errorMessage"}.
            let report: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            let message = report["errorMessage"].as_str().unwrap_or(kind);
            return Err(failed(message.to_string()));
        }
        Outcome::from_json(body).map_err(|err| failed(format!("unexpected answer: {err}")))
    }
}

impl JobRunner for LambdaFunction {
    fn run(&self, trigger: Trigger) -> BoxFuture<'_, Result<Outcome, JobError>> {
        Box::pin(self.invoke(trigger))
    }
}
