//! A request body as ingest reads it: transport decoding (gzip, form posts), the wire shape
//! of the route, normalising into events or quarantine, and packing into sealed queue
//! envelopes that the consumer opens again.
//!
//! Holds: nothing panics; every message of a parsed body ends as exactly one event or one
//! quarantined event; every event passes validation; every envelope opens with its own seal
//! and gives back what was packed.
#![no_main]

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use evtrack::config::{Config, Limits};
use evtrack::event::body::json_bytes;
use evtrack::event::wire::{self, Shape};
use evtrack::event::{Event, EventType};
use evtrack::queue::envelope::{Envelope, EnvelopeSeal, Receipt, pack};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static SEAL: LazyLock<EnvelopeSeal> = LazyLock::new(|| {
    let config = Config::from_lookup(|_| None).expect("the local defaults are a valid config");
    EnvelopeSeal::from_config(&config)
});

/// One of the 8 wire shapes: the batch routes, PostHog, or a single-event route per type.
fn shape(index: u8) -> Shape {
    match index {
        0 => Shape::SegmentBatch,
        1 => Shape::PostHog,
        n => Shape::SegmentSingle(EventType::ALL[usize::from(n - 2) % EventType::ALL.len()]),
    }
}

fuzz_target!(|input: &[u8]| {
    // The first byte picks the route and the headers; the rest is the body.
    let Some((&selector, body)) = input.split_first() else { return };
    let shape = shape(selector & 7);
    let encoding = ((selector >> 3) & 1 == 1).then_some("gzip");
    let content_type = ((selector >> 4) & 1 == 1).then_some("application/x-www-form-urlencoded");
    let limits = Limits { max_batch_events: 200, ..Limits::default() };

    let Ok(json) = json_bytes(Bytes::copy_from_slice(body), encoding, content_type, 1 << 20) else { return };
    let Ok(payload) = wire::parse(shape, &json, &limits) else { return };
    let messages = payload.len();
    assert!(messages <= limits.max_batch_events);
    let received_at = Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).single().expect("a valid time");
    let normalised = payload.normalise(received_at, &limits);
    assert_eq!(normalised.events.len() + normalised.quarantined.len(), messages, "each message ends once");
    for event in &normalised.events {
        event.validate().expect("a normalised event is valid");
    }
    for quarantined in &normalised.quarantined {
        assert!(quarantined.raw.len() <= evtrack::event::quarantine::MAX_RAW_BYTES);
    }

    let receipt = Receipt {
        project: uuid::Uuid::from_u128(1),
        key: uuid::Uuid::from_u128(2),
        received_at,
        ip: Some("203.0.113.9"),
        source: shape.source(),
        batch: &normalised.batch,
    };
    let Ok(bodies) = pack(&receipt, &normalised.events, &normalised.quarantined, limits.max_queue_message_bytes, &SEAL)
    else {
        return;
    };
    let (mut events, mut quarantined) = (0, 0);
    for body in &bodies {
        assert!(body.len() <= limits.max_queue_message_bytes);
        let envelope = Envelope::open(body, &SEAL).expect("ingest's envelope opens");
        for raw in &envelope.events {
            let event: Event = serde_json::from_str(raw.get()).expect("a packed event decodes");
            event.validate().expect("a packed event is still valid");
            assert_eq!(event.message_id, normalised.events[events].message_id);
            events += 1;
        }
        if !envelope.rejected.is_empty() {
            assert_eq!(envelope.batch, normalised.batch, "quarantined events keep their batch fields");
        }
        quarantined += envelope.rejected.len();
    }
    assert_eq!((events, quarantined), (normalised.events.len(), normalised.quarantined.len()));
});
