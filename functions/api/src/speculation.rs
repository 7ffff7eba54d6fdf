//! A read's key check and the read itself, side by side. The api checks the caller's key
//! against the database on every request (a revoked key stops at once), and that check used to
//! come before the read: one round trip more per page. When a recent check of the same key
//! allowed it (`KeyVerifier::recent`), a read-key request now starts its own check in a task
//! and reads meanwhile, assuming what the recent check allowed; `confirm` answers only after
//! its own check has ended: with the read's answer if the check grants what the read assumed
//! (the same key, scope and project), else with the check's refusal. A key that was not valid
//! within the last minute never starts a read before its check: an unknown key costs no read,
//! and a revoked one at most the requests under way when it was revoked and the next one,
//! whose refusal is remembered.

use crate::extract::ListQuery;
use crate::{Api, Failure};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use evtrack::ids::ProjectId;
use evtrack::keys::{Access, Scope};
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
        Ok(Ok(access)) if grant(&access) == grant(&assumed) => response,
        // A key's project and scope never change: this is a key replaced within the minute.
        Ok(Ok(_)) => Failure::Unavailable("the key changed during the request; try again".into()).into_response(),
        Ok(Err(refused)) => refused.into_response(),
        Err(err) => Failure::Internal(format!("key check: {err}")).into_response(),
    }
}

/// What a read relies on of a key (its project's IP policy, also in `Access`, only ingest uses).
fn grant(access: &Access) -> (uuid::Uuid, Scope, Option<uuid::Uuid>, Option<ProjectId>) {
    (access.key_uid, access.scope, access.project_uid, access.project_id)
}

/// For a read key that a check within the last minute allowed on `scopes`: starts this
/// request's own check and returns the key's project, to read at once, with what the read
/// assumes of the key. `None`: check first.
pub(crate) fn start(parts: &Parts, api: &Arc<Api>, scopes: &'static [Scope]) -> Option<(ProjectId, Access)> {
    let pending = parts.extensions.get::<Pending>()?;
    let text = crate::caller_key(&parts.headers)?;
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
