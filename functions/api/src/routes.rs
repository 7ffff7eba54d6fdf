//! The management routes (admin scope): projects, keys, job runs. Handlers are thin: check
//! the key, read the input, call the store or the key service, shape the answer.

use crate::audit::Created;
use crate::extract::{Admin, ListQuery, Reply, body, id};
use crate::pages::Page;
use crate::{Api, Failure};
use axum::extract::{Path, RawQuery, State};
use axum::response::IntoResponse;
use axum::{Extension, Json, Router, middleware};
use bytes::Bytes;
use chrono::{DateTime, Datelike, Utc};
use evtrack::http::{ApiError, ListedRouter, request_context, security_headers, throttle_failed_auth};
use evtrack::jobs::Trigger;
use evtrack::keys::{Expiry, NewKeyRequest, Scope};
use evtrack::model::IpPolicy;
use evtrack::store::{MAX_SLOT_SKEW, ProjectChanges, Restored};
use http::StatusCode;
use serde::Deserialize;
use std::sync::Arc;
use uuid::Uuid;

/// Longest key lifetime that may be asked for (longer: `never_expires`).
const MAX_KEY_DAYS: u32 = 3650;

/// Every api route (a `ListedRouter`, so that template.yaml's routes are checked against it).
pub fn routes() -> ListedRouter<Arc<Api>> {
    use http::Method;
    ListedRouter::default()
        .on(Method::GET, "/v1/projects", list_projects)
        .on(Method::POST, "/v1/projects", create_project)
        .on(Method::GET, "/v1/projects/{id}", get_project)
        .on(Method::PATCH, "/v1/projects/{id}", update_project)
        .on(Method::DELETE, "/v1/projects/{id}", delete_project)
        .on(Method::POST, "/v1/projects/{id}/restore", restore_project)
        .on(Method::GET, "/v1/keys", list_keys)
        .on(Method::POST, "/v1/keys", create_key)
        .on(Method::POST, "/v1/keys/{id}/rotate", rotate_key)
        .on(Method::POST, "/v1/keys/{id}/revoke", revoke_key)
        .on(Method::GET, "/v1/keys/{id}", get_key)
        .on(Method::DELETE, "/v1/keys/{id}", delete_key)
        .on(Method::POST, "/v1/keys/{id}/restore", restore_key)
        .on(Method::GET, "/v1/jobs/{name}/runs", list_runs)
        .on(Method::POST, "/v1/jobs/{name}/runs", trigger_run)
        .on(Method::GET, "/v1/audit", list_audit)
        .merge(crate::data::routes())
        .merge(crate::lists::routes())
        .merge(crate::queries::routes())
        .merge(crate::cohorts::routes())
        .merge(crate::properties::routes())
        .merge(crate::dashboard::routes())
}

/// The api's routes, for a server that sends other paths elsewhere (`evtrack up`: ingest).
pub fn router(api: Arc<Api>) -> Router {
    layered(routes().into_router(), api)
}

/// The api on its own (its Lambda): any other path is a 404, with the security headers too.
pub fn standalone_router(api: Arc<Api>) -> Router {
    layered(routes().into_router().fallback(|| async { ApiError::not_found() }), api)
}

fn layered(router: Router<Arc<Api>>, api: Arc<Api>) -> Router {
    router
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
        })
        .layer(middleware::from_fn(crate::speculation::confirm))
        .layer(middleware::from_fn_with_state(api.clone(), crate::audit::record))
        .layer(middleware::from_fn_with_state(api.failed_auth.clone(), throttle_failed_auth))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(evtrack::http::answer_panic))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn(request_context))
        .with_state(api)
}

fn flag(value: Option<&str>, name: &str) -> Result<bool, Failure> {
    match value {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(Failure::Invalid(format!("{name} is true or false"))),
    }
}

/// `Some(None)` when the field is present and null, `None` when absent.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectInput {
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    retention_days: Option<Option<u32>>,
    ip_policy: Option<IpPolicy>,
}

impl ProjectInput {
    fn changes(self) -> ProjectChanges {
        ProjectChanges { name: self.name, retention_days: self.retention_days, ip_policy: self.ip_policy }
    }
}

async fn list_projects(State(api): State<Arc<Api>>, _: Admin, RawQuery(query): RawQuery) -> Reply {
    let query = ListQuery::parse(query.as_deref())?;
    let deleted = flag(query.deleted.as_deref(), "deleted")?;
    let list = format!("projects:{deleted}");
    let page = Page::from_query(&api, list, query.limit.as_deref(), query.cursor.as_deref()).await?;
    let projects = api.store.projects_page(deleted, page.after, page.fetch()).await?;
    Ok(Json(page.of(&api, projects, |project| project.id).await?).into_response())
}

async fn create_project(State(api): State<Arc<Api>>, _: Admin, bytes: Bytes) -> Reply {
    let input: ProjectInput = body(&bytes)?;
    let name = input.name.clone().ok_or_else(|| Failure::Invalid("name is required".into()))?;
    let project = api.store.create_project_with(&name, input.changes()).await?;
    let target = Created { target: format!("project:{}", project.id), project: Some(project.id) };
    Ok((StatusCode::CREATED, Extension(target), Json(project)).into_response())
}

async fn get_project(State(api): State<Arc<Api>>, _: Admin, Path(uid): Path<String>) -> Reply {
    let project = api.store.project(id(&uid)?).await?.ok_or(Failure::NotFound)?;
    Ok(Json(project).into_response())
}

async fn update_project(State(api): State<Arc<Api>>, _: Admin, Path(uid): Path<String>, bytes: Bytes) -> Reply {
    let uid = id(&uid)?;
    let input: ProjectInput = body(&bytes)?;
    let project = api.store.update_project(uid, input.changes()).await?.ok_or(Failure::NotFound)?;
    Ok(Json(project).into_response())
}

async fn delete_project(State(api): State<Arc<Api>>, _: Admin, Path(uid): Path<String>) -> Reply {
    let project = api.store.delete_project(id(&uid)?).await?.ok_or(Failure::NotFound)?;
    Ok(Json(project).into_response())
}

async fn restore_project(State(api): State<Arc<Api>>, _: Admin, Path(uid): Path<String>) -> Reply {
    match api.store.restore_project(id(&uid)?, api.soft_delete_grace).await? {
        Restored::Project(project) => Ok(Json(project).into_response()),
        Restored::NotDeleted => Err(Failure::NotFound),
        Restored::PastGrace => Err(Failure::Conflict(
            "the project was deleted longer ago than the grace period: it is being purged".into(),
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyInput {
    scope: Scope,
    project: Option<Uuid>,
    #[serde(default)]
    name: String,
    expires_in_days: Option<u32>,
    #[serde(default)]
    never_expires: bool,
}

async fn list_keys(State(api): State<Arc<Api>>, _: Admin, RawQuery(query): RawQuery) -> Reply {
    let query = ListQuery::parse(query.as_deref())?;
    let project = query.project.as_deref().map(id).transpose()?;
    let list = format!("keys:{}", project.map(|uid| uid.to_string()).unwrap_or_default());
    let page = Page::from_query(&api, list, query.limit.as_deref(), query.cursor.as_deref()).await?;
    let keys = api.store.list_keys(project, page.after, page.fetch()).await?;
    Ok(Json(page.of(&api, keys, |key| key.id).await?).into_response())
}

async fn create_key(State(api): State<Arc<Api>>, _: Admin, bytes: Bytes) -> Reply {
    let input: KeyInput = body(&bytes)?;
    let expiry = match (input.expires_in_days, input.never_expires) {
        (Some(_), true) => return Err(Failure::Invalid("give expires_in_days or never_expires, not both".into())),
        (Some(days), false) if (1..=MAX_KEY_DAYS).contains(&days) => {
            Expiry::After(chrono::Duration::days(i64::from(days)))
        }
        (Some(_), false) => return Err(Failure::Invalid(format!("expires_in_days is 1 to {MAX_KEY_DAYS}"))),
        (None, true) => Expiry::Never,
        (None, false) => Expiry::Default,
    };
    let request = NewKeyRequest { project: input.project, scope: input.scope, name: &input.name, expiry };
    let (info, key) = api.keys.create(request).await?;
    let target = Created { target: format!("key:{}", info.id), project: info.project };
    Ok((StatusCode::CREATED, Extension(target), Json(with_plaintext(&info, key.reveal()))).into_response())
}

/// A key's description with its plaintext: shown this once.
fn with_plaintext(info: &evtrack::store::KeyInfo, key: &str) -> serde_json::Value {
    let mut value = serde_json::to_value(info).unwrap_or_default();
    value["key"] = serde_json::Value::from(key);
    value
}

async fn get_key(State(api): State<Arc<Api>>, _: Admin, Path(uid): Path<String>) -> Reply {
    let key = api.store.key_info(id(&uid)?).await?.ok_or(Failure::NotFound)?;
    Ok(Json(key).into_response())
}

/// Soft delete: the key stops working at once (ingest: within its key cache time) and is
/// listed nowhere; restorable until cleanup purges it.
async fn delete_key(State(api): State<Arc<Api>>, Admin(caller): Admin, Path(uid): Path<String>) -> Reply {
    let uid = id(&uid)?;
    if uid == caller.key_uid {
        return Err(Failure::Conflict("a key cannot delete itself; use another admin key".into()));
    }
    let key = api.store.key_info(uid).await?.ok_or(Failure::NotFound)?;
    api.store.set_key_deleted(uid, true).await?;
    Ok(Json(key).into_response())
}

async fn restore_key(State(api): State<Arc<Api>>, _: Admin, Path(uid): Path<String>) -> Reply {
    let uid = id(&uid)?;
    if !api.store.set_key_deleted(uid, false).await? {
        return Err(Failure::NotFound);
    }
    Ok(Json(api.store.key_info(uid).await?.ok_or(Failure::NotFound)?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateInput {
    /// How long the old key keeps working; 0 for a leaked key.
    grace_hours: Option<u32>,
}

async fn rotate_key(State(api): State<Arc<Api>>, _: Admin, Path(uid): Path<String>, bytes: Bytes) -> Reply {
    let uid = id(&uid)?;
    let input: RotateInput = body(&bytes)?;
    let grace = input.grace_hours.map(|hours| chrono::Duration::hours(i64::from(hours)));
    let (info, key) = api.keys.rotate(uid, grace).await?;
    Ok((StatusCode::CREATED, Json(with_plaintext(&info, key.reveal()))).into_response())
}

async fn revoke_key(State(api): State<Arc<Api>>, Admin(caller): Admin, Path(uid): Path<String>) -> Reply {
    let uid = id(&uid)?;
    if uid == caller.key_uid {
        // Locking oneself out is refused; another admin key can do it (or rotate this one).
        return Err(Failure::Conflict("a key cannot revoke itself; use another admin key".into()));
    }
    let key = api.keys.revoke(uid).await?;
    Ok(Json(key).into_response())
}

fn job(name: &str) -> Result<&'static str, Failure> {
    evtrack::jobs::JobRunners::name(name).ok_or(Failure::NotFound)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerInput {
    /// The slot to run; now (to the second) by default. Triggering a slot that already ran
    /// does nothing and says so.
    slot: Option<DateTime<Utc>>,
}

async fn trigger_run(State(api): State<Arc<Api>>, _: Admin, Path(name): Path<String>, bytes: Bytes) -> Reply {
    let name = job(&name)?;
    let input: TriggerInput = body(&bytes)?;
    let slot = input.slot.unwrap_or_else(Utc::now);
    // What a DATETIME column holds.
    if !(2000..=9999).contains(&slot.year()) {
        return Err(Failure::Invalid("slot is a time between the years 2000 and 9999".into()));
    }
    // A slot ahead of the clock would purge as if it were then (the job ledger refuses it
    // too, by the database's clock, whoever triggers the job).
    if slot > Utc::now() + MAX_SLOT_SKEW {
        return Err(Failure::Invalid(format!(
            "slot lies in the future; it may be at most {} s ahead of now",
            MAX_SLOT_SKEW.num_seconds()
        )));
    }
    let trigger = Trigger::new(slot, "api");
    let outcome = api.jobs.run(name, trigger).await.ok_or(Failure::NotFound)??;
    let status = if matches!(outcome, evtrack::jobs::Outcome::Ran(_)) { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(outcome.to_json())).into_response())
}

async fn list_runs(
    State(api): State<Arc<Api>>,
    _: Admin,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Reply {
    let name = job(&name)?;
    let query = ListQuery::parse(query.as_deref())?;
    let page = Page::from_query(&api, format!("runs:{name}"), query.limit.as_deref(), query.cursor.as_deref()).await?;
    let runs = api.store.list_runs(name, page.after, page.fetch()).await?;
    Ok(Json(page.of(&api, runs, |run| run.id).await?).into_response())
}

/// The audit trail, newest first.
async fn list_audit(State(api): State<Arc<Api>>, _: Admin, RawQuery(query): RawQuery) -> Reply {
    let query = ListQuery::parse(query.as_deref())?;
    let page = Page::from_query(&api, "audit".into(), query.limit.as_deref(), query.cursor.as_deref()).await?;
    let records = api.store.audit_page(page.after, page.fetch()).await?;
    Ok(Json(page.of(&api, records, |record| record.id).await?).into_response())
}
