//! GDPR erasure: the request (which suppresses the user's ids at once), its progress and
//! audit record, and the chunked deletes cleanup runs for it.
//!
//! Every delete names a `LIMIT`: no statement removes more than the chunk it is given
//! (PlanetScale: 100k rows a statement, 20 s a transaction), and at most `IDS_PER_CHUNK` ids:
//! a user with 100,000 linked ids is erased a slice of ids at a time. An erasure that fails
//! is recorded on its row and passed over for the rest of the run; the run goes on with
//! later erasures and the other steps, and the next run tries it again.

use super::links::linked_ids;
use super::{
    ChunkResult, IDS_PER_STATEMENT, JobTx, Store, StoreError, column, multi_row_insert, placeholders, required,
    required_time, time_column, with_timeout,
};
use crate::ids::{ProjectId, as_compared, new_public_id};
use crate::model::SubjectHashes;
use crate::telemetry::{MetricLine, Unit};
use chrono::{DateTime, Utc};
use mysql_async::prelude::Queryable;
use mysql_async::{Row, Transaction, TxOpts, Value};
use serde::Serialize;
use uuid::Uuid;

/// An erasure request's progress; once done, its audit record (no personal data).
#[derive(Debug, Serialize)]
pub struct ErasureInfo {
    pub id: Uuid,
    /// `None` once the project itself was purged.
    pub project: Option<Uuid>,
    /// `pending` or `done`.
    pub status: String,
    /// HMAC-SHA256 of the user id (hex), to match a later question about the same user.
    pub subject_hash: String,
    /// The ids erased: the user id and the ids linked to it.
    pub ids: u64,
    /// Ids still to be worked through (0 once done).
    pub ids_remaining: u64,
    pub events_deleted: u64,
    pub profiles_deleted: u64,
    pub aliases_deleted: u64,
    pub group_links_deleted: u64,
    pub group_profiles_deleted: u64,
    pub rejected_deleted: u64,
    /// Runs in which this erasure failed; it is tried again by the next run.
    pub attempts_failed: u32,
    /// The last failure, while pending.
    pub last_error: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Records an erasure request and suppresses the user at once: their id and the ids
    /// linked to it (`links`) go on the suppression list as keyed hashes, so that the
    /// consumer drops their events from now on, also those already queued. Cleanup does the
    /// deleting.
    pub async fn request_erasure(
        &self,
        project: ProjectId,
        user_id: &str,
        erased_ids: &impl SubjectHashes,
    ) -> Result<Uuid, StoreError> {
        let mut conn = self.conn().await?;
        let mut tx = with_timeout(conn.start_transaction(TxOpts::default())).await?;
        // Exclusive against the consumer's share lock: see `events::storable`.
        let locked: Option<u64> = with_timeout(
            tx.exec_first("SELECT id FROM projects WHERE id = ? AND deleted_at IS NULL FOR UPDATE", (project.0,)),
        )
        .await?;
        if locked.is_none() {
            return Err(StoreError::NotFound("no such project".into()));
        }
        let subjects: Vec<String> =
            std::iter::once(user_id.to_string()).chain(linked_ids(&mut tx, project, user_id).await?).collect();
        // The current pepper's hash.
        let subject_hash = erased_ids
            .hashes(project, user_id)
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Invalid("no pepper to hash the user id with".into()))?;
        let uid = new_public_id();
        // user_id and linked_ids: for the previous release, should it be rolled back to.
        let linked = serde_json::to_string(&subjects[1..]).unwrap_or_default();
        with_timeout(tx.exec_drop(
            "INSERT INTO erasures (uid, project_id, subject_hash, subjects, user_id, linked_ids) VALUES (?, ?, ?, ?, ?, ?)",
            (uid, project.0, subject_hash.to_vec(), subjects.len() as u64, user_id, linked),
        ))
        .await?;
        let erasure: u64 = tx.last_insert_id().ok_or_else(|| StoreError::Unavailable("no erasure id".into()))?;
        insert_subjects(&mut tx, erasure, &subjects).await?;
        for ids in subjects.chunks(IDS_PER_STATEMENT) {
            let hashes: Vec<[u8; 32]> = ids.iter().flat_map(|id| erased_ids.hashes(project, id)).collect();
            let mut params = Vec::with_capacity(hashes.len() * 2);
            for hash in &hashes {
                params.extend([Value::from(project.0), Value::from(hash.to_vec())]);
            }
            let columns = ["project_id", "subject_hash"];
            let suffix = "ON DUPLICATE KEY UPDATE created_at = CURRENT_TIMESTAMP(3)";
            let sql = multi_row_insert("suppressed_subjects", &columns, hashes.len(), suffix);
            with_timeout(tx.exec_drop(sql, params)).await?;
        }
        with_timeout(tx.commit()).await?;
        // The rollups stop counting the user's events at once (cleanup marks them again as it
        // deletes, should this process stop here).
        for ids in subjects.chunks(IDS_PER_STATEMENT) {
            let list = placeholders(ids.len());
            for column in ["user_id", "anonymous_id", "previous_id"] {
                let mut params = vec![Value::from(project.0)];
                params.extend(ids.iter().map(|id| Value::from(id.as_str())));
                let condition = format!("project_id = ? AND {column} IN ({list})");
                super::rollups::mark_dirty_where(&mut conn, &condition, params).await?;
            }
        }
        Ok(uid)
    }

    pub async fn erasure(&self, uid: Uuid) -> Result<Option<ErasureInfo>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<Row> = with_timeout(conn.exec_first(
            "SELECT e.uid, p.uid, e.state, HEX(e.subject_hash), e.subjects,
                    (SELECT COUNT(*) FROM erasure_subjects s WHERE s.erasure_id = e.id),
                    e.events_deleted, e.profiles_deleted, e.aliases_deleted, e.group_links_deleted,
                    e.group_profiles_deleted, e.rejected_deleted, e.attempts_failed, e.last_error,
                    e.requested_at, e.completed_at
             FROM erasures e LEFT JOIN projects p ON p.id = e.project_id /* with deleted */ WHERE e.uid = ?",
            (uid,),
        ))
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(ErasureInfo {
            id: required(&row, 0)?,
            project: column(&row, 1),
            status: required(&row, 2)?,
            subject_hash: required::<String>(&row, 3)?.to_lowercase(),
            ids: required(&row, 4)?,
            ids_remaining: required(&row, 5)?,
            events_deleted: required(&row, 6)?,
            profiles_deleted: required(&row, 7)?,
            aliases_deleted: required(&row, 8)?,
            group_links_deleted: required(&row, 9)?,
            group_profiles_deleted: required(&row, 10)?,
            rejected_deleted: required(&row, 11)?,
            attempts_failed: required(&row, 12)?,
            last_error: column(&row, 13),
            requested_at: required_time(&row, 14)?,
            completed_at: time_column(&row, 15),
        }))
    }

    /// One chunk of the oldest pending erasure after `resume_after` (the erasures that failed
    /// earlier in this run): deletes up to `limit` rows holding some of its ids, and drops
    /// the ids it has finished; with none left, completes the request. An erasure whose
    /// deletes fail is recorded as failed and passed over (the chunk's result resumes after
    /// it). Done when no erasure is left to work on in this run.
    pub async fn erase_chunk(
        tx: &mut JobTx<'_>,
        resume_after: Option<&str>,
        limit: u64,
    ) -> Result<ChunkResult, StoreError> {
        let tx = &mut tx.0;
        let passed_over: u64 = resume_after.and_then(|text| text.parse().ok()).unwrap_or(0);
        let pending: Option<(u64, u64)> = with_timeout(tx.exec_first(
            "SELECT id, project_id FROM erasures WHERE state = 'pending' AND id > ? ORDER BY id LIMIT 1 FOR UPDATE",
            (passed_over,),
        ))
        .await?;
        let Some((erasure, project)) = pending else {
            // Ids of erasures the previous release's cleanup completed (it knows nothing of them).
            with_timeout(tx.exec_drop(
                "DELETE FROM erasure_subjects WHERE erasure_id IN (SELECT id FROM erasures WHERE state = 'done') LIMIT ?",
                (limit,),
            ))
            .await?;
            let rows = tx.affected_rows();
            return Ok(ChunkResult { rows, resume_after: resume_after.map(str::to_string), done: rows == 0 });
        };
        with_timeout(tx.query_drop("SAVEPOINT erasure_chunk")).await?;
        match erase_some(tx, erasure, project, limit).await {
            Ok(rows) => Ok(ChunkResult { rows, resume_after: resume_after.map(str::to_string), done: false }),
            Err(err) => {
                // A failed statement leaves the transaction usable: undo this erasure's part,
                // record the failure and pass over it. A transaction that is gone (deadlock,
                // lost connection) has no savepoint left, and a statement not answered in time
                // leaves nothing to send on: then the chunk fails as a whole.
                if matches!(err, StoreError::NoAnswer)
                    || with_timeout(tx.query_drop("ROLLBACK TO SAVEPOINT erasure_chunk")).await.is_err()
                {
                    return Err(err);
                }
                let reason: String = err.to_string().chars().take(1000).collect();
                with_timeout(tx.exec_drop(
                    "UPDATE erasures SET attempts_failed = attempts_failed + 1, last_error = ? WHERE id = ?",
                    (reason.as_str(), erasure),
                ))
                .await?;
                tracing::error!(erasure, error = %reason, "erasure failed; passed over until the next run");
                MetricLine::new("cleanup").metric("ErasureFailed", 1.0, Unit::Count, &[]).emit();
                Ok(ChunkResult { rows: 0, resume_after: Some(erasure.to_string()), done: false })
            }
        }
    }
}

/// One chunk of an erasure, in three phases: a request made by the release before erasure
/// ids were rows gets its ids copied into `erasure_subjects`; then rejected events are
/// scanned once for any of the ids; then the ids are worked through a slice at a time, each
/// slice dropped once nothing holds it. With no ids left, the erasure is done.
async fn erase_some(tx: &mut Transaction<'_>, erasure: u64, project: u64, limit: u64) -> Result<u64, StoreError> {
    // (ids, rejected events scanned, scanned up to, user id, linked ids)
    type Progress = (u32, bool, u64, Option<String>, Option<String>);
    let state: Option<Progress> = with_timeout(tx.exec_first(
        "SELECT subjects, rejected_scan_done, rejected_scanned_to, user_id, linked_ids FROM erasures WHERE id = ?",
        (erasure,),
    ))
    .await?;
    let Some((subjects, scan_done, scanned_to, user_id, linked)) = state else { return Ok(0) };
    if subjects == 0
        && let Some(user_id) = user_id
    {
        let linked: Vec<String> = linked.and_then(|text| serde_json::from_str(&text).ok()).unwrap_or_default();
        let ids: Vec<String> = std::iter::once(user_id).chain(linked).collect();
        insert_subjects(tx, erasure, &ids).await?;
        with_timeout(tx.exec_drop("UPDATE erasures SET subjects = ? WHERE id = ?", (ids.len() as u64, erasure)))
            .await?;
        return Ok(0);
    }
    if !scan_done {
        return scan_rejected_events(tx, erasure, project, scanned_to, limit).await;
    }
    let subjects: Vec<String> = with_timeout(tx.exec(
        "SELECT subject FROM erasure_subjects WHERE erasure_id = ? ORDER BY subject LIMIT ?",
        (erasure, IDS_PER_CHUNK as u64),
    ))
    .await?;
    if subjects.is_empty() {
        with_timeout(tx.exec_drop(
            "UPDATE erasures SET state = 'done', user_id = NULL, linked_ids = NULL, last_error = NULL,
                    completed_at = CURRENT_TIMESTAMP(3)
             WHERE id = ?",
            (erasure,),
        ))
        .await?;
        return Ok(0);
    }
    let list = placeholders(subjects.len());
    let mut remaining = limit;
    let mut deleted = 0;
    for (counter, sql) in ERASURE_DELETES {
        let mut params: Vec<Value> = vec![Value::from(project)];
        params.extend(subjects.iter().map(|subject| Value::from(subject.as_str())));
        if let Some(condition) =
            sql.strip_prefix("DELETE FROM events WHERE ").and_then(|rest| rest.strip_suffix(" LIMIT ?"))
        {
            // The rollups of the hours it deletes from (all of them, not only this chunk's).
            super::rollups::mark_dirty_where(tx, &condition.replace("{list}", &list), params.clone()).await?;
        }
        if *sql == LINKS_TO_SUBJECTS {
            mark_hours_of_ids_linked_to(tx, erasure, project, &list, &params).await?;
        }
        let rows = if *sql == GROUPS_WITHOUT_TRAITS_OF_SUBJECTS {
            delete_groups_without_traits_of(tx, erasure, project, &list, params, remaining).await?
        } else {
            params.push(Value::from(remaining));
            let sql = sql.replace("{list}", &list).replace("{erasure}", &erasure.to_string());
            with_timeout(tx.exec_drop(sql, params)).await?;
            tx.affected_rows()
        };
        add_count(tx, erasure, counter, rows).await?;
        (deleted, remaining) = (deleted + rows, remaining - rows);
        if remaining == 0 {
            // Perhaps more: the next chunk takes the same slice again (what is gone is cheap to look for).
            return Ok(deleted);
        }
    }
    let mut params: Vec<Value> = vec![Value::from(erasure)];
    params.extend(subjects.iter().map(|subject| Value::from(subject.as_str())));
    with_timeout(
        tx.exec_drop(format!("DELETE FROM erasure_subjects WHERE erasure_id = ? AND subject IN ({list})"), params),
    )
    .await?;
    Ok(deleted)
}

pub(super) async fn insert_subjects(tx: &mut Transaction<'_>, erasure: u64, ids: &[String]) -> Result<(), StoreError> {
    for slice in ids.chunks(IDS_PER_STATEMENT) {
        let mut params = Vec::with_capacity(slice.len() * 2);
        for id in slice {
            params.extend([Value::from(erasure), Value::from(id.as_str())]);
        }
        // IGNORE: an id listed twice is one row (and the users granted INSERT need no UPDATE).
        let sql = multi_row_insert("erasure_subjects", &["erasure_id", "subject"], slice.len(), "").replacen(
            "INSERT INTO",
            "INSERT IGNORE INTO",
            1,
        );
        with_timeout(tx.exec_drop(sql, params)).await?;
    }
    Ok(())
}

/// Rejected events scanned per chunk.
const REJECTED_PER_CHUNK: u64 = 1_000;

/// Rejected events (of the project, or refused before their project was known) naming one of
/// the erasure's ids as a JSON string, in the event or its batch fields: one pass over them per erasure, `REJECTED_PER_CHUNK`
/// at a time, each matched in memory against all of the ids (a statement per id would cost
/// rows × ids).
async fn scan_rejected_events(
    tx: &mut Transaction<'_>,
    erasure: u64,
    project: u64,
    after: u64,
    limit: u64,
) -> Result<u64, StoreError> {
    let rows: Vec<(u64, Vec<u8>, Option<Vec<u8>>)> = with_timeout(tx.exec(
        "SELECT id, raw, batch_fields FROM rejected_events
         WHERE (project_id = ? OR project_id IS NULL) AND id > ? ORDER BY id LIMIT ?",
        (project, after, REJECTED_PER_CHUNK.min(limit)),
    ))
    .await?;
    let Some(&(last, _, _)) = rows.last() else {
        with_timeout(tx.exec_drop("UPDATE erasures SET rejected_scan_done = 1 WHERE id = ?", (erasure,))).await?;
        return Ok(0);
    };
    // Compared as the database compares ids: without trailing spaces.
    let ids: std::collections::HashSet<String> =
        with_timeout(tx.exec::<String, _, _>("SELECT subject FROM erasure_subjects WHERE erasure_id = ?", (erasure,)))
            .await?
            .into_iter()
            .map(|id| as_compared(&id).to_string())
            .collect();
    let names_an_id = |text: &[u8]| json_strings(text).any(|text| ids.contains(as_compared(&text)));
    let matched: Vec<u64> = rows
        .iter()
        .filter(|(_, raw, batch)| names_an_id(raw) || batch.as_deref().is_some_and(names_an_id))
        .map(|(id, _, _)| *id)
        .collect();
    if !matched.is_empty() {
        let sql = format!("DELETE FROM rejected_events WHERE id IN ({})", placeholders(matched.len()));
        with_timeout(tx.exec_drop(sql, matched.iter().map(|id| Value::from(*id)).collect::<Vec<_>>())).await?;
        add_count(tx, erasure, "rejected_deleted", tx.affected_rows()).await?;
    }
    with_timeout(tx.exec_drop("UPDATE erasures SET rejected_scanned_to = ? WHERE id = ?", (last, erasure))).await?;
    Ok(matched.len() as u64)
}

/// The strings of a rejected body: every string value of its JSON, or, when it is not JSON,
/// every quoted run of it.
pub(super) fn json_strings(raw: &[u8]) -> Box<dyn Iterator<Item = String> + '_> {
    fn walk(value: serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::String(text) => out.push(text),
            serde_json::Value::Array(items) => items.into_iter().for_each(|item| walk(item, out)),
            serde_json::Value::Object(fields) => fields.into_iter().for_each(|(_, item)| walk(item, out)),
            _ => {}
        }
    }
    match serde_json::from_slice::<serde_json::Value>(raw) {
        Ok(value) => {
            let mut out = Vec::new();
            walk(value, &mut out);
            Box::new(out.into_iter())
        }
        Err(_) => Box::new(
            String::from_utf8_lossy(raw)
                .split('"')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect::<Vec<_>>()
                .into_iter(),
        ),
    }
}

/// Ids one chunk works on: every statement of `ERASURE_DELETES` names this many at most.
const IDS_PER_CHUNK: usize = 500;

/// Per erasure counter, a delete of rows holding one of the ids (`{list}` of them), by the
/// rules of `links`. One statement per indexed column, so that each uses its index.
const ERASURE_DELETES: &[(&str, &str)] = &[
    ("events_deleted", "DELETE FROM events WHERE project_id = ? AND user_id IN ({list}) LIMIT ?"),
    (
        "events_deleted",
        "DELETE FROM events WHERE project_id = ? AND anonymous_id IN ({list}) AND user_id IS NULL LIMIT ?",
    ),
    ("events_deleted", "DELETE FROM events WHERE project_id = ? AND previous_id IN ({list}) LIMIT ?"),
    ("profiles_deleted", "DELETE FROM users WHERE project_id = ? AND user_id IN ({list}) LIMIT ?"),
    ("aliases_deleted", LINKS_TO_SUBJECTS),
    ("aliases_deleted", "DELETE FROM aliases WHERE project_id = ? AND alias IN ({list}) LIMIT ?"),
    ("group_profiles_deleted", GROUPS_WITHOUT_TRAITS_OF_SUBJECTS),
    ("group_links_deleted", "DELETE FROM group_members WHERE project_id = ? AND member_id IN ({list}) LIMIT ?"),
    // A group named by one of the ids (a personal workspace), once no one else is in it: no
    // member left but ids of this erasure that a later chunk takes.
    (
        "group_profiles_deleted",
        "DELETE FROM group_profiles WHERE project_id = ? AND group_id IN ({list})
           AND NOT EXISTS (SELECT 1 FROM group_members m
                           WHERE m.project_id = group_profiles.project_id AND m.group_id = group_profiles.group_id
                             AND m.group_type = group_profiles.group_type
                             AND NOT EXISTS (SELECT 1 FROM erasure_subjects s
                                             WHERE s.erasure_id = {erasure} AND s.subject = m.member_id))
         LIMIT ?",
    ),
];

/// The delete of groups without traits that the subjects are members of (`{ids}` and
/// `{groups}`: their ids, and their (id, type) pairs, read first by member:
/// `delete_groups_without_traits_of`), before their memberships go, once no one outside the
/// erasure is in them. A group call without traits or PostHog's `$groups` names such a group;
/// its id may be the person's own (`alice-example-com`), and nothing else holds it.
const GROUPS_WITHOUT_TRAITS_OF_SUBJECTS: &str = "DELETE FROM group_profiles WHERE project_id = ? AND group_id IN ({ids})
   AND (group_id, group_type) IN ({groups})
   AND {empty}
   AND NOT EXISTS (SELECT 1 FROM group_members m
                   WHERE m.project_id = group_profiles.project_id AND m.group_id = group_profiles.group_id
                     AND m.group_type = group_profiles.group_type
                     AND NOT EXISTS (SELECT 1 FROM erasure_subjects s WHERE s.erasure_id = {erasure} AND s.subject = m.member_id))
 LIMIT ?";

/// `GROUPS_WITHOUT_TRAITS_OF_SUBJECTS` for the chunk's subjects (`params`: the project, then
/// the subjects of `list`), at most `limit` rows; how many were deleted.
async fn delete_groups_without_traits_of(
    tx: &mut Transaction<'_>,
    erasure: u64,
    project: u64,
    list: &str,
    params: Vec<Value>,
    limit: u64,
) -> Result<u64, StoreError> {
    let sql = format!(
        "SELECT DISTINCT group_id, group_type FROM group_members WHERE project_id = ? AND member_id IN ({list})"
    );
    let groups: Vec<(String, String)> = with_timeout(tx.exec(sql, params)).await?;
    let mut deleted = 0;
    for slice in groups.chunks(IDS_PER_CHUNK) {
        let pairs = vec!["(?, ?)"; slice.len()].join(", ");
        let sql = GROUPS_WITHOUT_TRAITS_OF_SUBJECTS
            .replace("{ids}", &placeholders(slice.len()))
            .replace("{groups}", &pairs)
            .replace("{empty}", &super::events::no_traits("traits"))
            .replace("{erasure}", &erasure.to_string());
        let mut params: Vec<Value> = vec![Value::from(project)];
        params.extend(slice.iter().map(|(id, _)| Value::from(id.as_str())));
        params.extend(slice.iter().flat_map(|(id, kind)| [Value::from(id.as_str()), Value::from(kind.as_str())]));
        params.push(Value::from(limit - deleted));
        with_timeout(tx.exec_drop(sql, params)).await?;
        deleted += tx.affected_rows();
        if deleted == limit {
            break;
        }
    }
    Ok(deleted)
}

/// The delete of the links from other ids to the subjects.
const LINKS_TO_SUBJECTS: &str = "DELETE FROM aliases WHERE project_id = ? AND user_id IN ({list}) LIMIT ?";

/// The anonymous events of an id first linked to a subject counted as that subject
/// (`rollups::USER_KEY`). Where the erasure keeps them (the id is no subject: it has a profile
/// of its own, or lies past the walk's caps, see `links`), they count as the id's next link or
/// as the id once the link is gone: their hours are recounted. Only first links change whom
/// events count as, and subjects' events go anyway (marked as they go), so links made to
/// flood a user cost nothing here; no new link to a subject can come meanwhile (the consumer
/// drops events naming a suppressed id). `params`: the project, then the chunk's subjects
/// (`list`).
async fn mark_hours_of_ids_linked_to(
    tx: &mut Transaction<'_>,
    erasure: u64,
    project: u64,
    list: &str,
    params: &[Value],
) -> Result<(), StoreError> {
    let sql = format!(
        "SELECT DISTINCT a.alias FROM aliases a
         WHERE a.project_id = ? AND a.user_id IN ({list})
           AND NOT EXISTS (SELECT 1 FROM aliases earlier
                           WHERE earlier.project_id = a.project_id AND earlier.alias = a.alias AND earlier.id < a.id)
           AND NOT EXISTS (SELECT 1 FROM erasure_subjects s WHERE s.erasure_id = ? AND s.subject = a.alias)"
    );
    let ids: Vec<String> = with_timeout(tx.exec(sql, [params, &[Value::from(erasure)]].concat())).await?;
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    super::rollups::mark_hours_of_anonymous_ids(tx, project, &ids).await
}

async fn add_count(tx: &mut Transaction<'_>, erasure: u64, counter: &str, rows: u64) -> Result<(), StoreError> {
    if rows == 0 {
        return Ok(());
    }
    // `counter` comes from the fixed list above.
    let sql = format!("UPDATE erasures SET {counter} = {counter} + ? WHERE id = ?");
    with_timeout(tx.exec_drop(sql, (rows, erasure))).await
}

/// The ids of an event an erasure in progress hides it by (`e` is the events row): those its
/// deletes take it by (`ERASURE_DELETES`), so that what is hidden meanwhile is what goes. An
/// event with another person's userId stays theirs, whatever anonymous id it shares: hidden
/// while the erasure runs, it would leave the rollups that counted its hour then without it.
pub(super) const ERASABLE_IDS: &str = "e.user_id, CASE WHEN e.user_id IS NULL THEN e.anonymous_id END, e.previous_id";

/// "An id in `columns` is a subject of an erasure still in progress", as an expression of a
/// row in the statement that reads the rows; its parameters (the project, twice) are pushed
/// onto `params`, so call it where its text goes. Its first, uncorrelated check runs once per
/// statement, so that while the project has no erasure pending no row pays for the second;
/// either way no round trip goes before the read. Event lists select it as a column and drop
/// the rows it marks after placing their cursor, so that a page never walks further for them;
/// reads by id and the users list (one row per user) filter on it.
pub(super) fn being_erased(columns: &str, project: ProjectId, params: &mut Vec<Value>) -> String {
    params.extend([Value::from(project.0), Value::from(project.0)]);
    format!(
        "(EXISTS (SELECT 1 FROM erasures WHERE state = 'pending' AND project_id = ?)
          AND EXISTS (SELECT 1 FROM erasures x JOIN erasure_subjects s ON s.erasure_id = x.id
                      WHERE x.state = 'pending' AND x.project_id = ? AND s.subject IN ({columns})))"
    )
}

/// Pending erasures a read names by id; past that many, its condition joins them instead.
const PENDING_NAMED: usize = 1_000;

/// The condition "no id in `columns` is a subject of an erasure still in progress", when
/// the project has one: cleanup has not deleted those rows yet, and no read shows them.
pub(super) async fn not_being_erased(
    conn: &mut impl Queryable,
    project: ProjectId,
    columns: &str,
    params: &mut Vec<Value>,
) -> Result<Option<String>, StoreError> {
    let pending: Vec<u64> = with_timeout(conn.exec(
        format!("SELECT id FROM erasures WHERE state = 'pending' AND project_id = ? LIMIT {}", PENDING_NAMED + 1),
        (project.0,),
    ))
    .await?;
    if pending.is_empty() {
        return Ok(None);
    }
    if pending.len() > PENDING_NAMED {
        // A backlog of erasures: every pending one of the project, as lists hide them.
        return Ok(Some(format!("NOT {}", being_erased(columns, project, params))));
    }
    params.extend(pending.iter().map(|&id| Value::from(id)));
    Ok(Some(format!(
        "NOT EXISTS (SELECT 1 FROM erasure_subjects s WHERE s.erasure_id IN ({}) AND s.subject IN ({columns}))",
        placeholders(pending.len())
    )))
}
