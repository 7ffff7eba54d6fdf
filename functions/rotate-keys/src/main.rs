//! The rotate-keys Lambda, invoked by EventBridge Scheduler with
//! `{"scheduled_time": "<aws.scheduler.scheduled-time>"}` as its input.

use evtrack::Config;
use evtrack::keys::keyring::Keyring;
use evtrack::store::Store;
use evtrack::telemetry::{LogFormat, init};
use evtrack_rotate_keys::RotateKeys;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init(LogFormat::Json);
    let config = Config::from_env()?;
    // rotate-keys never hashes API keys, but shares the deployment's checks.
    config.require_deployed_secrets(true)?;
    let store = Store::connect(&config.database_url, config.database_pool_max)?;
    let keyring = Arc::new(Keyring::from_config(store.clone(), &config).await?);
    let job = RotateKeys::new(store, keyring, config.job_lease);
    evtrack::jobs::serve_on_lambda(async |trigger| job.run(trigger).await).await
}
