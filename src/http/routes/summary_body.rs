//! The body of `GET /summary`, written by hand in chunks.
//!
//! A summary can be tens of megabytes (every page, every hour, every user agent), so it is
//! streamed in chunks rather than built whole. Each page's object is written directly rather
//! than through serde: the same few hundred user agents appear under every page and in its
//! recent visits, and escaping each name once per summary instead of at every mention took
//! about 15% off the instructions of `/summary?hours=24`.
//! The unit tests hold the output byte for byte equal to serde's of `PageSummary`, the
//! documented shape.

use std::io::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use rustc_hash::FxHashMap;

use super::analytics::DateRange;
use crate::domain::{HOUR_MS, IsoTime, VisitorText, space_text};
use crate::store::model;

#[cfg(test)]
use super::analytics::PageSummary;

/// Writes `summary` as JSON in chunks of about `chunk` bytes. `sink` returns `false` when the
/// reader is gone, which stops the writing.
pub fn write_summary(summary: &model::Summary, chunk: usize, mut sink: impl FnMut(Bytes) -> bool) {
    let fresh = || Vec::with_capacity(chunk + 4096);
    let mut out: Vec<u8> = fresh();
    let mut names = EscapedNames::default();
    out.extend_from_slice(b"{\"data\":{");
    for (i, (url, page)) in summary.data.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Serializing a string or a derived struct into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, url);
        out.push(b':');
        write_page(&mut out, page, &mut names);
        if out.len() >= chunk && !sink(Bytes::from(std::mem::replace(&mut out, fresh()))) {
            return;
        }
    }
    out.extend_from_slice(b"},\"total_entries\":");
    write_int(&mut out, summary.total_entries);
    out.extend_from_slice(b",\"date_range\":");
    let _ = serde_json::to_writer(&mut out, &summary.date_range.as_ref().map(DateRange::of));
    out.push(b'}');
    sink(Bytes::from(out));
}

/// User agent names JSON-escaped once each, keyed by the address of their shared `Arc<str>`:
/// the store hands out one `Arc` per distinct name, and the summary keeps every one alive
/// while it is written, so an address cannot be reused for another name meanwhile. A name
/// that arrives in a separate `Arc` is only escaped again, never confused.
#[derive(Default)]
struct EscapedNames(FxHashMap<*const u8, Vec<u8>>);

impl EscapedNames {
    fn write(&mut self, out: &mut Vec<u8>, name: &Arc<str>) {
        let escaped = self
            .0
            .entry(name.as_ptr())
            .or_insert_with(|| serde_json::to_vec(&**name).unwrap_or_else(|_| b"\"\"".to_vec()));
        out.extend_from_slice(escaped);
    }
}

/// One page's object: `total_visits`, `unique_ips`, `by_hour`, `user_agents`, `recent_visits`.
/// Numbers, times and visitors are written without `fmt` or a `String` between: a day's
/// summary has tens of thousands of each. None of their text needs escaping (digits, dashes,
/// colons, dots, a space, `T`, hex digits, `h:` and `unknown`).
fn write_page(out: &mut Vec<u8>, page: &model::PageSummary, names: &mut EscapedNames) {
    out.extend_from_slice(b"{\"total_visits\":");
    write_int(out, page.total_visits);
    out.extend_from_slice(b",\"unique_ips\":");
    write_int(out, page.unique_ips);
    out.extend_from_slice(b",\"by_hour\":{");
    for (i, &(hour, n)) in page.by_hour.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // `YYYY-MM-DD HH:00:00`.
        out.push(b'"');
        out.extend_from_slice(&space_text(hour * HOUR_MS / 1000));
        out.extend_from_slice(b"\":");
        write_int(out, n);
    }
    out.extend_from_slice(b"},\"user_agents\":{");
    for (i, (name, n)) in page.user_agents.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        names.write(out, name);
        out.push(b':');
        write_int(out, *n);
    }
    out.extend_from_slice(b"},\"recent_visits\":[");
    for (i, visit) in page.recent_visits.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(
            out,
            "{{\"ip\":\"{}\",\"user_agent\":",
            VisitorText(visit.ip)
        );
        names.write(out, &visit.user_agent);
        out.extend_from_slice(b",\"timestamp\":\"");
        out.extend_from_slice(&IsoTime(visit.at).text());
        out.extend_from_slice(b"\"}");
    }
    out.extend_from_slice(b"]}");
}

fn write_int(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(agents: &[Arc<str>]) -> model::PageSummary {
        model::PageSummary {
            total_visits: 12,
            unique_ips: 3,
            by_hour: vec![(490_000, 4), (490_001, 8)],
            user_agents: agents.iter().map(|a| (a.clone(), 6)).collect(),
            // Every kind of visitor: IPv4, IPv6, a pseudonym, and one not read back (`unknown`).
            recent_visits: ["1.2.3.4", "2001:db8::1", "h:00ff00ff00ff00ff", "?"]
                .into_iter()
                .map(|ip| model::RecentVisit {
                    ip: crate::domain::Visitor::parse(ip),
                    user_agent: agents
                        .first()
                        .cloned()
                        .unwrap_or_else(|| "curl \"x\"".into()),
                    at: 1_763_978_400_000,
                })
                .collect(),
        }
    }

    #[test]
    fn pages_are_written_as_serde_writes_the_documented_shape() {
        let odd: Arc<str> = "quote \" backslash \\ tab \t nul \u{0} café 😀 </script>".into();
        let plain: Arc<str> = "Mozilla/5.0".into();
        let pages = [
            page(&[odd.clone(), plain.clone()]),
            page(&[]),
            page(&[plain, odd]),
        ];
        let mut names = EscapedNames::default();
        for p in &pages {
            let mut ours = Vec::new();
            write_page(&mut ours, p, &mut names);
            let serde = serde_json::to_vec(&PageSummary::of(p)).unwrap();
            assert_eq!(String::from_utf8(ours), String::from_utf8(serde));
        }
        // And the shape itself, for the visitors and the time.
        let mut ours = Vec::new();
        write_page(&mut ours, &pages[1], &mut names);
        let value: serde_json::Value = serde_json::from_slice(&ours).unwrap();
        let ips: Vec<&str> = (value["recent_visits"].as_array().unwrap().iter())
            .map(|v| v["ip"].as_str().unwrap())
            .collect();
        assert_eq!(
            ips,
            ["1.2.3.4", "2001:db8::1", "h:00ff00ff00ff00ff", "unknown"]
        );
        assert_eq!(
            value["recent_visits"][0]["timestamp"],
            "2025-11-24T10:00:00"
        );
    }

    #[test]
    fn a_summary_in_small_chunks_is_the_same_json() {
        let summary = model::Summary {
            data: (0..50)
                .map(|i| (format!("https://a.com/{i}"), page(&["ua".into()])))
                .collect(),
            total_entries: 600,
            date_range: None,
        };
        let mut chunks = Vec::new();
        write_summary(&summary, 100, |c| {
            chunks.push(c);
            true
        });
        assert!(chunks.len() > 10);
        let whole: Vec<u8> = chunks.concat();
        let value: serde_json::Value = serde_json::from_slice(&whole).unwrap();
        assert_eq!(value["data"].as_object().unwrap().len(), 50);
        assert_eq!(value["total_entries"], 600);
        assert_eq!(value["data"]["https://a.com/7"]["user_agents"]["ua"], 6);
    }
}
