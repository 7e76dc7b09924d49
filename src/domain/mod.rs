//! Validated values of the domain and the time formats of the API.
//!
//! Everything that crosses the HTTP or import boundary is parsed into one of these types first,
//! so the store never sees an unchecked URL, event name or timestamp.

pub mod export;
pub mod import;
pub mod period;
mod visit;

pub use visit::NewVisit;

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// Longest page URL accepted, in bytes (API.md conventions).
pub const MAX_URL_BYTES: usize = 2048;
/// User agents are cut to this many bytes (at a character boundary).
pub const MAX_USER_AGENT_BYTES: usize = 512;
/// The event of a visit whose request named none.
pub const DEFAULT_EVENT: &str = "pageview";

/// A page URL as stored: absolute `http(s)`, with a host, scheme and host lower-cased, default
/// port and fragment dropped, path and query kept exactly as given.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageUrl {
    normalized: String,
    /// Where [`PageUrl::site`] lies in `normalized`: the host is stored lower-case, so the site
    /// is a slice of it, not a second string.
    site: std::ops::Range<usize>,
}

impl PageUrl {
    /// Parses and normalises `raw`; `None` when it is not a valid page URL.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::parse_with(Cow::Borrowed(raw), true)
    }

    /// [`PageUrl::parse`] of a string the caller is done with: a URL already in its stored
    /// form (nearly every one) becomes the stored URL as it is, instead of being copied.
    pub fn parse_owned(raw: String) -> Option<Self> {
        Self::parse_with(Cow::Owned(raw), true)
    }

    /// [`PageUrl::parse`]; tests turn `plain_hosts_by_hand` off to compare with the url crate.
    fn parse_with(raw: Cow<'_, str>, plain_hosts_by_hand: bool) -> Option<Self> {
        if raw.is_empty() || raw.len() > MAX_URL_BYTES || raw.chars().any(char::is_control) {
            return None;
        }
        let (sent_scheme, rest) = raw.split_once("://")?;
        let scheme = if sent_scheme.eq_ignore_ascii_case("http") {
            "http"
        } else if sent_scheme.eq_ignore_ascii_case("https") {
            "https"
        } else {
            return None;
        };
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if authority_end == 0 {
            return None; // "https:///x": the url crate would take "x" as the host
        }
        let (authority, tail) = rest.split_at(authority_end);
        let tail = tail.split_once('#').map_or(tail, |(before, _)| before);
        if plain_hosts_by_hand && is_plain_host(authority) {
            let stored_as_sent = sent_scheme == scheme
                && !authority.bytes().any(|b| b.is_ascii_uppercase())
                && tail.len() == rest.len() - authority.len();
            if let (true, Cow::Owned(_)) = (stored_as_sent, &raw) {
                let host_start = scheme.len() + 3;
                let host = host_start..host_start + authority.len();
                return Some(Self::with_host(raw.into_owned(), host));
            }
            return Self::build(scheme, "", authority, "", tail);
        }
        // The url crate is the judge of validity (host syntax, IDNA, IPv4 forms, ports); the
        // stored form is built by hand because the crate would also rewrite the path ("" ->
        // "/", dot segments).
        let parsed = url::Url::parse(&raw).ok()?;
        let host = parsed.host_str().filter(|h| !h.is_empty())?;
        let userinfo = match (parsed.username(), parsed.password()) {
            ("", None) => String::new(),
            (user, None) => format!("{user}@"),
            (user, Some(pass)) => format!("{user}:{pass}@"),
        };
        let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
        Self::build(scheme, &userinfo, host, &port, tail)
    }

    /// `scheme://userinfo host port tail`, with `host` lower-cased.
    fn build(scheme: &str, userinfo: &str, host: &str, port: &str, tail: &str) -> Option<Self> {
        let mut normalized = String::with_capacity(
            scheme.len() + 3 + userinfo.len() + host.len() + port.len() + tail.len(),
        );
        for part in [scheme, "://", userinfo] {
            normalized.push_str(part);
        }
        let host_start = normalized.len();
        normalized.push_str(host);
        normalized[host_start..].make_ascii_lowercase();
        let host_end = normalized.len();
        normalized.push_str(port);
        normalized.push_str(tail);
        (normalized.len() <= MAX_URL_BYTES)
            .then(|| Self::with_host(normalized, host_start..host_end))
    }

    /// `normalized`, whose lower-case host lies at `host`: its site is that host without a
    /// leading `www.`.
    fn with_host(normalized: String, host: std::ops::Range<usize>) -> Self {
        let site_start = host.end - without_www(&normalized[host.clone()]).len();
        Self {
            site: site_start..host.end,
            normalized,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.normalized
    }

    /// The site this page belongs to: its host, lower-case, without a leading `www.`.
    pub fn site(&self) -> &str {
        &self.normalized[self.site.clone()]
    }
}

/// Whether `authority` is a host name whose normal form is itself lower-cased, with no user,
/// port, IDNA or IPv4 forms: dot-separated labels of ASCII letters, digits and inner hyphens,
/// none of them `xn--`-like, the last one starting with a letter (so it is no IPv4 address).
/// Nearly every page URL is one; they skip the `url` crate (a microsecond a request), and a
/// test checks that both ways give the same answer.
fn is_plain_host(authority: &str) -> bool {
    let plain_label = |label: &str| {
        let bytes = label.as_bytes();
        (1..=63).contains(&bytes.len())
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            && bytes.get(2..4) != Some(b"--")
    };
    let last_starts_with_a_letter = authority
        .rsplit('.')
        .next()
        .and_then(|last| last.bytes().next())
        .is_some_and(|b| b.is_ascii_alphabetic());
    last_starts_with_a_letter && authority.split('.').all(plain_label)
}

impl fmt::Display for PageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.normalized)
    }
}

/// The site name of a host: lower-case, without a leading `www.` (as [`PageUrl::site`]).
pub fn site_of_host(host: &str) -> String {
    without_www(&host.to_ascii_lowercase()).to_owned()
}

/// `host` without a leading `www.`, unless that is all there is.
fn without_www(host: &str) -> &str {
    match host.strip_prefix("www.") {
        Some(rest) if !rest.is_empty() => rest,
        _ => host,
    }
}

/// A site name as given in a path or in `POST /domains`: 1–253 printable, non-space ASCII
/// characters without `/`; stored lower-case without `www.`.
pub fn parse_site(raw: &str) -> Option<String> {
    let ok = !raw.is_empty()
        && raw.len() <= 253
        && raw.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    ok.then(|| site_of_host(raw))
}

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

/// A per-page counter id (seed 004): 1–256 characters of `[A-Za-z0-9._~-]`.
pub fn parse_page_id(raw: &str) -> Option<&str> {
    let ok = (1..=256).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'));
    ok.then_some(raw)
}

/// Cuts a user agent to [`MAX_USER_AGENT_BYTES`] at a character boundary; empty means unknown.
pub fn clean_user_agent(raw: Option<&str>) -> String {
    let ua = raw
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown");
    truncate_at_char(ua, MAX_USER_AGENT_BYTES).to_owned()
}

/// `s` cut to at most `max` bytes at a character boundary.
pub fn truncate_at_char(s: &str, max: usize) -> &str {
    &s[..s.floor_char_boundary(max)]
}

/// An IP address in its canonical form: IPv4-mapped IPv6 addresses become IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Compact storage form of an address: 4 bytes for IPv4, 16 for IPv6.
pub fn ip_to_bytes(ip: IpAddr) -> Vec<u8> {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// Inverse of [`ip_to_bytes`]; `None` for a blob of another length.
pub fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

/// Milliseconds since the Unix epoch, UTC. The unit of every stored time.
pub type UnixMillis = i64;

/// Latest instant a visit may carry: visit ids are `millis << 20`, which must fit an `i64`.
pub const MAX_MILLIS: UnixMillis = (1 << 43) - 1;

/// The cutoff of a cleanup of everything older than `days`, as of `now`.
pub fn cleanup_cutoff(now: UnixMillis, days: i64) -> Result<UnixMillis, &'static str> {
    if days < 1 {
        return Err("Days must be at least 1");
    }
    Ok(now.saturating_sub(days.saturating_mul(DAY_MS)).max(0))
}

/// Milliseconds in a minute, an hour and a day.
pub const MINUTE_MS: UnixMillis = 60_000;
pub const HOUR_MS: UnixMillis = 60 * MINUTE_MS;
pub const DAY_MS: UnixMillis = 24 * HOUR_MS;

pub fn now_millis() -> UnixMillis {
    Utc::now().timestamp_millis()
}

/// Parses a timestamp in any accepted form: ISO (`2025-07-28T10:30:00`, fractional seconds
/// allowed), SPACE (`2025-07-28 10:30:00`), RFC 3339 with `Z` or an offset, a bare date
/// (midnight), or unix seconds. Naive forms are UTC. `None` when malformed or outside
/// 1970..=2248 (the range visit ids can represent).
pub fn parse_timestamp(raw: &str) -> Option<UnixMillis> {
    let raw = raw.trim();
    let millis = if let Ok(dt) = DateTime::parse_from_rfc3339(raw) {
        dt.timestamp_millis()
    } else if let Some(naive) = parse_naive(raw) {
        Utc.from_utc_datetime(&naive).timestamp_millis()
    } else if let Ok(date) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0)?)
            .timestamp_millis()
    } else if raw.bytes().all(|b| b.is_ascii_digit() || b == b'.') && !raw.is_empty() {
        let seconds: f64 = raw.parse().ok()?;
        (seconds * 1000.0).round() as i64
    } else {
        return None;
    };
    (0..=MAX_MILLIS).contains(&millis).then_some(millis)
}

/// Unix seconds (integer or fractional) as a timestamp; `None` out of range.
pub fn timestamp_from_unix_seconds(seconds: f64) -> Option<UnixMillis> {
    if !seconds.is_finite() {
        return None;
    }
    let millis = (seconds * 1000.0).round();
    (0.0..=MAX_MILLIS as f64)
        .contains(&millis)
        .then_some(millis as i64)
}

fn parse_naive(raw: &str) -> Option<NaiveDateTime> {
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|fmt| NaiveDateTime::parse_from_str(raw, fmt).ok())
}

/// Parses a `YYYY-MM-DD` date; `None` for anything else, impossible dates included.
pub fn parse_date(raw: &str) -> Option<NaiveDate> {
    let raw = raw.trim();
    (raw.len() == 10)
        .then(|| NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok())
        .flatten()
}

/// Midnight UTC of `date` in unix milliseconds.
pub fn date_start_millis(date: NaiveDate) -> UnixMillis {
    date.and_hms_opt(0, 0, 0)
        .map_or(0, |dt| dt.and_utc().timestamp_millis())
}

/// `2025-07-28T10:30:00`: the ISO form the API writes.
pub fn format_iso(millis: UnixMillis) -> String {
    IsoTime(millis).to_string()
}

/// A time that serializes (and displays) as [`format_iso`] does, without a `String`: answers
/// built on every `POST /visit` carry one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsoTime(pub UnixMillis);

impl IsoTime {
    fn text(self) -> [u8; 19] {
        let mut text = space_text(self.0.div_euclid(1000));
        text[10] = b'T';
        text
    }
}

impl fmt::Display for IsoTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(ascii(&self.text()))
    }
}

impl serde::Serialize for IsoTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(ascii(&self.text()))
    }
}

/// `2025-07-28 10:30:00`: the SPACE form the API writes in exports and `by_hour` keys.
pub fn format_space(millis: UnixMillis) -> String {
    let mut out = String::with_capacity(19);
    write_space(&mut out, millis.div_euclid(1000));
    out
}

/// Appends `YYYY-MM-DD HH:MM:SS` for unix `seconds` to `out`, without allocating. Used on the
/// export hot path, where chrono's formatter would dominate.
pub fn write_space(out: &mut String, seconds: i64) {
    out.push_str(ascii(&space_text(seconds)));
}

/// `YYYY-MM-DD HH:MM:SS` for unix `seconds`, on the stack.
fn space_text(seconds: i64) -> [u8; 19] {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut text = *b"0000-00-00 00:00:00";
    // Fixed-width digits written in place: this runs once per exported row.
    for (at, value, width) in [
        (0, y, 4),
        (5, m, 2),
        (8, d, 2),
        (11, hh, 2),
        (14, mm, 2),
        (17, ss, 2),
    ] {
        let mut v = value.max(0);
        for digit in text[at..at + width].iter_mut().rev() {
            *digit = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    text
}

/// `bytes` as text: only for the ASCII this module writes.
fn ascii(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("digits and punctuation are ASCII")
}

/// Gregorian (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
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
    fn urls_are_normalised_in_scheme_host_port_and_fragment_only() {
        let u = PageUrl::parse("HTTPS://WWW.Example.COM:443/A/../b?q=1#frag").unwrap();
        assert_eq!(u.as_str(), "https://www.example.com/A/../b?q=1");
        assert_eq!(u.site(), "example.com");
        assert_eq!(
            PageUrl::parse("https://example.com").unwrap().as_str(),
            "https://example.com"
        );
        assert_eq!(
            PageUrl::parse("http://a.com:8080?x").unwrap().as_str(),
            "http://a.com:8080?x"
        );
    }

    /// The hand-parsed plain hosts give exactly what the url crate gives: same acceptance,
    /// same stored form, same site.
    #[test]
    fn plain_hosts_parse_as_the_url_crate_parses_them() {
        use proptest::prelude::*;
        let host = "([a-zA-Z0-9-]{0,6}|xn--[a-z0-9]{0,4}|[0-9]{1,3}|0x[0-9a-f]{1,2}|www)\
            (\\.([a-zA-Z0-9-]{0,6}|xn--[a-z0-9]{0,4}|[0-9]{1,3}|www)){0,3}";
        let tail = "([/?#]([a-zA-Z0-9./?#%@:;=&+ \\\\\\[\\]-]|é|\u{7f}){0,12})?";
        let url = format!("(https?|HTTPS?|Http|ftp)://({host})(:[0-9]{{0,5}})?{tail}");
        proptest!(ProptestConfig::with_cases(10_000), |(raw in url.as_str())| {
            let by_hand = PageUrl::parse(&raw);
            let by_crate = PageUrl::parse_with(Cow::Borrowed(&raw), false);
            let owned = PageUrl::parse_owned(raw.clone());
            prop_assert_eq!(by_hand.as_ref().map(|u| (u.as_str(), u.site())),
                by_crate.as_ref().map(|u| (u.as_str(), u.site())), "{}", raw);
            prop_assert_eq!(owned.as_ref().map(|u| (u.as_str(), u.site())),
                by_crate.as_ref().map(|u| (u.as_str(), u.site())), "owned: {}", raw);
        });
        for plain in [
            "https://site1.example.com/page/1",
            "http://WWW.A-B.io?x#y",
            "https://www",
        ] {
            let (_, rest) = plain.split_once("://").unwrap();
            let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
            assert!(is_plain_host(authority), "{plain}");
        }
        for odd in [
            "1.2.3.4",
            "a.0x1",
            "xn--nxasmq6b.com",
            "a..b",
            "a.",
            "-a.com",
            "a.com:80",
        ] {
            assert!(!is_plain_host(odd), "{odd}");
        }
    }

    #[test]
    fn invalid_urls_are_rejected() {
        for bad in [
            "",
            "example.com",
            "ftp://a.com/",
            "https://",
            "https:///path",
            "javascript:alert(1)",
            "https://a.com/\u{0}",
            "https://a.com/\nx",
            "'; DROP TABLE visits; --",
        ] {
            assert!(PageUrl::parse(bad).is_none(), "{bad:?} accepted");
        }
        let long = format!("https://a.com/{}", "x".repeat(MAX_URL_BYTES));
        assert!(PageUrl::parse(&long).is_none());
    }

    #[test]
    fn timestamps_accept_every_documented_form() {
        let want = 1_753_698_600_000; // 2025-07-28T10:30:00Z
        for raw in [
            "2025-07-28T10:30:00",
            "2025-07-28 10:30:00",
            "2025-07-28T10:30:00Z",
            "2025-07-28T12:30:00+02:00",
            "1753698600",
        ] {
            assert_eq!(parse_timestamp(raw), Some(want), "{raw}");
        }
        assert_eq!(parse_timestamp("2025-07-28 10:30:00.250"), Some(want + 250));
        for bad in [
            "2025-02-30 10:00:00",
            "yesterday",
            "2025-13-01",
            "",
            "9999-01-01",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn formatting_matches_chrono() {
        for millis in [0, 951_782_400_000, 1_753_698_600_999, 4_102_444_799_000] {
            let dt = DateTime::from_timestamp_millis(millis).unwrap();
            assert_eq!(
                format_space(millis),
                dt.format("%Y-%m-%d %H:%M:%S").to_string()
            );
            assert_eq!(
                format_iso(millis),
                dt.format("%Y-%m-%dT%H:%M:%S").to_string()
            );
        }
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(parse_event("order"), Some("order"));
        assert_eq!(parse_event("Order"), None);
        assert_eq!(parse_page_id("home-1.2_~"), Some("home-1.2_~"));
        assert_eq!(parse_page_id("a/b"), None);
        assert_eq!(parse_site("WWW.Acme.com").as_deref(), Some("acme.com"));
        assert_eq!(clean_user_agent(None), "unknown");
        assert_eq!(clean_user_agent(Some(&"é".repeat(300))).len(), 512);
    }
}
