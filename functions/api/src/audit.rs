//! The audit trail: every admin action — also one refused after the key was accepted — is
//! one structured log line and one `audit_log` row, written here for every route at once.
//! It names the acting key by its public id, the target by its public id (a user by the
//! keyed hash of their id), the request id and the client address as the project's IP
//! policy keeps it.

use crate::Api;
use crate::extract::ListQuery;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use evtrack::http::{client_ip, current_request_id};
use evtrack::model::SubjectHashes;
use evtrack::store::AuditEntry;
use http::Method;
use std::sync::{Arc, OnceLock};
use uuid::Uuid;

/// The audited routes and their actions.
const AUDITED: &[(Method, &str, &str)] = &[
    (Method::POST, "/v1/projects", "project.create"),
    (Method::PATCH, "/v1/projects/{id}", "project.update"),
    (Method::DELETE, "/v1/projects/{id}", "project.delete"),
    (Method::POST, "/v1/projects/{id}/restore", "project.restore"),
    (Method::POST, "/v1/keys", "key.create"),
    (Method::POST, "/v1/keys/{id}/rotate", "key.rotate"),
    (Method::POST, "/v1/keys/{id}/revoke", "key.revoke"),
    (Method::DELETE, "/v1/keys/{id}", "key.delete"),
    (Method::POST, "/v1/keys/{id}/restore", "key.restore"),
    (Method::POST, "/v1/jobs/{name}/runs", "job.trigger"),
    (Method::DELETE, "/v1/events/{id}", "event.delete"),
    (Method::POST, "/v1/events/{id}/restore", "event.restore"),
    (Method::DELETE, "/v1/users/{user_id}", "user.erase"),
    (Method::POST, "/v1/users/{user_id}/soft-delete", "user.delete"),
    (Method::POST, "/v1/users/{user_id}/restore", "user.restore"),
    (Method::GET, "/v1/users/{user_id}/export", "user.export"),
    (Method::POST, "/v1/properties/{property}/promote", "property.promote"),
    (Method::DELETE, "/v1/properties/{property}/promote", "property.demote"),
];

/// The key that acted, set by the key extractors (`Admin`, `OnProject`) once it is accepted.
#[derive(Clone, Default)]
pub(crate) struct Actor(Arc<OnceLock<(Uuid, Option<Uuid>)>>);

impl Actor {
    pub(crate) fn set(extensions: &http::Extensions, key: Uuid, project: Option<Uuid>) {
        if let Some(actor) = extensions.get::<Actor>() {
            let _ = actor.0.set((key, project));
        }
    }
}

/// What a handler created (a new project or key), and its project: the target when the
/// path names none.
#[derive(Clone)]
pub(crate) struct Created {
    pub target: String,
    pub project: Option<Uuid>,
}

pub(crate) async fn record(
    State(api): State<Arc<Api>>,
    matched: Option<MatchedPath>,
    params: Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    mut request: Request,
    next: Next,
) -> Response {
    let action = matched.as_ref().and_then(|path| {
        AUDITED.iter().find(|(method, route, _)| method == request.method() && *route == path.as_str())
    });
    let Some((_, _, action)) = action else { return next.run(request).await };
    let actor = Actor::default();
    request.extensions_mut().insert(actor.clone());
    let ip = client_ip(request.extensions());
    let asked_project = ListQuery::parse(request.uri().query())
        .ok()
        .and_then(|query| query.project)
        .and_then(|text| Uuid::try_parse(&text).ok());
    let param: Option<String> = params.ok().and_then(|params| params.iter().next().map(|(_, value)| value.to_string()));
    let response = next.run(request).await;
    // No accepted key: nobody acted (the failed authentication is logged by itself).
    let Some(&(actor_key, actor_project)) = actor.0.get() else { return response };
    let created = response.extensions().get::<Created>();
    let path_id = param.as_deref().and_then(|id| Uuid::try_parse(id).ok());
    let project = match (action.split_once('.').map(|(kind, _)| kind), created) {
        (_, Some(created)) => created.project,
        (Some("project"), None) => path_id,
        (Some("key"), None) => match path_id {
            Some(key) => api.store.key_info(key).await.ok().flatten().and_then(|key| key.project),
            None => None,
        },
        _ => asked_project.or(actor_project),
    };
    let target = match (created, param) {
        (Some(created), _) => Some(created.target.clone()),
        (None, Some(user)) if action.starts_with("user.") => Some(api.user_target(project, &user).await),
        (None, Some(id)) => Some(format!("{}:{id}", action.split('.').next().unwrap_or_default())),
        (None, None) => None,
    };
    let entry = AuditEntry {
        actor_key,
        action,
        target,
        project,
        status: response.status().as_u16(),
        request_id: current_request_id().unwrap_or_default(),
        client_ip: ip,
    };
    tracing::info!(
        audit = true,
        action = entry.action,
        actor_key = %entry.actor_key,
        target = entry.target.as_deref().unwrap_or(""),
        project = ?entry.project,
        status = entry.status,
        "admin action"
    );
    if let Err(err) = api.store.record_audit(&entry).await {
        // The action is done (or refused) either way; the log line above still holds it.
        tracing::error!(error = %err, action = entry.action, "audit record not written");
    }
    response
}

impl Api {
    /// A user as the trail names them: the keyed hash of the id (as an erasure's audit record
    /// does), never the id itself.
    async fn user_target(&self, project: Option<Uuid>, user_id: &str) -> String {
        let project = match project {
            Some(uid) => self.store.project_id(uid).await.ok().flatten(),
            None => None,
        };
        let hash = project.and_then(|project| self.erased_ids.hashes(project, user_id).into_iter().next());
        match hash {
            Some(hash) => format!("user:{}", hex(&hash)),
            None => "user:(unknown project)".into(),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
