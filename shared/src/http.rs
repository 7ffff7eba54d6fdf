//! HTTP concerns shared by the HTTP functions: the JSON error body every SDK can read,
//! security headers, the request id, and the client's IP address (from API Gateway or the
//! local socket).

use crate::limits::RateLimiter;
use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use std::net::{IpAddr, SocketAddr};

/// An error answer: `{"success":false,"code","message","detail"}`. segment-python reads
/// `code` and `message`, posthog-python reads `detail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after_secs: None }
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "success": false,
            "code": self.code,
            "message": self.message,
            "detail": self.message,
        });
        // What an operator needs to find the logged detail of this answer.
        if let Some(id) = current_request_id() {
            body["request_id"] = serde_json::Value::from(id);
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// What a request whose handler panicked gets (tower-http's `CatchPanicLayer`): the usual
/// 500 with its request id, instead of a connection closed without an answer. The panic is
/// logged with that id.
pub fn answer_panic(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = message, "a request handler panicked");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error").into_response()
}

/// Headers every response carries (OWASP secure headers for an API).
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (header::CONTENT_SECURITY_POLICY, "default-src 'none'; frame-ancestors 'none'"),
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000; includeSubDomains"),
    ] {
        // A route that serves a page (the dashboard) sets its own policy and caching.
        if name == header::CONTENT_SECURITY_POLICY || name == header::CACHE_CONTROL {
            headers.entry(name).or_insert(HeaderValue::from_static(value));
        } else {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Gives every request an id: API Gateway's on Lambda (what its access logs show), a fresh
/// UUIDv7 locally. It is answered in `x-request-id`, put in every error body, and carried by
/// every log line of the request (a `request` span), so that a client's report of an error
/// leads to its logged detail.
pub async fn request_context(request: Request, next: Next) -> Response {
    use tracing::Instrument;
    let id = match request.extensions().get::<lambda_http::request::RequestContext>() {
        Some(lambda_http::request::RequestContext::ApiGatewayV2(context)) => context.request_id.clone(),
        _ => None,
    }
    .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let span = tracing::info_span!("request", request_id = %id);
    let mut response = REQUEST_ID.scope(id.clone(), next.run(request).instrument(span)).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of the request being answered (`request_context`), if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Refuses a client address that failed authentication too often this minute (`429`, before
/// anything else of the request is read), and counts every `401` answered to it: guessing
/// keys, or flooding the key lookup with bad ones, stops at `EVTRACK_AUTH_FAILURES_PER_MINUTE`
/// per address. IPv6 addresses count by /64, what one host usually holds.
pub async fn throttle_failed_auth(
    axum::extract::State(limiter): axum::extract::State<std::sync::Arc<RateLimiter>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(ip) = client_ip(request.extensions()) else { return next.run(request).await };
    let address = match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let [a, b, c, d, ..] = v6.segments();
            format!("{a:x}:{b:x}:{c:x}:{d:x}::/64")
        }
        _ => ip.to_canonical().to_string(),
    };
    if let Err(limited) = limiter.is_full(&address).await {
        tracing::warn!(address, "too many failed authentications from this address");
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_failed_authentications",
            "too many failed authentications from this address; retry later",
        )
        .retry_after(limited.retry_after_secs)
        .into_response();
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED {
        let _ = limiter.check(&address, 1).await;
    }
    response
}

/// The client's address: API Gateway's `sourceIp` on Lambda, the socket's peer locally.
pub fn client_ip(extensions: &http::Extensions) -> Option<IpAddr> {
    if let Some(lambda_http::request::RequestContext::ApiGatewayV2(context)) =
        extensions.get::<lambda_http::request::RequestContext>()
    {
        return context.http.source_ip.as_deref().and_then(|ip| ip.parse().ok());
    }
    extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip())
}

/// A router that lists its routes as it is built, so that the deployment's routes (the
/// HttpApi in template.yaml) can be checked against the code, which is the one source.
pub struct ListedRouter<S> {
    router: axum::Router<S>,
    routes: Vec<(http::Method, String)>,
}

impl<S: Clone + Send + Sync + 'static> Default for ListedRouter<S> {
    fn default() -> Self {
        Self { router: axum::Router::new(), routes: Vec::new() }
    }
}

impl<S: Clone + Send + Sync + 'static> ListedRouter<S> {
    /// Routes `method path` to `handler`.
    pub fn on<H, T>(mut self, method: http::Method, path: &str, handler: H) -> Self
    where
        H: axum::handler::Handler<T, S>,
        T: 'static,
    {
        let filter = axum::routing::MethodFilter::try_from(method.clone()).expect("a method axum routes");
        self.router = self.router.route(path, axum::routing::on(filter, handler));
        self.routes.push((method, path.to_string()));
        self
    }

    /// Lists `OPTIONS path`: answered by a CORS layer around the router (browsers' preflight),
    /// which the gateway must still forward.
    pub fn preflight(mut self, path: &str) -> Self {
        self.routes.push((http::Method::OPTIONS, path.to_string()));
        self
    }

    pub fn merge(mut self, other: ListedRouter<S>) -> Self {
        self.router = self.router.merge(other.router);
        self.routes.extend(other.routes);
        self
    }

    /// Every `(method, path)` routed, paths with `{parameters}` as API Gateway writes them.
    pub fn routes(&self) -> &[(http::Method, String)] {
        &self.routes
    }

    pub fn into_router(self) -> axum::Router<S> {
        self.router
    }
}
