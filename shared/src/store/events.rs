//! The consumer's writes: events and what identify, alias and group calls build, in one
//! short transaction per batch. Every statement is idempotent, so a redelivered batch
//! changes nothing: events dedupe on (project, messageId), profiles merge by event time.

use super::erasure::json_strings;
use super::known_members::{KnownMembers, Membership};
use super::links::MAX_LINKS_PER_USER;
use super::rollups::{hour_of, mark_hours_of_anonymous_ids};
use super::{
    IDS_PER_STATEMENT, LIVE_SETTLE_MS, Store, StoreError, multi_row_insert, placeholders, project_and, to_db_time,
};
use crate::event::{Event, EventType, GroupRef, JsonText};
use crate::ids::{ProjectId, as_compared, new_public_id};
use crate::model::SubjectHashes;
use crate::telemetry::{MetricLine, Unit};
use chrono::{DateTime, Utc};
use mysql_async::prelude::Queryable;
use mysql_async::{IsolationLevel, Params, Transaction, TxOpts, Value};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Rows per INSERT: large enough to be fast, small enough for any statement limit
/// (500 × 20 placeholders, far below 65,535).
const ROWS_PER_STATEMENT: usize = 500;
/// Deadlocks between concurrent consumers are retried this many times in place.
const ATTEMPTS: usize = 3;
/// PlanetScale caps a transaction at 20 s; stay well inside it.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(15);

/// An event to store, with what the envelope says about its receipt.
pub struct EventRow<'a> {
    pub project: ProjectId,
    pub event: &'a Event<'a>,
    pub received_at: DateTime<Utc>,
    pub ip: Option<&'a str>,
    pub write_key_uid: Option<Uuid>,
}

/// Something that can never be stored, kept with the reason.
pub struct Rejection {
    pub project: Option<ProjectId>,
    pub queue_message_id: String,
    /// The event's position in its queue message (for a quarantined event: in its request),
    /// or -1 for the whole message.
    pub item_index: i32,
    /// What went wrong, as rejected events are filtered and counted by (`invalid_value`, …).
    pub code: String,
    pub reason: String,
    pub raw: Vec<u8>,
    /// The request's wire format (`Shape::source`), when known: how a replay sends it.
    pub source: Option<String>,
    /// When ingest received the request, when known.
    pub received_at: Option<DateTime<Utc>>,
    /// The request's batch-level fields (JSON), when it had any.
    pub batch_fields: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchWrite {
    /// Events stored now; the rest of the rows were already there (or dropped below).
    pub events_inserted: u64,
    pub rejections_recorded: u64,
    /// Events of an erased user (suppressed), not stored.
    pub events_suppressed: u64,
    /// Events of a project purged since they were queued, not stored.
    pub events_of_purged_projects: u64,
    /// Links (identify's anonymousId, alias's previousId) not recorded because their user
    /// already has `MAX_LINKS_PER_USER`; the events themselves are stored.
    pub links_over_cap: u64,
    /// Links to an erased user noted for cleanup (`late_links`), among the suppressed events.
    pub late_links: u64,
    /// Attempts rolled back by a lock conflict (a deadlock, a lock wait timeout) before the
    /// one that committed.
    pub lock_conflicts: u64,
}

impl Store {
    /// Stores a batch atomically: all of it, or (on error) none of it. Events of an erased
    /// user (their ids hashed by `erased_ids`) and of purged projects are left out.
    pub async fn write_batch(
        &self,
        rows: &[EventRow<'_>],
        rejections: &[Rejection],
        erased_ids: &impl SubjectHashes,
    ) -> Result<BatchWrite, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result =
                match tokio::time::timeout(TRANSACTION_TIMEOUT, self.write_once(rows, rejections, erased_ids)).await {
                    Ok(result) => result,
                    Err(_) => Err(StoreError::Unavailable("batch transaction timed out".into())),
                };
            match result {
                Ok(outcome) => return Ok(BatchWrite { lock_conflicts: attempt as u64 - 1, ..outcome }),
                Err(StoreError::Unavailable(reason)) if attempt < ATTEMPTS && is_lock_conflict(&reason) => {
                    // Counted here, so that batches that give up or are then written message
                    // by message count too.
                    MetricLine::new("consumer").metric("LockConflicts", 1.0, Unit::Count, &[]).emit();
                    tokio::time::sleep(Duration::from_millis(20 * attempt as u64)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn write_once(
        &self,
        rows: &[EventRow<'_>],
        rejections: &[Rejection],
        erased_ids: &impl SubjectHashes,
    ) -> Result<BatchWrite, StoreError> {
        let mut conn = self.conn().await?;
        let options = TxOpts::default().with_isolation_level(IsolationLevel::ReadCommitted).to_owned();
        let mut tx = conn.start_transaction(options).await?;
        let mut outcome = BatchWrite::default();
        let (rows, late_links) = storable(&mut tx, rows, erased_ids, &mut outcome).await?;
        let rows = &rows;
        if !late_links.is_empty() {
            outcome.late_links = super::late_links::note(&mut tx, &late_links, erased_ids).await?;
        }
        upsert_users(&mut tx, rows).await?;
        outcome.links_over_cap = insert_aliases(&mut tx, rows, self.marks_rollups).await?;
        let rejections = rejections_to_keep(&mut tx, rejections, erased_ids, &mut outcome).await?;
        for chunk in rejections.chunks(ROWS_PER_STATEMENT) {
            outcome.rejections_recorded += insert_rejections(&mut tx, chunk).await?;
        }
        if self.marks_rollups {
            let mut hours: Vec<(u64, u32)> =
                rows.iter().map(|row| (row.project.0, hour_of(row.event.timestamp))).collect();
            super::rollups::mark_dirty(&mut tx, &mut hours).await?;
        }
        // The events after every lock the batch may wait for long (a user's profile, an hour's
        // mark the rollups job holds): their `created_at` is when their INSERT starts, and the
        // live tail passes over what is not committed `LIVE_SETTLE_MS` after it.
        let stamped = Instant::now();
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            outcome.events_inserted += insert_events(&mut tx, chunk).await?;
        }
        // Groups after them: PostHog names a user's groups on every event, so batches of a
        // young project add the same memberships and groups at once, and each waits for the
        // other's locks until it commits. Taken last, they are held for the commit only, and a
        // wait for them lasts as long as another batch's group writes and commit (or, rarely,
        // cleanup deleting the same group: a wait past the settle time counts below).
        let members_read_stored = upsert_groups(&mut tx, rows, &self.known_members).await?;
        tx.commit().await?;
        self.known_members.remember(members_read_stored);
        let committed_after = stamped.elapsed();
        if committed_after > Duration::from_millis(LIVE_SETTLE_MS as u64) {
            tracing::warn!(after = ?committed_after, "events committed after the live tail's settle time; a tail may pass them over");
            MetricLine::new("consumer")
                .metric("LiveTailMissed", outcome.events_inserted as f64, Unit::Count, &[])
                .emit();
        }
        Ok(outcome)
    }
}

/// The rows to store: those whose project still exists and that carry no erased id. The
/// projects' rows are share-locked until commit, and an erasure request takes them
/// exclusively (`request_erasure`): so either this batch commits before the request, and
/// cleanup deletes what it stored, or it sees the request's suppression list here. Also the
/// links among the events left out that name an erased user and an id not erased.
async fn storable<'r, 'e>(
    tx: &mut Transaction<'_>,
    rows: &'r [EventRow<'e>],
    erased_ids: &impl SubjectHashes,
    outcome: &mut BatchWrite,
) -> Result<(Vec<&'r EventRow<'e>>, Vec<LateLink<'e>>), StoreError> {
    let mut projects: Vec<u64> = rows.iter().map(|row| row.project.0).collect();
    projects.sort_unstable();
    projects.dedup();
    if projects.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let params: Vec<Value> = projects.iter().map(|id| Value::from(*id)).collect();
    // Live projects, share-locked, and whether each has anything suppressed at all (most
    // have nothing: then no id of the batch is hashed).
    let live: Vec<(u64, bool)> = tx
        .exec(
            format!(
                "SELECT p.id, EXISTS (SELECT 1 FROM suppressed_subjects s WHERE s.project_id = p.id)
                 FROM projects p WHERE p.id IN ({}) LOCK IN SHARE MODE",
                placeholders(projects.len())
            ),
            params,
        )
        .await?;
    let suppressed = suppressed_in_batch(tx, rows, &live, erased_ids).await?;
    let mut kept = Vec::with_capacity(rows.len());
    let mut late_links = Vec::new();
    for row in rows {
        if !live.iter().any(|(id, _)| *id == row.project.0) {
            outcome.events_of_purged_projects += 1;
            continue;
        }
        let erased = !suppressed.is_empty()
            && row.event.subject_ids().any(|subject| suppressed.contains(&(row.project.0, subject)));
        if erased {
            outcome.events_suppressed += 1;
            late_links.extend(LateLink::of(row, &suppressed));
            continue;
        }
        kept.push(row);
    }
    Ok((kept, late_links))
}

/// A link that arrived after its user's erasure: an identify naming an erased user id and an
/// anonymous id that is not erased (`late_links`). Not an alias: its previousId may be
/// someone's user id, where an anonymous id is a device's.
pub(super) struct LateLink<'e> {
    pub project: u64,
    pub user_id: &'e str,
    pub linked_id: &'e str,
}

impl<'e> LateLink<'e> {
    fn of(row: &EventRow<'e>, suppressed: &HashSet<(u64, &str)>) -> Option<Self> {
        let event: &'e Event<'e> = row.event;
        let user_id = event.user_id.as_deref()?;
        if event.kind != EventType::Identify {
            return None;
        }
        let linked_id = event.anonymous_id.as_deref()?;
        let project = row.project.0;
        let late = as_compared(linked_id) != as_compared(user_id)
            && suppressed.contains(&(project, user_id))
            && !suppressed.contains(&(project, linked_id));
        late.then_some(LateLink { project, user_id, linked_id })
    }
}

/// Of the ids the batch carries, those on their projects' suppression lists (which hold keyed
/// hashes): only the batch's own ids are hashed and looked up, each once (a project may have
/// suppressed millions).
async fn suppressed_in_batch<'e>(
    tx: &mut Transaction<'_>,
    rows: &[EventRow<'e>],
    live: &[(u64, bool)],
    erased_ids: &impl SubjectHashes,
) -> Result<HashSet<(u64, &'e str)>, StoreError> {
    let mut found = HashSet::new();
    for (project, _) in live.iter().filter(|(_, any_suppressed)| *any_suppressed) {
        let subjects: HashSet<&'e str> =
            rows.iter().filter(|row| row.project.0 == *project).flat_map(|row| row.event.subject_ids()).collect();
        // Ids that differ only by trailing spaces share their first hashes: a hash names all.
        let mut by_hash: HashMap<[u8; 32], Vec<&'e str>> = HashMap::new();
        for subject in subjects {
            for hash in erased_ids.hashes(ProjectId(*project), subject) {
                by_hash.entry(hash).or_default().push(subject);
            }
        }
        let hits = suppressed_of(tx, *project, by_hash.keys()).await?;
        let named = hits.iter().filter_map(|hash| by_hash.get(hash)).flatten();
        found.extend(named.map(|subject| (*project, *subject)));
    }
    Ok(found)
}

/// Of `hashes`, those on `project`'s suppression list.
async fn suppressed_of(
    tx: &mut Transaction<'_>,
    project: u64,
    hashes: impl Iterator<Item = &[u8; 32]>,
) -> Result<Vec<[u8; 32]>, StoreError> {
    let hashes: Vec<&[u8; 32]> = hashes.collect();
    let mut hits = Vec::new();
    for slice in hashes.chunks(IDS_PER_STATEMENT) {
        let mut params = vec![Value::from(project)];
        params.extend(slice.iter().map(|hash| Value::from(hash.to_vec())));
        let sql = format!(
            "SELECT subject_hash FROM suppressed_subjects WHERE project_id = ? AND subject_hash IN ({})",
            placeholders(slice.len())
        );
        let found: Vec<Vec<u8>> = tx.exec(sql, params).await?;
        hits.extend(found.iter().filter_map(|hash| <[u8; 32]>::try_from(hash.as_slice()).ok()));
    }
    Ok(hits)
}

/// The rejections to record: not those naming an erased id of their project (any string of
/// the event or its batch fields, as cleanup's scan of the quarantine matches them), which
/// would otherwise stay for the quarantine's 30 days once cleanup has scanned it; they count
/// as suppressed. A message refused whole has no project of its own: the project its body
/// names, if any, is taken (it may be forged, but the ids it holds are personal data all the
/// same). The projects are share-locked as `storable` locks the events'.
async fn rejections_to_keep<'r>(
    tx: &mut Transaction<'_>,
    rejections: &'r [Rejection],
    erased_ids: &impl SubjectHashes,
    outcome: &mut BatchWrite,
) -> Result<Vec<&'r Rejection>, StoreError> {
    let owners = rejection_projects(tx, rejections).await?;
    let mut projects: Vec<u64> = owners.iter().flatten().copied().collect();
    projects.sort_unstable();
    projects.dedup();
    let mut erased: HashSet<usize> = HashSet::new();
    if !projects.is_empty() {
        let params: Vec<Value> = projects.iter().map(|id| Value::from(*id)).collect();
        let suppressing: Vec<u64> = tx
            .exec(
                format!(
                    "SELECT p.id FROM projects p /* with deleted */ WHERE p.id IN ({})
                       AND EXISTS (SELECT 1 FROM suppressed_subjects s WHERE s.project_id = p.id) LOCK IN SHARE MODE",
                    placeholders(projects.len())
                ),
                params,
            )
            .await?;
        for project in suppressing {
            let mut by_hash: HashMap<[u8; 32], Vec<usize>> = HashMap::new();
            for (index, rejection) in rejections.iter().enumerate() {
                if owners[index] != Some(project) {
                    continue;
                }
                let batch = rejection.batch_fields.as_deref().map(str::as_bytes).unwrap_or_default();
                for text in json_strings(&rejection.raw).chain(json_strings(batch)) {
                    for hash in erased_ids.hashes(ProjectId(project), &text) {
                        by_hash.entry(hash).or_default().push(index);
                    }
                }
            }
            for hash in suppressed_of(tx, project, by_hash.keys()).await? {
                erased.extend(by_hash.get(&hash).into_iter().flatten());
            }
        }
    }
    outcome.events_suppressed += erased.len() as u64;
    Ok(rejections.iter().enumerate().filter(|(index, _)| !erased.contains(index)).map(|(_, r)| r).collect())
}

/// Each rejection's project: its own, else the one its body names (`"project"`), if it exists.
async fn rejection_projects(
    tx: &mut Transaction<'_>,
    rejections: &[Rejection],
) -> Result<Vec<Option<u64>>, StoreError> {
    let named = |rejection: &Rejection| -> Option<Uuid> {
        #[derive(serde::Deserialize)]
        struct Named {
            project: Uuid,
        }
        serde_json::from_slice::<Named>(&rejection.raw).ok().map(|named| named.project)
    };
    let claimed: Vec<Option<Uuid>> =
        rejections.iter().map(|rejection| if rejection.project.is_some() { None } else { named(rejection) }).collect();
    let mut uids: Vec<Uuid> = claimed.iter().flatten().copied().collect();
    uids.sort_unstable();
    uids.dedup();
    let mut known: HashMap<Uuid, u64> = HashMap::new();
    if !uids.is_empty() {
        let params: Vec<Value> = uids.iter().map(|uid| Value::from(uid.as_bytes().to_vec())).collect();
        let sql =
            format!("SELECT uid, id FROM projects /* with deleted */ WHERE uid IN ({})", placeholders(uids.len()));
        let rows: Vec<(Vec<u8>, u64)> = tx.exec(sql, params).await?;
        known.extend(rows.into_iter().filter_map(|(uid, id)| Some((Uuid::from_slice(&uid).ok()?, id))));
    }
    Ok(rejections
        .iter()
        .zip(claimed)
        .map(|(rejection, claimed)| rejection.project.map(|p| p.0).or_else(|| known.get(&claimed?).copied()))
        .collect())
}

fn is_lock_conflict(reason: &str) -> bool {
    reason.contains("1213") || reason.contains("1205") || reason.to_lowercase().contains("deadlock")
}

async fn execute(tx: &mut Transaction<'_>, sql: String, values: Vec<Value>) -> Result<u64, StoreError> {
    if values.is_empty() {
        return Ok(0);
    }
    tx.exec_drop(sql, Params::Positional(values)).await?;
    Ok(tx.affected_rows())
}

/// A JSON column's value: the text as it came from the queue.
fn json(object: &Option<JsonText<'_>>) -> Value {
    object.as_deref().map_or(Value::NULL, |raw| Value::from(raw.get()))
}

fn time(at: DateTime<Utc>) -> Value {
    Value::from(to_db_time(at))
}

const EVENT_COLUMNS: &[&str] = &[
    "uid",
    "project_id",
    "message_id",
    "dedupe_hour",
    "type",
    "name",
    "user_id",
    "anonymous_id",
    "group_id",
    "previous_id",
    "properties",
    "traits",
    "context",
    "integrations",
    "timestamp",
    "original_timestamp",
    "sent_at",
    "received_at",
    "timestamp_clamped",
    "ip",
    "write_key_uid",
];

async fn insert_events(tx: &mut Transaction<'_>, rows: &[&EventRow<'_>]) -> Result<u64, StoreError> {
    let mut values = Vec::with_capacity(rows.len() * EVENT_COLUMNS.len());
    for row in rows {
        let event = row.event;
        values.extend([
            Value::from(new_public_id()),
            Value::from(row.project.0),
            Value::from(&*event.message_id),
            Value::from(event.dedupe_hour()),
            Value::from(event.kind.as_str()),
            Value::from(event.name.as_deref()),
            Value::from(event.user_id.as_deref()),
            Value::from(event.anonymous_id.as_deref()),
            Value::from(event.group_id.as_deref()),
            Value::from(event.previous_id.as_deref()),
            json(&event.properties),
            json(&event.traits),
            json(&event.context),
            json(&event.integrations),
            time(event.timestamp),
            event.original_timestamp.map_or(Value::NULL, time),
            event.sent_at.map_or(Value::NULL, time),
            time(row.received_at),
            Value::from(event.timestamp_clamped),
            Value::from(row.ip),
            row.write_key_uid.map_or(Value::NULL, Value::from),
        ]);
    }
    // A duplicate (project, hour of the event's own time, messageId) is a no-op, and counts
    // 0 affected rows (migration 0008 says why the hour).
    let sql = multi_row_insert("events", EVENT_COLUMNS, rows.len(), "ON DUPLICATE KEY UPDATE message_id = message_id");
    execute(tx, sql, values).await
}

/// How large a profile's traits may grow (bytes of their JSON text): a call that would take
/// them past it leaves them (and their time) as they are, and `traits_capped_at` says when
/// that last happened. Without a cap a writer sending new keys each time grows a profile
/// without end.
pub const PROFILE_TRAITS_MAX_BYTES: usize = 256 * 1024;

/// Traits (`column`, SQL) that are none, or `{}` (as sent, perhaps with spaces): a long
/// document is not parsed to find it is no `{}`.
pub(super) fn no_traits(column: &str) -> String {
    format!("({column} IS NULL OR (LENGTH({column}) < 16 AND JSON_LENGTH({column}) = 0))")
}

/// Traits merge per key; of two identifies the later event wins, whichever arrives first,
/// and applying the same identify twice changes nothing. Within `PROFILE_TRAITS_MAX_BYTES`.
/// `traits_at` is the time of the newest call with traits merged, or, while no call had any,
/// of the earliest call: a call without traits (none, or `{}`) merges nothing and leaves it,
/// so that an older call with traits arriving after it still wins over the keys before it.
/// The assignments run in order, each seeing those before it: `traits_at` is updated before
/// `traits`, which compares the call's time with it to the same effect as with the old one.
fn merge_traits() -> String {
    let merged = "IF(VALUES(traits_at) >= traits_at,
            JSON_MERGE_PATCH(COALESCE(traits, '{}'), COALESCE(VALUES(traits), '{}')),
            JSON_MERGE_PATCH(COALESCE(VALUES(traits), '{}'), COALESCE(traits, '{}')))";
    let (no_traits, none_yet) = (no_traits("VALUES(traits)"), no_traits("traits"));
    // Cheap tests first, then the sum: the merge is sized only when it could pass the cap.
    let cap = PROFILE_TRAITS_MAX_BYTES;
    let over_cap = format!(
        "(traits IS NOT NULL AND VALUES(traits) IS NOT NULL
          AND LENGTH(traits) + LENGTH(VALUES(traits)) > {cap} AND LENGTH({merged}) > {cap})"
    );
    format!(
        "traits_capped_at = IF({over_cap}, NOW(3), traits_capped_at),
         traits_at = CASE WHEN {no_traits} THEN IF({none_yet}, LEAST(traits_at, VALUES(traits_at)), traits_at)
                          WHEN {over_cap} THEN traits_at
                          WHEN {none_yet} THEN VALUES(traits_at)
                          ELSE GREATEST(traits_at, VALUES(traits_at)) END,
         traits = IF({no_traits} OR {over_cap}, traits, {merged})"
    )
}

async fn upsert_users(tx: &mut Transaction<'_>, rows: &[&EventRow<'_>]) -> Result<u64, StoreError> {
    let mut identifies: Vec<_> =
        rows.iter().filter(|row| row.event.kind == EventType::Identify && row.event.user_id.is_some()).collect();
    // In the key's order, as every batch locks them: batches of the same users in other
    // orders would deadlock. Stable: one user's identifies keep their order.
    identifies.sort_by_key(|row| (row.project.0, row.event.user_id.as_deref().map(as_compared)));
    let mut affected = 0;
    for chunk in identifies.chunks(ROWS_PER_STATEMENT) {
        let mut values = Vec::with_capacity(chunk.len() * 7);
        for row in chunk {
            let at = time(row.event.timestamp);
            values.extend([
                Value::from(new_public_id()),
                Value::from(row.project.0),
                Value::from(row.event.user_id.as_deref()),
                json(&row.event.traits),
                at.clone(),
                at.clone(),
                at,
            ]);
        }
        let suffix = format!(
            "ON DUPLICATE KEY UPDATE {},
               first_seen_at = LEAST(first_seen_at, VALUES(first_seen_at)),
               last_seen_at = GREATEST(last_seen_at, VALUES(last_seen_at))",
            merge_traits()
        );
        let columns = ["uid", "project_id", "user_id", "traits", "traits_at", "first_seen_at", "last_seen_at"];
        affected += execute(tx, multi_row_insert("users", &columns, chunk.len(), &suffix), values).await?;
    }
    Ok(affected)
}

/// A link: (project, linked id, user id, source).
type Link<'a> = (ProjectId, &'a str, &'a str, &'static str);

/// Records the batch's links, at most `MAX_LINKS_PER_USER` per user (and, when `marks`, the
/// hours whose users they change). Returns how many new links were left out for that cap.
async fn insert_aliases(tx: &mut Transaction<'_>, rows: &[&EventRow<'_>], marks: bool) -> Result<u64, StoreError> {
    let mut links: Vec<Link<'_>> = rows
        .iter()
        .filter_map(|row| {
            let event = row.event;
            let user = event.user_id.as_deref()?;
            match event.kind {
                EventType::Alias => Some((row.project, event.previous_id.as_deref()?, user, "alias")),
                EventType::Identify => Some((row.project, event.anonymous_id.as_deref()?, user, "identify")),
                _ => None,
            }
        })
        .filter(|(_, alias, user, _)| as_compared(alias) != as_compared(user))
        .collect();
    links.sort_unstable_by_key(|(project, alias, user, _)| (project.0, *alias, *user));
    links.dedup_by_key(|(project, alias, user, _)| (project.0, *alias, *user));
    let (links, over_cap) = within_link_cap(tx, links).await?;
    if marks {
        mark_hours_of_first_links(tx, &links).await?;
    }
    for chunk in links.chunks(ROWS_PER_STATEMENT) {
        let mut values = Vec::with_capacity(chunk.len() * 5);
        for (project, alias, user, source) in chunk {
            values.extend([
                Value::from(new_public_id()),
                Value::from(project.0),
                Value::from(*alias),
                Value::from(*user),
                Value::from(*source),
            ]);
        }
        let columns = ["uid", "project_id", "alias", "user_id", "source"];
        let sql = multi_row_insert("aliases", &columns, chunk.len(), "ON DUPLICATE KEY UPDATE alias = alias");
        execute(tx, sql, values).await?;
    }
    Ok(over_cap)
}

/// The links that keep every user within `MAX_LINKS_PER_USER` (links that exist already
/// always pass: recording them again changes nothing), and how many were left out. One
/// count per project in the batch; users near the cap cost one more lookup.
async fn within_link_cap<'a>(
    tx: &mut Transaction<'_>,
    links: Vec<Link<'a>>,
) -> Result<(Vec<Link<'a>>, u64), StoreError> {
    let mut links_held: HashMap<(u64, String), u64> = HashMap::new();
    for (project, slice) in ids_by_project(links.iter().map(|link| (link.0.0, link.2))) {
        let sql = format!(
            "SELECT user_id, COUNT(*) FROM aliases WHERE project_id = ? AND user_id IN ({}) GROUP BY user_id",
            placeholders(slice.len())
        );
        let counts: Vec<(String, u64)> = tx.exec(sql, project_and(project, &slice)).await?;
        // SQL groups `bob` and `bob ` together: so does the count.
        links_held.extend(counts.into_iter().map(|(user, count)| ((project, as_compared(&user).to_string()), count)));
    }
    let mut kept = Vec::with_capacity(links.len());
    let mut over_cap = 0;
    for link in links {
        let held = links_held.entry((link.0.0, as_compared(link.2).to_string())).or_default();
        if *held < MAX_LINKS_PER_USER {
            *held += 1;
            kept.push(link);
        } else if link_exists(tx, &link).await? {
            kept.push(link);
        } else {
            over_cap += 1;
        }
    }
    Ok((kept, over_cap))
}

/// Marks for the rollups the hours of the anonymous events (without a userId) whose id
/// `links` link for the first time: from now on they count as its user (`USER_KEY`). An id
/// linked before keeps its first link, and its hours their counts.
async fn mark_hours_of_first_links(tx: &mut Transaction<'_>, links: &[Link<'_>]) -> Result<(), StoreError> {
    for (project, slice) in ids_by_project(links.iter().map(|link| (link.0.0, link.1))) {
        let sql = format!(
            "SELECT DISTINCT alias FROM aliases WHERE project_id = ? AND alias IN ({})",
            placeholders(slice.len())
        );
        let linked: HashSet<String> = tx.exec(sql, project_and(project, &slice)).await?.into_iter().collect();
        let first: Vec<&str> = slice.into_iter().filter(|alias| !linked.contains(*alias)).collect();
        mark_hours_of_anonymous_ids(tx, project, &first).await?;
    }
    Ok(())
}

/// The ids (project, id), distinct, per project, in slices of at most `IDS_PER_STATEMENT`:
/// what one statement looks up.
fn ids_by_project<'a>(ids: impl Iterator<Item = (u64, &'a str)>) -> Vec<(u64, Vec<&'a str>)> {
    let mut ids: Vec<(u64, &str)> = ids.collect();
    ids.sort_unstable();
    ids.dedup();
    let mut slices = Vec::new();
    for group in ids.chunk_by(|a, b| a.0 == b.0) {
        for slice in group.chunks(IDS_PER_STATEMENT) {
            slices.push((group[0].0, slice.iter().map(|(_, id)| *id).collect()));
        }
    }
    slices
}

async fn link_exists(tx: &mut Transaction<'_>, (project, alias, user, _): &Link<'_>) -> Result<bool, StoreError> {
    let found: Option<u8> = tx
        .exec_first(
            "SELECT 1 FROM aliases WHERE project_id = ? AND alias = ? AND user_id = ?",
            (project.0, *alias, *user),
        )
        .await?;
    Ok(found.is_some())
}

/// The batch's group calls and memberships. A group named only as a member's (PostHog's
/// `$groups`) gets a profile without traits, so that every group a user is listed in can be
/// read; an existing profile is left as it is. Returns the memberships read as stored, for
/// `KnownMembers` once the batch commits.
async fn upsert_groups(
    tx: &mut Transaction<'_>,
    rows: &[&EventRow<'_>],
    known: &KnownMembers,
) -> Result<Vec<u64>, StoreError> {
    // (project, group, time, traits): a call's, or none for a group its member's event names.
    let mut profiles: Vec<(u64, GroupRef<'_>, DateTime<Utc>, Option<&JsonText<'_>>)> = Vec::new();
    // (membership, its key in `known`, the naming event's time).
    let mut members: Vec<(Membership<'_>, u64, DateTime<Utc>)> = Vec::new();
    for row in rows {
        let (project, event) = (row.project.0, row.event);
        if let Some(group) = event.group_called() {
            profiles.push((project, group, event.timestamp, event.traits.as_ref()));
        }
        let Some(member) = event.user_id.as_deref().or(event.anonymous_id.as_deref()) else { continue };
        for group in event.groups_joined() {
            let membership = (project, group, member);
            members.push((membership, known.key(membership), event.timestamp));
        }
    }
    if members.is_empty() && profiles.is_empty() {
        return Ok(Vec::new());
    }
    // A membership known stored has its group's profile too (`known_members`): nothing to
    // read or write.
    let keys: Vec<u64> = members.iter().map(|(_, key, _)| *key).collect();
    let unknown = members.into_iter().zip(known.known(&keys)).filter(|(_, known)| !known).map(|(member, _)| member);
    let members: Vec<(Membership<'_>, u64, DateTime<Utc>)> = unknown.collect();
    // What is stored already needs no write: PostHog names a user's groups on every event,
    // and a write would lock a busy group's rows until this batch commits, one batch after
    // another (and a read locking them, mixed with the writes, deadlocks). A named group
    // needs no row where the batch calls it, either. Were cleanup deleting a group read here
    // (its members erased), a new member would be left without it: a user's groups leave such
    // a group out, and the next event naming it makes it again. So every group these name is
    // read, whether its membership is stored or not.
    let memberships: Vec<Membership<'_>> = members.iter().map(|(membership, ..)| *membership).collect();
    let stored = stored_members(tx, &memberships, known).await?;
    let (mut named, mut read_stored, mut new_members) = (Vec::new(), Vec::new(), Vec::new());
    for ((project, group, member), key, at) in members {
        named.push((project, group, at, None));
        if stored.contains(&key) {
            read_stored.push(key);
        } else {
            new_members.push((project, group, member));
        }
    }
    let called: HashSet<(u64, GroupRef<'_>)> =
        profiles.iter().map(|(project, group, ..)| (*project, compared(*group))).collect();
    named.retain(|(project, group, ..)| !called.contains(&(*project, compared(*group))));
    let stored = stored_groups(tx, named.iter().map(|(project, group, ..)| (*project, *group))).await?;
    named.retain(|(project, group, ..)| !stored.contains(&(*project, owned(compared(*group)))));
    // The earliest naming of each, for its time.
    named.sort_by_key(|(project, group, at, _)| (*project, compared(*group), *at));
    named.dedup_by_key(|(project, group, ..)| (*project, compared(*group)));
    profiles.extend(named);
    // In the keys' order (id, then type), as `upsert_users` has its rows. Stable: one group's
    // calls keep their order.
    profiles.sort_by_key(|(project, group, ..)| (*project, in_key_order(*group)));
    new_members.sort_by_key(|(project, group, member)| (*project, in_key_order(*group), as_compared(member)));
    new_members.dedup();

    for chunk in profiles.chunks(ROWS_PER_STATEMENT) {
        let mut values = Vec::with_capacity(chunk.len() * 6);
        for (project, group, at, traits) in chunk {
            values.extend([
                Value::from(new_public_id()),
                Value::from(*project),
                Value::from(group.id),
                Value::from(group.kind),
                traits.map_or(Value::NULL, |traits| Value::from(traits.get())),
                time(*at),
            ]);
        }
        let columns = ["uid", "project_id", "group_id", "group_type", "traits", "traits_at"];
        let suffix = format!("ON DUPLICATE KEY UPDATE {}", merge_traits());
        execute(tx, multi_row_insert("group_profiles", &columns, chunk.len(), &suffix), values).await?;
    }
    for chunk in new_members.chunks(ROWS_PER_STATEMENT) {
        let values = chunk
            .iter()
            .flat_map(|(project, group, member)| {
                [Value::from(*project), Value::from(group.id), Value::from(group.kind), Value::from(*member)]
            })
            .collect();
        // IGNORE, not ON DUPLICATE KEY UPDATE, which takes an exclusive next-key lock on a
        // membership another batch stored meanwhile (MySQL's manual, "Locks Set by Different
        // SQL Statements"); IGNORE takes a shared one. The ids are checked (at most 255
        // characters, never NULL): nothing to truncate.
        let columns = ["project_id", "group_id", "group_type", "member_id"];
        let sql = multi_row_insert("group_members", &columns, chunk.len(), "").replacen("INSERT", "INSERT IGNORE", 1);
        execute(tx, sql, values).await?;
    }
    Ok(read_stored)
}

/// Of `groups`, those with a profile (soft-deleted ones too): (project, (type, id) as
/// compared). A plain read, which locks nothing.
async fn stored_groups<'e>(
    tx: &mut Transaction<'_>,
    groups: impl Iterator<Item = (u64, GroupRef<'e>)>,
) -> Result<HashSet<(u64, OwnedGroup)>, StoreError> {
    let mut stored = HashSet::new();
    for (project, slice) in ids_by_project(groups.map(|(project, group)| (project, group.id))) {
        let sql = format!(
            "SELECT group_type, group_id FROM group_profiles /* with deleted */ WHERE project_id = ? AND group_id IN ({})",
            placeholders(slice.len())
        );
        let found: Vec<(String, String)> = tx.exec(sql, project_and(project, &slice)).await?;
        stored.extend(found.iter().map(|(kind, id)| (project, owned(compared(GroupRef { kind, id })))));
    }
    Ok(stored)
}

/// A group's type and id as SQL compares them (trailing spaces dropped).
fn compared(group: GroupRef<'_>) -> GroupRef<'_> {
    GroupRef { kind: as_compared(group.kind), id: as_compared(group.id) }
}

/// A group in the order of the tables' keys: by id, then type.
fn in_key_order(group: GroupRef<'_>) -> (&str, &str) {
    let group = compared(group);
    (group.id, group.kind)
}

/// A group read back: (type, id).
type OwnedGroup = (String, String);

fn owned(group: GroupRef<'_>) -> OwnedGroup {
    (group.kind.to_owned(), group.id.to_owned())
}

/// Of `members` (project, group, member), the memberships stored already, by their keys in
/// `known` (which compare ids as SQL does): read by member (a user is in a few groups, where
/// a busy group has many members). A plain read, which locks nothing.
async fn stored_members(
    tx: &mut Transaction<'_>,
    members: &[Membership<'_>],
    known: &KnownMembers,
) -> Result<HashSet<u64>, StoreError> {
    let mut stored = HashSet::new();
    for (project, slice) in ids_by_project(members.iter().map(|(project, _, member)| (*project, *member))) {
        let sql = format!(
            "SELECT group_type, group_id, member_id FROM group_members WHERE project_id = ? AND member_id IN ({})",
            placeholders(slice.len())
        );
        let found: Vec<(String, String, String)> = tx.exec(sql, project_and(project, &slice)).await?;
        stored.extend(found.iter().map(|(kind, id, member)| known.key((project, GroupRef { kind, id }, member))));
    }
    Ok(stored)
}

async fn insert_rejections(tx: &mut Transaction<'_>, rejections: &[&Rejection]) -> Result<u64, StoreError> {
    let mut values = Vec::with_capacity(rejections.len() * 10);
    for rejection in rejections {
        let reason: String = rejection.reason.chars().take(1000).collect();
        values.extend([
            Value::from(new_public_id()),
            rejection.project.map_or(Value::NULL, |p| Value::from(p.0)),
            Value::from(rejection.queue_message_id.as_str()),
            Value::from(rejection.item_index),
            Value::from(rejection.code.as_str()),
            Value::from(reason),
            Value::from(rejection.source.as_deref()),
            Value::from(rejection.raw.as_slice()),
            rejection.received_at.map_or(Value::NULL, time),
            Value::from(rejection.batch_fields.as_deref()),
        ]);
    }
    let columns = [
        "uid",
        "project_id",
        "queue_message_id",
        "item_index",
        "reason_code",
        "reason",
        "source",
        "raw",
        "received_at",
        "batch_fields",
    ];
    let sql = multi_row_insert(
        "rejected_events",
        &columns,
        rejections.len(),
        "ON DUPLICATE KEY UPDATE item_index = item_index",
    );
    execute(tx, sql, values).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_row_insert_has_one_placeholder_per_value() {
        let sql = multi_row_insert("t", &["a", "b"], 3, "ON DUPLICATE KEY UPDATE a = a");
        assert_eq!(sql, "INSERT INTO t (a,b) VALUES (?,?),(?,?),(?,?) ON DUPLICATE KEY UPDATE a = a");
    }
}
