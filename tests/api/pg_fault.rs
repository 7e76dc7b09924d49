//! API.md §9–§10 faults on PostgreSQL: the database restarted under load. While it is down,
//! recording answers `503` with `Retry-After` (never `500`), `/health` says so, and everything
//! recovers by itself once it is back; nothing acknowledged is lost.
//!
//! The test starts a PostgreSQL server of its own (`initdb` and `pg_ctl` from
//! `FOOTFALL_PG_BIN`, default `/usr/lib/postgresql/15/bin`) on its own port and temporary
//! folder, so restarting it disturbs nobody. As root, the server runs as the `postgres` user
//! (`initdb` refuses root).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{ServerProcess, free_port};

/// A PostgreSQL server in a temporary folder.
struct OwnPostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

impl OwnPostgres {
    fn start() -> Self {
        let bin = PathBuf::from(
            std::env::var("FOOTFALL_PG_BIN")
                .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()),
        );
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let server = Self {
            bin,
            data: dir.path().join("data"),
            port: free_port(),
            as_postgres,
            _dir: dir,
        };
        let data = server.data.display().to_string();
        server.run(
            "initdb",
            &["-D", &data, "-U", "postgres", "--auth=trust", "-N"],
        );
        server.ctl_start();
        server
    }

    /// Runs one of the server's programs (as `postgres` when we are root); panics on failure.
    fn run(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let output = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&path)
                .args(args)
                .output()
        } else {
            Command::new(&path).args(args).output()
        }
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
        assert!(
            output.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn ctl_start(&self) {
        let data = self.data.display().to_string();
        let socket_dir = self.data.parent().unwrap().display().to_string();
        let options = format!(
            "-p {} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port
        );
        let log = Path::new(&socket_dir).join("log").display().to_string();
        self.run(
            "pg_ctl",
            &["-D", &data, "-o", &options, "-l", &log, "-w", "start"],
        );
    }

    fn ctl_stop(&self) {
        let data = self.data.display().to_string();
        self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let path = self.bin.join("pg_ctl");
        let args = ["-D", data.as_str(), "-m", "immediate", "stop"];
        let _ = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&path)
                .args(args)
                .output()
        } else {
            Command::new(&path).args(args).output()
        };
    }
}

/// What the load saw.
#[derive(Default)]
struct Seen {
    acked: Vec<usize>,
    unavailable: usize,
    without_retry_after: usize,
    /// Any answer but 200 and 503 (a 500 above all), with its body.
    wrong: Vec<(u16, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL (initdb and pg_ctl)"]
async fn postgres_restarted_under_load_gives_503_then_recovers_by_itself() {
    let pg = OwnPostgres::start();
    let url = PathBuf::from(pg.url("footfall"));
    let server = ServerProcess::start(
        &url,
        &["--rate-limit-per-minute", "0", "--ip-rate-per-second", "0"],
    );
    let health = |base: String| async move {
        let reply = reqwest::get(format!("{base}/health")).await.unwrap();
        let status = reply.status().as_u16();
        (status, reply.json::<serde_json::Value>().await.unwrap())
    };
    let (status, body) = health(server.base.clone()).await;
    assert_eq!(
        (status, &body["backend"]),
        (200, &json!("postgres")),
        "{body}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (stop, next, base) = (stop.clone(), next.clone(), server.base.clone());
        workers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut seen = Seen::default();
            while !stop.load(Ordering::SeqCst) {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let reply = client
                    .post(format!("{base}/visit"))
                    .json(&json!({"url": format!("https://fault.example/p{i}")}))
                    .timeout(Duration::from_secs(20))
                    .send()
                    .await;
                let Ok(reply) = reply else {
                    seen.wrong.push((0, "no answer".into()));
                    continue;
                };
                let status = reply.status().as_u16();
                let retry_after = reply.headers().contains_key("retry-after");
                let body = reply.text().await.unwrap_or_default();
                match status {
                    200 => seen.acked.push(i),
                    503 => {
                        seen.unavailable += 1;
                        if !retry_after {
                            seen.without_retry_after += 1;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    _ => seen.wrong.push((status, body)),
                }
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Down: recording answers 503 (the load goes on), /health says so.
    pg.ctl_stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = health(server.base.clone()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["backend"], "postgres");
    let reply = reqwest::Client::new()
        .post(format!("{}/visit", server.base))
        .json(&json!({"url": "https://fault.example/down"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 503);
    assert!(reply.headers().contains_key("retry-after"));

    // Back: everything recovers by itself.
    pg.ctl_start();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = health(server.base.clone()).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "/health did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let acked_before = {
        // Recording works again: new acknowledgements arrive.
        let reply = reqwest::Client::new()
            .post(format!("{}/visit", server.base))
            .json(&json!({"url": "https://fault.example/back"}))
            .send()
            .await
            .unwrap();
        reply.status().as_u16()
    };
    assert_eq!(acked_before, 200);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::SeqCst);
    let mut seen = Seen::default();
    for worker in workers {
        let s = worker.await.unwrap();
        seen.acked.extend(s.acked);
        seen.unavailable += s.unavailable;
        seen.without_retry_after += s.without_retry_after;
        seen.wrong.extend(s.wrong);
    }
    assert!(
        seen.wrong.is_empty(),
        "answers other than 200/503: {:?}",
        &seen.wrong[..seen.wrong.len().min(5)]
    );
    assert!(seen.unavailable > 0, "the load never saw the database down");
    assert_eq!(seen.without_retry_after, 0, "a 503 without Retry-After");

    // Nothing acknowledged is lost, the figures are exact, and the rollups caught up.
    let store = crate::common::open_store(&url);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.rollup_mismatches().await.unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the rollups disagree with the visits"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored = store.stored_visits().await.unwrap();
    let body: serde_json::Value = reqwest::get(format!("{}/stats", server.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["total_visits"], stored);
    let mut exported = String::new();
    let mut chunks = store.export(
        footfall::domain::export::ExportFilter {
            from: 0,
            to: None,
            limit: None,
            offset: 0,
        },
        footfall::domain::export::ExportFormat::Jsonl,
    );
    while let Some(chunk) = chunks.recv().await {
        exported.push_str(&String::from_utf8_lossy(&chunk));
    }
    let pages: std::collections::HashSet<usize> = exported
        .lines()
        .filter_map(|l| {
            l.split("fault.example/p")
                .nth(1)?
                .split('"')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    let lost = seen.acked.iter().filter(|i| !pages.contains(i)).count();
    assert_eq!(
        lost,
        0,
        "{lost} of {} acknowledged visits lost",
        seen.acked.len()
    );
    store.close().await;
    drop(server);
}
