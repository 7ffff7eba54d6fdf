//! The rotate-keys Lambda, invoked by EventBridge Scheduler with
//! `{"scheduled_time": "<aws.scheduler.scheduled-time>"}` as its input.

use evtrack::Config;
use evtrack::jobs::{ScheduledInvocation, Trigger};
use evtrack::keys::keyring::{Keyring, MasterKeys};
use evtrack::store::Store;
use evtrack::telemetry::{LogFormat, init};
use evtrack_rotate_keys::{RotateKeys, outcome_json};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init(LogFormat::Json);
    let config = Config::from_env()?;
    if config.master_keys.is_none() && config.master_keys_secret_id.is_none() {
        return Err(
            "set EVTRACK_MASTER_KEYS_SECRET_ID (or EVTRACK_MASTER_KEYS); refusing the development master key".into()
        );
    }
    let store = Store::connect(&config.database_url, config.database_pool_max)?;
    let keyring =
        Arc::new(Keyring::new(store.clone(), MasterKeys::load(&config).await?, config.keyring_policy.clone()));
    let job = RotateKeys::new(store, keyring, config.job_lease);
    let job = &job;
    lambda_runtime::run(service_fn(async move |event: LambdaEvent<ScheduledInvocation>| {
        let outcome = job.run(Trigger::new(event.payload.scheduled_time, "schedule")).await?;
        Ok::<_, Error>(outcome_json(&outcome))
    }))
    .await
}
