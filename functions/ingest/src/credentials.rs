//! Where SDKs put the write key, in the order the protocol checks it: Basic auth user,
//! Bearer token, the body (`writeKey`, `api_key`, `token`), the `writeKey` query parameter.
//! Two different keys in one request are refused.

use evtrack::http::ApiError;
use evtrack::keys::key_from_authorization;
use http::request::Parts;
use http::{StatusCode, header};

/// The key of a request that carries one outside its body (header or query), so that it can
/// be checked before the body is inflated or parsed; `None` when only the body may hold it.
pub fn outside_body(parts: &Parts) -> Result<Option<String>, ApiError> {
    match find(parts, &[]) {
        Ok(key) => Ok(Some(key)),
        Err(err) if err.code == "unauthorized" && parts.headers.get(header::AUTHORIZATION).is_none() => Ok(None),
        Err(err) => Err(err),
    }
}

pub fn find(parts: &Parts, body_keys: &[String]) -> Result<String, ApiError> {
    let mut found: Vec<String> = Vec::new();
    let mut add = |key: String| {
        if !key.is_empty() && !found.contains(&key) {
            found.push(key);
        }
    };
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let text = value.to_str().map_err(|_| unauthorized())?;
        add(key_from_authorization(text).ok_or_else(unauthorized)?);
    }
    body_keys.iter().cloned().for_each(&mut add);
    if let Some(query) = parts.uri.query() {
        form_urlencoded::parse(query.as_bytes())
            .filter(|(name, _)| name == "writeKey")
            .for_each(|(_, value)| add(value.into_owned()));
    }
    match found.len() {
        0 => Err(unauthorized()),
        1 => Ok(found.remove(0)),
        _ => Err(ApiError::new(StatusCode::UNAUTHORIZED, "conflicting_keys", "the request carries two different keys")),
    }
}

pub fn unauthorized() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "invalid or missing write key")
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn parts(authorization: Option<&str>, uri: &str) -> Parts {
        let mut builder = http::Request::builder().uri(uri);
        if let Some(value) = authorization {
            builder = builder.header(header::AUTHORIZATION, value);
        }
        builder.body(()).expect("valid request").into_parts().0
    }

    fn basic(key: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{key}:")))
    }

    #[test]
    fn the_key_is_found_wherever_sdks_put_it() {
        assert_eq!(find(&parts(Some(&basic("k1")), "/v1/batch"), &[]).ok(), Some("k1".into()));
        assert_eq!(find(&parts(Some("Bearer k2"), "/v1/batch"), &[]).ok(), Some("k2".into()));
        assert_eq!(find(&parts(None, "/v1/batch"), &["k3".into()]).ok(), Some("k3".into()));
        assert_eq!(find(&parts(None, "/beacon/v1/batch?writeKey=k4"), &[]).ok(), Some("k4".into()));
    }

    #[test]
    fn the_same_key_twice_is_fine_two_different_keys_are_not() {
        assert_eq!(find(&parts(Some(&basic("k1")), "/v1/batch"), &["k1".into()]).ok(), Some("k1".into()));
        let err = find(&parts(Some(&basic("k1")), "/v1/batch"), &["k2".into()]).expect_err("conflict");
        assert_eq!((err.status, err.code), (StatusCode::UNAUTHORIZED, "conflicting_keys"));
    }

    #[test]
    fn no_key_or_a_garbled_header_is_unauthorized() {
        assert_eq!(find(&parts(None, "/v1/batch"), &[]).map_err(|e| e.status), Err(StatusCode::UNAUTHORIZED));
        assert_eq!(
            find(&parts(Some("Basic !!!"), "/v1/batch"), &[]).map_err(|e| e.status),
            Err(StatusCode::UNAUTHORIZED)
        );
    }
}
