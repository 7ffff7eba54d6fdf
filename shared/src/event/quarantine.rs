//! Quarantined events: what an accepted request held that cannot be stored as an event,
//! kept as it was sent with the reason, so that nothing a client sent is dropped silently.
//! Ingest queues them beside the request's events; the consumer keeps them in
//! `rejected_events`, where they can be listed and replayed after a fix.

use super::wire::EventError;
use serde::{Deserialize, Serialize};

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
