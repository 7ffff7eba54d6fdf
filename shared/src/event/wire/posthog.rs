//! PostHog events (posthog-js, posthog-python, posthog-node): identity and person
//! properties live in `properties`; `$identify`, `$create_alias`, `$groupidentify`,
//! `$pageview` and `$screen` map to Segment's types, everything else is a track.

use super::BatchFields;
use super::Message;
use super::fields::*;
use crate::config::Limits;
use crate::event::time::{corrected_timestamp, parse_timestamp};
use crate::event::{Event, EventType, JsonObject, MAX_ID_CHARS, MAX_MESSAGE_ID_CHARS, check_text};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

pub(super) fn posthog_event(
    mut message: Message<'_>,
    batch: &BatchFields,
    received_at: DateTime<Utc>,
    limits: &Limits,
) -> Result<Event, EventError> {
    let event_name = take_string(&mut message, "event")?.ok_or(EventError::Required("event"))?;
    check_text("event", &event_name, MAX_ID_CHARS)?;
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
    .ok_or(EventError::Required("distinct_id"))?;
    let original =
        parse_timestamp("timestamp", &take_value(&mut message, "timestamp")?).map_err(EventError::Timestamp)?;
    let sent_at = batch_sent_at(batch)?;
    let (timestamp, timestamp_clamped) = corrected_timestamp(received_at, original, sent_at, limits.future_tolerance);
    let property_id = |properties: &JsonObject, name: &str| -> Result<Option<String>, EventError> {
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
            user_id = Some(property_id(&properties, "alias")?.ok_or(EventError::AliasWithoutTarget)?);
            previous_id = Some(distinct_id.clone());
            anonymous_id = None;
            EventType::Alias
        }
        "$groupidentify" => {
            group_id = property_id(&properties, "$group_key")?;
            let mut group_traits = match properties.get("$group_set") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(set)) => set.clone(),
                Some(_) => return Err(EventError::NotObject("$group_set".into())),
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
