//! Delivery ids of bus events (API.md §11): what makes a redelivered or republished event
//! count once.

use super::NewVisit;

/// Longest id an event may carry, in bytes.
pub const MAX_EVENT_ID_BYTES: usize = 128;

/// What [`EventId::parse`] accepts, as every rejection says it.
pub const EVENT_ID_RULE: &str = "id must be a non-empty string of at most 128 bytes";

/// An event's delivery id: 1–128 bytes, chosen by the publisher (or, for a NATS message that
/// names none, derived from its place in its stream). Two events with the same id are the same
/// event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId(String);

impl EventId {
    /// An id a publisher gave: 1..=[`MAX_EVENT_ID_BYTES`] bytes.
    pub fn parse(raw: &str) -> Option<Self> {
        (1..=MAX_EVENT_ID_BYTES)
            .contains(&raw.len())
            .then(|| Self(raw.to_owned()))
    }

    /// An id footfall derives itself (e.g. from a stream's name and a message's sequence):
    /// not limited in length, since no publisher chose it.
    pub fn derived(id: String) -> Self {
        Self(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A visit from a bus, with the id that makes its delivery idempotent when it has one.
#[derive(Debug, Clone)]
pub struct IdentifiedVisit {
    /// `None`: the visit is recorded every time it arrives.
    pub id: Option<EventId>,
    pub visit: NewVisit,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_one_to_128_bytes() {
        assert_eq!(EventId::parse("order-1").unwrap().as_str(), "order-1");
        assert!(EventId::parse("").is_none());
        assert!(EventId::parse(&"é".repeat(64)).is_some());
        assert!(EventId::parse(&"x".repeat(129)).is_none());
    }
}
