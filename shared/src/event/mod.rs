//! Events: the one normalised `Event` that every wire format (Segment, PostHog) becomes, its
//! validation, and timestamp correction. `wire` decodes request bodies; `body` undoes
//! transport encodings (gzip, form posts).

pub mod body;
pub mod time;
pub mod wire;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::fmt;

/// Longest accepted id (userId, anonymousId, groupId, previousId) and name, in characters.
pub const MAX_ID_CHARS: usize = 255;
/// Deepest accepted nesting of properties, traits, context and integrations (MariaDB's JSON
/// functions stop at 32 levels; the column itself counts as one).
pub const MAX_JSON_DEPTH: usize = 30;
/// Longest accepted messageId, in characters (analytics-node sends over 50).
pub const MAX_MESSAGE_ID_CHARS: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        Self::Track,
        Self::Identify,
        Self::Page,
        Self::Screen,
        Self::Group,
        Self::Alias,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Track => "track",
            Self::Identify => "identify",
            Self::Page => "page",
            Self::Screen => "screen",
            Self::Group => "group",
            Self::Alias => "alias",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub type JsonObject = Map<String, Value>;

/// One analytics event, as stored. Built only by `wire` (or decoded from the queue and
/// re-checked with [`Event::validate`]). Ingest holds its JSON fields parsed; the consumer
/// keeps them as the raw text it stores ([`QueuedEvent`]), which spares it parsing and
/// re-serialising every property.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event<J = JsonObject> {
    pub message_id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// `event` of a track, `name` of a page or screen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<J>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traits: Option<J>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<J>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrations: Option<J>,
    /// When it happened, corrected for the client's clock skew.
    pub timestamp: DateTime<Utc>,
    /// The timestamp as the client sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_timestamp: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<DateTime<Utc>>,
    /// The corrected timestamp was absurd (far future) and was replaced by the receipt time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timestamp_clamped: bool,
}

/// An event as the consumer reads it from the queue: JSON fields as raw text.
pub type QueuedEvent = Event<Box<RawValue>>;

/// A JSON object field of an event, parsed or raw.
pub trait JsonField {
    /// Nesting depth (an object of scalars is 1), or `None` when it is not a JSON object.
    fn object_depth(&self) -> Option<usize>;
}

impl JsonField for JsonObject {
    fn object_depth(&self) -> Option<usize> {
        Some(object_depth(self))
    }
}

impl JsonField for Box<RawValue> {
    fn object_depth(&self) -> Option<usize> {
        raw_object_depth(self.get())
    }
}

/// Why an event cannot be accepted; the message is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EventProblem(pub String);

impl<J: JsonField> Event<J> {
    /// The invariants every stored event holds. Ingest builds events that hold them; the
    /// consumer checks again because the queue is input too.
    pub fn validate(&self) -> Result<(), EventProblem> {
        check_text("messageId", &self.message_id, MAX_MESSAGE_ID_CHARS)?;
        if self.message_id.is_empty() {
            return Err(problem("messageId must not be empty"));
        }
        for (field, value) in [
            ("userId", &self.user_id),
            ("anonymousId", &self.anonymous_id),
            ("groupId", &self.group_id),
            ("previousId", &self.previous_id),
            ("name", &self.name),
        ] {
            if let Some(value) = value {
                check_text(field, value, MAX_ID_CHARS)?;
            }
        }
        for (field, object) in [
            ("properties", &self.properties),
            ("traits", &self.traits),
            ("context", &self.context),
            ("integrations", &self.integrations),
        ] {
            match object.as_ref().map(JsonField::object_depth) {
                None => {}
                Some(None) => return Err(problem(format!("{field} must be a JSON object"))),
                Some(Some(depth)) if depth > MAX_JSON_DEPTH => {
                    return Err(problem(format!(
                        "{field} is nested deeper than {MAX_JSON_DEPTH} levels"
                    )));
                }
                Some(Some(_)) => {}
            }
        }
        if self.user_id.is_none() && self.anonymous_id.is_none() {
            return Err(problem("either userId or anonymousId is required"));
        }
        match self.kind {
            EventType::Track if self.name.is_none() => Err(problem("a track needs an event name")),
            EventType::Group if self.group_id.is_none() => Err(problem("a group call needs a groupId")),
            EventType::Alias if self.previous_id.is_none() || self.user_id.is_none() => {
                Err(problem("an alias needs both previousId and userId"))
            }
            _ => Ok(()),
        }
    }
}

/// Nesting depth of an object (an object of scalars is 1), without recursion.
fn object_depth(object: &JsonObject) -> usize {
    let mut deepest = 1;
    let mut stack: Vec<(&Value, usize)> = object.values().map(|value| (value, 2)).collect();
    while let Some((value, depth)) = stack.pop() {
        match value {
            Value::Object(inner) => {
                deepest = deepest.max(depth);
                stack.extend(inner.values().map(|value| (value, depth + 1)));
            }
            Value::Array(items) => {
                deepest = deepest.max(depth);
                stack.extend(items.iter().map(|value| (value, depth + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// The same depth, counted on raw JSON text (known to be valid JSON) without parsing it.
fn raw_object_depth(json: &str) -> Option<usize> {
    if !json.trim_start().starts_with('{') {
        return None;
    }
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for byte in json.bytes() {
        match (in_string, escaped, byte) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'{' | b'[') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, _, b'}' | b']') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Some(deepest)
}

fn problem(message: impl Into<String>) -> EventProblem {
    EventProblem(message.into())
}

/// Ids and names end up in indexes, logs and URLs: bounded, and free of control characters
/// (NUL, newlines for log injection).
pub(crate) fn check_text(field: &str, value: &str, max_chars: usize) -> Result<(), EventProblem> {
    if value.chars().count() > max_chars {
        return Err(problem(format!("{field} is longer than {max_chars} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(problem(format!("{field} contains control characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track() -> Event {
        Event {
            message_id: "m-1".into(),
            kind: EventType::Track,
            name: Some("Signed Up".into()),
            user_id: Some("u-1".into()),
            anonymous_id: None,
            group_id: None,
            previous_id: None,
            properties: None,
            traits: None,
            context: None,
            integrations: None,
            timestamp: Utc::now(),
            original_timestamp: None,
            sent_at: None,
            timestamp_clamped: false,
        }
    }

    #[test]
    fn a_complete_track_is_valid() {
        assert_eq!(track().validate(), Ok(()));
    }

    #[test]
    fn an_event_without_any_user_is_refused() {
        let event = Event {
            user_id: None,
            ..track()
        };
        assert!(event.validate().is_err());
    }

    #[test]
    fn control_characters_in_ids_are_refused() {
        let event = Event {
            user_id: Some("a\nb".into()),
            ..track()
        };
        assert_eq!(
            event.validate(),
            Err(EventProblem("userId contains control characters".into()))
        );
    }

    #[test]
    fn deep_nesting_is_refused_by_name() {
        let mut value = serde_json::json!(1);
        for _ in 0..=MAX_JSON_DEPTH {
            value = serde_json::json!({ "a": value });
        }
        let Value::Object(properties) = value else {
            unreachable!()
        };
        let event = Event {
            properties: Some(properties),
            ..track()
        };
        assert_eq!(
            event.validate(),
            Err(EventProblem(format!(
                "properties is nested deeper than {MAX_JSON_DEPTH} levels"
            )))
        );
    }

    #[test]
    fn raw_depth_matches_parsed_depth_and_ignores_brackets_in_strings() {
        for text in [
            r#"{}"#,
            r#"{"a":1}"#,
            r#"{"a":{"b":[1,{"c":2}]}}"#,
            r#"{"a":"{[{[\"{"}"#,
            r#"{"a":[[[]]],"b":{}}"#,
        ] {
            let parsed: JsonObject = serde_json::from_str(text).expect("object");
            let raw: Box<RawValue> = serde_json::from_str(text).expect("raw");
            assert_eq!(raw.object_depth(), parsed.object_depth(), "{text}");
        }
        let raw: Box<RawValue> = serde_json::from_str("[1]").expect("raw");
        assert_eq!(raw.object_depth(), None);
    }

    #[test]
    fn a_queued_event_with_a_non_object_field_is_refused() {
        let json = serde_json::to_string(&track())
            .expect("serialises")
            .replacen('{', r#"{"properties":[1],"#, 1);
        let queued: QueuedEvent = serde_json::from_str(&json).expect("decodes");
        assert_eq!(
            queued.validate(),
            Err(EventProblem("properties must be a JSON object".into()))
        );
    }

    #[test]
    fn alias_needs_both_ids() {
        let event = Event {
            kind: EventType::Alias,
            previous_id: None,
            ..track()
        };
        assert!(event.validate().is_err());
    }

    #[test]
    fn serialised_form_round_trips() {
        let event = track();
        let json = serde_json::to_string(&event).expect("serialises");
        let back: Event = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, event);
    }
}
