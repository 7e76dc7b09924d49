//! The page URL as stored ([`PageUrl`]) and the site of a host.

use std::borrow::Cow;
use std::fmt;

/// Longest page URL accepted, in bytes (API.md conventions).
pub const MAX_URL_BYTES: usize = 2048;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
