//! The api Lambda: API Gateway HTTP API → the api router. It triggers jobs by invoking
//! their functions, so that its role and database user need none of the jobs' rights.

use evtrack::Config;
use evtrack::config::{JOB_NAMES, Required, job_function_setting};
use evtrack::jobs::LambdaFunction;
use evtrack::keys::keyring::Keyring;
use evtrack::store::Store;
use evtrack::telemetry::{LogFormat, init};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init(LogFormat::Json);
    let config = Config::from_env_and_secrets().await?;
    config.require(&[Required::DatabaseUrl, Required::KeyPepper, Required::MasterKeys])?;
    if let Some(job) = JOB_NAMES.into_iter().find(|job| !config.job_functions.iter().any(|(name, _)| name == job)) {
        return Err(format!("set {} to the {job} function", job_function_setting(job)).into());
    }
    let store = Store::from_config(&config)?;
    let keyring = Arc::new(Keyring::from_config(store.clone(), &config)?);
    let jobs = LambdaFunction::runners(&config.job_functions).await;
    let api = Arc::new(evtrack_api::Api::new(&config, store, keyring, jobs));
    lambda_http::run(evtrack_api::standalone_router(api)).await
}
