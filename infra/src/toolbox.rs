//! The toolbox the command's verbs and the local stack share: the store (migrated), the
//! keyring, the scheduled jobs in this process.

use anyhow::Context;
use evtrack::Config;
use evtrack::jobs::JobRunners;
use evtrack::keys::keyring::Keyring;
use evtrack::store::Store;
use std::sync::Arc;

/// Creates the database if needed, applies migrations, and returns a store on it.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    Store::create_database(&config.database_url, &config.database_tls).await.map_err(|err| {
        anyhow::anyhow!(
            "cannot reach MySQL/MariaDB ({err}).\n  \
             Is it running? Start it with `infra/dev.sh services` (installs and starts MariaDB and Redis),\n  \
             or `sudo service mariadb start`, or point EVTRACK_DATABASE_URL at your server."
        )
    })?;
    let store = Store::from_config(config)?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

/// The scheduled jobs, run in this process: the very code their Lambdas run.
pub async fn jobs(store: &Store, config: &Config) -> anyhow::Result<JobRunners> {
    in_process_jobs(store.clone(), store.clone(), config)
}

/// As `jobs`, each job on a store of its own (its own database user).
pub fn in_process_jobs(rotate_keys_store: Store, cleanup_store: Store, config: &Config) -> anyhow::Result<JobRunners> {
    Ok(evtrack_cleanup::runners(cleanup_store, config)
        .with(evtrack_rotate_keys::JOB, evtrack_rotate_keys::in_process(rotate_keys_store, config)?))
}

pub async fn keyring(store: &Store, config: &Config) -> anyhow::Result<Arc<Keyring>> {
    Ok(Arc::new(Keyring::from_config(store.clone(), config)?))
}
