//! `evtrack rejected list|replay|reopen`: the quarantine from the command line. A replay sends
//! each rejected event back through ingest as its request sent it (same route, same format, its
//! batch's context and integrations, and the time its first request gave it), so that a fix —
//! a limit raised, a bug fixed — applies to it; what is stored is a normal event
//! (a duplicate messageId stays a no-op), what is still refused is quarantined again. A
//! replayed event leaves the quarantine. A reopen gives queue messages a consumer refused whole
//! for their seal (a release that did not know it, after a rollback) to this release's
//! consumer.

use crate::toolbox::open_store;
use anyhow::Context;
use chrono::{DateTime, Utc};
use evtrack::Config;
use evtrack::event::quarantine::resolve_time_for_replay;
use evtrack::event::wire::{BatchFields, Shape};
use evtrack::keys::{KeyHashers, KeyVerifier, Scope};
use evtrack::queue::{Envelope, EnvelopeSeal};
use evtrack::store::{RejectedAfter, RejectedEvent, RejectedFilter, Store};
use evtrack_consumer::{Consumer, QueueMessage};
use serde_json::{Value, json};
use uuid::Uuid;

/// Rejected events per database page.
const PAGE: usize = 200;
/// Bytes of events per replayed request: below ingest's 500 KB request limit.
const REQUEST_BYTES: usize = 400_000;

/// Lists a project's rejected events, or (`project` `None`) the queue messages refused whole.
pub async fn list(
    config: &Config,
    project: Option<Uuid>,
    filter: RejectedFilter,
    limit: usize,
    json: bool,
) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let project_id = match project {
        Some(project) => Some(store.project_id(project).await?.with_context(|| format!("no project {project}"))?),
        None => None,
    };
    let events = store.rejected_events(project_id, &filter, None, limit).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&events)?);
    } else {
        for event in &events {
            let raw: String = event.raw.chars().take(80).collect();
            println!("{}  {}  {:<18} {}  {raw}", event.id, event.recorded_at.to_rfc3339(), event.code, event.reason);
        }
        println!("{} rejected event(s)", events.len());
    }
    store.close().await;
    Ok(())
}

/// What a replay came to.
#[derive(Debug, Default, serde::Serialize)]
pub struct Replayed {
    /// Sent back to ingest and accepted there (stored, or a no-op duplicate).
    pub accepted: u64,
    /// Sent back and quarantined again (still refused: a new rejected event each).
    pub rejected_again: u64,
    /// Left where they are: not JSON, cut to the size limit, refused by the consumer (no
    /// request format to send them as), or in a request ingest refused whole (a batch's
    /// fields over this release's bound).
    pub skipped: u64,
}

pub async fn replay(
    config: &Config,
    project: Uuid,
    filter: RejectedFilter,
    ingest_url: &str,
    write_key: &str,
    json: bool,
) -> anyhow::Result<()> {
    crate::commands::refuse_development_secrets(config, &[evtrack::config::Required::KeyPepper])?;
    let store = open_store(config).await?;
    let project_id = store.project_id(project).await?.with_context(|| format!("no project {project}"))?;
    ensure_write_key_of(&store, config, write_key, project).await?;
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build()?;
    let target = Target { client, url: ingest_url.trim_end_matches('/').to_string(), key: write_key.to_string() };
    let mut outcome = Replayed::default();
    let mut after = None;
    loop {
        let page = store.rejected_events(Some(project_id), &filter, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        // Below the page's last row, which the replay may remove.
        after = Some(RejectedAfter::Row(last.position));
        let sendable: Vec<Replayable> =
            page.iter().filter_map(|event| replayable(event, config.limits.future_tolerance)).collect();
        outcome.skipped += (page.len() - sendable.len()) as u64;
        for request in requests(sendable) {
            let Some(again) = target.send(&request).await? else {
                // Refused whole (its batch's fields over this release's bound, say): left.
                outcome.skipped += request.ids.len() as u64;
                continue;
            };
            outcome.accepted += request.ids.len() as u64 - again;
            outcome.rejected_again += again;
            // Sent: it is an event now, or a new rejected event.
            store.delete_rejected_events(Some(project_id), &request.ids).await?;
        }
    }
    if json {
        println!("{}", serde_json::to_string(&outcome)?);
    } else {
        println!(
            "replayed: {} accepted, {} rejected again; {} left in quarantine (not replayable)",
            outcome.accepted, outcome.rejected_again, outcome.skipped
        );
    }
    store.close().await;
    Ok(())
}

/// Refuses a replay whose key would store the events anywhere but in their project: ingest
/// takes the project from the key, and the replay then deletes them from the quarantine.
async fn ensure_write_key_of(store: &Store, config: &Config, key: &str, project: Uuid) -> anyhow::Result<()> {
    let verifier = KeyVerifier::uncached(store.clone(), KeyHashers::from_config(config));
    let access = verifier.verify(key, Scope::Write).await.map_err(|refused| {
        anyhow::anyhow!("the key is not a write key in force ({refused}); EVTRACK_KEY_PEPPER must be the functions'")
    })?;
    anyhow::ensure!(
        access.project_uid == Some(project),
        "the write key is of another project: a replay would store project {project}'s events there"
    );
    Ok(())
}

/// A rejected event that can be sent again as it came.
struct Replayable {
    id: Uuid,
    /// Its size as sent.
    size: usize,
    shape: Shape,
    /// Its JSON, with its time resolved against its first receipt.
    event: Value,
    /// The context and integrations of its batch (its time is in `event` now).
    batch: BatchFields,
}

/// The event's request format, JSON and batch fields, if it can be sent again as it came.
fn replayable(rejected: &RejectedEvent, future_tolerance: chrono::Duration) -> Option<Replayable> {
    let shape = Shape::parse_source(rejected.source.as_deref()?)?;
    let Value::Object(mut event) = serde_json::from_str(&rejected.raw).ok()? else { return None };
    if let Some(received_at) = rejected.received_at {
        resolve_time_for_replay(shape, &mut event, &rejected.batch, received_at, future_tolerance);
    }
    let batch = BatchFields { sent_at: None, ..rejected.batch.clone() };
    Some(Replayable { id: rejected.id, size: rejected.raw.len(), shape, event: Value::Object(event), batch })
}

/// One request to ingest: events of one format and batch, and the rejected events they came from.
struct Request {
    shape: Shape,
    batch: BatchFields,
    events: Vec<Value>,
    ids: Vec<Uuid>,
}

/// Batches per format and batch fields (single-event routes: one request per event), each
/// under the size limit.
fn requests(events: Vec<Replayable>) -> Vec<Request> {
    let mut requests: Vec<Request> = Vec::new();
    let mut bytes = 0;
    for Replayable { id, size, shape, event, batch } in events {
        let joins = requests.last().is_some_and(|last| {
            last.shape == shape
                && last.batch == batch
                && !matches!(shape, Shape::SegmentSingle(_))
                && bytes + size <= REQUEST_BYTES
        });
        if !joins {
            requests.push(Request { shape, batch, events: Vec::new(), ids: Vec::new() });
            bytes = 0;
        }
        let request = requests.last_mut().expect("pushed");
        request.events.push(event);
        request.ids.push(id);
        bytes += size;
    }
    requests
}

struct Target {
    client: reqwest::Client,
    url: String,
    key: String,
}

impl Target {
    /// Sends one request; returns how many of its events ingest quarantined again, or `None`
    /// if it refused the request whole as malformed (`400` to a batch: nothing was queued).
    async fn send(&self, request: &Request) -> anyhow::Result<Option<u64>> {
        let (path, mut body) = match request.shape {
            Shape::SegmentBatch => ("/v1/batch".to_string(), json!({"batch": request.events})),
            Shape::SegmentSingle(kind) => (format!("/v1/{}", kind.as_str()), request.events[0].clone()),
            Shape::PostHog => ("/batch/".to_string(), json!({"api_key": self.key, "batch": request.events})),
        };
        if let (Some(body), Value::Object(batch)) = (body.as_object_mut(), json!(request.batch)) {
            body.extend(batch);
        }
        let response = self
            .client
            .post(format!("{}{path}", self.url))
            .basic_auth(&self.key, Some(""))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("cannot reach ingest at {}", self.url))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or_default();
        match status.as_u16() {
            200 => Ok(Some(answer["rejected"]["count"].as_u64().unwrap_or(0))),
            // A single-event route's one event, refused again: quarantined again by ingest (those
            // are its only codes for that; any other 4xx kept nothing).
            400 | 413
                if matches!(request.shape, Shape::SegmentSingle(_))
                    && matches!(answer["code"].as_str(), Some("invalid_event" | "event_too_large")) =>
            {
                Ok(Some(1))
            }
            400 | 413 => {
                tracing::warn!(%answer, events = request.ids.len(), "ingest refused a replayed request whole; left in quarantine");
                Ok(None)
            }
            _ => anyhow::bail!("ingest answered {status} to a replay: {answer}; nothing of that request was removed"),
        }
    }
}

/// The codes of queue messages refused for their seal or version: what a release that did
/// not know this one's envelope made of its messages.
const REOPENABLE: [&str; 2] = ["forged_envelope", "unsupported_envelope"];
/// Messages per database page (each may be up to a queue message's 256 KiB).
const REOPEN_PAGE: usize = 20;

/// What a reopen came to.
#[derive(Debug, Default, serde::Serialize)]
pub struct Reopened {
    /// Messages this release's seal opened, given to its consumer and gone from the quarantine.
    pub messages: u64,
    /// Their events stored now.
    pub events_stored: u64,
    /// Their events stored already (a client's retry that went through): no-ops.
    pub duplicates: u64,
    /// Their events of erased users, dropped as the consumer drops them.
    pub suppressed: u64,
    /// Kept in the quarantine anew: events the messages carried as quarantined (now under their
    /// project, for `replay`), and messages refused again (older than a queue keeps them, of a
    /// project purged since).
    pub rejected: u64,
    /// Messages this release's seal does not open either: left where they are.
    pub left: u64,
}

/// Gives the queue messages refused whole for their seal (`REOPENABLE`, within `filter`'s
/// times) that this release's seal opens to this release's consumer, as if the queue
/// delivered them now: their events are stored once (duplicates stay no-ops, erased users
/// stay erased), and each leaves the quarantine once its batch is written. The pepper must
/// be the functions' (`EVTRACK_KEY_PEPPER`, …): messages it does not open are left.
pub async fn reopen(config: &Config, filter: RejectedFilter, json: bool) -> anyhow::Result<()> {
    crate::commands::refuse_development_secrets(config, &[evtrack::config::Required::KeyPepper])?;
    let store = open_store(config).await?;
    let seal = EnvelopeSeal::from_config(config);
    let consumer = Consumer::new(store.clone(), config);
    let mut outcome = Reopened::default();
    for code in REOPENABLE {
        let filter = RejectedFilter { code: Some(code.to_string()), ..filter.clone() };
        let mut after = None;
        loop {
            let page = store.rejected_events(None, &filter, after, REOPEN_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(RejectedAfter::Row(last.position));
            let opened: Vec<&RejectedEvent> =
                page.iter().filter(|message| Envelope::open(&message.raw, &seal).is_ok()).collect();
            outcome.left += (page.len() - opened.len()) as u64;
            // A fresh message id each: what is refused again is recorded anew, not taken for
            // the row it replaces (rejected events are unique per message and index).
            let ids: Vec<String> = opened.iter().map(|message| format!("reopened:{}", message.id)).collect();
            let messages: Vec<QueueMessage> =
                opened.iter().zip(&ids).map(|(message, id)| QueueMessage { id, body: Some(&message.raw) }).collect();
            if messages.is_empty() {
                continue;
            }
            let report = consumer.process(&messages).await;
            if !report.failed.is_empty() {
                anyhow::bail!("the database did not take a batch (see the log); nothing of it left the quarantine");
            }
            outcome.messages += messages.len() as u64;
            outcome.events_stored += report.events_stored;
            outcome.suppressed += report.suppressed;
            outcome.duplicates += report.events_seen.saturating_sub(report.events_stored + report.suppressed);
            outcome.rejected += report.rejected;
            let reopened: Vec<Uuid> = opened.iter().map(|message| message.id).collect();
            store.delete_rejected_events(None, &reopened).await?;
        }
    }
    if json {
        println!("{}", serde_json::to_string(&outcome)?);
    } else {
        println!(
            "reopened {} message(s): {} event(s) stored, {} duplicate(s), {} of erased users dropped, {} kept in quarantine; {} message(s) left (this pepper's seal does not open them)",
            outcome.messages,
            outcome.events_stored,
            outcome.duplicates,
            outcome.suppressed,
            outcome.rejected,
            outcome.left
        );
    }
    store.close().await;
    Ok(())
}

/// `--since` and `--until` as a filter.
pub fn filter(reason: Option<String>, since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> RejectedFilter {
    RejectedFilter { code: reason, from: since, to: until }
}
