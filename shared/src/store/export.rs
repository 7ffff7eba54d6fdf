//! GDPR access: everything held about a user — the profile (deleted or not), the ids linked
//! to it (by the rules of `links`), its groups and every event that is theirs — read for an
//! export.

use super::links::linked_ids;
use super::views::{EVENT_VIEW_COLUMNS, EventView, ROW_ID_COLUMN, USER_VIEW_COLUMNS, UserView, event_view, user_view};
use super::{IDS_PER_STATEMENT, Store, StoreError, column, placeholders, with_timeout};
use crate::ids::{ProjectId, as_compared};
use mysql_async::prelude::Queryable;
use mysql_async::{Row, Value};
use serde::Serialize;
use std::collections::HashMap;

/// What else a user's data holds: the ids linked to them, group links.
#[derive(Debug, Serialize)]
pub struct UserLinks {
    pub aliases: Vec<String>,
    /// The groups they are in: (id, type), in that order.
    pub groups: Vec<(String, String)>,
}

/// A user's ids (their own first, then the linked ones), in slices of at most
/// `IDS_PER_STATEMENT`: an export reads the events of one slice after the other.
#[derive(Debug, Clone)]
pub struct SubjectSlices {
    slices: Vec<Vec<String>>,
    slice_of: HashMap<String, usize>,
}

impl SubjectSlices {
    pub fn new(user_id: &str, linked: &[String]) -> Self {
        let ids: Vec<String> = std::iter::once(user_id.to_string()).chain(linked.iter().cloned()).collect();
        let slices: Vec<Vec<String>> = ids.chunks(IDS_PER_STATEMENT).map(<[String]>::to_vec).collect();
        // Keyed as the database compares ids (`alice ` is `alice`'s), first slice first.
        let mut slice_of = HashMap::new();
        for (index, slice) in slices.iter().enumerate() {
            for id in slice {
                slice_of.entry(as_compared(id).to_string()).or_insert(index);
            }
        }
        Self { slices, slice_of }
    }

    pub fn len(&self) -> usize {
        self.slices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slices.is_empty()
    }

    /// The first slice through which `event` is the user's: an event found through two
    /// slices (a userId in one, a previousId in another) is read once, from that slice.
    fn home(&self, event: &EventView) -> Option<usize> {
        let anonymous = if event.user_id.is_none() { event.anonymous_id.as_deref() } else { None };
        [event.user_id.as_deref(), anonymous]
            .into_iter()
            .flatten()
            .filter_map(|id| self.slice_of.get(as_compared(id)).copied())
            .min()
    }
}

impl Store {
    /// For an export: the user's profile (deleted or not), the ids linked to them and their
    /// groups.
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
        let aliases = linked_ids(&mut conn, project, user_id).await?;
        let mut groups: Vec<(String, String)> = Vec::new();
        for slice in &SubjectSlices::new(user_id, &aliases).slices {
            let mut params: Vec<Value> = vec![Value::from(project.0)];
            params.extend(slice.iter().map(|member| Value::from(member.as_str())));
            let found: Vec<(String, String)> = with_timeout(conn.exec(
                format!(
                    "SELECT DISTINCT group_id, group_type FROM group_members WHERE project_id = ? AND member_id IN ({})",
                    placeholders(slice.len())
                ),
                params,
            ))
            .await?;
            groups.extend(found);
        }
        groups.sort();
        groups.dedup();
        Ok((profile.map(user_view).transpose()?, UserLinks { aliases, groups }))
    }

    /// How many events are the user's (for an export's progress): at least what the export
    /// reads (an event found through two slices is counted in both).
    pub async fn count_events_of_user(&self, project: ProjectId, user_id: &str) -> Result<u64, StoreError> {
        let (_, links) = self.user_for_export(project, user_id).await?;
        let mut conn = self.conn().await?;
        let mut total = 0;
        for slice in &SubjectSlices::new(user_id, &links.aliases).slices {
            let (filter, mut params) = belonging_to(slice);
            params.insert(0, Value::from(project.0));
            let count: Option<u64> = with_timeout(conn.exec_first(
                format!("SELECT COUNT(*) FROM events /* with deleted */ WHERE project_id = ? AND {filter}"),
                params,
            ))
            .await?;
            total += count.unwrap_or(0);
        }
        Ok(total)
    }

    /// The next page of the user's events (deleted or not) found through slice `slice`, in
    /// id order after `after`: an export reads these page by page, slice by slice. Returns the
    /// events and the id to continue after (`None`: the slice is done).
    pub async fn events_of_subjects(
        &self,
        project: ProjectId,
        subjects: &SubjectSlices,
        slice: usize,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<EventView>, Option<u64>), StoreError> {
        let Some(ids) = subjects.slices.get(slice) else { return Ok((Vec::new(), None)) };
        let (filter, subject_params) = belonging_to(ids);
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
        let next =
            if rows.len() == limit { rows.last().and_then(|row| column::<u64>(row, ROW_ID_COLUMN)) } else { None };
        let events: Vec<EventView> = rows.into_iter().map(event_view).collect::<Result<_, _>>()?;
        let events = events.into_iter().filter(|event| subjects.home(event) == Some(slice)).collect();
        Ok((events, next))
    }
}

/// The condition "the event is the user's through one of `ids`" (see `links`), and its
/// parameters.
fn belonging_to(ids: &[String]) -> (String, Vec<Value>) {
    let list = placeholders(ids.len());
    let filter =
        format!("(user_id IN ({list}) OR (user_id IS NULL AND anonymous_id IN ({list})) OR previous_id IN ({list}))");
    let params = (0..3).flat_map(|_| ids.iter().map(|id| Value::from(id.as_str()))).collect();
    (filter, params)
}
