//! Signed tokens as the keyring writes them and clients send them back (pagination cursors):
//! `v1.<key id>.<payload, base64url>.<HMAC-SHA256(purpose, payload), base64url>`. Reading one
//! here says nothing of whether it is genuine; `keyring` checks the signature.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

const TOKEN_VERSION: &str = "v1";

/// A token that is malformed, forged, or signed by a key that no longer verifies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid or expired token")]
pub struct InvalidToken;

/// A token's parts, before its signature is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedToken {
    pub key_id: Uuid,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

impl SignedToken {
    /// Reads `v1.<key id>.<payload>.<signature>`; says nothing of whether it is genuine.
    pub fn parse(token: &str) -> Result<Self, InvalidToken> {
        let mut parts = token.split('.');
        let (Some(TOKEN_VERSION), Some(id), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(InvalidToken);
        };
        // Only the form `sign` writes (32 lowercase hex digits): a token has one spelling.
        if id.len() != 32 || !id.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(InvalidToken);
        }
        Ok(Self {
            key_id: Uuid::try_parse(id).map_err(|_| InvalidToken)?,
            payload: URL_SAFE_NO_PAD.decode(payload).map_err(|_| InvalidToken)?,
            signature: URL_SAFE_NO_PAD.decode(signature).map_err(|_| InvalidToken)?,
        })
    }
}

impl std::fmt::Display for SignedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{TOKEN_VERSION}.{}.{}.{}",
            self.key_id.simple(),
            URL_SAFE_NO_PAD.encode(&self.payload),
            URL_SAFE_NO_PAD.encode(&self.signature)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_as_written_and_has_one_spelling() {
        let token =
            SignedToken { key_id: Uuid::from_u128(0xfeed), payload: b"after".to_vec(), signature: vec![1, 2, 3] };
        let text = token.to_string();
        assert_eq!(SignedToken::parse(&text), Ok(token));
        let hyphenated =
            text.replacen(&Uuid::from_u128(0xfeed).simple().to_string(), &Uuid::from_u128(0xfeed).to_string(), 1);
        for bad in [
            "",
            "v1",
            "v2.a.b.c",
            &format!("{text}.x"),
            &hyphenated,
            &text.replacen("v1", "V1", 1),
            &text.to_uppercase().replacen("V1", "v1", 1),
        ] {
            assert_eq!(SignedToken::parse(bad), Err(InvalidToken), "{bad}");
        }
    }
}
