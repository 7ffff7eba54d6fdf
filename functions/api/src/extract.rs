//! What the api takes from a request before a handler runs, in one place: the caller's key
//! (`Admin`, `OnProject`), the list query, the JSON body, a path id. Each check happens
//! before anything else of the request is read; a read key's GET may read its own project
//! beside the check instead, answered only after it (`speculation`).

use crate::audit::Actor;
use crate::{Api, Failure};
use axum::extract::FromRequestParts;
use bytes::Bytes;
use evtrack::ids::ProjectId;
use evtrack::keys::{Access, Scope};
use http::request::Parts;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use uuid::Uuid;

/// Request bodies are small JSON objects.
const MAX_BODY_BYTES: usize = 64 * 1024;

pub(crate) type Reply = Result<axum::response::Response, Failure>;

/// The caller holds an admin key (checked before anything else is read).
pub(crate) struct Admin(pub Access);

impl FromRequestParts<Arc<Api>> for Admin {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, Failure> {
        let access = api.authorize(&parts.headers, Scope::Admin).await?;
        Actor::set(&parts.extensions, access.key_uid, access.project_uid);
        Ok(Self(access))
    }
}

/// The query parameters of the list routes. Parsed here rather than by axum's `Query`, so
/// that a bad query string gets the same JSON error as everything else.
#[derive(Debug, Default)]
pub struct ListQuery {
    pub(crate) limit: Option<String>,
    pub(crate) cursor: Option<String>,
    pub(crate) project: Option<String>,
    pub(crate) deleted: Option<String>,
    /// Filters of `GET /v1/rejected-events`.
    pub(crate) reason: Option<String>,
    pub(crate) from: Option<String>,
    pub(crate) to: Option<String>,
}

impl ListQuery {
    pub(crate) fn parse(query: Option<&str>) -> Result<Self, Failure> {
        let mut parsed = Self::default();
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let slot = match name.as_ref() {
                "limit" => &mut parsed.limit,
                "cursor" => &mut parsed.cursor,
                "project" => &mut parsed.project,
                "deleted" => &mut parsed.deleted,
                "reason" => &mut parsed.reason,
                "from" => &mut parsed.from,
                "to" => &mut parsed.to,
                // Unknown parameters are ignored, as most APIs do (cache busters and the like).
                _ => continue,
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(Failure::Invalid(format!("the query parameter {name} is given twice")));
            }
        }
        Ok(parsed)
    }
}

/// A JSON body into `T`; an empty body counts as `{}`. Unknown fields are refused, so a
/// misspelt setting is an error rather than silently ignored.
pub(crate) fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Failure> {
    if bytes.len() > MAX_BODY_BYTES {
        return Err(Failure::Invalid(format!("the body exceeds {MAX_BODY_BYTES} bytes")));
    }
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { bytes };
    serde_json::from_slice(text).map_err(|err| Failure::Invalid(format!("invalid JSON body: {err}")))
}

/// A time parameter.
pub(crate) fn rfc3339(name: &str, text: &str) -> Result<chrono::DateTime<chrono::Utc>, Failure> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|at| at.with_timezone(&chrono::Utc))
        .filter(in_time_range)
        .ok_or_else(|| {
            Failure::Invalid(format!("{name} is an RFC 3339 time of the years 1 to 9999, e.g. 2026-12-01T00:00:00Z"))
        })
}

/// Whether a time asked about is one a question can hold: the years 1 to 9999, as the database
/// holds them. chrono reads years up to 262,143, where a bucket or a window added overflows.
pub(crate) fn in_time_range(at: &chrono::DateTime<chrono::Utc>) -> bool {
    (1..=9999).contains(&chrono::Datelike::year(at))
}

/// `serde(deserialize_with)` for the times of a question's body: RFC 3339, the years 1 to 9999.
pub(crate) fn bounded_time<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<chrono::DateTime<chrono::Utc>, D::Error> {
    let at: chrono::DateTime<chrono::Utc> = serde::Deserialize::deserialize(deserializer)?;
    if !in_time_range(&at) {
        return Err(serde::de::Error::custom(format!("{at} is not a time of the years 1 to 9999")));
    }
    Ok(at)
}

/// A public id from the path; anything else is simply not found.
pub(crate) fn id(text: &str) -> Result<Uuid, Failure> {
    Uuid::try_parse(text).map_err(|_| Failure::NotFound)
}

/// The project a request on project data is about, from a key allowed on the route: a read
/// key's own project, or `?project=` with an admin key. Taken before anything else is read,
/// or (a read key's GET, `speculation`) beside its key's check, which its answer waits for.
pub struct OnProject<const ADMIN_ONLY: bool>(pub ProjectId);
/// Read or admin keys.
pub(crate) type Reading = OnProject<false>;
/// Admin keys only.
pub(crate) type Managing = OnProject<true>;

impl<const ADMIN_ONLY: bool> FromRequestParts<Arc<Api>> for OnProject<ADMIN_ONLY> {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, Failure> {
        let scopes: &'static [Scope] = if ADMIN_ONLY { &[Scope::Admin] } else { &[Scope::Read, Scope::Admin] };
        if let Some((project, assumed)) = crate::speculation::start(parts, api, scopes) {
            Actor::set(&parts.extensions, assumed.key_uid, assumed.project_uid);
            return Ok(Self(project));
        }
        let access = api.authorize_any(&parts.headers, scopes).await?;
        Actor::set(&parts.extensions, access.key_uid, access.project_uid);
        let query = ListQuery::parse(parts.uri.query())?;
        Ok(Self(api.project_of(&access, query.project.as_deref()).await?))
    }
}
