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
                let differ = app.rollup_mismatches();
                assert!(differ.is_empty(), "after {op:?}: rollups differ from the raw rows: {differ:?}");
                // Rollups plus tail: what the API answers, against a recount of every raw row.
                let conn = app.conn();
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

/// Commits `n` visits through `ingest` on `conn` without rolling them up: a tail, as a crash
/// between a commit and its roll-up leaves one.
fn write_tail(conn: &rusqlite::Connection, ingest: &mut footfall::store::ingest::Ingest, n: usize) {
    use footfall::domain::{PageUrl, now_millis};
    use footfall::store::ingest::NewVisit;
    use footfall::store::rollups::RollupDelta;

    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    ingest.begin(conn).unwrap();
    let mut delta = RollupDelta::default();
    for i in 0..n {
        let url = PageUrl::parse(&format!("https://a.com/{i}")).unwrap();
        let visit = NewVisit::pageview(url, "10.0.0.1".parse().unwrap(), "UA".into(), now_millis());
        ingest.add_visit(conn, &mut delta, &visit).unwrap();
    }
    delta.apply(conn).unwrap();
    conn.execute_batch("COMMIT").unwrap();
}

/// The writer decides when to roll up from its count of the tail. When another process rolls
/// that tail up first (`footfall import`/`cleanup` beside the server), the count must drop to
/// zero: a count left behind had the idle writer start an empty roll-up transaction, over and
/// over, forever. And a writer starting on a file with a tail (left by a crash) counts it.
#[test]
fn a_tail_rolled_up_elsewhere_leaves_the_writers_count_at_zero() {
    use footfall::store::ingest::{Ingest, WHOLE_TAIL, roll_up_tail};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.db");
    let open =
        || footfall::store::open_writer(&path, footfall::config::Durability::Normal).unwrap();
    let (server, cli) = (open(), open());
    let mut ingest = Ingest::new();
    write_tail(&server, &mut ingest, 3);
    assert_eq!(ingest.tail_len(), 3);
    let mut restarted = Ingest::new();
    server.execute_batch("BEGIN IMMEDIATE").unwrap();
    restarted.begin(&server).unwrap();
    server.execute_batch("COMMIT").unwrap();
    assert_eq!(restarted.tail_len(), 3);

    let tx = cli.unchecked_transaction().unwrap();
    assert_eq!(roll_up_tail(&tx, WHOLE_TAIL).unwrap().0, 3);
    tx.commit().unwrap();

    server.execute_batch("BEGIN IMMEDIATE").unwrap();
    ingest.begin(&server).unwrap();
    assert_eq!(ingest.tail_len(), 0);
    assert_eq!(ingest.roll_up_oldest(&server, 5_000).unwrap(), 0);
    server.execute_batch("COMMIT").unwrap();
    assert_eq!(ingest.tail_len(), 0);
}

/// A tail found in the file at startup (a crash between a commit and its roll-up) is rolled up
/// as soon as the server is idle, not only after its first write.
#[tokio::test]
async fn a_tail_found_at_startup_is_rolled_up_without_waiting_for_a_write() {
    use footfall::store::ingest::{Ingest, read_watermark};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.db");
    let conn = footfall::store::open_writer(&path, footfall::config::Durability::Normal).unwrap();
    write_tail(&conn, &mut Ingest::new(), 3);
    let tail_of = |conn: &rusqlite::Connection| -> i64 {
        let watermark = read_watermark(conn).unwrap();
        conn.query_row(
            "SELECT count(*) FROM visits WHERE id >= ?1",
            [watermark],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(tail_of(&conn), 3);

    let app = footfall::app::App::build(&footfall::config::ServeArgs::for_db(&path)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tail_of(&conn) > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(tail_of(&conn), 0, "the idle writer rolled the tail up");
    assert!(footfall::store::rollups::check(&conn).unwrap().is_empty());
    drop(app);
}
