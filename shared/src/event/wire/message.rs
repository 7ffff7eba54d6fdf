//! One message of a request: its top-level fields, each still JSON text borrowed from the
//! body. Only the small ones (ids, names, times) are ever parsed; properties and context pass
//! through as text. A message has a dozen fields or so, so a list searched in order costs less
//! than hashing every name (and borrowing the names and texts costs no allocation).

use crate::event::BorrowedText;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

#[derive(Debug, Default)]
pub(super) struct Message<'a> {
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> Message<'a> {
    /// A field's text; of a field sent twice, the last (as JSON parsers take it).
    pub fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.fields.iter().rev().find(|(field, _)| field == name).map(|(_, text)| *text)
    }

    /// Takes a field out (every copy of it), returning its text as `get` does.
    pub fn remove(&mut self, name: &str) -> Option<&'a RawValue> {
        let text = self.get(name)?;
        self.fields.retain(|(field, _)| field != name);
        Some(text)
    }
}

impl<'de> Deserialize<'de> for Message<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(Fields)
    }
}

struct Fields;

impl<'de> Visitor<'de> for Fields {
    type Value = Message<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message<'de>, A::Error> {
        let mut fields = Vec::with_capacity(16);
        // A field's name is borrowed from the body unless it holds escapes.
        while let Some(BorrowedText(name)) = map.next_key()? {
            fields.push((name, map.next_value::<&'de RawValue>()?));
        }
        Ok(Message { fields })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_borrowed_escaped_names_read_and_the_last_copy_wins() {
        let text = r#"{"event":"a","u\u0073erId":"u1","event":"b","n":{"x":[1]}}"#;
        let mut message: Message = serde_json::from_str(text).expect("an object");
        assert_eq!(message.get("userId").map(RawValue::get), Some(r#""u1""#));
        assert_eq!(message.remove("event").map(RawValue::get), Some(r#""b""#));
        assert!(message.get("event").is_none(), "every copy taken");
        assert_eq!(message.get("n").map(RawValue::get), Some(r#"{"x":[1]}"#));
        assert!(serde_json::from_str::<Message>("[1]").is_err());
    }
}
