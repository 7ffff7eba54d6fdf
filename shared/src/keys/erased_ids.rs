//! The keyed hashes of erased people's ids (GDPR erasure): the suppression list and the
//! erasure audit keep these instead of the ids. Keyed by the API-key pepper, with their own
//! domain, so that a database dump alone cannot test whether an id was erased.

use crate::config::{Config, Secret};
use crate::ids::ProjectId;
use crate::model::SubjectHashes;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The current pepper, and the one before it while hashes made under it remain.
pub struct ErasedIdHasher {
    peppers: Vec<Secret<Vec<u8>>>,
}

impl ErasedIdHasher {
    pub fn from_config(config: &Config) -> Self {
        let current = std::iter::once(&config.key_pepper);
        let previous = config.key_pepper_previous.iter().map(|(pepper, _)| pepper);
        Self {
            peppers: current.chain(previous).map(|pepper| Secret::new(pepper.expose().as_bytes().to_vec())).collect(),
        }
    }
}

impl SubjectHashes for ErasedIdHasher {
    fn hashes(&self, project: ProjectId, subject: &str) -> Vec<[u8; 32]> {
        self.peppers
            .iter()
            .map(|pepper| {
                let mut mac = Hmac::<Sha256>::new_from_slice(pepper.expose()).expect("HMAC takes any key length");
                // Domain-separated from key hashes.
                mac.update(b"evtrack-subject\0");
                mac.update(&project.0.to_be_bytes());
                mac.update(subject.as_bytes());
                mac.finalize().into_bytes().into()
            })
            .collect()
    }
}
