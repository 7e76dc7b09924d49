//! Validated values of the domain and the time formats of the API, one subject a file.
//!
//! Everything that crosses the HTTP or import boundary is parsed into one of these types first,
//! so the store never sees an unchecked URL, event name or timestamp.

mod device;
mod event;
mod event_id;
pub mod export;
pub mod import;
mod ip;
mod page_id;
mod page_url;
pub mod period;
mod site;
mod source;
mod time;
mod user_agent;
mod visit;
mod visitor;

pub use device::{DEVICE_TYPES, Device, is_bot};
pub use event::{DEFAULT_EVENT, EVENT_RULE, event_or_default, parse_event};
pub use event_id::{EVENT_ID_RULE, EventId, IdentifiedVisit, MAX_EVENT_ID_BYTES};
pub use ip::{canonical_ip, ip_from_bytes, ip_to_bytes};
pub use page_id::parse_page_id;
pub use page_url::{MAX_URL_BYTES, PageUrl, site_of_host};
pub use site::parse_site;
pub use source::{DIRECT, MAX_DIMENSION_BYTES, Source, UNKNOWN};
pub use time::{
    DAY_MS, HOUR_MS, IsoTime, MAX_MILLIS, MAX_SECONDS, MINUTE_MS, UnixMillis, civil_from_days,
    cleanup_cutoff, date_start_millis, format_iso, format_space, now_millis, parse_date,
    parse_timestamp, space_text, timestamp_from_unix_seconds, write_space,
};
pub use user_agent::{MAX_USER_AGENT_BYTES, clean_user_agent, truncate_at_char};
pub use visit::NewVisit;
pub use visitor::{Visitor, VisitorText};
