//! API keys: format, checksum, keyed hashing, and the cached check of write keys that ingest
//! does on every request.
//!
//! Format (GitHub's token format is the model): a kind prefix that secret scanners can match
//! (`evtw_`, `evtr_`, `evta_`), 30 base62 characters from a CSPRNG (178 bits), and 6 base62
//! characters of CRC32 over the rest, so a mistyped key is refused before any lookup.
//! Only HMAC-SHA256(pepper, key) is stored, beside the pepper's version.

use crate::config::Secret;
use crate::store::{KeyRecord, Store, StoreError};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use uuid::Uuid;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const RANDOM_CHARS: usize = 30;
const CHECKSUM_CHARS: usize = 6;
const PREFIX_CHARS: usize = 5;
pub const KEY_CHARS: usize = PREFIX_CHARS + RANDOM_CHARS + CHECKSUM_CHARS;
/// How much of a key may be shown or logged to identify it.
pub const DISPLAY_PREFIX_CHARS: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Ingest only; may ship in a browser.
    Write,
    /// One project's data.
    Read,
    /// Projects, keys and jobs.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Write => "write",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [Scope::Write, Scope::Read, Scope::Admin].into_iter().find(|s| s.as_str() == name)
    }

    fn prefix(self) -> &'static str {
        match self {
            Scope::Write => "evtw_",
            Scope::Read => "evtr_",
            Scope::Admin => "evta_",
        }
    }
}

/// A well-formed API key (prefix, length, alphabet and checksum hold). Not yet known to
/// exist: that takes a lookup of its hash.
#[derive(Clone)]
pub struct ApiKey {
    text: Secret<String>,
    scope: Scope,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({}…)", self.display_prefix())
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed API key")]
pub struct MalformedKey;

impl ApiKey {
    pub fn generate(scope: Scope) -> Self {
        let mut rng = rand::rng();
        let mut text = String::with_capacity(KEY_CHARS);
        text.push_str(scope.prefix());
        for _ in 0..RANDOM_CHARS {
            text.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
        }
        text.push_str(&checksum(&text));
        Self { text: Secret::new(text), scope }
    }

    pub fn parse(text: &str) -> Result<Self, MalformedKey> {
        let text = text.trim();
        if text.len() != KEY_CHARS || !text.is_ascii() {
            return Err(MalformedKey);
        }
        let (prefix, rest) = text.split_at(PREFIX_CHARS);
        let scope = [Scope::Write, Scope::Read, Scope::Admin]
            .into_iter()
            .find(|scope| scope.prefix() == prefix)
            .ok_or(MalformedKey)?;
        if !rest.bytes().all(|byte| byte.is_ascii_alphanumeric()) {
            return Err(MalformedKey);
        }
        let (body, sum) = text.split_at(KEY_CHARS - CHECKSUM_CHARS);
        if checksum(body) != sum {
            return Err(MalformedKey);
        }
        Ok(Self { text: Secret::new(text.to_string()), scope })
    }

    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The part of the key that may be shown, logged and stored in clear.
    pub fn display_prefix(&self) -> &str {
        &self.text.expose()[..DISPLAY_PREFIX_CHARS]
    }

    /// The plaintext, to show once at creation.
    pub fn reveal(&self) -> &str {
        self.text.expose()
    }
}

fn checksum(text: &str) -> String {
    let mut value = crc32fast::hash(text.as_bytes());
    let mut digits = [b'0'; CHECKSUM_CHARS];
    for digit in digits.iter_mut().rev() {
        *digit = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    String::from_utf8_lossy(&digits).into_owned()
}

/// HMAC-SHA256 of a key under the server's pepper: what the database stores and looks up.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHash(…)")
    }
}

#[derive(Clone)]
pub struct KeyHasher {
    pepper: Secret<Vec<u8>>,
    version: u16,
}

impl KeyHasher {
    pub fn new(pepper: &Secret<String>, version: u16) -> Self {
        Self { pepper: Secret::new(pepper.expose().as_bytes().to_vec()), version }
    }

    pub fn version(&self) -> u16 {
        self.version
    }

    pub fn hash(&self, key: &ApiKey) -> KeyHash {
        // HMAC accepts keys of any length; this cannot fail.
        let mut mac = Hmac::<Sha256>::new_from_slice(self.pepper.expose()).expect("HMAC takes any key length");
        mac.update(key.reveal().as_bytes());
        KeyHash(mac.finalize().into_bytes().into())
    }
}

/// What a valid write key lets ingest do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteAccess {
    pub project_uid: Uuid,
    pub key_uid: Uuid,
    /// The project opted in to storing full client IPs.
    pub store_full_ip: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessDenied {
    /// Missing, malformed, unknown, expired, revoked: one answer for all.
    #[error("invalid or missing API key")]
    Unauthenticated,
    #[error("this API key's scope does not allow this")]
    WrongScope,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Denied(#[from] AccessDenied),
    #[error("key store unavailable: {0}")]
    Unavailable(#[from] StoreError),
}

/// Decides what a stored key allows at `now`.
pub fn write_access(record: &KeyRecord, hash: &KeyHash, now: DateTime<Utc>) -> Result<WriteAccess, AccessDenied> {
    // The lookup was by hash; compare again in constant time so a lookup quirk
    // (collation, truncation) can never let a different key through.
    if !bool::from(record.key_hash.ct_eq(&hash.0)) {
        return Err(AccessDenied::Unauthenticated);
    }
    let usable =
        record.revoked_at.is_none_or(|at| at > now) && record.expires_at.is_none_or(|at| at > now) && !record.deleted;
    if !usable {
        return Err(AccessDenied::Unauthenticated);
    }
    match (record.scope, record.project_uid) {
        (Scope::Write, Some(project_uid)) => {
            Ok(WriteAccess { project_uid, key_uid: record.key_uid, store_full_ip: record.store_full_ip })
        }
        _ => Err(AccessDenied::WrongScope),
    }
}

type Cached = (Instant, Result<WriteAccess, AccessDenied>);

/// Checks write keys for ingest, caching answers in process so that ingest does not query
/// the database per request. A revoked key stops working within `ttl`. While the database
/// is unreachable, a key that was valid within `stale_if_error` keeps working: nobody can
/// revoke it then either, and refusing would lose the events.
pub struct WriteKeyVerifier {
    store: Store,
    hasher: KeyHasher,
    ttl: Duration,
    negative_ttl: Duration,
    stale_if_error: Duration,
    cache: Mutex<HashMap<KeyHash, Cached>>,
}

/// Bounds memory: past this many distinct keys the cache starts over.
const CACHE_CAPACITY: usize = 10_000;

impl WriteKeyVerifier {
    pub fn new(store: Store, hasher: KeyHasher, ttl: Duration) -> Self {
        Self {
            store,
            hasher,
            ttl,
            negative_ttl: ttl.min(Duration::from_secs(5)),
            stale_if_error: Duration::from_secs(3600).max(ttl),
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub async fn verify(&self, text: &str) -> Result<WriteAccess, VerifyError> {
        // A typo or garbage is refused here, without a lookup.
        let key = ApiKey::parse(text).map_err(|_| AccessDenied::Unauthenticated)?;
        if key.scope() != Scope::Write {
            return Err(AccessDenied::WrongScope.into());
        }
        let hash = self.hasher.hash(&key);
        let cached = self.cached(&hash);
        if let Some((at, answer)) = &cached {
            let ttl = if answer.is_ok() { self.ttl } else { self.negative_ttl };
            if at.elapsed() < ttl {
                return answer.clone().map_err(VerifyError::from);
            }
        }
        match self.store.find_key(&hash).await {
            Ok(record) => {
                let answer = match record {
                    Some(record) => write_access(&record, &hash, Utc::now()),
                    None => Err(AccessDenied::Unauthenticated),
                };
                self.remember(hash, answer.clone());
                answer.map_err(VerifyError::from)
            }
            Err(err) => match cached {
                Some((at, Ok(access))) if at.elapsed() < self.stale_if_error => {
                    tracing::warn!(error = %err, "key store unreachable; using the last known answer");
                    Ok(access)
                }
                _ => Err(VerifyError::Unavailable(err)),
            },
        }
    }

    fn cached(&self, hash: &KeyHash) -> Option<Cached> {
        self.cache.lock().unwrap_or_else(|poison| poison.into_inner()).get(hash).cloned()
    }

    fn remember(&self, hash: KeyHash, answer: Result<WriteAccess, AccessDenied>) {
        let mut cache = self.cache.lock().unwrap_or_else(|poison| poison.into_inner());
        if cache.len() >= CACHE_CAPACITY && !cache.contains_key(&hash) {
            cache.clear();
        }
        cache.insert(hash, (Instant::now(), answer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_carry_their_scope() {
        for scope in [Scope::Write, Scope::Read, Scope::Admin] {
            let key = ApiKey::generate(scope);
            assert_eq!(key.reveal().len(), KEY_CHARS);
            let parsed = ApiKey::parse(key.reveal()).expect("well-formed");
            assert_eq!(parsed.scope(), scope);
        }
    }

    #[test]
    fn a_one_character_typo_fails_the_checksum() {
        let key = ApiKey::generate(Scope::Write);
        let mut text = key.reveal().to_string();
        let position = 10;
        let replacement = if &text[position..=position] == "a" { "b" } else { "a" };
        text.replace_range(position..=position, replacement);
        assert_eq!(ApiKey::parse(&text).map(|_| ()), Err(MalformedKey));
    }

    #[test]
    fn garbage_is_malformed() {
        for text in ["", "evtw_", "Bearer x", "evtx_000000000000000000000000000000000000", "ключ"] {
            assert!(ApiKey::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn hashes_depend_on_the_pepper() {
        let key = ApiKey::generate(Scope::Write);
        let one = KeyHasher::new(&Secret::new("one".into()), 1).hash(&key);
        let two = KeyHasher::new(&Secret::new("two".into()), 2).hash(&key);
        assert_ne!(one, two);
    }

    #[test]
    fn debug_output_shows_only_the_prefix() {
        let key = ApiKey::generate(Scope::Admin);
        let printed = format!("{key:?}");
        assert!(!printed.contains(key.reveal()));
        assert!(printed.contains(key.display_prefix()));
    }
}
