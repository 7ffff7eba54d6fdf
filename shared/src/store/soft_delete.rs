//! Soft delete and restore of events, users and keys: `deleted_at` set or cleared. Reads
//! leave such rows out (`live`); cleanup purges them after the grace period (`retention`).

use super::{Store, StoreError, with_timeout};
use crate::ids::ProjectId;
use mysql_async::prelude::Queryable;
use mysql_async::{IsolationLevel, Transaction, TxOpts, Value};
use uuid::Uuid;

impl Store {
    /// As `set_deleted`, and the event's hour is marked for the rollups in the same
    /// transaction.
    pub async fn set_event_deleted(&self, project: ProjectId, uid: Uuid, deleted: bool) -> Result<bool, StoreError> {
        let params = vec![Value::from(project.0), Value::from(uid)];
        let mut conn = self.conn().await?;
        let mut tx = with_timeout(conn.start_transaction(read_committed())).await?;
        super::rollups::mark_dirty_where(&mut tx, "project_id = ? AND uid = ?", params.clone()).await?;
        let changed = set_deleted(&mut tx, SoftTable::Events, "project_id = ? AND uid = ?", params, deleted).await?;
        with_timeout(tx.commit()).await?;
        Ok(changed)
    }

    pub async fn set_user_deleted(&self, project: ProjectId, user_id: &str, deleted: bool) -> Result<bool, StoreError> {
        let params = vec![Value::from(project.0), Value::from(user_id)];
        self.set_one_deleted(SoftTable::Users, "project_id = ? AND user_id = ?", params, deleted).await
    }

    pub async fn set_key_deleted(&self, uid: Uuid, deleted: bool) -> Result<bool, StoreError> {
        self.set_one_deleted(SoftTable::Keys, "uid = ?", vec![Value::from(uid)], deleted).await
    }

    async fn set_one_deleted(
        &self,
        table: SoftTable,
        key: &str,
        params: Vec<Value>,
        deleted: bool,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let mut tx = with_timeout(conn.start_transaction(read_committed())).await?;
        let changed = set_deleted(&mut tx, table, key, params, deleted).await?;
        with_timeout(tx.commit()).await?;
        Ok(changed)
    }
}

/// Soft-deletes (`deleted`) or restores (`!deleted`) one row of `table` matching `key`; true
/// if a row changed. Restoring works until cleanup purges the row.
async fn set_deleted(
    tx: &mut Transaction<'_>,
    table: SoftTable,
    key: &str,
    params: Vec<Value>,
    deleted: bool,
) -> Result<bool, StoreError> {
    let table = table.name();
    let (set, state) =
        if deleted { ("CURRENT_TIMESTAMP(3)", "deleted_at IS NULL") } else { ("NULL", "deleted_at IS NOT NULL") };
    with_timeout(tx.exec_drop(format!("UPDATE {table} SET deleted_at = {set} WHERE {key} AND {state}"), params))
        .await?;
    Ok(tx.affected_rows() > 0)
}

fn read_committed() -> TxOpts {
    TxOpts::default().with_isolation_level(IsolationLevel::ReadCommitted).clone()
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
