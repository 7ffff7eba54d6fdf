//! A queue message body as the consumer reads it, sealed or not: opening the envelope and
//! decoding each event. Nothing panics; a body that opens was sealed with the key.
#![no_main]

use evtrack::config::Config;
use evtrack::event::Event;
use evtrack::queue::envelope::{Envelope, EnvelopeSeal};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static SEAL: LazyLock<EnvelopeSeal> = LazyLock::new(|| {
    let config = Config::from_lookup(|_| None).expect("the local defaults are a valid config");
    EnvelopeSeal::from_config(&config)
});

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else { return };
    // As received: a forged body never opens.
    let _ = Envelope::open(text, &SEAL);
    // As if ingest had sealed it: the decoders behind the seal see arbitrary JSON too.
    if text.starts_with('{') && text.ends_with('}') {
        if let Ok(envelope) = Envelope::open(&SEAL.seal(text.to_string()), &SEAL) {
            for raw in &envelope.events {
                if let Ok(event) = serde_json::from_str::<Event>(raw.get()) {
                    let _ = event.validate();
                }
            }
        }
    }
});
