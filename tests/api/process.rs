//! The real binary under stress: `kill -9` loses no acknowledged visit, SIGTERM drains and
//! exits 0, a full write queue answers 503 without losing what it acknowledged.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::{ServerProcess, footfall_cli, open_store, stored_visits};

const NO_LIMITS: &[&str] = &[
    "--rate-limit-per-minute",
    "0",
    "--bulk-rate-limit-per-minute",
    "0",
    "--ip-rate-per-second",
    "0",
];

/// Sends `n` visits of distinct pages concurrently; returns the indices answered 200 and the
/// (index, status) of the others (status 0 = no answer).
async fn flood(
    base: &str,
    n: usize,
    acked_counter: Option<Arc<AtomicUsize>>,
) -> (Vec<usize>, Vec<(usize, u16)>) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..n {
        let client = client.clone();
        let url = format!("{base}/visit");
        let counter = acked_counter.clone();
        tasks.push(tokio::spawn(async move {
            let reply = client
                .post(url)
                .header(
                    "x-forwarded-for",
                    format!("10.0.{}.{}", i / 250, i % 250 + 1),
                )
                .json(&serde_json::json!({ "url": format!("https://acked.example/p{i}") }))
                .send()
                .await;
            match reply {
                Ok(r) if r.status() == 200 => {
                    // Only an answer that fully arrived counts as acknowledged.
                    if r.bytes().await.is_ok() {
                        if let Some(c) = counter {
                            c.fetch_add(1, Ordering::SeqCst);
                        }
                        return (i, 200);
                    }
                    (i, 0)
                }
                Ok(r) => (i, r.status().as_u16()),
                Err(_) => (i, 0),
            }
        }));
    }
    let mut acked = Vec::new();
    let mut others = Vec::new();
    for t in tasks {
        let (i, status) = t.await.unwrap();
        if status == 200 {
            acked.push(i);
        } else {
            others.push((i, status));
        }
    }
    (acked, others)
}

/// What a reopened `db` reports as inconsistent.
async fn rollup_mismatches(db: &std::path::Path) -> Vec<String> {
    let store = open_store(db);
    let differ = store.rollup_mismatches().await.unwrap();
    store.close().await;
    differ
}

/// The page indices that have a stored visit, as `footfall export` lists them.
fn stored_pages(db: &std::path::Path) -> HashSet<usize> {
    let out = footfall_cli(&["export", "--format", "jsonl"], db);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let visit: serde_json::Value = serde_json::from_str(line).ok()?;
            visit["url"]
                .as_str()?
                .strip_prefix("https://acked.example/p")?
                .parse()
                .ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loses_no_acknowledged_visit() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("visits.db");
    let mut server = ServerProcess::start(&db, NO_LIMITS);
    let counter = Arc::new(AtomicUsize::new(0));
    let base = server.base.clone();
    let flood_task = tokio::spawn(flood_owned(base, 3000, counter.clone()));
    // Kill while requests are in flight: after some, not all, were acknowledged.
    while counter.load(Ordering::SeqCst) < 300 {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    server.kill_hard();
    let (acked, _) = flood_task.await.unwrap();
    assert!(acked.len() >= 300, "only {} acknowledged", acked.len());
    assert!(
        acked.len() < 3000,
        "the kill came too late to test anything"
    );
    let stored = stored_pages(&db);
    let lost: Vec<_> = acked.iter().filter(|i| !stored.contains(i)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged visits lost: {lost:?}",
        lost.len()
    );
    // The reopened database is consistent, and a server starts on it.
    assert!(rollup_mismatches(&db).await.is_empty());
    let mut again = ServerProcess::start(&db, NO_LIMITS);
    let body: serde_json::Value = reqwest::get(format!("{}/stats", again.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["total_visits"].as_i64().unwrap(),
        stored_visits(&db).await
    );
    assert_eq!(again.terminate().code(), Some(0));
}

async fn flood_owned(
    base: String,
    n: usize,
    counter: Arc<AtomicUsize>,
) -> (Vec<usize>, Vec<(usize, u16)>) {
    flood(&base, n, Some(counter)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_every_queued_visit_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("visits.db");
    let mut server = ServerProcess::start(&db, NO_LIMITS);
    let counter = Arc::new(AtomicUsize::new(0));
    let flood_task = tokio::spawn(flood_owned(server.base.clone(), 2000, counter.clone()));
    while counter.load(Ordering::SeqCst) < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let status = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        (status, server)
    })
    .await
    .unwrap()
    .0;
    assert_eq!(status.code(), Some(0), "footfall must exit 0 on SIGTERM");
    let (acked, _) = flood_task.await.unwrap();
    let stored = stored_pages(&db);
    let lost: Vec<_> = acked.iter().filter(|i| !stored.contains(i)).collect();
    assert!(lost.is_empty(), "{} acknowledged visits lost", lost.len());
    // Nothing was stored that was not asked for, and the rollups agree.
    assert!(stored.len() <= 2000);
    assert!(rollup_mismatches(&db).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_write_queue_answers_503_and_loses_no_acknowledged_visit() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("visits.db");
    let mut args = NO_LIMITS.to_vec();
    args.extend(["--write-queue", "1", "--max-batch", "1"]);
    let server = ServerProcess::start(&db, &args);
    let (acked, others) = flood(&server.base, 600, None).await;
    let overloaded = others.iter().filter(|(_, s)| *s == 503).count();
    assert!(
        overloaded > 0,
        "a 1-slot queue under 600 concurrent visits must overflow"
    );
    // 0 = no answer: 600 connections at once can overflow the listen backlog.
    assert!(
        others.iter().all(|(_, s)| *s == 503 || *s == 0),
        "only 503s expected besides 200s: {others:?}"
    );
    // Every acknowledged visit is stored, and no visit answered 503 is.
    let stored = stored_pages(&db);
    assert!(acked.iter().all(|i| stored.contains(i)));
    assert!(
        others
            .iter()
            .filter(|(_, s)| *s == 503)
            .all(|(i, _)| !stored.contains(i))
    );

    // The 503 carries Retry-After and the JSON shape.
    let client = reqwest::Client::new();
    let mut seen = false;
    for _ in 0..20 {
        let mut replies = Vec::new();
        for i in 0..200 {
            replies.push(
                client
                    .post(format!("{}/visit", server.base))
                    .json(&serde_json::json!({ "url": format!("https://retry.example/{i}") }))
                    .send(),
            );
        }
        for reply in futures_util::future::join_all(replies)
            .await
            .into_iter()
            .flatten()
        {
            if reply.status() == 503 {
                let retry: u64 = reply.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(retry >= 1);
                let body: serde_json::Value = reply.json().await.unwrap();
                assert!(body["detail"].as_str().unwrap().contains("busy"));
                seen = true;
            }
        }
        if seen {
            break;
        }
    }
    assert!(seen, "no 503 observed to check its headers");
}

crate::on_postgres!(
    kill_9_loses_no_acknowledged_visit,
    sigterm_drains_every_queued_visit_and_exits_0,
    a_full_write_queue_answers_503_and_loses_no_acknowledged_visit,
);
