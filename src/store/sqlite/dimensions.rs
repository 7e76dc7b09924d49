//! The reads of API.md §12: `/sources`, `/devices` and `/hourly`.
//!
//! Like every analytics read ([`super::queries`]), each answer is one snapshot: the whole hours
//! of the window from the rollups (`site_hour_sources`, `site_hour_devices`: one key range of
//! one site, 0 for all sites), plus the raw rows the rollups cannot give — the partial hour the
//! window starts in, below the watermark, and the tail above it. Its cost depends on the window
//! and the number of distinct dimension values in it, not on the number of stored visits.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};
use rustc_hash::FxHashMap;

use super::queries::Window;
use super::rollups::{ALL_SITES, HOUR_MS, read_progress};
use crate::domain::{DEVICE_TYPES, UNKNOWN, UnixMillis};
use crate::store::model::{Devices, Hourly, Sources};

/// The site id of `site` (`None`: all sites); `None` when no visit ever named that site.
fn site_id(conn: &Connection, site: Option<&str>) -> rusqlite::Result<Option<i64>> {
    let Some(name) = site else {
        return Ok(Some(ALL_SITES));
    };
    // Id 0 (the pseudo-site "all", named '') is no real site.
    conn.prepare_cached("SELECT id FROM sites WHERE name = ?1 AND id <> 0")?
        .query_row([name], |r| r.get(0))
        .optional()
}

/// The id ranges `[from, to)` of raw visits a window adds to its whole rolled-up hours: the
/// partial first hour below the watermark, and the tail from the watermark on.
fn raw_ranges(window: &Window, watermark: i64) -> Vec<(i64, i64)> {
    let mut ranges = Vec::with_capacity(2);
    if let Some((_, from, to)) = window.partial {
        ranges.push((from, to.min(watermark)));
    }
    ranges.push((window.start_id.max(watermark), i64::MAX));
    ranges.retain(|(from, to)| from < to);
    ranges
}

/// Visits of `site` in the window from `now - hours` on, per value of one dimension: `column`
/// of `visits` (`source_id`, `device_id`, or an expression of `id` such as the hour), `rolled`
/// the rollup table counting visits per (site, hour, that column). Inside the caller's read
/// transaction.
fn window_counts(
    conn: &Connection,
    site: i64,
    now: UnixMillis,
    hours: i64,
    column: &str,
    rolled: &str,
) -> rusqlite::Result<FxHashMap<i64, i64>> {
    let window = Window::new(now - hours * HOUR_MS);
    let watermark = read_progress(conn)?.rolled_up_to;
    let mut counts: FxHashMap<i64, i64> = FxHashMap::default();
    {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {column}, sum(visits) FROM {rolled} WHERE site_id = ?1 AND hour >= ?2
             GROUP BY 1"
        ))?;
        let mut rows = stmt.query([site, window.first_whole_hour])?;
        while let Some(row) = rows.next()? {
            *counts.entry(row.get(0)?).or_default() += row.get::<_, i64>(1)?;
        }
    }
    // All sites need no join: the rowid range alone.
    let raw_sql = if site == ALL_SITES {
        format!(
            "SELECT {}, count(*) FROM visits v WHERE v.id >= ?1 AND v.id < ?2 GROUP BY 1",
            raw_column(column)
        )
    } else {
        format!(
            "SELECT {}, count(*) FROM visits v JOIN pages p ON p.id = v.page_id
             WHERE v.id >= ?1 AND v.id < ?2 AND p.site_id = ?3 GROUP BY 1",
            raw_column(column)
        )
    };
    let mut stmt = conn.prepare_cached(&raw_sql)?;
    for (from, to) in raw_ranges(&window, watermark) {
        let mut rows = if site == ALL_SITES {
            stmt.query(params![from, to])?
        } else {
            stmt.query(params![from, to, site])?
        };
        while let Some(row) = rows.next()? {
            *counts.entry(row.get(0)?).or_default() += row.get::<_, i64>(1)?;
        }
    }
    counts.retain(|_, n| *n > 0);
    Ok(counts)
}

/// A rollup column as computed from a raw `visits v` row.
fn raw_column(column: &str) -> String {
    match column {
        "hour" => format!("(v.id >> 20) / {HOUR_MS}"),
        other => format!("v.{other}"),
    }
}

/// The `limit` largest counts of `counts`, most first, ties by name.
fn top(counts: FxHashMap<String, i64>, limit: usize) -> Vec<(String, i64)> {
    let mut list: Vec<(String, i64)> = counts.into_iter().collect();
    list.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    list.truncate(limit);
    list
}

/// `GET /sources`: referrers and UTM tags of the window's visits to `site` (all sites for
/// `None`); an unknown site has empty lists.
pub fn sources(
    conn: &Connection,
    now: UnixMillis,
    hours: i64,
    site: Option<&str>,
    limit: usize,
) -> rusqlite::Result<Sources> {
    let conn = &conn.unchecked_transaction()?;
    let Some(site) = site_id(conn, site)? else {
        return Ok(Sources::default());
    };
    let counts = window_counts(conn, site, now, hours, "source_id", "site_hour_sources")?;
    let mut lists: [FxHashMap<String, i64>; 4] = Default::default();
    let mut stmt = conn.prepare_cached(
        "SELECT referrer, utm_source, utm_medium, utm_campaign FROM sources WHERE id = ?1",
    )?;
    for (id, n) in counts {
        let values: [String; 4] =
            stmt.query_row([id], |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?]))?;
        for (i, (list, value)) in lists.iter_mut().zip(values).enumerate() {
            // A visit without a UTM tag counts in no UTM list; every visit has a referrer.
            if i == 0 || !value.is_empty() {
                *list.entry(value).or_default() += n;
            }
        }
    }
    let [referrers, utm_source, utm_medium, utm_campaign] = lists;
    Ok(Sources {
        referrers: top(referrers, limit),
        utm_source: top(utm_source, limit),
        utm_medium: top(utm_medium, limit),
        utm_campaign: top(utm_campaign, limit),
    })
}

/// `GET /devices`: browsers, OS families and device types of the window's visits to `site`
/// (all sites for `None`); an unknown site has empty lists and zero device types.
pub fn devices(
    conn: &Connection,
    now: UnixMillis,
    hours: i64,
    site: Option<&str>,
    limit: usize,
) -> rusqlite::Result<Devices> {
    let conn = &conn.unchecked_transaction()?;
    let counts = match site_id(conn, site)? {
        Some(site) => window_counts(conn, site, now, hours, "device_id", "site_hour_devices")?,
        None => FxHashMap::default(),
    };
    let mut lists: [FxHashMap<String, i64>; 3] = Default::default();
    let mut stmt =
        conn.prepare_cached("SELECT browser, os, device_type FROM devices WHERE id = ?1")?;
    for (id, n) in counts {
        let values: [String; 3] = stmt.query_row([id], |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?]))?;
        for (list, value) in lists.iter_mut().zip(values) {
            *list.entry(value).or_default() += n;
        }
    }
    let [browsers, os, types] = lists;
    let mut device_types: Vec<(String, i64)> = DEVICE_TYPES
        .iter()
        .map(|t| ((*t).to_owned(), types.get(*t).copied().unwrap_or(0)))
        .collect();
    if let Some(&n) = types.get(UNKNOWN) {
        device_types.push((UNKNOWN.to_owned(), n));
    }
    Ok(Devices {
        browsers: top(browsers, limit),
        os: top(os, limit),
        device_types,
    })
}

/// `GET /hourly`: visits per hour of the window to `site` (all sites for `None`; clicks are not
/// visits), and the site's all-time visits and distinct visitors; zeros for an unknown site.
pub fn hourly(
    conn: &Connection,
    now: UnixMillis,
    hours: i64,
    site: Option<&str>,
) -> rusqlite::Result<Hourly> {
    let conn = &conn.unchecked_transaction()?;
    let Some(site) = site_id(conn, site)? else {
        return Ok(Hourly::default());
    };
    let by_hour: BTreeMap<i64, i64> =
        window_counts(conn, site, now, hours, "hour", "site_hour_devices")?
            .into_iter()
            .collect();
    let (total_visits, unique_ips) = site_totals(conn, site)?;
    Ok(Hourly {
        by_hour: by_hour.into_iter().collect(),
        total_visits,
        unique_ips,
    })
}

/// All retained visits of `site` (0: all sites) and their distinct visitors: the rollups'
/// totals plus the tail's visits and the visitors the rollups do not know for the site.
fn site_totals(conn: &Connection, site: i64) -> rusqlite::Result<(i64, i64)> {
    let watermark = read_progress(conn)?.rolled_up_to;
    let one = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> rusqlite::Result<i64> {
        conn.prepare_cached(sql)?.query_row(params, |r| r.get(0))
    };
    if site == ALL_SITES {
        let (visits, unique): (i64, i64) = conn
            .prepare_cached("SELECT visits, unique_ips FROM totals WHERE id = 1")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let tail = one("SELECT count(*) FROM visits WHERE id >= ?1", &[&watermark])?;
        let new_ips = one(
            "SELECT count(DISTINCT v.ip) FROM visits v WHERE v.id >= ?1
               AND NOT EXISTS (SELECT 1 FROM ips k WHERE k.ip = v.ip)",
            &[&watermark],
        )?;
        return Ok((visits + tail, unique + new_ips));
    }
    let (visits, unique): (i64, i64) = conn
        .prepare_cached("SELECT visits, unique_ips FROM site_totals WHERE site_id = ?1")?
        .query_row([site], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or_default();
    let tail = one(
        "SELECT count(*) FROM visits v JOIN pages p ON p.id = v.page_id
         WHERE v.id >= ?1 AND p.site_id = ?2",
        &[&watermark, &site],
    )?;
    let new_ips = one(
        "SELECT count(DISTINCT v.ip) FROM visits v JOIN pages p ON p.id = v.page_id
         WHERE v.id >= ?1 AND p.site_id = ?2
           AND NOT EXISTS (SELECT 1 FROM site_ips k WHERE k.site_id = ?2 AND k.ip = v.ip)",
        &[&watermark, &site],
    )?;
    Ok((visits + tail, unique + new_ips))
}
