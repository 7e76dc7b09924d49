//! What a visitor used (API.md §12): browser and OS families and a device type, read from the
//! user agent by `woothee` (the woothee project's rules: ~2 µs a parse, no regex set to build),
//! and bots recognised by `isbot` (the patterns of the isbot project's maintained list).

use std::sync::LazyLock;

use super::source::UNKNOWN;

/// The device types, in the order `/devices` lists them.
pub const DEVICE_TYPES: [&str; 4] = ["desktop", "mobile", "tablet", "bot"];

/// A visit's device dimensions: families without versions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Device {
    pub browser: String,
    pub os: String,
    /// One of [`DEVICE_TYPES`], or [`UNKNOWN`] for visits recorded before it was stored.
    pub device_type: String,
}

static PARSER: LazyLock<woothee::parser::Parser> = LazyLock::new(woothee::parser::Parser::new);
static BOTS: LazyLock<isbot::Bots> = LazyLock::new(isbot::Bots::default);

/// Whether `user_agent` is a known bot or crawler (whatever browser it claims to be).
pub fn is_bot(user_agent: &str) -> bool {
    BOTS.is_bot(user_agent)
        || PARSER
            .parse(user_agent)
            .is_some_and(|r| r.category == "crawler")
}

impl Device {
    /// The dimensions of a visit sent with `user_agent`.
    pub fn parse(user_agent: &str) -> Self {
        let parsed = PARSER.parse(user_agent);
        let (name, os, category) = parsed
            .as_ref()
            .map_or(("", "", ""), |r| (r.name, r.os, r.category));
        let bot = category == "crawler" || BOTS.is_bot(user_agent);
        let os = os_family(os);
        let device_type = if bot {
            "bot"
        } else if os == "iOS" && user_agent.contains("iPad")
            || os == "Android" && !user_agent.contains("Mobile")
        {
            "tablet"
        } else if matches!(category, "smartphone" | "mobilephone") {
            "mobile"
        } else {
            "desktop"
        };
        let browser = match category {
            "pc" | "smartphone" | "mobilephone" | "appliance" => browser_family(name),
            _ => "Other",
        };
        Self {
            browser: browser.to_owned(),
            os: os.to_owned(),
            device_type: device_type.to_owned(),
        }
    }

    /// The dimensions of a visit recorded before they were stored: every one [`UNKNOWN`].
    pub fn unknown() -> Self {
        Self {
            browser: UNKNOWN.into(),
            os: UNKNOWN.into(),
            device_type: UNKNOWN.into(),
        }
    }
}

/// woothee's browser name as the family API.md §12 names.
fn browser_family(name: &str) -> &str {
    match name {
        "" | "UNKNOWN" => "Other",
        "SamsungBrowser" => "Samsung Internet",
        "Internet Explorer" => "Internet Explorer",
        other => other,
    }
}

/// woothee's OS name (which carries versions and device names) as a family.
fn os_family(os: &str) -> &str {
    match os {
        "" | "UNKNOWN" => "Other",
        "Mac OSX" | "Mac OS Classic" => "macOS",
        "iPhone" | "iPad" | "iPod" | "iOS" => "iOS",
        "ChromeOS" => "ChromeOS",
        os if os.starts_with("Windows") => "Windows",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn families(ua: &str) -> (String, String, String) {
        let d = Device::parse(ua);
        (d.browser, d.os, d.device_type)
    }

    #[test]
    fn common_browsers_get_their_families() {
        let cases = [
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                ("Chrome", "Windows", "desktop"),
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 Safari/605.1.15",
                ("Safari", "macOS", "desktop"),
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
                ("Firefox", "Linux", "desktop"),
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0",
                ("Edge", "Windows", "desktop"),
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 OPR/105.0.0.0",
                ("Opera", "Windows", "desktop"),
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
                ("Safari", "iOS", "mobile"),
            ),
            (
                "Mozilla/5.0 (iPad; CPU OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
                ("Safari", "iOS", "tablet"),
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
                ("Chrome", "Android", "mobile"),
            ),
            (
                "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                ("Chrome", "Android", "tablet"),
            ),
            (
                "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
                ("Samsung Internet", "Android", "mobile"),
            ),
            (
                "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                ("Chrome", "ChromeOS", "desktop"),
            ),
        ];
        for (ua, (browser, os, kind)) in cases {
            assert_eq!(
                families(ua),
                (browser.into(), os.into(), kind.into()),
                "{ua}"
            );
        }
    }

    #[test]
    fn crawlers_are_bots_whatever_they_claim() {
        for ua in [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "curl/8.5.0",
            "python-requests/2.31.0",
        ] {
            assert!(is_bot(ua), "{ua}");
            assert_eq!(Device::parse(ua).device_type, "bot", "{ua}");
        }
        assert!(!is_bot(
            "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
        ));
    }

    #[test]
    fn anything_else_is_other_on_a_desktop() {
        for ua in ["unknown", "", "x'); DROP TABLE visits;--", "\u{1F600}"] {
            assert_eq!(
                families(ua),
                ("Other".into(), "Other".into(), "desktop".into()),
                "{ua:?}"
            );
        }
    }
}
