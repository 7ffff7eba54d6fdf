//! Soft delete and restore of events, users and keys: `deleted_at` set or cleared. Reads
//! leave such rows out (`live`); cleanup purges them after the grace period (`retention`).

use super::{Store, StoreError, with_timeout};
use crate::ids::ProjectId;
use mysql_async::Value;
use mysql_async::prelude::Queryable;
use uuid::Uuid;

impl Store {
    /// Soft-deletes (`deleted`) or restores (`!deleted`) one row of `table` matching `key`;
    /// true if a row changed. Restoring works until cleanup purges the row.
    async fn set_deleted(
        &self,
        table: SoftTable,
        key: &str,
        params: Vec<Value>,
        deleted: bool,
    ) -> Result<bool, StoreError> {
        let table = table.name();
        let (set, state) =
            if deleted { ("CURRENT_TIMESTAMP(3)", "deleted_at IS NULL") } else { ("NULL", "deleted_at IS NOT NULL") };
        let mut conn = self.conn().await?;
        with_timeout(conn.exec_drop(format!("UPDATE {table} SET deleted_at = {set} WHERE {key} AND {state}"), params))
            .await?;
        Ok(conn.affected_rows() > 0)
    }

    pub async fn set_event_deleted(&self, project: ProjectId, uid: Uuid, deleted: bool) -> Result<bool, StoreError> {
        let params = vec![Value::from(project.0), Value::from(uid)];
        self.set_deleted(SoftTable::Events, "project_id = ? AND uid = ?", params, deleted).await
    }

    pub async fn set_user_deleted(&self, project: ProjectId, user_id: &str, deleted: bool) -> Result<bool, StoreError> {
        let params = vec![Value::from(project.0), Value::from(user_id)];
        self.set_deleted(SoftTable::Users, "project_id = ? AND user_id = ?", params, deleted).await
    }

    pub async fn set_key_deleted(&self, uid: Uuid, deleted: bool) -> Result<bool, StoreError> {
        self.set_deleted(SoftTable::Keys, "uid = ?", vec![Value::from(uid)], deleted).await
    }
}

/// Tables with soft delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftTable {
    Events,
    Users,
    Keys,
}

impl SoftTable {
    pub(super) fn name(self) -> &'static str {
        match self {
            SoftTable::Events => "events",
            SoftTable::Users => "users",
            SoftTable::Keys => "api_keys",
        }
    }
}
