//! Where a visit came from (API.md §12): the referrer's host and the page URL's UTM tags.

use super::PageUrl;
use super::page_url::site_of_host;
use super::user_agent::truncate_at_char;

/// A referrer that is absent, unreadable, or a page of the visited site itself.
pub const DIRECT: &str = "(direct)";
/// Any dimension of a visit recorded before footfall stored it.
pub const UNKNOWN: &str = "(unknown)";
/// Longest referrer host or UTM value kept, in bytes (longer ones are cut at a character).
pub const MAX_DIMENSION_BYTES: usize = 256;

/// The source dimensions of one visit. A UTM field is empty when the page URL has no such tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Source {
    /// The referrer's host, lower-case, without `www.`; [`DIRECT`] when none.
    pub referrer: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
}

impl Source {
    /// The dimensions of a visit to `page`, referred from `referrer` (a URL, as
    /// `document.referrer` or the `Referer` header give it; a bare host is accepted too).
    pub fn of(page: &PageUrl, referrer: Option<&str>) -> Self {
        let referrer = referrer
            .and_then(referrer_host)
            .filter(|host| *host != page.site())
            .unwrap_or_else(|| DIRECT.to_owned());
        let (mut utm_source, mut utm_medium, mut utm_campaign) = Default::default();
        if let Some(query) = page.as_str().split_once('?').map(|(_, q)| q) {
            for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
                let slot = match &*key {
                    "utm_source" => &mut utm_source,
                    "utm_medium" => &mut utm_medium,
                    "utm_campaign" => &mut utm_campaign,
                    _ => continue,
                };
                *slot = clean(&value);
            }
        }
        Self {
            referrer,
            utm_source,
            utm_medium,
            utm_campaign,
        }
    }

    /// The dimensions of a visit recorded before they were stored: every one [`UNKNOWN`].
    pub fn unknown() -> Self {
        Self {
            referrer: UNKNOWN.into(),
            utm_source: UNKNOWN.into(),
            utm_medium: UNKNOWN.into(),
            utm_campaign: UNKNOWN.into(),
        }
    }
}

/// The site-style host of a referrer URL (lower-case, no `www.`), or `None` when it names
/// none. A value without a scheme is read as a host (`news.example.com/path`).
fn referrer_host(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    let parsed = url::Url::parse(raw)
        .ok()
        .filter(|u| u.has_host())
        .or_else(|| url::Url::parse(&format!("http://{raw}")).ok())?;
    let host = parsed.host_str()?.trim_end_matches('.');
    (!host.is_empty()).then(|| clean(&site_of_host(host)))
}

/// A stored dimension value: control characters dropped, cut to [`MAX_DIMENSION_BYTES`].
fn clean(value: &str) -> String {
    let value: String = value.chars().filter(|c| !c.is_control()).collect();
    truncate_at_char(value.trim(), MAX_DIMENSION_BYTES).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(page: &str, referrer: Option<&str>) -> Source {
        Source::of(&PageUrl::parse(page).unwrap(), referrer)
    }

    #[test]
    fn the_referrer_is_its_host_lower_case_without_www() {
        let s = source("https://a.com/x", Some("https://WWW.Google.com/search?q=1"));
        assert_eq!(s.referrer, "google.com");
        assert_eq!(
            source("https://a.com/", Some("news.ycombinator.com/item?id=1")).referrer,
            "news.ycombinator.com"
        );
    }

    #[test]
    fn none_blank_garbage_or_the_same_site_is_direct() {
        for r in [
            None,
            Some(""),
            Some("   "),
            Some("::::"),
            Some("https://www.a.com/other"),
        ] {
            assert_eq!(source("https://a.com/x", r).referrer, DIRECT, "{r:?}");
        }
    }

    #[test]
    fn utm_tags_are_read_from_the_page_query() {
        let s = source(
            "https://a.com/x?utm_source=News%20letter&utm_medium=email&utm_campaign=spring&x=1",
            None,
        );
        assert_eq!(
            (
                s.utm_source.as_str(),
                s.utm_medium.as_str(),
                s.utm_campaign.as_str()
            ),
            ("News letter", "email", "spring")
        );
        let none = source("https://a.com/x?utm=1", None);
        assert!(none.utm_source.is_empty() && none.utm_medium.is_empty());
    }

    #[test]
    fn values_are_cleaned_and_bounded() {
        let long = "x".repeat(1000);
        let s = source(&format!("https://a.com/?utm_campaign={long}%0A"), None);
        assert_eq!(s.utm_campaign.len(), MAX_DIMENSION_BYTES);
        let s = source("https://a.com/?utm_source=%E2%82%AC%00", None);
        assert_eq!(s.utm_source, "€");
    }
}
