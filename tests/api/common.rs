//! Shared test harness: an in-process app driven with `oneshot`, and a real server process for
//! the tests that need a socket, a signal or a `kill -9`.
//!
//! **Backends.** Every test runs on SQLite as written. A test listed in its module's
//! `on_postgres!` also runs, as `postgres::<name>` (ignored: needs PostgreSQL), on a fresh
//! PostgreSQL database: [`on_postgres`] runs the test's function with this thread's
//! [`db_arg`] mapping every database path the test makes (TestApp's, a server process's, a CLI
//! command's) to a database of its own on `FOOTFALL_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432`), and drops those databases afterwards.

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use footfall::config::ServeArgs;
use footfall::http::{App, AppState};
use footfall::store::{Options, Store};
use http_body_util::BodyExt;
use serde_json::Value;
use tempfile::TempDir;
use tower::ServiceExt;

/// An application on a fresh database in a temporary folder, driven in-process.
pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub db: PathBuf,
    _dir: TempDir,
}

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `detail` of an error answer (and checks the shape).
    pub fn detail(&self) -> String {
        let body = self.json();
        let obj = body.as_object().expect("error body is an object");
        assert_eq!(obj.len(), 1, "error body has only `detail`: {body}");
        obj["detail"]
            .as_str()
            .expect("detail is a string")
            .to_owned()
    }
}

impl TestApp {
    /// Default configuration, but rate limits off: most tests are not about them.
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    /// Default configuration (rate limits off), adjusted by `configure`.
    pub fn with(configure: impl FnOnce(&mut ServeArgs)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("visits.db");
        let mut args = ServeArgs::for_db(db_arg(&db));
        args.rate_limit_per_minute = 0;
        args.bulk_rate_limit_per_minute = 0;
        args.ip_rate_per_second = 0;
        configure(&mut args);
        let app = App::build(&args).unwrap();
        Self {
            router: app.router,
            state: app.state,
            db,
            _dir: dir,
        }
    }

    /// Like [`Self::with`], and starts the bus subscribers the configured flags ask for; stop
    /// them with [`Self::stop_buses`].
    pub fn with_buses(configure: impl FnOnce(&mut ServeArgs)) -> (Self, footfall::bus::StopSender) {
        let mut configured = None;
        let app = Self::with(|args| {
            configure(args);
            configured = Some(args.clone());
        });
        let (stopper, stop) = footfall::bus::Stop::channel();
        let args = configured.expect("configured");
        footfall::bus::start(
            &args.bus,
            &app.state.store,
            &app.state.privacy,
            &app.state.buses,
            &stop,
        );
        (app, stopper)
    }

    /// Sets the stop signal and waits for the subscribers to commit what they hold and return.
    pub async fn stop_buses(&self, stopper: footfall::bus::StopSender) {
        stopper.stop();
        self.state.buses.join().await;
    }

    /// The `/health` entry of the subscriber of `bus` (`nats`, `zmq`).
    pub async fn subscriber_state(&self, bus: &str) -> String {
        let health = self.get("/health").await.json();
        health["subscribers"]
            .as_array()
            .and_then(|subs| subs.iter().find(|s| s["bus"] == bus))
            .map(|s| s["state"].as_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    /// The sum of a `/breakdown/...` answer's segments. A visit stored below the rollups'
    /// watermark (an event from the past) is in it only once rolled up, a moment after it is
    /// stored: wait on this, not on the stored rows, before checking breakdowns.
    pub async fn breakdown_sum(&self, path: &str) -> i64 {
        let reply = self.get(path).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let body = reply.json();
        body["data"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_i64().unwrap())
            .sum()
    }

    /// An app built elsewhere (another node on a shared database), keeping `dir` alive.
    pub fn from_parts(app: App, db: PathBuf, dir: TempDir) -> Self {
        Self {
            router: app.router,
            state: app.state,
            db,
            _dir: dir,
        }
    }

    /// Sends a request from `peer` (as the TCP peer address).
    pub async fn send_from(&self, peer: IpAddr, request: Request<Body>) -> Reply {
        let mut request = request;
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(peer, 40_000)));
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        self.send_from([127, 0, 0, 1].into(), request).await
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.send(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    pub async fn delete(&self, uri: &str) -> Reply {
        self.send(Request::delete(uri).body(Body::empty()).unwrap())
            .await
    }

    pub async fn post_json(&self, uri: &str, body: &Value) -> Reply {
        self.post_raw(uri, "application/json", body.to_string())
            .await
    }

    pub async fn post_raw(&self, uri: &str, content_type: &str, body: impl Into<Body>) -> Reply {
        let request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header("content-type", content_type)
            .body(body.into())
            .unwrap();
        self.send(request).await
    }

    /// Records a visit of `url` from `ip` (through the trusted loopback proxy) as `ua`.
    pub async fn visit(&self, url: &str, ip: &str, ua: &str) -> Reply {
        let request = Request::post("/visit")
            .header("content-type", "application/json")
            .header("x-forwarded-for", ip)
            .header("user-agent", ua)
            .body(Body::from(serde_json::json!({ "url": url }).to_string()))
            .unwrap();
        self.send(request).await
    }

    /// `total_visits` of `/stats/{url}`, with `url` percent-encoded whole (so a `?` in it is
    /// part of the page, not the endpoint's query).
    pub async fn total_visits(&self, url: &str) -> i64 {
        let encoded: String = url.bytes().map(|b| format!("%{b:02X}")).collect();
        let reply = self.get(&format!("/stats/{encoded}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json()["total_visits"].as_i64().unwrap()
    }

    /// The application's store.
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// Imports JSONL through the same code as `footfall import`.
    pub async fn import_jsonl(&self, jsonl: &str) -> footfall::domain::import::ImportReport {
        let reader = std::io::Cursor::new(jsonl.as_bytes().to_vec());
        footfall::cli::import_into(self.store(), &Default::default(), reader, false)
            .await
            .unwrap()
    }

    /// Raw visits stored.
    pub async fn stored_visits(&self) -> i64 {
        self.store().stored_visits().await.unwrap()
    }

    /// Names of aggregates that disagree with a recount of the raw visits.
    pub async fn rollup_mismatches(&self) -> Vec<String> {
        self.store().rollup_mismatches().await.unwrap()
    }
}

/// Polls `check` every 20 ms until it holds; panics with `what` after `limit`.
pub async fn eventually<F: std::future::Future<Output = bool>>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens the database `db` as the server would (to look at it after a server process ended).
pub fn open_store(db: &Path) -> Store {
    Store::open(&db_arg(db), &Options::default()).unwrap()
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real `footfall` process on a temporary port.
pub struct ServerProcess {
    pub child: Child,
    pub base: String,
    pub db: PathBuf,
}

impl ServerProcess {
    /// Starts `footfall serve` on `db` with extra arguments and waits until it answers.
    pub fn start(db: &Path, extra: &[&str]) -> Self {
        Self::start_logging(db, extra, Stdio::null(), None)
    }

    /// Like [`Self::start`], with the server's stderr (its log) going to `stderr`, and
    /// `RUST_LOG` set to `rust_log` (`None`: unset, the default level whatever `RUST_LOG` the
    /// tests run with).
    pub fn start_logging(
        db: &Path,
        extra: &[&str],
        stderr: impl Into<Stdio>,
        rust_log: Option<&str>,
    ) -> Self {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_footfall"));
        command
            .args(["serve", "--bind", &format!("127.0.0.1:{port}"), "--db"])
            .arg(db_arg(db))
            .args(extra)
            .env_remove("RUST_LOG");
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("footfall starts");
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            db: db.to_owned(),
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(self.base.trim_start_matches("http://")).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("footfall did not start at {}", self.base);
    }

    pub fn kill_hard(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "footfall did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the `footfall` binary with `args`, then `--db DB`, and waits for it.
pub fn footfall_cli(args: &[&str], db: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_footfall"))
        .args(args)
        .arg("--db")
        .arg(db_arg(db))
        .output()
        .unwrap()
}

/// Raw visits stored in the database `db`.
pub async fn stored_visits(db: &Path) -> i64 {
    let store = open_store(db);
    let n = store.stored_visits().await.unwrap();
    store.close().await;
    n
}

// ---------------------------------------------------------------------------------------------
// Requests and checks shared by the limits, CORS, request-id and metrics tests

pub const TOO_MANY: &str = "Too many requests, please try again later";

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn visit_request(url: &str) -> Request<Body> {
    Request::post("/visit")
        .header("content-type", "application/json")
        .body(Body::from(serde_json::json!({ "url": url }).to_string()))
        .unwrap()
}

pub fn bulk_request(items: &[&str]) -> Request<Body> {
    let body: Vec<Value> = items
        .iter()
        .map(|u| serde_json::json!({ "url": u }))
        .collect();
    Request::post("/bulk-visits")
        .header("content-type", "application/json")
        .body(Body::from(Value::from(body).to_string()))
        .unwrap()
}

pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

pub fn retry_after(reply: &Reply) -> u64 {
    reply
        .headers
        .get("retry-after")
        .expect("a 429 has Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is whole seconds")
}

/// Checks the exact `429` answer of API.md §9 and returns its `Retry-After`.
pub fn assert_too_many(reply: &Reply) -> u64 {
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.text()
    );
    assert_eq!(reply.json(), serde_json::json!({ "detail": TOO_MANY }));
    assert_eq!(
        reply.headers.get("content-type").unwrap(),
        "application/json"
    );
    let wait = retry_after(reply);
    assert!(wait >= 1, "Retry-After {wait}");
    wait
}

pub fn header<'r>(reply: &'r Reply, name: &str) -> Option<&'r str> {
    reply.headers.get(name).map(|v| v.to_str().unwrap())
}

/// Parses the labels of one Prometheus sample line: `{a="x",b="y"}`.
pub fn labels_of(raw: &str) -> std::collections::HashMap<String, String> {
    raw.trim_matches(['{', '}'])
        .split("\",")
        .filter(|p| !p.is_empty())
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

/// Sum of the samples of `name` whose labels include `want` (absent metric: 0).
pub fn metric(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric_name, labels) = match series.find('{') {
                Some(i) => (&series[..i], labels_of(&series[i..])),
                None => (series, std::collections::HashMap::new()),
            };
            let matches = metric_name == name
                && want
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

// ---------------------------------------------------------------------------------------------
// The PostgreSQL backend

/// The PostgreSQL server the `postgres::` tests use (a server URL, no database).
pub fn test_postgres() -> String {
    std::env::var("FOOTFALL_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
        .trim_end_matches('/')
        .to_owned()
}

thread_local! {
    /// `Some` while a test runs on PostgreSQL: each database path it made, and its URL.
    static POSTGRES_DBS: std::cell::RefCell<Option<Vec<(PathBuf, String)>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `sql` on the test server's `postgres` database, from a thread of its own (callers may
/// be inside a runtime, or not).
pub fn postgres_admin(sql: String) {
    let server = test_postgres();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (client, connection) =
                tokio_postgres::connect(&format!("{server}/postgres"), tokio_postgres::NoTls)
                    .await
                    .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {server}: {e}"));
            tokio::spawn(connection);
            client.batch_execute(&sql).await.unwrap();
        });
    })
    .join()
    .unwrap();
}

/// A new, empty database on the test server; answers its URL.
pub fn fresh_postgres_db() -> String {
    let name = format!("footfall_test_{:016x}", rand::random::<u64>());
    postgres_admin(format!("CREATE DATABASE {name}"));
    format!("{}/{name}", test_postgres())
}

/// Drops a database made by [`fresh_postgres_db`], whoever is still connected.
pub fn drop_postgres_db(url: &str) {
    let name = url.rsplit('/').next().unwrap().to_owned();
    postgres_admin(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
}

/// What a test passes as `--db` for the database path `path`: the path itself on SQLite; on
/// PostgreSQL ([`on_postgres`]), a database of its own, made at the first mention.
pub fn db_arg(path: &Path) -> PathBuf {
    POSTGRES_DBS.with(|dbs| {
        let mut dbs = dbs.borrow_mut();
        let Some(dbs) = dbs.as_mut() else {
            return path.to_owned();
        };
        if let Some((_, url)) = dbs.iter().find(|(p, _)| p == path) {
            return PathBuf::from(url);
        }
        let url = fresh_postgres_db();
        dbs.push((path.to_owned(), url.clone()));
        PathBuf::from(url)
    })
}

/// Whether the running test is on PostgreSQL.
pub fn on_postgres_now() -> bool {
    POSTGRES_DBS.with(|dbs| dbs.borrow().is_some())
}

/// Runs the test function `test` (a `#[tokio::test]`, which builds its own runtime on this
/// thread) on PostgreSQL, then drops the databases it made, also when it panicked.
pub fn on_postgres(test: fn()) {
    struct Cleanup;
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let dbs = POSTGRES_DBS
                .with(|dbs| dbs.borrow_mut().take())
                .unwrap_or_default();
            for (_, url) in dbs {
                drop_postgres_db(&url);
            }
        }
    }
    POSTGRES_DBS.with(|dbs| *dbs.borrow_mut() = Some(Vec::new()));
    let _cleanup = Cleanup;
    test();
}

/// The PostgreSQL variants of a module's tests: `on_postgres!(a, b)` adds `postgres::a` and
/// `postgres::b`, each running the test of that name on a fresh PostgreSQL database. A test
/// left out is SQLite-only (the module says why).
#[macro_export]
macro_rules! on_postgres {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[test]
                #[ignore = "needs PostgreSQL"]
                fn $name() {
                    $crate::common::on_postgres(super::$name);
                }
            )*
        }
    };
}
