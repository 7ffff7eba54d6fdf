//! The read side's lists: a project's events (newest first, filtered), the live tail of what
//! was just stored, its users and groups (a group's members, a user's groups), and one user's
//! timeline. Read keys for their project, admin keys with `?project=`.
//!
//! Cursors are signed (`Keyring::sign`) and bound to the list and its filters, so that a
//! cursor cannot be forged or carried to another question. A page may come back short with
//! a cursor (each request examines a bounded number of rows); only a missing cursor ends a
//! list.

use crate::extract::{Reading, Reply};
use crate::{Api, Failure};
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use evtrack::event::{EventType, MAX_ID_CHARS};
use evtrack::http::ListedRouter;
use evtrack::ids::ProjectId;
use evtrack::keys::keyring::{hidden_row, row_from_hidden};
use evtrack::store::{
    EVENT_FIELDS, EventFilter, EventPosition, EventView, GroupMiss, JsonDocument, JsonFilter, JsonOp, ListPage,
    MAX_LIST_NAMES,
};
use serde::Serialize;
use std::sync::Arc;
use uuid::Uuid;

pub const DEFAULT_EVENTS_LIMIT: usize = 100;
pub const MAX_EVENTS_LIMIT: usize = 1_000;
pub const MAX_JSON_FILTERS: usize = 10;

pub fn routes() -> ListedRouter<Arc<Api>> {
    use http::Method;
    ListedRouter::default()
        .on(Method::GET, "/v1/events", list_events)
        .on(Method::GET, "/v1/events/live", live_events)
        .on(Method::GET, "/v1/events/export", export_events)
        .on(Method::GET, "/v1/users", list_users)
        .on(Method::GET, "/v1/users/{user_id}/events", user_timeline)
        .on(Method::GET, "/v1/groups", list_groups)
        .on(Method::GET, "/v1/groups/{group_id}/members", group_members)
        .on(Method::GET, "/v1/users/{user_id}/groups", user_groups)
}

/// A list's answer: `next_cursor` is absent only at the end (the live tail always has one).
#[derive(Serialize)]
struct ListAnswer<T> {
    data: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// The query string as name/value pairs, each name allowed on the route; repeated only where
/// a name may be (`type`, `name`, `where`).
pub(crate) struct Params(Vec<(String, String)>);

const REPEATABLE: [&str; 3] = ["type", "name", "where"];

impl Params {
    pub(crate) fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Self, Failure> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            if !allowed.contains(&name.as_ref()) {
                // A misspelt filter must not answer as if there were none.
                return Err(Failure::Invalid(format!(
                    "unknown query parameter {name}; this route takes {}",
                    allowed.join(", ")
                )));
            }
            if !REPEATABLE.contains(&name.as_ref()) && pairs.iter().any(|(seen, _)| *seen == name) {
                return Err(Failure::Invalid(format!("the query parameter {name} is given twice")));
            }
            pairs.push((name.into_owned(), value.into_owned()));
        }
        Ok(Self(pairs))
    }

    fn one(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(seen, _)| seen == name).map(|(_, value)| value.as_str())
    }

    fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.0.iter().filter(move |(seen, _)| seen == name).map(|(_, value)| value.as_str())
    }

    /// What a cursor is bound to: the route, the project and every parameter that shapes
    /// the list (not `cursor`, `limit` or `fields`), in a fixed order.
    fn list_name(&self, route: &str, project: ProjectId) -> String {
        let mut shaping: Vec<&(String, String)> = self
            .0
            .iter()
            .filter(|(name, _)| !["cursor", "limit", "fields", "project"].contains(&name.as_str()))
            .collect();
        shaping.sort();
        let text = serde_json::to_string(&shaping).unwrap_or_default();
        format!("{route}:{}:{text}", project.0)
    }

    fn limit(&self, default: usize, max: usize) -> Result<usize, Failure> {
        match self.one("limit") {
            None => Ok(default),
            Some(text) => text
                .parse()
                .ok()
                .filter(|limit| (1..=max).contains(limit))
                .ok_or_else(|| Failure::Invalid(format!("limit is 1 to {max}"))),
        }
    }

    pub(crate) fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, Failure> {
        self.one(name).map(|text| crate::extract::rfc3339(name, text)).transpose()
    }

    /// `type=` of a group route: the groups of one type (`""`: of calls that name none).
    pub(crate) fn group_type(&self) -> Result<Option<String>, Failure> {
        let mut given = self.all("type");
        let (kind, again) = (given.next(), given.next());
        if again.is_some() {
            return Err(Failure::Invalid("the query parameter type is given twice".into()));
        }
        if kind.is_some_and(|kind| kind.chars().count() > MAX_ID_CHARS || kind.chars().any(char::is_control)) {
            return Err(Failure::Invalid(format!(
                "type has at most {MAX_ID_CHARS} characters, none a control character"
            )));
        }
        Ok(kind.map(str::to_string))
    }

    fn id(&self, name: &str) -> Result<Option<String>, Failure> {
        self.one(name)
            .map(|id| {
                if id.is_empty() || id.chars().count() > MAX_ID_CHARS {
                    return Err(Failure::Invalid(format!("{name} has 1 to {MAX_ID_CHARS} characters")));
                }
                Ok(id.to_string())
            })
            .transpose()
    }

    /// Every `where=` filter, on the documents `documents` allows.
    fn json_filters(&self, documents: &[JsonDocument]) -> Result<Vec<JsonFilter>, Failure> {
        let filters: Vec<JsonFilter> =
            self.all("where").map(|text| parse_json_filter(text, documents)).collect::<Result<_, _>>()?;
        if filters.len() > MAX_JSON_FILTERS {
            return Err(Failure::Invalid(format!("at most {MAX_JSON_FILTERS} where filters")));
        }
        Ok(filters)
    }
}

/// `properties.plan:eq:pro`, `context.page.path:contains:/pricing`, `traits.email:is_set`.
pub(crate) fn parse_json_filter(text: &str, documents: &[JsonDocument]) -> Result<JsonFilter, Failure> {
    let usage = || {
        Failure::Invalid(format!(
            "where is <document>.<key>[.<key>…]:<op>[:<value>] with op eq, neq, gt, lt, contains or is_set, e.g. \
             properties.plan:eq:pro; got {text:?}"
        ))
    };
    let mut parts = text.splitn(3, ':');
    let (target, op, value) = (parts.next().unwrap_or_default(), parts.next().ok_or_else(usage)?, parts.next());
    let mut keys = target.split('.');
    let document = keys.next().and_then(JsonDocument::from_name).ok_or_else(usage)?;
    if !documents.contains(&document) {
        return Err(Failure::Invalid(format!(
            "where filters here apply to {}",
            documents.iter().map(|document| document.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let path: Vec<String> = keys.map(str::to_string).collect();
    if path.is_empty() || path.iter().any(|key| key.is_empty() || key.chars().count() > 255) || path.len() > 8 {
        return Err(usage());
    }
    let number = |value: Option<&str>| {
        value
            .and_then(|text| text.parse::<f64>().ok())
            .filter(|n| n.is_finite())
            .ok_or_else(|| Failure::Invalid(format!("{op} compares with a number: {text:?}")))
    };
    let text_value = |value: Option<&str>| value.map(str::to_string).ok_or_else(usage);
    let op = match op {
        "eq" => JsonOp::Eq(text_value(value)?),
        "neq" => JsonOp::Neq(text_value(value)?),
        "gt" => JsonOp::Gt(number(value)?),
        "lt" => JsonOp::Lt(number(value)?),
        "contains" => JsonOp::Contains(text_value(value)?),
        "is_set" if value.is_none() => JsonOp::IsSet,
        _ => return Err(usage()),
    };
    Ok(JsonFilter { document, path, op })
}

const EVENT_LIST_PARAMS: [&str; 11] =
    ["project", "limit", "cursor", "fields", "from", "to", "type", "name", "user_id", "anonymous_id", "where"];

/// The filters of an event list from its parameters (without the user: the caller's part).
fn event_filter(params: &Params) -> Result<EventFilter, Failure> {
    let mut types = Vec::new();
    for text in params.all("type").flat_map(|value| value.split(',')) {
        let kind = EventType::ALL.into_iter().find(|kind| kind.as_str() == text).ok_or_else(|| {
            Failure::Invalid(format!("type is one of track, identify, page, screen, group, alias; got {text:?}"))
        })?;
        if !types.contains(&kind) {
            types.push(kind);
        }
    }
    let mut names: Vec<String> = Vec::new();
    for name in params.all("name") {
        if name.is_empty() || name.chars().count() > 255 {
            return Err(Failure::Invalid("name has 1 to 255 characters".into()));
        }
        if !names.iter().any(|seen| seen == name) {
            names.push(name.to_string());
        }
    }
    if names.len() > MAX_LIST_NAMES {
        return Err(Failure::Invalid(format!("at most {MAX_LIST_NAMES} names")));
    }
    let (from, to) = (params.time("from")?, params.time("to")?);
    if let (Some(from), Some(to)) = (from, to)
        && from >= to
    {
        return Err(Failure::Invalid("from is before to".into()));
    }
    Ok(EventFilter {
        from,
        to,
        types,
        names,
        subjects: None,
        anonymous_id: params.id("anonymous_id")?,
        json: params.json_filters(&JsonDocument::ALL)?,
    })
}

/// `fields=`: which fields each event carries (all when absent).
fn event_fields(params: &Params) -> Result<Option<Vec<&'static str>>, Failure> {
    let Some(text) = params.one("fields") else { return Ok(None) };
    let mut fields = Vec::new();
    for name in text.split(',') {
        let field = EVENT_FIELDS
            .into_iter()
            .find(|field| *field == name)
            .ok_or_else(|| Failure::Invalid(format!("fields are some of {}; got {name:?}", EVENT_FIELDS.join(", "))))?;
        fields.push(field);
    }
    Ok(Some(fields))
}

/// Events with only the fields asked for, each serialised straight from its row.
fn shaped<'a>(events: &'a [EventView], fields: Option<&'a [&'static str]>) -> Vec<impl Serialize + 'a> {
    events.iter().map(|event| event.with_fields(fields)).collect()
}

/// The bytes an event position's cursor shows: the time in milliseconds and the public id.
const POSITION_SHOWN_BYTES: usize = 24;

/// An event position in a cursor: the time and the public id shown, the private id hidden.
fn position_bytes(position: EventPosition) -> (Vec<u8>, Vec<u8>) {
    let mut shown = position.at.timestamp_millis().to_be_bytes().to_vec();
    shown.extend_from_slice(position.uid.as_bytes());
    (shown, hidden_row(position.row))
}

fn position_from(shown: &[u8], hidden: &[u8]) -> Result<EventPosition, Failure> {
    let (millis, uid) = shown.split_at_checked(8).ok_or(Failure::InvalidCursor)?;
    let millis = i64::from_be_bytes(millis.try_into().map_err(|_| Failure::InvalidCursor)?);
    let at = DateTime::from_timestamp_millis(millis).ok_or(Failure::InvalidCursor)?;
    let uid = Uuid::from_slice(uid).map_err(|_| Failure::InvalidCursor)?;
    let row = row_from_hidden(hidden).map_err(|_| Failure::InvalidCursor)?;
    Ok(EventPosition { at, uid, row })
}

async fn cursor_in(api: &Api, list: &str, params: &Params) -> Result<Option<Vec<u8>>, Failure> {
    match params.one("cursor") {
        None => Ok(None),
        Some(token) => Ok(Some(api.keyring.verify(list, token).await?)),
    }
}

async fn cursor_out(api: &Api, list: &str, payload: Option<Vec<u8>>) -> Result<Option<String>, Failure> {
    match payload {
        None => Ok(None),
        Some(payload) => Ok(Some(api.keyring.sign(list, &payload).await?)),
    }
}

/// The event position of a list's `cursor`, if it has one.
async fn position_in(api: &Api, list: &str, params: &Params) -> Result<Option<EventPosition>, Failure> {
    let Some(token) = params.one("cursor") else { return Ok(None) };
    let (shown, hidden) = api.keyring.verify_hiding(list, token, POSITION_SHOWN_BYTES).await?;
    position_from(&shown, &hidden).map(Some)
}

/// The cursor of an event list at `position`, if the list goes on.
async fn position_out(api: &Api, list: &str, position: Option<EventPosition>) -> Result<Option<String>, Failure> {
    let Some(position) = position else { return Ok(None) };
    let (shown, hidden) = position_bytes(position);
    Ok(Some(api.keyring.sign_hiding(list, &shown, &hidden).await?))
}

/// An event list's page, answered: of every event, or of `user_id`'s (its timeline).
async fn events_page(
    api: &Api,
    project: ProjectId,
    params: &Params,
    list: &str,
    filter: EventFilter,
    user_id: Option<&str>,
) -> Reply {
    let limit = params.limit(DEFAULT_EVENTS_LIMIT, MAX_EVENTS_LIMIT)?;
    let fields = event_fields(params)?;
    let after = position_in(api, list, params).await?;
    let examined = api.list_rows_examined;
    let ListPage { items, next } = match user_id {
        None => api.store.list_events(project, &filter, after, limit, examined).await?,
        Some(user_id) => api
            .store
            .list_user_events(project, user_id, filter, after, limit, examined)
            .await?
            .ok_or(Failure::NotFound)?,
    };
    let next_cursor = position_out(api, list, next).await?;
    Ok(Json(ListAnswer { data: shaped(&items, fields.as_deref()), next_cursor }).into_response())
}

/// `GET /v1/events`: newest first, filtered.
async fn list_events(State(api): State<Arc<Api>>, project: Reading, RawQuery(query): RawQuery) -> Reply {
    let project = project.0;
    let params = Params::parse(query.as_deref(), &EVENT_LIST_PARAMS)?;
    let filter = event_filter(&params)?;
    let user_id = params.id("user_id")?;
    let list = params.list_name("events", project);
    events_page(&api, project, &params, &list, filter, user_id.as_deref()).await
}

/// `GET /v1/users/{user_id}/events`: the user's timeline, through the ids linked to it.
async fn user_timeline(
    State(api): State<Arc<Api>>,
    project: Reading,
    Path(user_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Reply {
    let project = project.0;
    let allowed: Vec<&str> = EVENT_LIST_PARAMS.iter().copied().filter(|name| *name != "user_id").collect();
    let params = Params::parse(query.as_deref(), &allowed)?;
    let filter = event_filter(&params)?;
    let list = format!("{}:{user_id}", params.list_name("timeline", project));
    events_page(&api, project, &params, &list, filter, Some(&user_id)).await
}

/// `GET /v1/events/live`: what was stored since the cursor, oldest first; always a cursor.
async fn live_events(State(api): State<Arc<Api>>, project: Reading, RawQuery(query): RawQuery) -> Reply {
    let project = project.0;
    let params = Params::parse(query.as_deref(), &["project", "limit", "cursor", "fields"])?;
    let limit = params.limit(DEFAULT_EVENTS_LIMIT, MAX_EVENTS_LIMIT)?;
    let fields = event_fields(&params)?;
    let list = params.list_name("live", project);
    let after = position_in(&api, &list, &params).await?;
    let ListPage { items, next } = api.store.live_events(project, after, limit).await?;
    let next_cursor = position_out(&api, &list, next).await?;
    Ok(Json(ListAnswer { data: shaped(&items, fields.as_deref()), next_cursor }).into_response())
}

/// The most one export answer carries: a Lambda answer holds 6 MB, and NDJSON (not a text
/// type to lambda_http) goes base64-encoded, a third larger.
pub const EXPORT_MAX_BYTES: usize = 4_000_000;
/// How long one export answer may spend reading, well inside API Gateway's 30 s.
const EXPORT_READ_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);
/// Rows per database read of an export.
const EXPORT_ROWS_PER_READ: usize = 1_000;
/// The header that carries an export's cursor when more follows.
pub const EXPORT_CURSOR_HEADER: &str = "x-next-cursor";

/// `GET /v1/events/export?from&to`: the events of a time range as NDJSON, oldest first, one
/// event per line, in answers of at most `EXPORT_MAX_BYTES`. While more follows, the answer's
/// `x-next-cursor` header is the cursor to ask again with; an interrupted answer is simply
/// asked for again with the same cursor.
async fn export_events(State(api): State<Arc<Api>>, project: Reading, RawQuery(query): RawQuery) -> Reply {
    let project = project.0;
    let params = Params::parse(query.as_deref(), &["project", "cursor", "from", "to"])?;
    let (Some(from), Some(to)) = (params.time("from")?, params.time("to")?) else {
        return Err(Failure::Invalid("an export needs from and to (RFC 3339)".into()));
    };
    if from >= to {
        return Err(Failure::Invalid("from is before to".into()));
    }
    let list = params.list_name("export", project);
    let mut after = position_in(&api, &list, &params).await?;
    let started = std::time::Instant::now();
    let mut body = Vec::with_capacity(256 * 1024);
    let mut next = None;
    loop {
        let page = api.store.export_events(project, from, to, after, EXPORT_ROWS_PER_READ).await?;
        let mut full = false;
        for event in &page.items {
            let line = serde_json::to_vec(event).map_err(|err| Failure::Internal(err.to_string()))?;
            if body.len() + line.len() + 1 > EXPORT_MAX_BYTES {
                full = true;
                break;
            }
            body.extend_from_slice(&line);
            body.push(b'\n');
            after = Some(EventPosition::of(event));
        }
        if !full {
            // Past the rows the page dropped too (a user being erased), not only those written.
            after = page.next.or(after);
        }
        if full || (page.next.is_some() && started.elapsed() > EXPORT_READ_BUDGET) {
            next = after;
            break;
        }
        if page.next.is_none() {
            break;
        }
    }
    let mut response = axum::response::Response::new(axum::body::Body::from(body));
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/x-ndjson"));
    if let Some(cursor) = position_out(&api, &list, next).await? {
        headers.insert(
            EXPORT_CURSOR_HEADER,
            http::HeaderValue::try_from(cursor).map_err(|err| Failure::Internal(err.to_string()))?,
        );
    }
    Ok(response)
}

/// `GET /v1/users`: profiles in id order, by id prefix and traits.
async fn list_users(State(api): State<Arc<Api>>, project: Reading, RawQuery(query): RawQuery) -> Reply {
    let params = Params::parse(query.as_deref(), &["project", "limit", "cursor", "prefix", "where"])?;
    let (question, pages) = ProfilesQuestion::read(&api, "users", project.0, &params).await?;
    let ProfilesQuestion { prefix, traits, .. } = &question;
    let after = pages.after.as_deref();
    let page = api.store.list_users(project.0, prefix, traits, after, pages.limit, api.list_rows_examined).await?;
    pages.answer(&api, page).await
}

/// `GET /v1/groups`: group profiles in the order of their ids and types, by id prefix, type
/// and traits.
async fn list_groups(State(api): State<Arc<Api>>, project: Reading, RawQuery(query): RawQuery) -> Reply {
    let params = Params::parse(query.as_deref(), &["project", "limit", "cursor", "prefix", "where", "type"])?;
    let (question, pages) = ProfilesQuestion::read(&api, "groups", project.0, &params).await?;
    let ProfilesQuestion { prefix, traits, kind } = &question;
    let (after, examined) = (pages.after.as_deref(), api.list_rows_examined);
    let page = api.store.list_groups(project.0, kind.as_deref(), prefix, traits, after, pages.limit, examined).await?;
    pages.answer(&api, page).await
}

/// What a list of profiles asks for: ids with a prefix, traits passing filters, and of
/// groups, one type.
struct ProfilesQuestion {
    prefix: String,
    traits: Vec<JsonFilter>,
    kind: Option<String>,
}

impl ProfilesQuestion {
    async fn read(api: &Api, route: &str, project: ProjectId, params: &Params) -> Result<(Self, IdPages), Failure> {
        let prefix = params.one("prefix").unwrap_or_default().to_string();
        if prefix.chars().count() > MAX_ID_CHARS {
            return Err(Failure::Invalid(format!("prefix has at most {MAX_ID_CHARS} characters")));
        }
        let traits = params.json_filters(&[JsonDocument::Traits])?;
        let kind = params.group_type()?;
        let pages = IdPages::read(api, params, params.list_name(route, project)).await?;
        Ok((Self { prefix, traits, kind }, pages))
    }
}

/// A page of a list in id order: its size, the id its cursor goes on after, and what its
/// cursors are bound to (`list`).
struct IdPages {
    limit: usize,
    after: Option<String>,
    list: String,
}

impl IdPages {
    async fn read(api: &Api, params: &Params, list: String) -> Result<Self, Failure> {
        let limit = params.limit(DEFAULT_EVENTS_LIMIT, MAX_EVENTS_LIMIT)?;
        let after = cursor_in(api, &list, params).await?.map(String::from_utf8).transpose();
        Ok(Self { limit, after: after.map_err(|_| Failure::InvalidCursor)?, list })
    }

    /// The page, and a cursor to go on after its last id (`None`: the list ends).
    async fn answer<T: Serialize>(&self, api: &Api, page: ListPage<T, String>) -> Reply {
        let next_cursor = cursor_out(api, &self.list, page.next.map(String::into_bytes)).await?;
        Ok(Json(ListAnswer { data: page.items, next_cursor }).into_response())
    }

    /// The pages of a list of one group's or user's (`owner`, bound into its cursors).
    async fn of(api: &Api, route: &str, project: ProjectId, owner: &str, params: &Params) -> Result<Self, Failure> {
        Self::read(api, params, format!("{}:{owner}", params.list_name(route, project))).await
    }
}

/// `GET /v1/groups/{group_id}/members`: a group's members in id order.
async fn group_members(
    State(api): State<Arc<Api>>,
    project: Reading,
    Path(group_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Reply {
    let params = Params::parse(query.as_deref(), &["project", "limit", "cursor", "type"])?;
    let kind = params.group_type()?;
    let pages = IdPages::of(&api, "members", project.0, &group_id, &params).await?;
    let page =
        api.store.group_members(project.0, &group_id, kind.as_deref(), pages.after.as_deref(), pages.limit).await?;
    pages.answer(&api, page.map_err(group_miss)?).await
}

/// The answer to a question for one group that names no one group.
pub(crate) fn group_miss(miss: GroupMiss) -> Failure {
    match miss {
        GroupMiss::NotFound => Failure::NotFound,
        GroupMiss::SeveralTypes(types) => {
            let types: Vec<String> = types.iter().map(|kind| format!("{kind:?}")).collect();
            Failure::Invalid(format!(
                "groups of several types have this id ({}): say which with type= (type= for the one without a type)",
                types.join(", ")
            ))
        }
    }
}

/// `GET /v1/users/{user_id}/groups`: the groups a user belongs to through any of its ids.
async fn user_groups(
    State(api): State<Arc<Api>>,
    project: Reading,
    Path(user_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Reply {
    let params = Params::parse(query.as_deref(), &["project", "limit", "cursor"])?;
    let pages = IdPages::of(&api, "user-groups", project.0, &user_id, &params).await?;
    let page = api.store.user_groups(project.0, &user_id, pages.after.as_deref(), pages.limit).await?;
    pages.answer(&api, page.ok_or(Failure::NotFound)?).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_where_filter_reads_document_path_operator_and_value() {
        let all = JsonDocument::ALL;
        let filter = parse_json_filter("context.page.url:contains:https://a.example/x?y=1", &all).expect("valid");
        assert_eq!(filter.document, JsonDocument::Context);
        assert_eq!(filter.path, ["page", "url"]);
        assert_eq!(filter.op, JsonOp::Contains("https://a.example/x?y=1".into()));
        assert_eq!(parse_json_filter("properties.n:gt:1.5", &all).expect("valid").op, JsonOp::Gt(1.5));
        assert_eq!(parse_json_filter("traits.email:is_set", &all).expect("valid").op, JsonOp::IsSet);
        for bad in [
            "plan:eq:pro",
            "properties:eq:x",
            "properties.a:gt:abc",
            "properties.a:is_set:x",
            "properties..a:eq:1",
            "properties.a:like:x",
            "properties.a",
        ] {
            assert!(parse_json_filter(bad, &all).is_err(), "{bad}");
        }
        assert!(parse_json_filter("properties.plan:eq:pro", &[JsonDocument::Traits]).is_err());
    }

    #[test]
    fn a_cursor_binds_every_shaping_parameter_in_any_order_but_not_the_page_size() {
        let project = ProjectId(7);
        let name =
            |query: &str| Params::parse(Some(query), &EVENT_LIST_PARAMS).expect("valid").list_name("events", project);
        assert_eq!(name("type=track&name=a&limit=5"), name("name=a&type=track&limit=50&fields=id"));
        assert_ne!(name("type=track"), name("type=page"));
        assert_ne!(name("where=properties.a:eq:1"), name(""));
    }

    #[test]
    fn positions_survive_a_cursor() {
        let at = DateTime::from_timestamp_millis(1_764_000_000_123).expect("time");
        for row in [Some(1u64 << 40), None] {
            let position = EventPosition { at, uid: Uuid::now_v7(), row };
            let (shown, hidden) = position_bytes(position);
            assert_eq!(shown.len(), POSITION_SHOWN_BYTES);
            assert_eq!(position_from(&shown, &hidden).expect("valid"), position);
        }
        assert!(position_from(&[1, 2, 3], &[]).is_err());
        let (shown, _) = position_bytes(EventPosition { at, uid: Uuid::nil(), row: None });
        assert!(position_from(&shown, &[1, 2, 3]).is_err());
    }
}
