//! The field readers both wire formats share: ids, strings, objects kept as JSON text, the
//! batch's context merged under a message's, and the typed reason an event is refused.

use super::{BatchFields, Message};
use crate::event::time::parse_timestamp;
use crate::event::{EventProblem, EventType, JsonObject, JsonText, check_text};
use chrono::{DateTime, Utc};
use serde_json::Value;
use serde_json::value::{RawValue, to_raw_value};

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

/// A small top-level field, parsed; absent is `null`.
pub(super) fn take_value(message: &mut Message<'_>, field: &str) -> Result<Value, EventError> {
    match message.remove(field) {
        None => Ok(Value::Null),
        Some(text) => serde_json::from_str(text.get())
            .map_err(|err| EventError::Json { field: field.to_string(), detail: err.to_string() }),
    }
}

pub(super) fn take_string(message: &mut Message<'_>, field: &str) -> Result<Option<String>, EventError> {
    match take_value(message, field)? {
        Value::Null => Ok(None),
        Value::String(text) => Ok(Some(text)),
        _ => Err(EventError::NotString(field.to_string())),
    }
}

/// Ids may come as strings or integers (some SDKs send numeric user ids).
pub(super) fn take_id(message: &mut Message<'_>, field: &str, max_chars: usize) -> Result<Option<String>, EventError> {
    id_value(field, take_value(message, field)?, max_chars)
}

pub(super) fn id_value(field: &str, value: Value, max_chars: usize) -> Result<Option<String>, EventError> {
    let id = match value {
        Value::Null => return Ok(None),
        Value::String(text) if text.is_empty() => return Ok(None),
        Value::String(text) => text,
        Value::Number(number) if number.is_i64() || number.is_u64() => number.to_string(),
        // `42.0` is the integer 42 (JSON has one number type).
        Value::Number(number) if number.as_f64().is_some_and(|n| n.fract() == 0.0 && n.abs() < 9.0e15) => {
            format!("{}", number.as_f64().unwrap_or_default() as i64)
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
