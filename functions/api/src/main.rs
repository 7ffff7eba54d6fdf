//! The api Lambda: API Gateway HTTP API → the api router.

use evtrack::Config;
use evtrack::http::ApiError;
use evtrack::keys::keyring::Keyring;
use evtrack::store::Store;
use evtrack::telemetry::{LogFormat, init};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init(LogFormat::Json);
    let config = Config::from_env()?;
    config.require_deployed_secrets(true)?;
    let store = Store::connect(&config.database_url, config.database_pool_max)?;
    let keyring = Arc::new(Keyring::from_config(store.clone(), &config).await?);
    let api = Arc::new(evtrack_api::Api::new(&config, store, keyring));
    lambda_http::run(evtrack_api::router(api).fallback(|| async { ApiError::not_found() })).await
}
