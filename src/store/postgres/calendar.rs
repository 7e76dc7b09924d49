//! Calendar breakdowns (seed 001) and top sites per trailing period (seed 000) on PostgreSQL,
//! with the SQLite engine's answers (`sqlite/calendar.rs`): the per-site minute/hour/day
//! rollups, plus the tail of visits and clicks above the watermarks, in one snapshot.

use std::collections::HashMap;

use deadpool_postgres::Transaction;
use tokio_postgres::Error;

use super::queries::{progress, query, tail};
use crate::domain::period::{Period, days_in_month, month_start};
use crate::domain::{DAY_MS, HOUR_MS, MINUTE_MS, UnixMillis};

/// Site id of the pseudo-site that sums every site.
const ALL_SITES: i64 = 0;

/// A click not rolled up yet: (site id, minute, event id, clicks).
async fn click_tail(tx: &Transaction<'_>, seq: i64) -> Result<Vec<(i64, i64, i64, i64)>, Error> {
    Ok(query(
        tx,
        "SELECT site_id, minute, event_id, clicks FROM clicks WHERE seq > $1",
        &[&seq],
    )
    .await?
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect())
}

/// Per-segment counts of a period: (segment label, count), every segment present, in order.
/// `site` `None` counts every site.
pub async fn breakdown(
    tx: &Transaction<'_>,
    site: Option<&str>,
    event: &str,
    period: &Period,
) -> Result<Vec<(u32, i64)>, Error> {
    let start = period.start_millis();
    let (table, column, bucket_ms, segments): (&str, &str, i64, Vec<(u32, i64, i64)>) =
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
                        (m, first.div_euclid(DAY_MS), end.div_euclid(DAY_MS))
                    })
                    .collect();
                ("site_days", "day", DAY_MS, segments)
            }
            (Some(m), None, _) => {
                let days = days_in_month(period.year, m);
                let first = start.div_euclid(DAY_MS);
                let segments = (1..=days)
                    .map(|d| (d, first + i64::from(d) - 1, first + i64::from(d)))
                    .collect();
                ("site_days", "day", DAY_MS, segments)
            }
            (Some(_), Some(_), None) => {
                let first = start.div_euclid(HOUR_MS);
                let segments = (0..24)
                    .map(|h| (h, first + i64::from(h), first + i64::from(h) + 1))
                    .collect();
                ("site_hours", "hour", HOUR_MS, segments)
            }
            (Some(_), Some(_), Some(_)) => {
                let first = start.div_euclid(MINUTE_MS);
                let segments = (0..60)
                    .map(|m| (m, first + i64::from(m), first + i64::from(m) + 1))
                    .collect();
                ("site_minutes", "minute", MINUTE_MS, segments)
            }
        };
    let mut out: Vec<(u32, i64)> = segments.iter().map(|&(label, _, _)| (label, 0)).collect();
    let site_id = match site {
        None => Some(ALL_SITES),
        Some(name) => query(
            tx,
            "SELECT id FROM sites WHERE name = $1 AND id != 0",
            &[&name],
        )
        .await?
        .first()
        .map(|r| r.get::<_, i64>(0)),
    };
    let event_id = query(tx, "SELECT id FROM events WHERE name = $1", &[&event])
        .await?
        .first()
        .map(|r| r.get::<_, i64>(0));
    let (Some(site_id), Some(event_id)) = (site_id, event_id) else {
        return Ok(out);
    };
    let mut add = |bucket: i64, n: i64| {
        if let Some(i) = segments
            .iter()
            .position(|&(_, a, b)| (a..b).contains(&bucket))
        {
            out[i].1 += n;
        }
    };
    let (watermark, clicks_seq) = progress(tx).await?;
    let (from, to) = (segments[0].1, segments[segments.len() - 1].2);
    for row in query(
        tx,
        &format!(
            "SELECT {column}, visits FROM {table}
             WHERE site_id = $1 AND event_id = $2 AND {column} >= $3 AND {column} < $4"
        ),
        &[&site_id, &event_id, &from, &to],
    )
    .await?
    {
        add(row.get(0), row.get(1));
    }
    for v in tail(tx, watermark).await? {
        if v.event_id == event_id && (site_id == ALL_SITES || v.site_id == site_id) {
            add(v.at.div_euclid(bucket_ms), 1);
        }
    }
    for (site, minute, event, clicks) in click_tail(tx, clicks_seq).await? {
        if event == event_id && (site_id == ALL_SITES || site == site_id) {
            add((minute * MINUTE_MS).div_euclid(bucket_ms), clicks);
        }
    }
    Ok(out)
}

/// The sites with the most visits (all events, clicks included) in the minutes
/// `[now_minute - minutes, now_minute]`: whole hours from `site_hours`, the ragged ends from
/// `site_minutes`, the tails from the raw rows.
pub async fn top_sites(
    tx: &Transaction<'_>,
    now: UnixMillis,
    minutes: i64,
    limit: usize,
) -> Result<Vec<(String, i64)>, Error> {
    let (watermark, clicks_seq) = progress(tx).await?;
    let last = now.div_euclid(MINUTE_MS);
    let first = last - minutes;
    let first_full_hour = (first + 59).div_euclid(60);
    let end_full_hour = (last + 1).div_euclid(60);
    let mut by_site: HashMap<i64, i64> = HashMap::new();
    // Minute ranges [a, b) read from site_minutes, and the hour range from site_hours.
    type Ranges = Vec<(i64, i64)>;
    let (minute_ranges, hours): (Ranges, Option<(i64, i64)>) = if first_full_hour < end_full_hour {
        (
            vec![
                (first, first_full_hour * 60),
                (end_full_hour * 60, last + 1),
            ],
            Some((first_full_hour, end_full_hour)),
        )
    } else {
        (vec![(first, last + 1)], None)
    };
    for (a, b) in minute_ranges.into_iter().filter(|(a, b)| a < b) {
        for row in query(
            tx,
            "SELECT site_id, sum(visits)::bigint FROM site_minutes
             WHERE minute >= $1 AND minute < $2 AND site_id != 0 GROUP BY site_id",
            &[&a, &b],
        )
        .await?
        {
            *by_site.entry(row.get(0)).or_default() += row.get::<_, i64>(1);
        }
    }
    if let Some((a, b)) = hours {
        for row in query(
            tx,
            "SELECT site_id, sum(visits)::bigint FROM site_hours
             WHERE hour >= $1 AND hour < $2 AND site_id != 0 GROUP BY site_id",
            &[&a, &b],
        )
        .await?
        {
            *by_site.entry(row.get(0)).or_default() += row.get::<_, i64>(1);
        }
    }
    for v in tail(tx, watermark).await? {
        if (first..=last).contains(&v.at.div_euclid(MINUTE_MS)) {
            *by_site.entry(v.site_id).or_default() += 1;
        }
    }
    for (site, minute, _, clicks) in click_tail(tx, clicks_seq).await? {
        if (first..=last).contains(&minute) {
            *by_site.entry(site).or_default() += clicks;
        }
    }
    let ids: Vec<i64> = by_site
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(id, _)| *id)
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut totals: Vec<(String, i64)> =
        query(tx, "SELECT id, name FROM sites WHERE id = ANY($1)", &[&ids])
            .await?
            .iter()
            .map(|r| (r.get::<_, String>(1), by_site[&r.get::<_, i64>(0)]))
            .collect();
    totals.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    totals.truncate(limit);
    Ok(totals)
}
