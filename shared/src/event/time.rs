//! Timestamps from clients: parsing the formats SDKs send, and correcting for clock skew.

use chrono::{DateTime, Duration, NaiveDateTime, TimeZone, Utc};
use serde_json::Value;

/// Parses an SDK timestamp: RFC 3339 (any offset), ISO 8601 without an offset (taken as
/// UTC), or a number of milliseconds since the epoch. `null` is absent.
pub fn parse_timestamp(field: &str, value: &Value) -> Result<Option<DateTime<Utc>>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) => parse_timestamp_text(field, text),
        Value::Number(number) => parse_timestamp_millis(field, number),
        _ => Err(not_a_timestamp(field)),
    }
}

/// `parse_timestamp` of a string; empty is absent.
pub fn parse_timestamp_text(field: &str, text: &str) -> Result<Option<DateTime<Utc>>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    in_range(field, parse_text(text))
}

/// `parse_timestamp` of a number: milliseconds since the epoch.
pub fn parse_timestamp_millis(field: &str, number: &serde_json::Number) -> Result<Option<DateTime<Utc>>, String> {
    in_range(field, number.as_i64().and_then(|millis| Utc.timestamp_millis_opt(millis).single()))
}

pub fn not_a_timestamp(field: &str) -> String {
    format!("{field} must be an ISO 8601 string")
}

fn in_range(field: &str, parsed: Option<DateTime<Utc>>) -> Result<Option<DateTime<Utc>>, String> {
    let parsed = parsed.ok_or_else(|| format!("{field} is not a valid ISO 8601 timestamp"))?;
    if !(earliest()..=latest()).contains(&parsed) {
        return Err(format!("{field} is out of range (1970 to 9999)"));
    }
    Ok(Some(parsed))
}

fn parse_text(text: &str) -> Option<DateTime<Utc>> {
    if text.len() > 64 {
        return None;
    }
    // `…T12:00:00.123Z`, what `Date.toISOString` writes: the common case, read without chrono's
    // general parser.
    if let Some(at) = rfc3339::read(text) {
        return Some(at);
    }
    if let Ok(with_offset) = DateTime::parse_from_rfc3339(text) {
        return Some(with_offset.with_timezone(&Utc));
    }
    // Without an offset: UTC. With one that RFC 3339 does not allow (`+0200`, `+02`): as
    // offset (a `NaiveDateTime` would drop it).
    let naive = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(|naive| naive.and_utc());
    naive.or_else(|| {
        ["%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z"]
            .iter()
            .find_map(|format| DateTime::parse_from_str(text, format).ok())
            .map(|at| at.to_utc())
    })
}

fn earliest() -> DateTime<Utc> {
    DateTime::UNIX_EPOCH
}

fn latest() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).single().unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The event time on the server's clock: `receivedAt − (sentAt − originalTimestamp)` when the
/// client said when it sent the batch, else the client's timestamp, else the receipt time.
/// Returns whether the result was clamped because it lay beyond `future_tolerance`.
pub fn corrected_timestamp(
    received_at: DateTime<Utc>,
    original: Option<DateTime<Utc>>,
    sent_at: Option<DateTime<Utc>>,
    future_tolerance: Duration,
) -> (DateTime<Utc>, bool) {
    let corrected = match (original, sent_at) {
        (Some(original), Some(sent_at)) => received_at.checked_sub_signed(sent_at - original),
        (Some(original), None) => Some(original),
        (None, _) => Some(received_at),
    };
    match corrected {
        Some(at) if at >= earliest() && at <= received_at + future_tolerance => (at, false),
        _ => (received_at, true),
    }
}

/// Event times on the queue, as chrono's serde writes them (RFC 3339 in UTC, `Z`, with 3, 6 or
/// 9 digits of fraction when there is one), written without its general formatter: a few per
/// event on ingest's hot path. Read back the same way (`read`), and any other RFC 3339 text with
/// chrono's parser.
pub mod rfc3339 {
    use chrono::{DateTime, Datelike, Timelike, Utc};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buffer = [0u8; 30];
        match write(at, &mut buffer) {
            Some(text) => serializer.serialize_str(text),
            None => at.serialize(serializer),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
        deserializer.deserialize_str(TimeVisitor)
    }

    struct TimeVisitor;

    impl serde::de::Visitor<'_> for TimeVisitor {
        type Value = DateTime<Utc>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str("an RFC 3339 time")
        }

        /// What `write` wrote, read back directly; any other RFC 3339 text as chrono reads it.
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<DateTime<Utc>, E> {
            match read(text) {
                Some(at) => Ok(at),
                None => text.parse::<DateTime<chrono::FixedOffset>>().map(|at| at.to_utc()).map_err(E::custom),
            }
        }
    }

    /// For `Option<DateTime<Utc>>` fields.
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(at: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => super::serialize(at, serializer),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error> {
            Ok(Option::<Time>::deserialize(deserializer)?.map(|Time(at)| at))
        }

        struct Time(DateTime<Utc>);

        impl<'de> Deserialize<'de> for Time {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                super::deserialize(deserializer).map(Time)
            }
        }
    }

    /// `at` as text in `buffer`; `None` for what the short form cannot hold (years outside
    /// 0–9999, a leap second), which chrono then writes.
    pub(crate) fn write<'a>(at: &DateTime<Utc>, buffer: &'a mut [u8; 30]) -> Option<&'a str> {
        let (year, nanos) = (at.year(), at.nanosecond());
        if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
            return None;
        }
        let mut len = 0;
        // `value` as `width` digits, after `separator`.
        let mut digits = |separator: Option<u8>, value: u32, width: u32| {
            if let Some(separator) = separator {
                buffer[len] = separator;
                len += 1;
            }
            for position in (0..width).rev() {
                buffer[len] = b'0' + (value / 10u32.pow(position) % 10) as u8;
                len += 1;
            }
        };
        digits(None, year as u32, 4);
        digits(Some(b'-'), at.month(), 2);
        digits(Some(b'-'), at.day(), 2);
        digits(Some(b'T'), at.hour(), 2);
        digits(Some(b':'), at.minute(), 2);
        digits(Some(b':'), at.second(), 2);
        match nanos {
            0 => {}
            n if n % 1_000_000 == 0 => digits(Some(b'.'), n / 1_000_000, 3),
            n if n % 1_000 == 0 => digits(Some(b'.'), n / 1_000, 6),
            n => digits(Some(b'.'), n, 9),
        }
        buffer[len] = b'Z';
        std::str::from_utf8(&buffer[..len + 1]).ok()
    }

    /// The short form `write` writes (`2024-05-01T12:00:00.123Z`, with 0, 3, 6 or 9 digits of
    /// fraction), read without chrono's general parser; `None` for any other text.
    pub(crate) fn read(text: &str) -> Option<DateTime<Utc>> {
        let bytes = text.as_bytes();
        let number = |range: std::ops::Range<usize>| -> Option<u32> {
            let digits = bytes.get(range)?;
            digits
                .iter()
                .try_fold(0u32, |value, digit| digit.is_ascii_digit().then(|| value * 10 + u32::from(digit - b'0')))
        };
        let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
        if bytes.len() < 20 || bytes.last() != Some(&b'Z') || separators.iter().any(|(at, byte)| bytes[*at] != *byte) {
            return None;
        }
        let nanos = match bytes.len() {
            20 => 0,
            24 | 27 | 30 if bytes[19] == b'.' => {
                let digits = bytes.len() - 21;
                number(20..bytes.len() - 1)? * 10u32.pow(9 - digits as u32)
            }
            _ => return None,
        };
        let day = chrono::NaiveDate::from_ymd_opt(number(0..4)? as i32, number(5..7)?, number(8..10)?)?;
        let time = day.and_hms_nano_opt(number(11..13)?, number(14..16)?, number(17..19)?, nanos)?;
        Some(time.and_utc())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn queue_times_are_written_as_chrono_writes_them() {
        let times = [
            "2024-05-01T12:00:00Z",
            "2024-05-01T12:00:00.123Z",
            "2024-05-01T12:00:00.120Z",
            "2024-05-01T12:00:00.000123Z",
            "2024-05-01T12:00:00.000000007Z",
            "1970-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
            "0001-02-03T04:05:06.5Z",
        ];
        for text in times {
            let at = DateTime::parse_from_rfc3339(text).expect("valid").with_timezone(&Utc);
            let mut buffer = [0u8; 30];
            let ours = super::rfc3339::write(&at, &mut buffer).expect("short form").to_string();
            assert_eq!(ours, serde_json::to_value(at).expect("chrono").as_str().expect("text"), "{text}");
        }
        let now = Utc::now();
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Times {
            #[serde(with = "super::rfc3339")]
            at: DateTime<Utc>,
            #[serde(with = "super::rfc3339::option")]
            maybe: Option<DateTime<Utc>>,
        }
        let text = serde_json::to_string(&Times { at: now, maybe: None }).expect("serialises");
        let back: Times = serde_json::from_str(&text).expect("deserialises");
        assert_eq!((back.at, back.maybe), (now, None));
        // Read back without chrono's parser, to the same instant; other forms through chrono.
        for text in times {
            let at = DateTime::parse_from_rfc3339(text).expect("valid").with_timezone(&Utc);
            let mut buffer = [0u8; 30];
            let written = super::rfc3339::write(&at, &mut buffer).expect("short form");
            assert_eq!(super::rfc3339::read(written), Some(at), "{written}");
        }
        let forms = [
            ("2024-05-01T14:00:00.5+02:00", Some("2024-05-01T12:00:00.500Z")),
            ("2024-05-01T12:00:00.5Z", Some("2024-05-01T12:00:00.500Z")),
            ("2024-05-01 12:00:00Z", Some("2024-05-01T12:00:00Z")),
            ("2024-02-30T12:00:00Z", None),
            ("2024-05-01T24:00:00Z", None),
            ("2024-05-01T12:00:0xZ", None),
        ];
        for (text, expected) in forms {
            assert_eq!(super::rfc3339::read(text), None, "not the short form: {text}");
            let decoded = serde_json::from_value::<Times>(json!({"at": text, "maybe": text}));
            let expected = expected.map(|text| DateTime::parse_from_rfc3339(text).expect("valid").with_timezone(&Utc));
            assert_eq!(decoded.ok().map(|times| (times.at, times.maybe)), expected.map(|at| (at, Some(at))), "{text}");
        }
    }

    use super::*;
    use serde_json::json;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).expect("valid").with_timezone(&Utc)
    }

    #[test]
    fn parses_the_formats_sdks_send() {
        let expected = at("2024-05-01T12:00:00.123Z");
        for text in [
            "2024-05-01T12:00:00.123Z",
            "2024-05-01T14:00:00.123+02:00",
            "2024-05-01T12:00:00.123000+00:00",
            "2024-05-01T12:00:00.123",
            "2024-05-01 12:00:00.123",
            // Offsets as Python's `%z` and PostgreSQL write them.
            "2024-05-01 14:00:00.123+0200",
            "2024-05-01T14:00:00.123+0200",
            "2024-05-01 14:00:00.123+02",
            "2024-05-01 09:30:00.123-0230",
        ] {
            assert_eq!(parse_timestamp("timestamp", &json!(text)), Ok(Some(expected)), "{text}");
        }
        assert_eq!(parse_timestamp("timestamp", &json!(1714564800123_i64)), Ok(Some(expected)));
        assert_eq!(parse_timestamp("timestamp", &Value::Null), Ok(None));
    }

    #[test]
    fn absurd_timestamps_are_refused_with_the_field_name() {
        for value in [json!("yesterday"), json!("0001-01-01T00:00:00Z"), json!(true), json!(1e300)] {
            let err = parse_timestamp("sentAt", &value).expect_err("must fail");
            assert!(err.contains("sentAt"), "{err}");
        }
    }

    #[test]
    fn skew_is_removed_using_sent_at() {
        // The client's clock runs one hour fast.
        let received = at("2024-05-01T12:00:10Z");
        let sent = at("2024-05-01T13:00:05Z");
        let original = at("2024-05-01T13:00:00Z");
        let (corrected, clamped) = corrected_timestamp(received, Some(original), Some(sent), Duration::hours(24));
        assert_eq!(corrected, at("2024-05-01T12:00:05Z"));
        assert!(!clamped);
    }

    #[test]
    fn without_sent_at_the_client_timestamp_stands() {
        let received = at("2024-05-01T12:00:10Z");
        let original = at("2024-05-01T11:00:00Z");
        assert_eq!(corrected_timestamp(received, Some(original), None, Duration::hours(24)), (original, false));
        assert_eq!(corrected_timestamp(received, None, None, Duration::hours(24)), (received, false));
    }

    #[test]
    fn far_future_is_clamped_and_flagged() {
        let received = at("2024-05-01T12:00:00Z");
        let original = at("2031-01-01T00:00:00Z");
        assert_eq!(corrected_timestamp(received, Some(original), None, Duration::hours(24)), (received, true));
    }
}
