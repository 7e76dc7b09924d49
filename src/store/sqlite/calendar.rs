//! Calendar breakdowns (seed 001) and top sites per trailing period (seed 000), read from the
//! per-site minute/hour/day rollups: a year's breakdown reads at most 366 day rows, a day's 24
//! hour rows, an hour's 60 minute rows; never the raw visits (except the tail not yet rolled
//! up, at most 50,000 visits under load: see `rollups.sql`).

use rusqlite::{Connection, OptionalExtension, params};

use super::ingest::tail;
use super::rollups::{ALL_SITES, DAY_MS, HOUR_MS, MINUTE_MS, millis_of};
use crate::domain::UnixMillis;
use crate::domain::period::{Period, days_in_month, month_start};

/// Per-segment counts of a period: (segment label, count), every segment present, in order.
/// `site` `None` counts every site.
pub fn breakdown(
    conn: &Connection,
    site: Option<&str>,
    event: &str,
    period: &Period,
) -> rusqlite::Result<Vec<(u32, i64)>> {
    let start = period.start_millis();
    // (table, bucket column, segments as (label, first bucket, end bucket))
    let (table, column, segments): (&str, &str, Vec<(u32, i64, i64)>) =
        match (period.month, period.day, period.hour) {
            (None, _, _) => {
                let segments = (1..=12)
                    .map(|m| {
                        let first = month_start(period.year, m);
                        let end = if m == 12 {
                            month_start(period.year + 1, 1)
                        } else {
                            month_start(period.year, m + 1)
                        };
                        (m, first / DAY_MS, end / DAY_MS)
                    })
                    .collect();
                ("site_days", "day", segments)
            }
            (Some(m), None, _) => {
                let days = days_in_month(period.year, m);
                let first = start / DAY_MS;
                let segments = (1..=days)
                    .map(|d| (d, first + i64::from(d) - 1, first + i64::from(d)))
                    .collect();
                ("site_days", "day", segments)
            }
            (Some(_), Some(_), None) => {
                let first = start / HOUR_MS;
                let segments = (0..24)
                    .map(|h| (h, first + i64::from(h), first + i64::from(h) + 1))
                    .collect();
                ("site_hours", "hour", segments)
            }
            (Some(_), Some(_), Some(_)) => {
                let first = start / MINUTE_MS;
                let segments = (0..60)
                    .map(|m| (m, first + i64::from(m), first + i64::from(m) + 1))
                    .collect();
                ("site_minutes", "minute", segments)
            }
        };
    let mut out: Vec<(u32, i64)> = segments.iter().map(|&(label, _, _)| (label, 0)).collect();
    let conn = &conn.unchecked_transaction()?;
    let (Some(site_id), Some(event_id)) = (site_id(conn, site)?, event_id(conn, event)?) else {
        return Ok(out);
    };
    let bucket_ms = match column {
        "day" => DAY_MS,
        "hour" => HOUR_MS,
        _ => MINUTE_MS,
    };
    let (_, tail) = tail(conn)?;
    let (from, to) = (segments[0].1, segments[segments.len() - 1].2);
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {column}, visits FROM {table}
         WHERE site_id = ?1 AND event_id = ?2 AND {column} >= ?3 AND {column} < ?4"
    ))?;
    let mut rows = stmt.query(params![site_id, event_id, from, to])?;
    while let Some(row) = rows.next()? {
        let bucket: i64 = row.get(0)?;
        let n: i64 = row.get(1)?;
        if let Some(i) = segments
            .iter()
            .position(|&(_, a, b)| (a..b).contains(&bucket))
        {
            out[i].1 += n;
        }
    }
    let tail_visits = tail
        .iter()
        .filter(|v| v.event_id == event_id && (site_id == ALL_SITES || v.site_id == site_id));
    for v in tail_visits {
        let bucket = millis_of(v.id).div_euclid(bucket_ms);
        if let Some(i) = segments
            .iter()
            .position(|&(_, a, b)| (a..b).contains(&bucket))
        {
            out[i].1 += 1;
        }
    }
    drop(rows);
    drop(stmt);
    Ok(out)
}

/// The id of a site name (`None`: the all-sites rollup); `None` when never seen.
fn site_id(conn: &Connection, site: Option<&str>) -> rusqlite::Result<Option<i64>> {
    let Some(site) = site else {
        return Ok(Some(ALL_SITES));
    };
    conn.prepare_cached("SELECT id FROM sites WHERE name = ?1 AND id != 0")?
        .query_row([site], |r| r.get(0))
        .optional()
}

fn event_id(conn: &Connection, event: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT id FROM events WHERE name = ?1")?
        .query_row([event], |r| r.get(0))
        .optional()
}

/// The sites with the most visits (all events, clicks included) in the minutes
/// `[now_minute - minutes, now_minute]`: the trailing period rounded out to whole minutes.
/// Whole hours inside the range are read from `site_hours`, the ragged ends from
/// `site_minutes`: at most 24 + 2 × 60 rows per site and event.
pub fn top_sites(
    conn: &Connection,
    now: UnixMillis,
    minutes: i64,
    limit: usize,
) -> rusqlite::Result<Vec<(String, i64)>> {
    let conn = &conn.unchecked_transaction()?;
    let (_, tail) = tail(conn)?;
    let last = now.div_euclid(MINUTE_MS);
    let first = last - minutes;
    // The tail's visits in the period, per site: counted once, not once per site.
    let mut tail_by_site: std::collections::HashMap<i64, i64> = std::collections::HashMap::new();
    for v in &tail {
        if (first..=last).contains(&millis_of(v.id).div_euclid(MINUTE_MS)) {
            *tail_by_site.entry(v.site_id).or_default() += 1;
        }
    }
    let first_full_hour = (first + 59).div_euclid(60);
    let end_full_hour = (last + 1).div_euclid(60);
    let events: Vec<i64> = conn
        .prepare_cached("SELECT id FROM events")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut minute_sum = conn.prepare_cached(
        "SELECT coalesce(sum(visits), 0) FROM site_minutes
         WHERE site_id = ?1 AND event_id = ?2 AND minute >= ?3 AND minute < ?4",
    )?;
    let mut hour_sum = conn.prepare_cached(
        "SELECT coalesce(sum(visits), 0) FROM site_hours
         WHERE site_id = ?1 AND event_id = ?2 AND hour >= ?3 AND hour < ?4",
    )?;
    let mut sites_stmt = conn.prepare_cached("SELECT id, name FROM sites WHERE id != 0")?;
    let sites: Vec<(i64, String)> = sites_stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut totals = Vec::new();
    for (site_id, name) in sites {
        let mut total = 0i64;
        for &event_id in &events {
            let mut minutes_between = |a: i64, b: i64| -> rusqlite::Result<i64> {
                if a >= b {
                    return Ok(0);
                }
                minute_sum.query_row(params![site_id, event_id, a, b], |r| r.get(0))
            };
            if first_full_hour < end_full_hour {
                total += minutes_between(first, first_full_hour * 60)?;
                total += hour_sum.query_row(
                    params![site_id, event_id, first_full_hour, end_full_hour],
                    |r| r.get::<_, i64>(0),
                )?;
                total += minutes_between(end_full_hour * 60, last + 1)?;
            } else {
                total += minutes_between(first, last + 1)?;
            }
        }
        total += tail_by_site.get(&site_id).copied().unwrap_or(0);
        if total > 0 {
            totals.push((name, total));
        }
    }
    totals.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    totals.truncate(limit);
    Ok(totals)
}
