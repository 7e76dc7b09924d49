//! API.md §1, `GET /?url=`: the answer carries the keys of both versions of the original
//! service, so clients of either work unchanged.

use axum::http::StatusCode;

use crate::common::TestApp;

#[tokio::test]
async fn legacy_get_answers_the_keys_of_both_original_versions() {
    let app = TestApp::new();
    let reply = app.get("/?url=https%3A%2F%2Fa.com%2Flegacy").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    // The first version's keys.
    assert_eq!(body["url"], "https://a.com/legacy");
    assert_eq!(body["ip"], "127.0.0.1");
    assert_eq!(body["status"], "recorded");
    assert!(body["user_agent"].is_string());
    // The later version's keys: a SPACE timestamp and the count as a string.
    assert_eq!(body["message"], "Visit recorded!");
    let ts = body["timestamp"].as_str().unwrap();
    assert_eq!(ts.len(), 19, "SPACE form with second precision: {ts}");
    assert_eq!(&ts[10..11], " ", "{ts}");
    assert!(footfall::domain::parse_timestamp(ts).is_some(), "{ts}");
    assert_eq!(body["visits"], "1");
    assert_eq!(app.total_visits("https://a.com/legacy").await, 1);

    let reply = app.get("/?url=https%3A%2F%2Fa.com%2Flegacy").await;
    assert_eq!(reply.json()["visits"], "2");
}

#[tokio::test]
async fn legacy_get_counts_committed_visits_with_thousands_separators() {
    let app = TestApp::new();
    let line = r#"{"url":"https://a.com/big","ip":"10.0.0.1","user_agent":"UA","timestamp":"2025-07-28 10:30:00"}"#;
    let jsonl = format!("{line}\n").repeat(1233);
    assert_eq!(app.import_jsonl(&jsonl).await.imported, 1233);
    // Another page's visits are not counted.
    app.visit("https://a.com/other", "10.0.0.2", "UA").await;

    let reply = app.get("/?url=https%3A%2F%2Fa.com%2Fbig").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["visits"], "1,234");
}

#[tokio::test]
async fn legacy_get_refuses_a_missing_or_invalid_url_as_before() {
    let app = TestApp::new();
    let reply = app.get("/").await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(reply.detail().contains("url"));
    let reply = app.get("/?url=nope").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.detail(), "Invalid URL format");
    assert_eq!(app.stored_visits().await, 0);
}

crate::on_postgres!(
    legacy_get_answers_the_keys_of_both_original_versions,
    legacy_get_counts_committed_visits_with_thousands_separators,
    legacy_get_refuses_a_missing_or_invalid_url_as_before,
);
