//! The queue message: one project's events from one request, with what the server observed
//! on receipt. Events are packed into as few messages as fit the size limit.
//!
//! Every envelope is sealed by ingest (keyed BLAKE3 or HMAC-SHA256, `EVTRACK_QUEUE_SEAL`,
//! under a key derived from the pepper, in a last `"sig"` field) and opened by the consumer, so that a message put on the queue by
//! anything else — a principal with `sqs:SendMessage`, a replayed body altered on the way —
//! is rejected with its reason instead of being stored under the project it names.

use crate::config::{Config, QueueSeal, Secret};
use crate::event::Event;
use crate::event::quarantine::QuarantinedEvent;
use crate::event::wire::BatchFields;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::Sha256;
use uuid::Uuid;

/// 3: sealed with keyed BLAKE3, the default. 2: sealed with HMAC-SHA256 (what releases before
/// 2026-12-06 wrote, and `EVTRACK_QUEUE_SEAL=hmac-sha256` still does: `QueueSeal`). Both open;
/// once the setting goes, 2 can go the queue's 15 days (`MAX_ENVELOPE_AGE`) after the release
/// without it. 1 (unsealed) is refused.
pub const ENVELOPE_VERSION: u8 = 3;
const HMAC_SEALED_VERSION: u8 = 2;

/// `,"sig":"<64 hex>"` before the closing `}`: a 32-byte tag either way.
const SEAL_PREFIX: &str = ",\"sig\":\"";
const SEAL_BYTES: usize = SEAL_PREFIX.len() + 64 + 1;

/// The keys envelopes are sealed with: derived from the current pepper (sealing) and the
/// previous one (still opening what was queued before a pepper rotation).
pub struct EnvelopeSeal {
    /// How `seal` seals.
    sealing: QueueSeal,
    keys: Vec<Secret<[u8; 32]>>,
    /// Version 2's keys (HMAC-SHA256), from the same peppers: opening only.
    hmac_keys: Vec<Secret<Vec<u8>>>,
}

impl EnvelopeSeal {
    pub fn from_config(config: &Config) -> Self {
        Self::from_peppers(config.queue_seal, config.peppers().map(|pepper| pepper.expose().as_bytes()))
    }

    /// The current pepper first. Keyed BLAKE3 costs about half of HMAC-SHA256 per byte here
    /// (BENCHMARKS.md), and every byte of every event is sealed by ingest and checked by the
    /// consumer.
    fn from_peppers<'a>(sealing: QueueSeal, peppers: impl Iterator<Item = &'a [u8]>) -> Self {
        let (mut keys, mut hmac_keys) = (Vec::new(), Vec::new());
        for pepper in peppers {
            // Domain-separated from key hashes and erased-id hashes.
            keys.push(Secret::new(blake3::derive_key("evtrack 2026-12-06 queue envelope seal", pepper)));
            let mut mac = hmac(pepper);
            mac.update(b"evtrack-queue-envelope\0");
            hmac_keys.push(Secret::new(mac.finalize().into_bytes().to_vec()));
        }
        Self { sealing, keys, hmac_keys }
    }

    /// The version of the envelopes `seal` seals.
    pub fn version(&self) -> u8 {
        match self.sealing {
            QueueSeal::Blake3 => ENVELOPE_VERSION,
            QueueSeal::HmacSha256 => HMAC_SEALED_VERSION,
        }
    }

    /// Seals an envelope's JSON object (`{…}`): what `pack` does to every body. In place: a
    /// body is up to 256 KiB.
    pub fn seal(&self, mut envelope: String) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let tag: [u8; 32] = match self.sealing {
            QueueSeal::Blake3 => blake3::keyed_hash(self.keys[0].expose(), envelope.as_bytes()).into(),
            QueueSeal::HmacSha256 => {
                let mut mac = hmac(self.hmac_keys[0].expose());
                mac.update(envelope.as_bytes());
                mac.finalize().into_bytes().into()
            }
        };
        // `{…}` becomes `{…,"sig":"…"}`.
        envelope.pop();
        envelope.reserve(SEAL_BYTES + 1);
        envelope.push_str(SEAL_PREFIX);
        for byte in tag {
            envelope.push(HEX[usize::from(byte >> 4)] as char);
            envelope.push(HEX[usize::from(byte & 0xf)] as char);
        }
        envelope.push_str("\"}");
        envelope
    }

    /// Checks that one of the keys sealed `body`, and says which version's seal it is: its
    /// tag covers the envelope's JSON without the seal (`{…}`), read in two parts so that the
    /// body is not copied.
    fn verify(&self, body: &str) -> Result<u8, EnvelopeError> {
        let unsealed_len = body.len().checked_sub(SEAL_BYTES + 1).ok_or(EnvelopeError::Unsealed)?;
        let (unsealed, seal) = body.split_at_checked(unsealed_len).ok_or(EnvelopeError::Unsealed)?;
        let tag: [u8; 32] = seal
            .strip_prefix(SEAL_PREFIX)
            .and_then(|rest| rest.strip_suffix("\"}"))
            .and_then(decode_hex)
            .and_then(|tag| tag.try_into().ok())
            .ok_or(EnvelopeError::Unsealed)?;
        let sealed = self.keys.iter().any(|key| {
            let mut hasher = blake3::Hasher::new_keyed(key.expose());
            hasher.update(unsealed.as_bytes());
            hasher.update(b"}");
            // `Hash`'s comparison takes the same time wherever the tags differ.
            hasher.finalize() == blake3::Hash::from_bytes(tag)
        });
        if sealed {
            return Ok(ENVELOPE_VERSION);
        }
        let hmac_sealed = self.hmac_keys.iter().any(|key| {
            let mut mac = hmac(key.expose());
            mac.update(unsealed.as_bytes());
            mac.update(b"}");
            mac.verify_slice(&tag).is_ok()
        });
        if hmac_sealed { Ok(HMAC_SEALED_VERSION) } else { Err(EnvelopeError::Forged) }
    }
}

/// Why a queue message is no envelope to store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope is not sealed")]
    Unsealed,
    #[error("envelope seal does not verify: not queued by this deployment's ingest")]
    Forged,
    #[error("undecodable envelope: {0}")]
    Undecodable(String),
    #[error("unsupported envelope version {0}")]
    Version(u8),
}

impl EnvelopeError {
    /// The reason's code in `rejected_events`.
    pub fn code(&self) -> &'static str {
        match self {
            EnvelopeError::Unsealed => "unsealed_envelope",
            EnvelopeError::Forged => "forged_envelope",
            EnvelopeError::Undecodable(_) => "undecodable_envelope",
            EnvelopeError::Version(_) => "unsupported_envelope",
        }
    }
}

fn hmac(key: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length")
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 {
        return None;
    }
    (0..hex.len()).step_by(2).map(|at| u8::from_str_radix(hex.get(at..at + 2)?, 16).ok()).collect()
}

/// A decoded envelope whose events are still raw, so that one bad event does not take the
/// rest of its message down with it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<'a> {
    pub v: u8,
    pub project: Uuid,
    /// The write key that sent it (public id).
    pub key: Uuid,
    pub received_at: DateTime<Utc>,
    #[serde(default)]
    pub ip: Option<String>,
    /// The wire format the request came in (`segment`, `segment:<type>` for a single-event
    /// route, `posthog`): what a replay of its quarantined events sends them back as.
    #[serde(default)]
    pub source: Option<String>,
    /// Borrowed from the message body: each is decoded on its own (`Event`, borrowing too).
    #[serde(borrow)]
    pub events: Vec<&'a RawValue>,
    /// Events of the request that could not be accepted, as sent.
    #[serde(default)]
    pub rejected: Vec<QuarantinedEvent>,
    /// The batch-level fields of the request (`sentAt`, `context`, `integrations`), carried
    /// with its quarantined events only (the events have them applied already).
    #[serde(default)]
    pub batch: BatchFields,
}

impl<'a> Envelope<'a> {
    /// The envelope of a queue message body, if `seal` sealed it. Decoded from the body as it
    /// is: the seal is its last field, which decoding passes over.
    pub fn open(body: &'a str, seal: &EnvelopeSeal) -> Result<Self, EnvelopeError> {
        let sealed_as = seal.verify(body)?;
        let envelope: Envelope =
            serde_json::from_str(body).map_err(|err| EnvelopeError::Undecodable(err.to_string()))?;
        match envelope.v {
            v if v == sealed_as => Ok(envelope),
            // A version's envelope under the other version's seal: no release makes those.
            ENVELOPE_VERSION | HMAC_SEALED_VERSION => Err(EnvelopeError::Forged),
            v => Err(EnvelopeError::Version(v)),
        }
    }
}

/// What every envelope of one request shares.
pub struct Receipt<'a> {
    pub project: Uuid,
    pub key: Uuid,
    pub received_at: DateTime<Utc>,
    pub ip: Option<&'a str>,
    /// `Shape::source`: the request's wire format.
    pub source: &'a str,
    /// The request's batch-level fields, as sent.
    pub batch: &'a BatchFields,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("event {index} does not fit a queue message of {limit} bytes")]
pub struct TooLargeForQueue {
    pub index: usize,
    pub limit: usize,
}

/// Serialises `events`, then `quarantined`, into as few sealed message bodies of at most
/// `max_bytes` as they fit (a body holds events or quarantined events, not both).
pub fn pack(
    receipt: &Receipt<'_>,
    events: &[Event],
    quarantined: &[QuarantinedEvent],
    max_bytes: usize,
    seal: &EnvelopeSeal,
) -> Result<Vec<String>, TooLargeForQueue> {
    let head = serde_json::json!({
        "v": seal.version(),
        "project": receipt.project,
        "key": receipt.key,
        "received_at": receipt.received_at,
        "ip": receipt.ip,
        "source": receipt.source,
    })
    .to_string();
    // `{...}` becomes `{...,"events":[` + events + `]}`, then sealed.
    let open = &head[..head.len() - 1];
    let mut bodies = pack_items(&format!("{open},\"events\":["), events, max_bytes, seal)?;
    let batch = match receipt.batch.is_empty() {
        true => String::new(),
        false => format!(",\"batch\":{}", sqs_safe(&serde_json::json!(receipt.batch).to_string())),
    };
    let quarantine_head = format!("{open}{batch},\"events\":[],\"rejected\":[");
    bodies.extend(pack_items(&quarantine_head, quarantined, max_bytes, seal)?);
    Ok(bodies)
}

/// `head` + as many of `items` as fit + `]}`, sealed, for as many bodies as it takes.
fn pack_items<T: Serialize>(
    head: &str,
    items: &[T],
    max_bytes: usize,
    seal: &EnvelopeSeal,
) -> Result<Vec<String>, TooLargeForQueue> {
    const TAIL: &str = "]}";
    let limit = max_bytes;
    let max_bytes = max_bytes.saturating_sub(SEAL_BYTES);
    let new_body = || {
        let mut body = String::with_capacity(max_bytes.min(64 * 1024));
        body.push_str(head);
        body
    };
    let mut bodies = Vec::new();
    let mut body = new_body();
    let mut in_body = 0;
    // One buffer for every item's JSON: no allocation per event.
    let mut json = Vec::with_capacity(1024);
    for (index, item) in items.iter().enumerate() {
        json.clear();
        serde_json::to_writer(&mut json, item).map_err(|_| TooLargeForQueue { index, limit })?;
        let json = sqs_safe(std::str::from_utf8(&json).map_err(|_| TooLargeForQueue { index, limit })?);
        if head.len() + json.len() + TAIL.len() > max_bytes {
            return Err(TooLargeForQueue { index, limit });
        }
        if in_body > 0 && body.len() + 1 + json.len() + TAIL.len() > max_bytes {
            body.push_str(TAIL);
            bodies.push(seal.seal(std::mem::replace(&mut body, new_body())));
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
        bodies.push(seal.seal(body));
    }
    Ok(bodies)
}

/// SQS allows only XML characters in a message body: U+FFFE and U+FFFF are refused with
/// InvalidMessageContents (older AWS docs: silently replaced by U+FFFD), so a request holding
/// them would fail forever or be altered. In valid JSON they can only stand inside strings,
/// where the `\uXXXX` escape means the same character. (moto does not enforce this.)
fn sqs_safe(json: &str) -> std::borrow::Cow<'_, str> {
    // Both encode as EF BF BE/BF; most JSON holds no 0xEF byte at all (a fast byte search).
    if !json.as_bytes().contains(&0xEF) || !json.contains(['\u{FFFE}', '\u{FFFF}']) {
        return std::borrow::Cow::Borrowed(json);
    }
    std::borrow::Cow::Owned(json.replace('\u{FFFE}', "\\ufffe").replace('\u{FFFF}', "\\uffff"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal_with(peppers: &[&[u8]]) -> EnvelopeSeal {
        EnvelopeSeal::from_peppers(QueueSeal::Blake3, peppers.iter().copied())
    }

    /// As releases before 2026-12-06 sealed, and this one by default.
    fn hmac_seal() -> EnvelopeSeal {
        EnvelopeSeal::from_peppers(QueueSeal::HmacSha256, [b"current".as_slice()].into_iter())
    }

    fn seal() -> EnvelopeSeal {
        seal_with(&[b"current"])
    }

    static NO_BATCH: BatchFields = BatchFields { sent_at: None, context: None, integrations: None };

    fn receipt(source: &'static str) -> Receipt<'static> {
        Receipt {
            project: Uuid::now_v7(),
            key: Uuid::now_v7(),
            received_at: Utc::now(),
            ip: None,
            source,
            batch: &NO_BATCH,
        }
    }

    fn event(n: usize) -> Event<'static> {
        Event { name: Some("x".repeat(100).into()), ..crate::event::sample_track(&format!("m-{n}")) }
    }

    #[test]
    fn packs_into_messages_within_the_limit_and_decodes_back() {
        let receipt = Receipt {
            project: Uuid::now_v7(),
            key: Uuid::now_v7(),
            received_at: Utc::now(),
            ip: Some("1.2.3.0"),
            source: "segment",
            batch: &NO_BATCH,
        };
        let events: Vec<Event> = (0..100).map(event).collect();
        let bodies = pack(&receipt, &events, &[], 2048, &seal()).expect("fits");
        assert!(bodies.len() > 1);
        let mut decoded = Vec::new();
        for body in &bodies {
            assert!(body.len() <= 2048, "{}", body.len());
            let envelope = Envelope::open(body, &seal()).expect("opens");
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
        let receipt = receipt("segment");
        let properties: crate::event::JsonText =
            serde_json::from_str("{\"s\":\"a\u{FFFF}b\u{FFFE}\"}").expect("valid JSON");
        let event = Event { properties: Some(properties), ..event(1) };
        let bodies = pack(&receipt, &[event], &[], 4096, &seal()).expect("fits");
        assert!(!bodies[0].contains(['\u{FFFE}', '\u{FFFF}']), "{}", bodies[0]);
        let envelope = Envelope::open(&bodies[0], &seal()).expect("opens");
        let decoded: Event = serde_json::from_str(envelope.events[0].get()).expect("event");
        let value: serde_json::Value =
            serde_json::from_str(decoded.properties.expect("properties").get()).expect("json");
        assert_eq!(value["s"], "a\u{FFFF}b\u{FFFE}");
    }

    #[test]
    fn quarantined_events_travel_in_bodies_of_their_own_with_their_batch_fields() {
        let batch: BatchFields =
            serde_json::from_value(serde_json::json!({"sentAt": "2024-05-01T12:00:00Z", "context": {"ip": "1.2.3.4"}}))
                .expect("batch fields");
        let receipt = Receipt { batch: &batch, ..receipt("posthog") };
        let reason = crate::event::wire::EventError::NotAnEvent;
        let quarantined: Vec<QuarantinedEvent> =
            (0..30).map(|n| QuarantinedEvent::new(n, &reason, &format!("[{n}, \"{}\"]", "q".repeat(100)))).collect();
        let bodies = pack(&receipt, &[event(1)], &quarantined, 2048, &seal()).expect("fits");
        assert!(bodies.len() > 2 && bodies.iter().all(|body| body.len() <= 2048));
        let envelopes: Vec<Envelope> =
            bodies.iter().map(|body| Envelope::open(body, &seal()).expect("opens")).collect();
        assert_eq!((envelopes[0].events.len(), envelopes[0].rejected.len()), (1, 0));
        let back: Vec<QuarantinedEvent> =
            envelopes[1..].iter().flat_map(|envelope| envelope.rejected.clone()).collect();
        assert_eq!(back, quarantined);
        assert!(envelopes.iter().all(|envelope| envelope.source.as_deref() == Some("posthog")));
        // The events have the batch's fields applied; the quarantined ones keep them beside.
        assert!(envelopes[0].batch.is_empty());
        assert!(envelopes[1..].iter().all(|envelope| envelope.batch == batch));
    }

    #[test]
    fn no_events_no_messages() {
        let receipt = receipt("segment");
        assert_eq!(pack(&receipt, &[], &[], 1024, &seal()), Ok(vec![]));
    }

    #[test]
    fn an_event_larger_than_a_message_is_refused() {
        let receipt = receipt("segment");
        assert_eq!(pack(&receipt, &[event(1)], &[], 100, &seal()), Err(TooLargeForQueue { index: 0, limit: 100 }));
    }

    #[test]
    fn a_message_not_sealed_by_ingest_is_refused_and_a_previous_pepper_still_opens() {
        let receipt = receipt("segment");
        let body = pack(&receipt, &[event(1)], &[], 4096, &seal()).expect("fits").remove(0);
        // Forged: unsealed, sealed by another key, or altered after sealing.
        let unsealed = body.split(",\"sig\":").next().expect("head").to_string() + "}";
        let other_key = pack(&receipt, &[event(1)], &[], 4096, &seal_with(&[b"attacker"])).expect("fits").remove(0);
        let altered = body.replace(&receipt.project.to_string(), &Uuid::now_v7().to_string());
        for forged in [unsealed.as_str(), &other_key, &altered, "", "{}", &body[..body.len() - 3]] {
            let err = Envelope::open(forged, &seal()).expect_err(forged).to_string();
            assert!(err.contains("seal"), "{err}");
        }
        // After a pepper rotation, what the old pepper sealed still opens.
        let rotated = seal_with(&[b"next", b"current"]);
        assert_eq!(Envelope::open(&body, &rotated).expect("opens").project, receipt.project);
    }

    #[test]
    fn an_envelope_sealed_by_the_previous_release_still_opens_and_its_seal_is_checked() {
        let head = |v: u8| {
            format!(
                r#"{{"v":{v},"project":"0190a0e0-0000-7000-8000-000000000001","key":"0190a0e0-0000-7000-8000-000000000001","received_at":"2024-01-01T00:00:00Z","events":[{{"type":"track"}}]}}"#
            )
        };
        let old = hmac_seal().seal(head(2));
        assert_eq!(Envelope::open(&old, &seal()).expect("opens").events.len(), 1);
        assert_eq!(Envelope::open(&old, &seal_with(&[b"next", b"current"])).expect("opens").v, 2);
        assert_eq!(
            Envelope::open(&old.replace("track", "trace"), &seal()).expect_err("altered"),
            EnvelopeError::Forged
        );
        assert_eq!(Envelope::open(&old, &seal_with(&[b"attacker"])).expect_err("other key"), EnvelopeError::Forged);
        // Each version under its own seal only.
        assert_eq!(Envelope::open(&hmac_seal().seal(head(3)), &seal()).expect_err("v3"), EnvelopeError::Forged);
        assert_eq!(Envelope::open(&seal().seal(head(2)), &seal()).expect_err("v2"), EnvelopeError::Forged);
        assert_eq!(Envelope::open(&seal().seal(head(3)), &seal()).expect("opens").v, 3);
    }

    #[test]
    fn ingest_seals_as_set_and_a_consumer_opens_either() {
        let receipt = receipt("segment");
        for (sealing, version) in [(hmac_seal(), 2), (seal(), 3)] {
            let body = pack(&receipt, &[event(1)], &[], 4096, &sealing).expect("fits").remove(0);
            for opening in [hmac_seal(), seal()] {
                assert_eq!(Envelope::open(&body, &opening).expect("opens").v, version);
            }
        }
    }

    #[test]
    fn other_versions_are_refused() {
        let unsealed = r#"{"v":1,"project":"0190a0e0-0000-7000-8000-000000000001","key":"0190a0e0-0000-7000-8000-000000000001","received_at":"2024-01-01T00:00:00Z","events":[]}"#;
        let err = Envelope::open(&seal().seal(unsealed.to_string()), &seal()).expect_err("must fail");
        assert_eq!(err, EnvelopeError::Version(1));
    }
}
