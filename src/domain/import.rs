//! Parsing import files: JSONL or one JSON array of visit records.
//!
//! A record is `{"url", "ip" | "ip_address", "user_agent", "timestamp"[, "event"]}` — exactly
//! what `/all-visits?format=jsonl` writes, so an export imports back unchanged. A bad record is
//! reported with its line (JSONL) or position (array) and skipped; the others go on.

use std::io::BufRead;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::domain::{NewVisit, Source, Visitor};
use crate::domain::{
    PageUrl, clean_user_agent, event_or_default, parse_timestamp, timestamp_from_unix_seconds,
};

/// Errors listed in a report at most (the counts stay exact).
pub const MAX_REPORTED_ERRORS: usize = 100;

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct RecordError {
    /// Line of the record (JSONL), or its 1-based position in a JSON array.
    pub line: usize,
    pub detail: String,
}

#[derive(Debug, Clone, Default, Serialize, ToSchema, PartialEq, Eq)]
#[schema(example = json!({"imported": 2, "skipped": 1, "errors": [{"line": 3, "detail": "timestamp is missing"}]}))]
pub struct ImportReport {
    pub imported: u64,
    pub skipped: u64,
    /// The first 100 errors.
    pub errors: Vec<RecordError>,
}

impl ImportReport {
    pub fn skip(&mut self, line: usize, detail: String) {
        self.skipped += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(RecordError { line, detail });
        }
    }
}

/// Turns one JSON value into a visit, or says what is wrong with it.
pub fn parse_record(value: &Value) -> Result<NewVisit, String> {
    let obj = value.as_object().ok_or("a record must be a JSON object")?;
    let url = match obj.get("url") {
        Some(Value::String(s)) => PageUrl::parse(s).ok_or("Invalid URL format")?,
        Some(_) => return Err("url must be a string".into()),
        None => return Err("url is missing".into()),
    };
    let ip = match obj.get("ip").or_else(|| obj.get("ip_address")) {
        Some(Value::String(s)) => {
            Visitor::parse(s.trim()).ok_or_else(|| format!("ip {s:?} is not an IP address"))?
        }
        Some(_) => return Err("ip must be a string".into()),
        None => return Err("ip is missing".into()),
    };
    let user_agent = match obj.get("user_agent") {
        None | Some(Value::Null) => clean_user_agent(None),
        Some(Value::String(s)) => clean_user_agent(Some(s)),
        Some(_) => return Err("user_agent must be a string".into()),
    };
    let at = match obj.get("timestamp") {
        Some(Value::String(s)) => {
            parse_timestamp(s).ok_or_else(|| format!("timestamp {s:?} is not a valid time"))?
        }
        Some(Value::Number(n)) => n
            .as_f64()
            .and_then(timestamp_from_unix_seconds)
            .ok_or("timestamp is out of range")?,
        Some(_) => return Err("timestamp must be a string or unix seconds".into()),
        None => return Err("timestamp is missing".into()),
    };
    let event = event_or_default(match obj.get("event") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err("event must be a string".into()),
    })?;
    let referrer = match obj.get("referrer") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err("referrer must be a string".into()),
    };
    Ok(NewVisit {
        source: Source::of(&url, referrer),
        url,
        ip,
        user_agent,
        event,
        at,
        stamped_on_arrival: false,
    })
}

/// How an import body is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// JSONL or a JSON array, told apart by the first non-blank byte (files, `text/plain`).
    Detect,
    /// One JSON array (`application/json`): anything else is malformed.
    JsonArray,
    /// JSONL (`application/x-ndjson`): every line is a record, even one starting with `[`.
    Jsonl,
}

/// Reads records from `reader`, JSONL or a JSON array (told apart by the first non-blank
/// byte), calling `each(line, record)` in order. An unreadable stream is an `Err`; bad records
/// are passed as `Err` to `each`.
pub fn read_records(
    reader: impl BufRead,
    each: impl FnMut(usize, Result<NewVisit, String>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    read_records_as(reader, Layout::Detect, each)
}

/// [`read_records`] with the layout given (an HTTP body's media type says which it is, so a
/// body is never read as the other kind).
pub fn read_records_as(
    mut reader: impl BufRead,
    layout: Layout,
    mut each: impl FnMut(usize, Result<NewVisit, String>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let first = loop {
        let buf = reader.fill_buf()?;
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => break Some(buf[i]),
            None if buf.is_empty() => break None,
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    };
    let array = match layout {
        Layout::Detect => first == Some(b'['),
        Layout::JsonArray => true,
        Layout::Jsonl => false,
    };
    match first {
        None if layout == Layout::JsonArray => Err(anyhow::anyhow!("the JSON array is missing")),
        None => Ok(()),
        Some(_) if array => {
            let values: Vec<Value> = serde_json::from_reader(reader)
                .map_err(|e| anyhow::anyhow!("the JSON array is malformed: {e}"))?;
            for (i, value) in values.iter().enumerate() {
                each(i + 1, parse_record(value))?;
            }
            Ok(())
        }
        Some(_) => {
            let mut line = Vec::new();
            let mut number = 0;
            loop {
                line.clear();
                if reader.read_until(b'\n', &mut line)? == 0 {
                    return Ok(());
                }
                number += 1;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let record = serde_json::from_slice::<Value>(&line)
                    .map_err(|e| format!("invalid JSON: {e}"))
                    .and_then(|v| parse_record(&v));
                each(number, record)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EVENT_RULE;

    fn collect(input: &str) -> (Vec<NewVisit>, Vec<(usize, String)>) {
        let (mut ok, mut bad) = (Vec::new(), Vec::new());
        read_records(input.as_bytes(), |line, r| {
            match r {
                Ok(v) => ok.push(v),
                Err(e) => bad.push((line, e)),
            }
            Ok(())
        })
        .unwrap();
        (ok, bad)
    }

    #[test]
    fn an_event_is_optional_but_when_given_must_be_a_valid_name() {
        let with = |event: &str| {
            let record = format!(
                r#"{{"url":"https://a.com/","ip":"1.2.3.4","timestamp":1753698600{event}}}"#
            );
            parse_record(&serde_json::from_str(&record).unwrap()).map(|v| v.event)
        };
        assert_eq!(with("").unwrap(), "pageview");
        assert_eq!(with(r#","event":null"#).unwrap(), "pageview");
        assert_eq!(with(r#","event":"signup""#).unwrap(), "signup");
        assert_eq!(with(r#","event":"Sign Up""#).unwrap_err(), EVENT_RULE);
        assert_eq!(with(r#","event":7"#).unwrap_err(), "event must be a string");
    }

    #[test]
    fn jsonl_records_parse_and_bad_lines_are_reported_by_number() {
        let input = concat!(
            r#"{"url":"https://a.com/x","ip":"1.2.3.4","user_agent":"UA","timestamp":"2025-07-28 10:30:00"}"#,
            "\n\n",
            r#"{"url":"nope","ip":"1.2.3.4","timestamp":"2025-07-28 10:30:00"}"#,
            "\n",
            r#"{"url":"https://a.com/y","ip_address":"::ffff:10.0.0.1","timestamp":1753698600,"event":"order"}"#,
            "\nnot json\n"
        );
        let (ok, bad) = collect(input);
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].ip.to_string(), "10.0.0.1");
        assert_eq!(ok[1].event, "order");
        assert_eq!(ok[0].at, ok[1].at);
        assert_eq!(bad.iter().map(|b| b.0).collect::<Vec<_>>(), vec![3, 5]);
    }

    #[test]
    fn a_declared_layout_is_never_read_as_the_other() {
        let read = |input: &str, layout| {
            let mut lines = Vec::new();
            read_records_as(input.as_bytes(), layout, |line, r| {
                lines.push((line, r.is_ok()));
                Ok(())
            })
            .map(|()| lines)
        };
        // A JSONL line that starts with `[` is a bad record, not an array.
        assert_eq!(read("[]\n", Layout::Jsonl).unwrap(), vec![(1, false)]);
        assert_eq!(read("[]", Layout::Detect).unwrap(), vec![]);
        // A JSON body must be one array.
        for bad in ["{}", "", "  ", "5", "[1] [2]"] {
            assert!(read(bad, Layout::JsonArray).is_err(), "{bad:?}");
        }
        assert_eq!(read(" [5]", Layout::JsonArray).unwrap(), vec![(1, false)]);
    }

    #[test]
    fn json_arrays_parse_with_positions() {
        let (ok, bad) = collect(
            r#" [{"url":"https://a.com","ip":"1.1.1.1","timestamp":"2025-01-01T00:00:00Z"}, {"url":"https://a.com"}]"#,
        );
        assert_eq!(ok.len(), 1);
        assert_eq!(bad, vec![(2, "ip is missing".to_owned())]);
    }
}
