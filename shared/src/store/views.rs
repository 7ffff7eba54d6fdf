//! The reads of one event and one user profile, as the api returns them and an export
//! writes them.

use super::erasure::{ERASABLE_IDS, being_erased};
use super::live::{LIVE_EVENTS, LIVE_GROUPS, LIVE_USERS};
use super::{Store, StoreError, from_db_time, taken, taken_required, with_timeout};
use crate::ids::ProjectId;
use chrono::{DateTime, Utc};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

/// An event as the api returns it and an export writes it (serialised with the names in
/// `EVENT_FIELDS`, `deletedAt` only where set).
#[derive(Debug)]
pub struct EventView {
    pub id: Uuid,
    pub message_id: String,
    pub kind: String,
    pub name: Option<String>,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub group_id: Option<String>,
    pub previous_id: Option<String>,
    pub properties: Option<Box<RawValue>>,
    pub traits: Option<Box<RawValue>>,
    pub context: Option<Box<RawValue>>,
    pub timestamp: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub ip: Option<String>,
    /// Only in exports, which include soft-deleted rows (they are still held).
    pub deleted_at: Option<DateTime<Utc>>,
    /// The row's private id: never shown, a list's position carries it hidden
    /// (`EventPosition`).
    pub(crate) row_id: u64,
}

impl EventView {
    /// The bytes of its text in an answer (not counting names and quotes).
    pub(crate) fn text_bytes(&self) -> usize {
        let raw = |value: &Option<Box<RawValue>>| value.as_ref().map_or(0, |raw| raw.get().len());
        let text = |value: &Option<String>| value.as_ref().map_or(0, String::len);
        self.message_id.len()
            + self.kind.len()
            + text(&self.name)
            + text(&self.user_id)
            + text(&self.anonymous_id)
            + text(&self.group_id)
            + text(&self.previous_id)
            + text(&self.ip)
            + raw(&self.properties)
            + raw(&self.traits)
            + raw(&self.context)
    }
}

/// The fields of an event as answers name them, in their order; a list may ask for some
/// (`fields=`).
pub const EVENT_FIELDS: [&str; 14] = [
    "id",
    "messageId",
    "type",
    "name",
    "userId",
    "anonymousId",
    "groupId",
    "previousId",
    "properties",
    "traits",
    "context",
    "timestamp",
    "receivedAt",
    "ip",
];

impl EventView {
    /// The event with only `fields` (names of `EVENT_FIELDS`; `None`: all), serialised
    /// straight from the row: the JSON documents are copied as stored, never parsed.
    pub fn with_fields<'a>(&'a self, fields: Option<&'a [&'a str]>) -> impl Serialize + 'a {
        Projection { event: self, fields }
    }
}

impl Serialize for EventView {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Projection { event: self, fields: None }.serialize(serializer)
    }
}

/// An event with some of its fields (`None`: all of them).
struct Projection<'a> {
    event: &'a EventView,
    fields: Option<&'a [&'a str]>,
}

impl Serialize for Projection<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let event = self.event;
        let mut map = serializer.serialize_map(None)?;
        for field in EVENT_FIELDS.into_iter().filter(|field| self.fields.is_none_or(|fields| fields.contains(field))) {
            match field {
                "id" => map.serialize_entry(field, &event.id)?,
                "messageId" => map.serialize_entry(field, &event.message_id)?,
                "type" => map.serialize_entry(field, &event.kind)?,
                "name" => map.serialize_entry(field, &event.name)?,
                "userId" => map.serialize_entry(field, &event.user_id)?,
                "anonymousId" => map.serialize_entry(field, &event.anonymous_id)?,
                "groupId" => map.serialize_entry(field, &event.group_id)?,
                "previousId" => map.serialize_entry(field, &event.previous_id)?,
                "properties" => map.serialize_entry(field, &event.properties)?,
                "traits" => map.serialize_entry(field, &event.traits)?,
                "context" => map.serialize_entry(field, &event.context)?,
                "timestamp" => map.serialize_entry(field, &Rfc3339(event.timestamp))?,
                "receivedAt" => map.serialize_entry(field, &Rfc3339(event.received_at))?,
                "ip" => map.serialize_entry(field, &event.ip)?,
                other => unreachable!("{other} is not in EVENT_FIELDS"),
            }
        }
        if let (None, Some(deleted_at)) = (self.fields, event.deleted_at) {
            map.serialize_entry("deletedAt", &Rfc3339(deleted_at))?;
        }
        map.end()
    }
}

pub(super) const EVENT_VIEW_COLUMNS: &str = "uid, message_id, type, name, user_id, anonymous_id, group_id, previous_id,
     properties, traits, context, timestamp, received_at, ip, deleted_at, id";
/// Where `EVENT_VIEW_COLUMNS` has the private `id`.
pub(super) const ROW_ID_COLUMN: usize = 15;

fn raw_json(row: &mut Row, index: usize) -> Option<Box<RawValue>> {
    taken::<String>(row, index).and_then(|text| RawValue::from_string(text).ok())
}

/// An event from its row (`EVENT_VIEW_COLUMNS`), its text moved out of the row, not copied.
pub(super) fn event_view(mut row: Row) -> Result<EventView, StoreError> {
    let row = &mut row;
    Ok(EventView {
        id: taken_required(row, 0)?,
        message_id: taken_required(row, 1)?,
        kind: taken_required(row, 2)?,
        name: taken(row, 3),
        user_id: taken(row, 4),
        anonymous_id: taken(row, 5),
        group_id: taken(row, 6),
        previous_id: taken(row, 7),
        properties: raw_json(row, 8),
        traits: raw_json(row, 9),
        context: raw_json(row, 10),
        timestamp: taken_required(row, 11).map(from_db_time)?,
        received_at: taken_required(row, 12).map(from_db_time)?,
        ip: taken(row, 13),
        deleted_at: taken(row, 14).map(from_db_time),
        row_id: taken_required(row, ROW_ID_COLUMN)?,
    })
}

/// A user profile as the api returns it.
#[derive(Debug, Serialize)]
pub struct UserView {
    pub id: Uuid,
    #[serde(rename = "userId")]
    pub user_id: String,
    pub traits: Option<Box<RawValue>>,
    #[serde(rename = "firstSeenAt")]
    pub first_seen_at: DateTime<Utc>,
    #[serde(rename = "lastSeenAt")]
    pub last_seen_at: DateTime<Utc>,
    #[serde(rename = "deletedAt", skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
    /// When an identify last left the traits as they were, for their size
    /// (`PROFILE_TRAITS_MAX_BYTES`).
    #[serde(rename = "traitsCappedAt", skip_serializing_if = "Option::is_none")]
    pub traits_capped_at: Option<DateTime<Utc>>,
}

/// A profile from its row (`USER_VIEW_COLUMNS`), moved out of the row.
pub(super) fn user_view(mut row: Row) -> Result<UserView, StoreError> {
    let row = &mut row;
    Ok(UserView {
        id: taken_required(row, 0)?,
        user_id: taken_required(row, 1)?,
        traits: raw_json(row, 2),
        first_seen_at: taken_required(row, 3).map(from_db_time)?,
        last_seen_at: taken_required(row, 4).map(from_db_time)?,
        deleted_at: taken(row, 5).map(from_db_time),
        traits_capped_at: taken(row, 6).map(from_db_time),
    })
}

pub(super) const USER_VIEW_COLUMNS: &str =
    "uid, user_id, traits, first_seen_at, last_seen_at, deleted_at, traits_capped_at";

/// A group profile (`group` calls) as the api returns it.
#[derive(Debug, Serialize)]
pub struct GroupView {
    pub id: Uuid,
    #[serde(rename = "groupId")]
    pub group_id: String,
    /// Its type (PostHog's `company`); `""` for a group of calls that name none (Segment's).
    #[serde(rename = "groupType")]
    pub group_type: String,
    pub traits: Option<Box<RawValue>>,
    /// The event time of the newest group call merged into `traits`.
    #[serde(rename = "traitsAt")]
    pub traits_at: DateTime<Utc>,
    /// When its first group call was stored.
    #[serde(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
    /// When a group call last left the traits as they were, for their size
    /// (`PROFILE_TRAITS_MAX_BYTES`).
    #[serde(rename = "traitsCappedAt", skip_serializing_if = "Option::is_none")]
    pub traits_capped_at: Option<DateTime<Utc>>,
}

/// A group profile from its row (`GROUP_VIEW_COLUMNS`), moved out of the row.
pub(super) fn group_view(mut row: Row) -> Result<GroupView, StoreError> {
    let row = &mut row;
    Ok(GroupView {
        id: taken_required(row, 0)?,
        group_id: taken_required(row, 1)?,
        group_type: taken_required(row, 2)?,
        traits: raw_json(row, 3),
        traits_at: taken_required(row, 4).map(from_db_time)?,
        created_at: taken_required(row, 5).map(from_db_time)?,
        traits_capped_at: taken(row, 6).map(from_db_time),
    })
}

pub(super) const GROUP_VIEW_COLUMNS: &str =
    "uid, group_id, group_type, traits, traits_at, created_at, traits_capped_at";

/// Why a group asked for by its id (and type, if given) is not one live group.
#[derive(Debug, PartialEq, Eq)]
pub enum GroupMiss {
    NotFound,
    /// Live groups of these types have the id: the question must say which.
    SeveralTypes(Vec<String>),
}

/// Most types a refusal of an id of groups of several types names (PostHog allows 5).
const TYPES_NAMED: usize = 10;

impl Store {
    /// One live event; `None` also while an erasure of one of its ids is in progress (as in
    /// every list).
    pub async fn event(&self, project: ProjectId, uid: Uuid) -> Result<Option<EventView>, StoreError> {
        let mut conn = self.conn().await?;
        let mut params = vec![Value::from(project.0), Value::from(uid)];
        let erasing = being_erased(ERASABLE_IDS, project, &mut params);
        let sql = format!(
            "SELECT {EVENT_VIEW_COLUMNS} FROM {LIVE_EVENTS} e WHERE project_id = ? AND uid = ? AND NOT {erasing}"
        );
        let row: Option<Row> = with_timeout(conn.exec_first(sql, params)).await?;
        row.map(event_view).transpose()
    }

    /// One live profile; `None` also while the user's erasure is in progress.
    pub async fn user(&self, project: ProjectId, user_id: &str) -> Result<Option<UserView>, StoreError> {
        let mut conn = self.conn().await?;
        let mut params = vec![Value::from(project.0), Value::from(user_id)];
        let erasing = being_erased("u.user_id", project, &mut params);
        let sql = format!(
            "SELECT {USER_VIEW_COLUMNS} FROM {LIVE_USERS} u WHERE project_id = ? AND user_id = ? AND NOT {erasing}"
        );
        let row: Option<Row> = with_timeout(conn.exec_first(sql, params)).await?;
        row.map(user_view).transpose()
    }

    /// One live group profile: of the id and type, or of the id alone where one group has it.
    /// Not found also while an erasure of an id that names it is in progress (as in its list).
    pub async fn group(
        &self,
        project: ProjectId,
        group_id: &str,
        kind: Option<&str>,
    ) -> Result<Result<GroupView, GroupMiss>, StoreError> {
        let mut conn = self.conn().await?;
        let (group, params) = live_group(project, group_id, kind);
        // Two tell whether one group has the id; then their types, for the answer.
        let sql = format!("SELECT {GROUP_VIEW_COLUMNS} FROM {group} ORDER BY group_type LIMIT 2");
        let mut rows: Vec<Row> = with_timeout(conn.exec(sql, params)).await?;
        Ok(match (rows.pop(), rows.is_empty()) {
            (None, _) => Err(GroupMiss::NotFound),
            (Some(row), true) => Ok(group_view(row)?),
            (Some(_), false) => {
                Err(group_type_of(&mut conn, project, group_id, kind).await?.err().unwrap_or(GroupMiss::NotFound))
            }
        })
    }
}

/// The type of the live group `group_id` (of `kind`, if given; of the only one otherwise),
/// as `Store::group` finds it (its traits not read).
pub(super) async fn group_type_of(
    conn: &mut Conn,
    project: ProjectId,
    group_id: &str,
    kind: Option<&str>,
) -> Result<Result<String, GroupMiss>, StoreError> {
    let (group, params) = live_group(project, group_id, kind);
    let sql = format!("SELECT group_type FROM {group} ORDER BY group_type LIMIT {TYPES_NAMED}");
    let mut types: Vec<String> = with_timeout(conn.exec(sql, params)).await?;
    Ok(match types.len() {
        0 => Err(GroupMiss::NotFound),
        1 => Ok(types.remove(0)),
        _ => Err(GroupMiss::SeveralTypes(types)),
    })
}

/// The live group `group_id` of the project (of `kind`, if given), unless an erasure in
/// progress names it: what follows `FROM` in a read of it, and its parameters.
fn live_group(project: ProjectId, group_id: &str, kind: Option<&str>) -> (String, Vec<Value>) {
    let mut params = vec![Value::from(project.0), Value::from(group_id)];
    let of_kind = match kind {
        Some(kind) => {
            params.push(Value::from(kind));
            " AND group_type = ?"
        }
        None => "",
    };
    let erasing = being_erased("g.group_id", project, &mut params);
    (format!("{LIVE_GROUPS} g WHERE project_id = ? AND group_id = ?{of_kind} AND NOT {erasing}"), params)
}

/// A time as chrono's serde writes it (RFC 3339 in UTC with `Z`, and 0, 3, 6 or 9 fractional
/// digits, as few as it needs), written into a buffer at once: through chrono's `Display` every
/// character went through the formatter and the JSON escaper one by one, a fifth of a page's
/// CPU for its 200 times.
struct Rfc3339(DateTime<Utc>);

impl Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use chrono::{Datelike, Timelike};
        let at = self.0;
        let nanos = at.nanosecond();
        // Years of five digits and leap seconds, which no stored time has: chrono's own way.
        if !(0..=9999).contains(&at.year()) || nanos >= 1_000_000_000 {
            return at.serialize(serializer);
        }
        let mut text = [0u8; 30];
        let mut end = 0;
        // `value` in `digits` digits, then `then`.
        let mut write = |mut value: u32, digits: usize, then: u8| {
            for place in (end..end + digits).rev() {
                text[place] = b'0' + (value % 10) as u8;
                value /= 10;
            }
            text[end + digits] = then;
            end += digits + 1;
        };
        write(at.year() as u32, 4, b'-');
        write(at.month(), 2, b'-');
        write(at.day(), 2, b'T');
        write(at.hour(), 2, b':');
        write(at.minute(), 2, b':');
        match nanos {
            0 => write(at.second(), 2, b'Z'),
            n => {
                write(at.second(), 2, b'.');
                match n {
                    n if n % 1_000_000 == 0 => write(n / 1_000_000, 3, b'Z'),
                    n if n % 1_000 == 0 => write(n / 1_000, 6, b'Z'),
                    n => write(n, 9, b'Z'),
                }
            }
        }
        serializer.serialize_str(std::str::from_utf8(&text[..end]).expect("ASCII digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_chrono_writes_them() {
        let mut times: Vec<DateTime<Utc>> = [0, 1, 999, 1_764_633_600_000, 1_764_633_600_123, 253_402_300_799_999]
            .into_iter()
            .filter_map(DateTime::from_timestamp_millis)
            .collect();
        times.extend(
            [1_500_000, 1_000, 7, 123_456_789, 999_999_999]
                .into_iter()
                .filter_map(|nanos| DateTime::from_timestamp(1_764_633_600, nanos)),
        );
        times.extend(DateTime::from_timestamp(-62_135_596_800 - 86_400, 0)); // the year 0
        times.extend(DateTime::from_timestamp(-62_167_219_200 - 86_400, 0)); // the year -1
        times.extend(DateTime::from_timestamp(253_402_300_800, 0)); // the year 10000
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let seconds = (state % 253_402_300_800) as i64;
            let nanos =
                [0, (state >> 40) as u32 % 1_000 * 1_000_000, (state >> 32) as u32 % 1_000_000_000][state as usize % 3];
            times.extend(DateTime::from_timestamp(seconds, nanos));
        }
        for at in times {
            let ours = serde_json::to_string(&Rfc3339(at)).expect("json");
            assert_eq!(ours, serde_json::to_string(&at).expect("json"), "{at:?}");
        }
    }

    fn event() -> EventView {
        let at = DateTime::from_timestamp_millis(1_764_633_600_123).expect("a time");
        EventView {
            id: Uuid::nil(),
            message_id: "m-1".into(),
            kind: "track".into(),
            name: Some("Signed Up".into()),
            user_id: Some("u-1".into()),
            anonymous_id: None,
            group_id: None,
            previous_id: None,
            properties: RawValue::from_string(r#"{"plan": "pro", "n": [1, 2.50]}"#.into()).ok(),
            traits: None,
            context: RawValue::from_string("{}".into()).ok(),
            timestamp: at,
            received_at: at,
            ip: Some("192.0.2.0".into()),
            deleted_at: None,
            row_id: 42,
        }
    }

    #[test]
    fn an_event_serialises_every_field_by_its_answer_name_and_its_documents_as_stored() {
        let text = serde_json::to_string(&event()).expect("json");
        assert_eq!(
            text,
            r#"{"id":"00000000-0000-0000-0000-000000000000","messageId":"m-1","type":"track","name":"Signed Up","userId":"u-1","anonymousId":null,"groupId":null,"previousId":null,"properties":{"plan": "pro", "n": [1, 2.50]},"traits":null,"context":{},"timestamp":"2025-12-02T00:00:00.123Z","receivedAt":"2025-12-02T00:00:00.123Z","ip":"192.0.2.0"}"#
        );
        let all = serde_json::to_string(&event().with_fields(Some(&EVENT_FIELDS))).expect("json");
        assert_eq!(all, text);
    }

    #[test]
    fn a_projection_keeps_only_the_fields_asked_for_and_a_deletion_shows_only_whole() {
        let mut deleted = event();
        deleted.deleted_at = Some(deleted.timestamp);
        let some = serde_json::to_string(&deleted.with_fields(Some(&["name", "id"]))).expect("json");
        assert_eq!(some, r#"{"id":"00000000-0000-0000-0000-000000000000","name":"Signed Up"}"#);
        let whole: serde_json::Value = serde_json::to_value(&deleted).expect("json");
        assert_eq!(whole["deletedAt"], "2025-12-02T00:00:00.123Z");
    }
}
