//! The ingest routes, each mapped to the wire shape it speaks (PROTOCOL.md).

use super::{Ingest, Observed};
use axum::extract::{Request, State};
use axum::response::IntoResponse;
use axum::{Json, Router, middleware};
use evtrack::event::EventType;
use evtrack::event::wire::Shape;
use evtrack::http::{ApiError, ListedRouter, request_context, security_headers, throttle_failed_auth};
use evtrack::telemetry::{MetricLine, Unit};
use http::{HeaderName, Method, StatusCode, header};
use std::sync::Arc;
use std::time::Duration;
use tower_http::cors::{Any, CorsLayer};

/// Every ingest route; browsers' CORS preflight is answered for each POST route.
pub fn routes() -> ListedRouter<Arc<Ingest>> {
    let mut routes = ListedRouter::default()
        .on(Method::GET, "/health", || async { Json(serde_json::json!({"status": "ok"})) })
        // analytics-next reports its own metrics here; accepted and not stored.
        .on(Method::POST, "/v1/m", || async { Json(serde_json::json!({"success": true})) })
        .preflight("/v1/m")
        // RudderStack's browser SDK loads its source configuration before sending anything.
        .on(Method::GET, "/sourceConfig", source_config)
        .on(Method::GET, "/sourceConfig/", source_config)
        .preflight("/sourceConfig");
    let mut accept = |path: &str, shape: Shape| {
        let taken = std::mem::take(&mut routes);
        let handler = move |state: State<Arc<Ingest>>, request: Request| accepting(shape, state, request);
        routes = taken.on(Method::POST, path, handler).preflight(path);
    };
    for path in ["/v1/batch", "/v1/import", "/v1/b", "/beacon/v1/batch"] {
        accept(path, Shape::SegmentBatch);
    }
    for kind in EventType::ALL {
        let short = &kind.as_str()[..1];
        accept(&format!("/v1/{kind}"), Shape::SegmentSingle(kind));
        accept(&format!("/v1/{short}"), Shape::SegmentSingle(kind));
    }
    for path in ["/batch", "/capture", "/e", "/i/v0/e"] {
        accept(path, Shape::PostHog);
        accept(&format!("{path}/"), Shape::PostHog);
    }
    routes
}

pub fn router(ingest: Arc<Ingest>) -> Router {
    routes()
        .into_router()
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use POST")
        })
        .layer(middleware::from_fn_with_state(ingest.failed_auth.clone(), throttle_failed_auth))
        .layer(ingest_cors())
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(evtrack::http::answer_panic))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn(request_context))
        .with_state(ingest)
}

async fn accepting(shape: Shape, State(ingest): State<Arc<Ingest>>, request: Request) -> axum::response::Response {
    let mut observed = Observed::default();
    let (response, outcome) = match ingest.accept(shape, request, &mut observed).await {
        Ok(response) => (response, "accepted"),
        Err(rejected) => {
            let code = rejected.0.code;
            (rejected.into_response(), code)
        }
    };
    record(shape, outcome, &observed);
    response
}

/// The request's metrics: by route (the wire shape) and outcome (`accepted` or the error code).
fn record(shape: Shape, outcome: &str, observed: &Observed) {
    let route = match shape {
        Shape::SegmentBatch => "segment_batch",
        Shape::SegmentSingle(_) => "segment_single",
        Shape::PostHog => "posthog",
    };
    let mut line = MetricLine::new("ingest")
        .dimension("Route", route)
        .dimension("Outcome", outcome)
        .metric("Requests", 1.0, Unit::Count, &["Route", "Outcome"])
        .metric("Events", observed.events as f64, Unit::Count, &["Route", "Outcome"])
        .metric("BytesIn", observed.bytes_in as f64, Unit::Bytes, &["Route"]);
    if outcome != "accepted" {
        line = line.dimension("Code", outcome).metric("Rejected", 1.0, Unit::Count, &["Code"]);
    }
    if let Some(sent) = observed.queue_send {
        line = line.metric("QueueSendLatency", sent.as_secs_f64() * 1000.0, Unit::Milliseconds, &[]);
    }
    line.emit();
    // Quarantined events by reason: one line per reason (a line has one value per dimension).
    let mut reasons: Vec<&str> = observed.quarantined.iter().map(String::as_str).collect();
    reasons.sort_unstable();
    for chunk in reasons.chunk_by(|a, b| a == b) {
        MetricLine::new("ingest")
            .dimension("Reason", chunk[0])
            .metric("EventsQuarantined", chunk.len() as f64, Unit::Count, &["Reason"])
            .emit();
    }
}

async fn source_config(State(ingest): State<Arc<Ingest>>, request: Request) -> axum::response::Response {
    match ingest.source_config(request).await {
        Ok(config) => Json(config).into_response(),
        Err(rejected) => rejected.into_response(),
    }
}

/// Browsers post from any site; no credentials, so `*` is safe here (and only here). The
/// headers are those the browser SDKs send: analytics-next's retry count, RudderStack's
/// `AnonymousId`, `SentAt` and retry bookkeeping.
fn ingest_cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-retry-count"),
            HeaderName::from_static("anonymousid"),
            HeaderName::from_static("sentat"),
            HeaderName::from_static("rsa-recovered"),
            HeaderName::from_static("rsa-retry-attempt"),
            HeaderName::from_static("rsa-retry-reason"),
            HeaderName::from_static("rsa-since-first-attempt"),
            HeaderName::from_static("rsa-since-last-attempt"),
        ])
        .max_age(Duration::from_secs(86_400))
}
