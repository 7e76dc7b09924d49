//! NATS JetStream ingest against a real server (API.md §11): each test uses a stream, subject
//! and durable consumer of its own on `FOOTFALL_TEST_NATS` (default `nats://127.0.0.1:4222`),
//! and one starts a `nats-server` of its own to stop and start again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::PullConsumer};
use serde_json::{Value, json};

use crate::common::{ServerProcess, TestApp, eventually, footfall_cli, free_port, metric};

/// AckWait of the tests' consumers: short, so a redelivery after a crash comes soon.
const ACK_WAIT: u64 = 2;

fn nats_url() -> String {
    std::env::var("FOOTFALL_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A JetStream stream of one test: `FFTEST_<unique>` holding `fftest.<unique>.>`.
struct TestStream {
    js: jetstream::Context,
    name: String,
    /// The consumer's filter, `fftest.<unique>.>`.
    filter: String,
    /// Where the test publishes: a subject under the filter.
    subject: String,
}

impl TestStream {
    async fn new(url: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let unique = format!(
            "{}_{nanos}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let client = footfall::bus::nats::connect_options(url)
            .connect(url)
            .await
            .expect("NATS is reachable");
        let js = jetstream::new(client);
        let name = format!("FFTEST_{unique}");
        let filter = format!("fftest.{unique}.>");
        js.create_stream(jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![filter.clone()],
            ..Default::default()
        })
        .await
        .expect("stream created");
        Self {
            js,
            name,
            subject: format!("fftest.{unique}.visits"),
            filter,
        }
    }

    async fn publish_raw(&self, payload: impl Into<bytes::Bytes>) {
        self.js
            .publish(self.subject.clone(), payload.into())
            .await
            .unwrap()
            .await
            .expect("JetStream stored the message");
    }

    async fn publish(&self, event: &Value) {
        self.publish_raw(event.to_string()).await;
    }

    /// The footfall flags that consume this stream.
    fn flags(&self, url: &str) -> Vec<String> {
        [
            "--nats",
            url,
            "--nats-subject",
            &self.filter,
            "--nats-durable",
            &self.name,
            "--nats-ack-wait",
            &ACK_WAIT.to_string(),
        ]
        .map(String::from)
        .to_vec()
    }

    fn configure(&self, url: &str) -> impl FnOnce(&mut footfall::config::ServeArgs) + use<> {
        let (url, filter, durable) = (url.to_owned(), self.filter.clone(), self.name.clone());
        move |args| {
            args.bus.nats = Some(url);
            args.bus.nats_subject = Some(filter);
            args.bus.nats_durable = durable;
            args.bus.nats_ack_wait = ACK_WAIT;
        }
    }

    /// The consumer's messages not delivered yet and delivered but not acknowledged.
    async fn unfinished(&self) -> (u64, usize) {
        let stream = self.js.get_stream(&self.name).await.unwrap();
        let mut consumer: PullConsumer = stream.get_consumer(&self.name).await.unwrap();
        let info = consumer.info().await.unwrap();
        (info.num_pending, info.num_ack_pending)
    }

    async fn delete(self) {
        let _ = self.js.delete_stream(&self.name).await;
    }
}

/// A pageview of `https://<site>/p<i>` at a fixed time, with the id `e<i>` when `with_id`.
fn pageview(site: &str, i: usize, with_id: bool) -> Value {
    let mut event = json!({
        "url": format!("https://{site}/p{i}"),
        "ip": format!("10.9.{}.{}", i / 250, i % 250 + 1),
        "timestamp": "2024-03-05T10:00:00Z",
    });
    if with_id {
        event["id"] = json!(format!("e{i}"));
    }
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs NATS (FOOTFALL_TEST_NATS)"]
async fn nats_events_published_twice_are_counted_once() {
    let url = nats_url();
    let stream = TestStream::new(&url).await;
    let n = 500;
    for i in 0..n {
        stream.publish(&pageview("twice.example", i, true)).await;
    }
    // A publisher retrying: every fifth event again, as a new message.
    for i in (0..n).step_by(5) {
        stream.publish(&pageview("twice.example", i, true)).await;
    }
    let (app, stopper) = TestApp::with_buses(stream.configure(&url));
    eventually(Duration::from_secs(60), "n visits", || async {
        app.stored_visits().await >= n as i64
    })
    .await;
    eventually(
        Duration::from_secs(20),
        "every message acknowledged",
        || async { stream.unfinished().await == (0, 0) },
    )
    .await;
    // Past AckWait: nothing comes again.
    tokio::time::sleep(Duration::from_secs(ACK_WAIT + 1)).await;
    assert_eq!(app.stored_visits().await, n as i64);
    eventually(Duration::from_secs(30), "the breakdown", || async {
        app.breakdown_sum("/breakdown/twice.example/pageview/2024/3/5")
            .await
            == n as i64
    })
    .await;
    let day = app
        .get("/breakdown/twice.example/pageview/2024/3/5")
        .await
        .json();
    assert_eq!(day["data"]["10"], n);
    assert_eq!(app.subscriber_state("nats").await, "consuming");
    let metrics = app.get("/metrics").await.text();
    let duplicates = [("bus", "nats"), ("result", "duplicate")];
    assert!(metric(&metrics, "footfall_bus_events_total", &duplicates) >= (n / 5) as f64);
    app.stop_buses(stopper).await;
    assert_eq!(app.subscriber_state("nats").await, "stopped");
    assert!(app.rollup_mismatches().await.is_empty());
    stream.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs NATS (FOOTFALL_TEST_NATS)"]
async fn nats_order_events_show_in_the_order_breakdown() {
    let url = nats_url();
    let stream = TestStream::new(&url).await;
    let (app, stopper) = TestApp::with_buses(stream.configure(&url));
    for hour in 0..4 {
        for k in 0..=hour {
            let at = format!("2024-03-05 1{hour}:0{k}:00");
            // The seed's publishers name the event `type`.
            stream
                .publish(
                    &json!({"url": "https://shop.example/checkout", "type": "order",
                                 "id": format!("o-{hour}-{k}"), "timestamp": at}),
                )
                .await;
        }
    }
    stream
        .publish(&json!({"url": "https://shop.example/", "timestamp": "2024-03-05 10:00:00"}))
        .await;
    eventually(Duration::from_secs(60), "11 visits", || async {
        app.stored_visits().await == 11
    })
    .await;
    eventually(Duration::from_secs(30), "the breakdowns", || async {
        app.breakdown_sum("/breakdown/shop.example/order/2024/3/5")
            .await
            == 10
            && app
                .breakdown_sum("/breakdown/shop.example/pageview/2024/3/5")
                .await
                == 1
    })
    .await;
    let orders = app
        .get("/breakdown/shop.example/order/2024/3/5")
        .await
        .json();
    let by_hour: Vec<i64> = (10..14)
        .map(|h| orders["data"][h.to_string()].as_i64().unwrap())
        .collect();
    assert_eq!(by_hour, [1, 2, 3, 4]);
    let minutes = app
        .get("/breakdown/shop.example/order/2024/3/5/13")
        .await
        .json();
    assert_eq!(minutes["data"]["3"], 1);
    let views = app
        .get("/breakdown/shop.example/pageview/2024/3/5")
        .await
        .json();
    assert_eq!(views["data"]["10"], 1);
    app.stop_buses(stopper).await;
    stream.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs NATS (FOOTFALL_TEST_NATS)"]
async fn a_bad_nats_event_is_acknowledged_counted_and_stops_nothing() {
    let url = nats_url();
    let stream = TestStream::new(&url).await;
    let (app, stopper) = TestApp::with_buses(stream.configure(&url));
    let before = app.get("/metrics").await.text();
    let rejected = [("bus", "nats"), ("result", "rejected")];
    let rejected_before = metric(&before, "footfall_bus_events_total", &rejected);
    stream.publish(&pageview("bad.example", 1, true)).await;
    stream.publish_raw("not json").await;
    stream
        .publish(&json!({"url": "nope", "id": "bad-url"}))
        .await;
    stream
        .publish(&json!({"url": "https://bad.example/", "id": 7}))
        .await;
    stream
        .publish(&json!({"url": "https://bad.example/", "type": "Not An Event"}))
        .await;
    stream.publish(&pageview("bad.example", 2, false)).await;
    eventually(Duration::from_secs(60), "both good events", || async {
        app.stored_visits().await == 2
    })
    .await;
    // Every message acknowledged, the bad ones too: none comes back.
    eventually(
        Duration::from_secs(20),
        "every message acknowledged",
        || async { stream.unfinished().await == (0, 0) },
    )
    .await;
    let after = app.get("/metrics").await.text();
    assert!(metric(&after, "footfall_bus_events_total", &rejected) >= rejected_before + 4.0);
    // And the subscriber goes on.
    stream.publish(&pageview("bad.example", 3, true)).await;
    eventually(Duration::from_secs(30), "the third good event", || async {
        app.stored_visits().await == 3
    })
    .await;
    assert_eq!(app.subscriber_state("nats").await, "consuming");
    app.stop_buses(stopper).await;
    stream.delete().await;
}

/// `total_visits` of `/stats` on a running server (0 while it does not answer).
async fn served_total(base: &str) -> i64 {
    let Ok(reply) = reqwest::get(format!("{base}/stats")).await else {
        return 0;
    };
    let body: Value = reply.json().await.unwrap_or_default();
    body["total_visits"].as_i64().unwrap_or(0)
}

/// How many times each page `https://<site>/p<i>` is stored in `db`, by `i`.
fn stored_per_page(db: &std::path::Path, site: &str) -> HashMap<usize, usize> {
    let out = footfall_cli(&["export", "--format", "jsonl"], db);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let prefix = format!("https://{site}/p");
    let mut counts = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let visit: Value = serde_json::from_str(line).unwrap();
        let i = visit["url"]
            .as_str()
            .unwrap()
            .strip_prefix(&prefix)
            .unwrap();
        *counts.entry(i.parse().unwrap()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs NATS (FOOTFALL_TEST_NATS)"]
async fn kill_9_mid_stream_then_restart_counts_every_event_exactly_once() {
    let url = nats_url();
    let stream = TestStream::new(&url).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("visits.db");
    let flags = stream.flags(&url);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut server = ServerProcess::start(&db, &flags);
    let n = 6000;
    // Half the events carry an id, half do not: a message redelivered after the crash is
    // recognised either way (its own id, or its place in the stream).
    let publisher = {
        let js = stream.js.clone();
        let subject = stream.subject.clone();
        tokio::spawn(async move {
            for i in 0..n {
                let event = pageview("crash.example", i, i % 2 == 0).to_string();
                js.publish(subject.clone(), event.into())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
                if i % 100 == 99 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        })
    };
    let base = server.base.clone();
    eventually(Duration::from_secs(60), "a first part counted", || async {
        served_total(&base).await >= 1500
    })
    .await;
    server.kill_hard();
    let at_kill = crate::common::stored_visits(&db).await;
    assert!(
        at_kill < n as i64,
        "the kill came too late to test anything"
    );
    publisher.await.unwrap();

    let mut server = ServerProcess::start(&db, &flags);
    let base = server.base.clone();
    eventually(Duration::from_secs(90), "every event counted", || async {
        served_total(&base).await >= n as i64
    })
    .await;
    // Past AckWait twice: whatever the killed node held has come back and been skipped.
    tokio::time::sleep(Duration::from_secs(2 * ACK_WAIT + 1)).await;
    assert_eq!(served_total(&base).await, n as i64);
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
    assert_eq!(
        stream.unfinished().await,
        (0, 0),
        "every message acknowledged"
    );
    let counts = stored_per_page(&db, "crash.example");
    let wrong: Vec<_> = (0..n).filter(|i| counts.get(i) != Some(&1)).collect();
    assert!(wrong.is_empty(), "not stored exactly once: {wrong:?}");
    stream.delete().await;
}

/// A `nats-server` of the test's own, with JetStream, on `port`, storing in `dir`.
struct OwnNats {
    child: Child,
    port: u16,
}

impl OwnNats {
    fn start(port: u16, dir: &std::path::Path) -> Self {
        Self::start_with(port, dir, None)
    }

    /// With `config` (a nats-server configuration file's text) when given.
    fn start_with(port: u16, dir: &std::path::Path, config: Option<&str>) -> Self {
        let binary = [
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
            "/usr/local/bin/nats-server",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nats-server"));
        let mut command = Command::new(binary);
        if let Some(config) = config {
            let file = dir.join("nats.conf");
            std::fs::write(&file, config).unwrap();
            command.arg("-c").arg(file);
        }
        let child = command
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts (install it: apt-get install nats-server)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server"]
async fn a_nats_server_that_goes_away_and_comes_back_is_reconnected_to() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut nats = OwnNats::start(port, dir.path());
    let url = nats.url();
    let stream = TestStream::new(&url).await;
    let (app, stopper) = TestApp::with_buses(stream.configure(&url));
    for i in 0..50 {
        stream.publish(&pageview("away.example", i, true)).await;
    }
    eventually(Duration::from_secs(60), "the first 50", || async {
        app.stored_visits().await == 50
    })
    .await;
    nats.kill();
    eventually(
        Duration::from_secs(30),
        "health to show the loss",
        || async { app.subscriber_state("nats").await == "disconnected" },
    )
    .await;
    let health = app.get("/health").await;
    assert_eq!(health.status, 200, "the node still records over HTTP");

    let nats = OwnNats::start(port, dir.path());
    let again = TestStream {
        js: jetstream::new(async_nats::connect(nats.url()).await.unwrap()),
        ..stream
    };
    for i in 50..100 {
        again.publish(&pageview("away.example", i, true)).await;
    }
    eventually(Duration::from_secs(90), "the next 50", || async {
        app.stored_visits().await == 100
    })
    .await;
    assert_eq!(app.subscriber_state("nats").await, "consuming");
    app.stop_buses(stopper).await;
    assert_eq!(app.stored_visits().await, 100);
}

/// A nats-server configuration with a `publisher` (password `p`) and a `footfall` user
/// (password `f`) whose acknowledgements (`$JS.ACK.>`) are denied.
const NO_ACKS: &str = r#"
    authorization {
        users = [
            { user: "publisher", password: "p" }
            { user: "footfall", password: "f", permissions: { publish: { deny: ["$JS.ACK.>"] } } }
        ]
    }
"#;

/// A server on which footfall's user may not acknowledge (`$JS.ACK.>` denied), so every
/// message it commits is delivered again after each AckWait, as after a crash between the
/// commit and the acknowledgement: each must be skipped, with or without its own id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server"]
async fn messages_redelivered_after_their_commit_are_not_counted_again() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _nats = OwnNats::start_with(port, dir.path(), Some(NO_ACKS));
    let stream = TestStream::new(&format!("nats://publisher:p@127.0.0.1:{port}")).await;
    let (app, stopper) =
        TestApp::with_buses(stream.configure(&format!("nats://footfall:f@127.0.0.1:{port}")));
    let n = 100;
    for i in 0..n {
        stream
            .publish(&pageview("again.example", i, i % 2 == 0))
            .await;
    }
    eventually(Duration::from_secs(60), "n visits", || async {
        app.stored_visits().await >= n as i64
    })
    .await;
    // Every message comes back at least once more, and is skipped.
    let js_stream = stream.js.get_stream(&stream.name).await.unwrap();
    let mut consumer: PullConsumer = js_stream.get_consumer(&stream.name).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumer.info().await.unwrap().num_redelivered < n {
        assert!(
            Instant::now() < deadline,
            "the messages were not delivered again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(ACK_WAIT)).await;
    assert_eq!(app.stored_visits().await, n as i64);
    app.stop_buses(stopper).await;
}

/// Two nodes on one database share one durable consumer; with acknowledgements denied, every
/// message is delivered again and again, to either node: each still counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server"]
async fn two_nodes_on_one_durable_consumer_count_each_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _nats = OwnNats::start_with(port, dir.path(), Some(NO_ACKS));
    let stream = TestStream::new(&format!("nats://publisher:p@127.0.0.1:{port}")).await;
    let footfall_url = format!("nats://footfall:f@127.0.0.1:{port}");
    let (first, first_stopper) = TestApp::with_buses(stream.configure(&footfall_url));
    // The second node: another server on the same database file.
    let mut args = footfall::config::ServeArgs::for_db(crate::common::db_arg(&first.db));
    stream.configure(&footfall_url)(&mut args);
    let second = footfall::http::App::build(&args).unwrap();
    let (second_stopper, stop) = footfall::bus::Stop::channel();
    second.start_buses(&args, &stop);

    let n = 200;
    for i in 0..n {
        stream
            .publish(&pageview("nodes.example", i, i % 2 == 0))
            .await;
    }
    eventually(Duration::from_secs(60), "n visits", || async {
        first.stored_visits().await >= n as i64
    })
    .await;
    let js_stream = stream.js.get_stream(&stream.name).await.unwrap();
    let mut consumer: PullConsumer = js_stream.get_consumer(&stream.name).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumer.info().await.unwrap().num_redelivered < n {
        assert!(
            Instant::now() < deadline,
            "the messages were not delivered again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(ACK_WAIT)).await;
    second_stopper.stop();
    second.state.buses.join().await;
    second.state.store.close().await;
    first.stop_buses(first_stopper).await;
    assert_eq!(first.stored_visits().await, n as i64);
    assert!(first.rollup_mismatches().await.is_empty());
}

crate::on_postgres!(
    nats_events_published_twice_are_counted_once,
    nats_order_events_show_in_the_order_breakdown,
    a_bad_nats_event_is_acknowledged_counted_and_stops_nothing,
    kill_9_mid_stream_then_restart_counts_every_event_exactly_once,
    messages_redelivered_after_their_commit_are_not_counted_again,
    two_nodes_on_one_durable_consumer_count_each_message_once,
);
