//! Rollups: the aggregate tables analytics read, kept in step with the raw `visits` rows.
//!
//! A write transaction collects what it changes in a [`RollupDelta`] (one entry per touched key,
//! however many visits hit it) and applies it just before commit. Cleanup builds the same delta
//! with a negative sign from the rows it deletes, so insertion and deletion share one code path.
//! [`check`] rebuilds every rollup from the raw rows and reports any difference: the invariant
//! the tests hold the writer to.

use rustc_hash::FxHashMap as HashMap;

use rusqlite::{Connection, params};

use crate::domain::UnixMillis;

/// Bits of a visit id below the millisecond: ids are `millis << ID_SEQ_BITS | seq`.
pub const ID_SEQ_BITS: u32 = 20;
/// How many recent visits per page are kept in `page_recent` (the most any endpoint shows).
pub const RECENT_PER_PAGE: i64 = 20;
/// Site id of the pseudo-site that sums every site (`/breakdown/all/...`).
pub const ALL_SITES: i64 = 0;

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// First visit id at or after `millis`.
pub fn id_at(millis: UnixMillis) -> i64 {
    millis << ID_SEQ_BITS
}

/// The time of a visit id.
pub fn millis_of(id: i64) -> UnixMillis {
    id >> ID_SEQ_BITS
}

/// What a visit contributes to the rollups, in dimension ids.
#[derive(Debug, Clone, Copy)]
pub struct VisitKey {
    pub page_id: i64,
    pub site_id: i64,
    pub agent_id: i64,
    pub event_id: i64,
    pub millis: UnixMillis,
}

#[derive(Debug, Default, Clone, Copy)]
struct PageDelta {
    visits: i64,
    unique_ips: i64,
}

/// The changes one transaction makes to the rollup tables, summed per key.
#[derive(Debug, Default)]
pub struct RollupDelta {
    visits: i64,
    unique_ips: i64,
    pages: HashMap<i64, PageDelta>,
    page_hours: HashMap<(i64, i64), i64>,
    page_hour_agents: HashMap<(i64, i64, i64), i64>,
    site_minutes: HashMap<(i64, i64, i64), i64>,
    site_hours: HashMap<(i64, i64, i64), i64>,
    site_days: HashMap<(i64, i64, i64), i64>,
}

impl RollupDelta {
    /// Counts one visit, `sign` = 1 when it is added and -1 when it is deleted.
    pub fn count_visit(&mut self, key: &VisitKey, sign: i64) {
        self.visits += sign;
        self.pages.entry(key.page_id).or_default().visits += sign;
        let hour = key.millis.div_euclid(HOUR_MS);
        *self.page_hours.entry((key.page_id, hour)).or_default() += sign;
        *self
            .page_hour_agents
            .entry((hour, key.page_id, key.agent_id))
            .or_default() += sign;
        self.count_site(key.site_id, key.millis, key.event_id, sign);
    }

    /// Counts `n` events of a site at a time, in the site's rollups and in the all-sites ones.
    pub fn count_site(&mut self, site_id: i64, millis: UnixMillis, event_id: i64, n: i64) {
        let minute = millis.div_euclid(MINUTE_MS);
        let hour = millis.div_euclid(HOUR_MS);
        let day = millis.div_euclid(DAY_MS);
        for site in [site_id, ALL_SITES] {
            *self
                .site_minutes
                .entry((site, minute, event_id))
                .or_default() += n;
            *self.site_hours.entry((site, hour, event_id)).or_default() += n;
            *self.site_days.entry((site, day, event_id)).or_default() += n;
        }
    }

    /// Records that a page gained (`+1`) or lost (`-1`) a distinct IP.
    pub fn count_page_ip(&mut self, page_id: i64, sign: i64) {
        self.pages.entry(page_id).or_default().unique_ips += sign;
    }

    /// Records that the whole database gained or lost distinct IPs.
    pub fn count_ips(&mut self, n: i64) {
        self.unique_ips += n;
    }

    /// Writes every delta into its table (inside the caller's transaction) and empties `self`.
    /// Rows that reach zero are deleted, so "no row" always means zero.
    pub fn apply(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        if self.visits != 0 || self.unique_ips != 0 {
            conn.prepare_cached(
                "UPDATE totals SET visits = visits + ?1, unique_ips = unique_ips + ?2 WHERE id = 1",
            )?
            .execute(params![self.visits, self.unique_ips])?;
        }
        {
            // No `RETURNING` (to learn which pages stay small enough to need no `page_recent`
            // trim): it made each upsert ~6x slower, more than the trims it saved.
            let mut upsert = conn.prepare_cached(
                "INSERT INTO page_totals (page_id, visits, unique_ips) VALUES (?1, ?2, ?3)
                 ON CONFLICT (page_id) DO UPDATE
                 SET visits = visits + excluded.visits, unique_ips = unique_ips + excluded.unique_ips",
            )?;
            let mut delete =
                conn.prepare_cached("DELETE FROM page_totals WHERE page_id = ?1 AND visits <= 0")?;
            let mut pages: Vec<(i64, PageDelta)> =
                self.pages.iter().map(|(&p, &d)| (p, d)).collect();
            pages.sort_unstable_by_key(|&(page, _)| page);
            for (page, d) in pages {
                upsert.execute(params![page, d.visits, d.unique_ips])?;
                if d.visits < 0 {
                    delete.execute([page])?;
                }
            }
        }
        apply_counts(
            conn,
            &self.page_hours,
            "INSERT INTO page_hours (page_id, hour, visits) VALUES (?1, ?2, ?3)
             ON CONFLICT DO UPDATE SET visits = visits + excluded.visits",
            "DELETE FROM page_hours WHERE page_id = ?1 AND hour = ?2 AND visits <= 0",
            |&(p, h)| [p, h],
        )?;
        apply_counts(
            conn,
            &self.page_hour_agents,
            "INSERT INTO page_hour_agents (hour, page_id, agent_id, visits) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO UPDATE SET visits = visits + excluded.visits",
            "DELETE FROM page_hour_agents
             WHERE hour = ?1 AND page_id = ?2 AND agent_id = ?3 AND visits <= 0",
            |&(h, p, a)| [h, p, a],
        )?;
        for (table, bucket, counts) in [
            ("site_minutes", "minute", &self.site_minutes),
            ("site_hours", "hour", &self.site_hours),
            ("site_days", "day", &self.site_days),
        ] {
            apply_counts(
                conn,
                counts,
                &format!(
                    "INSERT INTO {table} (site_id, {bucket}, event_id, visits) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT DO UPDATE SET visits = visits + excluded.visits"
                ),
                &format!(
                    "DELETE FROM {table}
                     WHERE site_id = ?1 AND {bucket} = ?2 AND event_id = ?3 AND visits <= 0"
                ),
                |&(s, b, e)| [s, b, e],
            )?;
        }
        *self = Self::default();
        Ok(())
    }
}

/// Upserts one count table; deletes the rows a negative delta may have brought to zero.
fn apply_counts<K, const N: usize>(
    conn: &Connection,
    counts: &HashMap<K, i64>,
    upsert_sql: &str,
    delete_sql: &str,
    key_params: impl Fn(&K) -> [i64; N],
) -> rusqlite::Result<()> {
    if counts.is_empty() {
        return Ok(());
    }
    let mut upsert = conn.prepare_cached(upsert_sql)?;
    let mut delete = conn.prepare_cached(delete_sql)?;
    // In key order: consecutive upserts land on the same B-tree pages.
    let mut sorted: Vec<([i64; N], i64)> = counts
        .iter()
        .filter(|(_, n)| **n != 0)
        .map(|(key, &n)| (key_params(key), n))
        .collect();
    sorted.sort_unstable();
    for (key, n) in sorted {
        upsert.execute(rusqlite::params_from_iter(key.iter().chain([&n])))?;
        if n < 0 {
            delete.execute(rusqlite::params_from_iter(&key))?;
        }
    }
    Ok(())
}

/// Rows read and deleted per step of a cleanup: bounds its memory, not its atomicity (every
/// step runs inside the caller's one transaction).
const CLEANUP_CHUNK: usize = 100_000;

/// Deletes every visit older than `cutoff` and applies the exact inverse to every rollup.
/// Runs inside the caller's transaction (rolling the tail up first, since it inverts rollups);
/// returns the number of visits deleted.
pub fn cleanup(conn: &Connection, cutoff: UnixMillis) -> rusqlite::Result<u64> {
    super::ingest::roll_up_tail(conn, super::ingest::WHOLE_TAIL)?;
    let cutoff_id = id_at(cutoff);
    let mut delta = RollupDelta::default();

    // Distinct IPs first: a (page, IP) pair or an IP whose last visit is older than the cutoff
    // has no visit left once the cutoff applies.
    {
        let mut stmt = conn.prepare("DELETE FROM page_ips WHERE last_id < ?1 RETURNING page_id")?;
        let mut rows = stmt.query([cutoff_id])?;
        while let Some(row) = rows.next()? {
            delta.count_page_ip(row.get(0)?, -1);
        }
    }
    let gone_ips = conn.execute("DELETE FROM ips WHERE last_id < ?1", [cutoff_id])?;
    delta.count_ips(-(gone_ips as i64));
    conn.execute("DELETE FROM page_recent WHERE id < ?1", [cutoff_id])?;

    let mut deleted = 0u64;
    let mut select = conn.prepare(
        "SELECT v.id, v.page_id, p.site_id, v.agent_id, v.event_id
         FROM visits v JOIN pages p ON p.id = v.page_id
         WHERE v.id < ?1 ORDER BY v.id LIMIT ?2",
    )?;
    loop {
        let mut last = None;
        let mut rows = select.query(params![cutoff_id, CLEANUP_CHUNK as i64])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let key = VisitKey {
                page_id: row.get(1)?,
                site_id: row.get(2)?,
                agent_id: row.get(3)?,
                event_id: row.get(4)?,
                millis: millis_of(id),
            };
            delta.count_visit(&key, -1);
            last = Some(id);
        }
        drop(rows);
        let Some(last) = last else { break };
        deleted += conn.execute("DELETE FROM visits WHERE id <= ?1", [last])? as u64;
        delta.apply(conn)?;
    }
    delta.apply(conn)?;
    Ok(deleted)
}

/// What each rollup table should hold, computed from the raw rows (and `site_clicks`).
const EXPECTED: &[(&str, &str, &str)] = &[
    (
        "totals",
        "SELECT (SELECT count(*) FROM visits), (SELECT count(DISTINCT ip) FROM visits)",
        "SELECT visits, unique_ips FROM totals",
    ),
    (
        "page_totals",
        "SELECT page_id, count(*), count(DISTINCT ip) FROM visits GROUP BY page_id",
        "SELECT page_id, visits, unique_ips FROM page_totals",
    ),
    (
        "page_ips",
        "SELECT page_id, ip, max(id) FROM visits GROUP BY page_id, ip",
        "SELECT page_id, ip, last_id FROM page_ips",
    ),
    (
        "ips",
        "SELECT ip, max(id) FROM visits GROUP BY ip",
        "SELECT ip, last_id FROM ips",
    ),
    (
        "page_hours",
        "SELECT page_id, (id >> 20) / 3600000, count(*) FROM visits GROUP BY 1, 2",
        "SELECT page_id, hour, visits FROM page_hours",
    ),
    (
        "page_hour_agents",
        "SELECT (id >> 20) / 3600000, page_id, agent_id, count(*) FROM visits GROUP BY 1, 2, 3",
        "SELECT hour, page_id, agent_id, visits FROM page_hour_agents",
    ),
    (
        "page_recent",
        "SELECT page_id, id, ip, agent_id FROM (
           SELECT *, row_number() OVER (PARTITION BY page_id ORDER BY id DESC) AS rn FROM visits)
         WHERE rn <= 20",
        "SELECT page_id, id, ip, agent_id FROM page_recent",
    ),
    (
        "site_minutes",
        "WITH raw(site_id, minute, event_id, n) AS (
           SELECT p.site_id, (v.id >> 20) / 60000, v.event_id, 1 FROM visits v JOIN pages p ON p.id = v.page_id
           UNION ALL SELECT site_id, minute, event_id, clicks FROM site_clicks)
         SELECT site_id, minute, event_id, sum(n) FROM raw GROUP BY 1, 2, 3
         UNION ALL SELECT 0, minute, event_id, sum(n) FROM raw GROUP BY 2, 3",
        "SELECT site_id, minute, event_id, visits FROM site_minutes",
    ),
    (
        "site_hours",
        "WITH raw(site_id, hour, event_id, n) AS (
           SELECT p.site_id, (v.id >> 20) / 3600000, v.event_id, 1 FROM visits v JOIN pages p ON p.id = v.page_id
           UNION ALL SELECT site_id, minute / 60, event_id, clicks FROM site_clicks)
         SELECT site_id, hour, event_id, sum(n) FROM raw GROUP BY 1, 2, 3
         UNION ALL SELECT 0, hour, event_id, sum(n) FROM raw GROUP BY 2, 3",
        "SELECT site_id, hour, event_id, visits FROM site_hours",
    ),
    (
        "site_days",
        "WITH raw(site_id, day, event_id, n) AS (
           SELECT p.site_id, (v.id >> 20) / 86400000, v.event_id, 1 FROM visits v JOIN pages p ON p.id = v.page_id
           UNION ALL SELECT site_id, minute / 1440, event_id, clicks FROM site_clicks)
         SELECT site_id, day, event_id, sum(n) FROM raw GROUP BY 1, 2, 3
         UNION ALL SELECT 0, day, event_id, sum(n) FROM raw GROUP BY 2, 3",
        "SELECT site_id, day, event_id, visits FROM site_days",
    ),
];

/// Rebuilds every rollup from the raw rows below the watermark and compares: returns the names
/// of the tables that differ (empty when all agree). Full scans in one read transaction; for
/// tests and `footfall`'s own checks only.
pub fn check(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let tx = conn.unchecked_transaction()?;
    let watermark = super::ingest::read_watermark(&tx)?;
    let mut differ = Vec::new();
    for (table, expected, actual) in EXPECTED {
        // The rollups hold exactly the visits below the watermark.
        let expected = expected.replace(
            "FROM visits",
            &format!("FROM (SELECT * FROM visits WHERE id < {watermark})"),
        );
        let expected = expected.as_str();
        let count = |a: &str, b: &str| -> rusqlite::Result<i64> {
            let sql =
                format!("SELECT count(*) FROM (SELECT * FROM ({a}) EXCEPT SELECT * FROM ({b}))");
            conn.query_row(&sql, [], |r| r.get(0))
        };
        let n = count(expected, actual)? + count(actual, expected)?;
        if n != 0 {
            differ.push((*table).to_owned());
        }
    }
    Ok(differ)
}
