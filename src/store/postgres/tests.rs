//! The PostgreSQL side of API.md §12: sources, devices and hourly figures from the rollups and
//! the tail alike, cleanup, the upgrade from schema version 1, and the daily salt. Each test
//! makes a database of its own on `FOOTFALL_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432`) and drops it afterwards.

use std::borrow::Cow;

use tokio_postgres::NoTls;

use super::PostgresStore;
use super::roller::ROLLER_LOCK;
use crate::domain::export::{ExportFilter, ExportFormat};
use crate::domain::{DEFAULT_EVENT, HOUR_MS, NewVisit, PageUrl, Source, UNKNOWN, Visitor};
use crate::store::{Dumped, Options};

fn server() -> String {
    std::env::var("FOOTFALL_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Runs `sql` on database `db` of the test server.
async fn sql(db: &str, sql: &str) {
    let (client, connection) = tokio_postgres::connect(&format!("{}/{db}", server()), NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client.batch_execute(sql).await.unwrap();
}

/// A fresh database, dropped when this goes out of scope.
struct Database {
    name: String,
}

impl Database {
    async fn new() -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "footfall_dims_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            crate::domain::now_millis()
        );
        sql("postgres", &format!("CREATE DATABASE {name}")).await;
        Self { name }
    }

    fn url(&self) -> String {
        format!("{}/{}", server(), self.name)
    }

    fn open(&self) -> PostgresStore {
        PostgresStore::open(&self.url(), &Options::default()).unwrap()
    }

    /// A connection to the database that holds the roller election: the stores opened on it
    /// never roll up by themselves, so visits stay in the tail until a test rolls them up.
    async fn hold_roller(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(), NoTls).await.unwrap();
        tokio::spawn(connection);
        client
            .execute("SELECT pg_advisory_lock($1)", &[&ROLLER_LOCK])
            .await
            .unwrap();
        client
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Dropped inside a test's runtime: run the DROP on a runtime of its own.
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(sql(
                "postgres",
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            ))
        })
        .join()
        .unwrap();
    }
}

/// Not on the hour: the window's first hour starts less than `hours` hours before now.
const NOW: i64 = 1_764_806_400_000 + 30 * 60_000;

const CHROME_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1";
const CHROME_TABLET: &str = "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const FIREFOX_LINUX: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

fn visit(url: &str, referrer: Option<&str>, ua: &str, ip: &str, at: i64) -> NewVisit {
    let url = PageUrl::parse(url).unwrap();
    NewVisit {
        source: Source::of(&url, referrer),
        url,
        ip: Visitor::parse(ip).unwrap(),
        user_agent: ua.into(),
        event: Cow::Borrowed(DEFAULT_EVENT),
        at,
        stamped_on_arrival: false,
    }
}

/// Ten visits: eight to a.example (two before the window of 24 hours, one in its first hour),
/// two to b.example.
fn sample() -> Vec<NewVisit> {
    let tagged = "https://a.example/launch?utm_source=news&utm_medium=social&utm_campaign=launch";
    let hn = Some("https://news.ycombinator.com/item?id=1");
    vec![
        visit(tagged, hn, CHROME_WINDOWS, "10.0.0.1", NOW - HOUR_MS),
        visit(tagged, hn, CHROME_WINDOWS, "10.0.0.2", NOW - 2 * HOUR_MS),
        visit(tagged, hn, CHROME_WINDOWS, "10.0.0.1", NOW - 3 * HOUR_MS),
        visit(
            "https://a.example/",
            None,
            SAFARI_IPHONE,
            "10.0.0.3",
            NOW - 60_000,
        ),
        // Its own site as referrer: direct.
        visit(
            "https://a.example/about",
            Some("https://a.example/"),
            SAFARI_IPHONE,
            "h:00ff00ff00ff00ff",
            NOW,
        ),
        // In the window's first hour (of 24), more than 23 hours before now.
        visit(
            "https://a.example/",
            Some("https://www.bing.com/search?q=x"),
            GOOGLEBOT,
            "2001:db8::1",
            NOW - 23 * HOUR_MS - 20 * 60_000,
        ),
        // Less than 24 hours before now, but in the hour before the window's first.
        visit(
            "https://a.example/",
            Some("https://google.com/"),
            FIREFOX_LINUX,
            "10.0.0.4",
            NOW - 24 * HOUR_MS + 10 * 60_000,
        ),
        visit(
            "https://a.example/",
            Some("https://google.com/"),
            FIREFOX_LINUX,
            "10.0.0.4",
            NOW - 100 * HOUR_MS,
        ),
        visit(
            "https://b.example/",
            Some("https://t.co/x"),
            CHROME_TABLET,
            "10.0.0.1",
            NOW - HOUR_MS,
        ),
        visit(
            "https://b.example/",
            Some("https://t.co/y"),
            CHROME_TABLET,
            "10.0.0.5",
            NOW - 5 * HOUR_MS,
        ),
    ]
}

fn list(items: &[(&str, i64)], times: i64) -> Vec<(String, i64)> {
    items
        .iter()
        .map(|(k, n)| ((*k).to_owned(), n * times))
        .collect()
}

/// Every rollup table equals what the visits give, counted from scratch (`check.rs`).
async fn assert_rollups_exact(store: &PostgresStore) {
    assert_eq!(
        store.rollup_mismatches().await.unwrap(),
        Vec::<String>::new()
    );
}

/// What the sample gives, `times` over (the sample recorded that many times).
async fn assert_sample_figures(store: &PostgresStore, times: i64) {
    let all = store.sources(NOW, 24, None, 10).await.unwrap();
    assert_eq!(
        all.referrers,
        list(
            &[
                ("news.ycombinator.com", 3),
                ("(direct)", 2),
                ("t.co", 2),
                ("bing.com", 1)
            ],
            times
        )
    );
    assert_eq!(all.utm_source, list(&[("news", 3)], times));
    assert_eq!(all.utm_medium, list(&[("social", 3)], times));
    assert_eq!(all.utm_campaign, list(&[("launch", 3)], times));

    let devices = store.devices(NOW, 24, None, 10).await.unwrap();
    assert_eq!(
        devices.browsers,
        list(&[("Chrome", 5), ("Safari", 2), ("Other", 1)], times)
    );
    assert_eq!(
        devices.os,
        list(
            &[("Windows", 3), ("Android", 2), ("iOS", 2), ("Other", 1)],
            times
        )
    );
    assert_eq!(
        devices.device_types,
        list(
            &[("desktop", 3), ("mobile", 2), ("tablet", 2), ("bot", 1)],
            times
        )
    );

    let a = store
        .sources(NOW, 24, Some("a.example".into()), 10)
        .await
        .unwrap();
    assert_eq!(
        a.referrers,
        list(
            &[
                ("news.ycombinator.com", 3),
                ("(direct)", 2),
                ("bing.com", 1)
            ],
            times
        )
    );
    let b = store
        .devices(NOW, 24, Some("b.example".into()), 10)
        .await
        .unwrap();
    assert_eq!(b.browsers, list(&[("Chrome", 2)], times));
    assert_eq!(
        b.device_types,
        list(
            &[("desktop", 0), ("mobile", 0), ("tablet", 2), ("bot", 0)],
            times
        )
    );
    let top = store.sources(NOW, 24, None, 2).await.unwrap();
    assert_eq!(
        top.referrers,
        list(&[("news.ycombinator.com", 3), ("(direct)", 2)], times)
    );
    // A wider window reaches the visits before this one.
    let wide = store
        .sources(NOW, 101, Some("a.example".into()), 10)
        .await
        .unwrap();
    assert_eq!(
        wide.referrers[0],
        ("news.ycombinator.com".into(), 3 * times)
    );
    assert!(wide.referrers.contains(&("google.com".into(), 2 * times)));

    let hour = |h: i64| (NOW - h * HOUR_MS).div_euclid(HOUR_MS);
    let hourly = store.hourly(NOW, 24, None).await.unwrap();
    let mut expected = vec![
        (hour(23), 1),
        (hour(5), 1),
        (hour(3), 1),
        (hour(2), 1),
        (hour(1), 2),
        (hour(0), 2),
    ];
    expected.iter_mut().for_each(|(_, n)| *n *= times);
    assert_eq!(hourly.by_hour, expected);
    assert_eq!(hourly.total_visits, 10 * times);
    // 10.0.0.1-5, a pseudonym, an IPv6 address: recording the sample again adds no visitor.
    assert_eq!(hourly.unique_ips, 7);
    let a = store
        .hourly(NOW, 24, Some("a.example".into()))
        .await
        .unwrap();
    assert_eq!(a.total_visits, 8 * times);
    assert_eq!(a.unique_ips, 6);
    assert_eq!(a.by_hour.first(), Some(&(hour(23), times)));
    let b = store
        .hourly(NOW, 24, Some("b.example".into()))
        .await
        .unwrap();
    assert_eq!(b.total_visits, 2 * times);
    assert_eq!(b.unique_ips, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn dimensions_count_alike_from_the_rollups_and_the_tail() {
    let db = Database::new().await;
    let _election = db.hold_roller().await;
    let store = db.open();
    store.record_many(sample()).await.unwrap();
    // All in the tail.
    assert_sample_figures(&store, 1).await;
    store.roll_up_now().await.unwrap();
    // All in the rollups.
    assert_sample_figures(&store, 1).await;
    store.record_many(sample()).await.unwrap();
    // Half and half.
    assert_sample_figures(&store, 2).await;
    store.roll_up_now().await.unwrap();
    assert_sample_figures(&store, 2).await;
    assert_rollups_exact(&store).await;
    store.close().await;
}

/// A visitor seen again in a later roll-up is not new, and its last visit moves forward in
/// every distinct-visitor table (cleanup relies on it); one seen again with an older time
/// leaves it where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn a_returning_visitor_moves_its_last_visit_forward_and_counts_once() {
    let db = Database::new().await;
    let _election = db.hold_roller().await;
    let store = db.open();
    let page = "https://a.example/";
    for (ip, at) in [
        ("10.0.0.1", NOW - 3 * HOUR_MS),
        ("10.0.0.1", NOW - HOUR_MS),
        ("10.0.0.2", NOW - HOUR_MS),
        ("10.0.0.1", NOW - 2 * HOUR_MS),
    ] {
        store
            .record_many(vec![visit(page, None, CHROME_WINDOWS, ip, at)])
            .await
            .unwrap();
        store.roll_up_now().await.unwrap();
        assert_rollups_exact(&store).await;
    }
    let stats = store.site_stats().await.unwrap();
    assert_eq!((stats.total_visits, stats.unique_visitors), (4, 2));
    store.close().await;
}

/// A page's newest visits stay exactly its newest 20 across roll-ups, when new visits push
/// old ones out and when a late visit is older than all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn page_recent_keeps_the_newest_twenty_across_roll_ups() {
    let db = Database::new().await;
    let _election = db.hold_roller().await;
    let store = db.open();
    let (busy, quiet) = ("https://a.example/busy", "https://a.example/quiet");
    for round in 0..4i64 {
        let mut visits: Vec<NewVisit> = (0..15i64)
            .map(|i| {
                let at = NOW - 10 * HOUR_MS + (round * 15 + i) * 60_000;
                visit(busy, None, CHROME_WINDOWS, &format!("10.0.{round}.{i}"), at)
            })
            .collect();
        // A late visit, older than everything kept, and a page that never reaches 20.
        visits.push(visit(
            busy,
            None,
            CHROME_WINDOWS,
            "10.9.9.9",
            NOW - 20 * HOUR_MS,
        ));
        visits.push(visit(
            quiet,
            None,
            CHROME_WINDOWS,
            "10.8.8.8",
            NOW - round * HOUR_MS,
        ));
        store.record_many(visits).await.unwrap();
        store.roll_up_now().await.unwrap();
        assert_eq!(
            store.rollup_mismatches().await.unwrap(),
            Vec::<String>::new(),
            "round {round}"
        );
    }
    let stats = store
        .url_stats(PageUrl::parse(busy).unwrap(), NOW, 24)
        .await
        .unwrap();
    assert_eq!(stats.recent_visits.len(), 20);
    assert_eq!(stats.recent_visits[0].at, NOW - 10 * HOUR_MS + 59 * 60_000);
    // Trimmed whenever its visits passed a multiple of 10 (32, 48, 64): then 3 more visits
    // (67) are kept beside the newest 20 until the next trim, and readers still see the 20.
    let (client, connection) = tokio_postgres::connect(&db.url(), NoTls).await.unwrap();
    tokio::spawn(connection);
    let rows = || async {
        let sql = "SELECT count(*) FROM page_recent r JOIN pages p ON p.id = r.page_id
                   WHERE p.url = $1";
        client
            .query_one(sql, &[&busy])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    assert_eq!(rows().await, 20);
    let newer: Vec<NewVisit> = (0..3i64)
        .map(|i| visit(busy, None, CHROME_WINDOWS, "10.7.7.7", NOW - HOUR_MS + i))
        .collect();
    store.record_many(newer).await.unwrap();
    store.roll_up_now().await.unwrap();
    assert_eq!(rows().await, 23);
    assert_rollups_exact(&store).await;
    let stats = store
        .url_stats(PageUrl::parse(busy).unwrap(), NOW, 24)
        .await
        .unwrap();
    assert_eq!(stats.recent_visits.len(), 20);
    assert_eq!(stats.recent_visits[0].at, NOW - HOUR_MS + 2);
    store.close().await;
}

/// A batch whose every dimension the node has cached is one bare `COPY`; one that brings a new
/// page goes through the transaction that adds it. Both land in the same figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn batches_of_known_and_of_new_dimensions_both_land() {
    let db = Database::new().await;
    let store = db.open();
    // New dimensions, then the same ones known.
    assert_eq!(store.record_many(sample()).await.unwrap(), 10);
    assert_eq!(store.record_many(sample()).await.unwrap(), 10);
    assert_sample_figures(&store, 2).await;
    // Known dimensions beside a new page.
    let mut mixed = sample();
    mixed.push(visit(
        "https://a.example/new",
        None,
        CHROME_WINDOWS,
        "10.0.0.9",
        NOW - HOUR_MS,
    ));
    assert_eq!(store.record_many(mixed).await.unwrap(), 11);
    let page = store
        .url_stats(PageUrl::parse("https://a.example/new").unwrap(), NOW, 24)
        .await
        .unwrap();
    assert_eq!(page.total_visits, 1);
    store.roll_up_now().await.unwrap();
    assert_rollups_exact(&store).await;
    assert_eq!(store.site_stats().await.unwrap().total_visits, 31);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn two_nodes_adding_the_same_new_dimensions_at_once_agree_on_their_ids() {
    let db = Database::new().await;
    let (one, two) = (db.open(), db.open());
    // Both nodes meet every source and device for the first time, in concurrent batches.
    async fn record(store: &PostgresStore) -> Vec<crate::store::Result<usize>> {
        futures_util::future::join_all((0..10).map(|_| store.record_many(sample()))).await
    }
    let (a, b) = tokio::join!(record(&one), record(&two));
    for n in a.into_iter().chain(b) {
        assert_eq!(n.unwrap(), 10);
    }
    assert_sample_figures(&one, 20).await;
    assert_sample_figures(&two, 20).await;
    one.roll_up_now().await.unwrap();
    assert_sample_figures(&two, 20).await;
    assert_rollups_exact(&one).await;
    let (client, connection) = tokio_postgres::connect(&db.url(), NoTls).await.unwrap();
    tokio::spawn(connection);
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    // One row per distinct value (and the unknown row): the sample has 5 of each.
    assert_eq!(count("SELECT count(*) FROM sources").await, 6);
    assert_eq!(count("SELECT count(*) FROM devices").await, 6);
    one.close().await;
    two.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn an_unknown_site_has_empty_lists_and_zeros() {
    let db = Database::new().await;
    let store = db.open();
    store.record_many(sample()).await.unwrap();
    let site = Some("nowhere.example".to_owned());
    assert_eq!(
        store.sources(NOW, 24, site.clone(), 10).await.unwrap(),
        Default::default()
    );
    let devices = store.devices(NOW, 24, site.clone(), 10).await.unwrap();
    assert!(devices.browsers.is_empty() && devices.os.is_empty());
    assert_eq!(
        devices.device_types,
        list(
            &[("desktop", 0), ("mobile", 0), ("tablet", 0), ("bot", 0)],
            1
        )
    );
    assert_eq!(
        store.hourly(NOW, 24, site).await.unwrap(),
        Default::default()
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn cleanup_takes_visits_out_of_the_new_rollups_exactly() {
    let db = Database::new().await;
    let _election = db.hold_roller().await;
    let store = db.open();
    store.record_many(sample()).await.unwrap();
    store.roll_up_now().await.unwrap();
    store.record_many(sample()).await.unwrap();
    // Cleanup rolls the tail up first, then deletes: the two oldest of each copy go
    // (10.0.0.4's visits), and with them that visitor.
    let deleted = store
        .cleanup(NOW - 23 * HOUR_MS - 30 * 60_000)
        .await
        .unwrap();
    assert_eq!(deleted, 4);
    assert_rollups_exact(&store).await;
    let all = store.hourly(NOW, 24, None).await.unwrap();
    assert_eq!((all.total_visits, all.unique_ips), (16, 6));
    let a = store
        .hourly(NOW, 24, Some("a.example".into()))
        .await
        .unwrap();
    assert_eq!((a.total_visits, a.unique_ips), (12, 5));
    // The window's figures are untouched: nothing deleted was in it.
    let sources = store.sources(NOW, 24, None, 10).await.unwrap();
    assert_eq!(sources.referrers[0], ("news.ycombinator.com".into(), 6));
    // Everything older than the newest visit: the new rollups empty out with the visits.
    store.cleanup(NOW + 1).await.unwrap();
    assert_rollups_exact(&store).await;
    let all = store.hourly(NOW, 24, None).await.unwrap();
    assert_eq!(all, Default::default());
    assert_eq!(
        store.sources(NOW, 24, None, 10).await.unwrap(),
        Default::default()
    );
    store.close().await;
}

/// Undoes schema version 2 by hand: the database is then as version 1 left it (visits, v1
/// rollups and progress as that version's roller made them), bar the dropped columns.
const BACK_TO_V1: &str = "
    DROP TABLE sources, devices, salts, site_hour_sources, site_hour_devices, site_totals,
               site_ips;
    ALTER TABLE visits DROP COLUMN source_id, DROP COLUMN device_id;
    UPDATE footfall_schema SET version = 1;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn a_version_1_database_upgrades_and_its_visits_show_as_unknown() {
    let db = Database::new().await;
    let election = db.hold_roller().await;
    let store = db.open();
    store.record_many(sample()).await.unwrap();
    store.roll_up_now().await.unwrap();
    // And a tail the upgrade must leave to the roller.
    store.record_many(sample()).await.unwrap();
    drop(store);
    sql(&db.name, BACK_TO_V1).await;

    let store = db.open();
    let version: i32 = election
        .query_one("SELECT version FROM footfall_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 2);
    let unknown = list(&[(UNKNOWN, 16)], 1);
    for rolled in [false, true] {
        if rolled {
            store.roll_up_now().await.unwrap();
            assert_rollups_exact(&store).await;
        }
        let sources = store.sources(NOW, 24, None, 10).await.unwrap();
        assert_eq!(sources.referrers, unknown, "rolled up: {rolled}");
        assert_eq!(sources.utm_source, unknown);
        assert_eq!(sources.utm_campaign, unknown);
        let devices = store.devices(NOW, 24, None, 10).await.unwrap();
        assert_eq!(devices.browsers, unknown);
        assert_eq!(devices.os, unknown);
        assert_eq!(
            devices.device_types,
            list(
                &[
                    ("desktop", 0),
                    ("mobile", 0),
                    ("tablet", 0),
                    ("bot", 0),
                    (UNKNOWN, 16)
                ],
                1
            )
        );
        let hourly = store.hourly(NOW, 24, None).await.unwrap();
        assert_eq!((hourly.total_visits, hourly.unique_ips), (20, 7));
        assert_eq!(hourly.by_hour.iter().map(|h| h.1).sum::<i64>(), 16);
        let a = store
            .hourly(NOW, 24, Some("a.example".into()))
            .await
            .unwrap();
        assert_eq!((a.total_visits, a.unique_ips), (16, 6));
    }
    // New visits have their dimensions beside the old ones'.
    store.record_many(sample()).await.unwrap();
    let sources = store.sources(NOW, 24, None, 10).await.unwrap();
    assert_eq!(sources.referrers[0], (UNKNOWN.into(), 16));
    assert_eq!(sources.referrers[1], ("news.ycombinator.com".into(), 3));
    store.roll_up_now().await.unwrap();
    assert_rollups_exact(&store).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn a_database_made_from_the_shipped_v1_sql_upgrades() {
    let db = Database::new().await;
    // Version 1 exactly as shipped, with visits written by hand and never rolled up.
    sql(
        &db.name,
        &format!(
            "{}
             CREATE TABLE footfall_schema (version integer NOT NULL);
             INSERT INTO footfall_schema VALUES (1);
             INSERT INTO sites (name) VALUES ('a.example');
             INSERT INTO pages (url, site_id) SELECT 'https://a.example/', id FROM sites
               WHERE name = 'a.example';
             INSERT INTO agents (ua) VALUES ('curl/8');
             INSERT INTO visits (at, page_id, ip, agent_id, event_id)
             SELECT at, (SELECT id FROM pages), ip::bytea, (SELECT id FROM agents), 1
             FROM (VALUES ({NOW}, '\\x0a000001'), ({NOW}, '\\x0a000002'),
                          ({}, '\\x0a000001')) AS v(at, ip);",
            super::schema::SCHEMA,
            NOW - HOUR_MS
        ),
    )
    .await;
    let store = db.open();
    store.roll_up_now().await.unwrap();
    assert_rollups_exact(&store).await;
    let sources = store
        .sources(NOW, 24, Some("a.example".into()), 10)
        .await
        .unwrap();
    assert_eq!(sources.referrers, list(&[(UNKNOWN, 3)], 1));
    let hourly = store.hourly(NOW, 24, None).await.unwrap();
    let hour = NOW.div_euclid(HOUR_MS);
    assert_eq!(hourly.by_hour, vec![(hour - 1, 1), (hour, 2)]);
    assert_eq!((hourly.total_visits, hourly.unique_ips), (3, 2));
    // A visit recorded now gets the next ids of every dimension.
    store.record_many(sample()).await.unwrap();
    let a = store
        .hourly(NOW, 24, Some("a.example".into()))
        .await
        .unwrap();
    assert_eq!((a.total_visits, a.unique_ips), (11, 6));
    store.roll_up_now().await.unwrap();
    assert_rollups_exact(&store).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn two_stores_on_one_database_agree_on_the_daily_salt() {
    let db = Database::new().await;
    let (one, two) = (db.open(), db.open());
    let day = NOW.div_euclid(86_400_000);
    let (a, b) = tokio::join!(one.daily_salt(day), two.daily_salt(day));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b);
    assert_ne!(a, [0; 16]);
    assert_eq!(one.daily_salt(day).await.unwrap(), a);
    let next = two.daily_salt(day + 1).await.unwrap();
    assert_ne!(next, a);
    // Yesterday's salt is kept; the day before yesterday's is deleted.
    assert_eq!(one.daily_salt(day).await.unwrap(), a);
    two.daily_salt(day + 2).await.unwrap();
    let (client, connection) = tokio_postgres::connect(&db.url(), NoTls).await.unwrap();
    tokio::spawn(connection);
    let days: Vec<i64> = client
        .query("SELECT day FROM salts ORDER BY day", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(days, vec![day + 1, day + 2]);
    one.close().await;
    two.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn exports_show_pseudonyms_and_dumps_carry_sources() {
    let db = Database::new().await;
    let store = db.open();
    store.record_many(sample()).await.unwrap();
    let filter = ExportFilter {
        from: 0,
        to: None,
        limit: None,
        offset: 0,
    };
    let mut stream = store.export(filter, ExportFormat::Csv);
    let mut csv = Vec::new();
    while let Some(chunk) = stream.recv().await {
        csv.extend_from_slice(&chunk);
    }
    let csv = String::from_utf8(csv).unwrap();
    assert!(
        csv.contains("https://a.example/about,h:00ff00ff00ff00ff,"),
        "{csv}"
    );
    assert!(csv.contains(",2001:db8::1,"), "{csv}");

    let mut dump = store.dump();
    let mut visits = Vec::new();
    while let Some(part) = dump.recv().await {
        if let Dumped::Visits(v) = part.unwrap() {
            visits.extend(v);
        }
    }
    let sample = sample();
    assert_eq!(visits.len(), sample.len());
    for (got, want) in visits.iter().zip(&sample) {
        assert_eq!(got.source, want.source);
        assert_eq!(got.ip, want.ip);
        assert_eq!(got.at, want.at);
    }
    assert_eq!(
        visits[4].ip,
        Visitor::Pseudonym(0x00ff_00ff_00ff_00ff),
        "the pseudonym survives a copy"
    );
    store.close().await;
}

/// `sslmode` as libpq reads it, against the test server (which must offer TLS, as Debian's
/// PostgreSQL does with its snake-oil certificate; `.ci/run` starts its own server so): with
/// `require` every connection of the store is encrypted and everything works as without; by
/// default, on loopback, none is; `verify-full` refuses a certificate that does not name the
/// host, with a line that says so, and `verify-ca` takes one a trusted authority signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL with TLS"]
async fn sslmode_require_encrypts_every_connection_and_verify_full_checks() {
    let db = Database::new().await;
    let (client, connection) = tokio_postgres::connect(&db.url(), NoTls).await.unwrap();
    tokio::spawn(connection);
    let encrypted = |name: &'static str| {
        let (client, db) = (&client, db.name.clone());
        async move {
            let rows = client
                .query(
                    "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                     WHERE a.datname = $1 AND a.application_name = $2",
                    &[&db, &name],
                )
                .await
                .unwrap();
            rows.iter().map(|r| r.get::<_, bool>(0)).collect::<Vec<_>>()
        }
    };

    let store = PostgresStore::open(
        &format!("{}?sslmode=require&application_name=tls", db.url()),
        &Options::default(),
    )
    .unwrap();
    store.record_many(sample()).await.unwrap();
    store.roll_up_now().await.unwrap();
    assert_sample_figures(&store, 1).await;
    let seen = encrypted("tls").await;
    assert!(!seen.is_empty() && seen.iter().all(|&ssl| ssl), "{seen:?}");
    store.close().await;

    let store = PostgresStore::open(
        &format!("{}?application_name=plain", db.url()),
        &Options::default(),
    )
    .unwrap();
    assert_sample_figures(&store, 1).await;
    let seen = encrypted("plain").await;
    assert!(!seen.is_empty() && seen.iter().all(|&ssl| !ssl), "{seen:?}");
    store.close().await;

    let refused = PostgresStore::open(
        &format!("{}?sslmode=verify-full", db.url()),
        &Options::default(),
    )
    .expect_err("the test server's certificate does not name 127.0.0.1")
    .to_string();
    assert!(refused.contains("certificate"), "{refused}");

    // Trusted, the server's own (self-signed) certificate passes `verify-ca`, which does not
    // ask it to name 127.0.0.1; `verify-full` does.
    let cert: String = client
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .unwrap()
        .get(0);
    let trusted = |mode: &str| {
        PostgresStore::open(
            &format!("{}?sslmode={mode}&sslrootcert={cert}", db.url()),
            &Options::default(),
        )
    };
    let store = trusted("verify-ca").unwrap();
    assert_sample_figures(&store, 1).await;
    store.close().await;
    let refused = trusted("verify-full").expect_err("no name").to_string();
    assert!(refused.contains("certificate"), "{refused}");
}
