//! Turning visits into rows: dimension ids, visit ids, raw rows and rollup deltas.
//!
//! One [`Ingest`] lives beside each writable connection (the writer thread's, or a CLI
//! command's). It caches dimension ids, which never change once assigned, and the highest visit
//! id, which another process may move: [`Ingest::begin`] checks `PRAGMA data_version` at the
//! start of every transaction and reloads what another connection could have changed.

use std::collections::HashMap;
use std::net::IpAddr;

use rusqlite::{Connection, OptionalExtension, params};

use super::rollups::{RollupDelta, VisitKey, id_at, millis_of};
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
    /// `PRAGMA data_version` when `last_id` was read: another connection's commit changes it.
    data_version: i64,
}

impl Ingest {
    pub fn new() -> Self {
        Self::default()
    }

    /// Call first in every write transaction (after `BEGIN IMMEDIATE`, so no other writer can
    /// slip in): if another connection committed since our last look, forget the highest id.
    pub fn begin(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let version: i64 = conn.pragma_query_value(None, "data_version", |r| r.get(0))?;
        if version != self.data_version {
            self.data_version = version;
            self.last_id = None;
        }
        Ok(())
    }

    /// Whether another connection committed since [`Self::begin`].
    pub fn foreign_commit_since_begin(&self, conn: &Connection) -> rusqlite::Result<bool> {
        let version: i64 = conn.pragma_query_value(None, "data_version", |r| r.get(0))?;
        Ok(version != self.data_version)
    }

    /// Call after a rollback: ids handed out inside it were never committed.
    pub fn rolled_back(&mut self) {
        *self = Self::default();
    }

    /// Stores one visit inside the caller's transaction and counts it into `delta`. Returns the
    /// visit's id.
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

        // A new (page, IP) pair or IP raises the distinct counts; a known one moves its last id.
        let new_pair = conn
            .prepare_cached(
                "INSERT OR IGNORE INTO page_ips (page_id, ip, last_id) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![page_id, ip, id])?;
        if new_pair == 1 {
            delta.count_page_ip(page_id, 1);
        } else {
            conn.prepare_cached(
                "UPDATE page_ips SET last_id = ?3 WHERE page_id = ?1 AND ip = ?2 AND last_id < ?3",
            )?
            .execute(params![page_id, ip, id])?;
        }
        let new_ip = conn
            .prepare_cached("INSERT OR IGNORE INTO ips (ip, last_id) VALUES (?1, ?2)")?
            .execute(params![ip, id])?;
        if new_ip == 1 {
            delta.count_ips(1);
        } else {
            conn.prepare_cached("UPDATE ips SET last_id = ?2 WHERE ip = ?1 AND last_id < ?2")?
                .execute(params![ip, id])?;
        }
        conn.prepare_cached(
            "INSERT INTO page_recent (page_id, id, ip, agent_id) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![page_id, id, ip, agent_id])?;
        delta.touch_recent(page_id);
        delta.count_visit(
            &VisitKey {
                page_id,
                site_id,
                agent_id,
                event_id,
                millis: millis_of(id),
            },
            1,
        );
        Ok(id)
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

/// Increments a per-page counter (seed 004) and returns its new value.
pub fn count_page(conn: &Connection, name: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO page_counters (name, visits) VALUES (?1, 1)
         ON CONFLICT DO UPDATE SET visits = visits + 1 RETURNING visits",
    )?
    .query_row([name], |r| r.get(0))
}
