//! The toolbox the command's verbs and the local stack share: the store (migrated), keys,
//! the keyring, the scheduled jobs in this process.

use anyhow::Context;
use evtrack::Config;
use evtrack::jobs::JobRunners;
use evtrack::keys::keyring::Keyring;
use evtrack::keys::{ApiKey, Expiry, KeyService, NewKeyRequest, Scope};
use evtrack::store::{KeyInfo, Store};
use std::sync::Arc;
use uuid::Uuid;

/// Creates the database if needed, applies migrations, and returns a store on it.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    Store::create_database(&config.database_url).await.map_err(|err| {
        anyhow::anyhow!(
            "cannot reach MySQL/MariaDB ({err}).\n  \
             Is it running? Start it with `infra/dev.sh services` (installs and starts MariaDB and Redis),\n  \
             or `sudo service mariadb start`, or point EVTRACK_DATABASE_URL at your server."
        )
    })?;
    let store = Store::connect(&config.database_url, config.database_pool_max)?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

/// A new key, stored as its hash; the plaintext is returned to be shown once.
pub async fn issue_key(
    store: &Store,
    config: &Config,
    project: Option<Uuid>,
    scope: Scope,
    name: &str,
    expiry: Expiry,
) -> anyhow::Result<(KeyInfo, ApiKey)> {
    let service = KeyService::new(store.clone(), config);
    Ok(service.create(NewKeyRequest { project, scope, name, expiry }).await?)
}

/// The scheduled jobs, run in this process: the very code their Lambdas run.
pub async fn jobs(store: &Store, config: &Config) -> anyhow::Result<JobRunners> {
    in_process_jobs(store.clone(), store.clone(), config)
}

/// As `jobs`, each job on a store of its own (its own database user).
pub fn in_process_jobs(rotate_keys_store: Store, cleanup_store: Store, config: &Config) -> anyhow::Result<JobRunners> {
    Ok(JobRunners::default()
        .with(evtrack_rotate_keys::JOB, evtrack_rotate_keys::in_process(rotate_keys_store, config)?)
        .with(evtrack_cleanup::JOB, evtrack_cleanup::in_process(cleanup_store, config)))
}

pub async fn keyring(store: &Store, config: &Config) -> anyhow::Result<Arc<Keyring>> {
    Ok(Arc::new(Keyring::from_config(store.clone(), config)?))
}
