//! evtrack ingest: Segment- and PostHog-compatible HTTP routes that authenticate, decode,
//! validate and queue events. It never writes to the database; it answers 200 only once
//! the queue has taken every event, so an SDK retries anything not durably queued.
//!
//! The same router runs on Lambda (`lambda_http::run`) and in the local stack.

mod credentials;
mod errors;
mod routes;

pub use routes::{router, routes};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use errors::Rejected;
use evtrack::config::{Config, Limits};
use evtrack::event::quarantine::QuarantinedEvent;
use evtrack::event::wire::{Normalised, Shape};
use evtrack::event::{body, wire};
use evtrack::http::client_ip;
use evtrack::keys::{AccessDenied, KeyHashers, KeyVerifier, Scope, VerifyError};
use evtrack::limits::RateLimiter;
use evtrack::queue::envelope::{Receipt, pack};
use evtrack::queue::{EnvelopeSeal, EventQueue};
use evtrack::store::Store;
use http::{HeaderName, header};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one request came to, for its metrics (`routes::record`).
#[derive(Debug, Default)]
pub struct Observed {
    /// Body bytes as sent (before decompression).
    pub bytes_in: usize,
    /// Events queued.
    pub events: usize,
    /// The reason codes of the events quarantined.
    pub quarantined: Vec<String>,
    pub queue_send: Option<Duration>,
}

/// Everything a request needs, built once per process.
pub struct Ingest {
    limits: Limits,
    keys: KeyVerifier,
    limiter: RateLimiter,
    /// Failed authentications per client address (`http::throttle_failed_auth`).
    pub(crate) failed_auth: Arc<RateLimiter>,
    queue: EventQueue,
    seal: EnvelopeSeal,
}

impl Ingest {
    pub fn new(config: &Config, store: Store, queue: EventQueue) -> Self {
        let redis_url = config.redis_url.as_ref().map(|url| url.expose().as_str());
        Self {
            limits: config.limits.clone(),
            keys: KeyVerifier::cached(store, KeyHashers::from_config(config), config.key_cache_ttl),
            limiter: RateLimiter::events_per_key(redis_url, config.rate_limit_events_per_second),
            failed_auth: Arc::new(RateLimiter::failed_auth_per_address(redis_url, config.auth_failures_per_minute)),
            queue,
            seal: EnvelopeSeal::from_config(config),
        }
    }

    /// decode → authenticate → validate → rate limit → queue. `observed` gathers what the
    /// request's metrics report, whatever its outcome.
    pub async fn accept(&self, shape: Shape, request: Request, observed: &mut Observed) -> Result<Response, Rejected> {
        let (parts, body) = request.into_parts();
        // A key outside the body is checked before the body is read: a request with a bad
        // key costs no inflating or parsing.
        let early_key = credentials::outside_body(&parts)?;
        let early = match &early_key {
            Some(key) => match self.keys.verify(key, Scope::Write).await {
                Ok(access) => Some(access),
                // A known key of another scope: a conflicting body key is answered first.
                Err(VerifyError::Denied(AccessDenied::WrongScope)) => None,
                Err(err) => return Err(err.into()),
            },
            None => None,
        };
        let limit = self.request_limit(shape);
        let raw = axum::body::to_bytes(body, limit).await.map_err(|_| errors::request_too_large(limit))?;
        observed.bytes_in = raw.len();
        let header_text = |name| parts.headers.get(name).and_then(|value: &http::HeaderValue| value.to_str().ok());
        let json =
            body::json_bytes(raw, header_text(header::CONTENT_ENCODING), header_text(header::CONTENT_TYPE), limit)?;
        let mut payload = wire::parse(shape, &json, &self.limits)?;
        payload.sent_at_header(header_text(HeaderName::from_static("sentat")))?;
        // The body may name the same key again, or conflict with it (refused).
        let key = credentials::find(&parts, &payload.body_keys)?;
        let access = match early {
            Some(access) if early_key.as_deref() == Some(key.as_str()) => access,
            _ => self.keys.verify(&key, Scope::Write).await?,
        };
        // Write keys always belong to a project (`keys::access`).
        let project = access.project_uid.ok_or(VerifyError::Denied(AccessDenied::Unauthenticated))?;
        let received_at = Utc::now();
        let Normalised { events, quarantined, batch } = payload.normalise(received_at, &self.limits);
        if events.is_empty() && quarantined.is_empty() {
            return Ok(success(shape, &[]));
        }
        // Quarantined events are queued too: they count.
        self.limiter.check(&access.key_uid.to_string(), events.len() + quarantined.len()).await?;
        let ip = client_ip(&parts.extensions).and_then(|ip| access.ip_policy.apply(ip)).map(|ip| ip.to_string());
        let receipt = Receipt {
            project,
            key: access.key_uid,
            received_at,
            ip: ip.as_deref(),
            source: shape.source(),
            batch: &batch,
        };
        let bodies = pack(&receipt, &events, &quarantined, self.limits.max_queue_message_bytes, &self.seal)?;
        // lambda_http puts the invocation's X-Ray trace id in this header.
        let trace = header_text(HeaderName::from_static("x-amzn-trace-id"));
        let sending = Instant::now();
        let sent = self.queue.send_all(bodies, trace).await;
        observed.queue_send = Some(sending.elapsed());
        sent?;
        observed.events = events.len();
        observed.quarantined = quarantined.iter().map(|event| event.code.clone()).collect();
        tracing::debug!(events = events.len(), quarantined = quarantined.len(), project = %project, "events queued");
        // A single-event route answers for its one event (it is kept all the same).
        if let (Shape::SegmentSingle(_), Some(event)) = (shape, quarantined.first()) {
            return Err(errors::quarantined(event));
        }
        Ok(success(shape, &quarantined))
    }

    /// What RudderStack's browser SDK asks its control plane for (`configUrl` pointed here):
    /// a source with no device-mode destinations, so that it loads nothing from elsewhere and
    /// sends every event to the data plane. The write key is checked as on the ingest routes.
    pub async fn source_config(&self, request: Request) -> Result<serde_json::Value, Rejected> {
        let (parts, _) = request.into_parts();
        let key = credentials::find(&parts, &[])?;
        self.keys.verify(&key, Scope::Write).await?;
        // Nothing of the key or its project: the SDK needs the shape, not our ids.
        Ok(serde_json::json!({
            "isHosted": false,
            "source": {
                "id": "evtrack",
                "name": "evtrack",
                "workspaceId": "evtrack",
                "enabled": true,
                "config": {},
                "destinations": [],
            },
        }))
    }

    fn request_limit(&self, shape: Shape) -> usize {
        if shape.is_posthog() { self.limits.max_posthog_request_bytes } else { self.limits.max_segment_request_bytes }
    }
}

/// Quarantined events named in an answer (the count is always whole).
const QUARANTINED_NAMED: usize = 10;

/// Exactly 200: the Python SDKs treat any other 2xx as a failure and resend. When events of
/// the request were quarantined, `rejected` says how many and why (SDKs ignore it; a client
/// that reads it learns what was not stored as an event).
fn success(shape: Shape, quarantined: &[QuarantinedEvent]) -> Response {
    let mut body =
        if shape.is_posthog() { serde_json::json!({"status": 1}) } else { serde_json::json!({"success": true}) };
    if !quarantined.is_empty() {
        let named: Vec<_> = quarantined
            .iter()
            .take(QUARANTINED_NAMED)
            .map(|event| serde_json::json!({"index": event.index, "code": event.code, "message": event.message}))
            .collect();
        body["rejected"] = serde_json::json!({"count": quarantined.len(), "events": named});
    }
    (http::StatusCode::OK, axum::Json(body)).into_response()
}
