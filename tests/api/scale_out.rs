//! API.md §10: several footfall nodes on one PostgreSQL database are one footfall. PostgreSQL
//! only (each test makes its own database on `FOOTFALL_TEST_POSTGRES`, and drops it).
//!
//! - 1,000 concurrent per-page counter increments split across two nodes: exactly 1,000 on both.
//! - Read-your-writes across nodes: a visit one node acknowledged is in the next answer of the
//!   other, for every analytics endpoint, at once (no roll-up waited for).
//! - `kill -9` of one node under load: nothing it acknowledged is lost, the other goes on
//!   recording, and roll-ups (which the killed node ran) are taken over within seconds.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use footfall::config::ServeArgs;
use footfall::http::App;
use serde_json::{Value, json};

use crate::common::{ServerProcess, TestApp, drop_postgres_db, fresh_postgres_db};

/// A fresh database, dropped when this goes out of scope.
struct Database(String);

impl Database {
    fn new() -> Self {
        Self(fresh_postgres_db())
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        drop_postgres_db(&self.0);
    }
}

/// An in-process node on the database `url`, rate limits off.
pub fn node(url: &str) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut args = ServeArgs::for_db(url);
    args.rate_limit_per_minute = 0;
    args.bulk_rate_limit_per_minute = 0;
    args.ip_rate_per_second = 0;
    let app = App::build(&args).unwrap();
    TestApp::from_parts(app, url.into(), dir)
}

/// Runs SQL on the database `url` from the test.
async fn sql_one(url: &str, sql: &str) -> i64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL"]
async fn a_thousand_concurrent_counter_increments_across_two_nodes_count_exactly() {
    let db = Database::new();
    let (a, b) = (Arc::new(node(&db.0)), Arc::new(node(&db.0)));
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let app = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            app.post_json("/visit/home", &json!({})).await.status
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    for app in [&a, &b] {
        assert_eq!(
            app.get("/visits/home").await.json(),
            json!({"count": 1000, "served_via": "postgres"})
        );
    }
    assert_eq!(
        a.get("/visits/elsewhere").await.json(),
        json!({"count": 0, "served_via": "postgres"})
    );
    a.store().close().await;
    b.store().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL"]
async fn a_visit_one_node_acknowledged_is_in_the_next_answer_of_the_other() {
    let db = Database::new();
    let (a, b) = (node(&db.0), node(&db.0));
    for i in 0..60i64 {
        let (writer, reader) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let url = format!("https://site{}.example/page", i % 3);
        let reply = writer.visit(&url, &format!("10.1.0.{}", i + 1), "UA").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        // The other node counts it at once, whatever the roller has done so far.
        let stats = reader.get("/stats").await.json();
        assert_eq!(stats["total_visits"], i + 1);
        assert_eq!(stats["unique_visitors"], i + 1);
        let summary = reader.get("/summary").await.json();
        assert_eq!(summary["total_entries"], i + 1);
        assert_eq!(reader.total_visits(&url).await, i / 3 + 1);
        let domains = reader.get("/domains/hour").await.json();
        let site = format!("site{}.example", i % 3);
        assert_eq!(domains["domains"][&site], i / 3 + 1, "{domains}");
    }
    // Both nodes give the same answers, and the rollups agree with the raw rows.
    for path in ["/stats", "/summary?hours=24", "/domains/day"] {
        let (x, y): (Value, Value) = (a.get(path).await.json(), b.get(path).await.json());
        assert_eq!(x, y, "{path}");
    }
    assert!(a.rollup_mismatches().await.is_empty());
    a.store().close().await;
    b.store().close().await;
}

/// Posts `n` visits of distinct pages, alternating between `bases`; answers the indices
/// acknowledged (a 200 that fully arrived) and counts them in `acked` as they come.
async fn flood(bases: Vec<String>, n: usize, acked: Arc<AtomicUsize>) -> Vec<usize> {
    let client = reqwest::Client::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (client, limit, acked) = (client.clone(), limit.clone(), acked.clone());
        let url = format!("{}/visit", bases[i % bases.len()]);
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire().await.unwrap();
            let reply = client
                .post(url)
                .json(&json!({ "url": format!("https://acked.example/p{i}") }))
                .send()
                .await;
            let r = reply.ok().filter(|r| r.status() == 200)?;
            // Only an answer that fully arrived counts as acknowledged.
            r.bytes().await.ok()?;
            acked.fetch_add(1, Ordering::SeqCst);
            Some(i)
        }));
    }
    let mut done = Vec::new();
    for task in tasks {
        if let Some(i) = task.await.unwrap() {
            done.push(i);
        }
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL"]
async fn kill_9_of_one_node_under_load_loses_nothing_and_the_other_takes_over() {
    let db = Database::new();
    let url = std::path::PathBuf::from(&db.0);
    let limits = [
        "--rate-limit-per-minute",
        "0",
        "--bulk-rate-limit-per-minute",
        "0",
        "--ip-rate-per-second",
        "0",
    ];
    // The first node is elected roller (it starts alone); the second waits.
    let mut first = ServerProcess::start(&url, &limits);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = ServerProcess::start(&url, &limits);

    let acked = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn(flood(
        vec![first.base.clone(), second.base.clone()],
        4000,
        acked.clone(),
    ));
    while acked.load(Ordering::SeqCst) < 500 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    first.kill_hard();
    let done = load.await.unwrap();
    assert!(done.len() < 4000, "the kill came too late to test anything");
    // The survivor answered its half.
    assert!(done.len() >= 2000, "only {} acknowledged", done.len());

    // Nothing acknowledged is lost.
    let (client, connection) = tokio_postgres::connect(&db.0, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let stored: HashSet<usize> = client
        .query(
            "SELECT p.url FROM visits v JOIN pages p ON p.id = v.page_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .filter_map(|r| r.get::<_, &str>(0).rsplit_once("/p")?.1.parse().ok())
        .collect();
    let lost: Vec<_> = done.iter().filter(|i| !stored.contains(i)).collect();
    assert!(lost.is_empty(), "{} acknowledged visits lost", lost.len());

    // The survivor goes on recording, and rolls up (the killed node did): the tail empties.
    let reply = reqwest::Client::new()
        .post(format!("{}/visit", second.base))
        .json(&json!({"url": "https://after.example/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tail = sql_one(
            &db.0,
            "SELECT coalesce((SELECT max(id) FROM visits), 0) - rolled_up_to FROM progress",
        )
        .await;
        if tail == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no node rolled up after the kill: {tail} visits above the watermark"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = sql_one(&db.0, "SELECT count(*) FROM visits").await;
    let stats: Value = reqwest::get(format!("{}/stats", second.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["total_visits"], total);
    let store = crate::common::open_store(&url);
    assert!(store.rollup_mismatches().await.unwrap().is_empty());
    store.close().await;
    drop(second);
}
