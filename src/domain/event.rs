//! Event names: the default event and the rule every other name must follow.

use std::borrow::Cow;

/// The event of a visit whose request named none.
pub const DEFAULT_EVENT: &str = "pageview";

/// What [`parse_event`] accepts, as every rejection says it.
pub const EVENT_RULE: &str = "event must be 1-64 characters of a-z, 0-9, _ and -";

/// The event a visit is stored under: `raw` when it is a valid name, [`DEFAULT_EVENT`] (not
/// copied: most visits are pageviews, named or not) when there is none; [`EVENT_RULE`]
/// otherwise.
pub fn event_or_default(raw: Option<&str>) -> Result<Cow<'static, str>, &'static str> {
    match raw {
        None | Some(DEFAULT_EVENT) => Ok(Cow::Borrowed(DEFAULT_EVENT)),
        Some(raw) => parse_event(raw)
            .map(|event| Cow::Owned(event.to_owned()))
            .ok_or(EVENT_RULE),
    }
}

/// An event name: `[a-z0-9_-]{1,64}`.
pub fn parse_event(raw: &str) -> Option<&str> {
    let ok = (1..=64).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    ok.then_some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_event_is_borrowed_whether_named_or_absent() {
        for raw in [None, Some("pageview")] {
            let event = event_or_default(raw).unwrap();
            assert!(
                matches!(event, Cow::Borrowed("pageview")),
                "{raw:?}: {event:?}"
            );
        }
        assert_eq!(event_or_default(Some("order")).unwrap(), "order");
        assert_eq!(event_or_default(Some("Order")), Err(EVENT_RULE));
        assert_eq!(event_or_default(Some("")), Err(EVENT_RULE));
    }

    #[test]
    fn event_names_are_checked() {
        assert_eq!(parse_event("order"), Some("order"));
        assert_eq!(parse_event("Order"), None);
    }
}
