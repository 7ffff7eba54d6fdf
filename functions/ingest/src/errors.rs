//! Every ingest failure mapped to its HTTP answer, in one place. SDKs retry 5xx and 429 and
//! drop other 4xx, so the status says whether the request can ever succeed.

use axum::response::{IntoResponse, Response};
use evtrack::event::body::BodyError;
use evtrack::event::quarantine::QuarantinedEvent;
use evtrack::event::wire::WireError;
use evtrack::http::ApiError;
use evtrack::keys::{AccessDenied, VerifyError};
use evtrack::limits::RateLimited;
use evtrack::queue::QueueError;
use evtrack::queue::envelope::TooLargeForQueue;
use evtrack::store::StoreError;
use http::StatusCode;

/// A single-event route's one event, quarantined: 400 names why (the event is kept).
pub fn quarantined(event: &QuarantinedEvent) -> Rejected {
    let status = if event.code == "event_too_large" { StatusCode::PAYLOAD_TOO_LARGE } else { StatusCode::BAD_REQUEST };
    let code = if event.code == "event_too_large" { "event_too_large" } else { "invalid_event" };
    Rejected(ApiError::new(status, code, format!("{} (kept as a rejected event)", event.message)))
}

pub fn request_too_large(limit: usize) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", format!("request body exceeds {limit} bytes"))
}

impl From<BodyError> for Rejected {
    fn from(err: BodyError) -> Self {
        let (status, code) = match err {
            BodyError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large"),
            BodyError::BadGzip(_) => (StatusCode::BAD_REQUEST, "invalid_gzip"),
            BodyError::UnsupportedEncoding(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding"),
            BodyError::BadForm => (StatusCode::BAD_REQUEST, "invalid_form"),
        };
        Rejected(ApiError::new(status, code, err.to_string()))
    }
}

/// An ingest failure, ready to answer with. Domain errors convert into it with `?`.
#[derive(Debug)]
pub struct Rejected(pub ApiError);

impl From<ApiError> for Rejected {
    fn from(error: ApiError) -> Self {
        Rejected(error)
    }
}

impl IntoResponse for Rejected {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

impl From<WireError> for Rejected {
    fn from(err: WireError) -> Self {
        let (status, code) = match err {
            WireError::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            WireError::Shape(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
            WireError::TooManyEvents { .. } => (StatusCode::BAD_REQUEST, "too_many_events"),
        };
        Rejected(ApiError::new(status, code, err.to_string()))
    }
}

impl From<VerifyError> for Rejected {
    fn from(err: VerifyError) -> Self {
        Rejected(match err {
            VerifyError::Denied(AccessDenied::Unauthenticated) => super::credentials::unauthorized(),
            VerifyError::Denied(AccessDenied::WrongScope) => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this key cannot send events; use a write key")
            }
            // A stored key row the code cannot read: retrying cannot help.
            VerifyError::Unavailable(reason @ StoreError::Corrupt(_)) => {
                tracing::error!(error = %reason, "write key check failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
            }
            VerifyError::Unavailable(reason) => {
                tracing::warn!(error = %reason, "write key check failed");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "cannot check keys right now; retry")
                    .retry_after(5)
            }
        })
    }
}

impl From<RateLimited> for Rejected {
    fn from(limited: RateLimited) -> Self {
        Rejected(
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many events for this key; retry later")
                .retry_after(limited.retry_after_secs),
        )
    }
}

impl From<QueueError> for Rejected {
    fn from(err: QueueError) -> Self {
        tracing::warn!(error = %err, "events not queued; answering 503");
        Rejected(
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "queue_unavailable", "events were not queued; retry")
                .retry_after(1),
        )
    }
}

impl From<TooLargeForQueue> for Rejected {
    fn from(err: TooLargeForQueue) -> Self {
        Rejected(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "event_too_large", err.to_string()))
    }
}
