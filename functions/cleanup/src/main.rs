//! The cleanup Lambda, invoked by EventBridge Scheduler with
//! `{"scheduled_time": "<aws.scheduler.scheduled-time>"}` as its input.

use evtrack::Config;
use evtrack::store::Store;
use evtrack::telemetry::{LogFormat, init};
use evtrack_cleanup::Cleanup;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init(LogFormat::Json);
    let config = Config::from_env()?;
    let store = Store::connect(&config.database_url, config.database_pool_max)?;
    let job = Cleanup::new(store, config.cleanup.clone(), config.job_lease);
    evtrack::jobs::serve_on_lambda(async |trigger| job.run(trigger).await).await
}
