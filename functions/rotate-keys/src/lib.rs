//! evtrack rotate-keys: the scheduled key housekeeping, once per schedule slot.
//!
//! Steps, each idempotent and recorded in the job ledger:
//! 1. mark keys whose rotation grace is over, expired keys and revoked keys as ended (the
//!    key check at use time already refuses them; this makes the state visible and indexable);
//! 2. report keys expiring within `EXPIRY_WARNING` (a log line and a metric per key, by
//!    display prefix only);
//! 3. rotate the signing keyring: add the next key before the current one stops signing,
//!    retire keys whose verification overlap is over, purge retired keys after a while.

use chrono::Utc;
use evtrack::Config;
use evtrack::jobs::{InProcess, Job, JobError, JobTx, Run, StepKind};
use evtrack::keys::keyring::{Keyring, KeyringError};
use evtrack::store::{ChunkResult, KeyEnd, SealedSigningKey, Store, StoreError};
use evtrack::telemetry::{MetricLine, Unit};
use std::sync::Arc;

pub const JOB: &str = "rotate-keys";
/// Keys expiring within this are reported on every run.
pub const EXPIRY_WARNING_DAYS: i64 = 14;
/// Rows per statement (PlanetScale: keep statements and transactions small).
const CHUNK: u64 = 1000;

pub struct RotateKeys {
    store: Store,
    keyring: Arc<Keyring>,
}

/// The rotate-keys job on `store` (the keyring sealed under `config`'s master keys), as its
/// Lambda, the local stack and the tests run it.
pub fn in_process(store: Store, config: &Config) -> Result<InProcess<RotateKeys>, KeyringError> {
    let keyring = Arc::new(Keyring::from_config(store.clone(), config)?);
    Ok(InProcess::new(store.clone(), RotateKeys::new(store, keyring), config.job_lease))
}

impl RotateKeys {
    pub fn new(store: Store, keyring: Arc<Keyring>) -> Self {
        Self { store, keyring }
    }
}

impl Job for RotateKeys {
    const NAME: &'static str = JOB;

    async fn steps(&self, run: &Run) -> Result<(), JobError> {
        let now = Utc::now();
        let policy = self.keyring.policy();
        let context = Context {
            store: self.store.clone(),
            // The next key is added a while before the current one stops signing, so that
            // there is always one to sign with even if a scheduled run is late.
            next_key: self.keyring.new_sealed_key(now),
            lead: (policy.rotation / 2).min(chrono::Duration::days(1)),
            purge_before: now - policy.purge_after,
        };
        run.steps::<KeyStep>(&context).await
    }
}

/// What every step of a run works with.
struct Context {
    store: Store,
    next_key: SealedSigningKey,
    lead: chrono::Duration,
    purge_before: chrono::DateTime<Utc>,
}

#[derive(Debug, Clone, Copy)]
enum KeyStep {
    EndGracePeriods,
    MarkExpiredKeys,
    MarkRevokedKeys,
    ReportExpiringKeys,
    AddSigningKey,
    RetireSigningKeys,
    PurgeSigningKeys,
}

impl StepKind for KeyStep {
    type Context = Context;
    const ALL: &'static [KeyStep] = &[
        KeyStep::EndGracePeriods,
        KeyStep::MarkExpiredKeys,
        KeyStep::MarkRevokedKeys,
        KeyStep::ReportExpiringKeys,
        KeyStep::AddSigningKey,
        KeyStep::RetireSigningKeys,
        KeyStep::PurgeSigningKeys,
    ];

    fn name(self) -> &'static str {
        match self {
            KeyStep::EndGracePeriods => "end_grace_periods",
            KeyStep::MarkExpiredKeys => "mark_expired_keys",
            KeyStep::MarkRevokedKeys => "mark_revoked_keys",
            KeyStep::ReportExpiringKeys => "report_expiring_keys",
            KeyStep::AddSigningKey => "add_signing_key",
            KeyStep::RetireSigningKeys => "retire_signing_keys",
            KeyStep::PurgeSigningKeys => "purge_signing_keys",
        }
    }

    async fn chunk(self, context: &Context, tx: &mut JobTx<'_>, _: Option<&str>) -> Result<ChunkResult, StoreError> {
        Ok(match self {
            KeyStep::EndGracePeriods => chunk(Store::mark_ended_keys(tx, KeyEnd::Rotated, CHUNK).await?),
            KeyStep::MarkExpiredKeys => chunk(Store::mark_ended_keys(tx, KeyEnd::Expired, CHUNK).await?),
            KeyStep::MarkRevokedKeys => chunk(Store::mark_ended_keys(tx, KeyEnd::Revoked, CHUNK).await?),
            KeyStep::ReportExpiringKeys => whole(report_expiring(&context.store).await?),
            KeyStep::AddSigningKey => whole(Store::add_signing_key_if_due(tx, &context.next_key, context.lead).await?),
            KeyStep::RetireSigningKeys => whole(Store::retire_signing_keys(tx).await?),
            KeyStep::PurgeSigningKeys => chunk(Store::purge_signing_keys(tx, context.purge_before, CHUNK).await?),
        })
    }
}

async fn report_expiring(store: &Store) -> Result<u64, StoreError> {
    let now = Utc::now();
    let keys = store.keys_expiring_before(now + chrono::Duration::days(EXPIRY_WARNING_DAYS)).await?;
    for key in &keys {
        let days_left = (key.expires_at - now).num_seconds() as f64 / 86_400.0;
        tracing::warn!(
            key_id = %key.id,
            prefix = key.prefix,
            scope = key.scope.as_str(),
            project = ?key.project,
            expires_at = %key.expires_at,
            days_left = format!("{days_left:.1}"),
            "API key expires soon; rotate it"
        );
        MetricLine::new(JOB)
            .dimension("KeyPrefix", &key.prefix)
            .metric("KeyDaysToExpiry", days_left, Unit::None, &["KeyPrefix"])
            .emit();
    }
    Ok(keys.len() as u64)
}

fn chunk(rows: u64) -> ChunkResult {
    ChunkResult::limited(rows, CHUNK)
}

fn whole(rows: u64) -> ChunkResult {
    ChunkResult::whole(rows)
}
