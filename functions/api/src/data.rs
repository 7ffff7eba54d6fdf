//! Routes on one project's data: events and users (read keys for their project, admin keys
//! with `?project=`), their soft delete and restore (admin), GDPR erasure and export (admin).

use crate::export::user_export;
use crate::extract::{Admin, ListQuery, Managing, OnProject, Reading, Reply, id, rfc3339};
use crate::lists::{Params, group_miss};
use crate::pages::Page;
use crate::{Api, EXPORT_MAX_BYTES, Failure};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::IntoResponse;
use evtrack::event::MAX_ID_CHARS;
use evtrack::http::ListedRouter;
use evtrack::store::{RejectedAfter, RejectedFilter, RejectedPosition};
use futures::TryStreamExt;
use http::{HeaderValue, StatusCode, header};
use serde_json::json;
use std::sync::Arc;

pub fn routes() -> ListedRouter<Arc<Api>> {
    use http::Method;
    ListedRouter::default()
        .on(Method::GET, "/v1/events/{id}", get_event)
        .on(Method::DELETE, "/v1/events/{id}", delete_event)
        .on(Method::POST, "/v1/events/{id}/restore", restore_event)
        .on(Method::GET, "/v1/users/{user_id}", get_user)
        .on(Method::GET, "/v1/groups/{group_id}", get_group)
        .on(Method::DELETE, "/v1/users/{user_id}", erase_user)
        .on(Method::POST, "/v1/users/{user_id}/soft-delete", soft_delete_user)
        .on(Method::POST, "/v1/users/{user_id}/restore", restore_user)
        .on(Method::GET, "/v1/users/{user_id}/export", export_user)
        .on(Method::GET, "/v1/erasures/{id}", get_erasure)
        .on(Method::GET, "/v1/rejected-events", list_rejected)
}

/// The quarantine: events a request held that could not be stored, as sent, with the reason;
/// newest first, filtered by `reason` (a code) and `from`/`to` (when recorded, RFC 3339).
async fn list_rejected(State(api): State<Arc<Api>>, OnProject(project): Reading, RawQuery(query): RawQuery) -> Reply {
    let query = ListQuery::parse(query.as_deref())?;
    let time = |name: &str, value: Option<&str>| value.map(|text| rfc3339(name, text)).transpose();
    let filter = RejectedFilter {
        code: query.reason.clone(),
        from: time("from", query.from.as_deref())?,
        to: time("to", query.to.as_deref())?,
    };
    // A cursor belongs to its project and filter.
    let list = format!("rejected:{}:{:?}", project.0, (&query.reason, &query.from, &query.to));
    let page = Page::from_query(&api, list, query.limit.as_deref(), query.cursor.as_deref()).await?;
    let after = match (page.after_row, page.after) {
        (Some(row), _) => Some(RejectedAfter::Row(RejectedPosition::of_row(row))),
        (None, uid) => uid.map(RejectedAfter::Event),
    };
    let rejected = api.store.rejected_events(Some(project), &filter, after, page.fetch()).await?;
    let mut answer = page.of_rows(&api, rejected, |event| (event.id, Some(event.position.row()))).await?;
    // Those naming an id being erased leave the list at once, as they leave every read (the
    // cursor stays where the page got to).
    let erasing = api.store.rejected_naming_ids_being_erased(project, &answer.data).await?;
    answer.data.retain(|event| !erasing.contains(&event.id));
    Ok(Json(answer).into_response())
}

async fn get_event(State(api): State<Arc<Api>>, OnProject(project): Reading, Path(uid): Path<String>) -> Reply {
    let event = api.store.event(project, id(&uid)?).await?.ok_or(Failure::NotFound)?;
    Ok(Json(event).into_response())
}

/// Soft delete: the event disappears from every read and can be restored until cleanup
/// purges it.
async fn delete_event(State(api): State<Arc<Api>>, OnProject(project): Managing, Path(uid): Path<String>) -> Reply {
    changed(api.store.set_event_deleted(project, id(&uid)?, true).await?, "deleted")
}

async fn restore_event(State(api): State<Arc<Api>>, OnProject(project): Managing, Path(uid): Path<String>) -> Reply {
    changed(api.store.set_event_deleted(project, id(&uid)?, false).await?, "restored")
}

async fn get_user(State(api): State<Arc<Api>>, OnProject(project): Reading, Path(user_id): Path<String>) -> Reply {
    let user = api.store.user(project, &user_id).await?.ok_or(Failure::NotFound)?;
    Ok(Json(user).into_response())
}

/// One group: of the id and `type=`, or of the id alone where one group has it.
async fn get_group(
    State(api): State<Arc<Api>>,
    OnProject(project): Reading,
    Path(group_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Reply {
    let kind = Params::parse(query.as_deref(), &["project", "type"])?.group_type()?;
    let group = api.store.group(project, &group_id, kind.as_deref()).await?.map_err(group_miss)?;
    Ok(Json(group).into_response())
}

async fn soft_delete_user(
    State(api): State<Arc<Api>>,
    OnProject(project): Managing,
    Path(user_id): Path<String>,
) -> Reply {
    changed(api.store.set_user_deleted(project, &user_id, true).await?, "deleted")
}

async fn restore_user(State(api): State<Arc<Api>>, OnProject(project): Managing, Path(user_id): Path<String>) -> Reply {
    changed(api.store.set_user_deleted(project, &user_id, false).await?, "restored")
}

fn changed(changed: bool, status: &str) -> Reply {
    if !changed {
        return Err(Failure::NotFound);
    }
    Ok(Json(json!({"success": true, "status": status})).into_response())
}

/// GDPR erasure: recorded and the user suppressed at once (202); cleanup deletes every row
/// holding their id or an id linked to it. `GET /v1/erasures/{id}` follows it.
async fn erase_user(State(api): State<Arc<Api>>, OnProject(project): Managing, Path(user_id): Path<String>) -> Reply {
    if user_id.is_empty() || user_id.chars().count() > MAX_ID_CHARS {
        return Err(Failure::Invalid(format!("a user id has 1 to {MAX_ID_CHARS} characters")));
    }
    let uid = api.store.request_erasure(project, &user_id, &api.erased_ids).await?;
    let erasure = api.store.erasure(uid).await?.ok_or(Failure::NotFound)?;
    tracing::info!(erasure = %uid, "erasure requested");
    Ok((StatusCode::ACCEPTED, Json(erasure)).into_response())
}

async fn get_erasure(State(api): State<Arc<Api>>, _: Admin, Path(uid): Path<String>) -> Reply {
    let erasure = api.store.erasure(id(&uid)?).await?.ok_or(Failure::NotFound)?;
    Ok(Json(erasure).into_response())
}

/// GDPR access: everything held about the user, as NDJSON, in one answer of at most
/// `EXPORT_MAX_BYTES`. Lambda buffers an answer whole and carries 6 MB of it: a larger export
/// is refused with how to make it, rather than read on until the function runs out of memory.
async fn export_user(State(api): State<Arc<Api>>, OnProject(project): Managing, Path(user_id): Path<String>) -> Reply {
    let mut lines = std::pin::pin!(user_export(api.store.clone(), project, user_id));
    let mut body = String::new();
    while let Some(text) = lines.try_next().await? {
        if body.len() + text.len() > EXPORT_MAX_BYTES {
            return Err(Failure::ExportTooLarge);
        }
        body.push_str(&text);
    }
    let mut response = Body::from(body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    Ok(response)
}
