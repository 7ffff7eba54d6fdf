//! evtrack consumer: stores queued events exactly once.
//!
//! SQS delivers at least once and clients retry, so every write is idempotent (events dedupe
//! on project + messageId). A message that can never be stored goes to `rejected_events`
//! with its reason and is not retried; a transient failure (database down) is reported as a
//! batch item failure, so SQS delivers that message again and, after repeated failures,
//! moves it to the dead-letter queue.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Utc};
use evtrack::Config;
use evtrack::event::Event;
use evtrack::ids::ProjectId;
use evtrack::keys::{ErasedIdHasher, KeyUseRecorder};
use evtrack::queue::{Envelope, EnvelopeSeal};
use evtrack::store::{EventRow, Rejection, Store, StoreError};
use evtrack::telemetry::{MetricLine, Unit};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;
use tracing::Instrument;
use uuid::Uuid;

/// SQS keeps a message at most 14 days; a day more for clock skew and redelivery.
const MAX_ENVELOPE_AGE: chrono::Duration = chrono::Duration::days(15);

/// One queue message as the consumer sees it.
pub struct QueueMessage<'a> {
    pub id: &'a str,
    pub body: Option<&'a str>,
}

/// What a batch came to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Messages to deliver again.
    pub failed: Vec<String>,
    pub events_stored: u64,
    pub events_seen: u64,
    pub rejected: u64,
    /// Events of erased users, dropped.
    pub suppressed: u64,
    /// How many rejected items each reason kind counted (`reason_kind`).
    pub rejected_by_reason: HashMap<&'static str, u64>,
    /// The batch transaction's time, when one committed.
    pub transaction: Option<Duration>,
    /// When ingest received the oldest event of the batch.
    pub oldest_received_at: Option<DateTime<Utc>>,
    /// Attempts of the batch transaction rolled back by a lock conflict and tried again (the
    /// store reports each as metric `LockConflicts`).
    pub lock_conflicts: u64,
}

impl Report {
    /// The batch's metrics (CloudWatch EMF). What was stored, duplicate or rejected is known
    /// only when the batch transaction committed; otherwise only the batch size is reported.
    fn emit_metrics(&self, messages: usize) {
        let batch = MetricLine::new("consumer").metric("BatchSize", messages as f64, Unit::Count, &[]);
        let Some(transaction) = self.transaction else {
            batch.emit();
            return;
        };
        let stored_or_dropped = self.events_stored + self.suppressed;
        let mut line = batch
            .metric("EventsStored", self.events_stored as f64, Unit::Count, &[])
            .metric("Duplicates", self.events_seen.saturating_sub(stored_or_dropped) as f64, Unit::Count, &[])
            .metric("TransactionTime", transaction.as_secs_f64() * 1000.0, Unit::Milliseconds, &[]);
        if let Some(oldest) = self.oldest_received_at {
            let lag = (Utc::now() - oldest).num_milliseconds().max(0);
            line = line.metric("Lag", lag as f64, Unit::Milliseconds, &[]);
        }
        line.emit();
        for (reason, count) in &self.rejected_by_reason {
            MetricLine::new("consumer")
                .dimension("Reason", reason)
                .metric("EventsRejected", *count as f64, Unit::Count, &["Reason"])
                .emit();
        }
    }
}

/// A rejection's reason as a metric dimension: its kind, not its text (which names values).
fn reason_kind(reason: &str) -> &'static str {
    const KINDS: [&str; 4] = ["message has no body", "unknown project", "undecodable event", "invalid event"];
    KINDS.into_iter().find(|kind| reason.starts_with(kind)).unwrap_or("unreadable message")
}

pub struct Consumer {
    store: Store,
    /// Hash the ids of events to check them against the erasure suppression list.
    erased_ids: ErasedIdHasher,
    seal: EnvelopeSeal,
    /// Public → private project ids; they never change, so no expiry.
    projects: Mutex<HashMap<Uuid, ProjectId>>,
    /// `last_used_at` of write keys is written from here (ingest never writes the
    /// database), at most once a minute per key.
    key_use: KeyUseRecorder,
}

/// A message whose envelope decoded, with its events that passed validation (all borrowing
/// the message's body).
struct Decoded<'a> {
    id: &'a str,
    project: ProjectId,
    envelope: Envelope<'a>,
    events: Vec<(usize, Event<'a>)>,
}

impl Consumer {
    pub fn new(store: Store, config: &Config) -> Self {
        Self {
            key_use: KeyUseRecorder::new(store.clone()),
            store,
            erased_ids: ErasedIdHasher::from_config(config),
            seal: EnvelopeSeal::from_config(config),
            projects: Mutex::new(HashMap::new()),
        }
    }

    /// The Lambda handler: an SQS batch in, the messages to retry out. Its logs carry the
    /// X-Ray trace headers ingest sent the messages with (`AWSTraceHeader`).
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let mut traces: Vec<&str> = event
            .records
            .iter()
            .filter_map(|record| record.attributes.get("AWSTraceHeader"))
            .map(String::as_str)
            .collect();
        traces.sort_unstable();
        traces.dedup();
        let span = tracing::info_span!("sqs_batch", ingest_traces = %traces.join(" "));
        self.handle_traced(&event).instrument(span).await
    }

    async fn handle_traced(&self, event: &SqsEvent) -> SqsBatchResponse {
        let messages: Vec<QueueMessage> = event
            .records
            .iter()
            .map(|record| QueueMessage {
                id: record.message_id.as_deref().unwrap_or_default(),
                body: record.body.as_deref(),
            })
            .collect();
        let report = self.process(&messages).await;
        report.emit_metrics(messages.len());
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = report
            .failed
            .into_iter()
            .map(|id| {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                failure
            })
            .collect();
        response
    }

    pub async fn process(&self, messages: &[QueueMessage<'_>]) -> Report {
        let mut report = Report::default();
        let mut rejections = Vec::new();
        let mut decoded = Vec::new();
        for message in messages {
            match self.decode(message, &mut rejections).await {
                Ok(Some(message)) => decoded.push(message),
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(message_id = message.id, error = %err, "message left for redelivery");
                    report.failed.push(message.id.to_string());
                }
            }
        }
        report.events_seen = decoded.iter().map(|m| m.events.len() as u64).sum();
        report.oldest_received_at = decoded.iter().map(|m| m.envelope.received_at).min();
        for rejection in &rejections {
            *report.rejected_by_reason.entry(reason_kind(&rejection.reason)).or_default() += 1;
        }
        let rows: Vec<EventRow> = decoded.iter().flat_map(rows_of).collect();
        let writing = std::time::Instant::now();
        match self.store.write_batch(&rows, &rejections, &self.erased_ids).await {
            Ok(written) => {
                report.transaction = Some(writing.elapsed());
                report.events_stored = written.events_inserted;
                report.rejected = rejections.len() as u64;
                report.suppressed = written.events_suppressed;
                report.lock_conflicts = written.lock_conflicts;
                if written.events_of_purged_projects > 0 {
                    tracing::warn!(events = written.events_of_purged_projects, "events of purged projects not stored");
                }
                if written.links_over_cap > 0 {
                    tracing::warn!(
                        links = written.links_over_cap,
                        cap = evtrack::store::MAX_LINKS_PER_USER,
                        "links of users at the link cap not recorded (the events are stored)"
                    );
                }
                if written.late_links > 0 {
                    tracing::info!(links = written.late_links, "links to erased users noted for cleanup");
                }
                self.record_key_use(&decoded).await;
            }
            Err(err) if err.is_transient() => {
                tracing::warn!(error = %err, messages = messages.len(), "batch not stored; left for redelivery");
                report.failed = messages.iter().map(|m| m.id.to_string()).collect();
            }
            Err(err) => {
                tracing::warn!(error = %err, "batch refused by the database; storing message by message");
                self.isolate(&decoded, rejections, &mut report).await;
            }
        }
        tracing::info!(
            messages = messages.len(),
            events_seen = report.events_seen,
            events_stored = report.events_stored,
            rejected = report.rejected,
            suppressed = report.suppressed,
            failed = report.failed.len(),
            "batch processed"
        );
        report
    }

    /// The envelope and its events, or `None` when the whole message was rejected.
    /// `Err` means "not now" (the project lookup failed).
    async fn decode<'a>(
        &self,
        message: &QueueMessage<'a>,
        rejections: &mut Vec<Rejection>,
    ) -> Result<Option<Decoded<'a>>, StoreError> {
        let reject = |rejections: &mut Vec<Rejection>, project, index: i32, code: &str, reason: String, raw: &[u8]| {
            tracing::warn!(message_id = message.id, index, code, reason = %reason, "rejected");
            rejections.push(Rejection {
                project,
                queue_message_id: message.id.to_string(),
                item_index: index,
                code: code.to_string(),
                reason,
                raw: raw.to_vec(),
                source: None,
                received_at: None,
                batch_fields: None,
            });
        };
        let Some(body) = message.body else {
            reject(rejections, None, -1, "no_body", "message has no body".into(), b"");
            return Ok(None);
        };
        // Not sealed by ingest: nothing in it is trusted, not even the project it names.
        let envelope = match Envelope::open(body, &self.seal) {
            Ok(envelope) => envelope,
            Err(err) => {
                reject(rejections, None, -1, err.code(), err.to_string(), body.as_bytes());
                return Ok(None);
            }
        };
        // Older than SQS keeps a message: a replayed copy, which could bring back what cleanup
        // erased or purged since. Its body is not kept either, for the same reason.
        if Utc::now() - envelope.received_at > MAX_ENVELOPE_AGE {
            let reason = format!(
                "envelope received at {} is older than a queue keeps messages (its {} bytes not kept)",
                envelope.received_at,
                body.len()
            );
            reject(rejections, None, -1, "stale_envelope", reason, b"");
            return Ok(None);
        }
        // A project purged since (a sealed message names a project that existed): what it
        // carries went with the project, so its body is not kept.
        let Some(project) = self.project_id(envelope.project).await? else {
            let reason = format!("unknown project {} (purged; its {} bytes not kept)", envelope.project, body.len());
            reject(rejections, None, -1, "unknown_project", reason, b"");
            return Ok(None);
        };
        let mut events = Vec::with_capacity(envelope.events.len());
        for (index, raw) in envelope.events.iter().enumerate() {
            let checked = serde_json::from_str::<Event>(raw.get())
                .map(Event::with_group_types)
                .map_err(|err| ("undecodable_event", format!("undecodable event: {err}")))
                .and_then(|event| {
                    event.validate().map(|()| event).map_err(|p| ("invalid_event", format!("invalid event: {p}")))
                });
            match checked {
                Ok(event) => events.push((index, event)),
                Err((code, reason)) => {
                    reject(rejections, Some(project), index as i32, code, reason, raw.get().as_bytes())
                }
            }
        }
        // Quarantined by ingest: kept as sent, with the request's format, time and batch fields.
        let batch_fields = (!envelope.batch.is_empty()).then(|| serde_json::json!(envelope.batch).to_string());
        for quarantined in &envelope.rejected {
            rejections.push(Rejection {
                project: Some(project),
                queue_message_id: message.id.to_string(),
                item_index: i32::try_from(quarantined.index).unwrap_or(i32::MAX),
                code: quarantined.code.clone(),
                reason: quarantined.message.clone(),
                raw: quarantined.raw.as_bytes().to_vec(),
                source: envelope.source.clone(),
                received_at: Some(envelope.received_at),
                batch_fields: batch_fields.clone(),
            });
        }
        Ok(Some(Decoded { id: message.id, project, envelope, events }))
    }

    /// Best effort: a failure here costs a `last_used_at` update, never an event.
    async fn record_key_use(&self, decoded: &[Decoded<'_>]) {
        self.key_use.record(decoded.iter().map(|message| (message.envelope.key, message.envelope.received_at))).await;
    }

    async fn project_id(&self, uid: Uuid) -> Result<Option<ProjectId>, StoreError> {
        if let Some(id) = self.projects.lock().unwrap_or_else(|p| p.into_inner()).get(&uid) {
            return Ok(Some(*id));
        }
        let id = self.store.project_id_any_state(uid).await?;
        if let Some(id) = id {
            self.projects.lock().unwrap_or_else(|p| p.into_inner()).insert(uid, id);
        }
        Ok(id)
    }

    /// The database refused something in the batch: find it event by event, reject what
    /// it refuses, store the rest.
    async fn isolate(&self, decoded: &[Decoded<'_>], mut rejections: Vec<Rejection>, report: &mut Report) {
        let mut failed_messages: Vec<&str> = Vec::new();
        for message in decoded {
            for ((index, event), row) in message.events.iter().zip(rows_of(message)) {
                match self.store.write_batch(std::slice::from_ref(&row), &[], &self.erased_ids).await {
                    Ok(written) => {
                        report.events_stored += written.events_inserted;
                        report.suppressed += written.events_suppressed;
                    }
                    Err(err) if err.is_transient() => {
                        failed_messages.push(message.id);
                        break;
                    }
                    Err(err) => rejections.push(Rejection {
                        project: Some(message.project),
                        queue_message_id: message.id.to_string(),
                        item_index: *index as i32,
                        code: "refused_by_database".into(),
                        reason: err.to_string(),
                        raw: serde_json::to_vec(event).unwrap_or_default(),
                        source: None,
                        received_at: Some(message.envelope.received_at),
                        batch_fields: None,
                    }),
                }
            }
        }
        let unrecorded = self.record_rejections(rejections, report).await;
        failed_messages.extend(unrecorded.iter().map(String::as_str));
        failed_messages.sort_unstable();
        failed_messages.dedup();
        report.failed.extend(failed_messages.into_iter().map(str::to_string));
    }

    /// Records `rejections`; returns the queue messages whose rejections are not recorded,
    /// left for redelivery. When the database refuses them together, each is recorded on its
    /// own, so that one it refuses (its batch's fields, say) holds back its own message only,
    /// not every message of the batch with a rejection; a refused one is tried once more
    /// without its batch's fields, then left to redelivery (and the dead-letter queue).
    async fn record_rejections(&self, rejections: Vec<Rejection>, report: &mut Report) -> Vec<String> {
        let all = self.store.write_batch(&[], &rejections, &self.erased_ids).await;
        let err = match all {
            Ok(_) => {
                report.rejected += rejections.len() as u64;
                return Vec::new();
            }
            Err(err) => err,
        };
        if err.is_transient() {
            tracing::warn!(error = %err, "rejections not recorded; left for redelivery");
            return rejections.into_iter().map(|rejection| rejection.queue_message_id).collect();
        }
        let mut unrecorded = Vec::new();
        for mut rejection in rejections {
            let mut attempt = self.store.write_batch(&[], std::slice::from_ref(&rejection), &self.erased_ids).await;
            if matches!(&attempt, Err(err) if !err.is_transient()) && rejection.batch_fields.take().is_some() {
                rejection.reason.push_str(" (its batch's fields were refused by the database: not kept)");
                attempt = self.store.write_batch(&[], std::slice::from_ref(&rejection), &self.erased_ids).await;
            }
            match attempt {
                Ok(_) => report.rejected += 1,
                Err(err) => {
                    tracing::warn!(error = %err, message = rejection.queue_message_id, "a rejection not recorded; left for redelivery");
                    unrecorded.push(rejection.queue_message_id);
                }
            }
        }
        unrecorded
    }
}

fn rows_of<'a>(message: &'a Decoded<'_>) -> impl Iterator<Item = EventRow<'a>> {
    // An address that does not parse is dropped, not stored.
    let ip = message.envelope.ip.as_deref().filter(|ip| ip.parse::<IpAddr>().is_ok());
    message.events.iter().map(move |(_, event)| EventRow {
        project: message.project,
        event,
        received_at: message.envelope.received_at,
        ip,
        write_key_uid: Some(message.envelope.key),
    })
}
