//! Which ids belong to a user: what an export shows and an erasure deletes besides the user
//! id itself.
//!
//! Links come from identify calls (anonymousId → userId) and alias calls (previousId →
//! userId), and anyone with a browser's write key can send those. So a link is followed
//! only where it cannot be a claim on somebody else's data:
//! - an id that is itself a known user id (it has a profile) is never reached through a
//!   link: it is a subject of its own, exported and erased under its own id;
//! - an id belongs to the first user that linked it; a later link of the same id to another
//!   user is kept but not followed;
//! - links are followed on from the ids reached (anonymous → u1 → u2), up to
//!   `MAX_LINK_HOPS` hops.
//!
//! Of the events holding a linked id, those with a user id of their own belong to that user:
//! an event is the user's when its userId is one of the ids, or it has no userId and its
//! anonymousId is one of them. An erasure also deletes alias events that name one of the ids
//! as their previousId (they hold it); an export does not show them.

use super::{IDS_PER_STATEMENT, StoreError, placeholders, with_timeout};
use crate::ids::ProjectId;
use mysql_async::Value;
use mysql_async::prelude::Queryable;
use std::collections::HashSet;

/// How far links are followed from the user id (anonymous → u1 → u2 is two hops).
pub const MAX_LINK_HOPS: usize = 4;

/// The most ids an export or erasure follows from one user id (links made before the cap, or
/// chains of capped users, could reach further): past it the walk stops, logged.
pub const MAX_LINKED_IDS: usize = 250_000;

/// The links one user id may gather: a person has a few devices and browsers, not
/// thousands. The consumer records no new link for a user past this (the event itself is
/// stored; its anonymous events are then not found through the user).
pub const MAX_LINKS_PER_USER: u64 = 1_000;

/// The links from `users` that may be followed (see the module's rules).
const FOLLOWABLE_LINKS: &str = "SELECT a.alias FROM aliases a
     WHERE a.project_id = ? AND a.user_id IN ({list}) AND a.alias <> a.user_id
       AND NOT EXISTS (SELECT 1 FROM aliases earlier
                       WHERE earlier.project_id = a.project_id AND earlier.alias = a.alias
                         AND earlier.id < a.id AND earlier.user_id <> a.user_id)
       AND NOT EXISTS (SELECT 1 FROM users profile /* with deleted */
                       WHERE profile.project_id = a.project_id AND profile.user_id = a.alias)
     ORDER BY a.id";

/// The ids linked to `user_id` (without it), in the order they were reached.
pub(super) async fn linked_ids(
    conn: &mut impl Queryable,
    project: ProjectId,
    user_id: &str,
) -> Result<Vec<String>, StoreError> {
    let mut seen: HashSet<String> = HashSet::from([user_id.to_string()]);
    let mut linked = Vec::new();
    let mut frontier = vec![user_id.to_string()];
    for _ in 0..MAX_LINK_HOPS {
        let mut reached = Vec::new();
        for ids in frontier.chunks(IDS_PER_STATEMENT) {
            let mut params = vec![Value::from(project.0)];
            params.extend(ids.iter().map(|id| Value::from(id.as_str())));
            let sql = FOLLOWABLE_LINKS.replace("{list}", &placeholders(ids.len()));
            let found: Vec<String> = with_timeout(conn.exec(sql, params)).await?;
            reached.extend(found.into_iter().filter(|id| seen.insert(id.clone())));
        }
        if reached.is_empty() {
            break;
        }
        if linked.len() + reached.len() > MAX_LINKED_IDS {
            reached.truncate(MAX_LINKED_IDS - linked.len());
            linked.extend(reached);
            tracing::warn!(project = project.0, ids = linked.len(), "links followed up to the cap; the rest not");
            break;
        }
        linked.extend(reached.iter().cloned());
        frontier = reached;
    }
    Ok(linked)
}
