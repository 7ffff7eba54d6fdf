//! PostHog events (posthog-js, posthog-python, posthog-node): identity and person
//! properties live in `properties`; `$identify`, `$create_alias`, `$groupidentify`,
//! `$pageview` and `$screen` map to Segment's types, everything else is a track.

use super::BatchFields;
use super::Message;
use super::fields::*;
use crate::config::Limits;
use crate::event::time::corrected_timestamp;
use crate::event::{Event, EventType, JsonObject, MAX_ID_CHARS, MAX_MESSAGE_ID_CHARS, check_text, page_name};
use crate::ids::as_compared;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::borrow::Cow;

pub(super) fn posthog_event<'a>(
    mut message: Message<'a>,
    batch: &BatchFields,
    received_at: DateTime<Utc>,
    limits: &Limits,
) -> Result<Event<'a>, EventError> {
    let event_name = take_string(&mut message, "event")?.ok_or(EventError::Required("event"))?;
    check_text("event", &event_name, MAX_ID_CHARS)?;
    // PostHog keeps identity in properties: these are parsed.
    let mut properties = match take_object(&mut message, "properties")? {
        Some(text) => parse_object("properties", &text)?,
        None => Map::new(),
    };
    let distinct_id = match take_scalar(&mut message, "distinct_id")? {
        Scalar::Null => match properties.get("distinct_id").or_else(|| properties.get("$distinct_id")) {
            Some(value) => id_value("distinct_id", value.clone().into(), MAX_ID_CHARS)?,
            None => None,
        },
        value => id_value("distinct_id", value, MAX_ID_CHARS)?,
    }
    .ok_or(EventError::Required("distinct_id"))?;
    let original = timestamp_of("timestamp", take_scalar(&mut message, "timestamp")?)?;
    let sent_at = batch_sent_at(batch)?;
    let (timestamp, timestamp_clamped) = corrected_timestamp(received_at, original, sent_at, limits.future_tolerance);
    let property_id = |properties: &JsonObject, name: &str| -> Result<Option<Cow<'a, str>>, EventError> {
        properties.get(name).cloned().map_or(Ok(None), |value| id_value(name, value.into(), MAX_ID_CHARS))
    };
    // An anonymous browser's distinct_id is its device id (posthog-js).
    let is_anonymous = properties.get("$device_id").and_then(Value::as_str) == Some(&*distinct_id);
    let (mut user_id, mut anonymous_id) =
        if is_anonymous { (None, Some(distinct_id.clone())) } else { (Some(distinct_id.clone()), None) };
    let (mut group_id, mut previous_id, mut traits, mut name) = (None, None, None, None);
    let mut group_type = None;
    // A personless event (posthog-python without a distinct_id sends a random one) makes no
    // member, as it makes no person in PostHog.
    let personless = properties.get("$process_person_profile") == Some(&Value::Bool(false));
    let mut named = if personless { None } else { groups_named(&properties) };
    let kind = match &*event_name {
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
            let group_key = property_id(&properties, "$group_key")?;
            let mut group_traits = match properties.get("$group_set") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(set)) => set.clone(),
                Some(_) => return Err(EventError::NotObject("$group_set".into())),
            };
            if let Some(group_type) = properties.get("$group_type").filter(|group_type| !group_type.is_null()) {
                group_traits.insert("$group_type".into(), group_type.clone());
            }
            group_type = self::group_type(&properties);
            // In PostHog a user is in a group by the events that name it (`$groups`, which
            // posthog-js's `$groupidentify` carries too), not by this call: the server SDKs
            // send it under a distinct_id of their own (`$company_acme`, a random uuid).
            named.get_or_insert_default();
            group_id = group_key;
            traits = Some(as_text(&group_traits)?);
            EventType::Group
        }
        "$pageview" => {
            name = page_name(properties.get("title").and_then(Value::as_str).map(|title| Cow::Owned(title.to_owned())));
            EventType::Page
        }
        "$screen" => {
            name = page_name(
                properties.get("$screen_name").and_then(Value::as_str).map(|screen| Cow::Owned(screen.to_owned())),
            );
            EventType::Screen
        }
        _ => {
            name = Some(event_name.clone());
            EventType::Track
        }
    };
    properties.remove("token");
    let (member_types, member_of) = named.map(|named| named.into_iter().unzip()).unzip();
    let browser = browser_context(&properties).map(|context| as_text(&context)).transpose()?;
    Ok(Event {
        message_id: take_id(&mut message, "uuid", MAX_MESSAGE_ID_CHARS)?
            .unwrap_or_else(|| generated_message_id().into()),
        kind,
        name: name.map(within_id_chars),
        user_id,
        anonymous_id,
        group_id,
        group_type: group_type.map(Cow::Owned),
        member_types,
        previous_id,
        properties: Some(as_text(&properties)?),
        traits,
        context: merged(batch.context.as_ref(), browser)?,
        integrations: None,
        timestamp,
        original_timestamp: original,
        sent_at,
        timestamp_clamped,
        member_of,
    })
}

/// The groups an event names its user a member of, as (type, key): `$groups` (group type to
/// group key), which posthog-js registers on every event after `group()` and the server SDKs
/// send from `capture(groups=…)`. `None` when it names none. What can be no group (a key that
/// is an object or too long, a type too long) is passed over, as PostHog keeps such an event:
/// it stays in the properties. More than `MAX_GROUPS_PER_EVENT` are refused by
/// `Event::validate`.
pub(crate) fn groups_named<'a>(properties: &JsonObject) -> Option<Vec<(Cow<'a, str>, Cow<'a, str>)>> {
    let Some(Value::Object(groups)) = properties.get("$groups") else { return None };
    let mut named: Vec<(Cow<'a, str>, Cow<'a, str>)> = Vec::new();
    for (kind, key) in groups {
        if let Ok(Some(id)) = id_value("$groups", key.clone().into(), MAX_ID_CHARS)
            && is_group_type(kind)
        {
            // Types that SQL compares equal (`company`, `company `) name one group.
            let compared = (as_compared(kind), as_compared(&id));
            if !named.iter().any(|(known, known_id)| (as_compared(known), as_compared(known_id)) == compared) {
                named.push((Cow::Owned(kind.clone()), id));
            }
        }
    }
    (!named.is_empty()).then_some(named)
}

/// The type of a `$groupidentify`'s group, as `$groups` names it; none where it can be no
/// type (it stays in the traits).
pub(crate) fn group_type(properties: &JsonObject) -> Option<String> {
    properties.get("$group_type").and_then(Value::as_str).filter(|kind| is_group_type(kind)).map(str::to_owned)
}

/// Whether `kind` can be a group's type: what an id can be, and not empty (the type of groups
/// of calls that name none).
fn is_group_type(kind: &str) -> bool {
    !kind.is_empty() && check_text("a group type", kind, MAX_ID_CHARS).is_ok()
}

/// A page's or screen's name cut to the longest accepted, borrowed when it fits.
fn within_id_chars(name: Cow<'_, str>) -> Cow<'_, str> {
    match name.char_indices().nth(MAX_ID_CHARS) {
        None => name,
        Some((end, _)) => Cow::Owned(name[..end].to_owned()),
    }
}

/// What PostHog's SDKs say of the library and the browser, put where Segment's SDKs put it
/// (`context.library`, `userAgent`, `page`, `screen`, `os`, `locale`, `timezone`), so that
/// questions about pages and browsers read the same for every SDK; the properties stay as sent.
fn browser_context(properties: &JsonObject) -> Option<JsonObject> {
    // posthog-js writes `$direct` for "no referrer".
    let present =
        |name: &str| properties.get(name).filter(|value| !value.is_null() && value.as_str() != Some("$direct"));
    let object = |pairs: &[(&str, &str)]| -> Option<Value> {
        let object: JsonObject = pairs
            .iter()
            .filter_map(|(from, to)| present(from).map(|value| ((*to).to_owned(), value.clone())))
            .collect();
        (!object.is_empty()).then_some(Value::Object(object))
    };
    let mut context = Map::new();
    let mut add = |name: &str, value: Option<Value>| {
        if let Some(value) = value {
            context.insert(name.to_owned(), value);
        }
    };
    if present("$lib").is_some() {
        add("library", object(&[("$lib", "name"), ("$lib_version", "version")]));
    }
    add("userAgent", present("$raw_user_agent").cloned());
    // `title` is the page's only beside a page of posthog-js's (a server SDK's may be anything).
    let page = if present("$current_url").is_some() || present("$pathname").is_some() {
        object(&[("$current_url", "url"), ("$pathname", "path"), ("$referrer", "referrer"), ("title", "title")])
    } else {
        object(&[("$referrer", "referrer")])
    };
    add("page", page);
    add("screen", object(&[("$screen_width", "width"), ("$screen_height", "height")]));
    add("os", object(&[("$os", "name"), ("$os_version", "version")]));
    add("locale", present("$browser_language").cloned());
    add("timezone", present("$timezone").cloned());
    (!context.is_empty()).then_some(context)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn posthog_js_properties_fill_the_context_segment_sdks_send() {
        let properties = json!({
            "$lib": "web", "$lib_version": "1.449.2", "$raw_user_agent": "Mozilla/5.0 HeadlessChrome",
            "$current_url": "http://127.0.0.1:5/shop?q=1", "$pathname": "/shop", "$referrer": "$direct",
            "title": "Shop", "$screen_width": 1280, "$screen_height": 900, "$os": "Linux", "$timezone": "UTC",
            "plan": "pro"
        });
        let context = browser_context(properties.as_object().expect("object")).expect("a context");
        assert_eq!(
            Value::Object(context),
            json!({
                "library": {"name": "web", "version": "1.449.2"},
                "userAgent": "Mozilla/5.0 HeadlessChrome",
                "page": {"url": "http://127.0.0.1:5/shop?q=1", "path": "/shop", "title": "Shop"},
                "screen": {"width": 1280, "height": 900},
                "os": {"name": "Linux"},
                "timezone": "UTC"
            })
        );
        let server = json!({"plan": "pro", "title": "Chief"});
        assert_eq!(browser_context(server.as_object().expect("object")), None, "a server SDK's event");
    }
}
