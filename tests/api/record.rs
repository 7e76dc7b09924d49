//! API.md §1 (recording) and §4 (health, docs): every shape and error case, in-process.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use crate::common::TestApp;

#[tokio::test]
async fn post_visit_answers_the_original_shape_after_commit() {
    let app = TestApp::new();
    let reply = app
        .visit(
            "https://Example.com:443/a?x=1#top",
            "203.0.113.5",
            "TestAgent/1.0",
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["url"], "https://example.com/a?x=1");
    assert_eq!(body["ip"], "203.0.113.5");
    assert_eq!(body["user_agent"], "TestAgent/1.0");
    assert_eq!(body["status"], "recorded");
    let ts = body["timestamp"].as_str().unwrap();
    assert_eq!(ts.len(), 19, "ISO with second precision: {ts}");
    assert_eq!(&ts[10..11], "T");
    // Committed before the answer: a fresh connection sees it.
    assert_eq!(app.stored_visits().await, 1);
    assert_eq!(app.total_visits("https://example.com/a?x=1").await, 1);
    assert!(app.rollup_mismatches().await.is_empty());
}

#[tokio::test]
async fn post_visit_accepts_text_plain_as_sent_by_send_beacon() {
    let app = TestApp::new();
    let reply = app
        .post_raw(
            "/visit",
            "text/plain;charset=UTF-8",
            r#"{"url":"https://a.com/beacon"}"#,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(app.total_visits("https://a.com/beacon").await, 1);
    // Media types are case-insensitive; `application/*+json` is JSON too.
    for ct in [
        "Application/JSON",
        "TEXT/PLAIN",
        "application/vnd.api+json; charset=utf-8",
        "application/+JSON",
    ] {
        let reply = app
            .post_raw("/visit", ct, r#"{"url":"https://a.com/beacon"}"#)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{ct}: {}", reply.text());
    }
    assert_eq!(app.total_visits("https://a.com/beacon").await, 5);
}

#[tokio::test]
async fn post_visit_rejects_other_content_types_with_415() {
    let app = TestApp::new();
    for ct in [
        "application/xml",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "application/json-seq",
        "text/json+json",
        "application+json",
        "text/plainx",
    ] {
        let reply = app
            .post_raw("/visit", ct, r#"{"url":"https://a.com/"}"#)
            .await;
        assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}");
        assert!(reply.detail().contains("Content-Type"));
    }
    assert_eq!(app.stored_visits().await, 0);
}

#[tokio::test]
async fn malformed_bodies_are_422_with_a_detail() {
    let app = TestApp::new();
    let cases: &[&[u8]] = &[
        b"",
        b"{",
        b"{\"url\": 5}",
        b"{\"nourl\": \"https://a.com\"}",
        b"[1,2]",
        b"\"https://a.com\"",
        b"{\"url\": \"https://a.com/\xff\xfe\"}",
        b"null",
    ];
    for body in cases {
        let reply = app
            .post_raw("/visit", "application/json", body.to_vec())
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{:?} -> {}",
            String::from_utf8_lossy(body),
            reply.text()
        );
        assert!(!reply.detail().is_empty());
    }
    assert_eq!(app.stored_visits().await, 0);
}

#[tokio::test]
async fn invalid_urls_are_400_invalid_url_format_and_record_nothing() {
    let app = TestApp::new();
    for url in [
        "not a url",
        "ftp://a.com/",
        "https://",
        "javascript:alert(1)",
        "https://a.com/\u{0}",
        "'; DROP TABLE visits; --",
    ] {
        let reply = app.post_json("/visit", &json!({ "url": url })).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{url:?}");
        assert_eq!(reply.detail(), "Invalid URL format");
    }
    let long = format!("https://a.com/{}", "x".repeat(2048));
    let reply = app.post_json("/visit", &json!({ "url": long })).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(app.stored_visits().await, 0);
}

#[tokio::test]
async fn extra_keys_are_ignored_and_a_bad_event_is_422() {
    let app = TestApp::new();
    let reply = app
        .post_json(
            "/visit",
            &json!({"url": "https://a.com/", "referrer": "x", "n": 1}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = app
        .post_json(
            "/visit",
            &json!({"url": "https://a.com/", "event": "Bad Event!"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.stored_visits().await, 1);
}

#[tokio::test]
async fn user_agent_defaults_to_unknown_and_is_cut_to_512_bytes() {
    let app = TestApp::new();
    let reply = app
        .post_raw("/visit", "application/json", r#"{"url":"https://a.com/"}"#)
        .await;
    assert_eq!(reply.json()["user_agent"], "unknown");
    let long = "A".repeat(2000);
    let reply = app.visit("https://a.com/", "1.2.3.4", &long).await;
    assert_eq!(reply.json()["user_agent"].as_str().unwrap().len(), 512);
}

#[tokio::test]
async fn bulk_visits_records_every_item_in_one_answer() {
    let app = TestApp::new();
    let items: Vec<Value> = (0..100)
        .map(|i| json!({"url": format!("https://a.com/{}", i % 7)}))
        .collect();
    let reply = app.post_json("/bulk-visits", &Value::Array(items)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({"status": "recorded", "visits_recorded": 100, "visits_rejected": 0, "ip": "127.0.0.1"})
    );
    assert_eq!(app.stored_visits().await, 100);
    assert!(app.rollup_mismatches().await.is_empty());
}

#[tokio::test]
async fn bulk_over_100_items_records_nothing() {
    let app = TestApp::new();
    let items: Vec<Value> = (0..101).map(|_| json!({"url": "https://a.com/"})).collect();
    let reply = app.post_json("/bulk-visits", &Value::Array(items)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.detail(), "Too many visits in bulk request (max 100)");
    assert_eq!(app.stored_visits().await, 0);
}

#[tokio::test]
async fn bulk_with_an_invalid_item_or_no_items_records_nothing() {
    let app = TestApp::new();
    let reply = app
        .post_json(
            "/bulk-visits",
            &json!([{"url": "https://a.com/"}, {"url": "bad"}]),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.detail(), "Invalid URL format");
    let reply = app.post_json("/bulk-visits", &json!([])).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    let reply = app
        .post_json("/bulk-visits", &json!({"url": "https://a.com/"}))
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.stored_visits().await, 0);
}

#[tokio::test]
async fn bodies_over_one_mib_are_413() {
    let app = TestApp::new();
    let body = format!(
        r#"{{"url":"https://a.com/","pad":"{}"}}"#,
        "x".repeat(1024 * 1024)
    );
    let reply = app.post_raw("/visit", "application/json", body).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(!reply.detail().is_empty());
    assert_eq!(app.stored_visits().await, 0);
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_json() {
    let app = TestApp::new();
    let reply = app.get("/no/such/thing").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.detail(), "Not Found");
    let reply = app
        .send(Request::put("/visit").body(Body::empty()).unwrap())
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.detail(), "Method Not Allowed");
}

#[tokio::test]
async fn health_reports_the_database() {
    let app = TestApp::new();
    let reply = app.get("/health").await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["database"], "connected");
    assert_eq!(body["timestamp"].as_str().unwrap().len(), 19);
}

#[tokio::test]
async fn openapi_documents_every_endpoint_and_docs_are_served_offline() {
    let app = TestApp::new();
    let reply = app.get("/openapi.json").await;
    assert_eq!(reply.status, StatusCode::OK);
    let doc = reply.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/visit",
        "/",
        "/bulk-visits",
        "/summary",
        "/stats/{url}",
        "/stats",
        "/all-visits",
        "/import",
        "/cleanup",
        "/health",
        "/metrics",
        "/visit/{page_id}",
        "/visits/{page_id}",
        "/domains/{period}",
        "/domains",
    ] {
        assert!(paths.contains_key(path), "{path} is not documented");
    }
    let docs = app.get("/docs/").await;
    assert_eq!(docs.status, StatusCode::OK);
    let html = docs.text();
    assert!(
        !html.contains("https://"),
        "Swagger UI must not load from a CDN"
    );
    let init = app.get("/docs/swagger-initializer.js").await;
    assert_eq!(init.status, StatusCode::OK);
    assert!(init.text().contains("/openapi.json"));
    assert!(
        init.text().contains(r#""validatorUrl": "none""#),
        "{}",
        init.text()
    );
    let bundle = app.get("/docs/swagger-ui-bundle.js").await;
    assert_eq!(bundle.status, StatusCode::OK);
    assert!(
        bundle.body.len() > 100_000,
        "Swagger UI is vendored in the binary"
    );
    let redoc = app.get("/redoc").await;
    assert_eq!(redoc.status, StatusCode::OK);
    assert!(redoc.text().contains("redoc"));
    assert!(
        redoc.text().contains("/sources"),
        "the page embeds the whole document"
    );
}

/// The writer delivers a batch's answers through a task on the runtime it was started in; a
/// writer started outside any runtime, or on one that has shut down since, answers each request
/// itself. Every one of these answers, and every visit is stored.
#[test]
fn answers_arrive_whichever_runtime_the_writer_was_started_in() {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let record_32 = |app: &TestApp, on: &tokio::runtime::Runtime| {
        on.block_on(async {
            let visits = (0..32).map(|i| async move {
                let url = format!("https://a.com/{i}");
                app.visit(&url, "10.0.0.1", "UA").await
            });
            for reply in futures_util::future::join_all(visits).await {
                assert_eq!(reply.status, StatusCode::OK);
            }
        });
        assert_eq!(on.block_on(app.stored_visits()), 32);
    };

    // Started on the runtime that serves, single- or multi-threaded (`--http-workers`): the
    // relay task answers.
    let serving = runtime();
    record_32(&serving.block_on(async { TestApp::new() }), &serving);
    let serving = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    record_32(&serving.block_on(async { TestApp::new() }), &serving);

    // Started outside any runtime.
    record_32(&TestApp::new(), &runtime());

    // Started on a runtime that has shut down since: the relay is gone.
    let gone = runtime();
    let app = gone.block_on(async { TestApp::new() });
    drop(gone);
    record_32(&app, &runtime());
}

crate::on_postgres!(
    post_visit_answers_the_original_shape_after_commit,
    post_visit_accepts_text_plain_as_sent_by_send_beacon,
    post_visit_rejects_other_content_types_with_415,
    malformed_bodies_are_422_with_a_detail,
    invalid_urls_are_400_invalid_url_format_and_record_nothing,
    extra_keys_are_ignored_and_a_bad_event_is_422,
    user_agent_defaults_to_unknown_and_is_cut_to_512_bytes,
    bulk_visits_records_every_item_in_one_answer,
    bulk_over_100_items_records_nothing,
    bulk_with_an_invalid_item_or_no_items_records_nothing,
    bodies_over_one_mib_are_413,
    unknown_paths_and_methods_answer_json,
    health_reports_the_database,
    openapi_documents_every_endpoint_and_docs_are_served_offline,
    answers_arrive_whichever_runtime_the_writer_was_started_in,
);
