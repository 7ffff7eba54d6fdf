//! Creating, rotating and revoking keys: the one place the admin API and the command line
//! go through. The plaintext of a new key is returned once and never stored.

use super::{ApiKey, Expiry, KeyHasher, Scope};
use crate::config::{Config, KeyPolicy, MAX_ADMIN_KEY_DAYS};
use crate::store::{KeyChangeError, KeyInfo, NewKey, Store, StoreError};
use chrono::Utc;
use uuid::Uuid;

pub struct NewKeyRequest<'a> {
    pub project: Option<Uuid>,
    pub scope: Scope,
    pub name: &'a str,
    pub expiry: Expiry,
}

pub struct KeyService {
    store: Store,
    hasher: KeyHasher,
    policy: KeyPolicy,
}

impl KeyService {
    pub fn new(store: Store, config: &Config) -> Self {
        Self {
            store,
            hasher: KeyHasher::new(&config.key_pepper, config.key_pepper_version),
            policy: config.key_policy.clone(),
        }
    }

    pub async fn create(&self, request: NewKeyRequest<'_>) -> Result<(KeyInfo, ApiKey), StoreError> {
        let name = check_name(request.name)?;
        check_lifetime(request.scope, request.expiry)?;
        let key = ApiKey::generate(request.scope);
        let expires_at = self.policy.expires_at(request.scope, request.expiry, Utc::now());
        let uid = self.store.insert_key(self.new_key(&key, request.project, name, expires_at)).await?;
        tracing::info!(key_id = %uid, prefix = key.display_prefix(), scope = request.scope.as_str(), "key created");
        Ok((self.info(uid).await?, key))
    }

    /// A successor for `uid` (same project, scope, name and lifetime, up to the scope's default);
    /// `uid` keeps working for `grace` (the policy's default when `None`; 0 ends it now).
    pub async fn rotate(
        &self,
        uid: Uuid,
        grace: Option<chrono::Duration>,
    ) -> Result<(KeyInfo, ApiKey), KeyChangeError> {
        let grace = self.policy.rotation_grace(grace).map_err(StoreError::Invalid)?;
        let old = self.store.key_info(uid).await?.ok_or(KeyChangeError::NotFound)?;
        let key = ApiKey::generate(old.scope);
        let now = Utc::now();
        let expires_at = Some(self.policy.successor_expires_at(old.scope, old.created_at, old.expires_at, now));
        let new = self.new_key(&key, old.project, &old.name, expires_at);
        let new_uid = self.store.rotate_key(uid, new, now + grace).await?;
        tracing::info!(
            key_id = %uid, prefix = old.prefix, successor = %new_uid, grace_hours = grace.num_hours(), "key rotated"
        );
        Ok((self.info(new_uid).await?, key))
    }

    pub async fn revoke(&self, uid: Uuid) -> Result<KeyInfo, KeyChangeError> {
        self.store.revoke_key(uid).await?;
        let info = self.info(uid).await?;
        tracing::info!(key_id = %uid, prefix = info.prefix, "key revoked");
        Ok(info)
    }

    fn new_key<'a>(
        &self,
        key: &'a ApiKey,
        project: Option<Uuid>,
        name: &'a str,
        expires_at: Option<chrono::DateTime<Utc>>,
    ) -> NewKey<'a> {
        NewKey {
            project_uid: project,
            scope: key.scope(),
            name,
            hash: self.hasher.hash(key),
            pepper_version: self.hasher.version(),
            display_prefix: key.display_prefix(),
            expires_at,
        }
    }

    async fn info(&self, uid: Uuid) -> Result<KeyInfo, StoreError> {
        self.store.key_info(uid).await?.ok_or_else(|| StoreError::Unavailable("key vanished after writing".into()))
    }
}

/// Admin keys manage everything: they always expire, within `MAX_ADMIN_KEY_DAYS`.
fn check_lifetime(scope: Scope, expiry: Expiry) -> Result<(), StoreError> {
    let too_long = match expiry {
        Expiry::Never => true,
        Expiry::After(lifetime) => lifetime > chrono::Duration::days(MAX_ADMIN_KEY_DAYS),
        Expiry::Default => false,
    };
    if scope == Scope::Admin && too_long {
        return Err(StoreError::Invalid(format!("admin keys always expire, after at most {MAX_ADMIN_KEY_DAYS} days")));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<&str, StoreError> {
    let name = name.trim();
    if name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(StoreError::Invalid("a key name has at most 200 characters and no control characters".into()));
    }
    Ok(name)
}
