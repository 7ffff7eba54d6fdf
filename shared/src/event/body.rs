//! Transport encodings of request bodies: gzip (announced by header or sniffed by its magic
//! bytes, as rudder-sdk-python and posthog-js send it), and posthog-js's form posts
//! (`data=<base64 JSON>`). Inflation is capped so a gzip bomb costs at most `limit` bytes.

use base64::Engine;
use bytes::Bytes;
use std::io::Read;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds {limit} bytes after decompression")]
    TooLarge { limit: usize },
    #[error("request body is not valid gzip: {0}")]
    BadGzip(String),
    #[error("Content-Encoding {0:?} is not supported; send gzip or no encoding")]
    UnsupportedEncoding(String),
    #[error("form field data is not valid base64")]
    BadForm,
}

/// The JSON bytes inside a request body.
pub fn json_bytes(
    raw: Bytes,
    content_encoding: Option<&str>,
    content_type: Option<&str>,
    limit: usize,
) -> Result<Bytes, BodyError> {
    let announced_gzip = match content_encoding.map(|value| value.trim().to_ascii_lowercase()) {
        None => false,
        Some(value) if value.is_empty() || value == "identity" => false,
        Some(value) if value == "gzip" || value == "x-gzip" => true,
        Some(value) => return Err(BodyError::UnsupportedEncoding(value)),
    };
    let body = if announced_gzip || raw.starts_with(&GZIP_MAGIC) { inflate(&raw, limit)? } else { raw };
    let is_form = content_type.is_some_and(|value| value.trim_start().starts_with("application/x-www-form-urlencoded"));
    if is_form && !body.starts_with(b"{") && !body.starts_with(b"[") {
        return form_data(&body, limit);
    }
    Ok(body)
}

fn inflate(compressed: &[u8], limit: usize) -> Result<Bytes, BodyError> {
    let mut inflated = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit));
    flate2::read::MultiGzDecoder::new(compressed)
        .take(limit as u64 + 1)
        .read_to_end(&mut inflated)
        .map_err(|err| BodyError::BadGzip(err.to_string()))?;
    if inflated.len() > limit {
        return Err(BodyError::TooLarge { limit });
    }
    Ok(Bytes::from(inflated))
}

/// posthog-js (older versions, and some proxies) post `data=<base64 of JSON or gzip>`.
fn form_data(body: &[u8], limit: usize) -> Result<Bytes, BodyError> {
    let data = form_urlencoded::parse(body)
        .find(|(name, _)| name == "data")
        .map(|(_, value)| value.into_owned())
        .ok_or(BodyError::BadForm)?;
    let compact: String = data.chars().filter(|c| !c.is_whitespace()).collect();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(compact.as_bytes()))
        .map_err(|_| BodyError::BadForm)?;
    if decoded.starts_with(&GZIP_MAGIC) {
        return inflate(&decoded, limit);
    }
    if decoded.len() > limit {
        return Err(BodyError::TooLarge { limit });
    }
    Ok(Bytes::from(decoded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;

    fn gzip(data: &[u8]) -> Bytes {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).expect("in memory");
        Bytes::from(encoder.finish().expect("in memory"))
    }

    #[test]
    fn plain_json_passes_through() {
        let body = Bytes::from_static(b"{\"batch\":[]}");
        assert_eq!(json_bytes(body.clone(), None, Some("application/json"), 100), Ok(body));
    }

    #[test]
    fn gzip_is_inflated_by_header_or_by_magic_bytes() {
        let compressed = gzip(b"{\"a\":1}");
        assert_eq!(json_bytes(compressed.clone(), Some("gzip"), None, 100).as_deref(), Ok(&b"{\"a\":1}"[..]));
        assert_eq!(json_bytes(compressed, None, Some("text/plain"), 100).as_deref(), Ok(&b"{\"a\":1}"[..]));
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![b' '; 50 * 1024 * 1024]);
        assert!(bomb.len() < 100 * 1024, "the bomb is small: {}", bomb.len());
        assert_eq!(json_bytes(bomb, Some("gzip"), None, 1024), Err(BodyError::TooLarge { limit: 1024 }));
    }

    #[test]
    fn broken_gzip_and_unknown_encodings_are_named() {
        assert!(matches!(
            json_bytes(Bytes::from_static(&[0x1f, 0x8b, 1, 2, 3]), None, None, 100),
            Err(BodyError::BadGzip(_))
        ));
        assert_eq!(
            json_bytes(Bytes::from_static(b"{}"), Some("br"), None, 100),
            Err(BodyError::UnsupportedEncoding("br".into()))
        );
    }

    #[test]
    fn posthog_form_posts_are_decoded() {
        let encoded = base64::engine::general_purpose::STANDARD.encode(b"[{\"event\":\"x\"}]");
        let body: String = form_urlencoded::Serializer::new(String::new()).append_pair("data", &encoded).finish();
        assert_eq!(
            json_bytes(Bytes::from(body), None, Some("application/x-www-form-urlencoded"), 100).as_deref(),
            Ok(&b"[{\"event\":\"x\"}]"[..])
        );
    }
}
