//! Promoted properties: `POST /v1/properties/{property}/promote` (admin, with `project`) has the
//! rollups count the property's values, so that trends broken down by it read the rollups;
//! `GET /v1/properties/promoted` lists them.

use crate::extract::{Managing, OnProject, Reading, Reply};
use crate::queries::BreakdownInput;
use crate::{Api, Failure};
use axum::Json;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use evtrack::http::ListedRouter;
use evtrack::store::{MAX_PROMOTED, Promotion};
use http::StatusCode;
use serde_json::json;
use std::sync::Arc;

pub fn routes() -> ListedRouter<Arc<Api>> {
    use http::Method;
    ListedRouter::default().on(Method::GET, "/v1/properties/promoted", list_promoted).on(
        Method::POST,
        "/v1/properties/{property}/promote",
        promote,
    )
}

async fn list_promoted(State(api): State<Arc<Api>>, OnProject(project): Reading) -> Reply {
    let promoted = api.store.promoted_properties(project).await?;
    Ok(Json(json!({"data": promoted, "max_promoted": MAX_PROMOTED})).into_response())
}

async fn promote(State(api): State<Arc<Api>>, OnProject(project): Managing, Path(property): Path<String>) -> Reply {
    if property.contains(':') {
        return Err(Failure::Invalid("property is <document>.<key>[.<key>…], e.g. properties.plan".into()));
    }
    let by = BreakdownInput::of_property(&property).parse()?;
    match api.store.promote_property(project, by.document, &by.path).await? {
        Promotion::Promoted(promoted) => Ok((StatusCode::CREATED, Json(promoted)).into_response()),
        Promotion::AlreadyPromoted(promoted) => Ok(Json(promoted).into_response()),
        Promotion::TooMany => Err(Failure::Conflict(format!("a project promotes at most {MAX_PROMOTED} properties"))),
    }
}
