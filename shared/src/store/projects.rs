//! Projects: the tenant boundary. Reads exclude soft-deleted projects.

use super::{Store, StoreError, from_db_time, with_timeout};
use crate::ids::{ProjectId, new_public_id};
use chrono::{DateTime, NaiveDateTime, Utc};
use mysql_async::prelude::Queryable;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub uid: Uuid,
    pub name: String,
    pub retention_days: Option<u32>,
    pub store_full_ip: bool,
    pub created_at: DateTime<Utc>,
}

type ProjectRow = (Uuid, String, Option<u32>, bool, NaiveDateTime);

fn project(row: ProjectRow) -> Project {
    let (uid, name, retention_days, store_full_ip, created_at) = row;
    Project { uid, name, retention_days, store_full_ip, created_at: from_db_time(created_at) }
}

const PROJECT_COLUMNS: &str = "uid, name, retention_days, store_full_ip, created_at";

impl Store {
    pub async fn create_project(&self, name: &str) -> Result<Project, StoreError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(StoreError::Refused("a project name has 1 to 200 characters".into()));
        }
        let uid = new_public_id();
        let mut conn = self.conn().await?;
        with_timeout(conn.exec_drop("INSERT INTO projects (uid, name) VALUES (?, ?)", (uid, name))).await?;
        self.project(uid).await?.ok_or_else(|| StoreError::Unavailable("project vanished after insert".into()))
    }

    pub async fn project(&self, uid: Uuid) -> Result<Option<Project>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<ProjectRow> = with_timeout(conn.exec_first(
            format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE uid = ? AND deleted_at IS NULL"),
            (uid,),
        ))
        .await?;
        Ok(row.map(project))
    }

    pub async fn list_projects(&self) -> Result<Vec<Project>, StoreError> {
        let mut conn = self.conn().await?;
        let rows: Vec<ProjectRow> = with_timeout(
            conn.query(format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE deleted_at IS NULL ORDER BY id")),
        )
        .await?;
        Ok(rows.into_iter().map(project).collect())
    }

    /// The private id of a project, soft-deleted or not: events queued before a project was
    /// deleted are still stored (and go with it if it is purged).
    pub async fn project_id_any_state(&self, uid: Uuid) -> Result<Option<ProjectId>, StoreError> {
        let mut conn = self.conn().await?;
        let id: Option<u64> = with_timeout(conn.exec_first("SELECT id FROM projects WHERE uid = ?", (uid,))).await?;
        Ok(id.map(ProjectId))
    }

    pub(super) async fn live_project_id(&self, uid: Uuid) -> Result<Option<ProjectId>, StoreError> {
        let mut conn = self.conn().await?;
        let id: Option<u64> =
            with_timeout(conn.exec_first("SELECT id FROM projects WHERE uid = ? AND deleted_at IS NULL", (uid,)))
                .await?;
        Ok(id.map(ProjectId))
    }
}
