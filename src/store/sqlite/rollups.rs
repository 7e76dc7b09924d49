//! Rollups: the aggregate tables analytics read, derived from the raw rows of the visits file.
//!
//! They live in their own file (`rollups.sql`), written only through a rollups connection
//! ([`super::open_rollups`]: the rollups file as `main`, the visits file attached read-only), so
//! a roll-up never holds the visits file's write lock. [`roll_up`] counts what the visits file
//! holds and the rollups do not (the tail above the watermark, the logged late visits and clicks)
//! and moves the `progress` row past it in the same transaction. A roll-up collects its changes
//! in a [`RollupDelta`] (one entry per touched key, however many visits hit it) and applies it
//! before commit; cleanup ([`take_out_before`]) builds the same delta with a negative sign, so
//! counting in and out share one code path. [`check`] rebuilds every rollup from the raw rows and
//! reports any difference: the invariant the tests hold the roll-up to.

use rustc_hash::FxHashMap as HashMap;

use rusqlite::{Connection, params};

use super::ingest::{StoredVisit, stored_visit, stored_visits_from};

use crate::domain::UnixMillis;

/// Bits of a visit id below the millisecond: ids are `millis << ID_SEQ_BITS | seq`.
pub const ID_SEQ_BITS: u32 = 20;
/// How many recent visits per page are kept in `page_recent` (the most any endpoint shows).
pub const RECENT_PER_PAGE: i64 = 20;
/// Older rows a page may keep in `page_recent` beyond its newest [`RECENT_PER_PAGE`] before a
/// roll-up trims it (see [`RollUpHints`]): readers take the newest with `ORDER BY id DESC`.
pub const RECENT_SLACK: i64 = 10;
/// Site id of the pseudo-site that sums every site (`/breakdown/all/...`).
pub const ALL_SITES: i64 = 0;

pub use crate::domain::{DAY_MS, HOUR_MS, MINUTE_MS};

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
    pub source_id: i64,
    pub device_id: i64,
    pub millis: UnixMillis,
}

/// The change of one `page_totals` or `site_totals` row.
#[derive(Debug, Default, Clone, Copy)]
struct TotalsDelta {
    visits: i64,
    unique_ips: i64,
}

/// The changes one transaction makes to the rollup tables, summed per key.
#[derive(Debug, Default)]
pub struct RollupDelta {
    visits: i64,
    unique_ips: i64,
    pages: HashMap<i64, TotalsDelta>,
    /// Real sites only: all sites are `visits` and `unique_ips` above.
    sites: HashMap<i64, TotalsDelta>,
    page_hours: HashMap<(i64, i64), i64>,
    page_hour_agents: HashMap<(i64, i64, i64), i64>,
    site_minutes: HashMap<(i64, i64, i64), i64>,
    site_hours: HashMap<(i64, i64, i64), i64>,
    site_days: HashMap<(i64, i64, i64), i64>,
    site_hour_sources: HashMap<(i64, i64, i64), i64>,
    site_hour_devices: HashMap<(i64, i64, i64), i64>,
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
        self.sites.entry(key.site_id).or_default().visits += sign;
        for site in [key.site_id, ALL_SITES] {
            *self
                .site_hour_sources
                .entry((site, hour, key.source_id))
                .or_default() += sign;
            *self
                .site_hour_devices
                .entry((site, hour, key.device_id))
                .or_default() += sign;
        }
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

    /// Records that a site gained (`+1`) or lost (`-1`) a distinct IP.
    pub fn count_site_ip(&mut self, site_id: i64, sign: i64) {
        self.sites.entry(site_id).or_default().unique_ips += sign;
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
        apply_totals(conn, "page_totals", "page_id", &self.pages)?;
        apply_totals(conn, "site_totals", "site_id", &self.sites)?;
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
        for (table, dimension, counts) in [
            ("site_hour_sources", "source_id", &self.site_hour_sources),
            ("site_hour_devices", "device_id", &self.site_hour_devices),
        ] {
            apply_counts(
                conn,
                counts,
                &format!(
                    "INSERT INTO {table} (site_id, hour, {dimension}, visits) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT DO UPDATE SET visits = visits + excluded.visits"
                ),
                &format!(
                    "DELETE FROM {table}
                     WHERE site_id = ?1 AND hour = ?2 AND {dimension} = ?3 AND visits <= 0"
                ),
                |&(s, h, d)| [s, h, d],
            )?;
        }
        *self = Self::default();
        Ok(())
    }
}

/// What one roll-up learns that makes the next one cheaper; never changes what it counts. The
/// roll-up thread keeps one from roll-up to roll-up; a fresh one is merely slower, and one that
/// went through a failed transaction must be dropped (it may describe rows never committed).
#[derive(Debug, Default)]
pub struct RollUpHints {
    /// An upper bound of the `page_recent` rows of each page a roll-up trimmed, so that a page
    /// is trimmed once it may hold more than [`RECENT_PER_PAGE`] + [`RECENT_SLACK`] rows rather
    /// than at every roll-up: that trim was the roll-up's costliest step when pages get a visit
    /// or two per roll-up (1.65 of 9.2 µs a visit in `examples/writer_bench`). A page missing
    /// here is trimmed. Deletions (cleanup) keep the bounds true; another connection's roll-up
    /// may not, so a commit by one forgets them all.
    recent: HashMap<i64, i64>,
    /// `PRAGMA data_version` of the rollups file when `recent` was last true.
    data_version: Option<i64>,
    pairs: FirstTry,
    site_pairs: FirstTry,
    ips: FirstTry,
}

/// Pages [`RollUpHints`] remembers at most (~5 MB of table): past it, it starts again, and
/// trims every page once more.
const HINTED_PAGES: usize = 200_000;

impl RollUpHints {
    /// Runs `f` with these hints in one write transaction on the rollups connection `conn`
    /// ([`super::immediate`]); a failed one drops them, as they may describe rows it did not
    /// commit.
    pub fn transaction<T>(
        &mut self,
        conn: &Connection,
        f: impl FnOnce(&Connection, &mut Self) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        super::immediate(conn, |conn| f(conn, self)).inspect_err(|_| *self = Self::default())
    }

    /// Forgets the `page_recent` bounds when another connection committed to the rollups file
    /// since the last roll-up. Call inside the roll-up's transaction.
    fn begin(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let version: i64 = conn
            .prepare_cached("PRAGMA main.data_version")?
            .query_row([], |r| r.get(0))?;
        if self.data_version != Some(version) {
            self.recent.clear();
            self.data_version = Some(version);
        }
        Ok(())
    }

    /// Records `added` new `page_recent` rows of `page`; answers whether the page must be
    /// trimmed now (after which it holds at most [`RECENT_PER_PAGE`]).
    fn recent_added(&mut self, page: i64, added: i64) -> bool {
        match self.recent.get_mut(&page) {
            Some(rows) if *rows + added <= RECENT_PER_PAGE + RECENT_SLACK => {
                *rows += added;
                false
            }
            _ => {
                if self.recent.len() >= HINTED_PAGES {
                    self.recent.clear();
                }
                self.recent.insert(page, RECENT_PER_PAGE);
                true
            }
        }
    }
}

/// Which statement a distinct-IP table (`page_ips`, `ips`) tries first for a key: the insert,
/// which succeeds for a new key, or the move of a known key's last visit. The wrong guess costs
/// a second statement, so each roll-up guesses what was more common in the one before
/// (returning visitors, or the benchmark's repeated rounds, make most keys known).
#[derive(Debug, Default, Clone, Copy)]
struct FirstTry {
    move_first: bool,
    new: u64,
    known: u64,
}

impl FirstTry {
    /// Writes a key's last visit with `insert` (`INSERT OR IGNORE`) and `move_last` (an
    /// `UPDATE` that only moves it forward), which take the same parameters; answers whether
    /// the key is new.
    fn write(
        &mut self,
        insert: &mut rusqlite::CachedStatement<'_>,
        move_last: &mut rusqlite::CachedStatement<'_>,
        params: impl rusqlite::Params + Copy,
    ) -> rusqlite::Result<bool> {
        let new = if self.move_first {
            // Nothing moved: the key is new, or known with a later visit.
            move_last.execute(params)? == 0 && insert.execute(params)? == 1
        } else if insert.execute(params)? == 1 {
            true
        } else {
            move_last.execute(params)?;
            false
        };
        if new {
            self.new += 1;
        } else {
            self.known += 1;
        }
        Ok(new)
    }

    /// Takes this roll-up's guess for the next.
    fn learn(&mut self) {
        *self = Self {
            move_first: self.known > self.new,
            ..Self::default()
        };
    }
}

/// Counts stored visits into the rollups: the distinct-IP tables and the newest-visits table
/// directly, the counters through `delta` (applied once per transaction). Reorders `visits`.
///
/// Each table is written in its own key order, not in time order, so consecutive writes land
/// on the same B-tree pages (measured: 11.0 -> 9.4 µs a visit in `examples/writer_bench`), and
/// once per key: a (page, IP) pair or an IP seen many times is one write with its last visit,
/// and a page gets at most its newest [`RECENT_PER_PAGE`] visits in `page_recent`.
fn roll_up_visits(
    conn: &Connection,
    delta: &mut RollupDelta,
    hints: &mut RollUpHints,
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
    let mut insert_site_pair = conn.prepare_cached(
        "INSERT OR IGNORE INTO site_ips (site_id, ip, last_id) VALUES (?1, ?2, ?3)",
    )?;
    let mut move_site_pair = conn.prepare_cached(
        "UPDATE site_ips SET last_id = ?3 WHERE site_id = ?1 AND ip = ?2 AND last_id < ?3",
    )?;

    visits.sort_unstable_by(|a, b| (a.page_id, &a.ip, a.id).cmp(&(b.page_id, &b.ip, b.id)));
    for page in visits.chunk_by(|a, b| a.page_id == b.page_id) {
        // A new (page, IP) pair raises the page's distinct count; a known one moves its last id.
        for pair in page.chunk_by(|a, b| a.ip == b.ip) {
            let last = &pair[pair.len() - 1];
            let params = params![last.page_id, last.ip, last.id];
            if hints
                .pairs
                .write(&mut insert_pair, &mut move_pair, params)?
            {
                delta.count_page_ip(last.page_id, 1);
            }
        }
        for v in page {
            delta.count_visit(
                &VisitKey {
                    page_id: v.page_id,
                    site_id: v.site_id,
                    agent_id: v.agent_id,
                    event_id: v.event_id,
                    source_id: v.source_id,
                    device_id: v.device_id,
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
        let added = newest.len() as i64;
        for v in newest {
            insert_recent.execute(params![v.page_id, v.id, v.ip, v.agent_id])?;
        }
        if hints.recent_added(page[0].page_id, added) {
            // Back to the newest RECENT_PER_PAGE, while the page's rows are in the cache. When
            // a page has fewer, OFFSET finds no row, the comparison is NULL and nothing goes.
            trim_recent.execute(params![page[0].page_id, RECENT_PER_PAGE - 1])?;
        }
    }

    // Distinct (site, IP) pairs, each with its last visit, like the (page, IP) pairs above.
    visits.sort_unstable_by(|a, b| (a.site_id, &a.ip, a.id).cmp(&(b.site_id, &b.ip, b.id)));
    for pair in visits.chunk_by(|a, b| a.site_id == b.site_id && a.ip == b.ip) {
        let last = &pair[pair.len() - 1];
        if hints.site_pairs.write(
            &mut insert_site_pair,
            &mut move_site_pair,
            params![last.site_id, last.ip, last.id],
        )? {
            delta.count_site_ip(last.site_id, 1);
        }
    }

    // Distinct IPs of the whole database, each with its last visit.
    visits.sort_unstable_by(|a, b| (&a.ip, a.id).cmp(&(&b.ip, b.id)));
    for same_ip in visits.chunk_by(|a, b| a.ip == b.ip) {
        let last = &same_ip[same_ip.len() - 1];
        if hints
            .ips
            .write(&mut insert_ip, &mut move_ip, params![last.ip, last.id])?
        {
            delta.count_ips(1);
        }
    }
    Ok(())
}

/// How far the rollups have read the visits file (the `progress` row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The watermark: visits below it are counted (but for late ones above `late_seq`).
    pub rolled_up_to: i64,
    /// The last `late_visits.seq` counted.
    pub late_seq: i64,
    /// The last `clicks.seq` counted.
    pub clicks_seq: i64,
    /// The last cleanup, and the visit id below which it took every visit out.
    pub cleanup_seq: i64,
    pub cleanup_before: i64,
}

/// Reads the `progress` row (on any connection that sees the rollups file).
pub fn read_progress(conn: &Connection) -> rusqlite::Result<Progress> {
    conn.prepare_cached(
        "SELECT rolled_up_to, late_seq, clicks_seq, cleanup_seq, cleanup_before
         FROM progress WHERE id = 1",
    )?
    .query_row([], |r| {
        Ok(Progress {
            rolled_up_to: r.get(0)?,
            late_seq: r.get(1)?,
            clicks_seq: r.get(2)?,
            cleanup_seq: r.get(3)?,
            cleanup_before: r.get(4)?,
        })
    })
}

/// What one [`roll_up`] counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RolledUp {
    /// Visits counted: the tail's and the late ones.
    pub visits: u64,
    /// `progress.late_seq` afterwards: `late_visits` rows up to it may be deleted.
    pub late_seq: i64,
}

/// Visits rolled up per step of [`roll_up`]: bounds its memory, not its atomicity.
const ROLL_UP_CHUNK: i64 = 50_000;

/// Counts into the rollups everything the visits file holds that they do not: the tail (every
/// visit from the watermark on), the late visits and the clicks logged since the last roll-up;
/// moves `progress` past them. Inside the caller's transaction on a rollups connection, begun
/// with `BEGIN IMMEDIATE` so that the rollups' write lock and the snapshot of the visits file
/// are taken together: every visit below the new watermark is then either in that snapshot
/// (counted now or before) or stored later, and so logged as late (see `ingest`).
///
/// `hints` come from the previous roll-up (see [`RollUpHints`]).
pub fn roll_up(conn: &Connection, hints: &mut RollUpHints) -> rusqlite::Result<RolledUp> {
    hints.begin(conn)?;
    let progress = read_progress(conn)?;
    let mut done = RolledUp {
        late_seq: progress.late_seq,
        ..RolledUp::default()
    };
    let mut watermark = progress.rolled_up_to;
    loop {
        let mut chunk = stored_visits_from(conn, watermark, ROLL_UP_CHUNK)?;
        let Some(last) = chunk.last() else { break };
        watermark = last.id + 1;
        count_in(conn, hints, &mut chunk)?;
        done.visits += chunk.len() as u64;
        // A short chunk was the rest of the tail: no need to ask again for nothing.
        if (chunk.len() as i64) < ROLL_UP_CHUNK {
            break;
        }
    }
    // Late visits below the old watermark: the ones at or above it were in the tail just read.
    let mut late = conn.prepare_cached(
        // The columns of `stored_visit`, then the seq.
        "SELECT v.id, v.page_id, p.site_id, v.agent_id, v.event_id, v.ip, v.source_id,
                v.device_id, l.seq
         FROM late_visits l JOIN visits v ON v.id = l.visit_id JOIN pages p ON p.id = v.page_id
         WHERE l.seq > ?1 AND l.visit_id < ?2 ORDER BY l.seq LIMIT ?3",
    )?;
    let mut after = progress.late_seq;
    loop {
        let mut chunk: Vec<StoredVisit> = Vec::new();
        let mut rows = late.query(params![after, progress.rolled_up_to, ROLL_UP_CHUNK])?;
        while let Some(row) = rows.next()? {
            chunk.push(stored_visit(row)?);
            after = row.get(8)?;
        }
        drop(rows);
        let full = chunk.len() as i64 == ROLL_UP_CHUNK;
        count_in(conn, hints, &mut chunk)?;
        done.visits += chunk.len() as u64;
        if !full {
            break;
        }
    }
    // Every late row of this snapshot is now counted, whether read above or in the tail.
    let last_late: Option<i64> = conn
        .prepare_cached("SELECT max(seq) FROM late_visits")?
        .query_row([], |r| r.get(0))?;
    done.late_seq = last_late.map_or(progress.late_seq, |s| s.max(progress.late_seq));

    let mut clicks_seq = progress.clicks_seq;
    {
        let mut delta = RollupDelta::default();
        let mut clicks = conn.prepare_cached(
            "SELECT seq, site_id, minute, event_id, clicks FROM clicks WHERE seq > ?1",
        )?;
        let mut rows = clicks.query([progress.clicks_seq])?;
        while let Some(row) = rows.next()? {
            clicks_seq = row.get(0)?;
            let minute: i64 = row.get(2)?;
            delta.count_site(row.get(1)?, minute * MINUTE_MS, row.get(3)?, row.get(4)?);
        }
        drop(rows);
        delta.apply(conn)?;
    }
    conn.prepare_cached(
        "UPDATE progress SET rolled_up_to = ?1, late_seq = ?2, clicks_seq = ?3 WHERE id = 1",
    )?
    .execute(params![watermark, done.late_seq, clicks_seq])?;
    hints.pairs.learn();
    hints.site_pairs.learn();
    hints.ips.learn();
    Ok(done)
}

/// Counts `visits` into every rollup (a delta applied at once). Reorders `visits`.
fn count_in(
    conn: &Connection,
    hints: &mut RollUpHints,
    visits: &mut [StoredVisit],
) -> rusqlite::Result<()> {
    if visits.is_empty() {
        return Ok(());
    }
    let mut delta = RollupDelta::default();
    roll_up_visits(conn, &mut delta, hints, visits)?;
    delta.apply(conn)
}

/// Upserts a totals table (`page_totals`, `site_totals`: `key`, visits, unique_ips); deletes
/// the rows a negative delta may have brought to zero.
fn apply_totals(
    conn: &Connection,
    table: &str,
    key: &str,
    deltas: &HashMap<i64, TotalsDelta>,
) -> rusqlite::Result<()> {
    if deltas.is_empty() {
        return Ok(());
    }
    // No `RETURNING` (to learn which pages stay small enough to need no `page_recent`
    // trim): it made each upsert ~6x slower, more than the trims it saved.
    let mut upsert = conn.prepare_cached(&format!(
        "INSERT INTO {table} ({key}, visits, unique_ips) VALUES (?1, ?2, ?3)
         ON CONFLICT ({key}) DO UPDATE
         SET visits = visits + excluded.visits, unique_ips = unique_ips + excluded.unique_ips"
    ))?;
    let mut delete = conn.prepare_cached(&format!(
        "DELETE FROM {table} WHERE {key} = ?1 AND visits <= 0"
    ))?;
    let mut sorted: Vec<(i64, TotalsDelta)> = deltas.iter().map(|(&k, &d)| (k, d)).collect();
    sorted.sort_unstable_by_key(|&(k, _)| k);
    for (k, d) in sorted {
        upsert.execute(params![k, d.visits, d.unique_ips])?;
        if d.visits < 0 {
            delete.execute([k])?;
        }
    }
    Ok(())
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

/// Visits read per step of [`take_out_before`]: bounds its memory, not its atomicity (every
/// step runs inside the caller's one transaction).
const CLEANUP_CHUNK: i64 = 100_000;

/// What [`take_out_before`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakenOut {
    /// Visits taken out of the rollups: those the visits file must now delete.
    pub visits: u64,
    /// The cleanup's number (`progress.cleanup_seq`), for the visits file's `raw_state`.
    pub cleanup_seq: i64,
    /// The visit id below which every visit is out of the rollups.
    pub before_id: i64,
    /// `progress.late_seq` after the roll-up that came first (see [`RolledUp::late_seq`]).
    pub late_seq: i64,
}

/// The rollups' half of a cleanup: rolls up everything outstanding, then takes every visit
/// older than `cutoff` out of every rollup (the exact inverse of counting it in) and records the
/// cleanup in `progress`. Inside the caller's transaction on a rollups connection. The caller
/// holds the visits file's write lock from before this until it has deleted those visits (see
/// `super::cleanup`): nothing can be added below the cutoff in between.
pub fn take_out_before(
    conn: &Connection,
    hints: &mut RollUpHints,
    cutoff: UnixMillis,
) -> rusqlite::Result<TakenOut> {
    let rolled_up = roll_up(conn, hints)?;
    let before_id = id_at(cutoff);
    let mut delta = RollupDelta::default();

    // Distinct IPs first: a (page, IP) pair or an IP whose last visit is older than the cutoff
    // has no visit left once the cutoff applies.
    {
        let mut stmt = conn.prepare("DELETE FROM page_ips WHERE last_id < ?1 RETURNING page_id")?;
        let mut rows = stmt.query([before_id])?;
        while let Some(row) = rows.next()? {
            delta.count_page_ip(row.get(0)?, -1);
        }
    }
    {
        let mut stmt = conn.prepare("DELETE FROM site_ips WHERE last_id < ?1 RETURNING site_id")?;
        let mut rows = stmt.query([before_id])?;
        while let Some(row) = rows.next()? {
            delta.count_site_ip(row.get(0)?, -1);
        }
    }
    let gone_ips = conn.execute("DELETE FROM ips WHERE last_id < ?1", [before_id])?;
    delta.count_ips(-(gone_ips as i64));
    conn.execute("DELETE FROM page_recent WHERE id < ?1", [before_id])?;

    let mut taken = 0u64;
    let mut select = conn.prepare(
        "SELECT v.id, v.page_id, p.site_id, v.agent_id, v.event_id, v.source_id, v.device_id
         FROM visits v JOIN pages p ON p.id = v.page_id
         WHERE v.id >= ?1 AND v.id < ?2 ORDER BY v.id LIMIT ?3",
    )?;
    let mut from = i64::MIN;
    loop {
        let mut read = 0;
        let mut rows = select.query(params![from, before_id, CLEANUP_CHUNK])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let key = VisitKey {
                page_id: row.get(1)?,
                site_id: row.get(2)?,
                agent_id: row.get(3)?,
                event_id: row.get(4)?,
                source_id: row.get(5)?,
                device_id: row.get(6)?,
                millis: millis_of(id),
            };
            delta.count_visit(&key, -1);
            from = id + 1;
            read += 1;
        }
        drop(rows);
        taken += read;
        delta.apply(conn)?;
        if read < CLEANUP_CHUNK as u64 {
            break;
        }
    }
    let cleanup_seq = conn
        .prepare_cached(
            "UPDATE progress SET cleanup_seq = cleanup_seq + 1, cleanup_before = ?1 WHERE id = 1
             RETURNING cleanup_seq",
        )?
        .query_row([before_id], |r| r.get(0))?;
    Ok(TakenOut {
        visits: taken,
        cleanup_seq,
        before_id,
        late_seq: rolled_up.late_seq,
    })
}

/// What each rollup table should hold, computed from the raw rows (and `clicks`).
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
        // Its newest rows; the older ones a page keeps until its next trim are checked apart.
        "SELECT page_id, id, ip, agent_id FROM (
           SELECT *, row_number() OVER (PARTITION BY page_id ORDER BY id DESC) AS rn
           FROM page_recent)
         WHERE rn <= 20",
    ),
    (
        "site_minutes",
        "WITH raw(site_id, minute, event_id, n) AS (
           SELECT p.site_id, (v.id >> 20) / 60000, v.event_id, 1 FROM visits v JOIN pages p ON p.id = v.page_id
           UNION ALL SELECT site_id, minute, event_id, clicks FROM clicks)
         SELECT site_id, minute, event_id, sum(n) FROM raw GROUP BY 1, 2, 3
         UNION ALL SELECT 0, minute, event_id, sum(n) FROM raw GROUP BY 2, 3",
        "SELECT site_id, minute, event_id, visits FROM site_minutes",
    ),
    (
        "site_hours",
        "WITH raw(site_id, hour, event_id, n) AS (
           SELECT p.site_id, (v.id >> 20) / 3600000, v.event_id, 1 FROM visits v JOIN pages p ON p.id = v.page_id
           UNION ALL SELECT site_id, minute / 60, event_id, clicks FROM clicks)
         SELECT site_id, hour, event_id, sum(n) FROM raw GROUP BY 1, 2, 3
         UNION ALL SELECT 0, hour, event_id, sum(n) FROM raw GROUP BY 2, 3",
        "SELECT site_id, hour, event_id, visits FROM site_hours",
    ),
    (
        "site_totals",
        "SELECT p.site_id, count(*), count(DISTINCT v.ip)
         FROM visits v JOIN pages p ON p.id = v.page_id GROUP BY 1",
        "SELECT site_id, visits, unique_ips FROM site_totals",
    ),
    (
        "site_ips",
        "SELECT p.site_id, v.ip, max(v.id) FROM visits v JOIN pages p ON p.id = v.page_id
         GROUP BY 1, 2",
        "SELECT site_id, ip, last_id FROM site_ips",
    ),
    (
        "site_hour_sources",
        "WITH raw(site_id, hour, source_id) AS (
           SELECT p.site_id, (v.id >> 20) / 3600000, v.source_id
           FROM visits v JOIN pages p ON p.id = v.page_id)
         SELECT site_id, hour, source_id, count(*) FROM raw GROUP BY 1, 2, 3
         UNION ALL SELECT 0, hour, source_id, count(*) FROM raw GROUP BY 2, 3",
        "SELECT site_id, hour, source_id, visits FROM site_hour_sources",
    ),
    (
        "site_hour_devices",
        "WITH raw(site_id, hour, device_id) AS (
           SELECT p.site_id, (v.id >> 20) / 3600000, v.device_id
           FROM visits v JOIN pages p ON p.id = v.page_id)
         SELECT site_id, hour, device_id, count(*) FROM raw GROUP BY 1, 2, 3
         UNION ALL SELECT 0, hour, device_id, count(*) FROM raw GROUP BY 2, 3",
        "SELECT site_id, hour, device_id, visits FROM site_hour_devices",
    ),
    (
        "site_days",
        "WITH raw(site_id, day, event_id, n) AS (
           SELECT p.site_id, (v.id >> 20) / 86400000, v.event_id, 1 FROM visits v JOIN pages p ON p.id = v.page_id
           UNION ALL SELECT site_id, minute / 1440, event_id, clicks FROM clicks)
         SELECT site_id, day, event_id, sum(n) FROM raw GROUP BY 1, 2, 3
         UNION ALL SELECT 0, day, event_id, sum(n) FROM raw GROUP BY 2, 3",
        "SELECT site_id, day, event_id, visits FROM site_days",
    ),
];

/// Rebuilds every rollup from the raw rows they have counted and compares: returns the names of
/// the tables that differ (empty when all agree). Full scans in one read transaction on a
/// connection that sees both files (a rollups connection, or the read pool's); for tests and
/// `footfall`'s own checks only.
pub fn check(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let tx = conn.unchecked_transaction()?;
    let progress = read_progress(&tx)?;
    // The rollups hold exactly the visits below the watermark but the late ones not yet
    // counted, and the clicks up to their seq.
    let counted_visits = format!(
        "FROM (SELECT * FROM visits WHERE id < {} AND id NOT IN
           (SELECT visit_id FROM late_visits WHERE seq > {}))",
        progress.rolled_up_to, progress.late_seq
    );
    // Rows of `a` that `b` lacks.
    let missing = |a: &str, b: &str| -> rusqlite::Result<i64> {
        let sql = format!("SELECT count(*) FROM (SELECT * FROM ({a}) EXCEPT SELECT * FROM ({b}))");
        conn.query_row(&sql, [], |r| r.get(0))
    };
    let mut differ = Vec::new();
    for (table, expected, actual) in EXPECTED {
        let expected = expected.replace("FROM visits", &counted_visits).replace(
            "FROM clicks",
            &format!(
                "FROM (SELECT * FROM clicks WHERE seq <= {})",
                progress.clicks_seq
            ),
        );
        let expected = expected.as_str();
        if missing(expected, actual)? + missing(actual, expected)? != 0 {
            differ.push((*table).to_owned());
        }
    }
    // Every row of `page_recent`, its older ones included, is a counted visit, and no page
    // holds more than the trim allows.
    let stray = missing(
        "SELECT page_id, id, ip, agent_id FROM page_recent",
        &format!("SELECT page_id, id, ip, agent_id {counted_visits}"),
    )?;
    let most: i64 = conn.query_row(
        "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM page_recent GROUP BY page_id)",
        [],
        |r| r.get(0),
    )?;
    if stray != 0 || most > RECENT_PER_PAGE + RECENT_SLACK {
        differ.push("page_recent (older rows)".to_owned());
    }
    Ok(differ)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::NewVisit;
    use crate::domain::{PageUrl, now_millis};
    use crate::store::Durability;
    use crate::store::sqlite::ingest::{Ingest, commit_visits};
    use crate::store::sqlite::{WriteConns, open_writer};

    /// Commits `(page, ip, millis)` visits to the visits file, without rolling up.
    fn write(conns: &WriteConns, ingest: &mut Ingest, visits: &[(&str, &str, i64)]) {
        let visits = visits.iter().map(|&(page, ip, at)| {
            let url = PageUrl::parse(page).expect("valid URL");
            NewVisit::pageview(url, ip.parse().expect("IP"), "UA".into(), at)
        });
        commit_visits(&conns.raw, ingest, visits);
    }

    fn unique_ips(conns: &WriteConns) -> (i64, i64, i64) {
        conns
            .rollups
            .query_row(
                "SELECT (SELECT unique_ips FROM totals),
                        (SELECT unique_ips FROM page_totals JOIN raw.pages p ON p.id = page_id
                         WHERE p.url = 'https://a.com/'),
                        coalesce((SELECT unique_ips FROM page_totals JOIN raw.pages p
                                  ON p.id = page_id WHERE p.url = 'https://b.com/'), 0)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap()
    }

    /// `page_ips` and `ips` try first what was more common in the roll-up before, and count
    /// exactly either way: new keys, known keys, and a known key whose stored last visit is
    /// later than the one rolled up (a late visit).
    #[test]
    fn distinct_ip_tables_are_exact_whichever_statement_goes_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut conns = open_writer(&dir.path().join("v.db"), Durability::Normal).unwrap();
        let mut ingest = Ingest::new();
        let (a, b) = ("https://a.com/", "https://b.com/");
        let now = now_millis();
        let ips: Vec<String> = (0..10).map(|i| format!("10.0.0.{i}")).collect();
        let round = |offset: i64| -> Vec<(&str, &str, i64)> {
            ips.iter()
                .enumerate()
                .map(|(i, ip)| (a, ip.as_str(), now + offset + i as i64))
                .collect()
        };

        write(&conns, &mut ingest, &round(0));
        conns.roll_up().unwrap();
        assert!(!conns.hints.pairs.move_first && !conns.hints.ips.move_first);
        // The same visitors again: known keys, so the next roll-up moves first.
        write(&conns, &mut ingest, &round(100));
        conns.roll_up().unwrap();
        assert!(conns.hints.pairs.move_first && conns.hints.ips.move_first);
        assert_eq!(unique_ips(&conns), (10, 10, 0));

        write(
            &conns,
            &mut ingest,
            &[
                (a, &ips[0], now + 200),
                (a, "10.9.9.9", now + 201),
                (b, &ips[1], now + 202),
                (a, &ips[2], now - 1_000),
            ],
        );
        assert_eq!(ingest.late_logged(), 1);
        conns.roll_up().unwrap();
        assert_eq!(unique_ips(&conns), (11, 11, 1));
        assert!(check(&conns.rollups).unwrap().is_empty());
    }
}
