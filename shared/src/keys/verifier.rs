//! The per-request check of an API key. Ingest caches answers so that it does not query the
//! database per request; the api checks every request against the database.

use super::{Access, AccessDenied, ApiKey, KeyHash, KeyHasher, Scope, VerifyError, access};
use crate::config::Config;
use crate::store::{KeyRecord, Store};
use chrono::Utc;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The current pepper, and the one before it while keys hashed under it remain.
#[derive(Clone)]
pub struct KeyHashers {
    pub current: KeyHasher,
    pub previous: Option<KeyHasher>,
}

impl KeyHashers {
    pub fn from_config(config: &Config) -> Self {
        Self {
            current: KeyHasher::new(&config.key_pepper, config.key_pepper_version),
            previous: config.key_pepper_previous.as_ref().map(|(pepper, version)| KeyHasher::new(pepper, *version)),
        }
    }

    /// The stored record of `key` under either pepper, and the hash it was found by.
    async fn find(&self, store: &Store, key: &ApiKey) -> Result<Option<(KeyRecord, KeyHash)>, VerifyError> {
        for hasher in std::iter::once(&self.current).chain(&self.previous) {
            let hash = hasher.hash(key);
            if let Some(record) = store.find_key(&hash).await?
                && record.pepper_version == hasher.version()
            {
                return Ok(Some((record, hash)));
            }
        }
        Ok(None)
    }
}

type Cached = (Instant, Result<Access, AccessDenied>);

/// Checks keys, optionally caching answers in process. With a cache, a revoked key stops
/// working within `ttl`; while the database is unreachable, a key that was valid within
/// `stale_if_error` keeps working: nobody can revoke it then either, and refusing would lose
/// the events.
pub struct KeyVerifier {
    store: Store,
    hashers: KeyHashers,
    ttl: Duration,
    negative_ttl: Duration,
    stale_if_error: Duration,
    cache: Mutex<HashMap<KeyHash, Cached>>,
}

/// Bounds memory: past this many distinct keys the cache starts over.
const CACHE_CAPACITY: usize = 10_000;

impl KeyVerifier {
    /// Answers cached for `ttl` (ingest).
    pub fn cached(store: Store, hashers: KeyHashers, ttl: Duration) -> Self {
        Self {
            store,
            hashers,
            ttl,
            negative_ttl: ttl.min(Duration::from_secs(5)),
            stale_if_error: if ttl.is_zero() { Duration::ZERO } else { Duration::from_secs(3600).max(ttl) },
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Every check asks the database (api: revocation takes effect at once, and the database
    /// being down fails closed).
    pub fn uncached(store: Store, hashers: KeyHashers) -> Self {
        Self::cached(store, hashers, Duration::ZERO)
    }

    pub async fn verify(&self, text: &str, scope: Scope) -> Result<Access, VerifyError> {
        Ok(self.verify_any(text).await?.require(scope)?)
    }

    /// What the key allows, whatever its scope; the caller decides about the scope.
    pub async fn verify_any(&self, text: &str) -> Result<Access, VerifyError> {
        // A typo or garbage is refused here, without a lookup.
        let key = ApiKey::parse(text).map_err(|_| AccessDenied::Unauthenticated)?;
        let cache_key = self.hashers.current.hash(&key);
        let cached = self.cached_answer(&cache_key);
        if let Some((at, answer)) = &cached {
            let ttl = if answer.is_ok() { self.ttl } else { self.negative_ttl };
            if at.elapsed() < ttl {
                return Ok(answer.clone()?);
            }
        }
        match self.hashers.find(&self.store, &key).await {
            Ok(found) => {
                let answer = match found {
                    Some((record, hash)) => access(&record, &hash, Utc::now()),
                    None => Err(AccessDenied::Unauthenticated),
                };
                if !self.ttl.is_zero() {
                    self.remember(cache_key, answer.clone());
                }
                Ok(answer?)
            }
            Err(err) => match cached {
                Some((at, Ok(access))) if at.elapsed() < self.stale_if_error => {
                    tracing::warn!(error = %err, "key store unreachable; using the last known answer");
                    Ok(access)
                }
                _ => Err(err),
            },
        }
    }

    fn cached_answer(&self, hash: &KeyHash) -> Option<Cached> {
        self.cache.lock().unwrap_or_else(|poison| poison.into_inner()).get(hash).cloned()
    }

    fn remember(&self, hash: KeyHash, answer: Result<Access, AccessDenied>) {
        let mut cache = self.cache.lock().unwrap_or_else(|poison| poison.into_inner());
        if cache.len() >= CACHE_CAPACITY && !cache.contains_key(&hash) {
            cache.clear();
        }
        cache.insert(hash, (Instant::now(), answer));
    }
}
