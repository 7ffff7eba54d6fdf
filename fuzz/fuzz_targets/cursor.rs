//! Signed tokens (pagination cursors) as clients send them back, before the signature is
//! checked. Nothing panics; a token that parses has one spelling, the one `sign` writes.
#![no_main]

use evtrack::keys::token::SignedToken;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else { return };
    if let Ok(token) = SignedToken::parse(text) {
        assert_eq!(token.to_string(), text);
    }
});
