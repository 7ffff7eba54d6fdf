//! The rotate-keys Lambda, invoked by EventBridge Scheduler with
//! `{"scheduled_time": "<aws.scheduler.scheduled-time>"}` as its input.

use evtrack::Config;
use evtrack::config::Required;
use evtrack::store::Store;
use evtrack::telemetry::{LogFormat, init};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init(LogFormat::Json);
    let config = Config::from_env_and_secrets().await?;
    config.require(&[Required::DatabaseUrl, Required::MasterKeys])?;
    let store = Store::from_config(&config)?;
    let job = evtrack::jobs::JobRunners::default()
        .with(evtrack_rotate_keys::JOB, evtrack_rotate_keys::in_process(store, &config)?);
    evtrack::jobs::serve_on_lambda(job).await
}
