//! The internal signing keyring: HMAC keys with ids, for tokens the server hands out and
//! takes back (pagination cursors and the like).
//!
//! The newest key whose signing window is open signs; a key keeps verifying for an overlap
//! after it stopped signing, then rotate-keys retires it and later purges its row. Secrets
//! are sealed at rest with AES-256-GCM under a master key from configuration (an env var
//! locally, Secrets Manager on AWS); the sealed row is bound to its key id.
//!
//! Token: `v1.<key id>.<payload, base64url>.<HMAC-SHA256(purpose, payload), base64url>`
//! (`token`).

pub use super::token::{InvalidToken, SignedToken};
use crate::config::{Config, KeyringPolicy, Secret};
use crate::store::{SealedSigningKey, Store, StoreError};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::Sha256;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Used when EVTRACK_MASTER_KEYS is unset, on a developer's machine only: the Lambda entry
/// points refuse to start without a configured master key.
pub const DEVELOPMENT_MASTER_KEYS: &str = "1:ZXZ0cmFjay1kZXZlbG9wbWVudC1tYXN0ZXIta2V5ISE";

/// How long a process trusts its copy of the keyring before reading it again.
const KEYRING_CACHE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("master keys: {0}")]
    MasterKeys(String),
    #[error("signing key {0} cannot be opened with the configured master keys")]
    Unsealable(Uuid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Master keys, newest first: the first seals, all open.
#[derive(Clone)]
pub struct MasterKeys {
    keys: Vec<(u16, Secret<[u8; 32]>)>,
}

impl MasterKeys {
    /// `version:base64,version:base64,...` with 32-byte keys, newest first.
    pub fn parse(text: &str) -> Result<Self, KeyringError> {
        let invalid = |reason: &str| KeyringError::MasterKeys(reason.to_string());
        let mut keys = Vec::new();
        for item in text.split(',').map(str::trim).filter(|item| !item.is_empty()) {
            let (version, encoded) = item.split_once(':').ok_or_else(|| invalid("expected version:base64"))?;
            let version: u16 = version.trim().parse().map_err(|_| invalid("the version is a number"))?;
            let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(encoded.trim().trim_end_matches('='))
                .or_else(|_| URL_SAFE_NO_PAD.decode(encoded.trim().trim_end_matches('=')))
                .map_err(|_| invalid("the key is not base64"))?;
            let key: [u8; 32] = bytes.try_into().map_err(|_| invalid("a master key is 32 bytes"))?;
            keys.push((version, Secret::new(key)));
        }
        if keys.is_empty() {
            return Err(invalid("no key given"));
        }
        Ok(Self { keys })
    }

    /// From EVTRACK_MASTER_KEYS (on AWS read from the secret EVTRACK_MASTER_KEYS_SECRET_ID
    /// names, see `Config::from_env_and_secrets`), or the development keys.
    pub fn load(config: &Config) -> Result<Self, KeyringError> {
        Self::parse(config.master_keys.as_ref().map_or(DEVELOPMENT_MASTER_KEYS, |keys| keys.expose().as_str()))
    }

    pub fn current_version(&self) -> u16 {
        self.keys[0].0
    }

    fn seal(&self, key_id: Uuid, secret: &[u8; 32]) -> Vec<u8> {
        let (_, master) = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut sealed = secret.to_vec();
        aead_key(master)
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(key_id.as_bytes()), &mut sealed)
            .expect("AES-GCM seals 32 bytes");
        [nonce.as_slice(), &sealed].concat()
    }

    fn open(&self, key_id: Uuid, version: u16, sealed: &[u8]) -> Option<[u8; 32]> {
        let (_, master) = self.keys.iter().find(|(v, _)| *v == version)?;
        let (nonce, ciphertext) = sealed.split_at_checked(NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buffer = ciphertext.to_vec();
        let plain = aead_key(master).open_in_place(nonce, Aad::from(key_id.as_bytes()), &mut buffer).ok()?;
        plain.try_into().ok()
    }
}

fn aead_key(master: &Secret<[u8; 32]>) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, master.expose()).expect("a 32-byte AES-256 key"))
}

/// An opened signing key.
#[derive(Clone)]
struct SigningKey {
    id: Uuid,
    secret: Secret<[u8; 32]>,
    created_at: DateTime<Utc>,
    signs_until: DateTime<Utc>,
    verifies_until: DateTime<Utc>,
}

pub struct Keyring {
    store: Store,
    master: MasterKeys,
    policy: KeyringPolicy,
    cache: Mutex<Option<(Instant, Vec<SigningKey>)>>,
}

impl Keyring {
    pub fn new(store: Store, master: MasterKeys, policy: KeyringPolicy) -> Self {
        Self { store, master, policy, cache: Mutex::new(None) }
    }

    /// The keyring with the master keys and policy `config` names.
    pub fn from_config(store: Store, config: &Config) -> Result<Self, KeyringError> {
        Ok(Self::new(store, MasterKeys::load(config)?, config.keyring_policy.clone()))
    }

    /// Signs `payload` for `purpose` with the current signing key (adding one if the ring has
    /// none that may sign: on first use, or if rotate-keys has not run in time).
    pub async fn sign(&self, purpose: &str, payload: &[u8]) -> Result<String, KeyringError> {
        self.sign_hiding(purpose, payload, &[]).await
    }

    /// As `sign`, with `hidden` (at most 32 bytes) after `shown` in the payload, unreadable
    /// without the key: XORed with a pad the key derives from the purpose and `shown`. For a
    /// value `shown` names (a cursor's row and its private id): a pad repeats only with its
    /// `shown`, and so with the same hidden value.
    pub async fn sign_hiding(&self, purpose: &str, shown: &[u8], hidden: &[u8]) -> Result<String, KeyringError> {
        let now = Utc::now();
        let mut keys = self.keys(false).await?;
        if !keys.iter().any(|key| key.signs_until > now) {
            self.add_key(now).await?;
            keys = self.keys(true).await?;
        }
        let key = keys
            .iter()
            .filter(|key| key.signs_until > now && key.created_at <= now)
            .max_by_key(|key| key.created_at)
            .ok_or_else(|| StoreError::Unavailable("no signing key after adding one".into()))?;
        let payload = [shown, &hide(&key.secret, purpose, shown, hidden)].concat();
        let signature = mac(&key.secret, purpose, &payload).finalize().into_bytes().to_vec();
        Ok(SignedToken { key_id: key.id, payload, signature }.to_string())
    }

    /// The payload of a token signed for `purpose` by a key that still verifies.
    pub async fn verify(&self, purpose: &str, token: &str) -> Result<Vec<u8>, VerifyTokenError> {
        let (payload, _) = self.verify_hiding(purpose, token, usize::MAX).await?;
        Ok(payload)
    }

    /// As `verify`, for a token of `sign_hiding` with `shown` bytes shown: those, and what the
    /// rest of the payload hid (nothing for a token that hid nothing).
    pub async fn verify_hiding(
        &self,
        purpose: &str,
        token: &str,
        shown: usize,
    ) -> Result<(Vec<u8>, Vec<u8>), VerifyTokenError> {
        let SignedToken { key_id: id, mut payload, signature } = SignedToken::parse(token)?;
        let now = Utc::now();
        let mut key = self.keys(false).await?.into_iter().find(|key| key.id == id);
        if key.is_none() {
            // Perhaps a key added by another process since this one read the ring.
            key = self.keys(true).await?.into_iter().find(|key| key.id == id);
        }
        let key = key.filter(|key| key.verifies_until > now).ok_or(InvalidToken)?;
        mac(&key.secret, purpose, &payload).verify_slice(&signature).map_err(|_| InvalidToken)?;
        let hidden = payload.split_off(shown.min(payload.len()));
        if hidden.len() > HIDDEN_MAX_BYTES {
            return Err(InvalidToken.into());
        }
        let hidden = hide(&key.secret, purpose, &payload, &hidden);
        Ok((payload, hidden))
    }

    /// Reads the ring again now, rather than when the process's copy is a minute old.
    pub async fn refresh(&self) -> Result<(), KeyringError> {
        self.keys(true).await.map(|_| ())
    }

    async fn keys(&self, refresh: bool) -> Result<Vec<SigningKey>, KeyringError> {
        if !refresh
            && let Some((at, keys)) = self.cache.lock().unwrap_or_else(|poison| poison.into_inner()).as_ref()
            && at.elapsed() < KEYRING_CACHE
        {
            return Ok(keys.clone());
        }
        let sealed = self.store.live_signing_keys().await?;
        // A key this process cannot open (sealed under a master key it lacks, or damaged)
        // is left out and reported: the others still sign and verify.
        let keys: Vec<SigningKey> = sealed
            .into_iter()
            .filter_map(|key| {
                self.open(key)
                    .map_err(|err| tracing::error!(error = %err, "signing key skipped: it cannot be unsealed"))
                    .ok()
            })
            .collect();
        *self.cache.lock().unwrap_or_else(|poison| poison.into_inner()) = Some((Instant::now(), keys.clone()));
        Ok(keys)
    }

    fn open(&self, key: SealedSigningKey) -> Result<SigningKey, KeyringError> {
        let secret =
            self.master.open(key.id, key.master_version, &key.sealed).ok_or(KeyringError::Unsealable(key.id))?;
        Ok(SigningKey {
            id: key.id,
            secret: Secret::new(secret),
            created_at: key.created_at,
            signs_until: key.signs_until,
            verifies_until: key.verifies_until,
        })
    }

    /// A new key, sealed, with its signing and verification windows from `now`.
    pub fn new_sealed_key(&self, now: DateTime<Utc>) -> SealedSigningKey {
        let id = crate::ids::new_public_id();
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let signs_until = now + self.policy.rotation;
        SealedSigningKey {
            id,
            sealed: self.master.seal(id, &secret),
            master_version: self.master.current_version(),
            created_at: now,
            signs_until,
            verifies_until: signs_until + self.policy.overlap,
        }
    }

    async fn add_key(&self, now: DateTime<Utc>) -> Result<(), KeyringError> {
        let key = self.new_sealed_key(now);
        tracing::info!(key_id = %key.id, signs_until = %key.signs_until, "signing key added");
        self.store.insert_signing_key(&key).await?;
        Ok(())
    }

    pub fn policy(&self) -> &KeyringPolicy {
        &self.policy
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyTokenError {
    #[error(transparent)]
    Invalid(#[from] InvalidToken),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
}

/// A private row id as a token hides it (`Keyring::sign_hiding`): 8 bytes, or none.
pub fn hidden_row(row: Option<u64>) -> Vec<u8> {
    row.map(|row| row.to_be_bytes().to_vec()).unwrap_or_default()
}

/// The private row id a token hid (`hidden_row`), if it hid one.
pub fn row_from_hidden(hidden: &[u8]) -> Result<Option<u64>, InvalidToken> {
    match hidden {
        [] => Ok(None),
        bytes => Ok(Some(u64::from_be_bytes(bytes.try_into().map_err(|_| InvalidToken)?))),
    }
}

/// The most a token hides: one HMAC-SHA256 output of pad.
const HIDDEN_MAX_BYTES: usize = 32;

/// `hidden` XORed with the pad of (`purpose`, `shown`): hides a value, and shows it again.
fn hide(secret: &Secret<[u8; 32]>, purpose: &str, shown: &[u8], hidden: &[u8]) -> Vec<u8> {
    assert!(hidden.len() <= HIDDEN_MAX_BYTES, "a token hides at most {HIDDEN_MAX_BYTES} bytes");
    if hidden.is_empty() {
        return Vec::new();
    }
    let mut pad = Hmac::<Sha256>::new_from_slice(secret.expose()).expect("HMAC takes any key length");
    // 0xFF never starts a UTF-8 purpose: no pad is the signature of any token.
    pad.update(&[0xFF]);
    pad.update(purpose.as_bytes());
    pad.update(&[0]);
    pad.update(shown);
    let pad = pad.finalize().into_bytes();
    hidden.iter().zip(pad).map(|(byte, pad)| byte ^ pad).collect()
}

fn mac(secret: &Secret<[u8; 32]>, purpose: &str, payload: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose()).expect("HMAC takes any key length");
    // The purpose is part of what is signed: a token for one use is refused for another.
    mac.update(purpose.as_bytes());
    mac.update(&[0]);
    mac.update(payload);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master(text: &str) -> MasterKeys {
        MasterKeys::parse(text).expect("valid master keys")
    }

    #[test]
    fn sealed_secrets_open_only_with_their_master_key_and_key_id() {
        let keys = master(DEVELOPMENT_MASTER_KEYS);
        let id = Uuid::now_v7();
        let sealed = keys.seal(id, &[7u8; 32]);
        assert!(!sealed.windows(32).any(|window| window == [7u8; 32]), "the secret is not stored in clear");
        assert_eq!(keys.open(id, 1, &sealed), Some([7u8; 32]));
        assert_eq!(keys.open(Uuid::now_v7(), 1, &sealed), None, "bound to its key id");
        assert_eq!(keys.open(id, 2, &sealed), None, "unknown master version");
        let other = master("1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(other.open(id, 1, &sealed), None, "another master key");
    }

    #[test]
    fn a_rotated_master_key_still_opens_what_the_previous_one_sealed() {
        let old = master(DEVELOPMENT_MASTER_KEYS);
        let id = Uuid::now_v7();
        let sealed = old.seal(id, &[9u8; 32]);
        let rotated = master(&format!("2:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA,{DEVELOPMENT_MASTER_KEYS}"));
        assert_eq!(rotated.current_version(), 2);
        assert_eq!(rotated.open(id, 1, &sealed), Some([9u8; 32]));
    }

    #[test]
    fn a_hidden_value_shows_again_only_with_its_key_purpose_and_shown_bytes() {
        let secret = Secret::new([3u8; 32]);
        let row = 123_456_789u64.to_be_bytes();
        let hidden = hide(&secret, "events:1", b"row a", &row);
        assert_ne!(hidden, row);
        assert_eq!(hide(&secret, "events:1", b"row a", &hidden), row);
        assert_ne!(hide(&secret, "events:1", b"row b", &row), hidden, "another row, another pad");
        assert_ne!(hide(&secret, "events:2", b"row a", &hidden), row);
        assert_ne!(hide(&Secret::new([4u8; 32]), "events:1", b"row a", &hidden), row);
        assert!(hide(&secret, "events:1", b"row a", &[]).is_empty());
    }

    #[test]
    fn malformed_master_keys_are_refused_with_the_reason() {
        for (text, reason) in
            [("", "no key"), ("abc", "version:base64"), ("1:c2hvcnQ", "32 bytes"), ("x:AAAA", "number")]
        {
            let err = MasterKeys::parse(text).err().map(|err| err.to_string()).unwrap_or_default();
            assert!(err.contains(reason), "{text}: {err}");
        }
    }
}
