//! The request log (docs/OPERATIONS.md, Logs): one line per request in tracing-subscriber's
//! text or JSON format (the successful answers of the recording routes at DEBUG, the rest at
//! INFO), a `500` at ERROR with its cause, and never a token or a query string. Each test runs
//! a real server and reads its stderr.

use std::fs::File;
use std::path::PathBuf;

use footfall::config::ServeArgs;
use serde_json::{Value, json};

use crate::common::ServerProcess;

/// A real server whose stderr (the log) goes to a file.
struct LoggedServer {
    server: ServerProcess,
    base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoggedServer {
    /// At the default level (`RUST_LOG` unset).
    fn start(extra: &[&str]) -> Self {
        Self::start_logging(extra, None)
    }

    fn start_logging(extra: &[&str], rust_log: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let server = ServerProcess::start_logging(
            &dir.path().join("visits.db"),
            extra,
            File::create(&log).unwrap(),
            rust_log,
        );
        Self {
            base: server.base.clone(),
            server,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// Stops the server with SIGTERM (so it logs its shutdown) and returns the whole log.
    fn stop(mut self) -> String {
        assert!(self.server.terminate().success());
        self.log()
    }
}

/// The JSON log lines that end a request ("finished processing request").
fn request_lines(log: &str) -> Vec<Value> {
    log.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|l| l["message"] == "finished processing request")
        .collect()
}

/// A `500` is logged on its request's line, at ERROR level, with its cause and the request id
/// the client saw, so the two can be matched.
#[tokio::test]
async fn a_500_is_logged_with_its_cause_and_request_id() {
    let server = LoggedServer::start(&["--log-format", "json"]);
    // A table the query needs goes missing under the running server (which may hold the
    // rollups file's lock for a moment: wait for it, as any writer beside it must).
    let rollups = rusqlite::Connection::open(server._dir.path().join("visits.rollups.db")).unwrap();
    rollups
        .busy_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    rollups
        .execute_batch("DROP TABLE page_hour_agents")
        .unwrap();
    let reply = reqwest::get(format!("{}/summary?hours=24", server.base))
        .await
        .unwrap();
    assert_eq!(reply.status(), 500);
    let request_id = reply.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(
        reply.json::<Value>().await.unwrap(),
        json!({"detail": "Internal server error"}),
        "the cause stays out of the answer"
    );

    let log = server.stop();
    let failed: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|l| l["message"] == "request failed")
        .collect();
    assert_eq!(failed.len(), 1, "{log}");
    let line = &failed[0];
    assert_eq!(line["level"], "ERROR", "{line}");
    assert_eq!(line["status"], 500, "{line}");
    assert_eq!(line["path"], "/summary", "{line}");
    assert_eq!(line["request_id"], request_id.as_str(), "{line}");
    assert!(
        line["error"].as_str().unwrap().contains("page_hour_agents"),
        "{line}"
    );
}

#[tokio::test]
async fn json_logs_have_one_line_per_request_with_status_and_path_and_never_the_token() {
    let token = "s3cret-token";
    let server = LoggedServer::start(&["--admin-token", token, "--log-format", "json"]);
    let client = reqwest::Client::new();
    let base = &server.base;
    let bearer = format!("Bearer {token}");
    let import = "{\"url\":\"https://logs.example/\",\"ip\":\"1.2.3.4\",\"user_agent\":\"t\",\
                  \"timestamp\":\"2025-07-28 10:30:00\"}\n";
    let answers = [
        client
            .post(format!("{base}/import"))
            .header("authorization", &bearer)
            .body(import)
            .send()
            .await
            .unwrap()
            .status(),
        client
            .get(format!("{base}/all-visits?format=jsonl"))
            .header("authorization", &bearer)
            .send()
            .await
            .unwrap()
            .status(),
        client
            .delete(format!("{base}/cleanup?days=30"))
            .header("authorization", &bearer)
            .send()
            .await
            .unwrap()
            .status(),
        // Even a token put where it does not belong stays out of the log.
        client
            .get(format!("{base}/all-visits?token={token}"))
            .send()
            .await
            .unwrap()
            .status(),
    ];
    assert_eq!(answers.map(|s| s.as_u16()), [200, 200, 200, 401]);

    // Visits recorded are not logged at the default level; a refused one is (counted once the
    // server has stopped: lines are written by a background thread, and only a stop flushes
    // them all).
    record_visits(&client, base).await;
    let refused = client
        .post(format!("{base}/visit"))
        .header("content-type", "application/json")
        .body("{\"url\": 42}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    let log = server.stop();
    let recording_lines = log
        .lines()
        .filter(|l| l.contains("\"path\":\"/visit\"") || l.contains("\"path\":\"/bulk-visits\""))
        .count();
    assert_eq!(recording_lines, 1, "only the refused visit:\n{log}");
    assert!(!log.contains("logs.example"), "no line per visit:\n{log}");
    assert!(
        !log.contains(token),
        "the admin token is in the log:\n{log}"
    );
    let lines = request_lines(&log);
    let found = |method: &str, path: &str, status: u64| {
        lines
            .iter()
            .any(|l| l["method"] == method && l["path"] == path && l["status"] == status)
    };
    assert!(found("POST", "/import", 200), "{log}");
    assert!(found("GET", "/all-visits", 200), "{log}");
    assert!(found("DELETE", "/cleanup", 200), "{log}");
    assert!(found("GET", "/all-visits", 401), "{log}");
    assert!(found("POST", "/visit", 422), "{log}");
    for line in &lines {
        assert_eq!(line["level"], "INFO");
        assert!(
            line["latency_ms"].is_f64(),
            "milliseconds as a number: {line}"
        );
        assert_eq!(
            line["request_id"].as_str().map(str::len),
            Some(36),
            "{line}"
        );
    }
    assert_eq!(lines.len(), 4 + 1);
}

/// One bulk request of 50 visits and five single visits, all answered `200`.
async fn record_visits(client: &reqwest::Client, base: &str) {
    let bulk: Vec<Value> = (0..50)
        .map(|i| json!({ "url": format!("https://logs.example/{i}") }))
        .collect();
    let reply = client
        .post(format!("{base}/bulk-visits"))
        .json(&bulk)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    for i in 0..5 {
        let reply = client
            .post(format!("{base}/visit"))
            .json(&json!({ "url": format!("https://logs.example/single/{i}") }))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
    }
}

/// With the request log at debug (as docs/OPERATIONS.md says to turn it on), the recording
/// routes' successful answers have their lines too: one per request, none per visit.
#[tokio::test]
async fn recorded_visits_are_logged_at_debug() {
    let server = LoggedServer::start_logging(
        &["--log-format", "json"],
        Some("info,footfall::telemetry=debug"),
    );
    record_visits(&reqwest::Client::new(), &server.base).await;
    let log = server.stop();
    let lines = request_lines(&log);
    let recording: Vec<&Value> = (lines.iter())
        .filter(|l| l["path"] == "/visit" || l["path"] == "/bulk-visits")
        .collect();
    assert_eq!(recording.len(), 1 + 5, "{log}");
    for line in recording {
        assert_eq!(line["level"], "DEBUG", "{line}");
        assert_eq!(line["status"], 200, "{line}");
    }
    assert!(!log.contains("logs.example"), "no line per visit:\n{log}");
}

#[tokio::test]
async fn text_logs_are_one_readable_line_per_request() {
    let server = LoggedServer::start(&["--log-format", "text"]);
    let reply = reqwest::get(format!("{}/health", server.base))
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let log = server.stop();
    let line = log
        .lines()
        .find(|l| l.contains("finished processing request"))
        .unwrap_or_else(|| panic!("no request line in:\n{log}"));
    assert!(line.contains("INFO"), "{line}");
    assert!(line.contains("method=GET"), "{line}");
    assert!(line.contains("path=/health"), "{line}");
    assert!(line.contains("status=200"), "{line}");
    assert!(line.contains("latency_ms="), "{line}");
    assert!(line.contains("request_id="), "{line}");
    assert!(
        serde_json::from_str::<Value>(line).is_err(),
        "text, not JSON"
    );
    assert!(
        !line.contains('\u{1b}'),
        "no colour codes when not on a terminal"
    );
}

/// When stderr cannot keep up, new lines are dropped rather than slow requests down: the
/// count is a metric, there from the start.
#[tokio::test]
async fn a_server_counts_the_log_lines_it_dropped_in_its_metrics() {
    let server = LoggedServer::start(&[]);
    let text = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.lines()
            .any(|l| l == "footfall_log_lines_dropped_total 0"),
        "{text}"
    );
    assert!(
        text.contains("# HELP footfall_log_lines_dropped_total"),
        "{text}"
    );
}

#[test]
fn the_debug_form_of_the_serve_options_hides_the_admin_token() {
    let mut args = ServeArgs::for_db("visits.db");
    args.admin_token = Some("s3cret-token".into());
    let shown = format!("{args:?}");
    assert!(!shown.contains("s3cret-token"), "{shown}");
    assert!(
        shown.contains("admin_token: Some(\"<redacted>\")"),
        "{shown}"
    );
}

// SQLite-only: `a_500_is_logged_with_its_cause_and_request_id` (it breaks the SQLite rollups file by hand to cause the 500).
crate::on_postgres!(
    json_logs_have_one_line_per_request_with_status_and_path_and_never_the_token,
    recorded_visits_are_logged_at_debug,
    text_logs_are_one_readable_line_per_request,
    a_server_counts_the_log_lines_it_dropped_in_its_metrics,
    the_debug_form_of_the_serve_options_hides_the_admin_token,
);
