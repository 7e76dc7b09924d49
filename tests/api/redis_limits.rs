//! Rate limits shared by all nodes through Redis (API.md §9, §10; issue 22), against a real
//! Redis: two in-process apps on two SQLite files are two nodes.
//!
//! `FOOTFALL_TEST_REDIS` (default `redis://127.0.0.1:6379`) is the Redis of the sharing tests;
//! every test uses page URLs of its own (a per-run nonce), so its keys meet no other test's or
//! run's. The outage test starts and kills a `redis-server` of its own on a free port. They are
//! marked as needing Redis, so `cargo test` on a bare machine leaves them out, and `.ci/run`
//! (`--include-ignored`) runs them, failing when Redis is missing.
//!
//! The apps share the process's Prometheus recorder, so the tests of this file take turns
//! ([`REDIS_TESTS`]): the outage test reads the `footfall_rate_limit_redis_up` gauge, which
//! the others would set.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use crate::common::{Reply, TestApp, free_port};

const TOO_MANY: &str = "Too many requests, please try again later";

static REDIS_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn test_redis() -> String {
    std::env::var("FOOTFALL_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A page URL no other test or run uses.
fn unique_url(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "https://redis-limits.example/{name}/{}-{nanos}",
        std::process::id()
    )
}

/// A node: default limits (10 a minute, bulk items 20), the ceiling off, sharing through
/// `redis`, on a database of its own.
fn node(redis: &str) -> TestApp {
    TestApp::with(|args| {
        args.rate_limit_per_minute = 10;
        args.bulk_rate_limit_per_minute = 20;
        args.redis = Some(redis.to_owned());
    })
}

async fn bulk(app: &TestApp, client: &str, urls: &[&str]) -> Reply {
    let body: Vec<Value> = urls.iter().map(|u| json!({ "url": u })).collect();
    let request = Request::post("/bulk-visits")
        .header("content-type", "application/json")
        .header("x-forwarded-for", client)
        .body(Body::from(Value::from(body).to_string()))
        .unwrap();
    app.send(request).await
}

/// Sends `count` visits of `url` from `client`, alternating between the nodes (`a` first), and
/// returns (answered 200, answered 429). Every 429 must be the exact answer of §9.
async fn alternate(a: &TestApp, b: &TestApp, client: &str, url: &str, count: usize) -> (u32, u32) {
    let (mut ok, mut refused) = (0, 0);
    for i in 0..count {
        let node = if i % 2 == 0 { a } else { b };
        let reply = node.visit(url, client, "redis-test").await;
        match reply.status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(reply.json(), json!({ "detail": TOO_MANY }));
                let wait: u64 = reply.headers["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .expect("Retry-After in whole seconds");
                // The 11th of a burst waits for one interval (6 s) at most.
                assert!((1..=6).contains(&wait), "Retry-After {wait}");
                refused += 1;
            }
            other => panic!("request {i}: {other} {}", reply.text()),
        }
    }
    (ok, refused)
}

async fn stored(a: &TestApp, b: &TestApp) -> i64 {
    a.stored_visits().await + b.stored_visits().await
}

#[tokio::test]
#[ignore = "needs Redis (FOOTFALL_TEST_REDIS)"]
async fn two_nodes_share_one_quota_per_ip_and_url_through_redis() {
    let _turn = REDIS_TESTS.lock().await;
    let redis = test_redis();
    let (a, b) = (node(&redis), node(&redis));
    let url = unique_url("visit");

    let (ok, refused) = alternate(&a, &b, "203.0.113.7", &url, 16).await;

    assert_eq!((ok, refused), (10, 6), "10 a minute across both nodes");
    assert_eq!(stored(&a, &b).await, 10);
    assert_eq!(a.state.limits.redis_up(), Some(true));
    assert_eq!(b.state.limits.redis_up(), Some(true));
    // Another client, or another page, has a quota of its own.
    assert_eq!(
        a.visit(&url, "203.0.113.8", "t").await.status,
        StatusCode::OK
    );
    let other_page = format!("{url}/other");
    assert_eq!(
        b.visit(&other_page, "203.0.113.7", "t").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
#[ignore = "needs Redis (FOOTFALL_TEST_REDIS)"]
async fn two_nodes_share_one_bulk_quota_through_redis() {
    let _turn = REDIS_TESTS.lock().await;
    let redis = test_redis();
    let (a, b) = (node(&redis), node(&redis));
    let url = unique_url("bulk");
    let items = vec![url.as_str(); 15];

    let first = bulk(&a, "203.0.113.9", &items).await;
    let second = bulk(&b, "203.0.113.9", &items).await;

    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert_eq!(first.json()["visits_recorded"], 15);
    assert_eq!(first.json()["visits_rejected"], 0);
    assert_eq!(second.status, StatusCode::OK, "{}", second.text());
    assert_eq!(
        second.json()["visits_recorded"],
        5,
        "20 items a minute in all"
    );
    assert_eq!(second.json()["visits_rejected"], 10);
    assert_eq!(stored(&a, &b).await, 20);
    // The bulk quota is not the recording one: the page's 10 visits are all still there.
    let (ok, refused) = alternate(&a, &b, "203.0.113.9", &url, 11).await;
    assert_eq!((ok, refused), (10, 1));
}

/// A `redis-server` of the test's own, killed when dropped.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts (is it installed?)");
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.answers_ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server on {port} never answered"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut answer = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG\r\n"
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL: no goodbye to the clients
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn scrape(app: &TestApp) -> String {
    let reply = app.get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.text()
}

/// The value of an unlabelled series in a scrape, 0 when absent.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Sends visits of fresh pages until both nodes check through Redis again, and returns how
/// many it sent (all recorded); panics after 10 s.
async fn until_shared(a: &TestApp, b: &TestApp) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sent = 0;
    for node in [a, b] {
        while node.state.limits.redis_up() != Some(true) {
            assert!(
                Instant::now() < deadline,
                "the nodes never went back to Redis"
            );
            let reply = node.visit(&unique_url("probe"), "203.0.113.99", "t").await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            sent += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    sent
}

#[tokio::test]
#[ignore = "needs Redis (FOOTFALL_TEST_REDIS)"]
async fn recording_goes_on_without_redis_and_sharing_resumes_when_it_returns() {
    let _turn = REDIS_TESTS.lock().await;
    let port = free_port();
    let redis = format!("redis://127.0.0.1:{port}");
    let (a, b) = (node(&redis), node(&redis));
    let client = "203.0.113.20";

    // No Redis at start: each node applies the limits on its own (10 each).
    let url = unique_url("before-start");
    let (ok, refused) = alternate(&a, &b, client, &url, 22).await;
    assert_eq!((ok, refused), (20, 2), "local limits, 10 per node");
    assert_eq!(a.state.limits.redis_up(), Some(false));

    // Redis comes: the two nodes share one quota.
    let mut server = RedisServer::start(port);
    let mut probes = until_shared(&a, &b).await;
    let url = unique_url("shared");
    assert_eq!(alternate(&a, &b, client, &url, 16).await, (10, 6));

    // Redis dies mid-run: recording goes on, under each node's own limits again.
    server.kill();
    let before = scrape(&a).await;
    let url = unique_url("outage");
    let (ok, refused) = alternate(&a, &b, client, &url, 22).await;
    assert_eq!((ok, refused), (20, 2), "local limits, 10 per node");
    let during = scrape(&a).await;
    assert_eq!(metric(&during, "footfall_rate_limit_redis_up"), 0.0);
    let fallbacks = "footfall_rate_limit_redis_fallbacks_total";
    assert!(
        metric(&during, fallbacks) - metric(&before, fallbacks) >= 22.0,
        "every check of the outage fell back: {} -> {}",
        metric(&before, fallbacks),
        metric(&during, fallbacks)
    );

    // Redis returns on the same port (empty, its script cache too): sharing resumes.
    let _server = RedisServer::start(port);
    probes += until_shared(&a, &b).await;
    let url = unique_url("after-restart");
    assert_eq!(alternate(&a, &b, client, &url, 16).await, (10, 6));
    assert_eq!(
        metric(&scrape(&a).await, "footfall_rate_limit_redis_up"),
        1.0
    );

    // Not one visit answered 200 was lost: 20 + 10 + 20 + 10, and the probes.
    assert_eq!(stored(&a, &b).await, 60 + probes);
}

crate::on_postgres!(
    two_nodes_share_one_quota_per_ip_and_url_through_redis,
    two_nodes_share_one_bulk_quota_through_redis,
    recording_goes_on_without_redis_and_sharing_resumes_when_it_returns,
);
