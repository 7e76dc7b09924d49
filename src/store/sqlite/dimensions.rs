//! The reads of API.md §12: `/sources`, `/devices` and `/hourly`.
//!
//! Their window is whole hour buckets: the last `hours` hours up to now's, the current one
//! included (so `hours=1` is the hour so far). Like every analytics read ([`super::queries`]),
//! each answer is one snapshot: those hours from the rollups (`site_hour_sources`,
//! `site_hour_devices`: one key range of one site, 0 for all sites), plus the tail above the
//! watermark from the raw rows. Its cost depends on the window and the number of distinct
//! dimension values in it, not on the number of stored visits.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};
use rustc_hash::FxHashMap;

use super::rollups::{ALL_SITES, HOUR_MS, id_at, read_progress};
use crate::domain::UnixMillis;
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

/// The hours `[first, last]` of the window of `hours` hours ending with now's.
fn window(now: UnixMillis, hours: i64) -> (i64, i64) {
    let last = now.div_euclid(HOUR_MS);
    (last - hours.max(1) + 1, last)
}

/// Visits of `site` in the window of `hours` hours up to now's, per value of one dimension:
/// `column` of `visits` (`source_id`, `device_id`, or `hour`), `rolled` the rollup table
/// counting visits per (site, hour, that column). Inside the caller's read transaction.
fn window_counts(
    conn: &Connection,
    site: i64,
    now: UnixMillis,
    hours: i64,
    column: &str,
    rolled: &str,
) -> rusqlite::Result<FxHashMap<i64, i64>> {
    let (first, last) = window(now, hours);
    let watermark = read_progress(conn)?.rolled_up_to;
    let mut counts: FxHashMap<i64, i64> = FxHashMap::default();
    {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {column}, sum(visits) FROM {rolled}
             WHERE site_id = ?1 AND hour >= ?2 AND hour <= ?3 GROUP BY 1"
        ))?;
        let mut rows = stmt.query([site, first, last])?;
        while let Some(row) = rows.next()? {
            *counts.entry(row.get(0)?).or_default() += row.get::<_, i64>(1)?;
        }
    }
    // The tail's visits in the window: a rowid range (all sites need no join).
    let (from, to) = (
        id_at(first * HOUR_MS).max(watermark),
        id_at((last + 1) * HOUR_MS),
    );
    let column = raw_column(column);
    let mut stmt = if site == ALL_SITES {
        conn.prepare_cached(&format!(
            "SELECT {column}, count(*) FROM visits v WHERE v.id >= ?1 AND v.id < ?2 GROUP BY 1"
        ))?
    } else {
        conn.prepare_cached(&format!(
            "SELECT {column}, count(*) FROM visits v JOIN pages p ON p.id = v.page_id
             WHERE v.id >= ?1 AND v.id < ?2 AND p.site_id = ?3 GROUP BY 1"
        ))?
    };
    let mut rows = if site == ALL_SITES {
        stmt.query(params![from, to])?
    } else {
        stmt.query(params![from, to, site])?
    };
    while let Some(row) = rows.next()? {
        *counts.entry(row.get(0)?).or_default() += row.get::<_, i64>(1)?;
    }
    drop(rows);
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
    let mut stmt = conn.prepare_cached(
        "SELECT referrer, utm_source, utm_medium, utm_campaign FROM sources WHERE id = ?1",
    )?;
    let counted = counts
        .into_iter()
        .map(|(id, n)| {
            stmt.query_row([id], |r| {
                Ok(([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?], n))
            })
        })
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Sources::tally(counted, limit))
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
    let mut stmt =
        conn.prepare_cached("SELECT browser, os, device_type FROM devices WHERE id = ?1")?;
    let counted = counts
        .into_iter()
        .map(|(id, n)| stmt.query_row([id], |r| Ok(([r.get(0)?, r.get(1)?, r.get(2)?], n))))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Devices::tally(counted, limit))
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
pub(crate) fn site_totals(conn: &Connection, site: i64) -> rusqlite::Result<(i64, i64)> {
    let watermark = read_progress(conn)?.rolled_up_to;
    let one = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> rusqlite::Result<i64> {
        conn.prepare_cached(sql)?.query_row(params, |r| r.get(0))
    };
    if site == ALL_SITES {
        let (visits, unique): (i64, i64) = conn
            .prepare_cached("SELECT visits, unique_ips FROM totals WHERE id = 1")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let tail = one("SELECT count(*) FROM visits WHERE id >= ?1", &[&watermark])?;
        // Distinct IPs first, in key order: the probes then walk `ips` in its own order (as
        // `queries::whole_tail_by_page` does for `page_ips`).
        let new_ips = one(
            "SELECT count(*) FROM (SELECT ip FROM visits WHERE id >= ?1 GROUP BY ip) t
             WHERE NOT EXISTS (SELECT 1 FROM ips k WHERE k.ip = t.ip)",
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
        "SELECT count(*) FROM (
           SELECT v.ip FROM visits v JOIN pages p ON p.id = v.page_id
           WHERE v.id >= ?1 AND p.site_id = ?2 GROUP BY v.ip) t
         WHERE NOT EXISTS (SELECT 1 FROM site_ips k WHERE k.site_id = ?2 AND k.ip = t.ip)",
        &[&watermark, &site],
    )?;
    Ok((visits + tail, unique + new_ips))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Device, NewVisit};
    use crate::store::sqlite::open_reader;
    use crate::store::sqlite::test_support::{BOT, CHROME, Db, IPHONE, visit};

    /// An hour boundary the test times count from.
    const H0: i64 = 1_700_000_000_000 / HOUR_MS * HOUR_MS;
    const MIN: i64 = 60_000;
    /// "Now" of the reads: 10:30 after `H0`; a 4-hour window is hours 7 to 10.
    const NOW: i64 = H0 + 10 * HOUR_MS + 30 * MIN;
    const HOURS: i64 = 4;

    /// Visits to two sites: one before the window, one after it (a clock ahead), the rest in
    /// it, from the first minute of its first hour to its last.
    fn visits() -> Vec<NewVisit> {
        let tagged = "https://a.com/x?utm_source=news&utm_medium=email";
        let google = Some("https://www.google.com/");
        [
            (tagged, "10.0.0.1", CHROME, google, (6, 59)),
            (tagged, "10.0.0.1", CHROME, google, (7, 0)),
            ("https://a.com/y", "10.0.0.2", IPHONE, None, (8, 5)),
            (
                "https://a.com/y",
                "10.0.0.3",
                IPHONE,
                Some("news.ycombinator.com"),
                (9, 0),
            ),
            (
                "https://b.com/",
                "10.0.0.1",
                BOT,
                Some("https://google.com/"),
                (9, 30),
            ),
            (
                "https://b.com/?utm_campaign=spring",
                "10.0.0.4",
                CHROME,
                Some("https://a.com/"),
                (10, 10),
            ),
            (
                "https://a.com/x",
                "10.0.0.2",
                CHROME,
                Some("https://a.com/z"),
                (10, 59),
            ),
            ("https://b.com/", "10.0.0.5", IPHONE, None, (11, 0)),
        ]
        .into_iter()
        .map(|(url, ip, ua, referrer, (hour, minute))| {
            visit(url, ip, ua, referrer, H0 + hour * HOUR_MS + minute * MIN)
        })
        .collect()
    }

    /// Every answer of this module for `site`, read as the server's pool reads.
    fn answers(db: &Db, site: Option<&str>, limit: usize) -> (Sources, Devices, Hourly) {
        let conn = open_reader(&db.db).unwrap();
        (
            sources(&conn, NOW, HOURS, site, limit).unwrap(),
            devices(&conn, NOW, HOURS, site, limit).unwrap(),
            hourly(&conn, NOW, HOURS, site).unwrap(),
        )
    }

    fn list(items: &[(&str, i64)]) -> Vec<(String, i64)> {
        items.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect()
    }

    /// `visits()` stored with the first `rolled` of them rolled up and the rest in the tail.
    fn stored(rolled: usize) -> Db {
        let all = visits();
        let mut db = Db::new();
        db.write(&all[..rolled]);
        db.roll_up();
        db.write(&all[rolled..]);
        db
    }

    /// Every figure is the same whether the visits are rolled up, in the tail, or split
    /// between the two, and is what the visits say: those before and after the window's hours
    /// are left out of the window, not of the totals.
    #[test]
    fn dimensions_count_the_same_in_the_rollups_and_the_tail() {
        let bot = Device::parse(BOT);
        let mut os = vec![("Windows", 3), ("iOS", 2), (bot.os.as_str(), 1)];
        os.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let expected = (
            Sources {
                referrers: list(&[
                    ("(direct)", 2),
                    ("google.com", 2),
                    ("a.com", 1),
                    ("news.ycombinator.com", 1),
                ]),
                utm_source: list(&[("news", 1)]),
                utm_medium: list(&[("email", 1)]),
                utm_campaign: list(&[("spring", 1)]),
            },
            Devices {
                browsers: list(&[("Chrome", 3), ("Safari", 2), ("Other", 1)]),
                os: list(&os),
                device_types: list(&[("desktop", 3), ("mobile", 2), ("tablet", 0), ("bot", 1)]),
            },
            Hourly {
                by_hour: [(7, 1), (8, 1), (9, 2), (10, 2)]
                    .map(|(h, n)| (H0 / HOUR_MS + h, n))
                    .to_vec(),
                total_visits: 8,
                unique_ips: 5,
            },
        );
        for rolled in [0, 1, 2, 4, 7, 8] {
            let db = stored(rolled);
            assert_eq!(answers(&db, None, 10), expected, "{rolled} rolled up");
            assert!(db.mismatches().is_empty());
        }
    }

    #[test]
    fn a_site_filter_counts_that_site_only_and_an_unknown_site_nothing() {
        for rolled in [0, 3, 7, 8] {
            let db = stored(rolled);
            let (sources, devices, hourly) = answers(&db, Some("a.com"), 10);
            assert_eq!(
                sources.referrers,
                list(&[
                    ("(direct)", 2),
                    ("google.com", 1),
                    ("news.ycombinator.com", 1)
                ])
            );
            assert_eq!(sources.utm_campaign, list(&[]));
            assert_eq!(
                devices.device_types,
                list(&[("desktop", 2), ("mobile", 2), ("tablet", 0), ("bot", 0)])
            );
            let h = H0 / HOUR_MS;
            assert_eq!(
                hourly,
                Hourly {
                    by_hour: vec![(h + 7, 1), (h + 8, 1), (h + 9, 1), (h + 10, 1)],
                    total_visits: 5,
                    unique_ips: 3,
                }
            );
            let (_, _, b) = answers(&db, Some("b.com"), 10);
            assert_eq!((b.total_visits, b.unique_ips), (3, 3));
            assert_eq!(b.by_hour, vec![(h + 9, 1), (h + 10, 1)]);

            let (sources, devices, hourly) = answers(&db, Some("c.com"), 10);
            assert_eq!(sources, Sources::default());
            assert_eq!((devices.browsers.len(), devices.os.len()), (0, 0));
            assert_eq!(
                devices.device_types,
                list(&[("desktop", 0), ("mobile", 0), ("tablet", 0), ("bot", 0)])
            );
            assert_eq!(hourly, Hourly::default());
            // '' names the pseudo-site "all" in `sites`: not a site anyone asked for.
            assert_eq!(answers(&db, Some(""), 10).2, Hourly::default());
        }
    }

    #[test]
    fn lists_are_cut_to_the_limit_most_first_then_by_name() {
        let db = stored(4);
        let (sources, devices, _) = answers(&db, None, 1);
        assert_eq!(sources.referrers, list(&[("(direct)", 2)]));
        assert_eq!(devices.browsers, list(&[("Chrome", 3)]));
        // Device types are not a top list: all four, always.
        assert_eq!(devices.device_types.len(), 4);
        let (sources, devices, _) = answers(&db, None, 0);
        assert!(sources.referrers.is_empty() && devices.os.is_empty());
    }

    /// A cleanup takes its visits out of every new rollup exactly: the answers are those of a
    /// store that only ever held the remaining visits, and a recount finds no difference.
    #[test]
    fn cleanup_keeps_every_dimension_exact() {
        let cutoff = H0 + 9 * HOUR_MS;
        let all = visits();
        let kept: Vec<NewVisit> = all.iter().filter(|v| v.at >= cutoff).cloned().collect();
        let mut only_kept = Db::new();
        only_kept.write(&kept);
        for rolled in [0, 5, 8] {
            let mut db = stored(rolled);
            assert_eq!(db.cleanup(cutoff), 3);
            assert!(db.mismatches().is_empty(), "{:?}", db.mismatches());
            for site in [None, Some("a.com"), Some("b.com")] {
                assert_eq!(
                    answers(&db, site, 10),
                    answers(&only_kept, site, 10),
                    "{site:?}, {rolled} rolled up"
                );
            }
            let hourly = answers(&db, Some("a.com"), 10).2;
            assert_eq!((hourly.total_visits, hourly.unique_ips), (2, 2));
            // What was taken out is gone from the tables, not kept as zeros.
            let zeros: i64 = db
                .conns
                .rollups
                .query_row(
                    "SELECT (SELECT count(*) FROM site_hour_sources WHERE visits <= 0)
                          + (SELECT count(*) FROM site_hour_devices WHERE visits <= 0)
                          + (SELECT count(*) FROM site_totals WHERE visits <= 0)",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(zeros, 0);
        }
    }
}
