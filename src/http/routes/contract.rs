//! The constraints of the OpenAPI document that utoipa's attributes and model cannot say, or would have
//! to repeat as literals: the page-URL and timestamp patterns (one constant each, shared by
//! every operation that takes one), the open-ended body of `POST /domains`, and array sizes.
//!
//! A generated client (or schemathesis, `scripts/fuzz.sh`) trusts the document both ways: what
//! it allows must be accepted, what it forbids refused. A pattern can only approximate some
//! checks (a URL is judged by the `url` crate, a date by the calendar), so each pattern here
//! describes a *subset* of what the code accepts that is wide enough for real use, and the
//! description says where the full rule is written. The tests below hold each pattern to the
//! code's own parser.

use serde_json::{Value, json};

use crate::domain::{MAX_SECONDS, MAX_URL_BYTES};
use crate::http::routes::admin::MAX_CLICKS;
use crate::http::routes::record::MAX_BULK;

/// Page URLs the code accepts: `http`/`https` in any case, a host of labels made of the
/// characters a WHATWG URL host may hold (printable ASCII but ` #%/:<>?@[\\]^|`), the last
/// label not starting with a digit (so the host is never read as an IPv4 address, which could
/// be invalid), an optional port (0-65535), then `/`, `?`, `#` or `\\` (which the URL rules
/// read as `/`) and printable ASCII and spaces, or only spaces (the URL rules drop trailing
/// spaces). Close to exact, so that a
/// value just outside the pattern is refused too: the tests below check both ways.
pub const PAGE_URL_PATTERN: &str = concat!(
    "^[Hh][Tt][Tt][Pp][Ss]?://",
    "([!\"$&'()*+,\\-0-9;=A-Z_`a-z{}~]*\\.)*",
    "[!\"$&'()*+,\\-;=A-Z_`a-z{}~][!\"$&'()*+,\\-0-9;=A-Z_`a-z{}~]*\\.?",
    "(:0*([0-9]{0,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?",
    "([/?#\\\\][ -~]*| *)$"
);

/// A year footfall can store, with room for any offset: 1971-2247.
const YEAR: &str = "(197[1-9]|19[89][0-9]|2[01][0-9]{2}|22[0-3][0-9]|224[0-7])";
/// Month and day of a date every year has (February 29 is left out: a pattern cannot tell
/// leap years).
const MONTH_DAY: &str =
    "((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)";
/// `T` or a space, a time with seconds, optional fraction, optional `Z` or `±HH:MM`.
const TIME: &str = "([T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?)?";
/// Unix seconds up to 7,999,999,999 (2223), with an optional fraction.
const UNIX: &str = "(0|[1-9][0-9]{0,8}|[1-7][0-9]{9})(\\.[0-9]*)?";

/// One timestamp (docs/API.md, "Timestamps accepted on input"; this is its common part).
pub fn timestamp_pattern() -> String {
    format!("^{}$", timestamp_alternatives())
}

/// `START,END`, each a timestamp.
pub fn range_pattern() -> String {
    let one = timestamp_alternatives();
    format!("^{one},{one}$")
}

fn timestamp_alternatives() -> String {
    format!("({YEAR}-{MONTH_DAY}{TIME}|{UNIX})")
}

/// Every `GET` of the analytics tags answers `401` when `--analytics-token` is set and not
/// given (API.md §12): written once here rather than on each operation.
fn analytics_reads_may_need_a_token(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(get) = item.get_mut("get") else {
            continue;
        };
        let tagged = |tag: &str| {
            get["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|x| x == tag))
        };
        let reads = tagged("analytics")
            || tagged("sites")
            || (tagged("counters") && path.starts_with("/visits/"));
        if reads {
            get["security"] = json!([{}, {"bearer": []}]);
            get["responses"]["401"] = json!({
                "description": "--analytics-token is set and was not given",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
            });
        }
    }
}

/// The page-URL schema: the pattern, its length in bytes (all ASCII, so characters).
fn page_url(description: &str) -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_URL_BYTES,
        "pattern": PAGE_URL_PATTERN,
        "description": description,
    })
}

const URL_NOTE: &str = "Absolute http(s) URL with a host, at most 2,048 bytes, no control characters. \
    The pattern is the common case the document promises; the server accepts any URL the WHATWG \
    URL rules parse with an http(s) scheme and a host (IP addresses, IDNA, user info, ports).";

const TIMESTAMP_NOTE: &str = "A timestamp. The pattern is the common part of what is accepted; \
    docs/API.md lists every accepted layout (slashes, single-digit fields, other offset forms).";

/// Adds the constraints to the document utoipa generated, as JSON: utoipa's model cannot hold
/// every schema used here (a schema with no type, for one).
pub fn patch(doc: &mut Value) {
    analytics_reads_may_need_a_token(doc);
    let url_schema = page_url(URL_NOTE);
    if let Some(url) = doc.pointer_mut("/components/schemas/VisitRequest/properties/url") {
        *url = url_schema.clone();
    }
    set_param(doc, "/", "get", "url", |p| {
        p["required"] = json!(true);
        p["schema"] = url_schema.clone();
    });
    set_param(doc, "/stats/{url}", "get", "url", |p| {
        p["schema"] = url_schema.clone();
    });
    set_param(doc, "/all-visits", "get", "since", |p| {
        p["schema"] = json!({"type": ["string", "null"], "pattern": timestamp_pattern(),
            "description": TIMESTAMP_NOTE});
    });
    set_param(doc, "/all-visits", "get", "range", |p| {
        p["schema"] = json!({"type": ["string", "null"], "pattern": range_pattern(),
            "description": TIMESTAMP_NOTE});
    });
    for name in ["start_date", "end_date"] {
        set_param(doc, "/all-visits", "get", name, |p| {
            p["schema"] = json!({"type": ["string", "null"], "format": "date"});
        });
    }
    // An empty import (no body) imports nothing; it is not an error.
    if let Some(body) = doc.pointer_mut("/paths/~1import/post/requestBody") {
        body["required"] = json!(false);
        // Any text is JSONL: a line that is not a good record is skipped and reported, never
        // a refusal. So the schema constrains nothing (a `string` would invite "wrong type"
        // values that are still text once sent).
        body["content"]["application/x-ndjson"]["schema"] =
            json!({"description": "Any text; each non-blank line is one record."});
    }
    // `/bulk-visits`: 1-100 items, in either media type it accepts.
    if let Some(content) = doc.pointer_mut("/paths/~1bulk-visits/post/requestBody/content") {
        for media in content
            .as_object_mut()
            .into_iter()
            .flat_map(|m| m.values_mut())
        {
            media["schema"]["minItems"] = json!(1);
            media["schema"]["maxItems"] = json!(MAX_BULK);
        }
    }
    // `POST /domains`: `timestamp` (unix seconds, required), every other key a site name with
    // its clicks.
    if let Some(body) =
        doc.pointer_mut("/paths/~1domains/post/requestBody/content/application~1json")
    {
        body["schema"] = json!({
            "type": "object",
            "required": ["timestamp"],
            "properties": {"timestamp": {"type": "number", "minimum": 0,
                "maximum": MAX_SECONDS, "description": "Unix seconds"}},
            "propertyNames": {"type": "string", "minLength": 1, "maxLength": 253, "pattern": "^[!-.0-~]+$"},
            "additionalProperties": {"type": "integer", "minimum": 0, "maximum": MAX_CLICKS},
        });
        body.as_object_mut().map(|b| b.remove("example"));
        body["example"] = json!({"timestamp": 1644407344, "example1.com": 80, "example2.com": 5});
    }
}

/// Calls `change` on the parameter `name` of `method path`, if the document has it.
fn set_param(
    doc: &mut Value,
    path: &str,
    method: &str,
    name: &str,
    change: impl FnOnce(&mut Value),
) {
    let pointer = format!(
        "/paths/{}/{method}/parameters",
        path.replace('~', "~0").replace('/', "~1")
    );
    if let Some(param) = doc
        .pointer_mut(&pointer)
        .and_then(Value::as_array_mut)
        .and_then(|params| params.iter_mut().find(|p| p["name"] == name))
    {
        change(param);
    }
}

#[cfg(test)]
mod tests {
    use regex::Regex;

    use super::*;
    use crate::domain::{PageUrl, parse_timestamp};

    fn full(pattern: &str) -> Regex {
        Regex::new(pattern).unwrap()
    }

    #[test]
    fn every_url_the_pattern_allows_is_accepted() {
        let re = full(PAGE_URL_PATTERN);
        for url in [
            "https://example.com",
            "HTTP://A-1.b2.Example/x?y=1#z",
            "http://localhost:8080/",
            "http://a:/",
            "http://a:065535/",
            "https://a.b.c.d.e.f/%zz/\\/[]{}|^`'\"<>",
            "http://x/?",
            "https://a-b-c.d9/#",
            "http://a*b.c_d/",
            "http://a./",
        ] {
            assert!(re.is_match(url), "{url}");
            assert!(PageUrl::parse(url).is_some(), "{url}");
        }
        for url in [
            "https://1.2.3.4/",
            "https://a.1/",
            "ftp://a.com/",
            "https://a.com:65536/",
            "https://",
            "https://a b/",
        ] {
            assert!(!re.is_match(url), "{url}");
        }
    }

    #[test]
    fn the_url_pattern_agrees_with_the_code_on_every_printable_character() {
        let re = full(PAGE_URL_PATTERN);
        for c in (0x20u8..0x7f).map(char::from) {
            for url in [
                format!("http://a{c}b/"),
                format!("http://a{c}"),
                format!("http://{c}a/x"),
                format!("http://a.{c}b"),
                format!("http://a{c}.b"),
                format!("http://a/{c}"),
                format!("HTTP://A{c}"),
                format!("http://a:1{c}"),
            ] {
                let accepted = PageUrl::parse(&url).is_some();
                // Sound: everything the pattern allows is accepted.
                if re.is_match(&url) {
                    assert!(accepted, "the pattern allows {url:?}, the code refuses it");
                }
                // Close: what the code takes is in the pattern, but for three deliberate gaps:
                // digits (IPv4 forms), `@` (user info) and `\\` where the URL rules read it
                // as one of the `//` after the scheme.
                if accepted && !c.is_ascii_digit() && c != '@' && c != '\\' {
                    assert!(
                        re.is_match(&url),
                        "the code accepts {url:?}, the pattern refuses it"
                    );
                }
            }
        }
    }

    #[test]
    fn every_timestamp_the_patterns_allow_is_accepted() {
        let one = full(&timestamp_pattern());
        let range = full(&range_pattern());
        for ts in [
            "1971-01-01T00:00:00+23:59",
            "2247-12-31 23:59:59-23:59",
            "2025-02-28",
            "2024-04-30T10:00:00.123456789Z",
            "2025-12-31 00:00:00",
            "0",
            "999999999",
            "1753698600.25",
            "7999999999.999",
            "0.",
        ] {
            assert!(one.is_match(ts), "{ts}");
            assert!(parse_timestamp(ts).is_some(), "{ts}");
            assert!(range.is_match(&format!("{ts},{ts}")), "{ts}");
        }
        for ts in [
            "2025-02-29",
            "2025-04-31",
            "1970-01-01",
            "2248-01-01",
            "2025-07-28 24:00:00",
            "",
        ] {
            assert!(!one.is_match(ts), "{ts}");
        }
    }

    #[test]
    fn the_document_carries_the_patterns() {
        let doc = super::super::docs::openapi_json();
        let visit = &doc["components"]["schemas"]["VisitRequest"]["properties"]["url"];
        assert_eq!(visit["pattern"], PAGE_URL_PATTERN);
        let legacy = &doc["paths"]["/"]["get"]["parameters"][0];
        assert_eq!(
            (&legacy["name"], &legacy["required"]),
            (&json!("url"), &json!(true))
        );
        assert_eq!(legacy["schema"]["maxLength"], MAX_URL_BYTES);
        let domains =
            &doc["paths"]["/domains"]["post"]["requestBody"]["content"]["application/json"];
        assert_eq!(domains["schema"]["required"], json!(["timestamp"]));
    }
}
