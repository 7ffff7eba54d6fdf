//! Links that arrive after their user's erasure.
//!
//! A phone that was offline when its user logged in sends, once back, its anonymous events and
//! then the identify linking its device id to the user. If the user was erased meanwhile, the
//! consumer drops the identify (its user id is suppressed), so the erasure never learns of the
//! device id, and the events it sent before stay. The consumer notes such links
//! (`erasure_late_links`, the user id as keyed hashes only); cleanup then adds the id to the
//! user's erasure where the link rules make it the user's (`store::links`: no profile of its
//! own, not linked first to someone else), and only if it holds events, so that made-up ids
//! linked to an erased user cost a lookup each and change nothing. Only an erasure's own
//! user id anchors a late link: not the ids reached through links, nor ids added this way.

use super::events::LateLink;
use super::links::MAX_LINKS_PER_USER;
use super::{ChunkResult, IDS_PER_STATEMENT, JobTx, Store, StoreError, multi_row_insert, placeholders, with_timeout};
use crate::ids::ProjectId;
use crate::model::SubjectHashes;
use crate::telemetry::{MetricLine, Unit};
use mysql_async::prelude::Queryable;
use mysql_async::{Transaction, Value};

/// Late links cleanup looks at per chunk (one project's, its row locked against its batches).
const LINKS_PER_CHUNK: usize = 50;
/// And per run: a flood of made-up links waits for later runs instead of holding up the
/// erasures and the other steps.
pub const LATE_LINKS_PER_RUN: u64 = 10_000;

/// MySQL's "command denied" (a database user without the grant: `infra/db/grants.sql` not
/// applied since the upgrade) and "no such table" (the release before this one's schema).
const NOT_GRANTED: [u16; 2] = [1142, 1146];

/// Notes `links` in the consumer's transaction. Without the grant or the table, the batch is
/// stored all the same and the links are only logged: dropping the batch would lose events.
pub(super) async fn note(
    tx: &mut Transaction<'_>,
    links: &[LateLink<'_>],
    erased_ids: &impl SubjectHashes,
) -> Result<u64, StoreError> {
    if links.is_empty() {
        return Ok(0);
    }
    let hashes = |project: u64, id: &str| erased_ids.hashes(ProjectId(project), id).concat();
    let mut noted = 0;
    for slice in links.chunks(IDS_PER_STATEMENT) {
        let mut params = Vec::with_capacity(slice.len() * 4);
        for link in slice {
            params.extend([
                Value::from(link.project),
                Value::from(link.linked_id),
                Value::from(hashes(link.project, link.user_id)),
                Value::from(hashes(link.project, link.linked_id)),
            ]);
        }
        let columns = ["project_id", "late_id", "anchor_hashes", "late_hashes"];
        // IGNORE: the first link of an id wins, and a redelivered batch notes nothing new.
        let sql = multi_row_insert("erasure_late_links", &columns, slice.len(), "").replacen(
            "INSERT INTO",
            "INSERT IGNORE INTO",
            1,
        );
        with_timeout(tx.query_drop("SAVEPOINT late_links")).await?;
        match tx.exec_drop(sql, params).await {
            Ok(()) => noted += tx.affected_rows(),
            Err(mysql_async::Error::Server(err)) if NOT_GRANTED.contains(&err.code) => {
                with_timeout(tx.query_drop("ROLLBACK TO SAVEPOINT late_links")).await?;
                tracing::error!(error = %err.message, links = slice.len(),
                    "links to erased users not noted: apply infra/db/grants.sql and migrate");
                MetricLine::new("consumer").metric("LateLinksNotNoted", slice.len() as f64, Unit::Count, &[]).emit();
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(noted)
}

/// A noted link as cleanup reads it.
struct Noted {
    id: u64,
    late_id: String,
    anchor_hashes: Vec<u8>,
    late_hashes: Vec<u8>,
}

impl Store {
    /// One chunk: up to `LINKS_PER_CHUNK` noted links of the project noted first, each added
    /// to its user's erasure or left out, then forgotten. The resume point counts the links
    /// looked at earlier in this run. Done when none is left, or after `LATE_LINKS_PER_RUN`.
    pub async fn adopt_late_links(tx: &mut JobTx<'_>, resume_after: Option<&str>) -> Result<ChunkResult, StoreError> {
        adopt_chunk(&mut tx.0, resume_after).await
    }
}

async fn adopt_chunk(tx: &mut Transaction<'_>, resume_after: Option<&str>) -> Result<ChunkResult, StoreError> {
    let done_before: u64 = resume_after.and_then(|text| text.parse().ok()).unwrap_or(0);
    let finished = |rows| ChunkResult { rows, resume_after: Some(done_before.to_string()), done: true };
    if done_before >= LATE_LINKS_PER_RUN {
        return Ok(finished(0));
    }
    let first: Option<u64> =
        with_timeout(tx.query_first("SELECT project_id FROM erasure_late_links ORDER BY id LIMIT 1")).await?;
    let Some(project) = first else { return Ok(finished(0)) };
    // Exclusive against the consumer's share lock, as an erasure request takes it: a batch
    // either committed before (its rows are erased with the id) or sees the id suppressed.
    let _: Option<u64> =
        with_timeout(tx.exec_first("SELECT id FROM projects /* with deleted */ WHERE id = ? FOR UPDATE", (project,)))
            .await?;
    let noted: Vec<Noted> = with_timeout(tx.exec_map(
        "SELECT id, late_id, anchor_hashes, late_hashes FROM erasure_late_links WHERE project_id = ? ORDER BY id LIMIT ?",
        (project, LINKS_PER_CHUNK as u64),
        |(id, late_id, anchor_hashes, late_hashes)| Noted { id, late_id, anchor_hashes, late_hashes },
    ))
    .await?;
    let mut adopted = 0;
    for link in &noted {
        if let Some(erasure) = erasure_to_join(tx, project, link).await? {
            adopt(tx, project, erasure, link).await?;
            adopted += 1;
        }
    }
    if adopted > 0 {
        tracing::info!(project, adopted, "ids linked after their user's erasure added to it");
    }
    let ids: Vec<Value> = noted.iter().map(|link| Value::from(link.id)).collect();
    let sql = format!("DELETE FROM erasure_late_links WHERE id IN ({})", placeholders(ids.len()));
    with_timeout(tx.exec_drop(sql, ids)).await?;
    let rows = noted.len() as u64;
    Ok(ChunkResult { rows, resume_after: Some((done_before + rows).to_string()), done: false })
}

/// The erasure `link`'s id joins, if the link rules make the id its user's.
async fn erasure_to_join(tx: &mut Transaction<'_>, project: u64, link: &Noted) -> Result<Option<u64>, StoreError> {
    let anchors: Vec<Value> = link.anchor_hashes.chunks_exact(32).map(|hash| Value::from(hash.to_vec())).collect();
    if anchors.is_empty() {
        return Ok(None);
    }
    // The latest erasure requested for the user id itself.
    let sql = format!(
        "SELECT id, subjects FROM erasures WHERE project_id = ? AND subject_hash IN ({}) ORDER BY id DESC LIMIT 1",
        placeholders(anchors.len())
    );
    let params: Vec<Value> = std::iter::once(Value::from(project)).chain(anchors).collect();
    let Some((erasure, subjects)): Option<(u64, u64)> = with_timeout(tx.exec_first(sql, params)).await? else {
        return Ok(None);
    };
    if subjects > MAX_LINKS_PER_USER {
        tracing::warn!(erasure, "an erased user's ids are at the link cap: a late link left out");
        return Ok(None);
    }
    let late: Vec<Value> = link.late_hashes.chunks_exact(32).map(|hash| Value::from(hash.to_vec())).collect();
    if !late.is_empty() {
        let sql = format!(
            "SELECT COUNT(*) FROM suppressed_subjects WHERE project_id = ? AND subject_hash IN ({})",
            placeholders(late.len())
        );
        let params: Vec<Value> = std::iter::once(Value::from(project)).chain(late).collect();
        let suppressed: Option<u64> = with_timeout(tx.exec_first(sql, params)).await?;
        if suppressed.unwrap_or_default() > 0 {
            return Ok(None); // erased already
        }
    }
    let id = link.late_id.as_str();
    let (profile, linked, holds): (bool, bool, bool) = with_timeout(tx.exec_first(
        "SELECT EXISTS (SELECT 1 FROM users /* with deleted */ WHERE project_id = ? AND user_id = ?),
                EXISTS (SELECT 1 FROM aliases WHERE project_id = ? AND alias = ?),
                EXISTS (SELECT 1 FROM events /* with deleted */ WHERE project_id = ? AND user_id = ?)
                OR EXISTS (SELECT 1 FROM events /* with deleted */
                           WHERE project_id = ? AND anonymous_id = ? AND user_id IS NULL)",
        (project, id, project, id, project, id, project, id),
    ))
    .await?
    .unwrap_or((true, true, false));
    // A known user id is its own subject; an id linked to someone (the erased user's links
    // are gone) is theirs; an id holding nothing needs no erasure.
    Ok((!profile && !linked && holds).then_some(erasure))
}

/// Adds `link`'s id to `erasure` and suppresses it at once; the erasure is worked again by
/// the erasures step (its pass over rejected events too).
async fn adopt(tx: &mut Transaction<'_>, project: u64, erasure: u64, link: &Noted) -> Result<(), StoreError> {
    super::erasure::insert_subjects(tx, erasure, std::slice::from_ref(&link.late_id)).await?;
    with_timeout(tx.exec_drop(
        "UPDATE erasures SET state = 'pending', subjects = subjects + 1, completed_at = NULL,
                rejected_scan_done = 0, rejected_scanned_to = 0
         WHERE id = ?",
        (erasure,),
    ))
    .await?;
    let hashes: Vec<&[u8]> = link.late_hashes.chunks_exact(32).collect();
    if !hashes.is_empty() {
        let params: Vec<Value> =
            hashes.iter().flat_map(|hash| [Value::from(project), Value::from(hash.to_vec())]).collect();
        let sql = multi_row_insert("suppressed_subjects", &["project_id", "subject_hash"], hashes.len(), "").replacen(
            "INSERT INTO",
            "INSERT IGNORE INTO",
            1,
        );
        with_timeout(tx.exec_drop(sql, params)).await?;
    }
    Ok(())
}
