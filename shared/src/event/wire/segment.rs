//! Segment messages (analytics-python, analytics-node, analytics-next, RudderStack): the type
//! from the body or the route, timestamps corrected by `sentAt`, the batch's context merged.

use super::BatchFields;
use super::Message;
use super::fields::*;
use crate::config::Limits;
use crate::event::time::corrected_timestamp;
use crate::event::{Event, EventType, MAX_ID_CHARS, MAX_MESSAGE_ID_CHARS, page_name};
use chrono::{DateTime, Utc};

pub(super) fn segment_event<'a>(
    mut message: Message<'a>,
    route_kind: Option<EventType>,
    batch: &BatchFields,
    received_at: DateTime<Utc>,
    limits: &Limits,
) -> Result<Event<'a>, EventError> {
    let kind = match (route_kind, take_string(&mut message, "type")?) {
        (Some(route), Some(named)) if named != route.as_str() => {
            return Err(EventError::TypeMismatch { named: named.into_owned(), route });
        }
        (Some(route), _) => route,
        (None, Some(named)) => EventType::parse(&named).ok_or_else(|| EventError::UnknownType(truncated(&named)))?,
        (None, None) => return Err(EventError::Required("type")),
    };
    let name = match kind {
        EventType::Track => take_string(&mut message, "event")?,
        EventType::Page | EventType::Screen => take_string(&mut message, "name")?,
        _ => None,
    };
    let original = match take_scalar(&mut message, "timestamp")? {
        Scalar::Null => timestamp_of("originalTimestamp", take_scalar(&mut message, "originalTimestamp")?)?,
        value => timestamp_of("timestamp", value)?,
    };
    let sent_at = match take_scalar(&mut message, "sentAt")? {
        Scalar::Null => batch_sent_at(batch)?,
        value => timestamp_of("sentAt", value)?,
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
        message_id: take_id(&mut message, "messageId", MAX_MESSAGE_ID_CHARS)?
            .unwrap_or_else(|| generated_message_id().into()),
        kind,
        name: match kind {
            EventType::Track => name.filter(|name| !name.is_empty()),
            _ => page_name(name),
        },
        user_id: take_id(&mut message, "userId", MAX_ID_CHARS)?,
        anonymous_id: take_id(&mut message, "anonymousId", MAX_ID_CHARS)?,
        group_id: take_id(&mut message, "groupId", MAX_ID_CHARS)?,
        group_type: None,
        previous_id: take_id(&mut message, "previousId", MAX_ID_CHARS)?,
        properties: take_object(&mut message, "properties")?,
        traits,
        context,
        integrations: merged(batch.integrations.as_ref(), take_object(&mut message, "integrations")?)?,
        timestamp,
        original_timestamp: original,
        sent_at,
        timestamp_clamped,
        member_of: None,
        member_types: None,
    })
}
