//! Turning visits into rows: dimension ids, visit ids, raw rows and rollup deltas.
//!
//! One [`Ingest`] lives beside each writable connection (the writer thread's, or a CLI
//! command's). It caches dimension ids, which never change once assigned, and the highest visit
//! id, which another process may move: [`Ingest::begin`] checks `PRAGMA data_version` at the
//! start of every transaction and reloads what another connection could have changed.

use std::collections::HashMap;
use std::net::IpAddr;

use rusqlite::{Connection, OptionalExtension, params};

use super::data_version;
use super::rollups::{RECENT_PER_PAGE, RollupDelta, VisitKey, id_at, millis_of};
use crate::domain::{DEFAULT_EVENT, PageUrl, UnixMillis, ip_to_bytes};

/// A validated visit, ready to store.
#[derive(Debug, Clone)]
pub struct NewVisit {
    pub url: PageUrl,
    pub ip: IpAddr,
    pub user_agent: String,
    /// `[a-z0-9_-]{1,64}`; `pageview` when the request named none.
    pub event: String,
    pub at: UnixMillis,
}

impl NewVisit {
    pub fn pageview(url: PageUrl, ip: IpAddr, user_agent: String, at: UnixMillis) -> Self {
        Self {
            url,
            ip,
            user_agent,
            event: DEFAULT_EVENT.to_owned(),
            at,
        }
    }
}

/// Dimension caches are cleared when they grow past this many entries: memory stays bounded
/// whatever number of distinct URLs and agents arrives.
const MAX_CACHED: usize = 200_000;

/// Per-connection state of the write path.
#[derive(Debug, Default)]
pub struct Ingest {
    pages: HashMap<String, (i64, i64)>,
    agents: HashMap<String, i64>,
    sites: HashMap<String, i64>,
    events: HashMap<String, i64>,
    /// The highest visit id stored; `None` until read from the file.
    last_id: Option<i64>,
    /// The rollup watermark (`totals.rolled_up_to`); `None` until read from the file.
    watermark: Option<i64>,
    /// Visits at or above the watermark: counted from the file whenever another connection has
    /// committed (it may have rolled them up), kept up to date by this one in between.
    tail: usize,
    /// `PRAGMA data_version` when `last_id`, the watermark and the tail were read: another
    /// connection's commit changes it.
    data_version: i64,
}

impl Ingest {
    pub fn new() -> Self {
        Self::default()
    }

    /// Call first in every write transaction (after `BEGIN IMMEDIATE`, so no other writer can
    /// slip in): if another connection committed since our last look (`footfall import` or
    /// `cleanup` beside the server, or this is the first look), forget the highest id and read
    /// the watermark and the tail's length again.
    pub fn begin(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let version = data_version(conn)?;
        if version != self.data_version {
            self.data_version = version;
            self.last_id = None;
            let watermark = read_watermark(conn)?;
            self.watermark = Some(watermark);
            let tail: i64 = conn
                .prepare_cached("SELECT count(*) FROM visits WHERE id >= ?1")?
                .query_row([watermark], |r| r.get(0))?;
            self.tail = tail as usize;
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

    /// Stores one visit inside the caller's transaction. A visit at or above the rollup
    /// watermark (any visit recorded now) joins the tail, rolled up later in bulk by
    /// [`roll_up_tail`]; an older one (imports, a clock step back) is counted into `delta` at
    /// once, since the watermark says the rollups already cover its time. Returns its id.
    pub fn add_visit(
        &mut self,
        conn: &Connection,
        delta: &mut RollupDelta,
        visit: &NewVisit,
    ) -> rusqlite::Result<i64> {
        let (page_id, site_id) = self.page_id(conn, &visit.url)?;
        let agent_id = self.agent_id(conn, &visit.user_agent)?;
        let event_id = self.event_id(conn, &visit.event)?;
        let ip = ip_to_bytes(visit.ip);
        let id = self.insert_visit(conn, visit.at, page_id, &ip, agent_id, event_id)?;
        let mut stored = StoredVisit {
            id,
            page_id,
            site_id,
            agent_id,
            event_id,
            ip,
        };
        if id < self.watermark(conn)? {
            roll_up_visits(conn, delta, std::slice::from_mut(&mut stored))?;
        } else {
            self.tail += 1;
        }
        Ok(id)
    }

    /// The rollup watermark, read once per transaction that needs it.
    fn watermark(&mut self, conn: &Connection) -> rusqlite::Result<i64> {
        match self.watermark {
            Some(w) => Ok(w),
            None => Ok(*self.watermark.insert(read_watermark(conn)?)),
        }
    }

    /// Visits in the tail, as of this connection's last transaction.
    pub fn tail_len(&self) -> usize {
        self.tail
    }

    /// Rolls up the whole tail inside the caller's transaction; returns the visits rolled up.
    pub fn roll_up(&mut self, conn: &Connection) -> rusqlite::Result<u64> {
        self.roll_up_oldest(conn, WHOLE_TAIL)
    }

    /// Rolls up the oldest `limit` tail visits ([`WHOLE_TAIL`]: all) inside the caller's
    /// transaction; returns the visits rolled up.
    pub fn roll_up_oldest(&mut self, conn: &Connection, limit: usize) -> rusqlite::Result<u64> {
        let (rolled, watermark) = roll_up_tail(conn, limit)?;
        self.watermark = Some(watermark);
        self.tail = self.tail.saturating_sub(rolled as usize);
        Ok(rolled)
    }

    /// Call after something else on this connection rolled the tail up (cleanup does): the
    /// watermark moved and the tail is empty.
    pub fn tail_rolled_up_elsewhere(&mut self) {
        self.watermark = None;
        self.tail = 0;
    }

    /// Adds pre-counted clicks of a site (`POST /domains`) to `site_clicks` and the site rollups.
    pub fn add_clicks(
        &mut self,
        conn: &Connection,
        delta: &mut RollupDelta,
        site: &str,
        at: UnixMillis,
        clicks: i64,
    ) -> rusqlite::Result<()> {
        let site_id = self.site_id(conn, site)?;
        let event_id = self.event_id(conn, DEFAULT_EVENT)?;
        conn.prepare_cached(
            "INSERT INTO site_clicks (site_id, minute, event_id, clicks) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO UPDATE SET clicks = clicks + excluded.clicks",
        )?
        .execute(params![site_id, at.div_euclid(60_000), event_id, clicks])?;
        delta.count_site(site_id, at, event_id, clicks);
        Ok(())
    }

    /// Picks the visit's id (`millis << 20 | seq`, the first free seq of its millisecond) and
    /// inserts the raw row. In the absurd case of 2^20 visits in one millisecond the visit moves
    /// to the next one rather than being refused.
    fn insert_visit(
        &mut self,
        conn: &Connection,
        at: UnixMillis,
        page_id: i64,
        ip: &[u8],
        agent_id: i64,
        event_id: i64,
    ) -> rusqlite::Result<i64> {
        let last_id = match self.last_id {
            Some(id) => id,
            None => {
                let max: Option<i64> =
                    conn.query_row("SELECT max(id) FROM visits", [], |r| r.get(0))?;
                *self.last_id.insert(max.unwrap_or(i64::MIN))
            }
        };
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
            "INSERT INTO visits (id, page_id, ip, agent_id, event_id) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![id, page_id, ip, agent_id, event_id])?;
        self.last_id = Some(last_id.max(id));
        Ok(id)
    }

    fn page_id(&mut self, conn: &Connection, url: &PageUrl) -> rusqlite::Result<(i64, i64)> {
        if let Some(&ids) = self.pages.get(url.as_str()) {
            return Ok(ids);
        }
        let found = conn
            .prepare_cached("SELECT id, site_id FROM pages WHERE url = ?1")?
            .query_row([url.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let ids = match found {
            Some(ids) => ids,
            None => {
                let site_id = self.site_id(conn, url.site())?;
                let page_id = conn
                    .prepare_cached(
                        "INSERT INTO pages (url, site_id) VALUES (?1, ?2) RETURNING id",
                    )?
                    .query_row(params![url.as_str(), site_id], |r| r.get(0))?;
                (page_id, site_id)
            }
        };
        cache(&mut self.pages, url.as_str(), ids);
        Ok(ids)
    }

    fn agent_id(&mut self, conn: &Connection, ua: &str) -> rusqlite::Result<i64> {
        dimension_id(conn, &mut self.agents, "agents", "ua", ua)
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
}

/// Counts stored visits into the rollups: the distinct-IP tables and the newest-visits table
/// directly, the counters through `delta` (applied once per transaction). Reorders `visits`.
///
/// Each table is written in its own key order, not in time order, so consecutive writes land
/// on the same B-tree pages (measured: 11.0 -> 9.4 µs a visit in `examples/writer_bench`), and
/// once per key: a (page, IP) pair or an IP seen many times is one write with its last visit,
/// and a page gets at most its newest [`RECENT_PER_PAGE`] visits in `page_recent`.
pub fn roll_up_visits(
    conn: &Connection,
    delta: &mut RollupDelta,
    visits: &mut [StoredVisit],
) -> rusqlite::Result<()> {
    // Statements prepared once here, not looked up in the cache per visit.
    let mut insert_pair = conn.prepare_cached(
        "INSERT OR IGNORE INTO page_ips (page_id, ip, last_id) VALUES (?1, ?2, ?3)",
    )?;
    let mut move_pair = conn.prepare_cached(
        "UPDATE page_ips SET last_id = ?3 WHERE page_id = ?1 AND ip = ?2 AND last_id < ?3",
    )?;
    let mut insert_recent = conn.prepare_cached(
        "INSERT INTO page_recent (page_id, id, ip, agent_id) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut trim_recent = conn.prepare_cached(
        "DELETE FROM page_recent WHERE page_id = ?1 AND id <
           (SELECT id FROM page_recent WHERE page_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
    )?;
    let mut insert_ip =
        conn.prepare_cached("INSERT OR IGNORE INTO ips (ip, last_id) VALUES (?1, ?2)")?;
    let mut move_ip =
        conn.prepare_cached("UPDATE ips SET last_id = ?2 WHERE ip = ?1 AND last_id < ?2")?;

    visits.sort_unstable_by(|a, b| (a.page_id, &a.ip, a.id).cmp(&(b.page_id, &b.ip, b.id)));
    for page in visits.chunk_by(|a, b| a.page_id == b.page_id) {
        // A new (page, IP) pair raises the page's distinct count; a known one moves its last id.
        for pair in page.chunk_by(|a, b| a.ip == b.ip) {
            let last = &pair[pair.len() - 1];
            if insert_pair.execute(params![last.page_id, last.ip, last.id])? == 1 {
                delta.count_page_ip(last.page_id, 1);
            } else {
                move_pair.execute(params![last.page_id, last.ip, last.id])?;
            }
        }
        for v in page {
            delta.count_visit(
                &VisitKey {
                    page_id: v.page_id,
                    site_id: v.site_id,
                    agent_id: v.agent_id,
                    event_id: v.event_id,
                    millis: millis_of(v.id),
                },
                1,
            );
        }
        let mut newest: Vec<&StoredVisit> = page.iter().collect();
        if newest.len() > RECENT_PER_PAGE as usize {
            newest.select_nth_unstable_by(RECENT_PER_PAGE as usize - 1, |a, b| b.id.cmp(&a.id));
            newest.truncate(RECENT_PER_PAGE as usize);
        }
        for v in newest {
            insert_recent.execute(params![v.page_id, v.id, v.ip, v.agent_id])?;
        }
        // Back to the newest RECENT_PER_PAGE, while the page's rows are in the cache. When a
        // page has fewer, OFFSET finds no row, the comparison is NULL and nothing is deleted.
        trim_recent.execute(params![page[0].page_id, RECENT_PER_PAGE - 1])?;
    }

    // Distinct IPs of the whole database, each with its last visit.
    visits.sort_unstable_by(|a, b| (&a.ip, a.id).cmp(&(&b.ip, b.id)));
    for same_ip in visits.chunk_by(|a, b| a.ip == b.ip) {
        let last = &same_ip[same_ip.len() - 1];
        if insert_ip.execute(params![last.ip, last.id])? == 1 {
            delta.count_ips(1);
        } else {
            move_ip.execute(params![last.ip, last.id])?;
        }
    }
    Ok(())
}

/// `totals.rolled_up_to`: visits below it are in the rollups, the others are the tail.
pub fn read_watermark(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT rolled_up_to FROM totals WHERE id = 1")?
        .query_row([], |r| r.get(0))
}

/// Up to `limit` visits (`-1`: all) from id `from` on, oldest first, as the rollups see them.
fn stored_visits_from(
    conn: &Connection,
    from: i64,
    limit: i64,
) -> rusqlite::Result<Vec<StoredVisit>> {
    conn.prepare_cached(
        "SELECT v.id, v.page_id, p.site_id, v.agent_id, v.event_id, v.ip
         FROM visits v JOIN pages p ON p.id = v.page_id
         WHERE v.id >= ?1 ORDER BY v.id LIMIT ?2",
    )?
    .query_map(params![from, limit], stored_visit)?
    .collect()
}

/// A row of `id, page_id, site_id, agent_id, event_id, ip`.
fn stored_visit(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredVisit> {
    Ok(StoredVisit {
        id: r.get(0)?,
        page_id: r.get(1)?,
        site_id: r.get(2)?,
        agent_id: r.get(3)?,
        event_id: r.get(4)?,
        ip: r.get(5)?,
    })
}

/// The watermark and the tail: every visit not yet in the rollups, oldest first. Bounded by the
/// writer's roll-up policy (at most `ROLL_UP_AT` visits plus one batch; rolled up once writes
/// pause).
pub fn tail(conn: &Connection) -> rusqlite::Result<(i64, Vec<StoredVisit>)> {
    let watermark = read_watermark(conn)?;
    Ok((watermark, stored_visits_from(conn, watermark, -1)?))
}

/// The watermark and one page's share of the tail, oldest first: what `/stats/{url}` adds, without
/// reading every other page's tail rows.
pub fn page_tail(conn: &Connection, page_id: i64) -> rusqlite::Result<(i64, Vec<StoredVisit>)> {
    let watermark = read_watermark(conn)?;
    let visits = conn
        .prepare_cached(
            "SELECT v.id, v.page_id, p.site_id, v.agent_id, v.event_id, v.ip
             FROM visits v JOIN pages p ON p.id = v.page_id
             WHERE v.id >= ?1 AND v.page_id = ?2 ORDER BY v.id",
        )?
        .query_map(params![watermark, page_id], stored_visit)?
        .collect::<rusqlite::Result<_>>()?;
    Ok((watermark, visits))
}

/// A roll-up limit that takes every tail visit.
pub const WHOLE_TAIL: usize = usize::MAX;

/// Visits rolled up per step of [`roll_up_tail`]: bounds its memory, not its atomicity.
const ROLL_UP_CHUNK: i64 = 50_000;

/// Counts the oldest `limit` tail visits (every one with [`WHOLE_TAIL`]) into the rollups and moves
/// the watermark past them, inside the caller's transaction. Returns (visits rolled up, new
/// watermark). Every visit below the new watermark is then in the rollups: older visits were
/// already (the tail is everything from the old watermark on, and visits are taken in id order).
pub fn roll_up_tail(conn: &Connection, limit: usize) -> rusqlite::Result<(u64, i64)> {
    let mut watermark = read_watermark(conn)?;
    let mut rolled = 0u64;
    let mut left = i64::try_from(limit).unwrap_or(i64::MAX);
    while left > 0 {
        let asked = ROLL_UP_CHUNK.min(left);
        let mut chunk = stored_visits_from(conn, watermark, asked)?;
        let Some(last) = chunk.last() else { break };
        watermark = last.id + 1;
        left -= chunk.len() as i64;
        let mut delta = RollupDelta::default();
        roll_up_visits(conn, &mut delta, &mut chunk)?;
        delta.apply(conn)?;
        rolled += chunk.len() as u64;
        // A short chunk was the rest of the tail: no need to ask again for nothing.
        if (chunk.len() as i64) < asked {
            break;
        }
    }
    conn.prepare_cached("UPDATE totals SET rolled_up_to = ?1 WHERE id = 1")?
        .execute([watermark])?;
    Ok((rolled, watermark))
}

/// Increments a per-page counter (seed 004) and returns its new value.
pub fn count_page(conn: &Connection, name: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO page_counters (name, visits) VALUES (?1, 1)
         ON CONFLICT DO UPDATE SET visits = visits + 1 RETURNING visits",
    )?
    .query_row([name], |r| r.get(0))
}
