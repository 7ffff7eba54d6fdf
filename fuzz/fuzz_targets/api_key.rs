//! The credentials of a request: the `Authorization` header (Bearer, Basic) and the key
//! format with its checksum. Nothing panics; a key that parses is exactly its own text.
#![no_main]

use evtrack::keys::{ApiKey, key_from_authorization};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else { return };
    if let Ok(key) = ApiKey::parse(text) {
        assert_eq!(key.reveal(), text.trim());
        assert_eq!(ApiKey::parse(key.reveal()).map(|again| again.scope()), Ok(key.scope()));
    }
    if let Some(key) = key_from_authorization(text) {
        let _ = ApiKey::parse(&key);
    }
});
