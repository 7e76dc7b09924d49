//! Streaming export of raw visits, newest first, in JSON, JSONL or CSV.
//!
//! [`export`] walks a cursor over `visits` (a rowid range: ids are time-ordered) and hands
//! ~64 KiB chunks to a sink. The HTTP handler runs it on a blocking thread with a small bounded
//! channel as the sink, so memory is flat however many rows match, a slow client slows the
//! cursor, and a client that goes away stops it. Page URLs and agents are rendered once per
//! distinct value and reused.

use std::collections::HashMap;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension};

use super::rollups::{id_at, millis_of};
use crate::config::ExportFormat;
use crate::domain::{
    DEFAULT_EVENT, UnixMillis, date_start_millis, ip_from_bytes, parse_date, parse_timestamp,
    write_space,
};

/// Size at which a chunk is handed to the sink.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// Which visits to export: ids in `[from_id, to_id)`, newest first, after skipping `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportFilter {
    pub from_id: i64,
    pub to_id: i64,
    pub limit: Option<i64>,
    pub offset: i64,
}

/// The raw filter parameters of `/all-visits` and `footfall export`.
#[derive(Debug, Clone, Default)]
pub struct FilterParams {
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub since: Option<String>,
    pub range: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

impl FilterParams {
    /// Validates the parameters. Every malformed value is an error naming it: a filter is never
    /// silently ignored (the original service returned everything on a bad `range`).
    pub fn parse(&self) -> Result<ExportFilter, String> {
        let mut from: UnixMillis = 0;
        let mut to: Option<UnixMillis> = None;
        if let Some(range) = self.range.as_deref() {
            let (start, end) = range
                .split_once(',')
                .ok_or("range must be START,END (dates or timestamps)")?;
            from = parse_bound(start).ok_or("range START is not a valid date or timestamp")?;
            to = Some(parse_bound(end).ok_or("range END is not a valid date or timestamp")?);
        } else {
            if let Some(start) = self.start_date.as_deref() {
                let date = parse_date(start).ok_or("start_date must be a valid YYYY-MM-DD date")?;
                from = from.max(date_start_millis(date));
            }
            if let Some(end) = self.end_date.as_deref() {
                let date = parse_date(end).ok_or("end_date must be a valid YYYY-MM-DD date")?;
                let next = date.succ_opt().ok_or("end_date is out of range")?;
                to = Some(date_start_millis(next));
            }
            if let Some(since) = self.since.as_deref() {
                let since = parse_timestamp(since).ok_or("since must be a valid timestamp")?;
                from = from.max(since + 1);
            }
        }
        if self.limit.is_some_and(|l| l < 0) {
            return Err("limit must be 0 or more".into());
        }
        if self.offset.is_some_and(|o| o < 0) {
            return Err("offset must be 0 or more".into());
        }
        Ok(ExportFilter {
            from_id: id_at(from),
            to_id: to.map_or(i64::MAX, id_at),
            limit: self.limit,
            offset: self.offset.unwrap_or(0),
        })
    }
}

fn parse_bound(raw: &str) -> Option<UnixMillis> {
    parse_timestamp(raw.trim())
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
    cache: HashMap<i64, Rendered>,
}

impl<'c> Names<'c> {
    fn new(conn: &'c Connection, sql: &'static str) -> Self {
        Self {
            conn,
            sql,
            cache: HashMap::new(),
        }
    }

    fn get(&mut self, id: i64) -> rusqlite::Result<&Rendered> {
        if !self.cache.contains_key(&id) {
            if self.cache.len() >= 100_000 {
                self.cache.clear();
            }
            let raw: String = self
                .conn
                .prepare_cached(self.sql)?
                .query_row([id], |r| r.get(0))
                .optional()?
                .unwrap_or_default();
            let json = serde_json::to_string(&raw).unwrap_or_else(|_| "\"\"".into());
            self.cache.insert(id, Rendered { json, raw });
        }
        Ok(&self.cache[&id])
    }
}

/// Streams the matching visits to `sink` in `format`. `sink` returns `false` when the reader
/// has gone, which stops the cursor. Returns the number of visits written.
pub fn export(
    conn: &Connection,
    filter: &ExportFilter,
    format: ExportFormat,
    mut sink: impl FnMut(Bytes) -> bool,
) -> rusqlite::Result<u64> {
    let mut pages = Names::new(conn, "SELECT url FROM pages WHERE id = ?1");
    let mut agents = Names::new(conn, "SELECT ua FROM agents WHERE id = ?1");
    let mut events = Names::new(conn, "SELECT name FROM events WHERE id = ?1");
    let mut out = String::with_capacity(CHUNK_BYTES + 4096);
    let new_csv = || csv::Writer::from_writer(Vec::with_capacity(CHUNK_BYTES + 4096));
    let mut csv_out = new_csv();
    match format {
        ExportFormat::Json => out.push_str("{\"visits\":["),
        ExportFormat::Csv => {
            let _ = csv_out.write_record(["url", "ip", "user_agent", "timestamp"]);
        }
        ExportFormat::Jsonl => {}
    }
    let mut stmt = conn.prepare(
        "SELECT id, page_id, ip, agent_id, event_id FROM visits
         WHERE id >= ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3 OFFSET ?4",
    )?;
    let mut rows = stmt.query(rusqlite::params![
        filter.from_id,
        filter.to_id,
        filter.limit.unwrap_or(-1),
        filter.offset
    ])?;
    let mut written = 0u64;
    let mut ip_buf = String::new();
    let mut ts_buf = String::new();
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let ip = row.get_ref(2)?.as_blob().unwrap_or_default();
        let event_id: i64 = row.get(4)?;
        ip_buf.clear();
        match ip_from_bytes(ip) {
            Some(ip) => {
                use std::fmt::Write;
                let _ = write!(ip_buf, "{ip}");
            }
            None => ip_buf.push_str("unknown"),
        }
        ts_buf.clear();
        write_space(&mut ts_buf, millis_of(id).div_euclid(1000));
        let page = pages.get(row.get(1)?)?;
        match format {
            ExportFormat::Csv => {
                let agent = agents.get(row.get(3)?)?;
                let _ = csv_out.write_record([&page.raw, &ip_buf, &agent.raw, &ts_buf]);
            }
            ExportFormat::Json | ExportFormat::Jsonl => {
                if format == ExportFormat::Json && written > 0 {
                    out.push(',');
                }
                out.push_str("{\"url\":");
                out.push_str(&page.json);
                out.push_str(",\"ip\":\"");
                out.push_str(&ip_buf);
                out.push_str("\",\"user_agent\":");
                out.push_str(&agents.get(row.get(3)?)?.json);
                out.push_str(",\"timestamp\":\"");
                out.push_str(&ts_buf);
                out.push('"');
                // The event goes out only when it is not the default, so the original's shape
                // is kept and an export still imports back into the same breakdowns.
                let event = events.get(event_id)?;
                if event.raw != DEFAULT_EVENT {
                    out.push_str(",\"event\":");
                    out.push_str(&event.json);
                }
                out.push('}');
                if format == ExportFormat::Jsonl {
                    out.push('\n');
                }
            }
        }
        written += 1;
        if out.len() >= CHUNK_BYTES {
            if !sink(Bytes::from(std::mem::take(&mut out))) {
                return Ok(written);
            }
            out.reserve(CHUNK_BYTES + 4096);
        }
        if csv_out.get_ref().len() >= CHUNK_BYTES {
            let full = std::mem::replace(&mut csv_out, new_csv());
            let chunk = full.into_inner().map_err(|e| csv_failed(e.error()))?;
            if !sink(Bytes::from(chunk)) {
                return Ok(written);
            }
        }
    }
    if format == ExportFormat::Json {
        out.push_str(&format!("],\"total_count\":\"{written}\"}}"));
    }
    let tail = csv_out.into_inner().map_err(|e| csv_failed(e.error()))?;
    if !tail.is_empty() {
        sink(Bytes::from(tail));
    }
    if !out.is_empty() {
        sink(Bytes::from(out));
    }
    Ok(written)
}

/// A CSV write into memory cannot fail for I/O reasons; map the impossible to an SQLite error so
/// the function keeps one error type.
fn csv_failed(err: &std::io::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(std::io::Error::new(
        err.kind(),
        err.to_string(),
    )))
}
