//! The reads of API.md §12 on PostgreSQL (`/sources`, `/devices`, `/hourly`), with the SQLite
//! engine's answers (`sqlite/dimensions.rs`), and the daily salt of `--ip-mode hashed`.
//!
//! Like every analytics read ([`super::queries`]), each answer comes from one snapshot: the
//! window's hours from the rollups (`site_hour_sources`, `site_hour_devices`: one primary-key
//! range of one site, 0 for all sites), plus the tail above the watermark from the raw rows.
//! The window is whole hours, so no raw row below the watermark is read. The cost depends on
//! the window and the number of distinct dimension values in it, not on the visits stored.

use std::collections::BTreeMap;

use deadpool_postgres::Transaction;
use rustc_hash::{FxHashMap, FxHashSet};
use tokio_postgres::Error;

use super::queries::{progress, query, query_one};
use crate::domain::{HOUR_MS, UnixMillis};
use crate::store::model::{Devices, Hourly, Sources};

/// The pseudo-site "all sites" of the site rollups.
const ALL_SITES: i64 = 0;

/// The site id of `site` (`None`: all sites); `None` when no visit ever named that site.
async fn site_id(tx: &Transaction<'_>, site: Option<&str>) -> Result<Option<i64>, Error> {
    let Some(name) = site else {
        return Ok(Some(ALL_SITES));
    };
    // Id 0 (the pseudo-site "all", named '') is no real site.
    Ok(query(
        tx,
        "SELECT id FROM sites WHERE name = $1 AND id <> 0",
        &[&name],
    )
    .await?
    .first()
    .map(|r| r.get(0)))
}

/// One dimension the window is counted by: the rollup table and what its rows are keyed by,
/// and the same key computed from a raw `visits v` row. Both statements are fixed strings (each
/// prepared once per connection).
struct Dimension {
    /// `key, visits` of one site's rollup rows from an hour on (`$1` site, `$2` hour).
    rolled: &'static str,
    /// `key, count` of the raw rows above the watermark `$1`, from `$2` (ms) on, of site `$3`
    /// (0: all sites).
    tail: &'static str,
}

const BY_SOURCE: Dimension = Dimension {
    rolled: "SELECT source_id, sum(visits)::bigint FROM site_hour_sources
             WHERE site_id = $1 AND hour >= $2 GROUP BY 1",
    tail: "SELECT v.source_id, count(*) FROM visits v JOIN pages p ON p.id = v.page_id
           WHERE v.id > $1 AND v.at >= $2 AND ($3::bigint = 0 OR p.site_id = $3) GROUP BY 1",
};

const BY_DEVICE: Dimension = Dimension {
    rolled: "SELECT device_id::bigint, sum(visits)::bigint FROM site_hour_devices
             WHERE site_id = $1 AND hour >= $2 GROUP BY 1",
    tail: "SELECT v.device_id::bigint, count(*) FROM visits v JOIN pages p ON p.id = v.page_id
           WHERE v.id > $1 AND v.at >= $2 AND ($3::bigint = 0 OR p.site_id = $3) GROUP BY 1",
};

/// Visits per hour: every device of an hour summed.
const BY_HOUR: Dimension = Dimension {
    rolled: "SELECT hour, sum(visits)::bigint FROM site_hour_devices
             WHERE site_id = $1 AND hour >= $2 GROUP BY 1",
    tail: "SELECT footfall_fdiv(v.at, 3600000), count(*) FROM visits v
           JOIN pages p ON p.id = v.page_id
           WHERE v.id > $1 AND v.at >= $2 AND ($3::bigint = 0 OR p.site_id = $3) GROUP BY 1",
};

/// Visits of `site` in the window, per key of `dimension`; keys with no visit left out. The
/// window is the last `hours` hour buckets up to `now`'s (API.md §12): whole hours, so the
/// rollups give all of it below the watermark.
async fn window_counts(
    tx: &Transaction<'_>,
    dimension: &Dimension,
    site: i64,
    now: UnixMillis,
    hours: i64,
) -> Result<FxHashMap<i64, i64>, Error> {
    let (watermark, _) = progress(tx).await?;
    let first_hour = now.div_euclid(HOUR_MS) - hours + 1;
    let mut counts: FxHashMap<i64, i64> = FxHashMap::default();
    let mut add = |rows: Vec<tokio_postgres::Row>| {
        for row in rows {
            *counts.entry(row.get(0)).or_default() += row.get::<_, i64>(1);
        }
    };
    add(query(tx, dimension.rolled, &[&site, &first_hour]).await?);
    let start = first_hour * HOUR_MS;
    add(query(tx, dimension.tail, &[&watermark, &start, &site]).await?);
    counts.retain(|_, n| *n > 0);
    Ok(counts)
}

/// `GET /sources`: referrers and UTM tags of the window's visits to `site` (all sites for
/// `None`); an unknown site has empty lists.
pub async fn sources(
    tx: &Transaction<'_>,
    now: UnixMillis,
    hours: i64,
    site: Option<&str>,
    limit: usize,
) -> Result<Sources, Error> {
    let Some(site) = site_id(tx, site).await? else {
        return Ok(Sources::default());
    };
    let counts = window_counts(tx, &BY_SOURCE, site, now, hours).await?;
    let ids: Vec<i64> = counts.keys().copied().collect();
    let rows = query(
        tx,
        "SELECT id, referrer, utm_source, utm_medium, utm_campaign FROM sources
         WHERE id = ANY($1)",
        &[&ids],
    )
    .await?;
    let counted = rows.iter().map(|row| {
        let values = [row.get(1), row.get(2), row.get(3), row.get(4)];
        (values, counts[&row.get::<_, i64>(0)])
    });
    Ok(Sources::tally(counted, limit))
}

/// `GET /devices`: browsers, OS families and device types of the window's visits to `site`
/// (all sites for `None`); an unknown site has empty lists and zero device types.
pub async fn devices(
    tx: &Transaction<'_>,
    now: UnixMillis,
    hours: i64,
    site: Option<&str>,
    limit: usize,
) -> Result<Devices, Error> {
    let counts = match site_id(tx, site).await? {
        Some(site) => window_counts(tx, &BY_DEVICE, site, now, hours).await?,
        None => FxHashMap::default(),
    };
    let ids: Vec<i16> = counts.keys().map(|&id| id as i16).collect();
    let rows = query(
        tx,
        "SELECT id, browser, os, device_type FROM devices WHERE id = ANY($1)",
        &[&ids],
    )
    .await?;
    let counted = rows.iter().map(|row| {
        let values = [row.get(1), row.get(2), row.get(3)];
        (values, counts[&i64::from(row.get::<_, i16>(0))])
    });
    Ok(Devices::tally(counted, limit))
}

/// `GET /hourly`: visits per hour of the window to `site` (all sites for `None`; clicks are
/// not visits), and the site's all-time visits and distinct visitors; zeros for an unknown
/// site.
pub async fn hourly(
    tx: &Transaction<'_>,
    now: UnixMillis,
    hours: i64,
    site: Option<&str>,
) -> Result<Hourly, Error> {
    let Some(site) = site_id(tx, site).await? else {
        return Ok(Hourly::default());
    };
    let by_hour: BTreeMap<i64, i64> = window_counts(tx, &BY_HOUR, site, now, hours)
        .await?
        .into_iter()
        .collect();
    let (total_visits, unique_ips) = site_totals(tx, site).await?;
    Ok(Hourly {
        by_hour: by_hour.into_iter().collect(),
        total_visits,
        unique_ips,
    })
}

/// All retained visits of `site` (0: all sites) and their distinct visitors: the rollups'
/// totals plus the tail's visits and the visitors the rollups do not know for the site.
async fn site_totals(tx: &Transaction<'_>, site: i64) -> Result<(i64, i64), Error> {
    let (watermark, _) = progress(tx).await?;
    let (visits, unique): (i64, i64) = if site == ALL_SITES {
        let row = query_one(
            tx,
            "SELECT visits, unique_ips FROM totals WHERE id = 1",
            &[],
        )
        .await?;
        (row.get(0), row.get(1))
    } else {
        query(
            tx,
            "SELECT visits, unique_ips FROM site_totals WHERE site_id = $1",
            &[&site],
        )
        .await?
        .first()
        .map_or((0, 0), |r| (r.get(0), r.get(1)))
    };
    let tail = query(
        tx,
        "SELECT v.ip FROM visits v JOIN pages p ON p.id = v.page_id
         WHERE v.id > $1 AND ($2::bigint = 0 OR p.site_id = $2)",
        &[&watermark, &site],
    )
    .await?;
    let tail_ips: Vec<Vec<u8>> = {
        let set: FxHashSet<Vec<u8>> = tail.iter().map(|r| r.get(0)).collect();
        set.into_iter().collect()
    };
    let mut new_ips = tail_ips.len() as i64;
    if !tail_ips.is_empty() {
        let known: i64 = if site == ALL_SITES {
            query_one(
                tx,
                "SELECT count(*) FROM ips WHERE ip = ANY($1)",
                &[&tail_ips],
            )
            .await?
            .get(0)
        } else {
            query_one(
                tx,
                "SELECT count(*) FROM site_ips WHERE site_id = $1 AND ip = ANY($2)",
                &[&site, &tail_ips],
            )
            .await?
            .get(0)
        };
        new_ips -= known;
    }
    Ok((visits + tail.len() as i64, unique + new_ips))
}

/// The salt of `day` (days since the epoch): `candidate` stored when the day has none yet, else
/// the one stored first (by any node), and the salts of days before `day - 1` deleted, in one
/// transaction. Two nodes asking at once agree: the second insert waits for the first's commit
/// and then inserts nothing, and its select (a new snapshot) sees the first's salt.
pub async fn daily_salt(
    client: &mut deadpool_postgres::Client,
    day: i64,
    candidate: [u8; 16],
) -> Result<Option<[u8; 16]>, Error> {
    let tx = client.transaction().await?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO salts (day, salt) VALUES ($1, $2) ON CONFLICT (day) DO NOTHING
             RETURNING salt",
        )
        .await?;
    let mut salt: Option<Vec<u8>> = tx
        .query_opt(&insert, &[&day, &candidate.as_slice()])
        .await?
        .map(|r| r.get(0));
    if salt.is_none() {
        let select = tx
            .prepare_cached("SELECT salt FROM salts WHERE day = $1")
            .await?;
        salt = tx.query_opt(&select, &[&day]).await?.map(|r| r.get(0));
    }
    let forget = tx
        .prepare_cached("DELETE FROM salts WHERE day < $1")
        .await?;
    tx.execute(&forget, &[&(day - 1)]).await?;
    tx.commit().await?;
    // None only when a node asking for a day two or more later deleted the row between the
    // insert and the select: the caller asks again.
    Ok(salt.and_then(|s| <[u8; 16]>::try_from(s.as_slice()).ok()))
}
