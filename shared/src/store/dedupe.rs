//! The dedupe key's hour for rows a release before migration 0008 stored.
//!
//! Since 0008 an event is unique per (project, `dedupe_hour`, messageId), and the consumer
//! writes the hour. A consumer of an earlier release — still running during a deploy, or
//! back after a rollback — leaves the column at its default, 0, so its rows meet neither a
//! retry stored by this release (another hour) nor, later, their own retries. Cleanup gives
//! such rows their hour; a row whose hour already holds the same event is the event stored
//! twice, and is deleted.

use super::{ChunkResult, IDS_PER_STATEMENT, JobTx, Store, StoreError, placeholders, with_timeout};
use mysql_async::Value;
use mysql_async::prelude::Queryable;

/// The hour the consumer gives a row (`Event::dedupe_hour`), in SQL on `events e`.
const OWN_HOUR: &str = "TIMESTAMPDIFF(HOUR, '1970-01-01 00:00:00', COALESCE(e.original_timestamp, e.timestamp))";

/// Rows at hour 0 that belong to a later hour: an event of 1970's first hour has 0 as its
/// hour, and one before 1970 gets 0 from the consumer too.
fn left_at_zero() -> String {
    format!("e.project_id = ? AND e.dedupe_hour = 0 AND {OWN_HOUR} > 0")
}

impl Store {
    /// Gives up to `limit` rows of one project their dedupe hour, or deletes them where it
    /// is taken by the same event, project by project (the resume point is the last project
    /// finished). A project without such rows costs one probe of the dedupe key, and a run
    /// that finds none is one chunk.
    pub async fn repair_dedupe_hours(
        tx: &mut JobTx<'_>,
        resume_after: Option<&str>,
        limit: u64,
    ) -> Result<ChunkResult, StoreError> {
        let tx = &mut tx.0;
        let mut after: u64 = resume_after.and_then(|text| text.parse().ok()).unwrap_or(0);
        let project = loop {
            let next: Option<u64> = with_timeout(
                tx.exec_first("SELECT id FROM projects /* with deleted */ WHERE id > ? ORDER BY id LIMIT 1", (after,)),
            )
            .await?;
            let Some(project) = next else {
                return Ok(ChunkResult { rows: 0, resume_after: None, done: true });
            };
            let sql = format!("SELECT 1 FROM events e /* with deleted */ WHERE {} LIMIT 1", left_at_zero());
            let any: Option<u8> = with_timeout(tx.exec_first(sql, (project,))).await?;
            if any.is_some() {
                break project;
            }
            after = project;
        };
        // IGNORE: a row whose hour holds its event already stays at 0, for the delete below.
        let sql = format!(
            "UPDATE IGNORE events e SET e.dedupe_hour = {OWN_HOUR} WHERE {} ORDER BY e.id LIMIT ?",
            left_at_zero()
        );
        with_timeout(tx.exec_drop(sql, (project, limit))).await?;
        let given_hour = tx.affected_rows();
        let twins: Vec<u64> = with_timeout(tx.exec(
            format!(
                "SELECT e.id FROM events e /* with deleted */ WHERE {} AND EXISTS (
                   SELECT 1 FROM events t /* with deleted */
                   WHERE t.project_id = e.project_id AND t.dedupe_hour = {OWN_HOUR} AND t.message_id = e.message_id)
                 ORDER BY e.id LIMIT ?",
                left_at_zero()
            ),
            (project, limit.min(IDS_PER_STATEMENT as u64)),
        ))
        .await?;
        let mut deleted = 0;
        if !twins.is_empty() {
            let ids: Vec<Value> = twins.iter().map(|&id| Value::from(id)).collect();
            let condition = format!("e.id IN ({})", placeholders(ids.len()));
            // The rollups counted both copies.
            super::rollups::mark_dirty_where(tx, &condition, ids.clone()).await?;
            let sql = format!("DELETE FROM events WHERE id IN ({})", placeholders(ids.len()));
            with_timeout(tx.exec_drop(sql, ids)).await?;
            deleted = tx.affected_rows();
        }
        let rows = given_hour + deleted;
        // Rows left at 0 that neither fit their hour nor have a twin there (none expected)
        // would be found again: a chunk that changed nothing moves on to the next project.
        let resume = if rows > 0 { after } else { project };
        Ok(ChunkResult { rows, resume_after: Some(resume.to_string()), done: false })
    }
}
