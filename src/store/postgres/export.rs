//! Streaming export on PostgreSQL, byte for byte what the SQLite engine writes
//! (`sqlite/export.rs`): newest second first, within a second oldest first, in JSON, JSONL or
//! CSV, ~64 KiB chunks.
//!
//! Rows come from a portal (a server-side cursor) in one `REPEATABLE READ` snapshot, fetched a
//! few thousand at a time: memory is flat however many rows match, a slow reader slows the
//! cursor (the chunk channel is bounded), and a reader that goes away stops it.

use bytes::Bytes;
use tokio::sync::mpsc;

use super::queries::begin;
use crate::domain::export::{ExportFilter, ExportFormat};
use crate::domain::{DEFAULT_EVENT, Visitor, VisitorText, write_space};

/// Size at which a chunk is handed to the reader.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Rows fetched from the portal at a time.
const FETCH: i32 = 5_000;

/// One exported visit.
struct Row {
    at: i64,
    url: String,
    ip: Vec<u8>,
    agent: String,
    event: String,
}

/// Renders rows into chunks in one format.
struct Renderer {
    format: ExportFormat,
    out: String,
    csv_out: csv::Writer<Vec<u8>>,
    written: u64,
}

fn new_csv() -> csv::Writer<Vec<u8>> {
    csv::Writer::from_writer(Vec::with_capacity(CHUNK_BYTES + 4096))
}

fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

impl Renderer {
    fn new(format: ExportFormat) -> Self {
        let mut renderer = Self {
            format,
            out: String::with_capacity(CHUNK_BYTES + 4096),
            csv_out: new_csv(),
            written: 0,
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
        renderer
    }

    /// Renders one row; answers a full chunk when there is one.
    fn row(&mut self, row: &Row) -> Option<Bytes> {
        let ip = VisitorText(Visitor::from_bytes(&row.ip)).to_string();
        let mut ts = String::with_capacity(19);
        write_space(&mut ts, row.at.div_euclid(1000));
        match self.format {
            ExportFormat::Csv => {
                let _ = self
                    .csv_out
                    .write_record([row.url.as_str(), &ip, &row.agent, &ts]);
            }
            ExportFormat::Json | ExportFormat::Jsonl => {
                let out = &mut self.out;
                if self.format == ExportFormat::Json && self.written > 0 {
                    out.push(',');
                }
                out.push_str("{\"url\":");
                out.push_str(&json(&row.url));
                out.push_str(",\"ip\":\"");
                out.push_str(&ip);
                out.push_str("\",\"user_agent\":");
                out.push_str(&json(&row.agent));
                out.push_str(",\"timestamp\":\"");
                out.push_str(&ts);
                out.push('"');
                if row.event != DEFAULT_EVENT {
                    out.push_str(",\"event\":");
                    out.push_str(&json(&row.event));
                }
                out.push('}');
                if self.format == ExportFormat::Jsonl {
                    out.push('\n');
                }
            }
        }
        self.written += 1;
        if self.out.len() >= CHUNK_BYTES {
            return Some(Bytes::from(std::mem::take(&mut self.out)));
        }
        if self.csv_out.get_ref().len() >= CHUNK_BYTES {
            let full = std::mem::replace(&mut self.csv_out, new_csv());
            return full.into_inner().ok().map(Bytes::from);
        }
        None
    }

    /// The last chunks.
    fn finish(mut self) -> Vec<Bytes> {
        if self.format == ExportFormat::Json {
            let tail = format!("],\"total_count\":\"{}\"}}", self.written);
            self.out.push_str(&tail);
        }
        let mut chunks = Vec::new();
        if let Ok(csv_tail) = self.csv_out.into_inner()
            && !csv_tail.is_empty()
        {
            chunks.push(Bytes::from(csv_tail));
        }
        if !self.out.is_empty() {
            chunks.push(Bytes::from(self.out));
        }
        chunks
    }
}

/// Streams the matching visits to `sink`; answers the number written (or an error for the log).
pub async fn export(
    pool: deadpool_postgres::Pool,
    filter: ExportFilter,
    format: ExportFormat,
    sink: mpsc::Sender<Bytes>,
) -> anyhow::Result<u64> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client).await?;
    let stmt = tx
        .prepare_cached(
            "SELECT v.at, p.url, v.ip, a.ua, e.name FROM visits v
             JOIN pages p ON p.id = v.page_id JOIN agents a ON a.id = v.agent_id
             JOIN events e ON e.id = v.event_id
             WHERE v.at >= $1 AND v.at < $2 ORDER BY v.at DESC, v.id DESC",
        )
        .await?;
    let to = filter.to.unwrap_or(i64::MAX);
    let portal = tx.bind(&stmt, &[&filter.from, &to]).await?;
    let mut renderer = Renderer::new(format);
    let mut skip = filter.offset.max(0) as u64;
    let mut left = filter.limit.map_or(u64::MAX, |l| l.max(0) as u64);
    // Rows of one second, held until the second is complete, then written oldest first.
    let mut group: Vec<Row> = Vec::new();
    let mut done = false;
    'read: while !done {
        let rows = tx.query_portal(&portal, FETCH).await?;
        done = rows.len() < FETCH as usize;
        let mut rows = rows.into_iter().map(|r| Row {
            at: r.get(0),
            url: r.get(1),
            ip: r.get(2),
            agent: r.get(3),
            event: r.get(4),
        });
        loop {
            let next = rows.next();
            let boundary = match (&next, group.last()) {
                (Some(n), Some(last)) => n.at.div_euclid(1000) != last.at.div_euclid(1000),
                (None, _) => done,
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
                    if let Some(chunk) = renderer.row(&row)
                        && sink.send(chunk).await.is_err()
                    {
                        return Ok(renderer.written);
                    }
                }
            }
            match next {
                Some(row) => group.push(row),
                None => break,
            }
        }
    }
    let written = renderer.written;
    for chunk in renderer.finish() {
        if sink.send(chunk).await.is_err() {
            break;
        }
    }
    let _ = tx.commit().await;
    Ok(written)
}
