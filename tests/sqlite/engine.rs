//! The rollup invariant: after any sequence of writes — live visits, imports with arbitrary
//! (out-of-order, duplicate) timestamps, cleanups, pre-counted clicks, pauses in which the writer
//! rolls its tail up — every rollup table equals what a rebuild from the raw rows below the
//! watermark gives, and the figures of the whole database equal a recount of every raw row.

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::common::TestApp;

const PAGES: &[&str] = &[
    "https://a.com/",
    "https://www.a.com/x?q=1",
    "https://b.org/p",
    "http://c.net:8080/",
    "https://b.org/q",
];
const IPS: &[&str] = &["10.0.0.1", "10.0.0.2", "2001:db8::1", "192.0.2.7"];
const AGENTS: &[&str] = &["UA-1", "UA-2", "Mozilla/5.0 (X11)"];
const EVENTS: &[&str] = &["pageview", "order", "signup"];

#[derive(Debug, Clone)]
enum Op {
    /// Live visits through /bulk-visits (time = now).
    Live(Vec<(usize, usize)>),
    /// Imported visits: (page, ip, agent, event, seconds before now).
    Import(Vec<(usize, usize, usize, usize, i64)>),
    Cleanup(i64),
    Clicks(usize, i64, i64),
    /// Long enough for the idle writer to roll the tail up.
    Pause,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        prop::collection::vec((0..PAGES.len(), 0..EVENTS.len()), 1..8).prop_map(Op::Live),
        prop::collection::vec(
            (
                0..PAGES.len(),
                0..IPS.len(),
                0..AGENTS.len(),
                0..EVENTS.len(),
                0i64..90 * 86_400
            ),
            1..30
        )
        .prop_map(Op::Import),
        (1i64..80).prop_map(Op::Cleanup),
        (0..PAGES.len(), 1i64..50, 0i64..3 * 86_400).prop_map(|(s, n, ago)| Op::Clicks(s, n, ago)),
        Just(Op::Pause),
    ]
}

async fn apply(app: &TestApp, op: &Op, now: i64) {
    match op {
        Op::Live(items) => {
            let body: Vec<Value> = items
                .iter()
                .map(|&(p, e)| json!({"url": PAGES[p], "event": EVENTS[e]}))
                .collect();
            let reply = app.post_json("/bulk-visits", &Value::Array(body)).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
        Op::Import(records) => {
            let jsonl: String = records
                .iter()
                .map(|&(p, i, a, e, ago)| {
                    let ts = footfall::domain::format_space((now - ago) * 1000);
                    format!(
                        "{}\n",
                        json!({"url": PAGES[p], "ip": IPS[i], "user_agent": AGENTS[a], "timestamp": ts, "event": EVENTS[e]})
                    )
                })
                .collect();
            let reply = app.post_raw("/import", "application/x-ndjson", jsonl).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            assert_eq!(reply.json()["imported"], records.len());
        }
        Op::Cleanup(days) => {
            let reply = app.delete(&format!("/cleanup?days={days}")).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
        Op::Pause => tokio::time::sleep(std::time::Duration::from_millis(60)).await,
        Op::Clicks(site, n, ago) => {
            let host = url::Url::parse(PAGES[*site])
                .unwrap()
                .host_str()
                .unwrap()
                .to_owned();
            let body = json!({"timestamp": now - ago, host: n});
            let reply = app.post_json("/domains", &body).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_rollup_equals_a_rebuild_from_the_raw_rows(ops in prop::collection::vec(op(), 1..12)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async {
            let app = TestApp::new();
            let now = chrono::Utc::now().timestamp();
            for op in &ops {
                apply(&app, op, now).await;
                let differ = app.rollup_mismatches().await;
                assert!(differ.is_empty(), "after {op:?}: rollups differ from the raw rows: {differ:?}");
                // Rollups plus tail: what the API answers, against a recount of every raw row.
                let conn = crate::conn(&app);
                let (visits, ips): (i64, i64) = conn
                    .query_row("SELECT count(*), count(DISTINCT ip) FROM visits", [], |r| Ok((r.get(0)?, r.get(1)?)))
                    .unwrap();
                let stats = app.get("/stats").await.json();
                assert_eq!(stats["total_visits"], visits, "after {op:?}");
                assert_eq!(stats["unique_visitors"], ips, "after {op:?}");
            }
        });
    }
}

/// Commits one visit per `(page, millis)` through `ingest` on the visits file's connection, in
/// one transaction, without rolling up: a tail, as a crash between a commit and its roll-up
/// leaves one.
fn write_raw(
    conns: &footfall::store::sqlite::WriteConns,
    ingest: &mut footfall::store::sqlite::ingest::Ingest,
    visits: &[(&str, i64)],
) {
    let from_one_ip: Vec<_> = visits.iter().map(|&(p, at)| (p, "10.0.0.1", at)).collect();
    write_raw_from(conns, ingest, &from_one_ip);
}

/// [`write_raw`] with each visit's client IP: `(page, ip, millis)`.
fn write_raw_from(
    conns: &footfall::store::sqlite::WriteConns,
    ingest: &mut footfall::store::sqlite::ingest::Ingest,
    visits: &[(&str, &str, i64)],
) {
    use footfall::domain::NewVisit;
    use footfall::domain::PageUrl;

    footfall::store::sqlite::immediate(&conns.raw, |conn| {
        ingest.begin(conn)?;
        for &(page, ip, at) in visits {
            let url = PageUrl::parse(page).unwrap();
            let visit = NewVisit::pageview(url, ip.parse().unwrap(), "UA".into(), at);
            ingest.add_visit(conn, &visit)?;
        }
        Ok::<_, rusqlite::Error>(())
    })
    .unwrap();
}

/// Visits counted by the rollups (`totals.visits`) and rows in `visits`.
fn counted_and_stored(conns: &footfall::store::sqlite::WriteConns) -> (i64, i64) {
    conns
        .rollups
        .query_row(
            "SELECT (SELECT visits FROM totals), (SELECT count(*) FROM raw.visits)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
}

/// A late visit (stored below the highest id) is counted exactly once: when the roll-up has
/// already passed its id (it is found through `late_visits`) and when it has not (it is in the
/// tail, and its log row is skipped).
#[test]
fn late_visits_are_counted_once_whether_or_not_the_roll_up_passed_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut conns = crate::write_conns(&dir.path().join("v.db"));
    let mut ingest = footfall::store::sqlite::ingest::Ingest::new();
    let now = footfall::domain::now_millis();
    write_raw(
        &conns,
        &mut ingest,
        &[("https://a.com/", now), ("https://a.com/", now + 10)],
    );
    conns.roll_up().unwrap();
    // Below the watermark, and between two tail visits above it.
    write_raw(
        &conns,
        &mut ingest,
        &[
            ("https://a.com/", now - 3_600_000),
            ("https://b.com/", now + 100),
        ],
    );
    write_raw(&conns, &mut ingest, &[("https://b.com/", now + 50)]);
    assert_eq!(ingest.late_logged(), 2);
    let done = conns.roll_up().unwrap();
    assert_eq!(done.visits, 3, "{done:?}");
    assert_eq!(counted_and_stored(&conns), (5, 5));
    assert!(
        footfall::store::sqlite::rollups::check(&conns.rollups)
            .unwrap()
            .is_empty()
    );
    // Nothing is counted twice by a later roll-up, after the log rows are gone or not.
    assert_eq!(conns.roll_up().unwrap().visits, 0);
    footfall::store::sqlite::ingest::prune_late(&conns.raw, done.late_seq).unwrap();
    assert_eq!(conns.roll_up().unwrap().visits, 0);
    assert_eq!(counted_and_stored(&conns), (5, 5));
}

/// A crash between cleanup's two transactions (the rollups took the visits out, the visits file
/// did not delete them yet) is finished when the file is next opened for writing, and a visit
/// stored later below the highest id ever stored is still late.
#[test]
fn a_cleanup_interrupted_between_its_two_files_is_finished_on_reopen() {
    use footfall::store::sqlite::rollups::{RollUpHints, check, take_out_before};

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("v.db");
    let now = footfall::domain::now_millis();
    let day = 86_400_000;
    {
        let mut conns = crate::write_conns(&db);
        let mut ingest = footfall::store::sqlite::ingest::Ingest::new();
        write_raw(
            &conns,
            &mut ingest,
            &[("https://a.com/", now - 3 * day), ("https://a.com/", now)],
        );
        conns.roll_up().unwrap();
        // Step 1 only, then the "crash".
        let taken = footfall::store::sqlite::immediate(&conns.rollups, |c| {
            take_out_before(c, &mut RollUpHints::default(), now - day)
        })
        .unwrap();
        assert_eq!(taken.visits, 1);
        assert_eq!(counted_and_stored(&conns), (1, 2));
    }
    let mut conns = crate::write_conns(&db);
    assert_eq!(
        counted_and_stored(&conns),
        (1, 1),
        "reopening finished the cleanup"
    );
    assert!(check(&conns.rollups).unwrap().is_empty());

    // The same, through the whole protocol, down to an empty file: the next visit, older than
    // the newest ever stored, must still be found by the roll-up.
    let deleted = footfall::store::sqlite::cleanup::run(
        &conns.raw,
        now + day,
        || {
            Ok(footfall::store::sqlite::rollups::read_progress(
                &conns.rollups,
            )?)
        },
        |cutoff| {
            Ok(footfall::store::sqlite::immediate(&conns.rollups, |c| {
                take_out_before(c, &mut RollUpHints::default(), cutoff)
            })?)
        },
    )
    .unwrap();
    assert_eq!(deleted, 1);
    assert_eq!(counted_and_stored(&conns), (0, 0));
    let mut ingest = footfall::store::sqlite::ingest::Ingest::new();
    write_raw(&conns, &mut ingest, &[("https://a.com/", now - day)]);
    assert_eq!(ingest.late_logged(), 1);
    conns.roll_up().unwrap();
    assert_eq!(counted_and_stored(&conns), (1, 1));
    assert!(check(&conns.rollups).unwrap().is_empty());

    // A rebuilt rollups file numbers its cleanups from 0 again, below the visits file's count:
    // an interrupted cleanup after that is still finished.
    drop(conns);
    std::fs::remove_file(footfall::store::sqlite::rollups_path(&db)).unwrap();
    let mut conns = crate::write_conns(&db);
    conns.roll_up().unwrap();
    footfall::store::sqlite::immediate(&conns.rollups, |c| {
        take_out_before(c, &mut RollUpHints::default(), now)
    })
    .unwrap();
    drop(conns);
    let conns = crate::write_conns(&db);
    assert_eq!(counted_and_stored(&conns), (0, 0));
    assert!(check(&conns.rollups).unwrap().is_empty());
}

/// A tail found in the file at startup (a crash between a commit and its roll-up) is rolled up
/// as soon as the server is idle, not only after its first write.
#[tokio::test]
async fn a_tail_found_at_startup_is_rolled_up_without_waiting_for_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.db");
    let conns = crate::write_conns(&path);
    let now = footfall::domain::now_millis();
    write_raw(
        &conns,
        &mut footfall::store::sqlite::ingest::Ingest::new(),
        &[
            ("https://a.com/1", now),
            ("https://a.com/2", now),
            ("https://a.com/3", now),
        ],
    );
    assert_eq!(counted_and_stored(&conns), (0, 3));

    let app = footfall::http::App::build(&footfall::config::ServeArgs::for_db(&path)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while counted_and_stored(&conns).0 < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        counted_and_stored(&conns),
        (3, 3),
        "the idle roll-up thread rolled the tail up"
    );
    assert!(
        footfall::store::sqlite::rollups::check(&conns.rollups)
            .unwrap()
            .is_empty()
    );
    drop(app);
}

/// A visits file of schema version 1 (rollups inside it) is migrated: the rollups move to their
/// own file, rebuilt from the raw rows, and the clicks keep counting.
#[test]
fn a_version_1_file_is_migrated_and_its_rollups_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("v.db");
    {
        let old = rusqlite::Connection::open(&db).unwrap();
        old.execute_batch(include_str!("../fixtures/schema_v1.sql"))
            .unwrap();
        old.execute_batch(
            "PRAGMA user_version = 1;
             INSERT INTO sites (id, name) VALUES (1, 'a.com');
             INSERT INTO pages (id, url, site_id) VALUES (1, 'https://a.com/', 1);
             INSERT INTO agents (id, ua) VALUES (1, 'UA');
             INSERT INTO visits VALUES (1 << 40, 1, x'0a000001', 1, 1), ((1 << 40) + 1, 1, x'0a000002', 1, 1);
             INSERT INTO site_clicks VALUES (1, 1000, 1, 7);",
        )
        .unwrap();
    }
    let mut conns = crate::write_conns(&db);
    let version: i64 = conns
        .raw
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, footfall::store::sqlite::SCHEMA_VERSION);
    // Version 3's table of bus event ids is there, empty.
    let ids: i64 = conns
        .raw
        .query_row("SELECT count(*) FROM event_ids", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ids, 0);
    // Opening rolls up a backlog of more than one roll-up at once; this one is left to the next
    // roll-up (the server's, once idle).
    assert_eq!(counted_and_stored(&conns), (0, 2));
    conns.roll_up().unwrap();
    assert_eq!(counted_and_stored(&conns), (2, 2));
    let (unique, clicks): (i64, i64) = conns
        .rollups
        .query_row(
            "SELECT (SELECT unique_ips FROM totals),
                    (SELECT sum(visits) FROM site_days WHERE site_id = 1)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((unique, clicks), (2, 9));
    assert!(
        footfall::store::sqlite::rollups::check(&conns.rollups)
            .unwrap()
            .is_empty()
    );
}

/// Recording never waits for the rollups: with the rollups file's write lock held by someone
/// else (a roll-up that takes long), visits are still acknowledged, and counted in every answer
/// from the tail; once the lock is released the roll-up catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_goes_on_while_the_rollups_file_is_locked() {
    let app = TestApp::new();
    let blocker =
        rusqlite::Connection::open(footfall::store::sqlite::rollups_path(&app.db)).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = std::time::Instant::now();
    for round in 0..5 {
        let body: Vec<Value> = (0..50)
            .map(|i| json!({"url": format!("https://a.com/{}", (round * 50 + i) % 7)}))
            .collect();
        let reply = app.post_json("/bulk-visits", &Value::Array(body)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        // Long enough for the idle roll-up to start, and block on the lock.
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "recording waited for the rollups: {:?}",
        started.elapsed()
    );
    assert_eq!(app.get("/stats").await.json()["total_visits"], 250);
    let counted = |conn: &rusqlite::Connection| -> i64 {
        conn.query_row("SELECT visits FROM rollups.totals", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(
        counted(&crate::conn(&app)),
        0,
        "nothing could be rolled up yet"
    );
    // The roll-up thread is blocked on an earlier round (or has not started): at least the last
    // round waits for it, and /metrics shows it.
    assert!(
        crate::sqlite(&app).roll_up_pending() >= 50,
        "{}",
        crate::sqlite(&app).roll_up_pending()
    );

    blocker.execute_batch("COMMIT").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // The blocked roll-up may count all 250 (its snapshot is taken once it has the lock); the
    // writes it saw pending are cleared by the next, idle, roll-up.
    while (counted(&crate::conn(&app)) < 250 || crate::sqlite(&app).roll_up_pending() > 0)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(counted(&crate::conn(&app)), 250);
    assert!(app.rollup_mismatches().await.is_empty());
    assert_eq!(crate::sqlite(&app).roll_up_pending(), 0);
    assert_eq!(app.get("/stats").await.json()["total_visits"], 250);
}

/// A file from a newer footfall is refused with a clear error, not opened and misread; the
/// same for its rollups file.
#[test]
fn a_file_with_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("v.db");
    let open = || footfall::store::sqlite::open_writer(&db, footfall::store::Durability::Normal);
    drop(open().unwrap());
    // The rollups file first: the visits file is checked before it.
    for (file, named) in [
        (footfall::store::sqlite::rollups_path(&db), "rollups file"),
        (db.clone(), "database"),
    ] {
        rusqlite::Connection::open(&file)
            .unwrap()
            .execute_batch("PRAGMA user_version = 99")
            .unwrap();
        let Err(err) = open() else {
            panic!("a {named} of schema version 99 was opened")
        };
        let err = format!("{err:#}");
        assert!(
            err.contains(&format!("{named} has schema version 99")),
            "{err}"
        );
    }
}

/// Rows of `page_recent` for one page.
fn recent_rows(conns: &footfall::store::sqlite::WriteConns, page: &str) -> i64 {
    conns
        .rollups
        .query_row(
            "SELECT count(*) FROM page_recent
             WHERE page_id = (SELECT id FROM raw.pages WHERE url = ?1)",
            [page],
            |r| r.get(0),
        )
        .unwrap()
}

/// `page_recent` is trimmed once a page may hold more than its newest 20 plus the slack, not at
/// every roll-up: between trims it keeps a few older visits, and every check (newest 20 equal
/// to a rebuild, every row a counted visit, none over the bound) holds after each roll-up.
#[test]
fn page_recent_keeps_its_newest_visits_between_lazy_trims() {
    use footfall::store::sqlite::rollups::{RECENT_PER_PAGE, RECENT_SLACK, check};

    let dir = tempfile::tempdir().unwrap();
    let mut conns = crate::write_conns(&dir.path().join("v.db"));
    let mut ingest = footfall::store::sqlite::ingest::Ingest::new();
    let page = "https://a.com/";
    let now = footfall::domain::now_millis();
    let mut most = 0;
    for i in 0..60 {
        // Two visits a roll-up, from new IPs.
        let (a, b) = (format!("10.1.0.{i}"), format!("10.2.0.{i}"));
        write_raw_from(
            &conns,
            &mut ingest,
            &[(page, &a, now + i * 10), (page, &b, now + i * 10 + 1)],
        );
        conns.roll_up().unwrap();
        assert!(
            check(&conns.rollups).unwrap().is_empty(),
            "after roll-up {i}"
        );
        most = most.max(recent_rows(&conns, page));
    }
    assert!(
        most > RECENT_PER_PAGE && most <= RECENT_PER_PAGE + RECENT_SLACK,
        "between trims a page keeps older rows, within the bound: {most}"
    );
}

/// Two connections rolling up the same rollups file (the server and `footfall import`, say)
/// each forget what they knew of `page_recent` when the other committed: neither trusts a bound
/// the other's rows made wrong, so no page grows past the bound.
#[test]
fn page_recent_stays_bounded_when_two_connections_roll_up() {
    use footfall::store::sqlite::rollups::check;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("v.db");
    let mut first = crate::write_conns(&db);
    let mut second = crate::write_conns(&db);
    let mut ingest = footfall::store::sqlite::ingest::Ingest::new();
    let page = "https://a.com/";
    let now = footfall::domain::now_millis();
    for round in 0..8i64 {
        let conns = if round % 2 == 0 {
            &mut first
        } else {
            &mut second
        };
        let ips: Vec<String> = (0..9).map(|i| format!("10.{round}.0.{i}")).collect();
        let visits: Vec<(&str, &str, i64)> = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| (page, ip.as_str(), now + round * 100 + i as i64))
            .collect();
        write_raw_from(conns, &mut ingest, &visits);
        conns.roll_up().unwrap();
        assert!(
            check(&conns.rollups).unwrap().is_empty(),
            "after round {round}: {} rows",
            recent_rows(conns, page)
        );
    }
}
#[test]
fn an_export_stops_its_cursor_when_the_reader_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("v.db");
    let now = chrono::Utc::now().timestamp();
    let rows: String = (0..20_000)
        .map(|i| {
            let ts = footfall::domain::format_space((now - i) * 1000);
            format!("{}\n", json!({"url": format!("https://a.com/{}", i % 50), "ip": "10.0.0.1", "timestamp": ts}))
        })
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = crate::common::open_store(&db);
        let reader = std::io::Cursor::new(rows.into_bytes());
        footfall::cli::import_into(&store, &Default::default(), reader, false)
            .await
            .unwrap();
        store.close().await;
    });
    let conns = crate::write_conns(&db);
    let conn = &conns.raw;
    let filter = footfall::domain::export::FilterParams::default()
        .parse()
        .unwrap();
    let mut chunks = 0;
    // The reader takes one chunk, then disconnects.
    let written = footfall::store::sqlite::export::export(
        conn,
        &filter,
        footfall::domain::export::ExportFormat::Jsonl,
        |_| {
            chunks += 1;
            false
        },
    )
    .unwrap();
    assert_eq!(chunks, 1);
    assert!(
        written < 2_000,
        "the cursor went on after the reader left: {written} rows"
    );
    let all = footfall::store::sqlite::export::export(
        conn,
        &filter,
        footfall::domain::export::ExportFormat::Jsonl,
        |_| true,
    )
    .unwrap();
    assert_eq!(all, 20_000);
}
