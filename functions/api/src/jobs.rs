//! The scheduled jobs by name, for `POST /v1/jobs/{name}/runs`, `evtrack job run` and the
//! local stack's schedules: the very jobs their Lambdas run.

use evtrack::Config;
use evtrack::jobs::{JobError, Outcome, Trigger};
use evtrack::keys::keyring::Keyring;
use evtrack::store::Store;
use evtrack_cleanup::Cleanup;
use evtrack_rotate_keys::RotateKeys;
use std::sync::Arc;

pub struct Jobs {
    rotate_keys: RotateKeys,
    cleanup: Cleanup,
}

impl Jobs {
    pub const NAMES: [&'static str; 2] = [evtrack_rotate_keys::JOB, evtrack_cleanup::JOB];

    pub fn new(store: Store, config: &Config, keyring: Arc<Keyring>) -> Self {
        Self {
            rotate_keys: RotateKeys::new(store.clone(), keyring, config.job_lease),
            cleanup: Cleanup::new(store, config.cleanup.clone(), config.job_lease),
        }
    }

    /// Runs `name`'s slot through the job ledger; `None` if there is no such job.
    pub async fn run(&self, name: &str, trigger: Trigger) -> Option<Result<Outcome, JobError>> {
        match name {
            evtrack_rotate_keys::JOB => Some(self.rotate_keys.run(trigger).await),
            evtrack_cleanup::JOB => Some(self.cleanup.run(trigger).await),
            _ => None,
        }
    }

    pub fn name(name: &str) -> Option<&'static str> {
        Self::NAMES.into_iter().find(|known| *known == name)
    }
}
