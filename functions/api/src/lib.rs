//! evtrack api: management (projects, keys, job runs) for admin keys. The query routes for
//! read keys build on the same pieces: `Api::authorize`, `Page`, `Failure`.
//!
//! The same router runs on Lambda (`lambda_http::run`) and in the local stack.

mod audit;
mod cohorts;
mod dashboard;
mod data;
pub mod export;
mod extract;
mod lists;
mod pages;
mod properties;
mod queries;
mod routes;
mod speculation;

pub use dashboard::CSP as DASHBOARD_CSP;
pub use lists::{EXPORT_CURSOR_HEADER, EXPORT_MAX_BYTES};
pub use pages::Page;
pub use routes::{router, routes, standalone_router};

use axum::response::{IntoResponse, Response};
use evtrack::Config;
use evtrack::http::ApiError;
use evtrack::ids::ProjectId;
use evtrack::jobs::{JobError, JobRunners};
use evtrack::keys::keyring::{Keyring, KeyringError, VerifyTokenError};
use evtrack::keys::{
    Access, AccessDenied, ErasedIdHasher, KeyHashers, KeyService, KeyUseRecorder, KeyVerifier, Scope, VerifyError,
    key_from_authorization,
};
use evtrack::limits::RateLimiter;
use evtrack::store::{KeyChangeError, Store, StoreError};
use http::StatusCode;
use std::sync::Arc;
use uuid::Uuid;

/// Everything a request needs, built once per process.
pub struct Api {
    store: Store,
    verifier: KeyVerifier,
    keys: KeyService,
    keyring: Arc<Keyring>,
    key_use: KeyUseRecorder,
    erased_ids: ErasedIdHasher,
    jobs: JobRunners,
    /// Failed authentications per client address (`http::throttle_failed_auth`).
    failed_auth: Arc<RateLimiter>,
    /// Index entries one list page may examine.
    list_rows_examined: usize,
    /// How long a soft-deleted project can be restored (the cleanup job's grace).
    soft_delete_grace: chrono::Duration,
}

impl Api {
    /// `jobs` runs the slots `POST /v1/jobs/{name}/runs` triggers: on AWS by invoking the job
    /// functions, locally in this process.
    pub fn new(config: &Config, store: Store, keyring: Arc<Keyring>, jobs: JobRunners) -> Self {
        Self {
            verifier: KeyVerifier::uncached(store.clone(), KeyHashers::from_config(config)),
            keys: KeyService::new(store.clone(), config),
            key_use: KeyUseRecorder::new(store.clone()),
            erased_ids: ErasedIdHasher::from_config(config),
            jobs,
            failed_auth: Arc::new(RateLimiter::failed_auth_per_address(
                config.redis_url.as_ref().map(|url| url.expose().as_str()),
                config.auth_failures_per_minute,
            )),
            list_rows_examined: config.list_rows_examined,
            soft_delete_grace: config.cleanup.soft_delete_grace,
            keyring,
            store: store.reading_at_most(config.max_rows_read),
        }
    }

    /// The caller's key from `Authorization: Bearer <key>` (or Basic with the key as user),
    /// checked against the database on every request, and required to have `scope`.
    pub async fn authorize(&self, headers: &http::HeaderMap, scope: Scope) -> Result<Access, Failure> {
        self.authorize_any(headers, &[scope]).await
    }

    /// As `authorize`, for routes that more than one scope may use.
    pub async fn authorize_any(&self, headers: &http::HeaderMap, scopes: &[Scope]) -> Result<Access, Failure> {
        let text = caller_key(headers).ok_or(Failure::Denied(AccessDenied::Unauthenticated))?;
        let access = self.verifier.verify_any(&text).await?;
        if !scopes.contains(&access.scope) {
            return Err(Failure::Denied(AccessDenied::WrongScope));
        }
        self.key_use.record([(access.key_uid, chrono::Utc::now())]).await;
        Ok(access)
    }

    /// The project a request on project data is about: a read key's own project, or the
    /// `project` parameter with an admin key. Another project's id is answered as missing.
    pub async fn project_of(&self, access: &Access, requested: Option<&str>) -> Result<ProjectId, Failure> {
        let requested = match requested {
            Some(text) => Some(Uuid::try_parse(text).map_err(|_| Failure::NotFound)?),
            None => None,
        };
        let uid = match (access.project_uid, requested) {
            (Some(own), Some(asked)) if own != asked => return Err(Failure::NotFound),
            (Some(own), _) => own,
            (None, Some(asked)) => asked,
            (None, None) => return Err(Failure::Invalid("give the project: ?project=<id>".into())),
        };
        // A project key's own project was live when the key was looked up, in this request
        // (the api does not cache keys; a read beside the check is answered only if this
        // request's own lookup finds the same): no second lookup.
        if let (Some(own), Some(id)) = (access.project_uid, access.project_id)
            && own == uid
        {
            return Ok(id);
        }
        self.store.project_id(uid).await?.ok_or(Failure::NotFound)
    }
}

/// The key in a request's `Authorization` header, if it holds one.
fn caller_key(headers: &http::HeaderMap) -> Option<String> {
    headers.get(http::header::AUTHORIZATION).and_then(|value| value.to_str().ok()).and_then(key_from_authorization)
}

/// Every way a request can fail, mapped to one status and JSON body each.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Denied(#[from] AccessDenied),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("invalid or expired cursor")]
    InvalidCursor,
    /// The question would take the database too long as asked, or read more rows than one
    /// read of a question may.
    #[error("too big a question")]
    TooBig,
    /// `TooBig`, for a question answered from the raw rows: with how to ask so that the
    /// rollups answer it.
    #[error("too big a question for the raw rows")]
    TooBigForRawRows(&'static str),
    /// A user's GDPR export past what one answer carries (`EXPORT_MAX_BYTES`).
    #[error("export too large for one answer")]
    ExportTooLarge,
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A bug or a corrupt row: logged, answered 500 without detail.
    #[error("internal error: {0}")]
    Internal(String),
    /// A job run failed, or its function could not be invoked or did not answer in time.
    #[error("job failed: {0}")]
    JobFailed(String),
}

impl Failure {
    /// This failure of a question read from the raw rows, a `TooBig` with `advice`: how to
    /// ask so that the rollups answer.
    pub(crate) fn advised_for_raw_rows(self, advice: Option<&'static str>) -> Self {
        match (self, advice) {
            (Failure::TooBig, Some(advice)) => Failure::TooBigForRawRows(advice),
            (failure, _) => failure,
        }
    }
}

/// The text of a `422 query_too_big`, then `more`.
fn too_big(more: &str) -> String {
    format!(
        "this question needs more than one question may read (the rows one read may read, {} s a statement, {} s in all); ask for a shorter time range or fewer filters.{more}",
        evtrack::store::READ_TIME_CAP.as_secs(),
        crate::queries::QUESTION_BUDGET.as_secs()
    )
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Invalid(reason) => Failure::Invalid(reason),
            StoreError::Refused(detail) => {
                tracing::warn!(error = %detail, "the database refused the data");
                Failure::Invalid("the database refused the data".into())
            }
            StoreError::NotFound(_) => Failure::NotFound,
            StoreError::TooBig => Failure::TooBig,
            StoreError::Corrupt(_) | StoreError::Config(_) | StoreError::Migration(_) => {
                Failure::Internal(err.to_string())
            }
            StoreError::Unavailable(_) | StoreError::NoAnswer => Failure::Unavailable(err.to_string()),
        }
    }
}

impl From<VerifyError> for Failure {
    fn from(err: VerifyError) -> Self {
        match err {
            VerifyError::Denied(denied) => Failure::Denied(denied),
            VerifyError::Unavailable(err) => err.into(),
        }
    }
}

impl From<KeyChangeError> for Failure {
    fn from(err: KeyChangeError) -> Self {
        match err {
            KeyChangeError::NotFound => Failure::NotFound,
            KeyChangeError::Conflict(reason) => Failure::Conflict(reason.to_string()),
            KeyChangeError::Store(err) => err.into(),
        }
    }
}

impl From<KeyringError> for Failure {
    fn from(err: KeyringError) -> Self {
        match err {
            KeyringError::Store(err) => err.into(),
            other => Failure::Unavailable(other.to_string()),
        }
    }
}

impl From<VerifyTokenError> for Failure {
    fn from(err: VerifyTokenError) -> Self {
        match err {
            VerifyTokenError::Invalid(_) => Failure::InvalidCursor,
            VerifyTokenError::Keyring(err) => err.into(),
        }
    }
}

impl From<JobError> for Failure {
    fn from(err: JobError) -> Self {
        match err {
            JobError::Store(err) => err.into(),
            JobError::LeaseLost => Failure::Conflict("another invocation took this run over".into()),
            JobError::FutureSlot { .. } => Failure::Invalid(err.to_string()),
            JobError::Step { .. } | JobError::Invoke { .. } => Failure::JobFailed(err.to_string()),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let error = match &self {
            Failure::Denied(AccessDenied::Unauthenticated) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "invalid or missing API key")
            }
            Failure::Denied(AccessDenied::WrongScope) => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this key's scope does not allow this")
            }
            // One body for "missing" and "not yours": nothing to learn about others' data.
            Failure::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such resource"),
            Failure::Invalid(reason) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", reason.clone()),
            Failure::Conflict(reason) => ApiError::new(StatusCode::CONFLICT, "conflict", reason.clone()),
            Failure::InvalidCursor => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_cursor", "invalid or expired cursor; start over")
            }
            Failure::TooBig => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "query_too_big", too_big("")),
            Failure::TooBigForRawRows(advice) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "query_too_big",
                too_big(&format!(" It reads the raw events: {advice}.")),
            ),
            Failure::ExportTooLarge => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "export_too_large",
                format!(
                    "this user's export passes {EXPORT_MAX_BYTES} bytes, more than one answer carries; make it with \
                     `evtrack export --project P --user U -o FILE`, which writes it from the database"
                ),
            ),
            Failure::Internal(reason) => {
                tracing::error!(error = %reason, "internal error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
            }
            // The reason may name tables or AWS errors: logged, not answered.
            Failure::JobFailed(reason) => {
                tracing::warn!(error = %reason, "job run failed");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "job_failed",
                    "the job did not complete here; GET /v1/jobs/{name}/runs shows its run",
                )
            }
            Failure::Unavailable(reason) => {
                tracing::warn!(error = %reason, "request failed");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "temporarily unavailable; retry")
                    .retry_after(5)
            }
        };
        error.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server's text names tables and columns: logged, never answered.
    #[test]
    fn database_error_text_never_reaches_a_client() {
        for err in [
            StoreError::Refused("Data too long for column 'name' at row 1".into()),
            StoreError::Unavailable("Table 'evtrack.events' doesn't exist".into()),
            StoreError::Corrupt("column 3 of projects is NULL".into()),
        ] {
            let response = Failure::from(err).into_response();
            let body = futures::executor::block_on(axum::body::to_bytes(response.into_body(), 10_000)).expect("body");
            let body = String::from_utf8_lossy(&body);
            assert!(!body.contains("column") && !body.contains("evtrack.events"), "{body}");
        }
    }
}
