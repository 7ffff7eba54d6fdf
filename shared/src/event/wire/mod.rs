//! Request bodies of the Segment and PostHog wire formats (see the handbook's PROTOCOL.md),
//! decoded into [`Event`]s. Parsing is split in two so that the write key can be checked
//! before any event is looked at: [`parse`] finds the messages and the keys in the body,
//! [`Payload::normalise`] turns the messages into events.
//!
//! A request is refused whole only when nothing of it can be trusted (not JSON, the wrong
//! shape at the top, too many events); an event that cannot be accepted is quarantined
//! instead: kept as it was sent, with the reason, while the rest of its request is stored.

mod fields;
mod message;
mod posthog;
mod segment;

pub use super::quarantine::QuarantinedEvent;
pub use fields::EventError;
pub(crate) use posthog::{group_type, groups_named};

use super::time::parse_timestamp;
use fields::optional_object;
use posthog::posthog_event;
use segment::segment_event;

use super::{Event, EventType, JsonObject};
use crate::config::Limits;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use message::Message;

/// Which wire shape a route speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `{"batch":[msg...], "sentAt", "writeKey", "context", "integrations"}`
    SegmentBatch,
    /// One Segment message as the whole body (`/v1/track`, `/v1/t`, ...).
    SegmentSingle(EventType),
    /// PostHog: `{"batch":[...], "api_key"}`, a bare array, or one event object.
    PostHog,
}

impl Shape {
    pub fn is_posthog(self) -> bool {
        matches!(self, Shape::PostHog)
    }

    /// The shape's name as queue envelopes and rejected events keep it (`parse_source` reads it).
    pub fn source(self) -> &'static str {
        match self {
            Shape::SegmentBatch => "segment",
            Shape::SegmentSingle(EventType::Track) => "segment:track",
            Shape::SegmentSingle(EventType::Identify) => "segment:identify",
            Shape::SegmentSingle(EventType::Page) => "segment:page",
            Shape::SegmentSingle(EventType::Screen) => "segment:screen",
            Shape::SegmentSingle(EventType::Group) => "segment:group",
            Shape::SegmentSingle(EventType::Alias) => "segment:alias",
            Shape::PostHog => "posthog",
        }
    }

    pub fn parse_source(source: &str) -> Option<Self> {
        match source {
            "segment" => Some(Shape::SegmentBatch),
            "posthog" => Some(Shape::PostHog),
            _ => source.strip_prefix("segment:").and_then(EventType::parse).map(Shape::SegmentSingle),
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{0}")]
    Shape(String),
    #[error("batch has {count} events; the limit is {limit} per request")]
    TooManyEvents { count: usize, limit: usize },
}

/// A parsed body: its messages, not yet validated, and every key it carries.
#[derive(Debug)]
pub struct Payload<'a> {
    shape: Shape,
    /// Each message with its index in the request and its text (both borrowed from the body).
    messages: Vec<(usize, Message<'a>, &'a RawValue)>,
    /// Messages that are no event at all (not an object, too large).
    quarantined: Vec<QuarantinedEvent>,
    batch: BatchFields,
    /// Distinct write keys found in the body, in the order found.
    pub body_keys: Vec<String>,
}

/// Batch-level fields that apply to every message, as sent. A quarantined event keeps them
/// beside its own text, so that a replay treats it as its request did.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchFields {
    #[serde(default, rename = "sentAt", skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<JsonObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrations: Option<JsonObject>,
}

impl BatchFields {
    pub fn is_empty(&self) -> bool {
        self.sent_at.is_none() && self.context.is_none() && self.integrations.is_none()
    }
}

/// A batch-level `context` or `integrations`, if sent, and its size as JSON: an object that
/// each event can hold (nested no deeper than an event's own may be).
fn batch_object(field: &str, value: Option<Value>) -> Result<(Option<JsonObject>, usize), WireError> {
    let shape = |reason: String| WireError::Shape(reason);
    let Some(object) = optional_object(field, value).map_err(|err| shape(err.to_string()))? else {
        return Ok((None, 0));
    };
    let text = serde_json::value::to_raw_value(&object).map_err(|err| shape(err.to_string()))?;
    crate::event::check_json_object(field, &text).map_err(|problem| shape(problem.to_string()))?;
    Ok((Some(object), text.get().len()))
}

/// Just the token of a PostHog `properties` object.
#[derive(Deserialize)]
struct TokenOnly {
    #[serde(default)]
    token: Option<Value>,
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow, default)]
    batch: Option<Vec<&'a RawValue>>,
    #[serde(default, alias = "sentAt")]
    sent_at: Option<Value>,
    #[serde(default)]
    context: Option<Value>,
    #[serde(default)]
    integrations: Option<Value>,
    #[serde(default, rename = "writeKey")]
    write_key: Option<Value>,
    #[serde(default)]
    api_key: Option<Value>,
    #[serde(default)]
    token: Option<Value>,
}

/// Finds the messages and keys in a JSON body. Checks counts and per-event sizes.
pub fn parse<'a>(shape: Shape, json: &'a [u8], limits: &Limits) -> Result<Payload<'a>, WireError> {
    let text = std::str::from_utf8(json).map_err(|err| WireError::InvalidJson(format!("not UTF-8 ({err})")))?;
    let first = text.trim_start().as_bytes().first().copied();
    let mut payload = Payload {
        shape,
        messages: Vec::new(),
        quarantined: Vec::new(),
        batch: BatchFields::default(),
        body_keys: Vec::new(),
    };
    // The bytes of the batch's context and integrations, which every event is given.
    let mut batch_bytes = 0;
    let raw_messages: Vec<&RawValue> = match (shape, first) {
        (Shape::PostHog, Some(b'[')) => serde_json::from_str(text).map_err(invalid_json)?,
        (_, Some(b'{')) => {
            let body: BatchBody = serde_json::from_str(text).map_err(invalid_json)?;
            for key in [&body.write_key, &body.api_key, &body.token].into_iter().flatten() {
                payload.add_key(key);
            }
            match (shape, body.batch) {
                (Shape::SegmentSingle(_), _) | (Shape::PostHog, None) => {
                    vec![serde_json::from_str::<&RawValue>(text).map_err(invalid_json)?]
                }
                (Shape::SegmentBatch, None) => {
                    return Err(WireError::Shape("body needs a \"batch\" array of events".into()));
                }
                (_, Some(batch)) => {
                    // Checked now, so that even an empty batch with a bad sentAt is refused.
                    if let Some(sent_at) = &body.sent_at {
                        parse_timestamp("sentAt", sent_at).map_err(WireError::Shape)?;
                    }
                    let (context, context_bytes) = batch_object("context", body.context)?;
                    let (integrations, integrations_bytes) = batch_object("integrations", body.integrations)?;
                    payload.batch = BatchFields { sent_at: body.sent_at, context, integrations };
                    batch_bytes = context_bytes + integrations_bytes;
                    // Copied into every event: a large one would multiply into memory,
                    // queue messages and rows far beyond the request's size.
                    if batch_bytes > limits.max_event_bytes / 2 {
                        return Err(WireError::Shape(format!(
                            "the batch's context and integrations are {batch_bytes} bytes; at most {} (they \
                             are copied into every event)",
                            limits.max_event_bytes / 2
                        )));
                    }
                    batch
                }
            }
        }
        (_, None) => return Err(WireError::InvalidJson("the body is empty".into())),
        (Shape::PostHog, _) => {
            return Err(WireError::Shape("body must be a JSON object or array of events".into()));
        }
        _ => return Err(WireError::Shape("body must be a JSON object".into())),
    };
    if raw_messages.len() > limits.max_batch_events {
        return Err(WireError::TooManyEvents { count: raw_messages.len(), limit: limits.max_batch_events });
    }
    for (index, raw) in raw_messages.into_iter().enumerate() {
        // What the event will hold: its own text and the batch's fields it is given.
        let size = raw.get().len() + batch_bytes;
        if size > limits.max_event_bytes {
            let reason = EventError::TooLarge { size, limit: limits.max_event_bytes };
            payload.quarantined.push(QuarantinedEvent::new(index, &reason, raw.get()));
            continue;
        }
        let message = match raw.get().trim_start().as_bytes().first() {
            Some(b'{') => {
                serde_json::from_str::<Message>(raw.get()).map_err(|err| EventError::InvalidJson(err.to_string()))
            }
            _ => Err(EventError::NotAnEvent),
        };
        match message {
            Ok(message) => {
                payload.add_message_keys(&message);
                payload.messages.push((index, message, raw));
            }
            Err(reason) => {
                payload.quarantined.push(QuarantinedEvent::new(index, &reason, raw.get()));
            }
        }
    }
    Ok(payload)
}

fn invalid_json(err: serde_json::Error) -> WireError {
    WireError::InvalidJson(err.to_string())
}

impl<'a> Payload<'a> {
    /// Messages in the request (quarantined ones included).
    pub fn len(&self) -> usize {
        self.messages.len() + self.quarantined.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// RudderStack's browser SDK sends the time of sending in a `SentAt` header too: it is
    /// the request's sentAt when the body has none at its top (a message's own wins, as
    /// over a batch's), checked as the body's would be.
    pub fn sent_at_header(&mut self, header: Option<&str>) -> Result<(), WireError> {
        let Some(text) = header else { return Ok(()) };
        if self.batch.sent_at.is_some() {
            return Ok(());
        }
        let sent_at = Value::String(text.to_owned());
        parse_timestamp("SentAt header", &sent_at).map_err(WireError::Shape)?;
        self.batch.sent_at = Some(sent_at);
        Ok(())
    }

    fn add_key(&mut self, value: &Value) {
        if let Value::String(key) = value
            && !key.is_empty()
            && !self.body_keys.contains(key)
        {
            self.body_keys.push(key.clone());
        }
    }

    fn add_message_keys(&mut self, message: &Message<'_>) {
        let names: &[&str] = match self.shape {
            Shape::SegmentSingle(_) => &["writeKey"],
            Shape::SegmentBatch => &[],
            Shape::PostHog => &["api_key", "token"],
        };
        for name in names {
            if let Some(value) = message.get(name).and_then(|raw| serde_json::from_str(raw.get()).ok()) {
                self.add_key(&value);
            }
        }
        // posthog-js puts the project token in every event's properties.
        if self.shape.is_posthog()
            && let Some(properties) = message.get("properties")
            && let Ok(Some(token)) = serde_json::from_str::<TokenOnly>(properties.get()).map(|p| p.token)
        {
            self.add_key(&token);
        }
    }

    /// Turns every message into an event; those that cannot be accepted are quarantined,
    /// with their text as sent.
    pub fn normalise(self, received_at: DateTime<Utc>, limits: &Limits) -> Normalised<'a> {
        let Payload { shape, messages, batch, mut quarantined, .. } = self;
        let mut events = Vec::with_capacity(messages.len());
        for (index, message, raw) in messages {
            let event = match shape {
                Shape::SegmentBatch => segment_event(message, None, &batch, received_at, limits),
                Shape::SegmentSingle(kind) => segment_event(message, Some(kind), &batch, received_at, limits),
                Shape::PostHog => posthog_event(message, &batch, received_at, limits),
            };
            match event.and_then(|event| event.validate().map(|()| event).map_err(EventError::from)) {
                Ok(event) => events.push(event),
                Err(reason) => quarantined.push(QuarantinedEvent::new(index, &reason, raw.get())),
            }
        }
        quarantined.sort_by_key(|event| event.index);
        Normalised { events, quarantined, batch }
    }
}

/// A request's events (borrowing the request's body): those to store, and those quarantined
/// (in request order) with the batch-level fields they were sent with.
#[derive(Debug, Default)]
pub struct Normalised<'a> {
    pub events: Vec<Event<'a>>,
    pub quarantined: Vec<QuarantinedEvent>,
    pub batch: BatchFields,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::borrow::Cow;

    /// A JSON text field, parsed for assertions.
    fn parsed(text: &Option<crate::event::JsonText>) -> Value {
        text.as_ref().map_or(Value::Null, |text| serde_json::from_str(text.get()).expect("JSON"))
    }

    fn received() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-05-01T12:00:10Z").expect("valid").with_timezone(&Utc)
    }

    /// The body's events, or why the request or its first quarantined event was refused.
    fn events(shape: Shape, body: Value) -> Result<Vec<Event<'static>>, String> {
        let limits = Limits::default();
        let bytes = serde_json::to_vec(&body).expect("serialises");
        Ok(normalised(shape, &bytes, &limits)?.into_iter().map(Event::into_owned).collect())
    }

    #[test]
    fn a_sent_at_header_counts_as_the_bodys_sent_at_and_a_message_own_wins() {
        let limits = Limits::default();
        let with_header = |body: Value, header: &str| -> Result<Vec<Event<'static>>, String> {
            let bytes = serde_json::to_vec(&body).expect("serialises");
            let mut payload =
                parse(Shape::SegmentSingle(EventType::Track), &bytes, &limits).map_err(|e| e.to_string())?;
            payload.sent_at_header(Some(header)).map_err(|e| e.to_string())?;
            Ok(payload.normalise(received(), &limits).events.into_iter().map(Event::into_owned).collect())
        };
        // RudderStack's browser SDK: a client clock an hour fast, in the header alone.
        let fast = (received() + chrono::Duration::hours(1)).to_rfc3339();
        let event_at = (received() + chrono::Duration::minutes(59)).to_rfc3339();
        let track = json!({"event": "E", "userId": "u", "timestamp": event_at});
        let stored = with_header(track.clone(), &fast).expect("accepted");
        assert_eq!(stored[0].timestamp, received() - chrono::Duration::minutes(1), "corrected by the header's sentAt");
        let mut own = track;
        own["sentAt"] = json!(event_at);
        let stored = with_header(own, &fast).expect("accepted");
        assert_eq!(stored[0].timestamp, received(), "the message's own sentAt wins");
        let err = with_header(json!({"event": "E", "userId": "u"}), "yesterday").expect_err("refused");
        assert!(err.contains("SentAt header"), "{err}");
    }

    fn normalised<'a>(shape: Shape, bytes: &'a [u8], limits: &Limits) -> Result<Vec<Event<'a>>, String> {
        let normalised = parse(shape, bytes, limits).map_err(|err| err.to_string())?.normalise(received(), limits);
        match normalised.quarantined.first() {
            Some(event) => Err(format!("event {}: {}", event.index, event.message)),
            None => Ok(normalised.events),
        }
    }

    #[test]
    fn segment_batch_applies_batch_context_and_corrects_time() {
        let events = events(
            Shape::SegmentBatch,
            json!({
                "batch": [{"type": "track", "event": "Order Completed", "userId": 42,
                           "messageId": "m-1", "timestamp": "2024-05-01T13:00:00Z",
                           "context": {"page": {"path": "/"}}, "properties": {"total": 9.5}}],
                "sentAt": "2024-05-01T13:00:05Z",
                "context": {"library": {"name": "analytics-python"}, "page": {"path": "/old"}}
            }),
        )
        .expect("valid");
        let event = &events[0];
        assert_eq!(event.kind, EventType::Track);
        assert_eq!(event.name.as_deref(), Some("Order Completed"));
        assert_eq!(event.user_id.as_deref(), Some("42"));
        assert_eq!(event.timestamp.to_rfc3339(), "2024-05-01T12:00:05+00:00");
        let context = parsed(&event.context);
        assert_eq!(context["library"]["name"], "analytics-python");
        assert_eq!(context["page"]["path"], "/");
    }

    #[test]
    fn single_endpoint_takes_its_type_from_the_route() {
        let events = events(
            Shape::SegmentSingle(EventType::Page),
            json!({"anonymousId": "a-1", "name": "Home", "writeKey": "k"}),
        )
        .expect("valid");
        assert_eq!(events[0].kind, EventType::Page);
        assert_eq!(events[0].name.as_deref(), Some("Home"));
        assert!(!events[0].message_id.is_empty(), "a messageId is generated");
    }

    #[test]
    fn identify_traits_may_come_in_context_as_rudderstack_sends_them() {
        let events = events(
            Shape::SegmentBatch,
            json!({"batch": [{"type": "identify", "userId": "u", "context": {"traits": {"plan": "pro"}}}]}),
        )
        .expect("valid");
        assert_eq!(parsed(&events[0].traits)["plan"], "pro");
    }

    #[test]
    fn integral_numbers_are_ids_and_a_bad_batch_sent_at_is_refused_even_when_empty() {
        let integral = events(Shape::SegmentBatch, json!({"batch": [{"type": "track", "event": "E", "userId": 42.0}]}))
            .expect("valid");
        assert_eq!(integral[0].user_id.as_deref(), Some("42"));
        assert!(
            events(Shape::SegmentBatch, json!({"batch": [{"type": "track", "event": "E", "userId": 4.2}]})).is_err()
        );
        let err = events(Shape::SegmentBatch, json!({"batch": [], "sentAt": "AAA"})).expect_err("bad sentAt");
        assert!(err.to_string().contains("sentAt"), "{err}");
    }

    #[test]
    fn ids_and_names_are_borrowed_from_the_body_but_one_with_escapes() {
        let limits = Limits::default();
        let body = br#"{"batch": [{"type": "track", "event": "Signed Up", "userId": "u\u0031",
            "anonymousId": "a-1", "messageId": "m-1", "timestamp": "2024-05-01T12:00:00.250Z"}]}"#;
        let events = normalised(Shape::SegmentBatch, body, &limits).expect("valid");
        let event = &events[0];
        assert!(matches!(event.message_id, Cow::Borrowed("m-1")));
        assert!(matches!(event.name, Some(Cow::Borrowed("Signed Up"))));
        assert!(matches!(event.anonymous_id, Some(Cow::Borrowed("a-1"))));
        assert!(matches!(event.user_id.as_ref(), Some(Cow::Owned(id)) if id == "u1"), "unescaped: a copy");
        assert_eq!(event.original_timestamp.map(|at| at.timestamp_millis()), Some(1_714_564_800_250));
    }

    #[test]
    fn a_field_of_the_wrong_kind_is_named_whatever_it_holds() {
        for (field, value) in [("userId", json!(true)), ("userId", json!({"a": [1]})), ("event", json!([1, {"b": 2}]))]
        {
            let mut message = json!({"type": "track", "event": "E", "userId": "u"});
            message[field] = value.clone();
            let err = events(Shape::SegmentBatch, json!({"batch": [message]})).expect_err("refused");
            assert_eq!(err, format!("event 0: {field} must be a string"), "{value}");
        }
        let err = events(
            Shape::SegmentBatch,
            json!({"batch": [{"type": "track", "event": "E", "userId": "u",
            "timestamp": {"at": 1}}]}),
        )
        .expect_err("refused");
        assert_eq!(err, "event 0: timestamp must be an ISO 8601 string");
    }

    #[test]
    fn a_page_or_screen_named_only_with_spaces_has_no_name_and_a_track_keeps_its_own() {
        let segment = events(
            Shape::SegmentBatch,
            json!({"batch": [
                {"type": "page", "name": "  ", "userId": "u"},
                {"type": "screen", "name": "", "userId": "u"},
                {"type": "page", "name": "Home ", "userId": "u"},
                {"type": "track", "event": " ", "userId": "u"},
            ]}),
        )
        .expect("accepted");
        let names: Vec<Option<&str>> = segment.iter().map(|event| event.name.as_deref()).collect();
        assert_eq!(names, [None, None, Some("Home "), Some(" ")]);
        let posthog = events(
            Shape::PostHog,
            json!({"batch": [
                {"event": "$pageview", "distinct_id": "u", "properties": {"title": " "}},
                {"event": "$screen", "distinct_id": "u", "properties": {"$screen_name": ""}},
            ]}),
        )
        .expect("accepted");
        assert!(posthog.iter().all(|event| event.name.is_none()));
    }

    #[test]
    fn mismatched_type_on_a_single_endpoint_is_refused() {
        let err = events(Shape::SegmentSingle(EventType::Page), json!({"type": "track", "userId": "u"}))
            .expect_err("must fail");
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn keys_are_found_in_the_body() {
        let limits = Limits::default();
        let body = json!({"api_key": "phc_a", "batch": [{"event": "x", "distinct_id": "d", "properties": {"token": "phc_b"}}]});
        let body = body.to_string();
        let payload = parse(Shape::PostHog, body.as_bytes(), &limits).expect("parses");
        assert_eq!(payload.body_keys, vec!["phc_a".to_string(), "phc_b".to_string()]);
    }

    #[test]
    fn posthog_special_events_map_to_segment_types() {
        let events = events(
            Shape::PostHog,
            json!({"batch": [
                {"event": "$identify", "distinct_id": "u-1", "properties": {"$set": {"plan": "pro"}, "$anon_distinct_id": "anon-1"}},
                {"event": "$create_alias", "distinct_id": "anon-2", "properties": {"alias": "u-1"}},
                {"event": "$groupidentify", "distinct_id": "u-1", "properties": {"$group_type": "company", "$group_key": "acme", "$group_set": {"seats": 5}}},
                {"event": "$pageview", "distinct_id": "u-1", "properties": {"title": "Home"}},
                {"event": "$screen", "distinct_id": "u-1", "properties": {"$screen_name": "Settings"}},
                {"event": "$set", "distinct_id": "u-2", "$set": {"plan": "team"}},
                {"event": "clicked", "distinct_id": "dev-1", "properties": {"$device_id": "dev-1"}, "uuid": "0190a0e0-0000-7000-8000-000000000001"}
            ], "api_key": "k"}),
        )
        .expect("valid");
        let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
        use EventType::*;
        assert_eq!(kinds, vec![Identify, Alias, Group, Page, Screen, Identify, Track]);
        assert_eq!(parsed(&events[0].traits)["plan"], "pro");
        assert_eq!(events[0].anonymous_id.as_deref(), Some("anon-1"));
        assert_eq!((events[1].previous_id.as_deref(), events[1].user_id.as_deref()), (Some("anon-2"), Some("u-1")));
        assert_eq!(events[2].group_id.as_deref(), Some("acme"));
        assert_eq!(events[3].name.as_deref(), Some("Home"));
        assert_eq!(events[4].name.as_deref(), Some("Settings"));
        assert_eq!(parsed(&events[5].traits)["plan"], "team");
        assert_eq!(events[6].anonymous_id.as_deref(), Some("dev-1"));
        assert_eq!(events[6].message_id, "0190a0e0-0000-7000-8000-000000000001");
    }

    #[test]
    fn posthog_groups_named_on_events_make_members_and_a_group_identify_alone_makes_none() {
        let events = events(
            Shape::PostHog,
            json!({"batch": [
                // posthog-js after `group('company', 'acme')`: `$groups` on every event.
                {"event": "clicked", "distinct_id": "u-1", "properties": {"$groups": {"company": "acme", "project": 42, "team": null}}},
                {"event": "$groupidentify", "distinct_id": "u-1", "properties": {"$group_type": "company", "$group_key": "acme", "$groups": {"company": "acme"}}},
                // posthog-node's `groupIdentify` without a distinct_id.
                {"event": "$groupidentify", "distinct_id": "$company_acme", "properties": {"$group_type": "company", "$group_key": "acme", "$group_set": {"seats": 5}}},
                // posthog-node's `groupIdentify` with the user's distinct_id.
                {"event": "$groupidentify", "distinct_id": "u-2", "properties": {"$group_type": "company", "$group_key": "initech"}},
                {"event": "clicked", "distinct_id": "u-3", "properties": {}}
            ], "api_key": "k"}),
        )
        .expect("valid");
        let joined: Vec<Vec<(&str, &str)>> = events.iter().map(groups_of).collect();
        let acme = ("company", "acme");
        assert_eq!(joined, vec![vec![acme, ("project", "42")], vec![acme], vec![], vec![], vec![]]);
        assert_eq!(events[2].group_id.as_deref(), Some("acme"));
        assert_eq!(events[2].group_called().map(|group| (group.kind, group.id)), Some(acme));
        assert_eq!(parsed(&events[2].traits), json!({"seats": 5, "$group_type": "company"}));

        let limits = Limits::default();
        let six: serde_json::Map<String, Value> =
            (0..6).map(|n| (format!("type{n}"), json!(format!("g{n}")))).collect();
        let body =
            json!({"api_key": "k", "batch": [{"event": "x", "distinct_id": "u", "properties": {"$groups": six}}]});
        let err = normalised(Shape::PostHog, body.to_string().as_bytes(), &limits).expect_err("refused");
        assert!(err.contains("an event names at most 5 groups of its user; this one names 6"), "{err}");
        // What can be no group id is passed over: the event is kept, `$groups` in its
        // properties; a personless event makes no member.
        let kept = self::tests::events(
            Shape::PostHog,
            json!({"api_key": "k", "batch": [
                {"event": "x", "distinct_id": "u", "properties": {"$groups": ["acme"]}},
                {"event": "x", "distinct_id": "u", "properties": {"$groups": {"a": {"id": 1}, "b": "x".repeat(300), "c": "acme", "d": "acme ", "": "acme"}}},
                {"event": "x", "distinct_id": "9f0c", "properties": {"$groups": {"company": "acme"}, "$process_person_profile": false}}
            ]}),
        )
        .expect("kept");
        let joined: Vec<Vec<(&str, &str)>> = kept.iter().map(groups_of).collect();
        assert_eq!(joined, vec![vec![], vec![("c", "acme"), ("d", "acme ")], vec![]]);
    }

    /// The groups an event makes its user a member of, as (type, id).
    fn groups_of<'a>(event: &'a Event<'_>) -> Vec<(&'a str, &'a str)> {
        event.groups_joined().map(|group| (group.kind, group.id)).collect()
    }

    #[test]
    fn limits_are_named_in_errors() {
        let limits = Limits { max_batch_events: 2, max_event_bytes: 64, ..Limits::default() };
        let three = json!({"batch": [{}, {}, {}]}).to_string();
        assert_eq!(
            parse(Shape::SegmentBatch, three.as_bytes(), &limits).expect_err("too many"),
            WireError::TooManyEvents { count: 3, limit: 2 }
        );
        let big = json!({"batch": [{"type": "track", "event": "x".repeat(100)}]}).to_string();
        let err = normalised(Shape::SegmentBatch, big.as_bytes(), &limits).expect_err("too big");
        assert!(err.contains("the limit is 64 bytes per event"), "{err}");
    }

    #[test]
    fn hostile_bodies_get_clear_errors() {
        let limits = Limits::default();
        let deep = format!(
            "{{\"batch\":[{{\"type\":\"track\",\"event\":\"x\",\"userId\":\"u\",\"properties\":{{\"a\":{}1{}}}}}]}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        for (body, expected) in [
            (&b"\xff\xfe"[..], "UTF-8"),
            (b"{\"batch\":", "JSON"),
            (b"[1]", "JSON object"),
            (deep.as_bytes(), "properties is nested deeper than 30 levels"),
            (
                b"{\"batch\":[{\"type\":\"track\",\"event\":\"x\",\"userId\":\"u\",\"properties\":{\"n\":1e999}}]}",
                "number out of range",
            ),
        ] {
            let err = normalised(Shape::SegmentBatch, body, &limits).expect_err("must fail");
            assert!(err.contains(expected), "{err} should mention {expected}");
        }
    }

    #[test]
    fn a_batchs_context_is_bounded_as_every_event_holds_it() {
        let limits = Limits { max_event_bytes: 1000, ..Limits::default() };
        let event = |n: usize| json!({"type": "track", "event": "e", "userId": "u", "messageId": format!("m{n}")});
        // Copied into each of 2,500 events, 600 bytes would be 1.5 MB from a 600-byte field.
        let wide = json!({"batch": [event(0)], "context": {"blob": "c".repeat(600)}}).to_string();
        let err = parse(Shape::SegmentBatch, wide.as_bytes(), &limits).expect_err("too large");
        assert!(err.to_string().contains("at most 500 (they are copied into every event)"), "{err}");
        // As deep as an event's own context may be, and no deeper (MariaDB refuses deeper JSON).
        let nested = |depth: usize| (1..depth).fold(json!({"leaf": 1}), |inner, _| json!({"n": inner}));
        for (depth, accepted) in [(crate::event::MAX_JSON_DEPTH, true), (crate::event::MAX_JSON_DEPTH + 1, false)] {
            let body = json!({"batch": [event(0)], "context": nested(depth)}).to_string();
            let limits = Limits::default();
            assert_eq!(parse(Shape::SegmentBatch, body.as_bytes(), &limits).is_ok(), accepted, "depth {depth}");
        }
        // An event's size counts the batch's fields it is given: this one is quarantined, the
        // smaller one beside it stored.
        let context = json!({"library": {"name": "x".repeat(400)}});
        let bigger = json!({"type": "track", "event": "e", "userId": "u", "properties": {"p": "p".repeat(600)}});
        let body = json!({"batch": [event(0), bigger], "context": context}).to_string();
        let normalised =
            parse(Shape::SegmentBatch, body.as_bytes(), &limits).expect("parses").normalise(received(), &limits);
        assert_eq!(normalised.events.len(), 1);
        let codes: Vec<(usize, &str)> =
            normalised.quarantined.iter().map(|event| (event.index, event.code.as_str())).collect();
        assert_eq!(codes, [(1, "event_too_large")]);
    }

    #[test]
    fn an_invalid_event_is_quarantined_as_sent_and_the_others_kept() {
        let limits = Limits { max_event_bytes: 200, ..Limits::default() };
        let huge = format!(
            r#"{{"type": "track", "event": "huge", "userId": "u", "properties": {{"p": "{}"}}}}"#,
            "h".repeat(70_000)
        );
        let body = format!(
            r#"{{"batch": [{{"type": "track", "event": "ok", "userId": "u"}},  {{"type":"track",  "userId":"u"}}, 7,
            {{"type": "track", "event": "also ok", "userId": "u"}}, {{"type": "track", "event": "big", "userId": "u", "properties": {{"p": "{}"}}}}, {huge}]}}"#,
            "x".repeat(300)
        );
        let body = body.as_bytes();
        let normalised = parse(Shape::SegmentBatch, body, &limits).expect("parses").normalise(received(), &limits);
        let names: Vec<_> = normalised.events.iter().map(|event| event.name.as_deref().unwrap_or_default()).collect();
        assert_eq!(names, ["ok", "also ok"]);
        let quarantined: Vec<(usize, &str)> =
            normalised.quarantined.iter().map(|event| (event.index, event.code.as_str())).collect();
        assert_eq!(
            quarantined,
            [(1, "invalid_value"), (2, "not_an_event"), (4, "event_too_large"), (5, "event_too_large")]
        );
        let first = &normalised.quarantined[0];
        assert_eq!(first.raw, r#"{"type":"track",  "userId":"u"}"#, "as sent, spacing and all");
        assert_eq!(first.message, "a track needs an event name");
        let (big, huge) = (&normalised.quarantined[2], &normalised.quarantined[3]);
        assert!(!big.truncated && big.raw.len() > 300, "kept whole, to be replayed once the limit is raised");
        assert!(huge.truncated && huge.raw.len() == crate::event::quarantine::MAX_RAW_BYTES);
    }
}
