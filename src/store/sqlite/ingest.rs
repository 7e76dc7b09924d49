//! Turning visits into raw rows: dimension ids, visit ids, and the logs the roll-up reads.
//!
//! One [`Ingest`] lives beside each writable connection of the visits file (the writer
//! thread's, or a CLI command's). It caches dimension ids, which never change once assigned
//! (pages, agents with the device read from them once, sources, sites, events), and the
//! highest visit id, which another process may move: [`Ingest::begin`] checks
//! `PRAGMA data_version` at the start of every transaction and reloads it when another
//! connection committed. Nothing here touches the rollups: a visit stored at the end of the id
//! order joins the tail the roll-up reads by id; one stored below the highest id is *late* and
//! is also logged in `late_visits`, because the roll-up may already have passed its id.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::data_version;
use super::rollups::{id_at, millis_of, read_progress};
use crate::domain::{DEFAULT_EVENT, Device, EventId, NewVisit, PageUrl, Source, UnixMillis};

/// Dimension caches are cleared when they grow past this many entries: memory stays bounded
/// whatever number of distinct URLs and agents arrives.
const MAX_CACHED: usize = 200_000;

/// Per-connection state of the write path.
#[derive(Debug, Default)]
pub struct Ingest {
    pages: HashMap<String, i64>,
    /// A user agent's id and its device's: the agent is parsed only when it is not here.
    agents: HashMap<String, (i64, i64)>,
    sources: HashMap<Source, i64>,
    sites: HashMap<String, i64>,
    events: HashMap<String, i64>,
    /// The highest visit id ever stored (`raw_state.high_id` remembers it when cleanup deletes
    /// the newest visits); `None` until read from the file.
    last_id: Option<i64>,
    /// Late visits logged through this `Ingest` (see the module doc).
    late: u64,
    /// `PRAGMA data_version` when `last_id` was read: another connection's commit changes it.
    data_version: i64,
}

impl Ingest {
    pub fn new() -> Self {
        Self::default()
    }

    /// Call first in every write transaction (after `BEGIN IMMEDIATE`, so no other writer can
    /// slip in): if another connection committed since our last look (`footfall import` or
    /// `cleanup` beside the server), forget the highest id: it is read again when needed.
    pub fn begin(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let version = data_version(conn)?;
        if version != self.data_version {
            self.data_version = version;
            self.last_id = None;
        }
        Ok(())
    }

    /// Whether another connection committed since [`Self::begin`].
    pub fn foreign_commit_since_begin(&self, conn: &Connection) -> rusqlite::Result<bool> {
        Ok(data_version(conn)? != self.data_version)
    }

    /// Call after a rollback: ids handed out inside it were never committed.
    pub fn rolled_back(&mut self) {
        *self = Self::default();
    }

    /// Late visits logged so far: a write whose count moved must wait for the roll-up before it
    /// is acknowledged, since queries see a late visit only once it is rolled up.
    pub fn late_logged(&self) -> u64 {
        self.late
    }

    /// Stores one visit inside the caller's transaction; returns its id.
    ///
    /// A visit stamped on arrival that reaches the writer after one stamped a few milliseconds
    /// later in the same second (two requests racing to the queue) is stored at that later
    /// millisecond rather than as late: the two arrived together, and a late visit is answered
    /// only after the next roll-up. Within the second, the time the response told the client
    /// stays exact; across a second boundary the visit stays late.
    pub fn add_visit(&mut self, conn: &Connection, visit: &NewVisit) -> rusqlite::Result<i64> {
        let page_id = self.page_id(conn, &visit.url)?;
        let (agent_id, device_id) = self.agent_id(conn, &visit.user_agent)?;
        let event_id = self.event_id(conn, &visit.event)?;
        let source_id = self.source_id(conn, &visit.source)?;
        let ip = visit.ip.to_bytes();
        let mut at = visit.at;
        if visit.stamped_on_arrival {
            let newest = millis_of(self.highest_id(conn)?);
            if at < newest && at.div_euclid(1000) == newest.div_euclid(1000) {
                at = newest;
            }
        }
        let row = RawRow {
            page_id,
            ip: &ip,
            agent_id,
            event_id,
            source_id,
            device_id,
        };
        self.insert_visit(conn, at, &row)
    }

    /// The highest visit id, read once and then kept (see [`Ingest::begin`]).
    fn highest_id(&mut self, conn: &Connection) -> rusqlite::Result<i64> {
        match self.last_id {
            Some(id) => Ok(id),
            None => Ok(*self.last_id.insert(conn.query_row(
                "SELECT max(coalesce((SELECT max(id) FROM visits), 0), high_id)
                 FROM raw_state WHERE id = 1",
                [],
                |r| r.get(0),
            )?)),
        }
    }

    /// Logs pre-counted clicks of a site (`POST /domains`) in `clicks`, for the roll-up.
    pub fn add_clicks(
        &mut self,
        conn: &Connection,
        site: &str,
        at: UnixMillis,
        clicks: i64,
    ) -> rusqlite::Result<()> {
        let site_id = self.site_id(conn, site)?;
        let event_id = self.event_id(conn, DEFAULT_EVENT)?;
        conn.prepare_cached(
            "INSERT INTO clicks (site_id, minute, event_id, clicks) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![site_id, at.div_euclid(60_000), event_id, clicks])?;
        Ok(())
    }

    /// Picks the visit's id (`millis << 20 | seq`, the first free seq of its millisecond) and
    /// inserts the raw row, logging it when it is late (below the highest id). In the absurd
    /// case of 2^20 visits in one millisecond the visit moves to the next one rather than being
    /// refused.
    fn insert_visit(
        &mut self,
        conn: &Connection,
        at: UnixMillis,
        row: &RawRow<'_>,
    ) -> rusqlite::Result<i64> {
        let last_id = self.highest_id(conn)?;
        let mut at = at;
        let id = loop {
            let id = if id_at(at) > last_id {
                id_at(at)
            } else if millis_of(last_id) == at {
                last_id + 1
            } else {
                // An older millisecond (imports, a clock step back): after its last visit.
                let max: Option<i64> = conn
                    .prepare_cached("SELECT max(id) FROM visits WHERE id >= ?1 AND id < ?2")?
                    .query_row(params![id_at(at), id_at(at + 1)], |r| r.get(0))?;
                max.map_or(id_at(at), |m| m + 1)
            };
            if millis_of(id) == at {
                break id;
            }
            at += 1;
        };
        conn.prepare_cached(
            "INSERT INTO visits (id, page_id, ip, agent_id, event_id, source_id, device_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            id,
            row.page_id,
            row.ip,
            row.agent_id,
            row.event_id,
            row.source_id,
            row.device_id
        ])?;
        if id < last_id {
            // The roll-up may have passed this id already: log it where it looks.
            conn.prepare_cached("INSERT INTO late_visits (visit_id) VALUES (?1)")?
                .execute([id])?;
            self.late += 1;
        }
        self.last_id = Some(last_id.max(id));
        Ok(id)
    }

    /// The page's id; a new page is inserted with its site.
    fn page_id(&mut self, conn: &Connection, url: &PageUrl) -> rusqlite::Result<i64> {
        if let Some(&id) = self.pages.get(url.as_str()) {
            return Ok(id);
        }
        let found = conn
            .prepare_cached("SELECT id FROM pages WHERE url = ?1")?
            .query_row([url.as_str()], |r| r.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                let site_id = self.site_id(conn, url.site())?;
                conn.prepare_cached(
                    "INSERT INTO pages (url, site_id) VALUES (?1, ?2) RETURNING id",
                )?
                .query_row(params![url.as_str(), site_id], |r| r.get(0))?
            }
        };
        cache(&mut self.pages, url.as_str(), id);
        Ok(id)
    }

    /// The agent's id and its device's; a new agent is parsed ([`Device::parse`]) once.
    fn agent_id(&mut self, conn: &Connection, ua: &str) -> rusqlite::Result<(i64, i64)> {
        if let Some(&ids) = self.agents.get(ua) {
            return Ok(ids);
        }
        let agent_id = row_id(conn, "agents", &["ua"], &[ua])?;
        let device = Device::parse(ua);
        let device_id = row_id(
            conn,
            "devices",
            &["browser", "os", "device_type"],
            &[&device.browser, &device.os, &device.device_type],
        )?;
        cache(&mut self.agents, ua, (agent_id, device_id));
        Ok((agent_id, device_id))
    }

    fn source_id(&mut self, conn: &Connection, source: &Source) -> rusqlite::Result<i64> {
        if let Some(&id) = self.sources.get(source) {
            return Ok(id);
        }
        let id = row_id(
            conn,
            "sources",
            &["referrer", "utm_source", "utm_medium", "utm_campaign"],
            &[
                &source.referrer,
                &source.utm_source,
                &source.utm_medium,
                &source.utm_campaign,
            ],
        )?;
        if self.sources.len() >= MAX_CACHED {
            self.sources.clear();
        }
        self.sources.insert(source.clone(), id);
        Ok(id)
    }

    fn site_id(&mut self, conn: &Connection, site: &str) -> rusqlite::Result<i64> {
        dimension_id(conn, &mut self.sites, "sites", "name", site)
    }

    fn event_id(&mut self, conn: &Connection, event: &str) -> rusqlite::Result<i64> {
        dimension_id(conn, &mut self.events, "events", "name", event)
    }
}

/// The id of `value` in a `(id, <column> UNIQUE)` dimension table, inserted when missing.
fn dimension_id(
    conn: &Connection,
    cached: &mut HashMap<String, i64>,
    table: &str,
    column: &str,
    value: &str,
) -> rusqlite::Result<i64> {
    if let Some(&id) = cached.get(value) {
        return Ok(id);
    }
    let found = conn
        .prepare_cached(&format!("SELECT id FROM {table} WHERE {column} = ?1"))?
        .query_row([value], |r| r.get(0))
        .optional()?;
    let id = match found {
        Some(id) => id,
        None => conn
            .prepare_cached(&format!(
                "INSERT INTO {table} ({column}) VALUES (?1) RETURNING id"
            ))?
            .query_row([value], |r| r.get(0))?,
    };
    cache(cached, value, id);
    Ok(id)
}

/// The id of the row of `table` whose `columns` (together UNIQUE) hold `values`, inserted when
/// missing. Not cached here: the callers cache by what they resolve from.
fn row_id(
    conn: &Connection,
    table: &str,
    columns: &[&str],
    values: &[&str],
) -> rusqlite::Result<i64> {
    let mut found = conn.prepare_cached(&format!(
        "SELECT id FROM {table} WHERE {}",
        columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c} = ?{}", i + 1))
            .collect::<Vec<_>>()
            .join(" AND ")
    ))?;
    if let Some(id) = found
        .query_row(rusqlite::params_from_iter(values), |r| r.get(0))
        .optional()?
    {
        return Ok(id);
    }
    let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
    conn.prepare_cached(&format!(
        "INSERT INTO {table} ({}) VALUES ({}) RETURNING id",
        columns.join(", "),
        placeholders.join(", ")
    ))?
    .query_row(rusqlite::params_from_iter(values), |r| r.get(0))
}

/// The ids of one raw `visits` row.
struct RawRow<'a> {
    page_id: i64,
    ip: &'a [u8],
    agent_id: i64,
    event_id: i64,
    source_id: i64,
    device_id: i64,
}

fn cache<V>(map: &mut HashMap<String, V>, key: &str, value: V) {
    if map.len() >= MAX_CACHED {
        map.clear();
    }
    map.insert(key.to_owned(), value);
}

/// A visit as stored, in dimension ids: what the rollups are computed from.
#[derive(Debug, Clone)]
pub struct StoredVisit {
    pub id: i64,
    pub page_id: i64,
    pub site_id: i64,
    pub agent_id: i64,
    pub event_id: i64,
    pub ip: Vec<u8>,
    pub source_id: i64,
    pub device_id: i64,
}

/// A query of stored visits: the columns [`stored_visit`] reads, from `visits` and `pages`, then
/// `$rest` (the `WHERE` and the order).
macro_rules! select_stored_visits {
    ($rest:literal) => {
        concat!(
            "SELECT v.id, v.page_id, p.site_id, v.agent_id, v.event_id, v.ip, v.source_id,
                    v.device_id
             FROM visits v JOIN pages p ON p.id = v.page_id ",
            $rest
        )
    };
}

/// Up to `limit` visits (`-1`: all) from id `from` on, oldest first, as the rollups see them.
pub(crate) fn stored_visits_from(
    conn: &Connection,
    from: i64,
    limit: i64,
) -> rusqlite::Result<Vec<StoredVisit>> {
    conn.prepare_cached(select_stored_visits!(
        "WHERE v.id >= ?1 ORDER BY v.id LIMIT ?2"
    ))?
    .query_map(params![from, limit], stored_visit)?
    .collect()
}

/// A row of `id, page_id, site_id, agent_id, event_id, ip, source_id, device_id` (further
/// columns are ignored).
pub(crate) fn stored_visit(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredVisit> {
    Ok(StoredVisit {
        id: r.get(0)?,
        page_id: r.get(1)?,
        site_id: r.get(2)?,
        agent_id: r.get(3)?,
        event_id: r.get(4)?,
        ip: r.get(5)?,
        source_id: r.get(6)?,
        device_id: r.get(7)?,
    })
}

/// The watermark and the tail: every visit above the watermark, not yet in the rollups, oldest
/// first. Bounded by the roll-up policy (`ROLL_UP_AT` visits, plus what arrives during a
/// roll-up; rolled up once writes pause). Late visits below the watermark are not in it: they are acknowledged only once
/// rolled up.
pub fn tail(conn: &Connection) -> rusqlite::Result<(i64, Vec<StoredVisit>)> {
    let watermark = read_progress(conn)?.rolled_up_to;
    Ok((watermark, stored_visits_from(conn, watermark, -1)?))
}

/// The watermark and one page's share of the tail, oldest first: what `/stats/{url}` adds, without
/// reading every other page's tail rows.
pub fn page_tail(conn: &Connection, page_id: i64) -> rusqlite::Result<(i64, Vec<StoredVisit>)> {
    let watermark = read_progress(conn)?.rolled_up_to;
    let visits = conn
        .prepare_cached(select_stored_visits!(
            "WHERE v.id >= ?1 AND v.page_id = ?2 ORDER BY v.id"
        ))?
        .query_map(params![watermark, page_id], stored_visit)?
        .collect::<rusqlite::Result<_>>()?;
    Ok((watermark, visits))
}

/// Deletes the `late_visits` rows up to `seq`, which the rollups have counted (their
/// `progress.late_seq`): the roll-up never reads them again.
pub fn prune_late(conn: &Connection, seq: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM late_visits WHERE seq <= ?1")?
        .execute([seq])?;
    Ok(())
}

/// Remembers that the bus event `id` is recorded (as of `seen_at`); answers whether it is new.
/// Called in the transaction that records the event's visit, so the two commit together.
pub fn remember_event_id(
    conn: &Connection,
    id: &EventId,
    seen_at: UnixMillis,
) -> rusqlite::Result<bool> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO event_ids (id, seen_at) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![id.as_str(), seen_at])?;
    Ok(inserted == 1)
}

/// Forgets the event ids first seen before `before`: the dedup window is over for them. An
/// index range scan, empty most of the time.
pub fn forget_event_ids(conn: &Connection, before: UnixMillis) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM event_ids WHERE seen_at < ?1")?
        .execute([before])?;
    Ok(())
}

/// Adds `by` visits to a per-page counter (seed 004) and returns its new value.
pub fn count_page(conn: &Connection, name: &str, by: i64) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO page_counters (name, visits) VALUES (?1, ?2)
         ON CONFLICT DO UPDATE SET visits = visits + excluded.visits RETURNING visits",
    )?
    .query_row(params![name, by], |r| r.get(0))
}

/// Test support: commits `visits` through `ingest` in one transaction on the visits file's
/// connection `raw`, as the writer does (without rolling up); answers their ids.
#[cfg(test)]
pub(crate) fn commit_visits(
    raw: &Connection,
    ingest: &mut Ingest,
    visits: impl IntoIterator<Item = NewVisit>,
) -> Vec<i64> {
    super::immediate(raw, |raw| {
        ingest.begin(raw)?;
        visits
            .into_iter()
            .map(|visit| ingest.add_visit(raw, &visit))
            .collect::<rusqlite::Result<Vec<_>>>()
    })
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Durability;
    use crate::store::sqlite::open_writer;

    /// Two requests racing to the writer: the one stamped earlier in the same second joins the
    /// later one's millisecond instead of being late; across a second, or with a time from a
    /// file, a visit below the newest is late as before.
    #[test]
    fn a_visit_stamped_on_arrival_is_late_only_across_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let conns = open_writer(&dir.path().join("v.db"), Durability::Normal).unwrap();
        let mut ingest = Ingest::new();
        let second = 1_700_000_000_000;
        let visit = |at, stamped_on_arrival| NewVisit {
            stamped_on_arrival,
            ..NewVisit::pageview(
                PageUrl::parse("https://a.com/").unwrap(),
                "10.0.0.1".parse().unwrap(),
                "UA".into(),
                at,
            )
        };
        let mut store = |visit: NewVisit| {
            let ids = commit_visits(&conns.raw, &mut ingest, [visit]);
            (millis_of(ids[0]), ingest.late_logged())
        };
        assert_eq!(store(visit(second + 500, true)), (second + 500, 0));
        assert_eq!(store(visit(second + 498, true)), (second + 500, 0));
        assert_eq!(store(visit(second + 498, false)), (second + 498, 1));
        assert_eq!(store(visit(second - 2, true)), (second - 2, 2));
        let late: i64 = conns
            .raw
            .query_row("SELECT count(*) FROM late_visits", [], |r| r.get(0))
            .unwrap();
        assert_eq!(late, 2);
    }
}
