//! The audit trail of admin actions (`audit_log`): written by the api for every action a
//! valid admin key attempts, listed by `GET /v1/audit`, pruned by cleanup.

use super::{Store, StoreError, column, required, required_time, with_timeout};
use crate::ids::new_public_id;
use crate::model::IpPolicy;
use chrono::{DateTime, Utc};
use mysql_async::Row;
use mysql_async::prelude::Queryable;
use serde::Serialize;
use std::net::IpAddr;
use uuid::Uuid;

/// One action, as the api records it.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// The acting key's public id.
    pub actor_key: Uuid,
    /// `project.create`, `key.rotate`, `user.erase`, …
    pub action: &'static str,
    /// `key:<id>`, `project:<id>`, `user:<keyed hash>`, …
    pub target: Option<String>,
    /// The project acted on, if any: its IP policy decides what is kept of `client_ip`.
    pub project: Option<Uuid>,
    /// The HTTP status answered.
    pub status: u16,
    pub request_id: String,
    pub client_ip: Option<IpAddr>,
}

/// One action, as `GET /v1/audit` lists it.
#[derive(Debug, Serialize)]
pub struct AuditRecord {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor_key: Uuid,
    pub action: String,
    pub target: Option<String>,
    pub project: Option<Uuid>,
    pub status: u16,
    pub request_id: String,
    pub client_ip: Option<String>,
}

impl Store {
    /// Records an action. The client address is kept as the project's IP policy says
    /// (truncated when the action is on no project, or the project is gone).
    pub async fn record_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let project: Option<(u64, String)> = match entry.project {
            Some(uid) => {
                with_timeout(
                    conn.exec_first("SELECT id, ip_policy FROM projects WHERE uid = ? /* with deleted */", (uid,)),
                )
                .await?
            }
            None => None,
        };
        let policy = project.as_ref().and_then(|(_, policy)| IpPolicy::parse(policy)).unwrap_or(IpPolicy::Truncate);
        let ip = entry.client_ip.and_then(|ip| policy.apply(ip)).map(|ip| ip.to_string());
        with_timeout(conn.exec_drop(
            "INSERT INTO audit_log (uid, actor_key_uid, action, target, project_id, status, request_id, client_ip)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                new_public_id(),
                entry.actor_key,
                entry.action,
                entry.target.as_deref(),
                project.map(|(id, _)| id),
                entry.status,
                entry.request_id.as_str(),
                ip,
            ),
        ))
        .await
    }

    /// The trail, newest first, after the record `before` (a page's last).
    pub async fn audit_page(&self, before: Option<Uuid>, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let rows: Vec<Row> = with_timeout(conn.exec(
            "SELECT a.uid, a.created_at, a.actor_key_uid, a.action, a.target, p.uid, a.status, a.request_id, a.client_ip
             FROM audit_log a LEFT JOIN projects p ON p.id = a.project_id /* with deleted */
             WHERE (? IS NULL OR a.id < (SELECT id FROM audit_log WHERE uid = ?))
             ORDER BY a.id DESC LIMIT ?",
            (before, before, limit as u64),
        ))
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditRecord {
                    id: required(row, 0)?,
                    at: required_time(row, 1)?,
                    actor_key: required(row, 2)?,
                    action: required(row, 3)?,
                    target: column(row, 4),
                    project: column(row, 5),
                    status: required(row, 6)?,
                    request_id: required(row, 7)?,
                    client_ip: column(row, 8),
                })
            })
            .collect()
    }
}
