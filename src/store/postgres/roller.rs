//! Roll-ups across nodes, and cleanup (their inverse).
//!
//! **The watermark.** With several writers, visit ids are not committed in the order they are
//! drawn: a batch holding id 100 may commit after one holding id 101 was already rolled up, and
//! a plain `rolled_up_to = max(id)` would skip 100 for good. So the watermark moves in two steps
//! ([`settled_ids`], then [`roll_up`]):
//!
//! 1. Read the sequences' last values `W` (ids are drawn inside the insert, which holds `visits`
//!    `ROW EXCLUSIVE` from before it draws), then take and at once release
//!    `LOCK visits, clicks IN EXCLUSIVE MODE`: that waits for every writer still holding an id
//!    at or below `W`. After it, every id `<= W` is committed or never will be.
//! 2. In a new transaction (so a new snapshot, which sees all of them), lock the `progress` row
//!    `FOR UPDATE`, count `(rolled_up_to, W]` into every rollup table, and move the watermark,
//!    atomically with the counts.
//!
//! Correctness does not depend on who runs this, or how many at once: step 2 serialises on the
//! `progress` row and counts only what lies above the watermark it finds there.
//!
//! **The election.** Rolling up costs the database work, so one node at a time does it: the one
//! holding a session `pg_try_advisory_lock` on its own connection ([`Roller`]). When that node
//! dies, PostgreSQL drops its session and the lock, and another node takes it at its next try
//! (every [`ELECT_EVERY`]).
//!
//! **Distinct counts** stay exact: `page_ips`, `site_ips` and `ips` hold every distinct
//! (page, IP), (site, IP) and IP with the time of its last visit, and a roll-up adds to
//! `unique_ips` exactly the rows its `INSERT ... ON CONFLICT DO NOTHING RETURNING` inserted.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, Transaction};

use super::tls::Target;
use crate::domain::UnixMillis;

/// The advisory lock key of the roller election ("foot" + 2).
pub const ROLLER_LOCK: i64 = 0x666f_6f74_0002;
/// How often the elected node rolls up: keeps the tail short (the design measured `/summary` at
/// 20 ms with a 10k tail, 85 ms with 50k).
pub const ROLL_UP_EVERY: Duration = Duration::from_millis(100);
/// How often a node that is not elected tries to take over.
pub const ELECT_EVERY: Duration = Duration::from_secs(1);
/// Most visits counted in one roll-up transaction: a large import is rolled up in steps.
const CHUNK: i64 = 200_000;
/// A roll-up of at least this many visits refreshes the planner's statistics.
const ANALYZE_AFTER: u64 = 100_000;

/// The figures the roller keeps for `/metrics`.
#[derive(Debug, Default)]
pub struct RollerStats {
    /// Visits above the watermark at the last look.
    pub pending: AtomicI64,
    /// `pg_database_size` at the last look.
    pub database_bytes: AtomicU64,
}

/// The node's roller task: elected or waiting to be.
#[derive(Debug)]
pub struct Roller {
    stop: watch::Sender<bool>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
    pub stats: Arc<RollerStats>,
}

impl Roller {
    /// Starts the roller on the current runtime; it connects (and reconnects) by itself.
    pub fn spawn(target: Target) -> Self {
        let (stop, stopped) = watch::channel(false);
        let stats = Arc::new(RollerStats::default());
        let task = tokio::spawn(run(target, stopped, stats.clone()));
        Self {
            stop,
            task: std::sync::Mutex::new(Some(task)),
            stats,
        }
    }

    /// Stops the roller (after a last roll-up, if elected) and waits for it.
    pub async fn close(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

async fn run(target: Target, mut stopped: watch::Receiver<bool>, stats: Arc<RollerStats>) {
    let seconds = metrics::histogram!("footfall_roll_up_seconds");
    let mut client: Option<Client> = None;
    let mut elected = false;
    let mut last_stats = Instant::now() - Duration::from_secs(10);
    loop {
        let stopping = *stopped.borrow();
        let step = async {
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                elected = false;
                client = Some(target.connect().await?);
            }
            let c = client.as_mut().expect("connected above");
            if !elected {
                elected = c
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&ROLLER_LOCK])
                    .await?
                    .get(0);
                if elected {
                    tracing::info!("this node rolls up (elected)");
                }
            }
            if elected {
                let started = Instant::now();
                if roll_up(c).await? > 0 {
                    seconds.record(started.elapsed().as_secs_f64());
                    metrics::counter!("footfall_roll_ups_total", "reason" => "interval")
                        .increment(1);
                }
            }
            if last_stats.elapsed() > Duration::from_secs(1) {
                last_stats = Instant::now();
                let row = c
                    .query_one(
                        "SELECT coalesce(pg_sequence_last_value('visits_id_seq'), 0)
                                - (SELECT rolled_up_to FROM progress WHERE id = 1),
                                pg_database_size(current_database())",
                        &[],
                    )
                    .await?;
                stats.pending.store(row.get(0), Ordering::Relaxed);
                stats
                    .database_bytes
                    .store(row.get::<_, i64>(1).max(0) as u64, Ordering::Relaxed);
            }
            Ok::<_, tokio_postgres::Error>(())
        }
        .await;
        if let Err(err) = step {
            if elected {
                tracing::warn!(error = %err, "the roll-up failed; trying again");
            } else {
                tracing::debug!(error = %err, "the roller cannot reach PostgreSQL");
            }
            // A broken session has lost the lock anyway; a working one keeps it.
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                elected = false;
                client = None;
            }
        }
        if stopping {
            return;
        }
        let wait = if elected { ROLL_UP_EVERY } else { ELECT_EVERY };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped.changed() => {}
        }
    }
}

/// Step 1 of the watermark: the last visit id and click seq drawn, once every writer that drew
/// one at or below them has finished. Its own short transaction (the lock is released at its
/// commit): writers stall for as long as the longest batch in flight, once per roll-up.
pub async fn settled_ids(client: &mut Client) -> Result<(i64, i64), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let row = tx
        .query_one(
            "SELECT coalesce(pg_sequence_last_value('visits_id_seq'), 0),
                    coalesce(pg_sequence_last_value('clicks_seq_seq'), 0)",
            &[],
        )
        .await?;
    tx.batch_execute("LOCK TABLE visits, clicks IN EXCLUSIVE MODE")
        .await?;
    tx.commit().await?;
    Ok((row.get(0), row.get(1)))
}

/// Rolls up everything committed above the watermark (step 2, after [`settled_ids`]);
/// answers the visits counted.
pub async fn roll_up(client: &mut Client) -> Result<u64, tokio_postgres::Error> {
    // Nothing new: no lock, no transaction.
    let row = client
        .query_one(
            "SELECT rolled_up_to, clicks_seq,
                    coalesce(pg_sequence_last_value('visits_id_seq'), 0),
                    coalesce(pg_sequence_last_value('clicks_seq_seq'), 0)
             FROM progress WHERE id = 1",
            &[],
        )
        .await?;
    let (lo, clo, w, c): (i64, i64, i64, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
    if w <= lo && c <= clo {
        return Ok(0);
    }
    let (visits_to, clicks_to) = settled_ids(client).await?;
    let mut counted = 0u64;
    loop {
        let tx = client.transaction().await?;
        let row = tx
            .query_one(
                "SELECT rolled_up_to, clicks_seq FROM progress WHERE id = 1 FOR UPDATE",
                &[],
            )
            .await?;
        let (lo, clo): (i64, i64) = (row.get(0), row.get(1));
        if lo >= visits_to && clo >= clicks_to {
            // Another roller got here first.
            tx.commit().await?;
            return Ok(counted);
        }
        let hi = visits_to.min(lo.saturating_add(CHUNK)).max(lo);
        let chi = clicks_to.max(clo);
        counted += count_in(&tx, lo, hi, clo, chi).await?;
        tx.commit().await?;
        if hi >= visits_to {
            if counted >= ANALYZE_AFTER {
                // A bulk import: refresh the planner's statistics now rather than when
                // autovacuum gets to it. Without them, "visits above the watermark" is
                // planned as a third of the table (measured: every read 110-200 ms at 3M
                // visits until ANALYZE, 2 ms after).
                client.batch_execute("ANALYZE").await?;
            }
            return Ok(counted);
        }
    }
}

/// Counts visits with ids in `(lo, hi]` and clicks with seqs in `(clo, chi]` into every rollup
/// and moves `progress` there, inside the caller's transaction (which holds the `progress`
/// row). Answers the visits counted.
///
/// The distinct-visitor tables (`page_ips`, `site_ips`, `ips`) take one `INSERT … ON CONFLICT
/// DO UPDATE` per roll-up: one probe of the primary key per key of the batch, `last_at` moved
/// forward where the batch's is newer, and `xmax = 0` on the rows it inserted (a row it updated
/// carries this transaction's id), which are the new distinct visitors. A separate `UPDATE …
/// FROM batch` was planned as a hash join over the whole table: a cost per roll-up that grew
/// with every visitor ever seen.
async fn count_in(
    tx: &Transaction<'_>,
    lo: i64,
    hi: i64,
    clo: i64,
    chi: i64,
) -> Result<u64, tokio_postgres::Error> {
    let range: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&lo, &hi];
    let visits = if hi > lo {
        // Per page: visits, and the (page, IP) pairs never seen before.
        tx.execute(
            "WITH b AS MATERIALIZED (
               SELECT page_id, ip, count(*) AS n, max(at) AS last_at FROM visits
               WHERE id > $1 AND id <= $2 GROUP BY page_id, ip),
             fresh AS (
               INSERT INTO page_ips (page_id, ip, last_at)
               SELECT page_id, ip, last_at FROM b ORDER BY page_id, ip
               ON CONFLICT (page_id, ip) DO UPDATE SET last_at = excluded.last_at
               WHERE page_ips.last_at < excluded.last_at
               RETURNING page_id, xmax = 0 AS inserted),
             fresh_n AS (SELECT page_id, count(*) AS n FROM fresh WHERE inserted GROUP BY page_id),
             per_page AS (SELECT page_id, sum(n)::bigint AS n FROM b GROUP BY page_id)
             INSERT INTO page_totals (page_id, visits, unique_ips)
             SELECT p.page_id, p.n, coalesce(f.n, 0) FROM per_page p
             LEFT JOIN fresh_n f USING (page_id) ORDER BY p.page_id
             ON CONFLICT (page_id) DO UPDATE
             SET visits = page_totals.visits + excluded.visits,
                 unique_ips = page_totals.unique_ips + excluded.unique_ips",
            &range,
        )
        .await?;
        // Whole database: visits, and the IPs never seen before.
        let visits = tx
            .query_one(
                "WITH b AS MATERIALIZED (
                   SELECT ip, count(*) AS n, max(at) AS last_at FROM visits
                   WHERE id > $1 AND id <= $2 GROUP BY ip),
                 fresh AS (
                   INSERT INTO ips (ip, last_at) SELECT ip, last_at FROM b ORDER BY ip
                   ON CONFLICT (ip) DO UPDATE SET last_at = excluded.last_at
                   WHERE ips.last_at < excluded.last_at
                   RETURNING xmax = 0 AS inserted)
                 UPDATE totals SET visits = visits + (SELECT coalesce(sum(n), 0) FROM b)::bigint,
                                   unique_ips = unique_ips
                                     + (SELECT count(*) FROM fresh WHERE inserted)
                 WHERE id = 1
                 RETURNING (SELECT coalesce(sum(n), 0) FROM b)::bigint",
                &range,
            )
            .await?
            .get::<_, i64>(0);
        tx.execute(
            "INSERT INTO page_hours (page_id, hour, visits)
             SELECT page_id, footfall_fdiv(at, 3600000), count(*) FROM visits
             WHERE id > $1 AND id <= $2 GROUP BY 1, 2 ORDER BY 1, 2
             ON CONFLICT (page_id, hour) DO UPDATE SET visits = page_hours.visits + excluded.visits",
            &range,
        )
        .await?;
        tx.execute(
            "INSERT INTO page_hour_agents (hour, page_id, agent_id, visits)
             SELECT footfall_fdiv(at, 3600000), page_id, agent_id, count(*) FROM visits
             WHERE id > $1 AND id <= $2 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
             ON CONFLICT (hour, page_id, agent_id) DO UPDATE
             SET visits = page_hour_agents.visits + excluded.visits",
            &range,
        )
        .await?;
        count_sites_in(tx, lo, hi).await?;
        // The newest visits of each page: at most 20 new ones, then the page is trimmed back
        // to its newest 20 when its visits (`page_totals`, counted above) pass a multiple of
        // 10. Trimming is a window over every row of the page, so it runs once every ten
        // visits rather than at every roll-up; meanwhile a page holds fewer than 30 rows (a
        // few more if a cleanup lowered its count), and readers take the newest. A page with
        // 20 visits or fewer never needs it.
        let pages: Vec<i64> = tx
            .query(
                "WITH b AS MATERIALIZED (
                   SELECT page_id, at, id, ip, agent_id,
                          row_number() OVER (PARTITION BY page_id ORDER BY at DESC, id DESC) AS rn,
                          count(*) OVER (PARTITION BY page_id) AS n
                   FROM visits WHERE id > $1 AND id <= $2),
                 ins AS (
                   INSERT INTO page_recent (page_id, at, id, ip, agent_id)
                   SELECT page_id, at, id, ip, agent_id FROM b WHERE rn <= 20)
                 SELECT t.page_id FROM page_totals t JOIN b ON b.page_id = t.page_id AND b.rn = 1
                 WHERE t.visits > 20 AND t.visits / 10 <> (t.visits - b.n) / 10",
                &range,
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        tx.execute(
            "DELETE FROM page_recent r USING (
               SELECT page_id, at, id FROM (
                 SELECT page_id, at, id,
                        row_number() OVER (PARTITION BY page_id ORDER BY at DESC, id DESC) AS rn
                 FROM page_recent WHERE page_id = ANY($1)) x
               WHERE rn > 20) old
             WHERE r.page_id = old.page_id AND r.at = old.at AND r.id = old.id",
            &[&pages],
        )
        .await?;
        visits
    } else {
        0
    };
    // Per site (and all sites, 0), event and minute / hour / day: visits and clicks.
    tx.execute(
        "WITH raw AS MATERIALIZED (
           SELECT p.site_id, footfall_fdiv(v.at, 60000) AS minute, v.event_id, count(*) AS n
           FROM visits v JOIN pages p ON p.id = v.page_id
           WHERE v.id > $1 AND v.id <= $2 GROUP BY 1, 2, 3
           UNION ALL
           SELECT site_id, minute, event_id, sum(clicks)::bigint FROM clicks
           WHERE seq > $3 AND seq <= $4 GROUP BY 1, 2, 3),
         both_ AS MATERIALIZED (
           SELECT s.site_id, r.minute, r.event_id, r.n FROM raw r
           CROSS JOIN LATERAL (VALUES (r.site_id), (0::bigint)) AS s(site_id)),
         m AS (
           INSERT INTO site_minutes (site_id, event_id, minute, visits)
           SELECT site_id, event_id, minute, sum(n)::bigint FROM both_ GROUP BY 1, 2, 3
           ORDER BY 1, 2, 3
           ON CONFLICT (site_id, event_id, minute) DO UPDATE
           SET visits = site_minutes.visits + excluded.visits),
         h AS (
           INSERT INTO site_hours (site_id, event_id, hour, visits)
           SELECT site_id, event_id, footfall_fdiv(minute, 60), sum(n)::bigint FROM both_
           GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
           ON CONFLICT (site_id, event_id, hour) DO UPDATE
           SET visits = site_hours.visits + excluded.visits)
         INSERT INTO site_days (site_id, event_id, day, visits)
         SELECT site_id, event_id, footfall_fdiv(minute, 1440), sum(n)::bigint FROM both_
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
         ON CONFLICT (site_id, event_id, day) DO UPDATE
         SET visits = site_days.visits + excluded.visits",
        &[&lo, &hi, &clo, &chi],
    )
    .await?;
    tx.execute(
        "UPDATE progress SET rolled_up_to = $1, clicks_seq = $2 WHERE id = 1",
        &[&hi, &chi],
    )
    .await?;
    Ok(visits.max(0) as u64)
}

/// The rollups of API.md §12, for visits with ids in `(lo, hi]`: per site, totals and distinct
/// IPs (as per page), and visits per site (and all sites, 0), hour and source / device.
async fn count_sites_in(
    tx: &Transaction<'_>,
    lo: i64,
    hi: i64,
) -> Result<(), tokio_postgres::Error> {
    let range: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&lo, &hi];
    tx.execute(
        "WITH b AS MATERIALIZED (
           SELECT p.site_id, v.ip, count(*) AS n, max(v.at) AS last_at
           FROM visits v JOIN pages p ON p.id = v.page_id
           WHERE v.id > $1 AND v.id <= $2 GROUP BY 1, 2),
         fresh AS (
           INSERT INTO site_ips (site_id, ip, last_at)
           SELECT site_id, ip, last_at FROM b ORDER BY site_id, ip
           ON CONFLICT (site_id, ip) DO UPDATE SET last_at = excluded.last_at
           WHERE site_ips.last_at < excluded.last_at
           RETURNING site_id, xmax = 0 AS inserted),
         fresh_n AS (SELECT site_id, count(*) AS n FROM fresh WHERE inserted GROUP BY site_id),
         per_site AS (SELECT site_id, sum(n)::bigint AS n FROM b GROUP BY site_id)
         INSERT INTO site_totals (site_id, visits, unique_ips)
         SELECT p.site_id, p.n, coalesce(f.n, 0) FROM per_site p
         LEFT JOIN fresh_n f USING (site_id) ORDER BY p.site_id
         ON CONFLICT (site_id) DO UPDATE
         SET visits = site_totals.visits + excluded.visits,
             unique_ips = site_totals.unique_ips + excluded.unique_ips",
        &range,
    )
    .await?;
    tx.execute(
        "WITH raw AS MATERIALIZED (
           SELECT p.site_id, footfall_fdiv(v.at, 3600000) AS hour, v.source_id, v.device_id,
                  count(*) AS n
           FROM visits v JOIN pages p ON p.id = v.page_id
           WHERE v.id > $1 AND v.id <= $2 GROUP BY 1, 2, 3, 4),
         both_ AS MATERIALIZED (
           SELECT s.site_id, r.hour, r.source_id, r.device_id, r.n FROM raw r
           CROSS JOIN LATERAL (VALUES (r.site_id), (0::bigint)) AS s(site_id)),
         src AS (
           INSERT INTO site_hour_sources (site_id, hour, source_id, visits)
           SELECT site_id, hour, source_id, sum(n)::bigint FROM both_ GROUP BY 1, 2, 3
           ORDER BY 1, 2, 3
           ON CONFLICT (site_id, hour, source_id) DO UPDATE
           SET visits = site_hour_sources.visits + excluded.visits)
         INSERT INTO site_hour_devices (site_id, hour, device_id, visits)
         SELECT site_id, hour, device_id, sum(n)::bigint FROM both_ GROUP BY 1, 2, 3
         ORDER BY 1, 2, 3
         ON CONFLICT (site_id, hour, device_id) DO UPDATE
         SET visits = site_hour_devices.visits + excluded.visits",
        &range,
    )
    .await?;
    Ok(())
}

/// Rollup tables with a per-key count, the key columns, and the query of what the visits
/// before `$1` (a time) contribute to each key: what cleanup subtracts.
const TAKE_OUT: &[(&str, &str, &str)] = &[
    (
        "page_totals",
        "page_id",
        "SELECT page_id, count(*) FROM visits WHERE at < $1 GROUP BY 1",
    ),
    (
        "page_hours",
        "page_id, hour",
        "SELECT page_id, footfall_fdiv(at, 3600000), count(*) FROM visits WHERE at < $1
         GROUP BY 1, 2",
    ),
    (
        "page_hour_agents",
        "hour, page_id, agent_id",
        "SELECT footfall_fdiv(at, 3600000), page_id, agent_id, count(*) FROM visits
         WHERE at < $1 GROUP BY 1, 2, 3",
    ),
    (
        "site_totals",
        "site_id",
        "SELECT p.site_id, count(*) FROM visits v JOIN pages p ON p.id = v.page_id
         WHERE v.at < $1 GROUP BY 1",
    ),
    (
        "site_hour_sources",
        "site_id, hour, source_id",
        "SELECT s.site_id, footfall_fdiv(v.at, 3600000), v.source_id, count(*)
         FROM visits v JOIN pages p ON p.id = v.page_id
         CROSS JOIN LATERAL (VALUES (p.site_id), (0::bigint)) AS s(site_id)
         WHERE v.at < $1 GROUP BY 1, 2, 3",
    ),
    (
        "site_hour_devices",
        "site_id, hour, device_id",
        "SELECT s.site_id, footfall_fdiv(v.at, 3600000), v.device_id, count(*)
         FROM visits v JOIN pages p ON p.id = v.page_id
         CROSS JOIN LATERAL (VALUES (p.site_id), (0::bigint)) AS s(site_id)
         WHERE v.at < $1 GROUP BY 1, 2, 3",
    ),
    (
        "site_minutes",
        "site_id, event_id, minute",
        "SELECT s.site_id, v.event_id, footfall_fdiv(v.at, 60000), count(*)
         FROM visits v JOIN pages p ON p.id = v.page_id
         CROSS JOIN LATERAL (VALUES (p.site_id), (0::bigint)) AS s(site_id)
         WHERE v.at < $1 GROUP BY 1, 2, 3",
    ),
    (
        "site_hours",
        "site_id, event_id, hour",
        "SELECT s.site_id, v.event_id, footfall_fdiv(v.at, 3600000), count(*)
         FROM visits v JOIN pages p ON p.id = v.page_id
         CROSS JOIN LATERAL (VALUES (p.site_id), (0::bigint)) AS s(site_id)
         WHERE v.at < $1 GROUP BY 1, 2, 3",
    ),
    (
        "site_days",
        "site_id, event_id, day",
        "SELECT s.site_id, v.event_id, footfall_fdiv(v.at, 86400000), count(*)
         FROM visits v JOIN pages p ON p.id = v.page_id
         CROSS JOIN LATERAL (VALUES (p.site_id), (0::bigint)) AS s(site_id)
         WHERE v.at < $1 GROUP BY 1, 2, 3",
    ),
];

/// Deletes the visits before `cutoff` with their share of every rollup, in one transaction:
/// whichever node runs it, and however many run at once, each visit is taken out once and every
/// figure afterwards equals what the remaining visits give. Writers wait while it runs (it holds
/// `visits` in `EXCLUSIVE` mode, so nothing can be stored, or be in flight, below its roll-up).
pub async fn cleanup(
    client: &mut Client,
    cutoff: UnixMillis,
) -> Result<u64, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let row = tx
        .query_one(
            "SELECT rolled_up_to, clicks_seq FROM progress WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await?;
    let (lo, clo): (i64, i64) = (row.get(0), row.get(1));
    tx.batch_execute("LOCK TABLE visits, clicks IN EXCLUSIVE MODE")
        .await?;
    let row = tx
        .query_one(
            "SELECT coalesce(pg_sequence_last_value('visits_id_seq'), 0),
                    coalesce(pg_sequence_last_value('clicks_seq_seq'), 0)",
            &[],
        )
        .await?;
    let (w, c): (i64, i64) = (row.get(0), row.get(1));
    // Everything is counted first, so taking out is the exact inverse of counting in.
    count_in(&tx, lo, w.max(lo), clo, c.max(clo)).await?;
    tx.execute(
        "WITH gone AS (DELETE FROM page_ips WHERE last_at < $1 RETURNING page_id),
              n AS (SELECT page_id, count(*) AS n FROM gone GROUP BY page_id)
         UPDATE page_totals t SET unique_ips = t.unique_ips - n.n FROM n
         WHERE t.page_id = n.page_id",
        &[&cutoff],
    )
    .await?;
    tx.execute(
        "WITH gone AS (DELETE FROM site_ips WHERE last_at < $1 RETURNING site_id),
              n AS (SELECT site_id, count(*) AS n FROM gone GROUP BY site_id)
         UPDATE site_totals t SET unique_ips = t.unique_ips - n.n FROM n
         WHERE t.site_id = n.site_id",
        &[&cutoff],
    )
    .await?;
    tx.execute(
        "WITH gone AS (DELETE FROM ips WHERE last_at < $1 RETURNING 1)
         UPDATE totals SET unique_ips = unique_ips - (SELECT count(*) FROM gone) WHERE id = 1",
        &[&cutoff],
    )
    .await?;
    tx.execute("DELETE FROM page_recent WHERE at < $1", &[&cutoff])
        .await?;
    for (table, keys, contribution) in TAKE_OUT {
        let names: Vec<&str> = keys.split(", ").collect();
        let on = names
            .iter()
            .map(|k| format!("t.{k} = d.{k}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        tx.execute(
            &format!(
                "WITH d({keys}, n) AS ({contribution})
                 UPDATE {table} t SET visits = t.visits - d.n FROM d WHERE {on}"
            ),
            &[&cutoff],
        )
        .await?;
        tx.execute(
            &format!(
                "WITH d({keys}, n) AS ({contribution})
                 DELETE FROM {table} t USING d WHERE {on} AND t.visits <= 0"
            ),
            &[&cutoff],
        )
        .await?;
    }
    let deleted = tx
        .execute("DELETE FROM visits WHERE at < $1", &[&cutoff])
        .await?;
    tx.execute(
        "UPDATE totals SET visits = visits - $1 WHERE id = 1",
        &[&(deleted as i64)],
    )
    .await?;
    tx.execute(
        "UPDATE progress SET cleanup_seq = cleanup_seq + 1 WHERE id = 1",
        &[],
    )
    .await?;
    tx.commit().await?;
    Ok(deleted)
}
