//! API key rows. Only keyed hashes are stored; see `crate::keys` for the format.

use super::live::{LIVE_KEYS, LIVE_PROJECTS};
use super::{
    JobTx, Store, StoreError, column, from_db_time, parse_ip_policy, required, required_time, time_column, to_db_time,
    with_timeout,
};
use crate::ids::{ProjectId, new_public_id};
use crate::model::{IpPolicy, KeyHash, Scope};
use chrono::{DateTime, NaiveDateTime, Utc};
use mysql_async::prelude::Queryable;
use mysql_async::{Row, TxOpts};
use serde::Serialize;
use uuid::Uuid;

pub struct NewKey<'a> {
    /// Required for write and read keys; admin keys belong to no project.
    pub project_uid: Option<Uuid>,
    pub scope: Scope,
    pub name: &'a str,
    pub hash: KeyHash,
    pub pepper_version: u16,
    pub display_prefix: &'a str,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A stored key with what is needed to decide what it allows.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub key_uid: Uuid,
    pub scope: Scope,
    pub project_uid: Option<Uuid>,
    /// The project's private id.
    pub project_id: Option<ProjectId>,
    pub ip_policy: IpPolicy,
    pub key_hash: [u8; 32],
    pub pepper_version: u16,
    pub expires_at: Option<DateTime<Utc>>,
    pub grace_ends_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A key as the admin API and the command line show it: never the key or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    pub id: Uuid,
    pub project: Option<Uuid>,
    pub scope: Scope,
    pub name: String,
    /// The first characters of the key, to recognise it by.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Set once the key was rotated: it stops working then.
    pub grace_ends_at: Option<DateTime<Utc>>,
    pub replaced_by: Option<Uuid>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// `active`, `rotating` (in its grace period), `expired`, `rotated` or `revoked`.
    pub status: &'static str,
    pub pepper_version: u16,
}

impl KeyInfo {
    fn status_at(&self, now: DateTime<Utc>) -> &'static str {
        let passed = |at: Option<DateTime<Utc>>| at.is_some_and(|at| at <= now);
        if passed(self.revoked_at) {
            "revoked"
        } else if passed(self.expires_at) {
            "expired"
        } else if passed(self.grace_ends_at) {
            "rotated"
        } else if self.grace_ends_at.is_some() {
            "rotating"
        } else {
            "active"
        }
    }
}

/// A key expiring soon, as rotate-keys reports it.
#[derive(Debug, Clone)]
pub struct ExpiringKey {
    pub id: Uuid,
    pub project: Option<Uuid>,
    pub scope: Scope,
    pub prefix: String,
    pub expires_at: DateTime<Utc>,
}

const KEY_INFO_COLUMNS: &str = "k.uid, p.uid, k.scope, k.name, k.display_prefix, k.created_at, k.expires_at,
     k.grace_ends_at, r.uid, k.revoked_at, k.last_used_at, k.pepper_version";

/// Live keys `k` with their project `p`; rows of a deleted project are kept out by
/// `KEY_OF_LIVE_PROJECT` (admin keys have no project).
fn live_keys() -> String {
    format!("{LIVE_KEYS} k LEFT JOIN {LIVE_PROJECTS} p ON p.id = k.project_id")
}
const KEY_OF_LIVE_PROJECT: &str = "(k.project_id IS NULL OR p.id IS NOT NULL)";

fn key_info_from() -> String {
    format!("{} LEFT JOIN {LIVE_KEYS} r ON r.id = k.replaced_by", live_keys())
}

fn key_info(row: Row, now: DateTime<Utc>) -> Result<KeyInfo, StoreError> {
    let scope: String = required(&row, 2)?;
    let mut info = KeyInfo {
        id: required(&row, 0)?,
        project: column(&row, 1),
        scope: parse_scope(&scope)?,
        name: required(&row, 3)?,
        prefix: required(&row, 4)?,
        created_at: required_time(&row, 5)?,
        expires_at: time_column(&row, 6),
        grace_ends_at: time_column(&row, 7),
        replaced_by: column(&row, 8),
        revoked_at: time_column(&row, 9),
        last_used_at: time_column(&row, 10),
        status: "active",
        pepper_version: required(&row, 11)?,
    };
    info.status = info.status_at(now);
    Ok(info)
}

fn parse_scope(name: &str) -> Result<Scope, StoreError> {
    Scope::parse(name).ok_or_else(|| StoreError::Corrupt(format!("unknown scope {name}")))
}

/// Why a key could not be rotated or revoked.
#[derive(Debug, thiserror::Error)]
pub enum KeyChangeError {
    #[error("no such key")]
    NotFound,
    #[error("{0}")]
    Conflict(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    pub async fn insert_key(&self, key: NewKey<'_>) -> Result<Uuid, StoreError> {
        let project_id = self.key_project_id(key.scope, key.project_uid).await?;
        let uid = new_public_id();
        let mut conn = self.conn().await?;
        with_timeout(conn.exec_drop(INSERT_KEY, new_key_params(uid, project_id, &key))).await?;
        Ok(uid)
    }

    async fn key_project_id(&self, scope: Scope, project: Option<Uuid>) -> Result<Option<u64>, StoreError> {
        match (scope, project) {
            (Scope::Admin, None) => Ok(None),
            (Scope::Admin, Some(_)) => Err(StoreError::Invalid("admin keys belong to no project".into())),
            (_, None) => Err(StoreError::Invalid("write and read keys need a project".into())),
            (_, Some(uid)) => Ok(Some(
                self.live_project_id(uid).await?.ok_or_else(|| StoreError::NotFound(format!("no project {uid}")))?.0,
            )),
        }
    }

    pub async fn find_key(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<Row> = with_timeout(conn.exec_first(
            format!(
                "SELECT k.uid, k.scope, p.uid, COALESCE(p.ip_policy, 'truncate'), k.key_hash, k.pepper_version,
                        k.expires_at, k.grace_ends_at, k.revoked_at, p.id
                 FROM {} WHERE k.key_hash = ? AND {KEY_OF_LIVE_PROJECT}",
                live_keys()
            ),
            (hash.0.to_vec(),),
        ))
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let scope: String = required(&row, 1)?;
        let ip_policy: String = required(&row, 3)?;
        let key_hash: Vec<u8> = required(&row, 4)?;
        Ok(Some(KeyRecord {
            key_uid: required(&row, 0)?,
            scope: parse_scope(&scope)?,
            project_uid: column(&row, 2),
            project_id: column::<u64>(&row, 9).map(ProjectId),
            ip_policy: parse_ip_policy(&ip_policy)?,
            key_hash: key_hash.try_into().map_err(|_| StoreError::Corrupt("stored key hash is not 32 bytes".into()))?,
            pepper_version: required(&row, 5)?,
            expires_at: time_column(&row, 6),
            grace_ends_at: time_column(&row, 7),
            revoked_at: time_column(&row, 8),
        }))
    }

    /// A key that is not deleted (and neither is its project).
    pub async fn key_info(&self, uid: Uuid) -> Result<Option<KeyInfo>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<Row> = with_timeout(conn.exec_first(
            format!("SELECT {KEY_INFO_COLUMNS} FROM {} WHERE k.uid = ? AND {KEY_OF_LIVE_PROJECT}", key_info_from()),
            (uid,),
        ))
        .await?;
        row.map(|row| key_info(row, Utc::now())).transpose()
    }

    /// Keys in id order after `after`, of one project or (with `None`) all of them.
    pub async fn list_keys(
        &self,
        project: Option<Uuid>,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<KeyInfo>, StoreError> {
        let mut conn = self.conn().await?;
        let rows: Vec<Row> = with_timeout(conn.exec(
            format!(
                "SELECT {KEY_INFO_COLUMNS} FROM {}
                 WHERE {KEY_OF_LIVE_PROJECT} AND (? IS NULL OR p.uid = ?) AND (? IS NULL OR k.uid > ?)
                 ORDER BY k.uid LIMIT ?",
                key_info_from()
            ),
            (project, project, after, after, limit as u64),
        ))
        .await?;
        let now = Utc::now();
        rows.into_iter().map(|row| key_info(row, now)).collect()
    }

    /// Stores `new` as the successor of `old` (same project, scope and name) and ends `old`
    /// at `grace_ends_at` (or its expiry, if sooner). A key already rotated or no longer
    /// usable cannot be rotated: its successor can.
    pub async fn rotate_key(
        &self,
        old: Uuid,
        new: NewKey<'_>,
        grace_ends_at: DateTime<Utc>,
    ) -> Result<Uuid, KeyChangeError> {
        let mut conn = self.conn().await?;
        let mut tx = with_timeout(conn.start_transaction(TxOpts::default())).await?;
        let current: Option<(u64, Option<u64>, String, bool)> = with_timeout(tx.exec_first(
            "SELECT k.id, k.project_id, k.scope,
                    (k.grace_ends_at IS NULL AND k.revoked_at IS NULL
                     AND (k.expires_at IS NULL OR k.expires_at > NOW(3)))
             FROM api_keys k LEFT JOIN projects p ON p.id = k.project_id WHERE k.uid = ? AND k.deleted_at IS NULL AND p.deleted_at IS NULL FOR UPDATE",
            (old,),
        ))
        .await?;
        let Some((old_id, project_id, scope, usable)) = current else {
            return Err(KeyChangeError::NotFound);
        };
        if !usable {
            return Err(KeyChangeError::Conflict("only an active key can be rotated (rotate its successor)"));
        }
        if scope != new.scope.as_str() {
            return Err(KeyChangeError::Conflict("a rotated key keeps its scope"));
        }
        let uid = new_public_id();
        with_timeout(tx.exec_drop(INSERT_KEY, new_key_params(uid, project_id, &new))).await?;
        let new_id = tx.last_insert_id().ok_or_else(|| StoreError::Unavailable("no id for the new key".into()))?;
        with_timeout(tx.exec_drop(
            "UPDATE api_keys SET grace_ends_at = LEAST(?, COALESCE(expires_at, ?)), replaced_by = ? WHERE id = ?",
            (to_db_time(grace_ends_at), to_db_time(grace_ends_at), new_id, old_id),
        ))
        .await?;
        with_timeout(tx.commit()).await?;
        Ok(uid)
    }

    /// Ends a key now. Revoking a revoked key changes nothing.
    pub async fn revoke_key(&self, uid: Uuid) -> Result<(), KeyChangeError> {
        let mut conn = self.conn().await?;
        with_timeout(conn.exec_drop(
            "UPDATE api_keys k LEFT JOIN projects p ON p.id = k.project_id
             SET k.revoked_at = COALESCE(k.revoked_at, NOW(3))
             WHERE k.uid = ? AND k.deleted_at IS NULL AND p.deleted_at IS NULL",
            (uid,),
        ))
        .await?;
        if conn.affected_rows() == 0 && self.key_info(uid).await?.is_none() {
            return Err(KeyChangeError::NotFound);
        }
        Ok(())
    }

    /// Records that keys were used (at most the given time; never moves backwards).
    pub async fn touch_keys(&self, uses: &[(Uuid, DateTime<Utc>)]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        with_timeout(conn.exec_batch(
            "UPDATE api_keys SET last_used_at = GREATEST(COALESCE(last_used_at, ?), ?) WHERE uid = ?",
            uses.iter().map(|(uid, at)| (to_db_time(*at), to_db_time(*at), *uid)),
        ))
        .await
    }

    /// Keys still usable that expire before `until`.
    pub async fn keys_expiring_before(&self, until: DateTime<Utc>) -> Result<Vec<ExpiringKey>, StoreError> {
        let mut conn = self.conn().await?;
        let rows: Vec<(Uuid, Option<Uuid>, String, String, NaiveDateTime)> = with_timeout(conn.exec(
            format!(
                "SELECT k.uid, p.uid, k.scope, k.display_prefix, k.expires_at FROM {}
                 WHERE {KEY_OF_LIVE_PROJECT} AND k.ended_at IS NULL AND k.revoked_at IS NULL
                   AND k.grace_ends_at IS NULL AND k.expires_at > NOW(3) AND k.expires_at <= ?
                 ORDER BY k.expires_at",
                live_keys()
            ),
            (to_db_time(until),),
        ))
        .await?;
        rows.into_iter()
            .map(|(id, project, scope, prefix, expires_at)| {
                Ok(ExpiringKey {
                    id,
                    project,
                    scope: parse_scope(&scope)?,
                    prefix,
                    expires_at: from_db_time(expires_at),
                })
            })
            .collect()
    }
}

const INSERT_KEY: &str = "INSERT INTO api_keys
    (uid, project_id, scope, name, key_hash, pepper_version, display_prefix, expires_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)";

fn new_key_params(uid: Uuid, project_id: Option<u64>, key: &NewKey<'_>) -> mysql_async::Params {
    (
        uid,
        project_id,
        key.scope.as_str(),
        key.name,
        key.hash.0.to_vec(),
        key.pepper_version,
        key.display_prefix,
        key.expires_at.map(to_db_time),
    )
        .into()
}

/// Why a key ended, as rotate-keys records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEnd {
    /// Its rotation grace period is over.
    Rotated,
    Expired,
    Revoked,
}

impl KeyEnd {
    fn as_str(self) -> &'static str {
        match self {
            KeyEnd::Rotated => "rotated",
            KeyEnd::Expired => "expired",
            KeyEnd::Revoked => "revoked",
        }
    }

    /// The column holding when a key ends this way.
    fn column(self) -> &'static str {
        match self {
            KeyEnd::Rotated => "grace_ends_at",
            KeyEnd::Expired => "expires_at",
            KeyEnd::Revoked => "revoked_at",
        }
    }
}

impl Store {
    /// Marks up to `limit` keys that ended this way as ended. A revoked key is marked as
    /// revoked, whatever else would also have ended it.
    pub async fn mark_ended_keys(tx: &mut JobTx<'_>, end: KeyEnd, limit: u64) -> Result<u64, StoreError> {
        let tx = &mut tx.0;
        let column = end.column();
        // Both names come from the fixed lists above.
        let sql = format!(
            "UPDATE api_keys SET ended_at = {column}, ended_reason = '{reason}'
             WHERE ended_at IS NULL AND {column} <= NOW(3) AND (revoked_at IS NULL OR revoked_at = {column})
             LIMIT ?",
            reason = end.as_str()
        );
        with_timeout(tx.exec_drop(sql, (limit,))).await?;
        Ok(tx.affected_rows())
    }
}
