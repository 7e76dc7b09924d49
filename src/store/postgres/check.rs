//! The invariant the tests hold the PostgreSQL rollups to: every rollup table equals a recount
//! of the raw visits (and clicks) below the watermarks. Full scans: for tests and checks only.

use deadpool_postgres::Transaction;
use tokio_postgres::Error;

use super::queries::progress;

/// What each rollup table should hold, computed from `cv` (the counted visits) and `cc` (the
/// counted clicks), and what it holds.
const EXPECTED: &[(&str, &str, &str)] = &[
    (
        "totals",
        "SELECT (SELECT count(*) FROM cv), (SELECT count(DISTINCT ip) FROM cv)",
        "SELECT visits, unique_ips FROM totals",
    ),
    (
        "page_totals",
        "SELECT page_id, count(*), count(DISTINCT ip) FROM cv GROUP BY page_id",
        "SELECT page_id, visits, unique_ips FROM page_totals",
    ),
    (
        "page_ips",
        "SELECT page_id, ip, max(at) FROM cv GROUP BY page_id, ip",
        "SELECT page_id, ip, last_at FROM page_ips",
    ),
    (
        "ips",
        "SELECT ip, max(at) FROM cv GROUP BY ip",
        "SELECT ip, last_at FROM ips",
    ),
    (
        "page_hours",
        "SELECT page_id, footfall_fdiv(at, 3600000), count(*) FROM cv GROUP BY 1, 2",
        "SELECT page_id, hour, visits FROM page_hours",
    ),
    (
        "page_hour_agents",
        "SELECT footfall_fdiv(at, 3600000), page_id, agent_id, count(*) FROM cv GROUP BY 1, 2, 3",
        "SELECT hour, page_id, agent_id, visits FROM page_hour_agents",
    ),
    (
        "page_recent",
        "SELECT page_id, at, id, ip, agent_id FROM (
           SELECT *, row_number() OVER (PARTITION BY page_id ORDER BY at DESC, id DESC) AS rn
           FROM cv) x WHERE rn <= 20",
        // A page may hold older rows past its newest 20 until its next trim (`roller.rs`).
        "SELECT page_id, at, id, ip, agent_id FROM (
           SELECT *, row_number() OVER (PARTITION BY page_id ORDER BY at DESC, id DESC) AS rn
           FROM page_recent) x WHERE rn <= 20",
    ),
    (
        "site_totals",
        "SELECT p.site_id, count(*), count(DISTINCT v.ip) FROM cv v
         JOIN pages p ON p.id = v.page_id GROUP BY 1",
        "SELECT site_id, visits, unique_ips FROM site_totals",
    ),
    (
        "site_ips",
        "SELECT p.site_id, v.ip, max(v.at) FROM cv v JOIN pages p ON p.id = v.page_id GROUP BY 1, 2",
        "SELECT site_id, ip, last_at FROM site_ips",
    ),
    (
        "site_hour_sources",
        "SELECT s.site_id, footfall_fdiv(v.at, 3600000), v.source_id, count(*)
         FROM cv v JOIN pages p ON p.id = v.page_id
         CROSS JOIN LATERAL (VALUES (p.site_id), (0::bigint)) AS s(site_id) GROUP BY 1, 2, 3",
        "SELECT site_id, hour, source_id, visits FROM site_hour_sources",
    ),
    (
        "site_hour_devices",
        "SELECT s.site_id, footfall_fdiv(v.at, 3600000), v.device_id, count(*)
         FROM cv v JOIN pages p ON p.id = v.page_id
         CROSS JOIN LATERAL (VALUES (p.site_id), (0::bigint)) AS s(site_id) GROUP BY 1, 2, 3",
        "SELECT site_id, hour, device_id, visits FROM site_hour_devices",
    ),
    (
        "site_minutes",
        "SELECT site_id, event_id, minute, sum(n)::bigint FROM raw GROUP BY 1, 2, 3
         UNION ALL SELECT 0, event_id, minute, sum(n)::bigint FROM raw GROUP BY 2, 3",
        "SELECT site_id, event_id, minute, visits FROM site_minutes",
    ),
    (
        "site_hours",
        "SELECT site_id, event_id, footfall_fdiv(minute, 60), sum(n)::bigint FROM raw GROUP BY 1, 2, 3
         UNION ALL SELECT 0, event_id, footfall_fdiv(minute, 60), sum(n)::bigint FROM raw GROUP BY 2, 3",
        "SELECT site_id, event_id, hour, visits FROM site_hours",
    ),
    (
        "site_days",
        "SELECT site_id, event_id, footfall_fdiv(minute, 1440), sum(n)::bigint FROM raw GROUP BY 1, 2, 3
         UNION ALL SELECT 0, event_id, footfall_fdiv(minute, 1440), sum(n)::bigint FROM raw GROUP BY 2, 3",
        "SELECT site_id, event_id, day, visits FROM site_days",
    ),
];

/// Names of the rollup tables that differ from the recount (empty when all agree).
pub async fn check(tx: &Transaction<'_>) -> Result<Vec<String>, Error> {
    let (watermark, clicks_seq) = progress(tx).await?;
    let with = format!(
        "WITH cv AS (SELECT * FROM visits WHERE id <= {watermark}),
              raw(site_id, minute, event_id, n) AS (
                SELECT p.site_id, footfall_fdiv(v.at, 60000), v.event_id, 1::bigint
                FROM cv v JOIN pages p ON p.id = v.page_id
                UNION ALL
                SELECT site_id, minute, event_id, clicks FROM clicks WHERE seq <= {clicks_seq}),
              expected AS ({{expected}}), actual AS ({{actual}})"
    );
    let mut differ = Vec::new();
    for (table, expected, actual) in EXPECTED {
        let sql = format!(
            "{} SELECT (SELECT count(*) FROM (SELECT * FROM expected EXCEPT ALL SELECT * FROM actual) a)
                    + (SELECT count(*) FROM (SELECT * FROM actual EXCEPT ALL SELECT * FROM expected) b)",
            with.replace("{expected}", expected).replace("{actual}", actual)
        );
        let n: i64 = tx.query_one(sql.as_str(), &[]).await?.get(0);
        if n != 0 {
            differ.push((*table).to_owned());
        }
    }
    Ok(differ)
}
