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
        Self { peppers: config.peppers().map(|pepper| Secret::new(pepper.expose().as_bytes().to_vec())).collect() }
    }
}

impl SubjectHashes for ErasedIdHasher {
    /// The database compares ids without their trailing spaces (PAD SPACE collations), so an
    /// erasure of `alice` deletes the rows of `alice ` too: the hashes are of the id without
    /// them, so that it suppresses both. An id that has some also gets the hashes of its exact
    /// text, which releases before this one stored.
    fn hashes(&self, project: ProjectId, subject: &str) -> Vec<[u8; 32]> {
        let as_compared = crate::ids::as_compared(subject);
        let mut hashes: Vec<[u8; 32]> = self.peppers.iter().map(|pepper| hash(pepper, project, as_compared)).collect();
        if as_compared.len() != subject.len() {
            hashes.extend(self.peppers.iter().map(|pepper| hash(pepper, project, subject)));
        }
        hashes
    }
}

fn hash(pepper: &Secret<Vec<u8>>, project: ProjectId, subject: &str) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(pepper.expose()).expect("HMAC takes any key length");
    // Domain-separated from key hashes.
    mac.update(b"evtrack-subject\0");
    mac.update(&project.0.to_be_bytes());
    mac.update(subject.as_bytes());
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hashes are stored (suppression list, erasure audit): they must never change.
    /// Known answers computed independently (Python's hmac over the same bytes).
    /// The development pepper, and an earlier one.
    fn hasher_of_two_peppers() -> ErasedIdHasher {
        let config = Config::with_overrides(&[
            ("EVTRACK_KEY_PEPPER", crate::config::DEVELOPMENT_PEPPER),
            ("EVTRACK_KEY_PEPPER_VERSION", "2"),
            ("EVTRACK_KEY_PEPPER_PREVIOUS", "old-pepper"),
            ("EVTRACK_KEY_PEPPER_PREVIOUS_VERSION", "1"),
        ])
        .expect("config");
        ErasedIdHasher::from_config(&config)
    }

    #[test]
    fn hashes_are_the_stored_ones_current_pepper_first() {
        let hex = |bytes: &[u8; 32]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let hashes = hasher_of_two_peppers().hashes(ProjectId(42), "user-1");
        assert_eq!(
            hashes.iter().map(hex).collect::<Vec<_>>(),
            [
                "378747a7f91a999bac16e094dfe6454b4e3d7c98f1807437b1fadc5200a6df19",
                "1415943d6399bf9905c57ba939ba9b6806cc1e28c684300fa2fa1265f018e3ab",
            ]
        );
    }

    #[test]
    fn an_id_with_trailing_spaces_hashes_as_the_database_compares_it_then_as_sent() {
        let hasher = hasher_of_two_peppers();
        let bare = hasher.hashes(ProjectId(42), "user-1");
        let padded = hasher.hashes(ProjectId(42), "user-1  ");
        assert_eq!(padded.len(), 4);
        assert_eq!(padded[..2], bare[..], "first as compared, current pepper first");
        assert!(!bare.contains(&padded[2]) && !bare.contains(&padded[3]), "then the exact text");
        assert_eq!(hasher.hashes(ProjectId(42), "user-1\t").len(), 2, "only spaces are padding");
    }
}
