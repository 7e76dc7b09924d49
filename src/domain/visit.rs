//! A visit as the store receives it: validated, timed, ready to store.

use std::borrow::Cow;
use std::net::IpAddr;

use super::{DEFAULT_EVENT, PageUrl, UnixMillis};

/// A validated visit, ready to store.
#[derive(Debug, Clone)]
pub struct NewVisit {
    pub url: PageUrl,
    pub ip: IpAddr,
    pub user_agent: String,
    /// `[a-z0-9_-]{1,64}`; `pageview` when the request named none (borrowed then: most
    /// visits are pageviews, and this is one allocation a visit fewer).
    pub event: Cow<'static, str>,
    pub at: UnixMillis,
    /// `at` is when the server received the visit, not a time the client or a file gave: the
    /// writer may then move it later within its second (see the SQLite ingest).
    pub stamped_on_arrival: bool,
}

impl NewVisit {
    /// A pageview at a given time (as from a file).
    pub fn pageview(url: PageUrl, ip: IpAddr, user_agent: String, at: UnixMillis) -> Self {
        Self {
            url,
            ip,
            user_agent,
            event: Cow::Borrowed(DEFAULT_EVENT),
            at,
            stamped_on_arrival: false,
        }
    }
}
