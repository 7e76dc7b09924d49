//! API.md §3 import: the timestamp layouts real exports contain (docs/API.md, "Timestamps") are
//! imported as the instant they name, through `POST /import` and `footfall import` alike;
//! anything else, impossible dates included, is skipped and reported by line.

use axum::http::StatusCode;
use serde_json::Value;

use crate::common::{TestApp, footfall_cli};

/// Layouts that all name 2025-07-28 10:30:00 UTC (9:05:03 for the single-digit ones is below).
const SAME_INSTANT: &[&str] = &[
    "2025-07-28 10:30:00",
    "2025-07-28T10:30:00",
    "2025/07/28 10:30:00",
    "2025/7/28 10:30",
    "2025-07-28T10:30:00Z",
    "2025-07-28T10:30:00.750Z",
    "2025-07-28 10:30:00.123456",
    "2025-07-28T12:30:00+02:00",
    "2025-07-28 12:30:00 +0200",
    "2025-07-28T05:30:00-05",
];

/// Refused: impossible dates and times, day-first or month-first dates, unknown zones.
const REFUSED: &[&str] = &[
    "2025-02-29 10:30:00",
    "2025/04/31 10:30:00",
    "2025-07-28 24:00:00",
    "28/07/2025 10:30:00",
    "07/28/2025 10:30",
    "2025-07-28 10:30:00 CEST",
];

fn record(timestamp: &str) -> String {
    format!(
        r#"{{"url":"https://a.com/p","ip":"10.0.0.1","user_agent":"UA","timestamp":"{timestamp}"}}"#
    )
}

/// The body: every accepted layout, a single-digit one, then every refused one.
fn body() -> String {
    let mut lines: Vec<String> = SAME_INSTANT.iter().map(|t| record(t)).collect();
    lines.push(record("2025/7/28 9:5:3"));
    lines.extend(REFUSED.iter().map(|t| record(t)));
    lines.join("\n") + "\n"
}

/// The timestamps of an export (SPACE form, second precision), sorted.
async fn exported_timestamps(app: &TestApp) -> Vec<String> {
    let reply = app.get("/all-visits?format=jsonl").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let mut out: Vec<String> = reply
        .text()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["timestamp"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    out.sort();
    out
}

fn want_timestamps() -> Vec<String> {
    let mut want = vec!["2025-07-28 09:05:03".to_owned()];
    want.extend(std::iter::repeat_n(
        "2025-07-28 10:30:00".to_owned(),
        SAME_INSTANT.len(),
    ));
    want
}

#[tokio::test]
async fn post_import_takes_real_export_layouts_and_reports_the_rest_by_line() {
    let app = TestApp::new();
    let reply = app
        .post_raw("/import", "application/x-ndjson", body())
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let report = reply.json();
    assert_eq!(report["imported"], SAME_INSTANT.len() as u64 + 1);
    assert_eq!(report["skipped"], REFUSED.len() as u64);
    let errors = report["errors"].as_array().unwrap();
    let first_refused = SAME_INSTANT.len() + 2;
    for (i, (error, raw)) in errors.iter().zip(REFUSED).enumerate() {
        assert_eq!(error["line"], (first_refused + i) as u64, "{raw}");
        let detail = error["detail"].as_str().unwrap();
        assert!(
            detail.contains(raw) && detail.contains("not a valid time"),
            "{detail}"
        );
    }
    assert_eq!(exported_timestamps(&app).await, want_timestamps());
}

#[tokio::test]
async fn cli_import_takes_the_same_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("v.db");
    let file = dir.path().join("in.jsonl");
    std::fs::write(&file, body()).unwrap();
    let out = footfall_cli(&["import", file.to_str().unwrap()], &db);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let want = format!(
        "imported {} visits, skipped {}",
        SAME_INSTANT.len() + 1,
        REFUSED.len()
    );
    assert!(stdout.contains(&want), "{stdout}");
    let out = footfall_cli(&["export", "--format", "jsonl"], &db);
    assert!(out.status.success());
    let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["timestamp"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    got.sort();
    assert_eq!(got, want_timestamps());
}

crate::on_postgres!(
    post_import_takes_real_export_layouts_and_reports_the_rest_by_line,
    cli_import_takes_the_same_layouts,
);
