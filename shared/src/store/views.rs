//! The reads of one event and one user profile, as the api returns them and an export
//! writes them.

use super::erasure::{ERASABLE_IDS, not_being_erased};
use super::live::{LIVE_EVENTS, LIVE_USERS};
use super::rollups::and;
use super::{Store, StoreError, column, required, required_time, time_column, with_timeout};
use crate::ids::ProjectId;
use chrono::{DateTime, Utc};
use mysql_async::prelude::Queryable;
use mysql_async::{Row, Value};
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

/// An event as the api returns it and an export writes it.
#[derive(Debug, Serialize)]
pub struct EventView {
    pub id: Uuid,
    #[serde(rename = "messageId")]
    pub message_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: Option<String>,
    #[serde(rename = "userId")]
    pub user_id: Option<String>,
    #[serde(rename = "anonymousId")]
    pub anonymous_id: Option<String>,
    #[serde(rename = "groupId")]
    pub group_id: Option<String>,
    #[serde(rename = "previousId")]
    pub previous_id: Option<String>,
    pub properties: Option<Box<RawValue>>,
    pub traits: Option<Box<RawValue>>,
    pub context: Option<Box<RawValue>>,
    pub timestamp: DateTime<Utc>,
    #[serde(rename = "receivedAt")]
    pub received_at: DateTime<Utc>,
    pub ip: Option<String>,
    /// Only in exports, which include soft-deleted rows (they are still held).
    #[serde(rename = "deletedAt", skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
}

pub(super) const EVENT_VIEW_COLUMNS: &str = "uid, message_id, type, name, user_id, anonymous_id, group_id, previous_id,
     properties, traits, context, timestamp, received_at, ip, deleted_at, id";

fn raw_json(row: &Row, index: usize) -> Option<Box<RawValue>> {
    column::<String>(row, index).and_then(|text| RawValue::from_string(text).ok())
}

pub(super) fn event_view(row: &Row) -> Result<EventView, StoreError> {
    Ok(EventView {
        id: required(row, 0)?,
        message_id: required(row, 1)?,
        kind: required(row, 2)?,
        name: column(row, 3),
        user_id: column(row, 4),
        anonymous_id: column(row, 5),
        group_id: column(row, 6),
        previous_id: column(row, 7),
        properties: raw_json(row, 8),
        traits: raw_json(row, 9),
        context: raw_json(row, 10),
        timestamp: required_time(row, 11)?,
        received_at: required_time(row, 12)?,
        ip: column(row, 13),
        deleted_at: time_column(row, 14),
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
}

pub(super) fn user_view(row: &Row) -> Result<UserView, StoreError> {
    Ok(UserView {
        id: required(row, 0)?,
        user_id: required(row, 1)?,
        traits: raw_json(row, 2),
        first_seen_at: required_time(row, 3)?,
        last_seen_at: required_time(row, 4)?,
        deleted_at: time_column(row, 5),
    })
}

pub(super) const USER_VIEW_COLUMNS: &str = "uid, user_id, traits, first_seen_at, last_seen_at, deleted_at";

impl Store {
    /// One live event; `None` also while an erasure of one of its ids is in progress (as in
    /// every list).
    pub async fn event(&self, project: ProjectId, uid: Uuid) -> Result<Option<EventView>, StoreError> {
        let mut conn = self.conn().await?;
        let mut params = vec![Value::from(project.0), Value::from(uid)];
        let erasing = and(not_being_erased(&mut conn, project, ERASABLE_IDS, &mut params).await?);
        let sql =
            format!("SELECT {EVENT_VIEW_COLUMNS} FROM {LIVE_EVENTS} e WHERE project_id = ? AND uid = ? {erasing}");
        let row: Option<Row> = with_timeout(conn.exec_first(sql, params)).await?;
        row.as_ref().map(event_view).transpose()
    }

    /// One live profile; `None` also while the user's erasure is in progress.
    pub async fn user(&self, project: ProjectId, user_id: &str) -> Result<Option<UserView>, StoreError> {
        let mut conn = self.conn().await?;
        let mut params = vec![Value::from(project.0), Value::from(user_id)];
        let erasing = and(not_being_erased(&mut conn, project, "u.user_id", &mut params).await?);
        let sql =
            format!("SELECT {USER_VIEW_COLUMNS} FROM {LIVE_USERS} u WHERE project_id = ? AND user_id = ? {erasing}");
        let row: Option<Row> = with_timeout(conn.exec_first(sql, params)).await?;
        row.as_ref().map(user_view).transpose()
    }
}
