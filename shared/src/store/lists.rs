//! The lists of one project's data: events newest first (with filters), the live tail of what
//! was just stored, users by id. Keyset pages: a position is where the next page starts,
//! never an offset, so rows stored meanwhile neither shift nor hide rows of later pages.
//!
//! Every list walks an index in its order and examines a bounded number of index entries
//! per request (`max_examined`): filters the index cannot answer (properties, a type without
//! a name, ...) may leave a page short, and its position then says where the walk stopped.
//! Only the end of the data ends a list.

use super::erasure::{ERASABLE_IDS, being_erased};
use super::live::{LIVE_GROUPS, LIVE_GROUPS_BY_ID, LIVE_USERS_BY_ID, live_events_by};
use super::views::{
    EVENT_VIEW_COLUMNS, EventView, GROUP_VIEW_COLUMNS, GroupMiss, GroupView, ROW_ID_COLUMN, USER_VIEW_COLUMNS,
    UserView, event_view, group_type_of, group_view, user_view,
};
use super::{Store, StoreError, required, to_db_time, with_timeout};
use crate::event::{EventType, GroupRef};
use crate::ids::ProjectId;
use chrono::{DateTime, Utc};
use mysql_async::prelude::{FromRow, Queryable};
use mysql_async::{Row, Value};
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

/// How many user ids (the user's own and the ids linked to it) a list follows.
pub const MAX_LIST_SUBJECTS: usize = 50;
/// How many names one list may ask for.
pub const MAX_LIST_NAMES: usize = 20;
/// How long a stored event waits before the live tail shows it: every write transaction
/// that started before then has committed, so that the tail never passes over a row that
/// commits later (a consumer transaction takes milliseconds; the bound leaves room).
pub const LIVE_SETTLE_MS: i64 = 3_000;

/// A filter on a JSON document of the row: `properties.plan:eq:pro`.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonFilter {
    pub document: JsonDocument,
    /// The keys from the document's top down.
    pub path: Vec<String>,
    pub op: JsonOp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonDocument {
    Properties,
    Traits,
    Context,
}

impl JsonDocument {
    pub const ALL: [JsonDocument; 3] = [Self::Properties, Self::Traits, Self::Context];

    /// Its name in a filter, which is also its column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Properties => "properties",
            Self::Traits => "traits",
            Self::Context => "context",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|document| document.as_str() == name)
    }

    /// The SQL for a key's value as text (its JSON path the one parameter): NULL where it is
    /// missing. Filters, breakdowns and the promoted properties' rollups all read it so.
    pub(super) fn text_sql(self) -> String {
        format!("JSON_UNQUOTE(JSON_EXTRACT({}, ?))", self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum JsonOp {
    /// The value as text (a string unquoted, `true`, `null`, a number as sent), or a number
    /// equal to it.
    Eq(String),
    /// Not `Eq`, a missing key included.
    Neq(String),
    /// A number above or below.
    Gt(f64),
    Lt(f64),
    /// The value as text holds this (case-sensitive).
    Contains(String),
    /// Present and not null.
    IsSet,
}

/// `$."a"."b"`: each key quoted, so that any key is a key and never path syntax.
pub(super) fn json_path(keys: &[String]) -> String {
    let mut path = String::from("$");
    for key in keys {
        path.push_str(".\"");
        for c in key.chars() {
            if c == '"' || c == '\\' {
                path.push('\\');
            }
            path.push(c);
        }
        path.push('"');
    }
    path
}

impl JsonFilter {
    /// The condition and its parameters.
    pub(super) fn sql(&self, params: &mut Vec<Value>) -> String {
        let doc = self.document.as_str();
        let path = json_path(&self.path);
        let text = self.document.text_sql();
        // A number compared before its type is checked: a row whose value is not such a number
        // fails on one more parse of its document, not two (a value that is no number counts as
        // 0 there, with a warning, and the type check refuses it).
        let numeric = format!("JSON_TYPE(JSON_EXTRACT({doc}, ?)) IN ('INTEGER','UNSIGNED INTEGER','DOUBLE','DECIMAL')");
        let number = format!("(JSON_EXTRACT({doc}, ?) + 0)");
        let equal = |value: &str, params: &mut Vec<Value>| match value.parse::<f64>().ok().filter(|n| n.is_finite()) {
            Some(n) => {
                params.extend([path.clone().into(), value.into(), path.clone().into(), n.into(), path.clone().into()]);
                format!("COALESCE({text} = ? OR ({number} = ? AND {numeric}), FALSE)")
            }
            None => {
                params.extend([path.clone().into(), value.into()]);
                format!("COALESCE({text} = ?, FALSE)")
            }
        };
        match &self.op {
            JsonOp::Eq(value) => equal(value, params),
            JsonOp::Neq(value) => format!("NOT {}", equal(value, params)),
            JsonOp::Gt(n) | JsonOp::Lt(n) => {
                let sign = if matches!(self.op, JsonOp::Gt(_)) { ">" } else { "<" };
                params.extend([path.clone().into(), (*n).into(), path.clone().into()]);
                format!("COALESCE({number} {sign} ? AND {numeric}, FALSE)")
            }
            JsonOp::Contains(part) => {
                params.extend([path.into(), format!("%{}%", like_escaped(part)).into()]);
                format!("COALESCE({text} LIKE ? ESCAPE '!', FALSE)")
            }
            JsonOp::IsSet => {
                params.push(path.into());
                format!("COALESCE(JSON_TYPE(JSON_EXTRACT({doc}, ?)), 'NULL') <> 'NULL'")
            }
        }
    }
}

/// What `GET /v1/events` asks for. Empty lists mean "any".
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// `timestamp >= from`.
    pub from: Option<DateTime<Utc>>,
    /// `timestamp < to`.
    pub to: Option<DateTime<Utc>>,
    pub types: Vec<EventType>,
    pub names: Vec<String>,
    /// The events of a user: its id and the ids linked to it (`Store::user_ids`). An event is
    /// the user's when its userId is one of them, or it has none and its anonymousId is.
    pub subjects: Option<Vec<String>>,
    pub anonymous_id: Option<String>,
    pub json: Vec<JsonFilter>,
}

/// Where a list of events stands: the `(time, id)` key of the last row passed. Its cursor
/// shows the time and the public id, and carries the private id hidden (`Keyring::sign_hiding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPosition {
    pub at: DateTime<Utc>,
    pub uid: Uuid,
    /// The row's private id; `None` in a cursor of an earlier release, which carried the
    /// public id only (the walk then looks the row up). 0 where no row stands (a tail opened
    /// on a quiet project): every row of its millisecond comes after it.
    pub row: Option<u64>,
}

/// A page of a list and where the next one starts (`None`: the list is complete).
#[derive(Debug)]
pub struct ListPage<T, P> {
    pub items: Vec<T>,
    pub next: Option<P>,
}

/// The most a page's rows carry, in bytes of their text: a Lambda answer holds 6 MB, and a
/// page of 1,000 events of 32 KB would be 32 MB.
pub const PAGE_MAX_BYTES: usize = 4_000_000;
/// What a row costs in an answer besides its text: names, quotes, times, ids.
const ROW_OVERHEAD_BYTES: usize = 300;

impl<T, P> ListPage<T, P> {
    /// The page cut before the item that takes it past `PAGE_MAX_BYTES` (one item at
    /// least), going on after the last item kept: a short page with a cursor.
    fn within_bytes(mut self, size: impl Fn(&T) -> usize, position: impl Fn(&T) -> P) -> Self {
        if let Some(kept) = kept_within_bytes(self.items.iter().map(size))
            && kept < self.items.len()
        {
            self.items.truncate(kept);
            self.next = self.items.last().map(position);
        }
        self
    }

    /// `items` read with one more than `limit`: a full page continues after its last item;
    /// a short one at `otherwise` (where the walk stopped), or nowhere.
    fn of(mut items: Vec<T>, limit: usize, position: impl Fn(&T) -> P, otherwise: Option<P>) -> Self {
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(position)
        } else {
            otherwise
        };
        Self { items, next }
    }
}

/// Where a list's rows carry their mark "hidden" (`being_erased`, or another user's in a
/// user's list): after `EVENT_VIEW_COLUMNS`.
const HIDDEN_COLUMN: usize = 16;

/// The rows, oldest first, up to those that take them past `PAGE_MAX_BYTES` (one at least):
/// the live tail's next position is its last row kept.
fn rows_within_bytes(rows: &mut Vec<Row>) {
    let text_bytes = |row: &Row| -> usize {
        (0..row.len())
            .filter_map(|index| match row.as_ref(index) {
                Some(Value::Bytes(bytes)) => Some(bytes.len()),
                _ => None,
            })
            .sum()
    };
    if let Some(kept) = kept_within_bytes(rows.iter().map(text_bytes)) {
        rows.truncate(kept);
    }
}

/// A page's items kept as they are read, up to the one that would take them past
/// `PAGE_MAX_BYTES` (one at least), as `ListPage::within_bytes` cuts a page read whole.
struct PageBytes<T> {
    items: Vec<T>,
    budget: PageBudget,
    /// An item was left out: the page goes on after the last one kept.
    full: bool,
}

impl<T> Default for PageBytes<T> {
    fn default() -> Self {
        Self { items: Vec::new(), budget: PageBudget::default(), full: false }
    }
}

impl<T> PageBytes<T> {
    fn push(&mut self, item: T, size: impl Fn(&T) -> usize) {
        if self.budget.admits(size(&item)) {
            self.items.push(item);
        } else {
            self.full = true;
        }
    }
}

/// A page's text so far: the first item always fits, each next one while the page stays
/// within `PAGE_MAX_BYTES`.
#[derive(Default)]
struct PageBudget {
    bytes: usize,
    items: usize,
}

impl PageBudget {
    /// Whether an item of `size` bytes of text still fits; it is counted either way.
    fn admits(&mut self, size: usize) -> bool {
        self.bytes += size + ROW_OVERHEAD_BYTES;
        self.items += 1;
        self.items == 1 || self.bytes <= PAGE_MAX_BYTES
    }
}

/// Of items of these sizes (text only), how many a page keeps once they pass
/// `PAGE_MAX_BYTES`: those before the one that passes it, one at least. `None`: all fit.
fn kept_within_bytes(sizes: impl Iterator<Item = usize>) -> Option<usize> {
    let mut budget = PageBudget::default();
    sizes.enumerate().find(|&(_, size)| !budget.admits(size)).map(|(index, _)| index)
}

/// A list's rows as events, each with its mark "hidden".
fn marked_events(rows: Vec<Row>) -> Result<Vec<(EventView, bool)>, StoreError> {
    rows.into_iter()
        .map(|row| {
            let hidden = required(&row, HIDDEN_COLUMN)?;
            Ok((event_view(row)?, hidden))
        })
        .collect()
}

impl<P> ListPage<(EventView, bool), P> {
    /// The page without the events marked hidden; its next position stays where the walk got
    /// to, so that a page may come back short but the list goes on.
    fn without_hidden(self) -> ListPage<EventView, P> {
        let items = self.items.into_iter().filter(|(_, hidden)| !hidden).map(|(event, _)| event).collect();
        ListPage { items, next: self.next }
    }
}

impl EventPosition {
    pub fn of(event: &EventView) -> Self {
        Self { at: event.timestamp, uid: event.id, row: Some(event.row_id) }
    }
}

/// A kind of profile its lists walk in id order: users (identify calls) and groups (group
/// calls).
trait Profile: Sized + Send {
    const TABLE: &'static str;
    /// Its id within the project, and the unique index of (project, id) (a group's: of
    /// (project, id, type)).
    const ID_COLUMN: &'static str;
    const ID_INDEX: &'static str;
    /// Its live rows through that index.
    const LIVE_BY_ID: &'static str;
    const COLUMNS: &'static str;
    fn of_row(row: Row) -> Result<Self, StoreError>;
    fn id(&self) -> &str;
    fn traits(&self) -> Option<&RawValue>;
    /// Its place in the list, as a cursor carries it.
    fn position(&self) -> String {
        self.id().to_string()
    }
    /// The list's order: the key after the project.
    const ORDER: &'static str = Self::ID_COLUMN;
    /// The place of a row read as `ORDER`.
    fn position_of(row: &Row) -> Result<String, StoreError> {
        required(row, 0)
    }
    /// The rows past `position` (`Past::After`), or up to it (`Past::UpTo`), with its
    /// parameters.
    fn beyond(position: &str, past: Past, params: &mut Vec<Value>) -> String {
        params.push(position.into());
        format!("{} {} ?", Self::ID_COLUMN, past.operator())
    }

    /// The bytes of its text in an answer (not counting names and quotes).
    fn text_bytes(&self) -> usize {
        self.id().len() + self.traits().map_or(0, |traits| traits.get().len())
    }
}

impl Profile for UserView {
    const TABLE: &'static str = "users";
    const ID_COLUMN: &'static str = "user_id";
    const ID_INDEX: &'static str = "uq_users_user";
    const LIVE_BY_ID: &'static str = LIVE_USERS_BY_ID;
    const COLUMNS: &'static str = USER_VIEW_COLUMNS;
    fn of_row(row: Row) -> Result<Self, StoreError> {
        user_view(row)
    }
    fn id(&self) -> &str {
        &self.user_id
    }
    fn traits(&self) -> Option<&RawValue> {
        self.traits.as_deref()
    }
}

impl Profile for GroupView {
    const TABLE: &'static str = "group_profiles";
    const ID_COLUMN: &'static str = "group_id";
    const ID_INDEX: &'static str = "uq_group_profiles_group";
    const LIVE_BY_ID: &'static str = LIVE_GROUPS_BY_ID;
    const COLUMNS: &'static str = GROUP_VIEW_COLUMNS;
    fn of_row(row: Row) -> Result<Self, StoreError> {
        group_view(row)
    }
    fn id(&self) -> &str {
        &self.group_id
    }
    fn traits(&self) -> Option<&RawValue> {
        self.traits.as_deref()
    }
    fn position(&self) -> String {
        group_position(GroupRef { kind: &self.group_type, id: &self.group_id })
    }
    const ORDER: &'static str = "group_id, group_type";
    fn position_of(row: &Row) -> Result<String, StoreError> {
        let (id, kind): (String, String) = (required(row, 0)?, required(row, 1)?);
        Ok(group_position(GroupRef { kind: &kind, id: &id }))
    }
    fn beyond(position: &str, past: Past, params: &mut Vec<Value>) -> String {
        group_beyond(position, past, params)
    }
}

/// Which side of a place in a list.
#[derive(Clone, Copy)]
enum Past {
    After,
    UpTo,
}

impl Past {
    fn operator(self) -> &'static str {
        match self {
            Past::After => ">",
            Past::UpTo => "<=",
        }
    }
}

/// A group's place in a list in the order of its keys (id, then type), as a cursor carries
/// it: the id, NUL, the type (neither holds control characters).
fn group_position(group: GroupRef<'_>) -> String {
    format!("{}\0{}", group.id, group.kind)
}

/// The rows past a group's place (`group_position`) in (id, type) order, or up to it, with
/// its parameters. An id alone, of a cursor of a release before group types, is the place
/// after every group of the id.
fn group_beyond(position: &str, past: Past, params: &mut Vec<Value>) -> String {
    let Some((id, kind)) = position.split_once('\0') else {
        params.push(position.into());
        return format!("group_id {} ?", past.operator());
    };
    let id_past = match past {
        Past::After => ">",
        Past::UpTo => "<",
    };
    params.extend([Value::from(id), Value::from(id), Value::from(kind)]);
    format!("(group_id {id_past} ? OR (group_id = ? AND group_type {} ?))", past.operator())
}

/// A group a user belongs to, and when the first call making one of its ids a member was
/// stored.
#[derive(Debug, Serialize)]
pub struct UserGroup {
    #[serde(rename = "groupId")]
    pub group_id: String,
    #[serde(rename = "groupType")]
    pub group_type: String,
    #[serde(rename = "addedAt")]
    pub added_at: DateTime<Utc>,
}

/// A member of a group: a user id (or the anonymous id of a group call without one), and when
/// its first call into the group was stored.
#[derive(Debug, Serialize)]
pub struct GroupMember {
    #[serde(rename = "memberId")]
    pub member_id: String,
    #[serde(rename = "addedAt")]
    pub added_at: DateTime<Utc>,
}

/// One way into the events table: equalities on an index's columns after `project_id`, with
/// `timestamp` next, so that the index hands out rows newest first.
struct Arm {
    /// The index it walks (named: with a range on the time after equalities, MariaDB would
    /// otherwise walk the project's whole part of the time index from the newest row).
    index: &'static str,
    equal: Vec<(&'static str, Value)>,
}

/// Names live on these types only (`event` of track, `name` of page and screen).
const NAMED_TYPES: [EventType; 3] = [EventType::Track, EventType::Page, EventType::Screen];

impl EventFilter {
    /// For a list of a user's events, the condition "the row is the user's": its userId is one
    /// of the ids, or it has none and its anonymousId is (with its parameters).
    fn mine(&self) -> Option<(String, Vec<Value>)> {
        let ids = self.subjects.as_ref()?;
        let list = super::placeholders(ids.len());
        let params = ids.iter().chain(ids).map(|id| Value::from(id.as_str())).collect();
        Some((format!("(e.user_id IN ({list}) OR (e.user_id IS NULL AND e.anonymous_id IN ({list})))"), params))
    }

    /// The index walks that together cover the filter, and the conditions they leave to the
    /// rows themselves.
    fn plan(&self) -> (Vec<Arm>, Vec<String>, Vec<Value>) {
        let mut rest = Vec::new();
        let mut params = Vec::new();
        let arms: Vec<Arm> = if let Some(ids) = &self.subjects {
            ids.iter()
                .flat_map(|id| {
                    [
                        Arm { index: "ix_events_user", equal: vec![("user_id", id.as_str().into())] },
                        // Also the id's events that carry a user id: the page drops those
                        // (`EventFilter::mine`), so that the walk examines no more than it passes.
                        Arm { index: "ix_events_anonymous", equal: vec![("anonymous_id", id.as_str().into())] },
                    ]
                })
                .collect()
        } else if let Some(anonymous) = &self.anonymous_id {
            vec![Arm { index: "ix_events_anonymous", equal: vec![("anonymous_id", anonymous.as_str().into())] }]
        } else if !self.names.is_empty() {
            let types = NAMED_TYPES.into_iter().filter(|kind| self.types.is_empty() || self.types.contains(kind));
            types
                .flat_map(|kind| {
                    self.names.iter().map(move |name| Arm {
                        index: "ix_events_name",
                        equal: vec![("type", kind.as_str().into()), ("name", name.as_str().into())],
                    })
                })
                .collect()
        } else {
            vec![Arm { index: "ix_events_time", equal: Vec::new() }]
        };
        let by_subject_or_anonymous = self.subjects.is_some() || self.anonymous_id.is_some();
        if !self.types.is_empty() && (by_subject_or_anonymous || self.names.is_empty()) {
            rest.push(format!("type IN ({})", super::placeholders(self.types.len())));
            params.extend(self.types.iter().map(|kind| Value::from(kind.as_str())));
        }
        if !self.names.is_empty() && by_subject_or_anonymous {
            rest.push(format!("name IN ({})", super::placeholders(self.names.len())));
            params.extend(self.names.iter().map(|name| Value::from(name.as_str())));
        }
        if let (Some(anonymous), Some(_)) = (&self.anonymous_id, &self.subjects) {
            rest.push("anonymous_id = ?".into());
            params.push(anonymous.as_str().into());
        }
        for filter in &self.json {
            rest.push(filter.sql(&mut params));
        }
        (arms, rest, params)
    }
}

/// `(timestamp, id)` of a row, the order of the event lists.
type Key = (chrono::NaiveDateTime, u64);

/// The conditions of one arm's walk between two places (newest first: `below` is where it
/// starts, exclusive, `down_to` where it stops, inclusive), with their parameters.
fn walk(
    project: ProjectId,
    filter: &EventFilter,
    arm: &Arm,
    below: Option<EventPosition>,
    down_to: Option<Key>,
) -> (String, Vec<Value>) {
    let mut conditions = vec!["project_id = ?".to_string()];
    let mut params = vec![Value::from(project.0)];
    for (column, value) in &arm.equal {
        conditions.push(format!("{column} = ?"));
        params.push(value.clone());
    }
    if let Some(from) = filter.from {
        conditions.push("timestamp >= ?".into());
        params.push(to_db_time(from).into());
    }
    if let Some(to) = filter.to {
        conditions.push("timestamp < ?".into());
        params.push(to_db_time(to).into());
    }
    if let Some(position) = below {
        conditions.push(after_position("timestamp", position, project, Order::NewestFirst, &mut params));
    }
    if let Some((at, id)) = down_to {
        conditions.push("timestamp >= ? AND (timestamp > ? OR id >= ?)".into());
        params.extend([at.into(), at.into(), id.into()]);
    }
    (conditions.join(" AND "), params)
}

impl Store {
    /// A page of the project's events, newest first, after `after`. Examines at most
    /// `max_examined` index entries per way into the table.
    pub async fn list_events(
        &self,
        project: ProjectId,
        filter: &EventFilter,
        after: Option<EventPosition>,
        limit: usize,
        max_examined: usize,
    ) -> Result<ListPage<EventView, EventPosition>, StoreError> {
        let (arms, rest, rest_params) = filter.plan();
        if arms.is_empty() {
            return Ok(ListPage { items: Vec::new(), next: None });
        }
        let mut conn = self.conn().await?;
        // Where the walk stops: the `max_examined`-th entry of the merged walks. Needed only
        // when rows may fail conditions the indexes do not hold.
        let bounded = !rest.is_empty();
        let boundary = if bounded {
            self.walk_boundary(&mut conn, project, filter, &arms, after, max_examined).await?
        } else {
            None
        };

        let fetch = Value::from(limit as u64 + 1);
        // The rows the page drops after placing its cursor: those being erased, and in a
        // user's list those of another user.
        let mut params = Vec::new();
        let erasing = being_erased(ERASABLE_IDS, project, &mut params);
        let hidden = match filter.mine() {
            Some((mine, mine_params)) => {
                params.extend(mine_params);
                format!("({erasing} OR NOT {mine})")
            }
            None => erasing,
        };
        let walks: Vec<(String, String)> = arms
            .iter()
            .map(|arm| {
                let (walk, walk_params) = walk(project, filter, arm, after, boundary.map(|(key, _)| key));
                params.extend(walk_params);
                params.extend(rest_params.iter().cloned());
                params.push(fetch.clone());
                let conditions: Vec<String> = std::iter::once(walk).chain(rest.iter().cloned()).collect();
                (live_events_by(arm.index), conditions.join(" AND "))
            })
            .collect();
        let newest_first = "ORDER BY timestamp DESC, id DESC LIMIT ?";
        let sql = if let [(events, conditions)] = walks.as_slice() {
            // One walk reads its rows whole as it goes.
            format!("SELECT {EVENT_VIEW_COLUMNS}, {hidden} FROM {events} e WHERE {conditions} {newest_first}")
        } else {
            // UNION, not UNION ALL: an event of a user can come through two of its ids. The
            // walks read live rows' keys only; the join then reads the page's rows whole.
            let selects: Vec<String> = walks
                .iter()
                .map(|(events, conditions)| {
                    format!("(SELECT timestamp, id FROM {events} e WHERE {conditions} {newest_first})")
                })
                .collect();
            params.push(fetch);
            format!(
                "SELECT {EVENT_VIEW_COLUMNS}, {hidden} FROM events e /* with deleted */
                 JOIN (SELECT timestamp AS at, id AS page_id FROM ({}) walks {newest_first}) page ON id = page_id
                 ORDER BY at DESC, page_id DESC",
                selects.join(" UNION ")
            )
        };
        let rows: Vec<Row> = self.capped_read(&mut conn, &sql, params).await?;
        let walked = marked_events(rows)?;
        let page = ListPage::of(walked, limit, |(event, _)| EventPosition::of(event), boundary.map(|(_, at)| at));
        Ok(page.without_hidden().within_bytes(EventView::text_bytes, EventPosition::of))
    }

    /// The `max_examined`-th index entry of the arms' merged walks below `below`, if there
    /// are that many: its key and its position.
    async fn walk_boundary(
        &self,
        conn: &mut mysql_async::Conn,
        project: ProjectId,
        filter: &EventFilter,
        arms: &[Arm],
        below: Option<EventPosition>,
        max_examined: usize,
    ) -> Result<Option<(Key, EventPosition)>, StoreError> {
        // Deleted rows count: they are entries examined too.
        let walks: Vec<(String, Vec<Value>)> = arms
            .iter()
            .map(|arm| {
                let (walk, params) = walk(project, filter, arm, below, None);
                (format!("events /* with deleted */ FORCE INDEX ({}) WHERE {walk}", arm.index), params)
            })
            .collect();
        let newest_first = "ORDER BY timestamp DESC, id DESC";
        let mut params = Vec::new();
        let edge = if let [(walk, walk_params)] = walks.as_slice() {
            // One walk: along its index alone (it holds the time and the id) to the edge.
            params.extend(walk_params.iter().cloned());
            format!("SELECT timestamp AS at, id AS edge_id FROM {walk} {newest_first} LIMIT 1 OFFSET ?")
        } else {
            let mut selects = Vec::new();
            for (walk, walk_params) in &walks {
                params.extend(walk_params.iter().cloned());
                params.push(Value::from(max_examined as u64));
                selects.push(format!("(SELECT timestamp, id FROM {walk} {newest_first} LIMIT ?)"));
            }
            let walks = selects.join(" UNION ");
            format!("SELECT timestamp AS at, id AS edge_id FROM ({walks}) walks {newest_first} LIMIT 1 OFFSET ?")
        };
        params.push(Value::from(max_examined as u64 - 1));
        let sql = format!("SELECT at, edge_id, uid FROM events /* with deleted */ JOIN ({edge}) edge ON id = edge_id");
        let row: Option<Row> = self.capped_read(conn, &sql, params).await?.into_iter().next();
        row.map(|row| {
            let at: chrono::NaiveDateTime = required(&row, 0)?;
            let key = (at, required(&row, 1)?);
            Ok((key, EventPosition { at: at.and_utc(), uid: required(&row, 2)?, row: Some(key.1) }))
        })
        .transpose()
    }

    /// Up to `limit` of the project's events with `from <= timestamp < to`, oldest first,
    /// after `after`, for an export; the position to continue after is the last row's.
    pub async fn export_events(
        &self,
        project: ProjectId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after: Option<EventPosition>,
        limit: usize,
    ) -> Result<ListPage<EventView, EventPosition>, StoreError> {
        let mut conn = self.conn().await?;
        let mut params = Vec::new();
        let erasing = being_erased(ERASABLE_IDS, project, &mut params);
        let mut conditions = vec!["project_id = ? AND timestamp >= ? AND timestamp < ?".to_string()];
        params.extend([Value::from(project.0), to_db_time(from).into(), to_db_time(to).into()]);
        if let Some(position) = after {
            conditions.push(after_position("timestamp", position, project, Order::OldestFirst, &mut params));
        }
        params.push((limit as u64 + 1).into());
        let sql = format!(
            "SELECT {EVENT_VIEW_COLUMNS}, {erasing} FROM {} e WHERE {} ORDER BY timestamp, id LIMIT ?",
            live_events_by("ix_events_time"),
            conditions.join(" AND ")
        );
        let rows = self.capped_read(&mut conn, &sql, params).await?;
        let page = ListPage::of(marked_events(rows)?, limit, |(event, _)| EventPosition::of(event), None);
        Ok(page.without_hidden().within_bytes(EventView::text_bytes, EventPosition::of))
    }

    /// The events stored after `after` (oldest first), up to `limit`, once settled
    /// (`LIVE_SETTLE_MS`). Without a position: the newest `limit` settled events. The answer's
    /// position is where to ask next; with no new events it stays where it was.
    pub async fn live_events(
        &self,
        project: ProjectId,
        after: Option<EventPosition>,
        limit: usize,
    ) -> Result<ListPage<EventView, EventPosition>, StoreError> {
        let mut conn = self.conn().await?;
        let settled = format!("created_at <= NOW(3) - INTERVAL {} MICROSECOND", LIVE_SETTLE_MS * 1000);
        let mut params = Vec::new();
        let columns = format!("{EVENT_VIEW_COLUMNS}, {}, created_at", being_erased(ERASABLE_IDS, project, &mut params));
        let stored = live_events_by("ix_events_stored");
        params.push(Value::from(project.0));
        let mut rows: Vec<Row> = match after {
            Some(position) => {
                let resume = after_position("created_at", position, project, Order::OldestFirst, &mut params);
                let sql = format!(
                    "SELECT {columns} FROM {stored} e WHERE project_id = ? AND {resume} AND {settled}
                     ORDER BY created_at, id LIMIT ?"
                );
                params.push((limit as u64).into());
                self.capped_read(&mut conn, &sql, params).await?
            }
            None => {
                let sql = format!(
                    "SELECT {columns} FROM {stored} e WHERE project_id = ? AND {settled}
                     ORDER BY created_at DESC, id DESC LIMIT ?"
                );
                params.push((limit as u64).into());
                let mut rows = self.capped_read(&mut conn, &sql, params).await?;
                rows.reverse();
                rows
            }
        };
        rows_within_bytes(&mut rows);
        let next = match rows.last() {
            Some(row) => Some(EventPosition {
                at: required::<chrono::NaiveDateTime>(row, HIDDEN_COLUMN + 1)?.and_utc(),
                uid: required(row, 0)?,
                row: Some(required(row, ROW_ID_COLUMN)?),
            }),
            // Nothing yet: start from the settled edge, so that a tail opened on a quiet project
            // shows what comes next rather than everything.
            None if after.is_none() => {
                let now: Option<chrono::NaiveDateTime> = with_timeout(
                    conn.query_first(format!("SELECT NOW(3) - INTERVAL {} MICROSECOND", LIVE_SETTLE_MS * 1000)),
                )
                .await?;
                now.map(|at| EventPosition { at: at.and_utc(), uid: Uuid::nil(), row: Some(0) })
            }
            None => after,
        };
        Ok(ListPage { items: marked_events(rows)?, next }.without_hidden())
    }

    /// A page of the project's user profiles in id order after `after`, whose id starts with
    /// `prefix` and whose traits pass `traits`.
    pub async fn list_users(
        &self,
        project: ProjectId,
        prefix: &str,
        traits: &[JsonFilter],
        after: Option<&str>,
        limit: usize,
        max_examined: usize,
    ) -> Result<ListPage<UserView, String>, StoreError> {
        self.list_profiles(project, None, prefix, traits, after, limit, max_examined).await
    }

    /// A page of the project's group profiles (of one type, if `kind` says which), in the
    /// order of their ids and then their types, as `list_users` lists users.
    #[allow(clippy::too_many_arguments)]
    pub async fn list_groups(
        &self,
        project: ProjectId,
        kind: Option<&str>,
        prefix: &str,
        traits: &[JsonFilter],
        after: Option<&str>,
        limit: usize,
        max_examined: usize,
    ) -> Result<ListPage<GroupView, String>, StoreError> {
        let of_kind = kind.map(|kind| ("group_type = ?".to_string(), Value::from(kind)));
        self.list_profiles(project, of_kind, prefix, traits, after, limit, max_examined).await
    }

    /// A page of one kind of profile in id order after `after`, whose id starts with `prefix`,
    /// that passes `only` (a condition and its parameter) and whose traits pass `traits`.
    #[allow(clippy::too_many_arguments)]
    async fn list_profiles<P: Profile>(
        &self,
        project: ProjectId,
        only: Option<(String, Value)>,
        prefix: &str,
        traits: &[JsonFilter],
        after: Option<&str>,
        limit: usize,
        max_examined: usize,
    ) -> Result<ListPage<P, String>, StoreError> {
        let mut conn = self.conn().await?;
        let id = P::ID_COLUMN;
        let mut walk = vec!["project_id = ?".to_string()];
        let mut walk_params = vec![Value::from(project.0)];
        if !prefix.is_empty() {
            walk.push(format!("{id} LIKE ? ESCAPE '!'"));
            walk_params.push(format!("{}%", like_escaped(prefix)).into());
        }
        if let Some(after) = after {
            walk.push(P::beyond(after, Past::After, &mut walk_params));
        }
        let walk = walk.join(" AND ");
        // Rows the walk examines that may fail a condition: it stops at the boundary.
        let boundary: Option<String> = if traits.is_empty() && only.is_none() {
            None
        } else {
            let mut params = walk_params.clone();
            params.push(Value::from(max_examined as u64 - 1));
            let (table, index, order) = (P::TABLE, P::ID_INDEX, P::ORDER);
            let sql = format!(
                "SELECT {order} FROM {table} /* with deleted */ FORCE INDEX ({index}) WHERE {walk}
                 ORDER BY {order} LIMIT 1 OFFSET ?"
            );
            self.capped_read(&mut conn, &sql, params).await?.first().map(P::position_of).transpose()?
        };
        let mut conditions = vec![walk];
        let mut params = walk_params;
        if let Some(edge) = &boundary {
            conditions.push(P::beyond(edge, Past::UpTo, &mut params));
        }
        if let Some((condition, param)) = only {
            conditions.push(condition);
            params.push(param);
        }
        for filter in traits {
            conditions.push(filter.sql(&mut params));
        }
        // A group named by an id being erased too: cleanup deletes it (a personal workspace)
        // unless others are in it, and until then it is not shown.
        conditions.push(format!("NOT {}", being_erased(&format!("p.{id}"), project, &mut params)));
        params.push(Value::from(limit as u64 + 1));
        let sql = format!(
            "SELECT {} FROM {} p WHERE {} ORDER BY {} LIMIT ?",
            P::COLUMNS,
            P::LIVE_BY_ID,
            conditions.join(" AND "),
            P::ORDER
        );
        // Profiles of up to 256 KiB each: a page's rows are kept as they come, never all held.
        self.record(&sql, &params);
        let sql = super::capped(&sql, &conn);
        let keep = |kept: Result<PageBytes<P>, StoreError>, row: Row| {
            let mut kept = kept?;
            if !kept.full {
                kept.push(P::of_row(row)?, P::text_bytes);
            }
            Ok(kept)
        };
        let kept = with_timeout(conn.exec_fold(sql, params, Ok(PageBytes::default()), keep)).await??;
        let position = |profile: &P| profile.position();
        Ok(match kept.full {
            true => ListPage { next: kept.items.last().map(position), items: kept.items },
            false => ListPage::of(kept.items, limit, position, boundary),
        })
    }

    /// A page of a live group's members (user ids, or anonymous ids of calls without one) in
    /// id order after `after`: of the group of the id and type, or of the id alone where one
    /// group has it (`Store::group`). A member being erased is left out, as lists leave its
    /// events out, and a soft-deleted user.
    pub async fn group_members(
        &self,
        project: ProjectId,
        group_id: &str,
        kind: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Result<ListPage<GroupMember, String>, GroupMiss>, StoreError> {
        let mut conn = self.conn().await?;
        let kind = match group_type_of(&mut conn, project, group_id, kind).await? {
            Ok(kind) => kind,
            Err(miss) => return Ok(Err(miss)),
        };
        let mut params = vec![Value::from(project.0), Value::from(group_id), Value::from(kind)];
        let mut conditions = vec!["project_id = ? AND group_id = ? AND group_type = ?".to_string()];
        if let Some(after) = after {
            conditions.push("member_id > ?".into());
            params.push(after.into());
        }
        conditions.push(format!("NOT {}", being_erased("m.member_id", project, &mut params)));
        // A soft-deleted user is not shown, as its profile is not.
        conditions.push(
            "NOT EXISTS (SELECT 1 FROM users u /* with deleted */ WHERE u.project_id = m.project_id
                         AND u.user_id = m.member_id AND u.deleted_at IS NOT NULL)"
                .into(),
        );
        params.push(Value::from(limit as u64 + 1));
        let sql = format!(
            "SELECT member_id, created_at FROM group_members m FORCE INDEX (uq_group_members)
             WHERE {} ORDER BY member_id LIMIT ?",
            conditions.join(" AND ")
        );
        let member = |(member_id, added_at): (String, chrono::NaiveDateTime)| GroupMember {
            member_id,
            added_at: super::from_db_time(added_at),
        };
        let page = self.memberships(&mut conn, &sql, params, limit, member, |member| member.member_id.clone()).await?;
        Ok(Ok(page))
    }

    /// A page of the groups `user_id` belongs to through any of its ids (`user_ids`), in the
    /// order of the groups' ids and types after `after`; `None` when the user's profile is
    /// soft-deleted (as for its timeline). Memberships of an id being erased, and groups named
    /// by one, are left out.
    pub async fn user_groups(
        &self,
        project: ProjectId,
        user_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<ListPage<UserGroup, String>>, StoreError> {
        let Some(ids) = self.user_ids(project, user_id).await? else { return Ok(None) };
        let mut conn = self.conn().await?;
        // Each id's first groups after `after` along its index (of a page's worth each, the
        // page's groups are among them), then a group's earliest membership over the ids.
        let mut params = Vec::new();
        let fetch = Value::from(limit as u64 + 1);
        let per_id: Vec<String> = ids
            .iter()
            .map(|id| {
                params.extend([Value::from(project.0), Value::from(id.as_str())]);
                let after_sql = match after {
                    Some(after) => format!("AND {}", group_beyond(after, Past::After, &mut params)),
                    None => String::new(),
                };
                // A group named by an id being erased is not shown either (as in its list), nor
                // one without a profile (deleted by cleanup as the membership was stored).
                let erasing = being_erased("m.member_id, m.group_id", project, &mut params);
                params.push(fetch.clone());
                format!(
                    "SELECT group_id, group_type, created_at FROM group_members m FORCE INDEX (ix_group_members_member)
                     WHERE project_id = ? AND member_id = ? {after_sql} AND NOT {erasing}
                       AND EXISTS (SELECT 1 FROM {LIVE_GROUPS} g WHERE g.project_id = m.project_id
                                   AND g.group_id = m.group_id AND g.group_type = m.group_type)
                     ORDER BY group_id, group_type LIMIT ?"
                )
            })
            .collect();
        params.push(fetch);
        // One id's read as it is (MySQL before 8.0.31 refuses a derived table in double
        // parentheses); several, each in parentheses for its own ORDER BY and LIMIT.
        let memberships = match per_id.as_slice() {
            [one] => one.clone(),
            several => format!("({})", several.join(") UNION ALL (")),
        };
        let sql = format!(
            "SELECT group_id, group_type, MIN(created_at) FROM ({memberships}) memberships
             GROUP BY group_id, group_type ORDER BY group_id, group_type LIMIT ?"
        );
        let group = |(group_id, group_type, added_at): (String, String, chrono::NaiveDateTime)| UserGroup {
            group_id,
            group_type,
            added_at: super::from_db_time(added_at),
        };
        let position = |group: &UserGroup| group_position(GroupRef { kind: &group.group_type, id: &group.group_id });
        Ok(Some(self.memberships(&mut conn, &sql, params, limit, group, position).await?))
    }

    /// A page of memberships that `sql` reads as rows `make` takes, one more than `limit`
    /// where there are more: it goes on after the last one's place (`position`).
    async fn memberships<R: FromRow + Send + 'static, T: Send>(
        &self,
        conn: &mut mysql_async::Conn,
        sql: &str,
        params: Vec<Value>,
        limit: usize,
        make: impl Fn(R) -> T + Send + Sync,
        position: impl Fn(&T) -> String,
    ) -> Result<ListPage<T, String>, StoreError> {
        let mut items = Vec::new();
        let add = |row: R| {
            items.push(make(row));
            Ok(())
        };
        self.capped_read_each(conn, sql, params, add).await?;
        Ok(ListPage::of(items, limit, position, None))
    }

    /// A page of `user_id`'s events (`filter` with the user's ids as its subjects), `None` when
    /// the user's profile is soft-deleted. Most users have no links to follow, so the page of
    /// the user id alone is read beside the lookup of its links and is the answer when the
    /// lookup finds none: one round trip instead of two. Otherwise the page is read again with
    /// every id.
    pub async fn list_user_events(
        &self,
        project: ProjectId,
        user_id: &str,
        filter: EventFilter,
        after: Option<EventPosition>,
        limit: usize,
        max_examined: usize,
    ) -> Result<Option<ListPage<EventView, EventPosition>>, StoreError> {
        let own = EventFilter { subjects: Some(vec![user_id.to_string()]), ..filter.clone() };
        let (ids, own_page) =
            tokio::join!(self.user_ids(project, user_id), self.list_events(project, &own, after, limit, max_examined));
        let Some(ids) = ids? else { return Ok(None) };
        if ids.len() == 1 {
            return own_page.map(Some);
        }
        let linked = EventFilter { subjects: Some(ids), ..filter };
        self.list_events(project, &linked, after, limit, max_examined).await.map(Some)
    }

    /// The user id and the ids linked to it that a list of the user's events follows: up to
    /// `MAX_LIST_SUBJECTS`, the user's own first, then in the order the links reach them.
    /// `None` when the user's profile is soft-deleted (a user without a profile, who only
    /// sent events, has a timeline too).
    pub async fn user_ids(&self, project: ProjectId, user_id: &str) -> Result<Option<Vec<String>>, StoreError> {
        // The profile's check and the links' walk side by side, each on its own connection:
        // a request waits for the longer one rather than both.
        let deleted = async {
            let mut conn = self.conn().await?;
            with_timeout(conn.exec_first::<bool, _, _>(
                "SELECT deleted_at IS NOT NULL FROM users /* with deleted */ WHERE project_id = ? AND user_id = ?",
                (project.0, user_id),
            ))
            .await
        };
        let linked = async { super::links::linked_ids(&mut self.conn().await?, project, user_id).await };
        let (deleted, linked) = tokio::try_join!(deleted, linked)?;
        if deleted == Some(true) {
            return Ok(None);
        }
        let mut ids = vec![user_id.to_string()];
        ids.extend(linked);
        ids.truncate(MAX_LIST_SUBJECTS);
        Ok(Some(ids))
    }
}

/// `text` for a `LIKE … ESCAPE '!'` pattern: its wildcards match themselves. (`!`, since a
/// backslash means something else under NO_BACKSLASH_ESCAPES.)
fn like_escaped(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '!' | '%' | '_') {
            escaped.push('!');
        }
        escaped.push(c);
    }
    escaped
}

/// Which way a list walks its `(time, id)` key.
#[derive(Clone, Copy)]
enum Order {
    NewestFirst,
    OldestFirst,
}

/// The condition "after `position`" on the `(time, id)` key of a list walking `order`
/// (`time` its time column), with its parameters. A position without its private id (a
/// cursor of an earlier release) finds it by the public id, an uncorrelated subquery run once
/// per walk; if that row is gone since (purged, erased), the walk resumes at its millisecond,
/// where a row may come twice but none is missed.
fn after_position(
    time: &str,
    position: EventPosition,
    project: ProjectId,
    order: Order,
    params: &mut Vec<Value>,
) -> String {
    let (before, gone) = match order {
        Order::NewestFirst => ("<", u64::MAX),
        Order::OldestFirst => (">", 0),
    };
    let at = to_db_time(position.at);
    params.extend([at.into(), at.into()]);
    let id = match position.row {
        Some(id) => {
            params.push(id.into());
            "?".to_string()
        }
        None => {
            params.extend([project.0.into(), position.uid.into()]);
            format!(
                "COALESCE((SELECT c.id FROM events c /* with deleted */ WHERE c.project_id = ? AND c.uid = ?), {gone})"
            )
        }
    };
    format!("{time} {before}= ? AND ({time} {before} ? OR id {before} {id})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hidden_mark_follows_the_event_columns() {
        assert_eq!(EVENT_VIEW_COLUMNS.split(',').count(), HIDDEN_COLUMN);
        assert_eq!(EVENT_VIEW_COLUMNS.split(',').nth(ROW_ID_COLUMN).map(str::trim), Some("id"));
    }

    #[test]
    fn a_json_path_quotes_every_key_so_that_no_key_is_path_syntax() {
        let filter = JsonFilter {
            document: JsonDocument::Properties,
            path: vec!["a.b".into(), "say \"hi\"".into(), "back\\slash".into(), "$[0]".into()],
            op: JsonOp::IsSet,
        };
        assert_eq!(json_path(&filter.path), r#"$."a.b"."say \"hi\""."back\\slash"."$[0]""#);
    }

    #[test]
    fn contains_escapes_the_like_wildcards() {
        let filter = JsonFilter {
            document: JsonDocument::Context,
            path: vec!["x".into()],
            op: JsonOp::Contains("50%_!".into()),
        };
        let mut params = Vec::new();
        filter.sql(&mut params);
        assert_eq!(params[1], Value::from("%50!%!_!!%"));
    }
}
