//! The api Lambda: API Gateway HTTP API → the api router.

use evtrack::Config;
use evtrack::http::ApiError;
use evtrack::keys::keyring::{Keyring, MasterKeys};
use evtrack::store::Store;
use evtrack::telemetry::{LogFormat, init};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init(LogFormat::Json);
    let config = Config::from_env()?;
    if config.uses_development_pepper() {
        return Err("EVTRACK_KEY_PEPPER is not set; refusing to run with the development pepper".into());
    }
    if config.master_keys.is_none() && config.master_keys_secret_id.is_none() {
        return Err(
            "set EVTRACK_MASTER_KEYS_SECRET_ID (or EVTRACK_MASTER_KEYS); refusing the development master key".into()
        );
    }
    let store = Store::connect(&config.database_url, config.database_pool_max)?;
    let keyring =
        Arc::new(Keyring::new(store.clone(), MasterKeys::load(&config).await?, config.keyring_policy.clone()));
    let api = Arc::new(evtrack_api::Api::new(&config, store, keyring));
    lambda_http::run(evtrack_api::router(api).fallback(|| async { ApiError::not_found() })).await
}
