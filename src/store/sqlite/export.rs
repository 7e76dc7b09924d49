//! Streaming export of raw visits, newest first, in JSON, JSONL or CSV.
//!
//! [`export`] walks a cursor over `visits` (a rowid range: ids are time-ordered) and hands
//! ~64 KiB chunks to a sink. The HTTP handler runs it on a blocking thread with a small bounded
//! channel as the sink, so memory is flat however many rows match, a slow client slows the
//! cursor, and a client that goes away stops it. Page URLs and agents are rendered once per
//! distinct value and reused.

use std::collections::hash_map::Entry;
use std::net::IpAddr;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension};
use rustc_hash::FxHashMap;

use super::rollups::{id_at, millis_of};
use crate::domain::export::{ExportFilter, ExportFormat};
use crate::domain::{DEFAULT_EVENT, MAX_MILLIS, UnixMillis, Visitor, VisitorText, write_space};

/// Size at which a chunk is handed to the sink.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// The first visit id at `millis`. Past the last representable instant nothing can match:
/// saturate rather than shift out of range (which would wrap and export everything).
fn id_bound(millis: UnixMillis) -> i64 {
    if millis > MAX_MILLIS {
        i64::MAX
    } else {
        id_at(millis.max(0))
    }
}

/// A rendered dimension value: the JSON-escaped form (quotes included) and the raw text.
struct Rendered {
    json: String,
    raw: String,
}

/// Looks up and renders dimension values once each (bounded).
struct Names<'c> {
    conn: &'c Connection,
    sql: &'static str,
    cache: FxHashMap<i64, Rendered>,
}

impl<'c> Names<'c> {
    fn new(conn: &'c Connection, sql: &'static str) -> Self {
        Self {
            conn,
            sql,
            cache: FxHashMap::default(),
        }
    }

    fn get(&mut self, id: i64) -> rusqlite::Result<&Rendered> {
        if self.cache.len() >= 100_000 && !self.cache.contains_key(&id) {
            self.cache.clear();
        }
        match self.cache.entry(id) {
            Entry::Occupied(hit) => Ok(hit.into_mut()),
            Entry::Vacant(miss) => {
                let raw: String = self
                    .conn
                    .prepare_cached(self.sql)?
                    .query_row([id], |r| r.get(0))
                    .optional()?
                    .unwrap_or_default();
                let json = serde_json::to_string(&raw).unwrap_or_else(|_| "\"\"".into());
                Ok(miss.insert(Rendered { json, raw }))
            }
        }
    }
}

/// One raw row of `visits`.
struct Row {
    id: i64,
    page_id: i64,
    /// `None` for a blob no visitor is stored as (never written by footfall).
    ip: Option<Visitor>,
    agent_id: i64,
    event_id: i64,
}

/// Renders rows into chunks in one format and hands full chunks to the sink.
struct Renderer<'c, S> {
    format: ExportFormat,
    pages: Names<'c>,
    agents: Names<'c>,
    events: Names<'c>,
    out: String,
    csv_out: csv::Writer<Vec<u8>>,
    written: u64,
    sink: S,
    ip_buf: String,
    ts_buf: String,
    /// The second `ts_buf` holds: rows come grouped by second.
    ts_second: Option<i64>,
}

fn new_out() -> String {
    String::with_capacity(CHUNK_BYTES + 4096)
}

fn new_csv() -> csv::Writer<Vec<u8>> {
    csv::Writer::from_writer(Vec::with_capacity(CHUNK_BYTES + 4096))
}

impl<S: FnMut(Bytes) -> bool> Renderer<'_, S> {
    /// Renders one row; `false` when the reader has gone.
    fn row(&mut self, row: &Row) -> rusqlite::Result<bool> {
        self.ip_buf.clear();
        match row.ip {
            Some(Visitor::Ip(ip)) => push_ip(&mut self.ip_buf, ip),
            other => {
                use std::fmt::Write;
                let _ = write!(self.ip_buf, "{}", VisitorText(other));
            }
        }
        let second = millis_of(row.id).div_euclid(1000);
        if self.ts_second != Some(second) {
            self.ts_buf.clear();
            write_space(&mut self.ts_buf, second);
            self.ts_second = Some(second);
        }
        let page = self.pages.get(row.page_id)?;
        let agent = self.agents.get(row.agent_id)?;
        match self.format {
            ExportFormat::Csv => {
                let _ =
                    self.csv_out
                        .write_record([&page.raw, &self.ip_buf, &agent.raw, &self.ts_buf]);
            }
            ExportFormat::Json | ExportFormat::Jsonl => {
                let out = &mut self.out;
                if self.format == ExportFormat::Json && self.written > 0 {
                    out.push(',');
                }
                out.push_str("{\"url\":");
                out.push_str(&page.json);
                out.push_str(",\"ip\":\"");
                out.push_str(&self.ip_buf);
                out.push_str("\",\"user_agent\":");
                out.push_str(&agent.json);
                out.push_str(",\"timestamp\":\"");
                out.push_str(&self.ts_buf);
                out.push('"');
                // The event goes out only when it is not the default, so the original's shape
                // is kept and an export still imports back into the same breakdowns.
                let event = self.events.get(row.event_id)?;
                if event.raw != DEFAULT_EVENT {
                    out.push_str(",\"event\":");
                    out.push_str(&event.json);
                }
                out.push('}');
                if self.format == ExportFormat::Jsonl {
                    out.push('\n');
                }
            }
        }
        self.written += 1;
        if self.out.len() >= CHUNK_BYTES {
            // A fresh buffer of full size: one grown from empty would be copied as it doubles.
            let full = std::mem::replace(&mut self.out, new_out());
            if !(self.sink)(Bytes::from(full)) {
                return Ok(false);
            }
        }
        if self.csv_out.get_ref().len() >= CHUNK_BYTES {
            let full = std::mem::replace(&mut self.csv_out, new_csv());
            let chunk = full.into_inner().map_err(|e| csv_failed(e.error()))?;
            if !(self.sink)(Bytes::from(chunk)) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn finish(mut self) -> rusqlite::Result<u64> {
        if self.format == ExportFormat::Json {
            let tail = format!("],\"total_count\":\"{}\"}}", self.written);
            self.out.push_str(&tail);
        }
        let csv_tail = self
            .csv_out
            .into_inner()
            .map_err(|e| csv_failed(e.error()))?;
        if !csv_tail.is_empty() {
            (self.sink)(Bytes::from(csv_tail));
        }
        if !self.out.is_empty() {
            (self.sink)(Bytes::from(self.out));
        }
        Ok(self.written)
    }
}

/// Streams the matching visits to `sink` in `format`. `sink` returns `false` when the reader
/// has gone, which stops the cursor. Returns the number of visits written.
///
/// Order: newest second first; within one second, oldest first. Timestamps are written with
/// second precision, so this order is invisible in the output — but it is the order in which
/// an import hands out ids, so an export imported into an empty server exports identically.
/// Rows of one second are held back until the second is complete: memory is bounded by the
/// busiest second, not by the export.
pub fn export(
    conn: &Connection,
    filter: &ExportFilter,
    format: ExportFormat,
    sink: impl FnMut(Bytes) -> bool,
) -> rusqlite::Result<u64> {
    let mut renderer = Renderer {
        format,
        pages: Names::new(conn, "SELECT url FROM pages WHERE id = ?1"),
        agents: Names::new(conn, "SELECT ua FROM agents WHERE id = ?1"),
        events: Names::new(conn, "SELECT name FROM events WHERE id = ?1"),
        out: new_out(),
        csv_out: new_csv(),
        written: 0,
        sink,
        ip_buf: String::new(),
        ts_buf: String::new(),
        ts_second: None,
    };
    match format {
        ExportFormat::Json => renderer.out.push_str("{\"visits\":["),
        ExportFormat::Csv => {
            let _ = renderer
                .csv_out
                .write_record(["url", "ip", "user_agent", "timestamp"]);
        }
        ExportFormat::Jsonl => {}
    }
    let mut stmt = conn.prepare(
        "SELECT id, page_id, ip, agent_id, event_id FROM visits
         WHERE id >= ?1 AND id < ?2 ORDER BY id DESC",
    )?;
    let (from_id, to_id) = (id_bound(filter.from), filter.to.map_or(i64::MAX, id_bound));
    let mut rows = stmt.query(rusqlite::params![from_id, to_id])?;
    let mut skip = filter.offset.max(0) as u64;
    let mut left = filter.limit.map_or(u64::MAX, |l| l.max(0) as u64);
    let mut group: Vec<Row> = Vec::new();
    let second_of = |id: i64| millis_of(id).div_euclid(1000);
    'read: loop {
        let next = match rows.next()? {
            Some(row) => Some(Row {
                id: row.get(0)?,
                page_id: row.get(1)?,
                ip: row.get_ref(2)?.as_blob().ok().and_then(Visitor::from_bytes),
                agent_id: row.get(3)?,
                event_id: row.get(4)?,
            }),
            None => None,
        };
        let boundary = match (&next, group.last()) {
            (Some(n), Some(last)) => second_of(n.id) != second_of(last.id),
            (None, _) => true,
            (Some(_), None) => false,
        };
        if boundary {
            for row in group.drain(..).rev() {
                if left == 0 {
                    break 'read;
                }
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                left -= 1;
                if !renderer.row(&row)? {
                    return Ok(renderer.written);
                }
            }
        }
        match next {
            Some(row) => group.push(row),
            None => break,
        }
    }
    renderer.finish()
}

/// Appends `ip` as text. IPv4, nearly every row, is written digit by digit: through
/// `Display` it was about a tenth of an export's time.
fn push_ip(out: &mut String, ip: IpAddr) {
    use std::fmt::Write;
    let IpAddr::V4(v4) = ip else {
        let _ = write!(out, "{ip}");
        return;
    };
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
}

/// A CSV write into memory cannot fail for I/O reasons; map the impossible to an SQLite error so
/// the function keeps one error type.
fn csv_failed(err: &std::io::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(std::io::Error::new(
        err.kind(),
        err.to_string(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::import::parse_record;
    use crate::domain::{NewVisit, Visitor};
    use crate::store::sqlite::open_reader;
    use crate::store::sqlite::test_support::{CHROME, Db, visit};

    fn export_jsonl(db: &Db) -> String {
        let mut out = Vec::new();
        let filter = ExportFilter {
            from: 0,
            to: None,
            limit: None,
            offset: 0,
        };
        let conn = open_reader(&db.db).unwrap();
        export(&conn, &filter, ExportFormat::Jsonl, |chunk| {
            out.extend_from_slice(&chunk);
            true
        })
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Pseudonyms (`--ip-mode hashed`) are exported as `h:` and 16 hex digits, addresses as
    /// addresses, and an export imported into an empty store exports the same again.
    #[test]
    fn visitors_round_trip_through_export_and_import() {
        let at = 1_700_000_000_000;
        let pseudonym = Visitor::Pseudonym(0x00ff_00ff_00ff_00ff);
        let mut hashed = visit("https://a.com/", "10.0.0.1", CHROME, None, at + 2000);
        hashed.ip = pseudonym;
        let visits = vec![
            visit("https://a.com/", "10.0.0.1", CHROME, None, at),
            visit("https://a.com/", "2001:db8::1", CHROME, None, at + 1000),
            hashed,
        ];
        let mut db = Db::new();
        db.write(&visits);
        let exported = export_jsonl(&db);
        assert!(
            exported.contains(r#""ip":"h:00ff00ff00ff00ff""#),
            "{exported}"
        );
        let parsed: Vec<NewVisit> = exported
            .lines()
            .map(|line| parse_record(&serde_json::from_str(line).unwrap()).unwrap())
            .collect();
        let mut visitors: Vec<String> = parsed.iter().map(|v| v.ip.to_string()).collect();
        visitors.sort();
        assert_eq!(visitors, ["10.0.0.1", "2001:db8::1", "h:00ff00ff00ff00ff"]);

        let mut copy = Db::new();
        copy.write(&parsed.into_iter().rev().collect::<Vec<_>>());
        assert_eq!(export_jsonl(&copy), exported);
    }

    #[test]
    fn push_ip_writes_what_display_writes() {
        let mut ips: Vec<IpAddr> = (0..=255u8)
            .map(|o| IpAddr::from([o, 255 - o, o / 10, o % 100]))
            .collect();
        ips.push("2001:db8::1".parse().unwrap());
        ips.push("::ffff:1.2.3.4".parse().unwrap());
        for ip in ips {
            let mut out = String::from("x");
            push_ip(&mut out, ip);
            assert_eq!(out, format!("x{ip}"));
        }
    }
}
