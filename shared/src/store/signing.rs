//! Signing keyring rows; secrets arrive sealed (`crate::keys::keyring`).

use super::{JobTx, Store, StoreError, from_db_time, to_db_time, with_timeout};
use chrono::{DateTime, NaiveDateTime, Utc};
use mysql_async::prelude::Queryable;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct SealedSigningKey {
    pub id: Uuid,
    pub sealed: Vec<u8>,
    pub master_version: u16,
    pub created_at: DateTime<Utc>,
    pub signs_until: DateTime<Utc>,
    pub verifies_until: DateTime<Utc>,
}

type SigningRow = (Uuid, Vec<u8>, u16, NaiveDateTime, NaiveDateTime, NaiveDateTime);

impl Store {
    /// Keys that still verify (not retired, overlap not over), newest first.
    pub async fn live_signing_keys(&self) -> Result<Vec<SealedSigningKey>, StoreError> {
        let mut conn = self.conn().await?;
        let rows: Vec<SigningRow> = with_timeout(conn.query(
            "SELECT uid, secret_sealed, master_version, created_at, signs_until, verifies_until
             FROM signing_keys WHERE retired_at IS NULL AND verifies_until > NOW(3) ORDER BY created_at DESC",
        ))
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, sealed, master_version, created_at, signs_until, verifies_until)| SealedSigningKey {
                id,
                sealed,
                master_version,
                created_at: from_db_time(created_at),
                signs_until: from_db_time(signs_until),
                verifies_until: from_db_time(verifies_until),
            })
            .collect())
    }

    pub async fn insert_signing_key(&self, key: &SealedSigningKey) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        insert_signing_key(&mut conn, key).await
    }

    /// Adds `key` unless a key that may sign still has more than `lead` to go: the next key
    /// starts signing before the current one stops. Returns the rows added (0 or 1).
    pub async fn add_signing_key_if_due(
        conn: &mut JobTx<'_>,
        key: &SealedSigningKey,
        lead: chrono::Duration,
    ) -> Result<u64, StoreError> {
        let conn = &mut conn.0;
        let signing: Option<u64> = with_timeout(conn.exec_first(
            "SELECT COUNT(*) FROM signing_keys WHERE retired_at IS NULL AND signs_until > ?",
            (to_db_time(key.created_at + lead),),
        ))
        .await?;
        if signing.unwrap_or(0) > 0 {
            return Ok(0);
        }
        insert_signing_key(conn, key).await?;
        Ok(1)
    }

    /// Marks keys whose overlap is over as retired: they no longer verify.
    pub async fn retire_signing_keys(conn: &mut JobTx<'_>) -> Result<u64, StoreError> {
        let conn = &mut conn.0;
        with_timeout(conn.query_drop(
            "UPDATE signing_keys SET retired_at = NOW(3) WHERE retired_at IS NULL AND verifies_until <= NOW(3)",
        ))
        .await?;
        Ok(conn.affected_rows())
    }

    /// Deletes up to `limit` keys retired before `before`.
    pub async fn purge_signing_keys(
        conn: &mut JobTx<'_>,
        before: DateTime<Utc>,
        limit: u64,
    ) -> Result<u64, StoreError> {
        let conn = &mut conn.0;
        with_timeout(
            conn.exec_drop("DELETE FROM signing_keys WHERE retired_at <= ? LIMIT ?", (to_db_time(before), limit)),
        )
        .await?;
        Ok(conn.affected_rows())
    }
}

async fn insert_signing_key(conn: &mut impl Queryable, key: &SealedSigningKey) -> Result<(), StoreError> {
    with_timeout(conn.exec_drop(
        "INSERT INTO signing_keys (uid, secret_sealed, master_version, created_at, signs_until, verifies_until)
         VALUES (?, ?, ?, ?, ?, ?)",
        (
            key.id,
            &key.sealed,
            key.master_version,
            to_db_time(key.created_at),
            to_db_time(key.signs_until),
            to_db_time(key.verifies_until),
        ),
    ))
    .await
}
