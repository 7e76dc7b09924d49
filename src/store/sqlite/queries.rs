//! Analytics reads. Each answer comes from the rollup tables, so its cost depends on the window
//! and on the number of pages or sites reported, never on the number of stored visits.
//!
//! Windows are exact to the millisecond: whole hours inside the window come from the hourly
//! rollups, and the one partial hour at the window's start is counted from the raw rows of
//! that hour alone (a rowid range: visit ids are time-ordered).
//!
//! Every answer is read in one transaction (one snapshot) and adds the *tail* — the visits above
//! the rollup watermark, not yet rolled up (see `rollups.sql`) — from the raw rows: bounded by
//! the roll-up thread to about `ROLL_UP_AT` (50,000) writes, plus what arrives during a
//! roll-up.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::ingest::{StoredVisit, page_tail, tail};
use super::rollups::{ALL_SITES, HOUR_MS, id_at, millis_of, read_progress};
use crate::domain::{UnixMillis, Visitor, format_iso, format_space};
use crate::store::model::{
    DateRange, PageSummary, RecentVisit, SiteRecentVisit, SiteStats, Summary, UrlStats,
};

/// Newest visits shown per page by `/summary`.
pub const SUMMARY_RECENT: usize = 10;
/// Newest visits shown by `/stats/{url}`.
pub const STATS_RECENT: usize = 20;
/// Pages listed by `/stats` under `popular_pages`.
pub const POPULAR_PAGES: i64 = 100;
/// Visits listed by `/stats` under `recent_visits`.
pub const SITE_RECENT: i64 = 10;

/// The hours a window starting at `start` covers: whole hours from the rollups, and the
/// partial first hour (if the start is not on the hour) as a raw id range.
struct Window {
    first_whole_hour: i64,
    partial: Option<(i64, i64, i64)>, // (hour, first id, end id)
    start_id: i64,
}

impl Window {
    fn new(start: UnixMillis) -> Self {
        let hour = start.div_euclid(HOUR_MS);
        if start.rem_euclid(HOUR_MS) == 0 {
            Self {
                first_whole_hour: hour,
                partial: None,
                start_id: id_at(start),
            }
        } else {
            Self {
                first_whole_hour: hour + 1,
                partial: Some((hour, id_at(start), id_at((hour + 1) * HOUR_MS))),
                start_id: id_at(start),
            }
        }
    }
}

/// What the tail adds to one page.
#[derive(Default)]
struct PageTail<'t> {
    visits: i64,
    /// Distinct IPs of the page's tail visits that the rollups do not know for this page.
    new_ips: i64,
    /// The page's tail visits, oldest first.
    rows: Vec<&'t StoredVisit>,
}

/// Groups the tail by page and counts the (page, IP) pairs the rollups have not seen.
fn tail_by_page<'t>(
    conn: &Connection,
    tail: &'t [StoredVisit],
) -> rusqlite::Result<HashMap<i64, PageTail<'t>>> {
    let mut pages: HashMap<i64, PageTail> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut known = conn.prepare_cached("SELECT 1 FROM page_ips WHERE page_id = ?1 AND ip = ?2")?;
    for v in tail {
        let page = pages.entry(v.page_id).or_default();
        page.visits += 1;
        page.rows.push(v);
        if seen.insert((v.page_id, v.ip.as_slice())) && !known.exists(params![v.page_id, v.ip])? {
            page.new_ips += 1;
        }
    }
    Ok(pages)
}

/// [`tail_by_page`] for the whole tail (every visit from `watermark` on), with the new (page,
/// IP) pairs counted by SQLite in one statement instead of one probe of `page_ips` per pair
/// from Rust: `/summary` under load has tens of thousands of pairs in its tail, and the
/// per-call cost of those probes dominated its answer time.
fn whole_tail_by_page<'t>(
    conn: &Connection,
    watermark: i64,
    tail: &'t [StoredVisit],
) -> rusqlite::Result<HashMap<i64, PageTail<'t>>> {
    let mut pages: HashMap<i64, PageTail> = HashMap::new();
    for v in tail {
        let page = pages.entry(v.page_id).or_default();
        page.visits += 1;
        page.rows.push(v);
    }
    // The tail's distinct pairs come out of the GROUP BY in key order, so the probes walk
    // `page_ips` in its own order: each of its pages is read once, on a cache that the last
    // roll-up's commit emptied, instead of once per probe in time order.
    let mut new_ips = conn.prepare_cached(
        "SELECT p.page_id, count(*)
         FROM (SELECT page_id, ip FROM visits WHERE id >= ?1 GROUP BY page_id, ip) p
         WHERE NOT EXISTS (SELECT 1 FROM page_ips k WHERE k.page_id = p.page_id AND k.ip = p.ip)
         GROUP BY p.page_id",
    )?;
    let mut rows = new_ips.query([watermark])?;
    while let Some(row) = rows.next()? {
        if let Some(page) = pages.get_mut(&row.get::<_, i64>(0)?) {
            page.new_ips = row.get(1)?;
        }
    }
    Ok(pages)
}

fn hour_key(hour: i64) -> String {
    format_space(hour * HOUR_MS)
}

/// Names of user agents by id, looked up once each.
struct AgentNames<'c> {
    conn: &'c Connection,
    names: FxHashMap<i64, Arc<str>>,
}

impl<'c> AgentNames<'c> {
    fn new(conn: &'c Connection) -> Self {
        Self {
            conn,
            names: FxHashMap::default(),
        }
    }

    /// The agent's name, shared: one allocation per distinct agent, not per mention.
    fn get(&mut self, id: i64) -> rusqlite::Result<Arc<str>> {
        if let Some(name) = self.names.get(&id) {
            return Ok(name.clone());
        }
        let name: Arc<str> = self
            .conn
            .prepare_cached("SELECT ua FROM agents WHERE id = ?1")?
            .query_row([id], |r| r.get::<_, String>(0))
            .optional()?
            .map_or_else(|| "unknown".into(), Arc::from);
        self.names.insert(id, name.clone());
        Ok(name)
    }
}

fn totals(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row(
        "SELECT visits, unique_ips FROM totals WHERE id = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Oldest and newest retained visit: the first and last rowid, two B-tree probes.
pub fn date_range(conn: &Connection) -> rusqlite::Result<Option<DateRange>> {
    // Two statements on purpose: SQLite answers a lone min() or max() of the rowid from one end
    // of the B-tree, but `SELECT min(id), max(id)` scans every row.
    let min: Option<i64> = conn
        .prepare_cached("SELECT min(id) FROM visits")?
        .query_row([], |r| r.get(0))?;
    let max: Option<i64> = conn
        .prepare_cached("SELECT max(id) FROM visits")?
        .query_row([], |r| r.get(0))?;
    Ok(min.zip(max).map(|(min, max)| DateRange {
        earliest: format_iso(millis_of(min)),
        latest: format_iso(millis_of(max)),
    }))
}

/// `GET /summary`: every page (or the `limit` most visited), with its window figures.
pub fn summary(
    conn: &Connection,
    now: UnixMillis,
    hours: i64,
    limit: Option<i64>,
) -> rusqlite::Result<Summary> {
    let conn = &conn.unchecked_transaction()?;
    let (watermark, tail) = tail(conn)?;
    let tail_pages = whole_tail_by_page(conn, watermark, &tail)?;
    let window = Window::new(now - hours * HOUR_MS);

    // Candidates: the top pages by rolled-up totals, plus every page the tail touches (only
    // those can overtake them). Then the final totals decide.
    let mut pages: Vec<(i64, String, PageSummary)> = Vec::new();
    let mut index: FxHashMap<i64, usize> = FxHashMap::default();
    {
        let mut top = conn.prepare_cached(
            "SELECT t.page_id, p.url, t.visits, t.unique_ips
             FROM page_totals t JOIN pages p ON p.id = t.page_id
             ORDER BY t.visits DESC, p.url LIMIT ?1",
        )?;
        let mut one = conn.prepare_cached(
            "SELECT p.id, p.url, coalesce(t.visits, 0), coalesce(t.unique_ips, 0)
             FROM pages p LEFT JOIN page_totals t ON t.page_id = p.id WHERE p.id = ?1",
        )?;
        let mut add =
            |index: &mut FxHashMap<i64, usize>, row: &rusqlite::Row| -> rusqlite::Result<()> {
                let page_id: i64 = row.get(0)?;
                let extra = tail_pages.get(&page_id);
                let summary = PageSummary {
                    total_visits: row.get::<_, i64>(2)? + extra.map_or(0, |t| t.visits),
                    unique_ips: row.get::<_, i64>(3)? + extra.map_or(0, |t| t.new_ips),
                    ..PageSummary::default()
                };
                index.insert(page_id, pages.len());
                pages.push((page_id, row.get(1)?, summary));
                Ok(())
            };
        let mut rows = top.query([limit.unwrap_or(-1)])?;
        while let Some(row) = rows.next()? {
            add(&mut index, row)?;
        }
        // Without a limit the top list holds every page already: look up only the others.
        let others: Vec<i64> = (tail_pages.keys())
            .filter(|id| !index.contains_key(id))
            .copied()
            .collect();
        for page_id in others {
            let mut rows = one.query([page_id])?;
            if let Some(row) = rows.next()? {
                add(&mut index, row)?;
            }
        }
    }
    pages.sort_by(|a, b| {
        b.2.total_visits
            .cmp(&a.2.total_visits)
            .then_with(|| a.1.cmp(&b.1))
    });
    if let Some(limit) = limit {
        pages.truncate(limit.max(0) as usize);
    }
    index = pages.iter().enumerate().map(|(i, p)| (p.0, i)).collect();

    // (page index) -> [(hour, visits)] in hour order, and (page index) -> agent id -> visits.
    // Filled in time order — the partial first hour, the whole hours, then the tail (newer than
    // anything rolled up) — so each list stays sorted by appending.
    let mut hours_of: Vec<Vec<(i64, i64)>> = vec![Vec::new(); pages.len()];
    let mut agents_of: Vec<FxHashMap<i64, i64>> = vec![FxHashMap::default(); pages.len()];
    let add_hour = |hours: &mut Vec<(i64, i64)>, hour: i64, n: i64| match hours.last_mut() {
        Some((last, count)) if *last == hour => *count += n,
        _ => hours.push((hour, n)),
    };
    if let Some((hour, from, to)) = window.partial {
        let mut stmt =
            conn.prepare_cached("SELECT page_id, agent_id FROM visits WHERE id >= ?1 AND id < ?2")?;
        let mut rows = stmt.query([from, to.min(watermark)])?;
        while let Some(row) = rows.next()? {
            let Some(&i) = index.get(&row.get::<_, i64>(0)?) else {
                continue;
            };
            add_hour(&mut hours_of[i], hour, 1);
            *agents_of[i].entry(row.get(1)?).or_default() += 1;
        }
    }
    {
        let mut stmt = conn.prepare_cached(
            // ORDER BY: the appending above relies on it; the key is hour-first, so no sort.
            "SELECT hour, page_id, agent_id, visits FROM page_hour_agents WHERE hour >= ?1
             ORDER BY hour",
        )?;
        let mut rows = stmt.query([window.first_whole_hour])?;
        while let Some(row) = rows.next()? {
            let Some(&i) = index.get(&row.get::<_, i64>(1)?) else {
                continue;
            };
            let (hour, agent, n): (i64, i64, i64) = (row.get(0)?, row.get(2)?, row.get(3)?);
            add_hour(&mut hours_of[i], hour, n);
            *agents_of[i].entry(agent).or_default() += n;
        }
    }
    for v in tail.iter().filter(|v| v.id >= window.start_id) {
        if let Some(&i) = index.get(&v.page_id) {
            add_hour(&mut hours_of[i], millis_of(v.id).div_euclid(HOUR_MS), 1);
            *agents_of[i].entry(v.agent_id).or_default() += 1;
        }
    }

    let mut agents = AgentNames::new(conn);
    // Newest first: the tail is newer than anything rolled up.
    for v in tail.iter().rev().filter(|v| v.id >= window.start_id) {
        if let Some(&i) = index.get(&v.page_id) {
            let recent = &mut pages[i].2.recent_visits;
            if recent.len() < SUMMARY_RECENT {
                recent.push(RecentVisit {
                    ip: Visitor::from_bytes(&v.ip),
                    user_agent: agents.get(v.agent_id)?,
                    at: millis_of(v.id),
                });
            }
        }
    }
    // Every page's recent rows in one pass; with a `limit`, one probe per listed page instead
    // (the top ten of 20,000 pages need ten probes, not every page's rows).
    let mut add_recent = |i: usize, row: &rusqlite::Row| -> rusqlite::Result<()> {
        let recent = &mut pages[i].2.recent_visits;
        if recent.len() < SUMMARY_RECENT {
            recent.push(RecentVisit {
                ip: Visitor::from_bytes(row.get_ref(2)?.as_blob()?),
                user_agent: agents.get(row.get(3)?)?,
                at: millis_of(row.get(1)?),
            });
        }
        Ok(())
    };
    if limit.is_some() {
        let mut stmt = conn.prepare_cached(
            "SELECT page_id, id, ip, agent_id FROM page_recent WHERE page_id = ?1 AND id >= ?2
             ORDER BY id DESC LIMIT ?3",
        )?;
        for (&page_id, &i) in &index {
            let mut rows = stmt.query(params![page_id, window.start_id, SUMMARY_RECENT as i64])?;
            while let Some(row) = rows.next()? {
                add_recent(i, row)?;
            }
        }
    } else {
        let mut stmt = conn.prepare_cached(
            "SELECT page_id, id, ip, agent_id FROM page_recent WHERE id >= ?1
             ORDER BY page_id, id DESC",
        )?;
        let mut rows = stmt.query([window.start_id])?;
        while let Some(row) = rows.next()? {
            if let Some(&i) = index.get(&row.get::<_, i64>(0)?) {
                add_recent(i, row)?;
            }
        }
    }

    let mut data = Vec::with_capacity(pages.len());
    for (i, (_, url, mut summary)) in pages.into_iter().enumerate() {
        summary.by_hour = std::mem::take(&mut hours_of[i]);
        let mut by_agent: Vec<(i64, i64)> = agents_of[i].drain().collect();
        by_agent.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for (agent, n) in by_agent {
            summary.user_agents.push((agents.get(agent)?, n));
        }
        data.push((url, summary));
    }
    Ok(Summary {
        data,
        total_entries: totals(conn)?.0 + tail.len() as i64,
        date_range: date_range(conn)?,
    })
}

/// `GET /stats/{url}`: one page's figures; an unknown page has zeros.
pub fn url_stats(
    conn: &Connection,
    url: &str,
    now: UnixMillis,
    hours: i64,
) -> rusqlite::Result<UrlStats> {
    let mut response = UrlStats {
        url: url.to_owned(),
        total_visits: 0,
        unique_ips: 0,
        hourly_visits: BTreeMap::new(),
        recent_visits: Vec::new(),
    };
    let page_id: Option<i64> = conn
        .prepare_cached("SELECT id FROM pages WHERE url = ?1")?
        .query_row([url], |r| r.get(0))
        .optional()?;
    let Some(page_id) = page_id else {
        return Ok(response);
    };
    let conn = &conn.unchecked_transaction()?;
    let (watermark, tail) = page_tail(conn, page_id)?;
    let tail_pages = tail_by_page(conn, &tail)?;
    let page_tail = tail_pages.get(&page_id);
    if let Some((visits, unique)) = conn
        .prepare_cached("SELECT visits, unique_ips FROM page_totals WHERE page_id = ?1")?
        .query_row([page_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
    {
        response.total_visits = visits;
        response.unique_ips = unique;
    }
    response.total_visits += page_tail.map_or(0, |t| t.visits);
    response.unique_ips += page_tail.map_or(0, |t| t.new_ips);
    let window = Window::new(now - hours * HOUR_MS);
    if let Some((hour, from, to)) = window.partial {
        let n: i64 = conn
            .prepare_cached(
                "SELECT count(*) FROM visits WHERE id >= ?1 AND id < ?2 AND page_id = ?3",
            )?
            .query_row(params![from, to.min(watermark), page_id], |r| r.get(0))?;
        if n > 0 {
            response.hourly_visits.insert(hour_key(hour), n);
        }
    }
    {
        let mut stmt = conn.prepare_cached(
            "SELECT hour, visits FROM page_hours WHERE page_id = ?1 AND hour >= ?2",
        )?;
        let mut rows = stmt.query([page_id, window.first_whole_hour])?;
        while let Some(row) = rows.next()? {
            response
                .hourly_visits
                .insert(hour_key(row.get(0)?), row.get(1)?);
        }
    }
    let tail_rows = page_tail.map_or(&[][..], |t| t.rows.as_slice());
    for v in tail_rows.iter().filter(|v| v.id >= window.start_id) {
        *response
            .hourly_visits
            .entry(hour_key(millis_of(v.id).div_euclid(HOUR_MS)))
            .or_default() += 1;
    }
    let mut agents = AgentNames::new(conn);
    // Newest first: the tail is newer than anything rolled up.
    for v in tail_rows
        .iter()
        .rev()
        .filter(|v| v.id >= window.start_id)
        .take(STATS_RECENT)
    {
        response.recent_visits.push(RecentVisit {
            ip: Visitor::from_bytes(&v.ip),
            user_agent: agents.get(v.agent_id)?,
            at: millis_of(v.id),
        });
    }
    let mut stmt = conn.prepare_cached(
        "SELECT id, ip, agent_id FROM page_recent WHERE page_id = ?1 AND id >= ?2
         ORDER BY id DESC LIMIT ?3",
    )?;
    let room = STATS_RECENT - response.recent_visits.len();
    let mut rows = stmt.query(params![page_id, window.start_id, room as i64])?;
    while let Some(row) = rows.next()? {
        response.recent_visits.push(RecentVisit {
            ip: Visitor::from_bytes(row.get_ref(1)?.as_blob()?),
            user_agent: agents.get(row.get(2)?)?,
            at: millis_of(row.get(0)?),
        });
    }
    drop(rows);
    drop(stmt);
    Ok(response)
}

/// `GET /stats`: whole-database figures.
pub fn site_stats(conn: &Connection) -> rusqlite::Result<SiteStats> {
    let conn = &conn.unchecked_transaction()?;
    let (total_visits, unique_visitors) = super::dimensions::site_totals(conn, ALL_SITES)?;
    // The top pages by rolled-up totals plus the pages the tail touches: only those can be in
    // the final top list. The tail is counted per page in SQL, not read into memory.
    let mut candidates: HashMap<i64, (String, i64)> = HashMap::new();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT t.page_id, p.url, t.visits FROM page_totals t JOIN pages p ON p.id = t.page_id
             ORDER BY t.visits DESC, p.url LIMIT ?1",
        )?;
        let mut rows = stmt.query([POPULAR_PAGES])?;
        while let Some(row) = rows.next()? {
            candidates.insert(row.get(0)?, (row.get(1)?, row.get(2)?));
        }
        let mut one = conn.prepare_cached(
            "SELECT p.url, coalesce(t.visits, 0) FROM pages p
             LEFT JOIN page_totals t ON t.page_id = p.id WHERE p.id = ?1",
        )?;
        let watermark = read_progress(conn)?.rolled_up_to;
        let mut tail_pages = conn.prepare_cached(
            "SELECT page_id, count(*) FROM visits WHERE id >= ?1 GROUP BY page_id",
        )?;
        let mut rows = tail_pages.query([watermark])?;
        while let Some(row) = rows.next()? {
            let (page_id, visits): (i64, i64) = (row.get(0)?, row.get(1)?);
            let page = match candidates.entry(page_id) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(one.query_row([page_id], |r| Ok((r.get(0)?, r.get(1)?)))?)
                }
            };
            page.1 += visits;
        }
    }
    let mut popular: Vec<(String, i64)> = candidates.into_values().collect();
    popular.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    popular.truncate(POPULAR_PAGES as usize);
    let popular_pages = popular;
    let mut recent_visits = Vec::new();
    let mut stmt = conn.prepare_cached(
        "SELECT v.id, p.url, v.ip FROM visits v JOIN pages p ON p.id = v.page_id
         ORDER BY v.id DESC LIMIT ?1",
    )?;
    let mut rows = stmt.query([SITE_RECENT])?;
    while let Some(row) = rows.next()? {
        recent_visits.push(SiteRecentVisit {
            url: row.get(1)?,
            ip: Visitor::from_bytes(row.get_ref(2)?.as_blob()?),
            at: millis_of(row.get(0)?),
        });
    }
    Ok(SiteStats {
        total_visits,
        unique_visitors,
        popular_pages,
        recent_visits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{NewVisit, PageUrl};
    use crate::store::Durability;
    use crate::store::sqlite::ingest::{Ingest, commit_visits};
    use crate::store::sqlite::open_writer;

    /// Three visits rolled up, then six in the tail: pairs the rollups know, a repeat in the
    /// tail, a pair new for one page but known for another, and a page never rolled up.
    fn rolled_up_and_tail() -> (tempfile::TempDir, crate::store::sqlite::WriteConns) {
        let dir = tempfile::tempdir().unwrap();
        let mut conns = open_writer(&dir.path().join("v.db"), Durability::Normal).unwrap();
        let mut ingest = Ingest::new();
        let mut at = 1_700_000_000_000;
        let mut visits = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(page, ip)| {
                    at += 1000;
                    NewVisit::pageview(
                        PageUrl::parse(page).unwrap(),
                        ip.parse().unwrap(),
                        "UA".into(),
                        at,
                    )
                })
                .collect::<Vec<_>>()
        };
        let (a, b) = ("https://a.com/", "https://b.com/");
        let rolled = visits(&[(a, "10.0.0.1"), (a, "10.0.0.2"), (b, "10.0.0.1")]);
        commit_visits(&conns.raw, &mut ingest, rolled);
        conns.roll_up().unwrap();
        let tail_visits = visits(&[
            (a, "10.0.0.1"),                // known to the rollups
            (a, "10.0.0.3"),                // new
            (a, "10.0.0.3"),                // a repeat in the tail
            (b, "10.0.0.2"),                // new for b, known for a
            (b, "10.0.0.1"),                // known
            ("https://c.com/", "10.0.0.9"), // a page the rollups have never seen
        ]);
        commit_visits(&conns.raw, &mut ingest, tail_visits);
        (dir, conns)
    }

    /// The whole-tail grouping counts the same new (page, IP) pairs as the per-pair probes:
    /// pairs the rollups know are not new, repeats in the tail count once.
    #[test]
    fn the_whole_tail_counts_new_ips_as_the_probes_do() {
        let (_dir, conns) = rolled_up_and_tail();
        let conn = &conns.rollups;
        let (watermark, tail) = tail(conn).unwrap();
        assert_eq!(tail.len(), 6);
        let probed = tail_by_page(conn, &tail).unwrap();
        let whole = whole_tail_by_page(conn, watermark, &tail).unwrap();
        let counts = |pages: &HashMap<i64, PageTail>| {
            let mut out: Vec<(i64, i64, i64)> = pages
                .iter()
                .map(|(id, t)| (*id, t.visits, t.new_ips))
                .collect();
            out.sort();
            out
        };
        assert_eq!(counts(&whole), counts(&probed));
        let mut new_ips: Vec<i64> = whole.values().map(|t| t.new_ips).collect();
        new_ips.sort();
        assert_eq!(new_ips, vec![1, 1, 1]);
    }

    /// `/stats` adds the tail to the rolled-up totals: every visit, every new visitor, and
    /// each page's tail visits to its count.
    #[test]
    fn site_stats_add_the_tail_per_page() {
        let (_dir, conns) = rolled_up_and_tail();
        let stats = site_stats(&conns.rollups).unwrap();
        assert_eq!((stats.total_visits, stats.unique_visitors), (9, 4));
        let popular: Vec<(&str, i64)> = (stats.popular_pages.iter())
            .map(|(url, n)| (url.as_str(), *n))
            .collect();
        assert_eq!(
            popular,
            [
                ("https://a.com/", 5),
                ("https://b.com/", 3),
                ("https://c.com/", 1)
            ]
        );
    }
}
