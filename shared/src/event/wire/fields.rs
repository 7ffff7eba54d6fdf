//! The field readers both wire formats share: ids, strings, objects kept as JSON text, the
//! batch's context merged under a message's, and the typed reason an event is refused.

use super::{BatchFields, Message};
use crate::event::time::{not_a_timestamp, parse_timestamp, parse_timestamp_millis, parse_timestamp_text};
use crate::event::{EventProblem, EventType, JsonObject, JsonText, check_text};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, Visitor};
use serde_json::value::{RawValue, to_raw_value};
use serde_json::{Number, Value};
use std::borrow::Cow;
use std::fmt;

/// Why one event of a request cannot be taken; shown to the client with its index.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("{0} is required")]
    Required(&'static str),
    #[error("{0} must be a string")]
    NotString(String),
    #[error("{0} must be a JSON object")]
    NotObject(String),
    #[error("{field}: {detail}")]
    Json { field: String, detail: String },
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// An element of a batch that is not an object.
    #[error("must be a JSON object")]
    NotAnEvent,
    #[error("$create_alias needs properties.alias")]
    AliasWithoutTarget,
    #[error("{0}")]
    Serialize(String),
    #[error("type {named:?} does not match the {route} endpoint")]
    TypeMismatch { named: String, route: EventType },
    #[error("unknown type {0:?}")]
    UnknownType(String),
    #[error("{0}")]
    Timestamp(String),
    #[error(transparent)]
    Problem(#[from] EventProblem),
    #[error("the event is {size} bytes; the limit is {limit} bytes per event")]
    TooLarge { size: usize, limit: usize },
}

impl EventError {
    /// The reason's code, as rejected events are filtered and counted by.
    pub fn code(&self) -> &'static str {
        match self {
            EventError::Required(_) | EventError::AliasWithoutTarget => "missing_field",
            EventError::NotString(_) | EventError::NotObject(_) | EventError::Json { .. } => "invalid_field",
            EventError::Serialize(_) => "invalid_field",
            EventError::InvalidJson(_) => "invalid_json",
            EventError::NotAnEvent => "not_an_event",
            EventError::TypeMismatch { .. } => "type_mismatch",
            EventError::UnknownType(_) => "unknown_type",
            EventError::Timestamp(_) => "invalid_timestamp",
            EventError::Problem(_) => "invalid_value",
            EventError::TooLarge { .. } => "event_too_large",
        }
    }
}

pub(super) fn generated_message_id() -> String {
    crate::ids::new_public_id().to_string()
}

pub(super) fn batch_sent_at(batch: &BatchFields) -> Result<Option<DateTime<Utc>>, EventError> {
    batch.sent_at.as_ref().map_or(Ok(None), |value| parse_timestamp("sentAt", value).map_err(EventError::Timestamp))
}

/// A message's context or integrations over the batch's (the message wins per key).
pub(super) fn merged<'a>(
    batch: Option<&JsonObject>,
    message: Option<JsonText<'a>>,
) -> Result<Option<JsonText<'a>>, EventError> {
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

/// A small top-level field (an id, a name, a time) as sent: text borrowed from the body
/// unless written with escapes, so that reading it costs no allocation.
#[derive(Debug, PartialEq)]
pub(super) enum Scalar<'a> {
    Null,
    Text(Cow<'a, str>),
    Number(Number),
    /// An object, an array or a boolean: never what a scalar field may hold.
    Other,
}

impl From<Value> for Scalar<'_> {
    fn from(value: Value) -> Self {
        match value {
            Value::Null => Scalar::Null,
            Value::String(text) => Scalar::Text(Cow::Owned(text)),
            Value::Number(number) => Scalar::Number(number),
            _ => Scalar::Other,
        }
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Null)
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Text(Cow::Borrowed(text)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Text(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Text(Cow::Owned(text)))
    }

    fn visit_u64<E: de::Error>(self, number: u64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Number(number.into()))
    }

    fn visit_i64<E: de::Error>(self, number: i64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Number(number.into()))
    }

    fn visit_f64<E: de::Error>(self, number: f64) -> Result<Scalar<'de>, E> {
        Ok(Number::from_f64(number).map_or(Scalar::Other, Scalar::Number))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Other)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

/// A small top-level field, read; absent is `null`.
pub(super) fn take_scalar<'a>(message: &mut Message<'a>, field: &str) -> Result<Scalar<'a>, EventError> {
    match message.remove(field) {
        None => Ok(Scalar::Null),
        Some(text) => serde_json::from_str(text.get())
            .map_err(|err| EventError::Json { field: field.to_string(), detail: err.to_string() }),
    }
}

pub(super) fn take_string<'a>(message: &mut Message<'a>, field: &str) -> Result<Option<Cow<'a, str>>, EventError> {
    match take_scalar(message, field)? {
        Scalar::Null => Ok(None),
        Scalar::Text(text) => Ok(Some(text)),
        _ => Err(EventError::NotString(field.to_string())),
    }
}

/// A time field: see `parse_timestamp` for the forms taken; absent is `None`.
pub(super) fn timestamp_of(field: &str, value: Scalar<'_>) -> Result<Option<DateTime<Utc>>, EventError> {
    match value {
        Scalar::Null => Ok(None),
        Scalar::Text(text) => parse_timestamp_text(field, &text),
        Scalar::Number(number) => parse_timestamp_millis(field, &number),
        Scalar::Other => Err(not_a_timestamp(field)),
    }
    .map_err(EventError::Timestamp)
}

/// Ids may come as strings or integers (some SDKs send numeric user ids).
pub(super) fn take_id<'a>(
    message: &mut Message<'a>,
    field: &str,
    max_chars: usize,
) -> Result<Option<Cow<'a, str>>, EventError> {
    id_value(field, take_scalar(message, field)?, max_chars)
}

pub(super) fn id_value<'a>(
    field: &str,
    value: Scalar<'a>,
    max_chars: usize,
) -> Result<Option<Cow<'a, str>>, EventError> {
    let id = match value {
        Scalar::Null => return Ok(None),
        Scalar::Text(text) if text.is_empty() => return Ok(None),
        Scalar::Text(text) => text,
        Scalar::Number(number) if number.is_i64() || number.is_u64() => Cow::Owned(number.to_string()),
        // `42.0` is the integer 42 (JSON has one number type).
        Scalar::Number(number) if number.as_f64().is_some_and(|n| n.fract() == 0.0 && n.abs() < 9.0e15) => {
            Cow::Owned(format!("{}", number.as_f64().unwrap_or_default() as i64))
        }
        _ => return Err(EventError::NotString(field.to_string())),
    };
    check_text(field, &id, max_chars)?;
    Ok(Some(id))
}

/// A JSON-object field kept as text, borrowed from the body (checked in full by
/// `Event::validate`); `null` is absent.
pub(super) fn take_object<'a>(message: &mut Message<'a>, field: &str) -> Result<Option<JsonText<'a>>, EventError> {
    match message.remove(field) {
        None => Ok(None),
        Some(text) if text.get().trim() == "null" => Ok(None),
        Some(text) if text.get().trim_start().starts_with('{') => Ok(Some(JsonText::Borrowed(text))),
        Some(_) => Err(EventError::NotObject(field.to_string())),
    }
}

pub(super) fn parse_object(field: &str, text: &RawValue) -> Result<JsonObject, EventError> {
    serde_json::from_str(text.get())
        .map_err(|err| EventError::Json { field: field.to_string(), detail: err.to_string() })
}

pub(super) fn object_property(object: &JsonObject, field: &str) -> Result<Option<JsonText<'static>>, EventError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(inner)) => as_text(inner).map(Some),
        Some(_) => Err(EventError::NotObject(field.to_string())),
    }
}

pub(super) fn as_text(object: &JsonObject) -> Result<JsonText<'static>, EventError> {
    to_raw_value(object).map(JsonText::Owned).map_err(|err| EventError::Serialize(err.to_string()))
}

pub(super) fn optional_object(field: &str, value: Option<Value>) -> Result<Option<JsonObject>, EventError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(object)) => Ok(Some(object)),
        Some(_) => Err(EventError::NotObject(field.to_string())),
    }
}

pub(super) fn truncated(text: &str) -> String {
    text.chars().take(40).collect()
}
