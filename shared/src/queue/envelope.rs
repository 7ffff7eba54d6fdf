//! The queue message: one project's events from one request, with what the server observed
//! on receipt. Events are packed into as few messages as fit the size limit.

use crate::event::Event;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

pub const ENVELOPE_VERSION: u8 = 1;

/// A decoded envelope whose events are still raw, so that one bad event does not take the
/// rest of its message down with it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u8,
    pub project: Uuid,
    /// The write key that sent it (public id).
    pub key: Uuid,
    pub received_at: DateTime<Utc>,
    #[serde(default)]
    pub ip: Option<String>,
    pub events: Vec<Box<RawValue>>,
}

impl Envelope {
    pub fn decode(body: &str) -> Result<Self, String> {
        let envelope: Envelope = serde_json::from_str(body).map_err(|err| format!("undecodable envelope: {err}"))?;
        if envelope.v != ENVELOPE_VERSION {
            return Err(format!("unsupported envelope version {}", envelope.v));
        }
        Ok(envelope)
    }
}

/// What every envelope of one request shares.
pub struct Receipt<'a> {
    pub project: Uuid,
    pub key: Uuid,
    pub received_at: DateTime<Utc>,
    pub ip: Option<&'a str>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("event {index} does not fit a queue message of {limit} bytes")]
pub struct TooLargeForQueue {
    pub index: usize,
    pub limit: usize,
}

/// Serialises `events` into as few message bodies of at most `max_bytes` as they fit.
pub fn pack(receipt: &Receipt<'_>, events: &[Event], max_bytes: usize) -> Result<Vec<String>, TooLargeForQueue> {
    let head = serde_json::json!({
        "v": ENVELOPE_VERSION,
        "project": receipt.project,
        "key": receipt.key,
        "received_at": receipt.received_at,
        "ip": receipt.ip,
    })
    .to_string();
    // `{...,"ip":x}` becomes `{...,"ip":x,"events":[` + events + `]}`.
    let head = format!("{},\"events\":[", &head[..head.len() - 1]);
    const TAIL: &str = "]}";
    let mut bodies = Vec::new();
    let mut body = head.clone();
    let mut in_body = 0;
    for (index, event) in events.iter().enumerate() {
        let json = sqs_safe(serde_json::to_string(event).map_err(|_| TooLargeForQueue { index, limit: max_bytes })?);
        if head.len() + json.len() + TAIL.len() > max_bytes {
            return Err(TooLargeForQueue { index, limit: max_bytes });
        }
        if in_body > 0 && body.len() + 1 + json.len() + TAIL.len() > max_bytes {
            body.push_str(TAIL);
            bodies.push(std::mem::replace(&mut body, head.clone()));
            in_body = 0;
        }
        if in_body > 0 {
            body.push(',');
        }
        body.push_str(&json);
        in_body += 1;
    }
    if in_body > 0 {
        body.push_str(TAIL);
        bodies.push(body);
    }
    Ok(bodies)
}

/// SQS allows only XML characters in a message body: U+FFFE and U+FFFF are refused with
/// InvalidMessageContents (older AWS docs: silently replaced by U+FFFD), so a request holding
/// them would fail forever or be altered. In valid JSON they can only stand inside strings,
/// where the `\uXXXX` escape means the same character. (moto does not enforce this.)
fn sqs_safe(json: String) -> String {
    if !json.contains(['\u{FFFE}', '\u{FFFF}']) {
        return json;
    }
    json.replace('\u{FFFE}', "\\ufffe").replace('\u{FFFF}', "\\uffff")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> Event {
        Event { name: Some("x".repeat(100)), ..crate::event::sample_track(&format!("m-{n}")) }
    }

    #[test]
    fn packs_into_messages_within_the_limit_and_decodes_back() {
        let receipt =
            Receipt { project: Uuid::now_v7(), key: Uuid::now_v7(), received_at: Utc::now(), ip: Some("1.2.3.0") };
        let events: Vec<Event> = (0..100).map(event).collect();
        let bodies = pack(&receipt, &events, 2048).expect("fits");
        assert!(bodies.len() > 1);
        let mut decoded = Vec::new();
        for body in &bodies {
            assert!(body.len() <= 2048, "{}", body.len());
            let envelope = Envelope::decode(body).expect("decodes");
            assert_eq!(envelope.project, receipt.project);
            assert_eq!(envelope.ip.as_deref(), Some("1.2.3.0"));
            for raw in envelope.events {
                decoded.push(serde_json::from_str::<Event>(raw.get()).expect("event"));
            }
        }
        let as_json = |events: &[Event]| serde_json::to_string(events).expect("serialises");
        assert_eq!(as_json(&decoded), as_json(&events));
    }

    #[test]
    fn characters_sqs_refuses_are_escaped_and_mean_the_same() {
        let receipt = Receipt { project: Uuid::now_v7(), key: Uuid::now_v7(), received_at: Utc::now(), ip: None };
        let properties: crate::event::JsonText =
            serde_json::from_str("{\"s\":\"a\u{FFFF}b\u{FFFE}\"}").expect("valid JSON");
        let event = Event { properties: Some(properties), ..event(1) };
        let bodies = pack(&receipt, &[event], 4096).expect("fits");
        assert!(!bodies[0].contains(['\u{FFFE}', '\u{FFFF}']), "{}", bodies[0]);
        let envelope = Envelope::decode(&bodies[0]).expect("decodes");
        let decoded: Event = serde_json::from_str(envelope.events[0].get()).expect("event");
        let value: serde_json::Value =
            serde_json::from_str(decoded.properties.expect("properties").get()).expect("json");
        assert_eq!(value["s"], "a\u{FFFF}b\u{FFFE}");
    }

    #[test]
    fn no_events_no_messages() {
        let receipt = Receipt { project: Uuid::now_v7(), key: Uuid::now_v7(), received_at: Utc::now(), ip: None };
        assert_eq!(pack(&receipt, &[], 1024), Ok(vec![]));
    }

    #[test]
    fn an_event_larger_than_a_message_is_refused() {
        let receipt = Receipt { project: Uuid::now_v7(), key: Uuid::now_v7(), received_at: Utc::now(), ip: None };
        assert_eq!(pack(&receipt, &[event(1)], 100), Err(TooLargeForQueue { index: 0, limit: 100 }));
    }

    #[test]
    fn other_versions_are_refused() {
        let err = Envelope::decode(r#"{"v":2,"project":"0190a0e0-0000-7000-8000-000000000001","key":"0190a0e0-0000-7000-8000-000000000001","received_at":"2024-01-01T00:00:00Z","events":[]}"#)
            .expect_err("must fail");
        assert!(err.contains("version 2"), "{err}");
    }
}
