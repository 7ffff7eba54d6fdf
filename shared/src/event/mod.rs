//! Events: the one normalised `Event` that every wire format (Segment, PostHog) becomes, its
//! validation, and timestamp correction. `wire` decodes request bodies; `body` undoes
//! transport encodings (gzip, form posts).

pub mod body;
pub mod quarantine;
pub mod time;
pub mod wire;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

/// Longest accepted id (userId, anonymousId, groupId, previousId) and name, in characters.
pub const MAX_ID_CHARS: usize = 255;
/// Deepest accepted nesting of properties, traits, context and integrations (MariaDB's JSON
/// functions stop at 32 levels; the column itself counts as one).
pub const MAX_JSON_DEPTH: usize = 30;
/// Longest accepted messageId, in characters (analytics-node sends over 50).
pub const MAX_MESSAGE_ID_CHARS: usize = 128;
/// Most groups one event may name its user a member of (PostHog allows 5 group types).
pub const MAX_GROUPS_PER_EVENT: usize = 5;

/// A group as stored: its type and its id. PostHog's groups have a type (`company`), within
/// which their key is unique; a group call of Segment's or RudderStack's names none: `""`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupRef<'a> {
    pub kind: &'a str,
    pub id: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    pub const ALL: [EventType; 6] = [Self::Track, Self::Identify, Self::Page, Self::Screen, Self::Group, Self::Alias];

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

/// A JSON object as text, carried from the request to its column without being rebuilt:
/// borrowed from the request or the queue message, or owned where it was built.
pub type JsonText<'a> = Cow<'a, RawValue>;

/// One analytics event, as stored. Built only by `wire` (or decoded from the queue and
/// re-checked with [`Event::validate`]). Properties, traits, context and integrations stay
/// JSON text from request to column: checked, never rebuilt value by value.
///
/// Its text is borrowed where it can be: ingest borrows the JSON objects it passes on unchanged
/// from the request body (its ids are its own), and the consumer decodes the queue message into an `Event` that borrows
/// every id and object from the message (an id holding escapes is the one copy), so an event
/// costs no allocation between the queue and the statement's values (but for the list of
/// groups a PostHog event names, `member_of`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event<'a> {
    #[serde(borrow)]
    pub message_id: Cow<'a, str>,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// `event` of a track, `name` of a page or screen.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none", deserialize_with = "borrowed::text")]
    pub name: Option<Cow<'a, str>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none", deserialize_with = "borrowed::text")]
    pub user_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none", deserialize_with = "borrowed::text")]
    pub anonymous_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none", deserialize_with = "borrowed::text")]
    pub group_id: Option<Cow<'a, str>>,
    /// The type of a group call's group (PostHog's `$group_type`); none for Segment's.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none", deserialize_with = "borrowed::text")]
    pub group_type: Option<Cow<'a, str>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none", deserialize_with = "borrowed::text")]
    pub previous_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none", deserialize_with = "borrowed::json")]
    pub properties: Option<JsonText<'a>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none", deserialize_with = "borrowed::json")]
    pub traits: Option<JsonText<'a>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none", deserialize_with = "borrowed::json")]
    pub context: Option<JsonText<'a>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none", deserialize_with = "borrowed::json")]
    pub integrations: Option<JsonText<'a>>,
    /// When it happened, corrected for the client's clock skew.
    #[serde(with = "time::rfc3339")]
    pub timestamp: DateTime<Utc>,
    /// The timestamp as the client sent it.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::rfc3339::option")]
    pub original_timestamp: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::rfc3339::option")]
    pub sent_at: Option<DateTime<Utc>>,
    /// The corrected timestamp was absurd (far future) and was replaced by the receipt time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timestamp_clamped: bool,
    /// The groups its user is a member of, where the SDK names them on the event (PostHog's
    /// `$groups`, on any event). `None`: what the type says (a group call's user joins its
    /// group; no other type names one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_of: Option<Vec<Cow<'a, str>>>,
    /// The types of `member_of`'s groups, in its order (PostHog's `$groups` is type to key).
    /// A consumer of a release before group types reads `member_of` alone; a message of such
    /// a release has none (`with_group_types`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_types: Option<Vec<Cow<'a, str>>>,
}

pub(crate) use borrowed::BorrowedText;

/// Borrowing decoders for `Event`'s optional fields: serde borrows a `Cow<str>` field only
/// when it is not wrapped in an `Option`, and never borrows a `Cow<RawValue>`.
mod borrowed {
    use serde::de::{Deserialize, Deserializer, Error, Visitor};
    use serde_json::value::RawValue;
    use std::borrow::Cow;
    use std::fmt;

    pub fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Cow<'de, str>>, D::Error> {
        Ok(Option::<BorrowedText<'de>>::deserialize(deserializer)?.map(|text| text.0))
    }

    /// The object's text, borrowed from the input (which is therefore text, never a reader).
    pub fn json<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<super::JsonText<'de>>, D::Error> {
        Ok(Option::<&'de RawValue>::deserialize(deserializer)?.map(Cow::Borrowed))
    }

    /// A string borrowed from the input unless it holds escapes.
    pub(crate) struct BorrowedText<'a>(pub Cow<'a, str>);

    impl<'de> Deserialize<'de> for BorrowedText<'de> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_str(TextVisitor)
        }
    }

    struct TextVisitor;

    impl<'de> Visitor<'de> for TextVisitor {
        type Value = BorrowedText<'de>;

        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
            formatter.write_str("a string")
        }

        fn visit_borrowed_str<E: Error>(self, text: &'de str) -> Result<BorrowedText<'de>, E> {
            Ok(BorrowedText(Cow::Borrowed(text)))
        }

        fn visit_str<E: Error>(self, text: &str) -> Result<BorrowedText<'de>, E> {
            Ok(BorrowedText(Cow::Owned(text.to_owned())))
        }

        fn visit_string<E: Error>(self, text: String) -> Result<BorrowedText<'de>, E> {
            Ok(BorrowedText(Cow::Owned(text)))
        }
    }
}

/// Why an event cannot be accepted; the message is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EventProblem(pub String);

impl Event<'_> {
    /// The hour (since 1970) its dedupe key leads with: of its own time as the client sent
    /// it, else of its corrected time. A retry carries the same, so it meets its first copy.
    pub fn dedupe_hour(&self) -> u32 {
        let at = self.original_timestamp.unwrap_or(self.timestamp);
        u32::try_from(at.timestamp().div_euclid(3600)).unwrap_or(0)
    }

    /// The ids in this event that name a person (erasure follows these).
    pub fn subject_ids(&self) -> impl Iterator<Item = &str> {
        [&self.user_id, &self.anonymous_id, &self.previous_id].into_iter().filter_map(|id| id.as_deref())
    }

    /// The same event owning all its text.
    #[cfg(test)]
    pub(crate) fn into_owned(self) -> Event<'static> {
        let text = |text: Option<Cow<'_, str>>| text.map(|text| Cow::Owned(text.into_owned()));
        let json = |json: Option<Cow<'_, RawValue>>| json.map(|json| Cow::Owned(json.into_owned()));
        Event {
            message_id: Cow::Owned(self.message_id.into_owned()),
            kind: self.kind,
            name: text(self.name),
            user_id: text(self.user_id),
            anonymous_id: text(self.anonymous_id),
            group_id: text(self.group_id),
            group_type: text(self.group_type),
            previous_id: text(self.previous_id),
            properties: json(self.properties),
            traits: json(self.traits),
            context: json(self.context),
            integrations: json(self.integrations),
            timestamp: self.timestamp,
            original_timestamp: self.original_timestamp,
            sent_at: self.sent_at,
            timestamp_clamped: self.timestamp_clamped,
            member_of: self.member_of.map(|groups| groups.into_iter().map(|id| Cow::Owned(id.into_owned())).collect()),
            member_types: self
                .member_types
                .map(|types| types.into_iter().map(|kind| Cow::Owned(kind.into_owned())).collect()),
        }
    }

    /// The group of a group call.
    pub fn group_called(&self) -> Option<GroupRef<'_>> {
        let id = self.group_id.as_deref().filter(|_| self.kind == EventType::Group)?;
        Some(GroupRef { kind: self.group_type.as_deref().unwrap_or_default(), id })
    }

    /// The groups whose member its user (or anonymous id) becomes.
    pub fn groups_joined(&self) -> impl Iterator<Item = GroupRef<'_>> {
        let implied = self.member_of.is_none().then(|| self.group_called()).flatten();
        let types = self.member_types.iter().flatten().map(|kind| &**kind).chain(std::iter::repeat(""));
        self.member_of.iter().flatten().zip(types).map(|(id, kind)| GroupRef { kind, id }).chain(implied)
    }

    /// The event as this release queues it: one of a release before group types, which a
    /// PostHog event's groups came in without their types, has them read again from what it
    /// kept of PostHog's (`$groups` in its properties, a `$groupidentify`'s `$group_type`), so
    /// that a deploy's queued events join the same groups as the events after it.
    pub fn with_group_types(mut self) -> Self {
        let Some(keys) = &self.member_of else { return self };
        if self.member_types.is_some() {
            return self;
        }
        let properties: JsonObject =
            self.properties.as_ref().and_then(|text| serde_json::from_str(text.get()).ok()).unwrap_or_default();
        // A personless event names no member (nor did it then); one whose types name more
        // groups than an event may keeps its keys as that release stored them, untyped.
        let personless = properties.get("$process_person_profile") == Some(&Value::Bool(false));
        match wire::groups_named(&properties).unwrap_or_default() {
            named if !personless && named.len() <= MAX_GROUPS_PER_EVENT => {
                let (types, ids) = named.into_iter().unzip();
                (self.member_types, self.member_of) = (Some(types), Some(ids));
            }
            _ => self.member_types = Some(vec![Cow::Borrowed(""); keys.len()]),
        }
        if self.kind == EventType::Group && self.group_type.is_none() {
            self.group_type = wire::group_type(&properties).map(Cow::Owned);
        }
        self
    }

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
            ("groupType", &self.group_type),
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
            if let Some(text) = object {
                check_json_object(field, text)?;
            }
        }
        if self.user_id.is_none() && self.anonymous_id.is_none() {
            return Err(problem("either userId or anonymousId is required"));
        }
        let groups = self.member_of.as_deref().unwrap_or_default();
        if groups.len() > MAX_GROUPS_PER_EVENT {
            return Err(problem(format!(
                "an event names at most {MAX_GROUPS_PER_EVENT} groups of its user; this one names {}",
                groups.len()
            )));
        }
        for group in groups {
            check_text("$groups", group, MAX_ID_CHARS)?;
            if group.is_empty() {
                return Err(problem("a group id must not be empty"));
            }
        }
        if let Some(types) = &self.member_types {
            if types.len() != groups.len() {
                return Err(problem("member_types names a type for each group of member_of"));
            }
            for kind in types {
                check_text("a $groups type", kind, MAX_ID_CHARS)?;
            }
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

/// A page's or screen's name as stored: none when it is empty or only spaces, which the
/// database compares equal to the empty name the rollups keep for nameless events (a page
/// named " " and a page without a name would share a rollup row, and disagree with the raw rows).
pub(crate) fn page_name(name: Option<Cow<'_, str>>) -> Option<Cow<'_, str>> {
    name.filter(|name| !name.trim_end_matches(' ').is_empty())
}

/// Checks a JSON field as the database will: an object, nested at most [`MAX_JSON_DEPTH`]
/// levels, numbers in range, strings well escaped. Walks the text without building values.
pub fn check_json_object(field: &str, text: &RawValue) -> Result<(), EventProblem> {
    if !text.get().trim_start().starts_with('{') {
        return Err(problem(format!("{field} must be a JSON object")));
    }
    match serde_json::from_str::<JsonDepth>(text.get()) {
        Ok(JsonDepth(depth)) if depth <= MAX_JSON_DEPTH => Ok(()),
        Ok(_) => Err(problem(format!("{field} is nested deeper than {MAX_JSON_DEPTH} levels"))),
        Err(err) if err.to_string().contains("recursion limit") => {
            Err(problem(format!("{field} is nested deeper than {MAX_JSON_DEPTH} levels")))
        }
        Err(err) => Err(problem(format!("{field} is not valid JSON: {err}"))),
    }
}

/// The nesting depth of a JSON value (a scalar is 0, an object of scalars 1).
struct JsonDepth(usize);

impl<'de> Deserialize<'de> for JsonDepth {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonDepthVisitor)
    }
}

struct JsonDepthVisitor;

impl<'de> serde::de::Visitor<'de> for JsonDepthVisitor {
    type Value = JsonDepth;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<JsonDepth, E> {
        Ok(JsonDepth(0))
    }

    fn visit_i64<E>(self, _: i64) -> Result<JsonDepth, E> {
        Ok(JsonDepth(0))
    }

    fn visit_u64<E>(self, _: u64) -> Result<JsonDepth, E> {
        Ok(JsonDepth(0))
    }

    fn visit_f64<E>(self, _: f64) -> Result<JsonDepth, E> {
        Ok(JsonDepth(0))
    }

    fn visit_str<E>(self, _: &str) -> Result<JsonDepth, E> {
        Ok(JsonDepth(0))
    }

    fn visit_unit<E>(self) -> Result<JsonDepth, E> {
        Ok(JsonDepth(0))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<JsonDepth, A::Error> {
        let mut deepest = 0;
        while let Some(JsonDepth(depth)) = items.next_element()? {
            deepest = deepest.max(depth);
        }
        Ok(JsonDepth(deepest + 1))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut entries: A) -> Result<JsonDepth, A::Error> {
        let mut deepest = 0;
        while let Some((JsonDepth(_), JsonDepth(depth))) = entries.next_entry()? {
            deepest = deepest.max(depth);
        }
        Ok(JsonDepth(deepest + 1))
    }
}

fn problem(message: impl Into<String>) -> EventProblem {
    EventProblem(message.into())
}

/// Ids and names end up in indexes, logs and URLs: bounded, and free of control characters
/// (NUL, newlines for log injection).
pub(crate) fn check_text(field: &str, value: &str, max_chars: usize) -> Result<(), EventProblem> {
    // No more bytes than the limit: no more characters either (the usual case, uncounted).
    if value.len() > max_chars && value.chars().count() > max_chars {
        return Err(problem(format!("{field} is longer than {max_chars} characters")));
    }
    let control = match value.is_ascii() {
        true => value.bytes().any(|byte| byte.is_ascii_control()),
        false => value.chars().any(char::is_control),
    };
    if control {
        return Err(problem(format!("{field} contains control characters")));
    }
    Ok(())
}

/// A valid track event, for tests.
#[cfg(test)]
pub(crate) fn sample_track(message_id: &str) -> Event<'static> {
    Event {
        message_id: message_id.to_owned().into(),
        kind: EventType::Track,
        name: Some("Signed Up".into()),
        user_id: Some("u-1".into()),
        anonymous_id: None,
        group_id: None,
        group_type: None,
        previous_id: None,
        properties: None,
        traits: None,
        context: None,
        integrations: None,
        timestamp: Utc::now(),
        original_timestamp: None,
        sent_at: None,
        timestamp_clamped: false,
        member_of: None,
        member_types: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track() -> Event<'static> {
        sample_track("m-1")
    }

    #[test]
    fn a_complete_track_is_valid() {
        assert_eq!(track().validate(), Ok(()));
    }

    #[test]
    fn an_event_without_any_user_is_refused() {
        let event = Event { user_id: None, ..track() };
        assert!(event.validate().is_err());
    }

    #[test]
    fn control_characters_in_ids_are_refused() {
        let event = Event { user_id: Some("a\nb".into()), ..track() };
        assert_eq!(event.validate(), Err(EventProblem("userId contains control characters".into())));
    }

    fn raw(text: &str) -> JsonText<'static> {
        JsonText::Owned(serde_json::from_str(text).expect("valid JSON"))
    }

    #[test]
    fn json_fields_are_checked_as_the_database_would() {
        for ok in [r#"{}"#, r#"{"a":{"b":[1,{"c":"}]{["}]}}"#, r#"{"n":1.5e300,"s":"\u00e9"}"#] {
            assert_eq!(check_json_object("properties", &raw(ok)), Ok(()), "{ok}");
        }
        for (bad, expected) in [
            ("[1]", "must be a JSON object"),
            (r#""text""#, "must be a JSON object"),
            (r#"{"n":1e400}"#, "number out of range"),
            (r#"{"s":"\ud800"}"#, "escape"),
        ] {
            let Err(EventProblem(reason)) = check_json_object("properties", &raw(bad)) else {
                panic!("{bad} must be refused");
            };
            assert!(reason.contains(expected), "{bad}: {reason}");
        }
    }

    #[test]
    fn depth_is_counted_by_objects_and_arrays() {
        let nested = |levels: usize| format!("{}1{}", r#"{"a":"#.repeat(levels), "}".repeat(levels));
        assert_eq!(check_json_object("traits", &raw(&nested(MAX_JSON_DEPTH))), Ok(()));
        let err = check_json_object("traits", &raw(&nested(MAX_JSON_DEPTH + 1))).expect_err("too deep");
        assert!(err.0.contains("nested deeper than 30"), "{err}");
        let err = check_json_object("traits", &raw(&nested(500))).expect_err("too deep");
        assert!(err.0.contains("nested deeper than 30"), "{err}");
    }

    #[test]
    fn a_decoded_event_borrows_its_text_from_the_message_but_an_id_with_escapes() {
        let text = r#"{"message_id":"m-1","type":"track","name":"Signed Up","user_id":"u\u0031",
            "properties":{"plan":"pro"},"timestamp":"2026-12-04T10:00:00.000Z"}"#;
        let event: Event = serde_json::from_str(text).expect("decodes");
        assert!(matches!(event.message_id, Cow::Borrowed("m-1")));
        assert!(matches!(event.name, Some(Cow::Borrowed("Signed Up"))));
        assert!(matches!(event.user_id.as_ref(), Some(Cow::Owned(id)) if id == "u1"), "unescaped: a copy");
        assert!(matches!(event.properties, Some(Cow::Borrowed(raw)) if raw.get() == r#"{"plan":"pro"}"#));
        assert!(event.anonymous_id.is_none() && event.context.is_none());
    }

    #[test]
    fn alias_needs_both_ids() {
        let event = Event { kind: EventType::Alias, previous_id: None, ..track() };
        assert!(event.validate().is_err());
    }

    #[test]
    fn serialised_form_round_trips() {
        let event = Event { properties: Some(raw(r#"{"plan":"pro"}"#)), ..track() };
        let json = serde_json::to_string(&event).expect("serialises");
        let back: Event = serde_json::from_str(&json).expect("parses");
        assert_eq!(serde_json::to_string(&back).expect("serialises"), json);
        assert_eq!(back.validate(), Ok(()));
    }

    #[test]
    fn groups_are_queued_with_their_types_and_an_earlier_releases_get_them_from_the_properties() {
        let texts = |texts: &[&'static str]| Some(texts.iter().map(|text| Cow::Borrowed(*text)).collect());
        let properties = raw(r#"{"$groups":{"company":"42","project":42}}"#);
        let event = Event {
            member_of: texts(&["42", "42"]),
            member_types: texts(&["company", "project"]),
            properties: Some(properties.clone()),
            ..track()
        };
        let json = serde_json::to_string(&event).expect("serialises");
        assert!(json.contains(r#""member_of":["42","42"],"member_types":["company","project"]"#), "{json}");
        let both = [GroupRef { kind: "company", id: "42" }, GroupRef { kind: "project", id: "42" }];
        let back: Event = serde_json::from_str(&json).expect("parses");
        assert_eq!(back.validate(), Ok(()));
        assert_eq!(back.clone().with_group_types().groups_joined().collect::<Vec<_>>(), both);
        // A release before group types queued the keys alone, one of two equal ones.
        let earlier = Event { member_of: texts(&["42"]), properties: Some(properties), ..track() };
        assert_eq!(earlier.with_group_types().groups_joined().collect::<Vec<_>>(), both);
        let identify = raw(r#"{"$group_type":"company","$group_key":"acme"}"#);
        let call = Event {
            kind: EventType::Group,
            group_id: Some("acme".into()),
            member_of: texts(&[]),
            properties: Some(identify),
            ..track()
        };
        assert_eq!(call.with_group_types().group_called(), Some(GroupRef { kind: "company", id: "acme" }));
        let bad = Event { member_of: texts(&["42"]), member_types: texts(&["com\npany"]), ..track() };
        assert!(bad.validate().is_err(), "a type is checked as an id is");
        let uneven = Event { member_of: texts(&["42"]), member_types: texts(&[]), ..track() };
        assert!(uneven.validate().is_err());
        // What that release's ingest left out stays out: a personless event's groups, and six
        // types (of five keys) where an event names at most five groups.
        let personless = raw(r#"{"$groups":{"company":"acme"},"$process_person_profile":false}"#);
        let call = Event { member_of: texts(&[]), properties: Some(personless), ..track() };
        assert_eq!(call.with_group_types().groups_joined().count(), 0);
        let six = raw(r#"{"$groups":{"a":"1","b":"2","c":"3","d":"4","e":"5","f":"5"}}"#);
        let keys = ["1", "2", "3", "4", "5"];
        let earlier = Event { member_of: texts(&keys), properties: Some(six), ..track() };
        let kept: Vec<GroupRef<'_>> = keys.iter().map(|id| GroupRef { kind: "", id }).collect();
        assert_eq!(earlier.with_group_types().groups_joined().collect::<Vec<_>>(), kept);
    }
}
