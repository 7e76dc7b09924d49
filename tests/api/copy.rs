//! `footfall copy --from SRC --to DST` (API.md §0), both directions: SQLite -> PostgreSQL ->
//! SQLite, with every analytics answer compared along the way, so it is also a check that the
//! two backends answer alike from the same visits. PostgreSQL only.

use chrono::{Datelike, Utc};
use serde_json::{Value, json};

use crate::common::{TestApp, drop_postgres_db, fresh_postgres_db};

/// Every read endpoint's answer for the data below (the window is wide and no visit lies near
/// its start, so answers do not move between two calls).
async fn answers(app: &TestApp) -> Vec<(String, Value)> {
    let year = Utc::now().year();
    let mut out = Vec::new();
    for path in [
        "/summary?hours=24".to_owned(),
        "/summary?hours=3&limit=2".to_owned(),
        "/stats".to_owned(),
        "/stats/https%3A%2F%2Fa.example%2Fx".to_owned(),
        format!("/breakdown/all/pageview/{year}"),
        format!("/breakdown/b.example/order/{year}"),
        "/breakdown/all/pageview/2020/2".to_owned(),
        "/domains/day".to_owned(),
        "/all-visits?format=jsonl".to_owned(),
        "/sources?hours=24".to_owned(),
        "/devices?hours=24".to_owned(),
        "/hourly?hours=24&site=a.example".to_owned(),
        "/visits/home".to_owned(),
        "/visits/about".to_owned(),
    ] {
        let reply = app.get(&path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        let body = if path.contains("jsonl") {
            Value::String(reply.text())
        } else if path.starts_with("/visits/") {
            // `served_via` names the backend: only the count must match.
            reply.json()["count"].clone()
        } else {
            reply.json()
        };
        out.push((path, body));
    }
    out
}

fn copy(from: &std::path::Path, to: &std::path::Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_footfall"))
        .arg("copy")
        .arg("--from")
        .arg(from)
        .arg("--to")
        .arg(to)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
#[ignore = "needs PostgreSQL"]
async fn copy_moves_everything_both_ways_and_every_answer_stays_the_same() {
    let source = TestApp::new();
    let now = Utc::now().timestamp();
    let mut jsonl = String::new();
    for i in 0..300i64 {
        let page = ["a.example/x", "a.example/y", "b.example/"][i as usize % 3];
        let event = match i % 7 {
            0 => r#","event":"order""#,
            1 => r#","referrer":"https://news.example/item""#,
            _ => "",
        };
        jsonl.push_str(&format!(
            "{{\"url\":\"https://{page}\",\"ip\":\"10.0.0.{}\",\"user_agent\":\"UA{}\",\"timestamp\":{}{event}}}\n",
            i % 40,
            i % 4,
            now - 3600 - i * 20,
        ));
    }
    // Old visits, and one in February 2020.
    jsonl
        .push_str(r#"{"url":"https://old.example/","ip":"::1","timestamp":"2020-02-10 10:00:00"}"#);
    let report = source.import_jsonl(&jsonl).await;
    assert_eq!((report.imported, report.skipped), (301, 0));
    let reply = source
        .post_json(
            "/domains",
            &json!({"timestamp": now - 7200, "a.example": 80, "c.example": 5}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    for page in ["home", "home", "home", "about"] {
        let reply = source
            .post_json(&format!("/visit/{page}"), &json!({}))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let before = answers(&source).await;
    source.store().close().await;

    // SQLite -> PostgreSQL.
    let pg = fresh_postgres_db();
    let said = copy(&source.db, std::path::Path::new(&pg));
    assert!(
        said.contains("copied 301 visits, 85 pre-counted clicks and 4 per-page counter visits"),
        "{said}"
    );
    let on_pg = crate::scale_out::node(&pg);
    let after = answers(&on_pg).await;
    for ((path, x), (_, y)) in before.iter().zip(&after) {
        assert_eq!(x, y, "{path} differs on PostgreSQL");
    }
    assert!(on_pg.rollup_mismatches().await.is_empty());
    on_pg.store().close().await;

    // PostgreSQL -> a new SQLite file.
    let dir = tempfile::tempdir().unwrap();
    let back = dir.path().join("back.db");
    copy(std::path::Path::new(&pg), &back);
    drop_postgres_db(&pg);
    let mut args = footfall::config::ServeArgs::for_db(&back);
    args.ip_rate_per_second = 0;
    let on_sqlite = TestApp::from_parts(
        footfall::http::App::build(&args).unwrap(),
        back.clone(),
        tempfile::tempdir().unwrap(),
    );
    let again = answers(&on_sqlite).await;
    for ((path, x), (_, y)) in before.iter().zip(&again) {
        assert_eq!(x, y, "{path} differs after the copy back");
    }
}

#[test]
fn copy_from_a_missing_file_fails_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_footfall"))
        .args(["copy", "--from"])
        .arg(dir.path().join("missing.db"))
        .arg("--to")
        .arg(dir.path().join("to.db"))
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no database at"), "{stderr}");
}
