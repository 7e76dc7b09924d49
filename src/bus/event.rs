//! One bus event (API.md §11): a JSON object in the import record format of §3, with `type`
//! accepted for `event`, an optional `id`, and `ip` and `timestamp` optional.
//!
//! The record itself is parsed by [`crate::domain::import::parse_record`], so an event and an
//! imported line mean the same thing; this only fills what a bus event may leave out.

use serde_json::{Map, Value};

use crate::domain::import::parse_record;
use crate::domain::{EVENT_ID_RULE, EventId, IdentifiedVisit, UnixMillis};

/// The client address of an event that names none: the unspecified address, so such events
/// count as one visitor rather than as none.
const NO_IP: &str = "0.0.0.0";

/// Parses one event's bytes; `now` is its time when it carries no `timestamp` (it is then
/// stamped on arrival, like an HTTP visit). A bad event is `Err` with what is wrong with it.
pub fn parse(payload: &[u8], now: UnixMillis) -> Result<IdentifiedVisit, String> {
    let mut value: Value =
        serde_json::from_slice(payload).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = value
        .as_object_mut()
        .ok_or("an event must be a JSON object")?;
    // The seed's aggregator calls the event `type` ({"type": "order", ...}); `event` wins when
    // both are given.
    if is_absent(obj, "event")
        && let Some(kind) = obj.remove("type")
    {
        obj.insert("event".into(), kind);
    }
    let id = match obj.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(EventId::parse(s).ok_or(EVENT_ID_RULE)?),
        Some(_) => return Err(EVENT_ID_RULE.into()),
    };
    if is_absent(obj, "ip") && is_absent(obj, "ip_address") {
        obj.insert("ip".into(), Value::from(NO_IP));
    }
    let stamped_on_arrival = is_absent(obj, "timestamp");
    if stamped_on_arrival {
        // A placeholder that parses; the real time is set below.
        obj.insert("timestamp".into(), Value::from(0));
    }
    let mut visit = parse_record(&value)?;
    if stamped_on_arrival {
        visit.at = now;
        visit.stamped_on_arrival = true;
    }
    Ok(IdentifiedVisit { id, visit })
}

fn is_absent(obj: &Map<String, Value>, key: &str) -> bool {
    matches!(obj.get(key), None | Some(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EVENT_RULE, parse_timestamp};

    const NOW: UnixMillis = 1_753_698_600_123;

    fn parse_str(raw: &str) -> Result<IdentifiedVisit, String> {
        parse(raw.as_bytes(), NOW)
    }

    #[test]
    fn an_import_record_is_an_event() {
        let e = parse_str(
            r#"{"url":"https://Shop.example/cart","ip":"10.0.0.1","user_agent":"UA",
                "timestamp":"2025-07-28 10:30:00","event":"order","id":"o-17"}"#,
        )
        .unwrap();
        assert_eq!(e.id.unwrap().as_str(), "o-17");
        assert_eq!(e.visit.url.as_str(), "https://shop.example/cart");
        assert_eq!(e.visit.event, "order");
        assert_eq!(e.visit.at, parse_timestamp("2025-07-28 10:30:00").unwrap());
        assert!(!e.visit.stamped_on_arrival);
    }

    #[test]
    fn type_is_accepted_for_event_and_event_wins_over_it() {
        let e = parse_str(r#"{"url":"https://a.com/","type":"order"}"#).unwrap();
        assert_eq!(e.visit.event, "order");
        let e = parse_str(r#"{"url":"https://a.com/","type":"order","event":"signup"}"#).unwrap();
        assert_eq!(e.visit.event, "signup");
        let err = parse_str(r#"{"url":"https://a.com/","type":"Bad Type"}"#).unwrap_err();
        assert_eq!(err, EVENT_RULE);
    }

    #[test]
    fn ip_timestamp_and_id_may_be_left_out() {
        let e = parse_str(r#"{"url":"https://a.com/"}"#).unwrap();
        assert!(e.id.is_none());
        assert_eq!(e.visit.ip.to_string(), NO_IP);
        assert_eq!(e.visit.at, NOW);
        assert!(e.visit.stamped_on_arrival);
        assert_eq!(e.visit.event, "pageview");
        assert_eq!(e.visit.user_agent, "unknown");
    }

    #[test]
    fn bad_events_say_what_is_wrong() {
        let cases = [
            ("not json", "invalid JSON"),
            ("[1]", "an event must be a JSON object"),
            (r#"{"ip":"1.2.3.4"}"#, "url is missing"),
            (r#"{"url":"ftp://a.com/"}"#, "Invalid URL format"),
            (r#"{"url":"https://a.com/","id":7}"#, EVENT_ID_RULE),
            (r#"{"url":"https://a.com/","id":""}"#, EVENT_ID_RULE),
            (
                r#"{"url":"https://a.com/","timestamp":"yesterday"}"#,
                "is not a valid time",
            ),
            (
                r#"{"url":"https://a.com/","ip":"nope"}"#,
                "is not an IP address",
            ),
        ];
        for (raw, want) in cases {
            let err = parse_str(raw).unwrap_err();
            assert!(err.contains(want), "{raw}: {err}");
        }
        let long = format!(r#"{{"url":"https://a.com/","id":"{}"}}"#, "x".repeat(129));
        assert_eq!(parse_str(&long).unwrap_err(), EVENT_ID_RULE);
    }
}
