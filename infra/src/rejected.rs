//! `evtrack rejected list|replay`: the quarantine from the command line. A replay sends each
//! rejected event back through ingest as its request sent it (same route, same format, its
//! batch's context and integrations, and the time its first request gave it), so that a fix —
//! a limit raised, a bug fixed — applies to it; what is stored is a normal event
//! (a duplicate messageId stays a no-op), what is still refused is quarantined again. A
//! replayed event leaves the quarantine.

use crate::toolbox::open_store;
use anyhow::Context;
use chrono::{DateTime, Utc};
use evtrack::Config;
use evtrack::event::quarantine::resolve_time_for_replay;
use evtrack::event::wire::{BatchFields, Shape};
use evtrack::store::{RejectedEvent, RejectedFilter};
use serde_json::{Value, json};
use uuid::Uuid;

/// Rejected events per database page.
const PAGE: usize = 200;
/// Bytes of events per replayed request: below ingest's 500 KB request limit.
const REQUEST_BYTES: usize = 400_000;

pub async fn list(
    config: &Config,
    project: Uuid,
    filter: RejectedFilter,
    limit: usize,
    json: bool,
) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let project_id = store.project_id(project).await?.with_context(|| format!("no project {project}"))?;
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
    /// Left where they are: not JSON, cut to the size limit, or refused by the consumer
    /// (no request format to send them as).
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
    let store = open_store(config).await?;
    let project_id = store.project_id(project).await?.with_context(|| format!("no project {project}"))?;
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build()?;
    let target = Target { client, url: ingest_url.trim_end_matches('/').to_string(), key: write_key.to_string() };
    let mut outcome = Replayed::default();
    let mut before = None;
    loop {
        let page = store.rejected_events(project_id, &filter, before, PAGE).await?;
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        let sendable: Vec<Replayable> =
            page.iter().filter_map(|event| replayable(event, config.limits.future_tolerance)).collect();
        outcome.skipped += (page.len() - sendable.len()) as u64;
        for request in requests(sendable) {
            let again = target.send(&request).await?;
            outcome.accepted += request.ids.len() as u64 - again;
            outcome.rejected_again += again;
            // Sent: it is an event now, or a new rejected event.
            store.delete_rejected_events(project_id, &request.ids).await?;
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
    /// Sends one request; returns how many of its events ingest quarantined again.
    async fn send(&self, request: &Request) -> anyhow::Result<u64> {
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
            200 => Ok(answer["rejected"]["count"].as_u64().unwrap_or(0)),
            // A single-event route's one event, refused again: quarantined again by ingest.
            400 | 413 if matches!(request.shape, Shape::SegmentSingle(_)) => Ok(1),
            _ => anyhow::bail!("ingest answered {status} to a replay: {answer}; nothing of that request was removed"),
        }
    }
}

/// `--since` and `--until` as a filter.
pub fn filter(reason: Option<String>, since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> RejectedFilter {
    RejectedFilter { code: reason, from: since, to: until }
}
