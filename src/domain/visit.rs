//! A visit as the store receives it: validated, timed, ready to store.

use std::borrow::Cow;
use std::net::IpAddr;

use super::{DEFAULT_EVENT, PageUrl, Source, UnixMillis, Visitor};

/// A validated visit, ready to store.
#[derive(Debug, Clone)]
pub struct NewVisit {
    pub url: PageUrl,
    /// The client address, or the pseudonym standing in for it (`--ip-mode hashed`).
    pub ip: Visitor,
    pub user_agent: String,
    /// `[a-z0-9_-]{1,64}`; `pageview` when the request named none (borrowed then: most
    /// visits are pageviews, and this is one allocation a visit fewer).
    pub event: Cow<'static, str>,
    pub at: UnixMillis,
    /// Referrer host and UTM tags (API.md §12). The device dimensions are not here: the store
    /// reads them from `user_agent` once per distinct agent.
    pub source: Source,
    /// `at` is when the server received the visit, not a time the client or a file gave: the
    /// writer may then move it later within its second (see the SQLite ingest).
    pub stamped_on_arrival: bool,
}

impl NewVisit {
    /// A direct pageview at a given time (as from a file).
    pub fn pageview(url: PageUrl, ip: IpAddr, user_agent: String, at: UnixMillis) -> Self {
        Self {
            source: Source::of(&url, None),
            url,
            ip: ip.into(),
            user_agent,
            event: Cow::Borrowed(DEFAULT_EVENT),
            at,
            stamped_on_arrival: false,
        }
    }
}
