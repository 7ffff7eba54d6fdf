//! Timestamps from clients: parsing the formats SDKs send, and correcting for clock skew.

use chrono::{DateTime, Duration, NaiveDateTime, TimeZone, Utc};
use serde_json::Value;

/// Parses an SDK timestamp: RFC 3339 (any offset), ISO 8601 without an offset (taken as
/// UTC), or a number of milliseconds since the epoch. `null` is absent.
pub fn parse_timestamp(field: &str, value: &Value) -> Result<Option<DateTime<Utc>>, String> {
    let parsed = match value {
        Value::Null => return Ok(None),
        Value::String(text) if text.is_empty() => return Ok(None),
        Value::String(text) => parse_text(text),
        Value::Number(number) => number.as_i64().and_then(|millis| Utc.timestamp_millis_opt(millis).single()),
        _ => return Err(format!("{field} must be an ISO 8601 string")),
    };
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
    if let Ok(with_offset) = DateTime::parse_from_rfc3339(text) {
        return Some(with_offset.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f%#z"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(|naive| naive.and_utc())
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

#[cfg(test)]
mod tests {
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
