//! What the store answers: plain values, with no wire format. The HTTP layer turns them into
//! its response bodies (`http::routes`), the CLI into its output.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::domain::{DEVICE_TYPES, UNKNOWN, UnixMillis, Visitor};

/// One of a page's newest visits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentVisit {
    /// The client address or pseudonym; `None` when the stored value could not be read back.
    pub ip: Option<Visitor>,
    /// Shared: one allocation per distinct agent in an answer, not per mention.
    pub user_agent: Arc<str>,
    pub at: UnixMillis,
}

/// A page's figures in a [`Summary`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageSummary {
    /// All retained visits of the page (not limited by the window).
    pub total_visits: i64,
    /// Distinct client IPs over all retained visits of the page.
    pub unique_ips: i64,
    /// (hour number since the epoch, visits) in the window, in order; empty hours left out.
    pub by_hour: Vec<(i64, i64)>,
    /// Visits per user agent in the window, most frequent first.
    pub user_agents: Vec<(Arc<str>, i64)>,
    /// The newest visits of the page in the window (at most 10), newest first.
    pub recent_visits: Vec<RecentVisit>,
}

/// Oldest and newest retained visit (ISO, UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateRange {
    pub earliest: String,
    pub latest: String,
}

/// Every page's figures over a window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Per page URL, most visited first.
    pub data: Vec<(String, PageSummary)>,
    /// All retained visits.
    pub total_entries: i64,
    /// `None` when nothing is stored.
    pub date_range: Option<DateRange>,
}

/// One page's figures over a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlStats {
    pub url: String,
    pub total_visits: i64,
    pub unique_ips: i64,
    /// Visits per hour in the window, keyed `YYYY-MM-DD HH:00:00` (UTC).
    pub hourly_visits: BTreeMap<String, i64>,
    /// The newest visits in the window (at most 20), newest first.
    pub recent_visits: Vec<RecentVisit>,
}

/// One of the newest visits of the whole site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteRecentVisit {
    pub url: String,
    /// As in [`RecentVisit`].
    pub ip: Option<Visitor>,
    pub at: UnixMillis,
}

/// Whole-site figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteStats {
    pub total_visits: i64,
    /// Distinct client IPs over all retained visits.
    pub unique_visitors: i64,
    /// The 100 most visited pages, most first.
    pub popular_pages: Vec<(String, i64)>,
    /// The 10 newest visits, newest first.
    pub recent_visits: Vec<SiteRecentVisit>,
}

/// Where a per-page count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServedVia {
    /// The node's memory, provably current.
    Cache,
    /// Read from SQLite.
    Sqlite,
    /// Read from PostgreSQL (the node cannot prove a copy of its own current).
    Postgres,
}

impl ServedVia {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cache => "cache",
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// A per-page counter's committed count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCount {
    pub count: i64,
    pub served_via: ServedVia,
}

/// Where the visits of a window came from (API.md §12): each list most first, at most the
/// `limit` asked for, ties by name. Visits recorded before sources were stored count under
/// `(unknown)` in every list; a visit without a UTM tag counts in no UTM list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    /// Referrer hosts, `(direct)` included.
    pub referrers: Vec<(String, i64)>,
    pub utm_source: Vec<(String, i64)>,
    pub utm_medium: Vec<(String, i64)>,
    pub utm_campaign: Vec<(String, i64)>,
}

/// What the visitors of a window used (API.md §12): browsers and OS families most first, at
/// most the `limit` asked for, ties by name; every device type of
/// [`crate::domain::DEVICE_TYPES`] in that order (zeros included), then `(unknown)` when
/// visits recorded before devices were stored fall in the window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Devices {
    pub browsers: Vec<(String, i64)>,
    pub os: Vec<(String, i64)>,
    pub device_types: Vec<(String, i64)>,
}

impl Sources {
    /// The answer from the window's visits counted per stored source: (`[referrer,
    /// utm_source, utm_medium, utm_campaign]`, visits), each source once.
    pub fn tally(counted: impl IntoIterator<Item = ([String; 4], i64)>, limit: usize) -> Self {
        let mut lists: [HashMap<String, i64>; 4] = Default::default();
        for (values, n) in counted {
            for (i, (list, value)) in lists.iter_mut().zip(values).enumerate() {
                // A visit without a UTM tag counts in no UTM list; every visit has a referrer.
                if i == 0 || !value.is_empty() {
                    *list.entry(value).or_default() += n;
                }
            }
        }
        let [referrers, utm_source, utm_medium, utm_campaign] = lists.map(|l| top(l, limit));
        Self {
            referrers,
            utm_source,
            utm_medium,
            utm_campaign,
        }
    }
}

impl Devices {
    /// The answer from the window's visits counted per stored device: (`[browser, os,
    /// device_type]`, visits), each device once.
    pub fn tally(counted: impl IntoIterator<Item = ([String; 3], i64)>, limit: usize) -> Self {
        let mut lists: [HashMap<String, i64>; 3] = Default::default();
        for (values, n) in counted {
            for (list, value) in lists.iter_mut().zip(values) {
                *list.entry(value).or_default() += n;
            }
        }
        let [browsers, os, types] = lists;
        let mut device_types: Vec<(String, i64)> = DEVICE_TYPES
            .iter()
            .map(|t| ((*t).to_owned(), types.get(*t).copied().unwrap_or(0)))
            .collect();
        // Visits stored before devices were: listed only when the window has some.
        if let Some(&n) = types.get(UNKNOWN) {
            device_types.push((UNKNOWN.to_owned(), n));
        }
        Self {
            browsers: top(browsers, limit),
            os: top(os, limit),
            device_types,
        }
    }
}

/// The `limit` largest counts, most first, ties by name.
fn top(counts: HashMap<String, i64>, limit: usize) -> Vec<(String, i64)> {
    let mut list: Vec<(String, i64)> = counts.into_iter().collect();
    list.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    list.truncate(limit);
    list
}

/// Visits per hour of one site (or all sites) for a dashboard's chart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hourly {
    /// (hour number since the epoch, visits) in the window, in order; empty hours left out.
    pub by_hour: Vec<(i64, i64)>,
    /// All retained visits of the site (not limited by the window), like `/summary`'s
    /// per-page `total_visits`.
    pub total_visits: i64,
    /// Distinct visitors (IPs, or pseudonyms under `--ip-mode hashed`) over all retained
    /// visits of the site.
    pub unique_ips: i64,
}
