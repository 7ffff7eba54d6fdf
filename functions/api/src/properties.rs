//! Promoted properties: `POST /v1/properties/{property}/promote` (admin, with `project`) has the
//! rollups count the property's values, so that trends broken down by it read the rollups;
//! `DELETE` on the same path demotes it; `GET /v1/properties/promoted` lists them.

use crate::extract::{Managing, OnProject, Reading, Reply};
use crate::queries::BreakdownInput;
use crate::{Api, Failure};
use axum::Json;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use evtrack::http::ListedRouter;
use evtrack::store::{BreakdownBy, MAX_PROMOTED, Promotion};
use http::StatusCode;
use serde_json::json;
use std::sync::Arc;

pub fn routes() -> ListedRouter<Arc<Api>> {
    use http::Method;
    ListedRouter::default()
        .on(Method::GET, "/v1/properties/promoted", list_promoted)
        .on(Method::POST, "/v1/properties/{property}/promote", promote)
        .on(Method::DELETE, "/v1/properties/{property}/promote", demote)
}

async fn list_promoted(State(api): State<Arc<Api>>, OnProject(project): Reading) -> Reply {
    let promoted = api.store.promoted_properties(project).await?;
    Ok(Json(json!({"data": promoted, "max_promoted": MAX_PROMOTED})).into_response())
}

/// A property as the path names it: `<document>.<key>[.<key>…]`.
fn property_of(property: &str) -> Result<BreakdownBy, Failure> {
    if property.contains(':') {
        return Err(Failure::Invalid("property is <document>.<key>[.<key>…], e.g. properties.plan".into()));
    }
    BreakdownInput::of_property(property).parse()
}

async fn promote(State(api): State<Arc<Api>>, OnProject(project): Managing, Path(property): Path<String>) -> Reply {
    let by = property_of(&property)?;
    match api.store.promote_property(project, by.document, &by.path).await? {
        Promotion::Promoted(promoted) => Ok((StatusCode::CREATED, Json(promoted)).into_response()),
        Promotion::AlreadyPromoted(promoted) => Ok(Json(promoted).into_response()),
        Promotion::TooMany => Err(Failure::Conflict(format!("a project promotes at most {MAX_PROMOTED} properties"))),
        Promotion::BeingDemoted => Err(Failure::Conflict(
            "this property was demoted and its counts are being deleted: promote it again in a minute".into(),
        )),
    }
}

/// Demotes a property: breakdowns by it read the raw rows from now on, its slot is free, and
/// the rollups job deletes its counts. 404 when it is not promoted.
async fn demote(State(api): State<Arc<Api>>, OnProject(project): Managing, Path(property): Path<String>) -> Reply {
    let by = property_of(&property)?;
    match api.store.demote_property(project, by.document, &by.path).await? {
        Some(demoted) => Ok(Json(demoted).into_response()),
        None => Err(Failure::NotFound),
    }
}
