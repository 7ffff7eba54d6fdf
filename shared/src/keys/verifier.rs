//! The per-request check of an API key. Ingest caches answers so that it does not query the
//! database per request; the api checks every request against the database (and keeps the
//! last answers only as hints: `KeyVerifier::recent`).

use super::{Access, AccessDenied, ApiKey, KeyHash, KeyHasher, Scope, VerifyError, access};
use crate::config::Config;
use crate::store::{KeyRecord, Store};
use chrono::{DateTime, Utc};
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

/// An answer, when it was looked up, and when the key stops working whatever the database
/// says later (its expiry or the end of its rotation grace): never served past that.
#[derive(Clone)]
struct Cached {
    at: Instant,
    answer: Result<Access, AccessDenied>,
    ends_at: Option<DateTime<Utc>>,
}

impl Cached {
    /// The answer as of `now`: a key past its end is refused, cached or not.
    fn answer(&self, now: DateTime<Utc>) -> Result<Access, AccessDenied> {
        match self.ends_at {
            Some(ends_at) if ends_at <= now => Err(AccessDenied::Unauthenticated),
            _ => self.answer.clone(),
        }
    }
}

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

/// Bounds memory: past this many distinct keys the oldest answer makes room.
const CACHE_CAPACITY: usize = 10_000;

/// How long a valid answer serves as a hint (`KeyVerifier::recent`).
const HINT_TTL: Duration = Duration::from_secs(60);

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
        if let Some(cached) = &cached {
            let ttl = if cached.answer.is_ok() { self.ttl } else { self.negative_ttl };
            if cached.at.elapsed() < ttl {
                return Ok(cached.answer(Utc::now())?);
            }
        }
        match self.hashers.find(&self.store, &key).await {
            Ok(found) => {
                let now = Utc::now();
                let (answer, ends_at) = match found {
                    Some((record, hash)) => {
                        let ends_at = [record.expires_at, record.grace_ends_at].into_iter().flatten().min();
                        (access(&record, &hash, now), ends_at)
                    }
                    None => (Err(AccessDenied::Unauthenticated), None),
                };
                // Kept without a cache too, as a hint (`recent`); a refusal replaces it.
                self.remember(cache_key, Cached { at: Instant::now(), answer: answer.clone(), ends_at });
                Ok(answer?)
            }
            Err(err) => match cached {
                Some(cached) if cached.answer.is_ok() && cached.at.elapsed() < self.stale_if_error => {
                    tracing::warn!(error = %err, "key store unreachable; using the last known answer");
                    Ok(cached.answer(Utc::now())?)
                }
                _ => Err(err),
            },
        }
    }

    /// What `text` was allowed when it was last checked, if that was within the last minute and
    /// allowed it, without asking the database. A hint for work that may begin before this
    /// request's own check has ended (`verify_any`), never an answer: the api reads beside the
    /// check and answers only once the check allows what the read assumed.
    pub fn recent(&self, text: &str) -> Option<Access> {
        let key = ApiKey::parse(text).ok()?;
        let cached = self.cached_answer(&self.hashers.current.hash(&key))?;
        if cached.at.elapsed() >= HINT_TTL {
            return None;
        }
        cached.answer(Utc::now()).ok()
    }

    fn cached_answer(&self, hash: &KeyHash) -> Option<Cached> {
        self.cache.lock().unwrap_or_else(|poison| poison.into_inner()).get(hash).cloned()
    }

    fn remember(&self, hash: KeyHash, cached: Cached) {
        let mut cache = self.cache.lock().unwrap_or_else(|poison| poison.into_inner());
        if cache.len() >= CACHE_CAPACITY && !cache.contains_key(&hash) {
            // One entry at a time, the oldest: a flood of new keys cannot empty the cache of
            // the keys in use (they are looked up again as they age out).
            if let Some(oldest) = cache.iter().min_by_key(|(_, cached)| cached.at).map(|(hash, _)| *hash) {
                cache.remove(&oldest);
            }
        }
        cache.insert(hash, cached);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn verifier() -> KeyVerifier {
        // Connects lazily: these tests never reach the database.
        let store =
            Store::connect(&Secret::new("mysql://root@127.0.0.1:9/none".into()), &Default::default(), 1).expect("pool");
        let config = Config::from_lookup(|_| None).expect("defaults");
        KeyVerifier::cached(store, KeyHashers::from_config(&config), Duration::from_secs(30))
    }

    /// An answer looked up `n` microseconds after `start` (distinct, ordered times).
    fn denied(start: Instant, n: usize) -> Cached {
        let at = start + Duration::from_micros(n as u64);
        Cached { at, answer: Err(AccessDenied::Unauthenticated), ends_at: None }
    }

    #[test]
    fn a_full_cache_makes_room_one_entry_at_a_time_the_oldest_first() {
        let verifier = verifier();
        let hash = |n: usize| KeyHash(std::array::from_fn(|i| (n >> (8 * (i % 8))) as u8 ^ i as u8));
        let start = Instant::now();
        for n in 0..CACHE_CAPACITY {
            verifier.remember(hash(n), denied(start, n));
        }
        verifier.remember(hash(CACHE_CAPACITY), denied(start, CACHE_CAPACITY));
        let cache = verifier.cache.lock().expect("lock");
        assert_eq!(cache.len(), CACHE_CAPACITY, "not emptied");
        assert!(
            !cache.contains_key(&hash(0)) && cache.contains_key(&hash(1)) && cache.contains_key(&hash(CACHE_CAPACITY))
        );
    }

    #[test]
    fn a_cached_answer_is_never_served_past_the_keys_end() {
        let access = Access {
            key_uid: uuid::Uuid::now_v7(),
            scope: Scope::Write,
            project_uid: None,
            project_id: None,
            ip_policy: Default::default(),
        };
        let now = Utc::now();
        let cached = Cached { at: Instant::now(), answer: Ok(access), ends_at: Some(now) };
        assert!(cached.answer(now - chrono::Duration::milliseconds(1)).is_ok());
        assert_eq!(cached.answer(now), Err(AccessDenied::Unauthenticated));
    }
}
