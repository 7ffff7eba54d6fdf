//! API key rows. Only keyed hashes are stored; see `crate::keys` for the format.

use super::{Store, StoreError, from_db_time, to_db_time, with_timeout};
use crate::ids::new_public_id;
use crate::keys::{KeyHash, Scope};
use chrono::{DateTime, NaiveDateTime, Utc};
use mysql_async::prelude::Queryable;
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
    pub store_full_ip: bool,
    pub key_hash: [u8; 32],
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The key or its project is soft-deleted.
    pub deleted: bool,
}

type KeyRow = (Uuid, String, Option<Uuid>, bool, Vec<u8>, Option<NaiveDateTime>, Option<NaiveDateTime>, bool);

impl Store {
    pub async fn insert_key(&self, key: NewKey<'_>) -> Result<Uuid, StoreError> {
        let project_id = match (key.scope, key.project_uid) {
            (Scope::Admin, None) => None,
            (Scope::Admin, Some(_)) => return Err(StoreError::Refused("admin keys belong to no project".into())),
            (_, None) => return Err(StoreError::Refused("write and read keys need a project".into())),
            (_, Some(uid)) => Some(
                self.live_project_id(uid).await?.ok_or_else(|| StoreError::Refused(format!("no project {uid}")))?.0,
            ),
        };
        let uid = new_public_id();
        let mut conn = self.conn().await?;
        with_timeout(conn.exec_drop(
            "INSERT INTO api_keys (uid, project_id, scope, name, key_hash, pepper_version, display_prefix, expires_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                uid,
                project_id,
                key.scope.as_str(),
                key.name,
                key.hash.0.to_vec(),
                key.pepper_version,
                key.display_prefix,
                key.expires_at.map(to_db_time),
            ),
        ))
        .await?;
        Ok(uid)
    }

    pub async fn find_key(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<KeyRow> = with_timeout(conn.exec_first(
            "SELECT k.uid, k.scope, p.uid, COALESCE(p.store_full_ip, 0), k.key_hash, k.expires_at, k.revoked_at,
                    (k.deleted_at IS NOT NULL OR p.deleted_at IS NOT NULL)
             FROM api_keys k LEFT JOIN projects p ON p.id = k.project_id
             WHERE k.key_hash = ?",
            (hash.0.to_vec(),),
        ))
        .await?;
        let Some((key_uid, scope, project_uid, store_full_ip, key_hash, expires_at, revoked_at, deleted)) = row else {
            return Ok(None);
        };
        let scope = Scope::parse(&scope).ok_or_else(|| StoreError::Refused(format!("unknown scope {scope}")))?;
        let key_hash: [u8; 32] =
            key_hash.try_into().map_err(|_| StoreError::Refused("stored key hash is not 32 bytes".into()))?;
        Ok(Some(KeyRecord {
            key_uid,
            scope,
            project_uid,
            store_full_ip,
            key_hash,
            expires_at: expires_at.map(from_db_time),
            revoked_at: revoked_at.map(from_db_time),
            deleted,
        }))
    }
}
