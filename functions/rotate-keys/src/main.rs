//! The rotate-keys Lambda, invoked by EventBridge Scheduler with
//! `{"scheduled_time": "<aws.scheduler.scheduled-time>"}` as its input.

use evtrack::Config;
use evtrack::config::Required;
use evtrack::jobs::InProcess;
use evtrack::keys::keyring::Keyring;
use evtrack::store::Store;
use evtrack::telemetry::{LogFormat, init};
use evtrack_rotate_keys::RotateKeys;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init(LogFormat::Json);
    let config = Config::from_env_and_secrets().await?;
    config.require(&[Required::DatabaseUrl, Required::MasterKeys])?;
    let store = Store::connect(&config.database_url, config.database_pool_max)?;
    let keyring = Arc::new(Keyring::from_config(store.clone(), &config)?);
    let job = RotateKeys::new(store.clone(), keyring);
    evtrack::jobs::serve_on_lambda(InProcess::new(store, job, config.job_lease)).await
}
