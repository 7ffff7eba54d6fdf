//! Links that arrive after their user's erasure.
//!
//! A phone that was offline when its user logged in sends, once back, its anonymous events and
//! the identify linking its device id to the user. If the user was erased meanwhile, the
//! consumer drops the identify (its user id is suppressed), so the erasure never learns of the
//! device id, and the anonymous events it sent stay. The consumer notes such links
//! (`erasure_late_links`, the user id as keyed hashes only); cleanup adds the device id to the
//! user's erasure where the link rules make it the user's (`store::links`: no profile of its
//! own, not linked to someone else) and it holds anonymous events, which may still be queued:
//! a link whose id holds none yet is looked at again by later runs while suppression lasts.
//!
//! What a sender holding the write key can do with it is bounded: only identify's anonymous
//! id is taken (not alias's previousId, which may name someone's user id), only an erasure's
//! own user id anchors a link (not the ids reached through links, nor ids added this way), an
//! erased user gathers at most `MAX_LINKS_PER_USER` noted links and ids, and made-up ids cost
//! a few lookups each and change nothing.

use super::events::LateLink;
use super::links::MAX_LINKS_PER_USER;
use super::{ChunkResult, JobTx, Store, StoreError, placeholders, with_timeout};
use crate::config::SUPPRESSION_DAYS;
use crate::ids::ProjectId;
use crate::model::SubjectHashes;
use crate::telemetry::{MetricLine, Unit};
use mysql_async::prelude::Queryable;
use mysql_async::{Transaction, Value};
use std::collections::HashMap;

/// Noted links one cleanup chunk looks at.
const LINKS_PER_CHUNK: u64 = 50;
/// And one run: past it, the rest waits for the next run instead of holding up the erasures
/// and the other steps.
pub const LATE_LINKS_PER_RUN: u64 = 10_000;
/// An id's events that the check for its anonymous ones reads at most (the index of
/// anonymous ids does not hold the user id): a device's anonymous events are its first.
const EVENTS_CHECKED: u64 = 10_000;

/// MySQL's "command denied" (a database user without the grant: `infra/db/grants.sql` not
/// applied since the upgrade) and "no such table" (migrations not applied yet).
const NOT_GRANTED: [u16; 2] = [1142, 1146];

/// Notes `links` in the consumer's transaction, up to `MAX_LINKS_PER_USER` per erased user
/// not looked at yet (cleanup looks at them every hour; those found waiting for their events
/// have a cap of their own, so that made-up ids left waiting cannot keep a real link out).
/// Without the grant or the table, the batch is stored all the same and the links are only
/// logged: failing the batch would hold back its events.
pub(super) async fn note(
    tx: &mut Transaction<'_>,
    links: &[LateLink<'_>],
    erased_ids: &impl SubjectHashes,
) -> Result<u64, StoreError> {
    let mut noted = 0;
    for link in links {
        let project = ProjectId(link.project);
        let anchors = erased_ids.hashes(project, link.user_id);
        let Some(anchor) = anchors.first() else { continue };
        let params: Vec<Value> = vec![
            link.project.into(),
            link.linked_id.into(),
            anchor.to_vec().into(),
            anchors.concat().into(),
            erased_ids.hashes(project, link.linked_id).concat().into(),
            link.project.into(),
            anchor.to_vec().into(),
            MAX_LINKS_PER_USER.into(),
        ];
        // IGNORE: the first link of an id wins, and a redelivered batch notes nothing new.
        let sql = "INSERT IGNORE INTO erasure_late_links (project_id, late_id, anchor_hash, anchor_hashes, late_hashes)
                   SELECT ?, ?, ?, ?, ? FROM DUAL
                   WHERE (SELECT COUNT(*) FROM erasure_late_links
                          WHERE project_id = ? AND anchor_hash = ? AND checked_at IS NULL) < ?";
        with_timeout(tx.query_drop("SAVEPOINT late_links")).await?;
        match tx.exec_drop(sql, params).await {
            Ok(()) => noted += tx.affected_rows(),
            Err(mysql_async::Error::Server(err)) if NOT_GRANTED.contains(&err.code) => {
                with_timeout(tx.query_drop("ROLLBACK TO SAVEPOINT late_links")).await?;
                tracing::error!(error = %err.message, "a link to an erased user not noted: apply infra/db/grants.sql");
                MetricLine::new("consumer").metric("LateLinksNotNoted", 1.0, Unit::Count, &[]).emit();
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(noted)
}

/// A noted link as cleanup reads it.
struct Noted {
    id: u64,
    project: u64,
    late_id: String,
    anchor_hash: Vec<u8>,
    anchor_hashes: Vec<u8>,
    late_hashes: Vec<u8>,
}

/// What cleanup makes of a noted link.
enum Verdict {
    /// The id joins this erasure.
    Join(u64),
    /// Not the erased user's id, or erased already: forgotten.
    Drop,
    /// Holds no anonymous events yet: looked at again by a later run.
    Wait,
}

impl Store {
    /// One chunk: the first of a run drops links noted more than `SUPPRESSION_DAYS` ago; each
    /// other looks at up to `LINKS_PER_CHUNK` links of one project, those looked at longest ago
    /// first: each id joins its user's erasure, or is forgotten, or waits for its events. The
    /// resume point counts the links looked at earlier in this run. Done when none is left to
    /// look at in this run, or after `LATE_LINKS_PER_RUN`.
    pub async fn adopt_late_links(tx: &mut JobTx<'_>, resume_after: Option<&str>) -> Result<ChunkResult, StoreError> {
        let tx = &mut tx.0;
        let Some(looked_at) = resume_after.and_then(|text| text.parse::<u64>().ok()) else {
            // Past them, the consumer no longer drops the user's events either.
            with_timeout(tx.exec_drop(
                "DELETE FROM erasure_late_links WHERE created_at < NOW(3) - INTERVAL ? DAY LIMIT 10000",
                (SUPPRESSION_DAYS,),
            ))
            .await?;
            return Ok(ChunkResult { rows: tx.affected_rows(), resume_after: Some("0".into()), done: false });
        };
        if looked_at >= LATE_LINKS_PER_RUN {
            return Ok(ChunkResult { rows: 0, resume_after: Some(looked_at.to_string()), done: true });
        }
        let looked = look_at_some(tx).await?;
        Ok(ChunkResult { rows: looked, resume_after: Some((looked_at + looked).to_string()), done: looked == 0 })
    }
}

/// The links to look at: not those looked at within ten minutes (not twice in one run), nor
/// those noted more than `SUPPRESSION_DAYS` ago (left to the purge).
fn due() -> String {
    format!(
        "(checked_at IS NULL OR checked_at < NOW(3) - INTERVAL 10 MINUTE)
         AND created_at >= NOW(3) - INTERVAL {SUPPRESSION_DAYS} DAY"
    )
}

/// Looks at the due links of one project; how many.
async fn look_at_some(tx: &mut Transaction<'_>) -> Result<u64, StoreError> {
    let due = due();
    let first: Option<u64> =
        with_timeout(tx.query_first(format!(
            "SELECT project_id FROM erasure_late_links WHERE {due} ORDER BY checked_at, id LIMIT 1"
        )))
        .await?;
    let Some(project) = first else { return Ok(0) };
    let noted: Vec<Noted> = with_timeout(tx.exec_map(
        format!(
            "SELECT id, late_id, anchor_hash, anchor_hashes, late_hashes FROM erasure_late_links
             WHERE project_id = ? AND {due} ORDER BY checked_at, id LIMIT ?"
        ),
        (project, LINKS_PER_CHUNK),
        |(id, late_id, anchor_hash, anchor_hashes, late_hashes)| Noted {
            id,
            project,
            late_id,
            anchor_hash,
            anchor_hashes,
            late_hashes,
        },
    ))
    .await?;
    // The checks first, without locks: they may read many rows.
    let mut verdicts = Vec::with_capacity(noted.len());
    for link in &noted {
        verdicts.push(verdict_or_wait(tx, link).await?);
    }
    cap_waiting(tx, &noted, &mut verdicts).await?;
    let mut joined = 0;
    if verdicts.iter().any(|verdict| matches!(verdict, Verdict::Join(_))) {
        // Exclusive against the consumer's share lock, as an erasure request takes it (one
        // project a chunk, as there): a batch either committed before (its rows are erased
        // with the id) or sees the id suppressed.
        let _: Option<u64> = with_timeout(
            tx.exec_first("SELECT id FROM projects /* with deleted */ WHERE id = ? FOR UPDATE", (project,)),
        )
        .await?;
        for (link, verdict) in noted.iter().zip(verdicts.iter_mut()) {
            let Verdict::Join(erasure) = *verdict else { continue };
            // Settled by another run meanwhile (a retried slot beside the next one); known,
            // or linked to someone, since the check: its own, or theirs.
            let still_noted: Option<u64> =
                with_timeout(tx.exec_first("SELECT id FROM erasure_late_links WHERE id = ? FOR UPDATE", (link.id,)))
                    .await?;
            if still_noted.is_none() || claimed_elsewhere(tx, link).await? || !join(tx, erasure, link).await? {
                *verdict = Verdict::Drop;
            } else {
                joined += 1;
            }
        }
    }
    let (mut forget, mut wait) = (Vec::new(), Vec::new());
    for (link, verdict) in noted.iter().zip(&verdicts) {
        match verdict {
            Verdict::Wait => wait.push(Value::from(link.id)),
            _ => forget.push(Value::from(link.id)),
        }
    }
    if !forget.is_empty() {
        let sql = format!("DELETE FROM erasure_late_links WHERE id IN ({})", placeholders(forget.len()));
        with_timeout(tx.exec_drop(sql, forget)).await?;
    }
    if !wait.is_empty() {
        let sql =
            format!("UPDATE erasure_late_links SET checked_at = NOW(3) WHERE id IN ({})", placeholders(wait.len()));
        with_timeout(tx.exec_drop(sql, wait)).await?;
    }
    if joined > 0 {
        tracing::info!(project, ids = joined, "ids linked to users after their erasure joined it");
    }
    Ok(noted.len() as u64)
}

/// `verdict`, with a link whose checks the server refuses left waiting for a later run
/// instead of failing the chunk, which would bring it back first every run.
async fn verdict_or_wait(tx: &mut Transaction<'_>, link: &Noted) -> Result<Verdict, StoreError> {
    with_timeout(tx.query_drop("SAVEPOINT late_link")).await?;
    match verdict(tx, link).await {
        Ok(verdict) => Ok(verdict),
        Err(err) => {
            // A transaction that is gone (a lost connection, a deadlock) has no savepoint
            // left, and a statement not answered in time leaves nothing to send on.
            if matches!(err, StoreError::NoAnswer)
                || with_timeout(tx.query_drop("ROLLBACK TO SAVEPOINT late_link")).await.is_err()
            {
                return Err(err);
            }
            tracing::warn!(error = %err, link = link.id, "a late link's checks failed; looked at again later");
            Ok(Verdict::Wait)
        }
    }
}

/// Whether `link`'s id is the erased user's, by the link rules.
async fn verdict(tx: &mut Transaction<'_>, link: &Noted) -> Result<Verdict, StoreError> {
    let in_list = |hashes: &[u8]| -> Vec<Value> { hashes.chunks_exact(32).map(|hash| hash.to_vec().into()).collect() };
    let anchors = in_list(&link.anchor_hashes);
    let late = in_list(&link.late_hashes);
    if anchors.is_empty() || late.is_empty() {
        return Ok(Verdict::Drop);
    }
    // The latest erasure of the user id itself (not of an id reached through its links).
    let sql = format!(
        "SELECT id, subjects FROM erasures WHERE project_id = ? AND subject_hash IN ({}) ORDER BY id DESC LIMIT 1",
        placeholders(anchors.len())
    );
    let params: Vec<Value> = std::iter::once(Value::from(link.project)).chain(anchors).collect();
    let Some((erasure, subjects)): Option<(u64, u64)> = with_timeout(tx.exec_first(sql, params)).await? else {
        return Ok(Verdict::Drop);
    };
    if subjects == 0 {
        // Made by a release before erasure ids were rows: the erasures step lists its ids first.
        return Ok(Verdict::Wait);
    }
    if subjects > MAX_LINKS_PER_USER {
        tracing::warn!(erasure, "an erased user's ids are at the link cap: a late link left out");
        return Ok(Verdict::Drop); // (`join` checks again)
    }
    let sql = format!(
        "SELECT COUNT(*) FROM suppressed_subjects WHERE project_id = ? AND subject_hash IN ({})",
        placeholders(late.len())
    );
    let params: Vec<Value> = std::iter::once(Value::from(link.project)).chain(late).collect();
    let suppressed: Option<u64> = with_timeout(tx.exec_first(sql, params)).await?;
    if suppressed.unwrap_or_default() > 0 {
        return Ok(Verdict::Drop); // erased already
    }
    if claimed_elsewhere(tx, link).await? {
        return Ok(Verdict::Drop);
    }
    let anonymous_events: Option<u8> = with_timeout(tx.exec_first(
        "SELECT 1 FROM (SELECT user_id FROM events /* with deleted */
                        WHERE project_id = ? AND anonymous_id = ? LIMIT ?) first_events
         WHERE user_id IS NULL LIMIT 1",
        (link.project, link.late_id.as_str(), EVENTS_CHECKED),
    ))
    .await?;
    Ok(if anonymous_events.is_some() { Verdict::Join(erasure) } else { Verdict::Wait })
}

/// Waiting links have a cap of their own per erased user: past it, those of `noted` that
/// would wait are dropped.
async fn cap_waiting(tx: &mut Transaction<'_>, noted: &[Noted], verdicts: &mut [Verdict]) -> Result<(), StoreError> {
    let ids: Vec<Value> = noted.iter().map(|link| Value::from(link.id)).collect();
    let mut room: HashMap<&[u8], u64> = HashMap::new();
    for (link, verdict) in noted.iter().zip(verdicts.iter_mut()) {
        if !matches!(verdict, Verdict::Wait) {
            continue;
        }
        let anchor = link.anchor_hash.as_slice();
        if !room.contains_key(anchor) {
            // Those waiting besides the links looked at now.
            let sql = format!(
                "SELECT COUNT(*) FROM erasure_late_links
                 WHERE project_id = ? AND anchor_hash = ? AND checked_at IS NOT NULL AND id NOT IN ({})",
                placeholders(ids.len())
            );
            let params: Vec<Value> =
                [Value::from(link.project), Value::from(anchor)].into_iter().chain(ids.clone()).collect();
            let waiting: Option<u64> = with_timeout(tx.exec_first(sql, params)).await?;
            room.insert(anchor, MAX_LINKS_PER_USER.saturating_sub(waiting.unwrap_or_default()));
        }
        let left = room.entry(anchor).or_default();
        if *left == 0 {
            *verdict = Verdict::Drop;
        } else {
            *left -= 1;
        }
    }
    Ok(())
}

/// Whether the id is someone's by the link rules: a known user id (a profile) is its own
/// subject, and an id linked to a user is that user's (the erased user's links are gone, and
/// an id belongs to the first user who linked it).
async fn claimed_elsewhere(tx: &mut Transaction<'_>, link: &Noted) -> Result<bool, StoreError> {
    let id = link.late_id.as_str();
    let claimed: Option<bool> = with_timeout(tx.exec_first(
        "SELECT EXISTS (SELECT 1 FROM users /* with deleted */ WHERE project_id = ? AND user_id = ?)
             OR EXISTS (SELECT 1 FROM aliases WHERE project_id = ? AND alias = ?)",
        (link.project, id, link.project, id),
    ))
    .await?;
    Ok(claimed.unwrap_or(true))
}

/// Adds `link`'s id to `erasure`, within the erasure's cap of ids, and suppresses it at once;
/// the erasure is worked again by the erasures step (its pass over rejected events too).
/// False when the erasure is at its cap.
async fn join(tx: &mut Transaction<'_>, erasure: u64, link: &Noted) -> Result<bool, StoreError> {
    with_timeout(tx.exec_drop(
        "INSERT IGNORE INTO erasure_subjects (erasure_id, subject) VALUES (?, ?)",
        (erasure, link.late_id.as_str()),
    ))
    .await?;
    // Already one of its ids still to erase: nothing to add, or to undo.
    let added = tx.affected_rows() > 0;
    // The user's id and at most `MAX_LINKS_PER_USER` others.
    with_timeout(tx.exec_drop(
        "UPDATE erasures SET state = 'pending', subjects = subjects + ?, completed_at = NULL,
                rejected_scan_done = 0, rejected_scanned_to = 0
         WHERE id = ? AND subjects + ? <= ?",
        (u64::from(added), erasure, u64::from(added), MAX_LINKS_PER_USER + 1),
    ))
    .await?;
    if added && tx.affected_rows() == 0 {
        with_timeout(tx.exec_drop(
            "DELETE FROM erasure_subjects WHERE erasure_id = ? AND subject = ?",
            (erasure, link.late_id.as_str()),
        ))
        .await?;
        tracing::warn!(erasure, "an erased user's ids are at the link cap: a late link left out");
        return Ok(false);
    }
    let hashes: Vec<&[u8]> = link.late_hashes.chunks_exact(32).collect();
    let params: Vec<Value> =
        hashes.iter().flat_map(|hash| [Value::from(link.project), Value::from(hash.to_vec())]).collect();
    let sql = super::multi_row_insert("suppressed_subjects", &["project_id", "subject_hash"], hashes.len(), "")
        .replacen("INSERT INTO", "INSERT IGNORE INTO", 1);
    with_timeout(tx.exec_drop(sql, params)).await?;
    Ok(true)
}
