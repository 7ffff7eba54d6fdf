//! The cleanup Lambda, invoked by EventBridge Scheduler with
//! `{"scheduled_time": "<aws.scheduler.scheduled-time>"}` as its input (the cleanup job), or
//! with `"job": "rollups"` besides (the rollups job, every minute).

use evtrack::Config;
use evtrack::config::Required;
use evtrack::store::Store;
use evtrack::telemetry::{LogFormat, init};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init(LogFormat::Json);
    let config = Config::from_env_and_secrets().await?;
    config.require(&[Required::DatabaseUrl])?;
    let store = Store::from_config(&config)?;
    evtrack::jobs::serve_on_lambda(evtrack_cleanup::runners(store, &config)).await
}
