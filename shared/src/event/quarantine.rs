//! Quarantined events: what an accepted request held that cannot be stored as an event,
//! kept as it was sent with the reason, so that nothing a client sent is dropped silently.
//! Ingest queues them beside the request's events; the consumer keeps them in
//! `rejected_events`, where they can be listed and replayed after a fix.

use super::JsonObject;
use super::time::{corrected_timestamp, parse_timestamp};
use super::wire::{BatchFields, EventError, Shape};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The most of an event's text a quarantine keeps: an event over the size limit is kept whole
/// up to here (so that it can be replayed once the limit is raised), and cut beyond it.
pub const MAX_RAW_BYTES: usize = 64 * 1024;

/// One quarantined event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantinedEvent {
    /// Its position in the request.
    pub index: usize,
    /// `missing_field`, `invalid_field`, `invalid_value`, `event_too_large`, … (`EventError::code`).
    pub code: String,
    pub message: String,
    /// The event's JSON as sent, cut to `MAX_RAW_BYTES` when larger (`truncated`).
    pub raw: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl QuarantinedEvent {
    pub fn new(index: usize, reason: &EventError, raw: &str) -> Self {
        let mut end = raw.len().min(MAX_RAW_BYTES);
        while !raw.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            index,
            code: reason.code().to_string(),
            message: reason.to_string(),
            raw: raw[..end].to_string(),
            truncated: end < raw.len(),
        }
    }
}

/// Makes a quarantined event (its JSON object, from a request of `shape` received at
/// `received_at` with `batch`'s fields) ready to be sent again: its time is resolved as its
/// first request resolved it (`corrected_timestamp` against the first receipt, not the
/// replay's) and written into `timestamp`, with the `sentAt` it was corrected by removed, so
/// that a replay days later stores it at the time it happened. An event whose time cannot be
/// read is left as it is: its time may be the reason it was refused.
pub fn resolve_time_for_replay(
    shape: Shape,
    event: &mut JsonObject,
    batch: &BatchFields,
    received_at: DateTime<Utc>,
    future_tolerance: Duration,
) {
    let field = |event: &JsonObject, name| event.get(name).cloned().unwrap_or(Value::Null);
    let original = match (shape, field(event, "timestamp")) {
        (Shape::PostHog, value) => parse_timestamp("timestamp", &value),
        (_, Value::Null) => parse_timestamp("originalTimestamp", &field(event, "originalTimestamp")),
        (_, value) => parse_timestamp("timestamp", &value),
    };
    let batch_sent_at = || batch.sent_at.as_ref().map_or(Ok(None), |value| parse_timestamp("sentAt", value));
    let sent_at = match (shape, field(event, "sentAt")) {
        (Shape::PostHog, _) | (_, Value::Null) => batch_sent_at(),
        (_, value) => parse_timestamp("sentAt", &value),
    };
    let (Ok(original), Ok(sent_at)) = (original, sent_at) else { return };
    let (timestamp, _) = corrected_timestamp(received_at, original, sent_at, future_tolerance);
    event.insert("timestamp".into(), Value::String(timestamp.to_rfc3339_opts(SecondsFormat::Millis, true)));
    if !shape.is_posthog() {
        event.remove("sentAt");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventType;
    use serde_json::json;

    fn resolved(shape: Shape, event: Value, batch: Value) -> Value {
        let Value::Object(mut event) = event else { panic!("an object") };
        let batch: BatchFields = serde_json::from_value(batch).expect("batch fields");
        let received = DateTime::parse_from_rfc3339("2024-05-01T12:00:10Z").expect("valid").with_timezone(&Utc);
        resolve_time_for_replay(shape, &mut event, &batch, received, Duration::minutes(10));
        Value::Object(event)
    }

    #[test]
    fn a_replayed_event_keeps_the_time_its_first_request_gave_it() {
        // The batch's sentAt corrects the client's clock against the first receipt.
        let event = json!({"event": "a", "timestamp": "2024-05-01T13:00:00Z"});
        let batch = json!({"sentAt": "2024-05-01T13:00:05Z"});
        assert_eq!(
            resolved(Shape::SegmentBatch, event, batch),
            json!({"event": "a", "timestamp": "2024-05-01T12:00:05.000Z"})
        );
        // An event's own sentAt wins over the batch's, and is removed once applied.
        let event = json!({"originalTimestamp": "2024-05-01T13:00:00Z", "sentAt": "2024-05-01T13:00:01Z"});
        let resolved_single = resolved(Shape::SegmentSingle(EventType::Track), event, json!({}));
        assert_eq!(resolved_single["timestamp"], "2024-05-01T12:00:09.000Z");
        assert!(resolved_single.get("sentAt").is_none());
        // No time at all: the first receipt's.
        assert_eq!(resolved(Shape::SegmentBatch, json!({}), json!({}))["timestamp"], "2024-05-01T12:00:10.000Z");
        // PostHog: the event's timestamp against the batch's sent_at.
        let event = json!({"event": "$pageview", "timestamp": "2024-05-01T12:30:00Z"});
        let batch = json!({"sentAt": "2024-05-01T12:30:01Z"});
        assert_eq!(resolved(Shape::PostHog, event, batch)["timestamp"], "2024-05-01T12:00:09.000Z");
    }

    #[test]
    fn an_event_whose_time_cannot_be_read_is_replayed_as_it_was_sent() {
        let event = json!({"event": "a", "timestamp": "yesterday", "sentAt": "2024-05-01T13:00:05Z"});
        assert_eq!(resolved(Shape::SegmentBatch, event.clone(), json!({})), event);
        let event = json!({"event": "a", "timestamp": "2024-05-01T13:00:00Z"});
        assert_eq!(resolved(Shape::SegmentBatch, event.clone(), json!({"sentAt": 1.5})), event);
    }
}
