//! GDPR access: everything held about a user — the profile (deleted or not), the ids linked
//! to it, its groups and every event carrying any of the ids — read for an export.

use super::views::{EVENT_VIEW_COLUMNS, EventView, USER_VIEW_COLUMNS, UserView, event_view, user_view};
use super::{Store, StoreError, column, with_timeout};
use crate::ids::ProjectId;
use mysql_async::prelude::Queryable;
use mysql_async::{Row, Value};
use serde::Serialize;

/// What else a user's data holds: ids linked by alias and identify calls, group links.
#[derive(Debug, Serialize)]
pub struct UserLinks {
    pub aliases: Vec<String>,
    pub groups: Vec<String>,
}

impl Store {
    /// For an export: the user's profile (deleted or not), the ids linked to them and their
    /// groups. `None` when nothing is held under `user_id`.
    pub async fn user_for_export(
        &self,
        project: ProjectId,
        user_id: &str,
    ) -> Result<(Option<UserView>, UserLinks), StoreError> {
        let mut conn = self.conn().await?;
        // GDPR access covers everything held, soft-deleted rows included.
        let profile: Option<Row> = with_timeout(conn.exec_first(
            format!("SELECT {USER_VIEW_COLUMNS} FROM users WHERE project_id = ? AND user_id = ? /* with deleted */"),
            (project.0, user_id),
        ))
        .await?;
        let aliases: Vec<String> =
            with_timeout(conn.exec(
                "SELECT alias FROM aliases WHERE project_id = ? AND user_id = ? ORDER BY id",
                (project.0, user_id),
            ))
            .await?;
        let mut members: Vec<&str> = vec![user_id];
        members.extend(aliases.iter().map(String::as_str));
        let list = vec!["?"; members.len()].join(",");
        let mut params: Vec<Value> = vec![Value::from(project.0)];
        params.extend(members.iter().map(|member| Value::from(*member)));
        let groups: Vec<String> = with_timeout(conn.exec(
            format!("SELECT DISTINCT group_id FROM group_members WHERE project_id = ? AND member_id IN ({list})"),
            params,
        ))
        .await?;
        Ok((profile.as_ref().map(user_view).transpose()?, UserLinks { aliases, groups }))
    }

    /// How many events carry `user_id` or an id linked to it (for an export's progress).
    pub async fn count_events_of_user(&self, project: ProjectId, user_id: &str) -> Result<u64, StoreError> {
        let (_, links) = self.user_for_export(project, user_id).await?;
        let subjects: Vec<String> = std::iter::once(user_id.to_string()).chain(links.aliases).collect();
        let (filter, mut params) = carrying_subjects(&subjects);
        params.insert(0, Value::from(project.0));
        let mut conn = self.conn().await?;
        let count: Option<u64> = with_timeout(conn.exec_first(
            format!("SELECT COUNT(*) FROM events /* with deleted */ WHERE project_id = ? AND {filter}"),
            params,
        ))
        .await?;
        Ok(count.unwrap_or(0))
    }

    /// The next page of events carrying any of `subjects` (deleted or not), in id order
    /// after `after`: an export streams these page by page.
    pub async fn events_of_subjects(
        &self,
        project: ProjectId,
        subjects: &[String],
        after: u64,
        limit: usize,
    ) -> Result<(Vec<EventView>, Option<u64>), StoreError> {
        let (filter, subject_params) = carrying_subjects(subjects);
        let mut params: Vec<Value> = vec![Value::from(project.0), Value::from(after)];
        params.extend(subject_params);
        params.push(Value::from(limit as u64));
        let mut conn = self.conn().await?;
        let rows: Vec<Row> = with_timeout(conn.exec(
            format!(
                "SELECT {EVENT_VIEW_COLUMNS} FROM events /* with deleted */
                 WHERE project_id = ? AND id > ? AND {filter} ORDER BY id LIMIT ?"
            ),
            params,
        ))
        .await?;
        let last = rows.last().and_then(|row| column::<u64>(row, 15));
        Ok((rows.iter().map(event_view).collect::<Result<_, _>>()?, last))
    }
}

/// The condition "the event carries one of `subjects`" (as user, anonymous or previous id),
/// and its parameters.
fn carrying_subjects(subjects: &[String]) -> (String, Vec<Value>) {
    let list = vec!["?"; subjects.len().max(1)].join(",");
    let filter = format!("(user_id IN ({list}) OR anonymous_id IN ({list}) OR previous_id IN ({list}))");
    let params = (0..3).flat_map(|_| subjects.iter().map(|subject| Value::from(subject.as_str()))).collect();
    (filter, params)
}
