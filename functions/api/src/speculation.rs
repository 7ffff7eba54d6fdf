//! A read's key check and the read itself, side by side. The api checks the caller's key
//! against the database on every request (a revoked key stops at once), and that check used to
//! come before the read: one round trip more per page. When a recent check of the same key
//! allowed it (`KeyVerifier::recent`), a read-key request now starts its own check in a task
//! and reads meanwhile, assuming what the recent check allowed; `confirm` answers only after
//! its own check has ended: with the read's answer if the check grants what the read assumed
//! (the same key, scope and project), else with the check's refusal, at once (the read is
//! dropped unfinished: an export does not read on for a revoked key). A key that was not valid
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
use tokio::sync::oneshot;
use tokio::task::{JoinError, JoinHandle};

/// A request's own key check, running, and what its read assumed.
type Check = (Access, JoinHandle<Result<Access, Failure>>);

/// Where an extractor hands over the check it started; present only under `confirm`, so that
/// no read runs ahead of a check that nothing waits for.
#[derive(Clone)]
pub(crate) struct Pending(Arc<Mutex<Option<oneshot::Sender<Check>>>>);

/// Middleware: lets the reads of a GET start before the request's key check has ended, and
/// answers only once it has: with the read's answer once the check allows what the read
/// assumed, or with the check's refusal as soon as it refuses (the read is dropped unfinished).
pub(crate) async fn confirm(mut request: Request, next: Next) -> Response {
    if request.method() != http::Method::GET {
        return next.run(request).await;
    }
    let (handover, started) = oneshot::channel();
    request.extensions_mut().insert(Pending(Arc::new(Mutex::new(Some(handover)))));
    answer(next.run(request), started).await
}

/// The read's answer (`read`) once the check handed over on `started`, if any, allows it.
async fn answer(read: impl Future<Output = Response>, mut started: oneshot::Receiver<Check>) -> Response {
    tokio::pin!(read);
    let (assumed, mut check) = tokio::select! {
        response = &mut read => return match started.try_recv() {
            Ok((assumed, check)) => refusal(&assumed, check.await).unwrap_or(response),
            // No check was started: the request's key was checked before its read.
            Err(_) => response,
        },
        Ok(check) = &mut started => check,
    };
    tokio::select! {
        response = &mut read => refusal(&assumed, check.await).unwrap_or(response),
        outcome = &mut check => match refusal(&assumed, outcome) {
            Some(refused) => refused,
            None => read.await,
        },
    }
}

/// The check's answer, unless it grants what the read assumed.
fn refusal(assumed: &Access, outcome: Result<Result<Access, Failure>, JoinError>) -> Option<Response> {
    match outcome {
        Ok(Ok(access)) if grant(&access) == grant(assumed) => None,
        // A key's project and scope never change: this is a key replaced within the minute.
        Ok(Ok(_)) => Some(Failure::Unavailable("the key changed during the request; try again".into()).into_response()),
        Ok(Err(refused)) => Some(refused.into_response()),
        Err(err) => Some(Failure::Internal(format!("key check: {err}")).into_response()),
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
    let handover = pending.0.lock().unwrap_or_else(|poison| poison.into_inner()).take()?;
    let (api, headers) = (api.clone(), parts.headers.clone());
    let check = tokio::spawn(async move { api.authorize_any(&headers, scopes).await });
    handover.send((assumed.clone(), check)).ok()?;
    Some((project, assumed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use evtrack::keys::AccessDenied;
    use http::StatusCode;
    use std::future::pending;
    use std::time::Duration;
    use uuid::Uuid;

    fn read_key() -> Access {
        Access {
            key_uid: Uuid::now_v7(),
            scope: Scope::Read,
            project_uid: Some(Uuid::now_v7()),
            project_id: Some(ProjectId(7)),
            ip_policy: Default::default(),
        }
    }

    /// A read that answers 200 once `release` lets it, or never.
    async fn read(release: impl Future<Output = ()>) -> Response {
        release.await;
        StatusCode::OK.into_response()
    }

    /// `answer`, bounded: a hang is a failure, not a stuck test run.
    async fn answered(read: impl Future<Output = Response>, started: oneshot::Receiver<Check>) -> StatusCode {
        tokio::time::timeout(Duration::from_secs(30), answer(read, started)).await.expect("answered").status()
    }

    #[tokio::test]
    async fn a_refusal_answers_at_once_without_waiting_for_the_read() {
        let (handover, started) = oneshot::channel();
        let check = tokio::spawn(async { Err(Failure::Denied(AccessDenied::Unauthenticated)) });
        handover.send((read_key(), check)).ok();
        assert_eq!(answered(read(pending()), started).await, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn the_read_answers_once_its_check_grants_what_it_assumed() {
        let assumed = read_key();
        let granted = assumed.clone();
        let (handover, started) = oneshot::channel();
        let (finish_check, check_finished) = oneshot::channel::<()>();
        let check = tokio::spawn(async move {
            check_finished.await.ok();
            Ok(granted)
        });
        handover.send((assumed, check)).ok();
        // The read ends first; its answer waits for the check.
        let answer = tokio::spawn(answered(read(async {}), started));
        tokio::task::yield_now().await;
        assert!(!answer.is_finished());
        finish_check.send(()).ok();
        assert_eq!(answer.await.expect("joined"), StatusCode::OK);
    }

    #[tokio::test]
    async fn another_grant_or_a_refusal_after_the_read_replaces_its_answer() {
        let (handover, started) = oneshot::channel();
        let other = read_key();
        handover.send((read_key(), tokio::spawn(async move { Ok(other) }))).ok();
        assert_eq!(answered(read(async {}), started).await, StatusCode::SERVICE_UNAVAILABLE);

        let (handover, started) = oneshot::channel();
        let (finish_read, read_finished) = oneshot::channel::<()>();
        let check = tokio::spawn(async { Err(Failure::Denied(AccessDenied::WrongScope)) });
        handover.send((read_key(), check)).ok();
        finish_read.send(()).ok();
        let status = answered(
            read(async {
                read_finished.await.ok();
            }),
            started,
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn without_a_check_handed_over_the_read_answers() {
        let (handover, started) = oneshot::channel::<Check>();
        drop(handover);
        assert_eq!(answered(read(async {}), started).await, StatusCode::OK);
        let (_handover, started) = oneshot::channel::<Check>();
        assert_eq!(answered(read(async {}), started).await, StatusCode::OK);
    }
}
