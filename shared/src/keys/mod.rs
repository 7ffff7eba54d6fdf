//! API keys: format, checksum, keyed hashing, scopes, expiry and what a stored key allows.
//! `verifier` checks keys per request, `service` creates, rotates and revokes them, and
//! `keyring` holds the internal signing keys.
//!
//! Format (GitHub's token format is the model): a kind prefix that secret scanners can match
//! (`evtw_`, `evtr_`, `evta_`), 30 base62 characters from a CSPRNG (178 bits), and 6 base62
//! characters of CRC32 over the rest, so a mistyped key is refused before any lookup.
//! Only HMAC-SHA256(pepper, key) is stored, beside the pepper's version.

mod erased_ids;
#[cfg(feature = "adapters")]
pub mod keyring;
#[cfg(feature = "adapters")]
mod service;
pub mod token;
#[cfg(feature = "adapters")]
mod usage;
#[cfg(feature = "adapters")]
mod verifier;

pub use erased_ids::ErasedIdHasher;
#[cfg(feature = "adapters")]
pub use service::{KeyService, NewKeyRequest};
#[cfg(feature = "adapters")]
pub use usage::{KEY_USE_INTERVAL, KeyUseRecorder};
#[cfg(feature = "adapters")]
pub use verifier::{KeyHashers, KeyVerifier};

use crate::config::{KeyPolicy, Secret};
use crate::ids::ProjectId;
use crate::model::IpPolicy;
pub use crate::model::{KeyHash, Scope};
#[cfg(feature = "adapters")]
use crate::store::{KeyRecord, StoreError};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use uuid::Uuid;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const RANDOM_CHARS: usize = 30;
const CHECKSUM_CHARS: usize = 6;
const PREFIX_CHARS: usize = 5;
pub const KEY_CHARS: usize = PREFIX_CHARS + RANDOM_CHARS + CHECKSUM_CHARS;
/// How much of a key may be shown or logged to identify it.
pub const DISPLAY_PREFIX_CHARS: usize = 12;

/// The prefix that names a key's scope (secret scanners match on it).
fn prefix(scope: Scope) -> &'static str {
    match scope {
        Scope::Write => "evtw_",
        Scope::Read => "evtr_",
        Scope::Admin => "evta_",
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
        text.push_str(prefix(scope));
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
            .find(|scope| self::prefix(*scope) == prefix)
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

/// The key in an `Authorization` header: `Bearer <key>`, or Basic with the key as the user
/// and an empty password (`key:`, as RudderStack and Segment send it). `None` otherwise.
pub fn key_from_authorization(value: &str) -> Option<String> {
    use base64::Engine;
    let (scheme, rest) = value.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_string());
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split_once(':').map_or(text.as_str(), |(user, _)| user).to_string())
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

/// What a valid key lets its holder do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub key_uid: Uuid,
    pub scope: Scope,
    /// The key's project; admin keys have none.
    pub project_uid: Option<Uuid>,
    /// Its private id (the project was live when the key was looked up).
    pub project_id: Option<ProjectId>,
    pub ip_policy: IpPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessDenied {
    /// Missing, malformed, unknown, expired, revoked, past its rotation grace: one answer for all.
    #[error("invalid or missing API key")]
    Unauthenticated,
    #[error("this API key's scope does not allow this")]
    WrongScope,
}

#[cfg(feature = "adapters")]
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Denied(#[from] AccessDenied),
    #[error("key store unavailable: {0}")]
    Unavailable(#[from] StoreError),
}

/// Decides what a stored key allows at `now`, whatever scope is asked for.
#[cfg(feature = "adapters")]
pub fn access(record: &KeyRecord, hash: &KeyHash, now: DateTime<Utc>) -> Result<Access, AccessDenied> {
    use subtle::ConstantTimeEq;
    // The lookup was by hash; compare again in constant time so a lookup quirk
    // (collation, truncation) can never let a different key through.
    if !bool::from(record.key_hash.ct_eq(&hash.0)) {
        return Err(AccessDenied::Unauthenticated);
    }
    let before = |limit: Option<DateTime<Utc>>| limit.is_none_or(|at| now < at);
    let usable = before(record.revoked_at) && before(record.expires_at) && before(record.grace_ends_at);
    let project_matches_scope = record.project_uid.is_some() != (record.scope == Scope::Admin);
    if !usable || !project_matches_scope {
        return Err(AccessDenied::Unauthenticated);
    }
    Ok(Access {
        key_uid: record.key_uid,
        scope: record.scope,
        project_uid: record.project_uid,
        project_id: record.project_id,
        ip_policy: record.ip_policy,
    })
}

impl Access {
    /// Scopes do not nest: a write key only ingests, a read key only reads, an admin key
    /// only manages.
    pub fn require(self, scope: Scope) -> Result<Self, AccessDenied> {
        if self.scope == scope { Ok(self) } else { Err(AccessDenied::WrongScope) }
    }
}

/// When a new key expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// The scope's default lifetime (KeyPolicy).
    Default,
    After(chrono::Duration),
    /// Only when asked for explicitly.
    Never,
}

impl KeyPolicy {
    pub fn expires_at(&self, scope: Scope, expiry: Expiry, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match expiry {
            Expiry::Default => Some(now + self.default_lifetime(scope)),
            Expiry::After(after) => Some(now + after),
            Expiry::Never => None,
        }
    }

    /// When the successor of a key made at `created_at` (expiring at `expires_at`) expires if
    /// made `now`: after the key's own lifetime, as its maker chose it (a contractor's week
    /// stays a week), at most the scope's default; a key that never expired gets the default.
    pub fn successor_expires_at(
        &self,
        scope: Scope,
        created_at: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        let default = self.default_lifetime(scope);
        let lifetime = expires_at.map_or(default, |expires_at| (expires_at - created_at).min(default));
        now + lifetime.max(chrono::Duration::zero())
    }

    fn default_lifetime(&self, scope: Scope) -> chrono::Duration {
        match scope {
            Scope::Write => self.write_expiry,
            Scope::Read => self.read_expiry,
            Scope::Admin => self.admin_expiry,
        }
    }

    /// The grace period of a rotation: the default, or what was asked for up to the cap.
    pub fn rotation_grace(&self, requested: Option<chrono::Duration>) -> Result<chrono::Duration, String> {
        let grace = requested.unwrap_or(self.rotation_grace);
        if grace < chrono::Duration::zero() || grace > self.max_rotation_grace {
            return Err(format!("the grace period is 0 to {} hours", self.max_rotation_grace.num_hours()));
        }
        Ok(grace)
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
    fn a_successor_keeps_its_keys_lifetime_up_to_the_default() {
        let policy = KeyPolicy {
            write_expiry: chrono::Duration::days(365),
            read_expiry: chrono::Duration::days(180),
            admin_expiry: chrono::Duration::days(90),
            rotation_grace: chrono::Duration::hours(24),
            max_rotation_grace: chrono::Duration::days(30),
        };
        let made = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").expect("time").to_utc();
        let now = made + chrono::Duration::days(3);
        let week = Some(made + chrono::Duration::days(7));
        assert_eq!(policy.successor_expires_at(Scope::Read, made, week, now), now + chrono::Duration::days(7));
        let two_years = Some(made + chrono::Duration::days(730));
        assert_eq!(policy.successor_expires_at(Scope::Read, made, two_years, now), now + chrono::Duration::days(180));
        assert_eq!(policy.successor_expires_at(Scope::Write, made, None, now), now + chrono::Duration::days(365));
    }

    #[test]
    fn debug_output_shows_only_the_prefix() {
        let key = ApiKey::generate(Scope::Admin);
        let printed = format!("{key:?}");
        assert!(!printed.contains(key.reveal()));
        assert!(printed.contains(key.display_prefix()));
    }
}
