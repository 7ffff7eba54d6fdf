//! A read's key check and the read itself, side by side. The api checks the caller's key
//! against the database on every request (a revoked key stops at once), and that check used to
//! come before the read: one round trip more per page. When a recent check of the same key
//! allowed it (`KeyVerifier::recent`), a read-key request now starts its own check in a task
//! and reads meanwhile, assuming what the recent check allowed; `confirm` answers only after
//! its own check has ended: with the read's answer if the check allows exactly what the read
//! assumed, else with the check's refusal. A key that was not valid within the last minute
//! never starts a read before its check, so an unknown or revoked key costs no read.

use crate::extract::ListQuery;
use crate::{Api, Failure};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use evtrack::ids::ProjectId;
use evtrack::keys::{Access, Scope, key_from_authorization};
use http::request::Parts;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;

/// A request's own key check, running, and what its read assumed.
type Check = (Access, JoinHandle<Result<Access, Failure>>);

/// Where an extractor leaves the check it started; present only under `confirm`, so that no
/// read runs ahead of a check that nothing waits for.
#[derive(Clone, Default)]
pub(crate) struct Pending(Arc<Mutex<Option<Check>>>);

/// Middleware: lets the reads of a GET start before the request's key check has ended, and
/// answers only once it has.
pub(crate) async fn confirm(mut request: Request, next: Next) -> Response {
    if request.method() != http::Method::GET {
        return next.run(request).await;
    }
    let pending = Pending::default();
    request.extensions_mut().insert(pending.clone());
    let response = next.run(request).await;
    let check = pending.0.lock().unwrap_or_else(|poison| poison.into_inner()).take();
    let Some((assumed, check)) = check else { return response };
    match check.await {
        Ok(Ok(access)) if access == assumed => response,
        // The key's grant changed within the minute (it cannot for a live key): ask again.
        Ok(Ok(_)) => Failure::Unavailable("the key changed during the request; try again".into()).into_response(),
        Ok(Err(refused)) => refused.into_response(),
        Err(err) => Failure::Internal(format!("key check: {err}")).into_response(),
    }
}

/// For a read key that a check within the last minute allowed on `scopes`: starts this
/// request's own check and returns the key's project, to read at once, with what the read
/// assumes of the key. `None`: check first.
pub(crate) fn start(parts: &Parts, api: &Arc<Api>, scopes: &'static [Scope]) -> Option<(ProjectId, Access)> {
    let pending = parts.extensions.get::<Pending>()?;
    let text = parts.headers.get(http::header::AUTHORIZATION)?.to_str().ok().and_then(key_from_authorization)?;
    let assumed = api.verifier.recent(&text)?;
    // A read key's own project needs no lookup; an admin key names any project.
    let (own, project) = (assumed.project_uid?, assumed.project_id?);
    let asked = ListQuery::parse(parts.uri.query()).ok()?.project;
    if !scopes.contains(&assumed.scope) || asked.is_some_and(|asked| asked != own.to_string()) {
        return None;
    }
    let (api, headers) = (api.clone(), parts.headers.clone());
    let check = tokio::spawn(async move { api.authorize_any(&headers, scopes).await });
    *pending.0.lock().unwrap_or_else(|poison| poison.into_inner()) = Some((assumed.clone(), check));
    Some((project, assumed))
}
