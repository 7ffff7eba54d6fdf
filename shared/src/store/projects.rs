//! Projects: the tenant boundary. Reads exclude soft-deleted projects unless they ask for
//! them by name (`deleted_projects`, `restore_project`).

use super::live::LIVE_PROJECTS;
use super::{Store, StoreError, from_db_time, parse_ip_policy, with_timeout};
use crate::ids::{ProjectId, new_public_id};
use crate::model::IpPolicy;
use chrono::{DateTime, NaiveDateTime, Utc};
use mysql_async::prelude::Queryable;
use serde::Serialize;
use uuid::Uuid;

/// What restoring a project came to.
#[derive(Debug)]
pub enum Restored {
    Project(Project),
    /// No such project, or not deleted.
    NotDeleted,
    /// Deleted longer ago than the grace: being purged, or about to be.
    PastGrace,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Project {
    pub id: Uuid,
    pub name: String,
    /// Days events are kept; `None` keeps them.
    pub retention_days: Option<u32>,
    pub ip_policy: IpPolicy,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
}

/// What an update changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProjectChanges {
    pub name: Option<String>,
    /// `Some(None)` keeps events forever.
    pub retention_days: Option<Option<u32>>,
    pub ip_policy: Option<IpPolicy>,
}

type ProjectRow = (Uuid, String, Option<u32>, String, NaiveDateTime, NaiveDateTime, Option<NaiveDateTime>);

fn project(row: ProjectRow) -> Result<Project, StoreError> {
    let (id, name, retention_days, ip_policy, created_at, updated_at, deleted_at) = row;
    Ok(Project {
        id,
        name,
        retention_days,
        ip_policy: parse_ip_policy(&ip_policy)?,
        created_at: from_db_time(created_at),
        updated_at: from_db_time(updated_at),
        deleted_at: deleted_at.map(from_db_time),
    })
}

const PROJECT_COLUMNS: &str = "uid, name, retention_days, ip_policy, created_at, updated_at, deleted_at";
/// Longest retention accepted: ten years.
pub const MAX_RETENTION_DAYS: u32 = 3650;

fn check_name(name: &str) -> Result<&str, StoreError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(StoreError::Invalid("a project name has 1 to 200 characters and no control characters".into()));
    }
    Ok(name)
}

fn check_retention(days: Option<u32>) -> Result<Option<u32>, StoreError> {
    match days {
        Some(days) if !(1..=MAX_RETENTION_DAYS).contains(&days) => {
            Err(StoreError::Invalid(format!("retention_days is 1 to {MAX_RETENTION_DAYS}, or null to keep events")))
        }
        _ => Ok(days),
    }
}

impl Store {
    pub async fn create_project(&self, name: &str) -> Result<Project, StoreError> {
        self.create_project_with(name, ProjectChanges::default()).await
    }

    pub async fn create_project_with(&self, name: &str, settings: ProjectChanges) -> Result<Project, StoreError> {
        let name = check_name(name)?;
        let retention = check_retention(settings.retention_days.flatten())?;
        let uid = new_public_id();
        let mut conn = self.conn().await?;
        with_timeout(conn.exec_drop(
            "INSERT INTO projects (uid, name, retention_days, ip_policy) VALUES (?, ?, ?, ?)",
            (uid, name, retention, settings.ip_policy.unwrap_or_default().as_str()),
        ))
        .await?;
        self.project(uid).await?.ok_or_else(|| StoreError::Unavailable("project vanished after insert".into()))
    }

    pub async fn project(&self, uid: Uuid) -> Result<Option<Project>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<ProjectRow> = with_timeout(
            conn.exec_first(format!("SELECT {PROJECT_COLUMNS} FROM {LIVE_PROJECTS} p WHERE uid = ?"), (uid,)),
        )
        .await?;
        row.map(project).transpose()
    }

    pub async fn list_projects(&self) -> Result<Vec<Project>, StoreError> {
        self.projects_page(false, None, usize::MAX).await
    }

    /// Projects in id order after `after`; soft-deleted ones only (to restore) or live ones.
    pub async fn projects_page(
        &self,
        deleted: bool,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Project>, StoreError> {
        let mut conn = self.conn().await?;
        let rows: Vec<ProjectRow> = with_timeout(conn.exec(
            format!(
                "SELECT {PROJECT_COLUMNS} FROM projects /* with deleted */
                 WHERE (deleted_at IS NOT NULL) = ? AND (? IS NULL OR uid > ?) ORDER BY uid LIMIT ?"
            ),
            (deleted, after, after, limit.min(u64::MAX as usize) as u64),
        ))
        .await?;
        rows.into_iter().map(project).collect()
    }

    /// Applies `changes` to a live project; `None` if there is none.
    pub async fn update_project(&self, uid: Uuid, changes: ProjectChanges) -> Result<Option<Project>, StoreError> {
        let name = changes.name.as_deref().map(check_name).transpose()?;
        let retention = changes.retention_days.map(check_retention).transpose()?;
        let mut conn = self.conn().await?;
        with_timeout(conn.exec_drop(
            "UPDATE projects SET name = COALESCE(?, name),
                    retention_days = IF(?, ?, retention_days),
                    ip_policy = COALESCE(?, ip_policy),
                    updated_at = CURRENT_TIMESTAMP(3)
             WHERE uid = ? AND deleted_at IS NULL",
            (name, retention.is_some(), retention.flatten(), changes.ip_policy.map(IpPolicy::as_str), uid),
        ))
        .await?;
        self.project(uid).await
    }

    /// Soft-deletes a live project: its keys stop working at once (the key check joins the
    /// project), its data stays until cleanup purges it. `None` if there is no live project.
    pub async fn delete_project(&self, uid: Uuid) -> Result<Option<Project>, StoreError> {
        let mut conn = self.conn().await?;
        with_timeout(conn.exec_drop(
            "UPDATE projects SET deleted_at = CURRENT_TIMESTAMP(3) WHERE uid = ? AND deleted_at IS NULL",
            (uid,),
        ))
        .await?;
        if conn.affected_rows() == 0 {
            return Ok(None);
        }
        let row: Option<ProjectRow> = with_timeout(
            conn.exec_first(format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE uid = ? /* with deleted */"), (uid,)),
        )
        .await?;
        row.map(project).transpose()
    }

    /// Undoes a soft delete made within `grace` (the cleanup job's). Past it the job may have
    /// begun purging the project, table by table over several runs, so it is not restored
    /// half gone. The job's cut-off is its slot less the grace, and a slot may run up to
    /// `MAX_SLOT_SKEW` ahead of the database's clock: the window closes that much earlier.
    pub async fn restore_project(&self, uid: Uuid, grace: chrono::Duration) -> Result<Restored, StoreError> {
        let mut conn = self.conn().await?;
        let window = grace - super::MAX_SLOT_SKEW;
        with_timeout(conn.exec_drop(
            "UPDATE projects SET deleted_at = NULL, updated_at = CURRENT_TIMESTAMP(3)
             WHERE uid = ? AND deleted_at >= CURRENT_TIMESTAMP(3) - INTERVAL ? SECOND",
            (uid, window.num_seconds()),
        ))
        .await?;
        if conn.affected_rows() == 1 {
            return Ok(self.project(uid).await?.map_or(Restored::NotDeleted, Restored::Project));
        }
        let deleted: Option<bool> = with_timeout(
            conn.exec_first("SELECT deleted_at IS NOT NULL FROM projects /* with deleted */ WHERE uid = ?", (uid,)),
        )
        .await?;
        Ok(if deleted == Some(true) { Restored::PastGrace } else { Restored::NotDeleted })
    }

    /// The private id of a project, soft-deleted or not: events queued before a project was
    /// deleted are still stored (and go with it if it is purged).
    pub async fn project_id_any_state(&self, uid: Uuid) -> Result<Option<ProjectId>, StoreError> {
        let mut conn = self.conn().await?;
        let id: Option<u64> =
            with_timeout(conn.exec_first("SELECT id FROM projects WHERE uid = ? /* with deleted */", (uid,))).await?;
        Ok(id.map(ProjectId))
    }

    /// The private id of a live project.
    pub async fn project_id(&self, uid: Uuid) -> Result<Option<ProjectId>, StoreError> {
        self.live_project_id(uid).await
    }

    pub(super) async fn live_project_id(&self, uid: Uuid) -> Result<Option<ProjectId>, StoreError> {
        let mut conn = self.conn().await?;
        let id: Option<u64> =
            with_timeout(conn.exec_first(format!("SELECT id FROM {LIVE_PROJECTS} p WHERE uid = ?"), (uid,))).await?;
        Ok(id.map(ProjectId))
    }
}
