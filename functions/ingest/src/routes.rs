//! The ingest routes, each mapped to the wire shape it speaks (PROTOCOL.md).

use super::Ingest;
use axum::extract::{Request, State};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router, middleware};
use evtrack::event::EventType;
use evtrack::event::wire::Shape;
use evtrack::http::{ApiError, security_headers};
use http::{HeaderName, Method, StatusCode, header};
use std::sync::Arc;
use std::time::Duration;
use tower_http::cors::{Any, CorsLayer};

pub fn router(ingest: Arc<Ingest>) -> Router {
    let mut router = Router::new()
        .route("/health", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        // analytics-next reports its own metrics here; accepted and not stored.
        .route("/v1/m", post(|| async { Json(serde_json::json!({"success": true})) }));
    for path in ["/v1/batch", "/v1/import", "/v1/b", "/beacon/v1/batch"] {
        router = router.route(path, accepting(Shape::SegmentBatch));
    }
    for kind in EventType::ALL {
        let single = accepting(Shape::SegmentSingle(kind));
        let short = &kind.as_str()[..1];
        router = router.route(&format!("/v1/{kind}"), single.clone()).route(&format!("/v1/{short}"), single);
    }
    for path in ["/batch", "/capture", "/e", "/i/v0/e"] {
        router = router.route(path, accepting(Shape::PostHog)).route(&format!("{path}/"), accepting(Shape::PostHog));
    }
    router
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use POST")
        })
        .layer(ingest_cors())
        .layer(middleware::from_fn(security_headers))
        .with_state(ingest)
}

fn accepting(shape: Shape) -> MethodRouter<Arc<Ingest>> {
    post(move |State(ingest): State<Arc<Ingest>>, request: Request| async move {
        match ingest.accept(shape, request).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        }
    })
}

/// Browsers post from any site; no credentials, so `*` is safe here (and only here).
fn ingest_cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-retry-count"),
            HeaderName::from_static("anonymousid"),
        ])
        .max_age(Duration::from_secs(86_400))
}
