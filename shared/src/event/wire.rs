//! Request bodies of the Segment and PostHog wire formats (see the handbook's PROTOCOL.md),
//! decoded into [`Event`]s. Parsing is split in two so that the write key can be checked
//! before any event is looked at: [`parse`] finds the messages and the keys in the body,
//! [`Payload::normalise`] turns the messages into events.

use super::time::{corrected_timestamp, parse_timestamp};
use super::{Event, EventType, JsonObject, JsonText, MAX_ID_CHARS, MAX_MESSAGE_ID_CHARS, check_text};
use crate::config::Limits;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::{RawValue, to_raw_value};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// A message's top-level fields, each still JSON text: only the small ones (ids, names,
/// times) are ever parsed; properties and context pass through as text.
type Message = HashMap<String, JsonText>;

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
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{0}")]
    Shape(String),
    #[error("batch has {count} events; the limit is {limit} per request")]
    TooManyEvents { count: usize, limit: usize },
    #[error("event {index} is {size} bytes; the limit is {limit} bytes per event")]
    EventTooLarge { index: usize, size: usize, limit: usize },
    #[error("event {index}: {reason}")]
    InvalidEvent { index: usize, reason: String },
}

/// A parsed body: its messages, not yet validated, and every key it carries.
#[derive(Debug)]
pub struct Payload {
    shape: Shape,
    messages: Vec<Message>,
    batch: BatchFields,
    /// Distinct write keys found in the body, in the order found.
    pub body_keys: Vec<String>,
}

/// Batch-level fields that apply to every message.
#[derive(Debug, Default)]
struct BatchFields {
    sent_at: Option<Value>,
    context: Option<JsonObject>,
    integrations: Option<JsonObject>,
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
pub fn parse(shape: Shape, json: &[u8], limits: &Limits) -> Result<Payload, WireError> {
    let text = std::str::from_utf8(json).map_err(|err| WireError::InvalidJson(format!("not UTF-8 ({err})")))?;
    let first = text.trim_start().as_bytes().first().copied();
    let mut payload = Payload { shape, messages: Vec::new(), batch: BatchFields::default(), body_keys: Vec::new() };
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
                    payload.batch = BatchFields {
                        sent_at: body.sent_at,
                        context: optional_object("context", body.context).map_err(WireError::Shape)?,
                        integrations: optional_object("integrations", body.integrations).map_err(WireError::Shape)?,
                    };
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
        let size = raw.get().len();
        if size > limits.max_event_bytes {
            return Err(WireError::EventTooLarge { index, size, limit: limits.max_event_bytes });
        }
        let message = match raw.get().trim_start().as_bytes().first() {
            Some(b'{') => serde_json::from_str::<Message>(raw.get())
                .map_err(|err| WireError::InvalidEvent { index, reason: format!("invalid JSON: {err}") })?,
            _ => {
                return Err(WireError::InvalidEvent { index, reason: "must be a JSON object".into() });
            }
        };
        payload.add_message_keys(&message);
        payload.messages.push(message);
    }
    Ok(payload)
}

fn invalid_json(err: serde_json::Error) -> WireError {
    WireError::InvalidJson(err.to_string())
}

impl Payload {
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    fn add_key(&mut self, value: &Value) {
        if let Value::String(key) = value
            && !key.is_empty()
            && !self.body_keys.contains(key)
        {
            self.body_keys.push(key.clone());
        }
    }

    fn add_message_keys(&mut self, message: &Message) {
        let names: &[&str] = match self.shape {
            Shape::SegmentSingle(_) => &["writeKey"],
            Shape::SegmentBatch => &[],
            Shape::PostHog => &["api_key", "token"],
        };
        for name in names {
            if let Some(value) = message.get(*name).and_then(|raw| serde_json::from_str(raw.get()).ok()) {
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

    /// Turns every message into an event, or names the first one that cannot be accepted.
    pub fn normalise(self, received_at: DateTime<Utc>, limits: &Limits) -> Result<Vec<Event>, WireError> {
        let Payload { shape, messages, batch, .. } = self;
        messages
            .into_iter()
            .enumerate()
            .map(|(index, message)| {
                let event = match shape {
                    Shape::SegmentBatch => segment_event(message, None, &batch, received_at, limits),
                    Shape::SegmentSingle(kind) => segment_event(message, Some(kind), &batch, received_at, limits),
                    Shape::PostHog => posthog_event(message, &batch, received_at, limits),
                };
                event
                    .and_then(|event| event.validate().map(|()| event).map_err(|p| p.0))
                    .map_err(|reason| WireError::InvalidEvent { index, reason })
            })
            .collect()
    }
}

fn segment_event(
    mut message: Message,
    route_kind: Option<EventType>,
    batch: &BatchFields,
    received_at: DateTime<Utc>,
    limits: &Limits,
) -> Result<Event, String> {
    let kind = match (route_kind, take_string(&mut message, "type")?) {
        (Some(route), Some(named)) if named != route.as_str() => {
            return Err(format!("type {named:?} does not match the {route} endpoint"));
        }
        (Some(route), _) => route,
        (None, Some(named)) => {
            EventType::parse(&named).ok_or_else(|| format!("unknown type {:?}", truncated(&named)))?
        }
        (None, None) => return Err("type is required".into()),
    };
    let name = match kind {
        EventType::Track => take_string(&mut message, "event")?,
        EventType::Page | EventType::Screen => take_string(&mut message, "name")?,
        _ => None,
    };
    let original = match take_value(&mut message, "timestamp")? {
        Value::Null => parse_timestamp("originalTimestamp", &take_value(&mut message, "originalTimestamp")?)?,
        value => parse_timestamp("timestamp", &value)?,
    };
    let sent_at = match take_value(&mut message, "sentAt")? {
        Value::Null => batch_sent_at(batch)?,
        value => parse_timestamp("sentAt", &value)?,
    };
    let (timestamp, timestamp_clamped) = corrected_timestamp(received_at, original, sent_at, limits.future_tolerance);
    let context = merged(batch.context.as_ref(), take_object(&mut message, "context")?)?;
    let mut traits = take_object(&mut message, "traits")?;
    if kind == EventType::Identify && traits.is_none() {
        // RudderStack's SDKs send identify traits in context.traits only.
        traits = match &context {
            Some(context) => object_property(&parse_object("context", context)?, "traits")?,
            None => None,
        };
    }
    Ok(Event {
        message_id: take_id(&mut message, "messageId", MAX_MESSAGE_ID_CHARS)?.unwrap_or_else(generated_message_id),
        kind,
        name: name.filter(|name| !name.is_empty()),
        user_id: take_id(&mut message, "userId", MAX_ID_CHARS)?,
        anonymous_id: take_id(&mut message, "anonymousId", MAX_ID_CHARS)?,
        group_id: take_id(&mut message, "groupId", MAX_ID_CHARS)?,
        previous_id: take_id(&mut message, "previousId", MAX_ID_CHARS)?,
        properties: take_object(&mut message, "properties")?,
        traits,
        context,
        integrations: merged(batch.integrations.as_ref(), take_object(&mut message, "integrations")?)?,
        timestamp,
        original_timestamp: original,
        sent_at,
        timestamp_clamped,
    })
}

fn posthog_event(
    mut message: Message,
    batch: &BatchFields,
    received_at: DateTime<Utc>,
    limits: &Limits,
) -> Result<Event, String> {
    let event_name = take_string(&mut message, "event")?.ok_or("event is required")?;
    check_text("event", &event_name, MAX_ID_CHARS).map_err(|p| p.0)?;
    // PostHog keeps identity in properties: these are parsed.
    let mut properties = match take_object(&mut message, "properties")? {
        Some(text) => parse_object("properties", &text)?,
        None => Map::new(),
    };
    let distinct_id = match take_value(&mut message, "distinct_id")? {
        Value::Null => match properties.get("distinct_id").or_else(|| properties.get("$distinct_id")) {
            Some(value) => id_value("distinct_id", value.clone(), MAX_ID_CHARS)?,
            None => None,
        },
        value => id_value("distinct_id", value, MAX_ID_CHARS)?,
    }
    .ok_or("distinct_id is required")?;
    let original = parse_timestamp("timestamp", &take_value(&mut message, "timestamp")?)?;
    let sent_at = batch_sent_at(batch)?;
    let (timestamp, timestamp_clamped) = corrected_timestamp(received_at, original, sent_at, limits.future_tolerance);
    let property_id = |properties: &JsonObject, name: &str| -> Result<Option<String>, String> {
        properties.get(name).cloned().map_or(Ok(None), |value| id_value(name, value, MAX_ID_CHARS))
    };
    // An anonymous browser's distinct_id is its device id (posthog-js).
    let is_anonymous = properties.get("$device_id").and_then(Value::as_str) == Some(distinct_id.as_str());
    let (mut user_id, mut anonymous_id) =
        if is_anonymous { (None, Some(distinct_id.clone())) } else { (Some(distinct_id.clone()), None) };
    let (mut group_id, mut previous_id, mut traits, mut name) = (None, None, None, None);
    let kind = match event_name.as_str() {
        // `$set` is posthog-python's `set()`: person properties, as an identify's traits.
        "$identify" | "$set" => {
            user_id = Some(distinct_id.clone());
            anonymous_id = property_id(&properties, "$anon_distinct_id")?;
            traits = match object_property(&properties, "$set")? {
                Some(traits) => Some(traits),
                None => take_object(&mut message, "$set")?,
            };
            EventType::Identify
        }
        "$create_alias" => {
            // posthog-python: distinct_id is the previous id, properties.alias the new one.
            user_id = Some(property_id(&properties, "alias")?.ok_or("$create_alias needs properties.alias")?);
            previous_id = Some(distinct_id.clone());
            anonymous_id = None;
            EventType::Alias
        }
        "$groupidentify" => {
            group_id = property_id(&properties, "$group_key")?;
            let mut group_traits = match properties.get("$group_set") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(set)) => set.clone(),
                Some(_) => return Err("$group_set must be a JSON object".into()),
            };
            if let Some(group_type) = properties.get("$group_type") {
                group_traits.insert("$group_type".into(), group_type.clone());
            }
            traits = Some(as_text(&group_traits)?);
            EventType::Group
        }
        "$pageview" => {
            name = properties.get("title").and_then(Value::as_str).map(str::to_owned);
            EventType::Page
        }
        "$screen" => {
            name = properties.get("$screen_name").and_then(Value::as_str).map(str::to_owned);
            EventType::Screen
        }
        _ => {
            name = Some(event_name.clone());
            EventType::Track
        }
    };
    properties.remove("token");
    let library = library_context(&properties).map(|library| as_text(&library)).transpose()?;
    Ok(Event {
        message_id: take_id(&mut message, "uuid", MAX_MESSAGE_ID_CHARS)?.unwrap_or_else(generated_message_id),
        kind,
        name: name.map(|name| name.chars().take(MAX_ID_CHARS).collect()),
        user_id,
        anonymous_id,
        group_id,
        previous_id,
        properties: Some(as_text(&properties)?),
        traits,
        context: merged(batch.context.as_ref(), library)?,
        integrations: None,
        timestamp,
        original_timestamp: original,
        sent_at,
        timestamp_clamped,
    })
}

/// PostHog names its SDK in `$lib` / `$lib_version`; Segment puts it in `context.library`.
fn library_context(properties: &JsonObject) -> Option<JsonObject> {
    let name = properties.get("$lib")?.clone();
    let mut library = Map::new();
    library.insert("name".into(), name);
    if let Some(version) = properties.get("$lib_version") {
        library.insert("version".into(), version.clone());
    }
    let mut context = Map::new();
    context.insert("library".into(), Value::Object(library));
    Some(context)
}

fn generated_message_id() -> String {
    crate::ids::new_public_id().to_string()
}

fn batch_sent_at(batch: &BatchFields) -> Result<Option<DateTime<Utc>>, String> {
    batch.sent_at.as_ref().map_or(Ok(None), |value| parse_timestamp("sentAt", value))
}

/// A message's context or integrations over the batch's (the message wins per key).
fn merged(batch: Option<&JsonObject>, message: Option<JsonText>) -> Result<Option<JsonText>, String> {
    match (batch, message) {
        (None, message) => Ok(message),
        (Some(batch), None) => as_text(batch).map(Some),
        (Some(batch), Some(message)) => {
            let mut combined = batch.clone();
            combined.extend(parse_object("context", &message)?);
            as_text(&combined).map(Some)
        }
    }
}

/// A small top-level field, parsed; absent is `null`.
fn take_value(message: &mut Message, field: &str) -> Result<Value, String> {
    match message.remove(field) {
        None => Ok(Value::Null),
        Some(text) => serde_json::from_str(text.get()).map_err(|err| format!("{field}: {err}")),
    }
}

fn take_string(message: &mut Message, field: &str) -> Result<Option<String>, String> {
    match take_value(message, field)? {
        Value::Null => Ok(None),
        Value::String(text) => Ok(Some(text)),
        _ => Err(format!("{field} must be a string")),
    }
}

/// Ids may come as strings or integers (some SDKs send numeric user ids).
fn take_id(message: &mut Message, field: &str, max_chars: usize) -> Result<Option<String>, String> {
    id_value(field, take_value(message, field)?, max_chars)
}

fn id_value(field: &str, value: Value, max_chars: usize) -> Result<Option<String>, String> {
    let id = match value {
        Value::Null => return Ok(None),
        Value::String(text) if text.is_empty() => return Ok(None),
        Value::String(text) => text,
        Value::Number(number) if number.is_i64() || number.is_u64() => number.to_string(),
        // `42.0` is the integer 42 (JSON has one number type).
        Value::Number(number) if number.as_f64().is_some_and(|n| n.fract() == 0.0 && n.abs() < 9.0e15) => {
            format!("{}", number.as_f64().unwrap_or_default() as i64)
        }
        _ => return Err(format!("{field} must be a string")),
    };
    check_text(field, &id, max_chars).map_err(|p| p.0)?;
    Ok(Some(id))
}

/// A JSON-object field kept as text (checked in full by `Event::validate`); `null` is absent.
fn take_object(message: &mut Message, field: &str) -> Result<Option<JsonText>, String> {
    match message.remove(field) {
        None => Ok(None),
        Some(text) if text.get().trim() == "null" => Ok(None),
        Some(text) if text.get().trim_start().starts_with('{') => Ok(Some(text)),
        Some(_) => Err(format!("{field} must be a JSON object")),
    }
}

fn parse_object(field: &str, text: &RawValue) -> Result<JsonObject, String> {
    serde_json::from_str(text.get()).map_err(|err| format!("{field}: {err}"))
}

fn object_property(object: &JsonObject, field: &str) -> Result<Option<JsonText>, String> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(inner)) => as_text(inner).map(Some),
        Some(_) => Err(format!("{field} must be a JSON object")),
    }
}

fn as_text(object: &JsonObject) -> Result<JsonText, String> {
    to_raw_value(object).map_err(|err| err.to_string())
}

fn optional_object(field: &str, value: Option<Value>) -> Result<Option<JsonObject>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(object)) => Ok(Some(object)),
        Some(_) => Err(format!("{field} must be a JSON object")),
    }
}

fn truncated(text: &str) -> String {
    text.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A JSON text field, parsed for assertions.
    fn parsed(text: &Option<JsonText>) -> Value {
        text.as_ref().map_or(Value::Null, |text| serde_json::from_str(text.get()).expect("JSON"))
    }

    fn received() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-05-01T12:00:10Z").expect("valid").with_timezone(&Utc)
    }

    fn events(shape: Shape, body: Value) -> Result<Vec<Event>, WireError> {
        let limits = Limits::default();
        let bytes = serde_json::to_vec(&body).expect("serialises");
        parse(shape, &bytes, &limits)?.normalise(received(), &limits)
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
    fn mismatched_type_on_a_single_endpoint_is_refused() {
        let err = events(Shape::SegmentSingle(EventType::Page), json!({"type": "track", "userId": "u"}))
            .expect_err("must fail");
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn keys_are_found_in_the_body() {
        let limits = Limits::default();
        let body = json!({"api_key": "phc_a", "batch": [{"event": "x", "distinct_id": "d", "properties": {"token": "phc_b"}}]});
        let payload = parse(Shape::PostHog, body.to_string().as_bytes(), &limits).expect("parses");
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
    fn limits_are_named_in_errors() {
        let limits = Limits { max_batch_events: 2, max_event_bytes: 64, ..Limits::default() };
        let three = json!({"batch": [{}, {}, {}]}).to_string();
        assert_eq!(
            parse(Shape::SegmentBatch, three.as_bytes(), &limits).expect_err("too many"),
            WireError::TooManyEvents { count: 3, limit: 2 }
        );
        let big = json!({"batch": [{"type": "track", "event": "x".repeat(100)}]}).to_string();
        let err = parse(Shape::SegmentBatch, big.as_bytes(), &limits).expect_err("too big");
        assert!(err.to_string().contains("the limit is 64 bytes per event"), "{err}");
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
            let err = parse(Shape::SegmentBatch, body, &limits)
                .and_then(|payload| payload.normalise(received(), &limits))
                .expect_err("must fail");
            assert!(err.to_string().contains(expected), "{err} should mention {expected}");
        }
    }

    #[test]
    fn an_invalid_event_is_named_by_index() {
        let err = events(
            Shape::SegmentBatch,
            json!({"batch": [{"type": "track", "event": "ok", "userId": "u"}, {"type": "track", "userId": "u"}]}),
        )
        .expect_err("must fail");
        assert_eq!(err, WireError::InvalidEvent { index: 1, reason: "a track needs an event name".into() });
    }
}
