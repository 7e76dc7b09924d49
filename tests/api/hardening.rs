//! Bad input (issue 4): malformed and hostile requests of every kind answer a 4xx
//! `{"detail": "..."}` with that one key — never a 5xx, never a panic — and store nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::json;
use tower::ServiceExt;

use crate::common::{Reply, ServerProcess, TestApp, stored_visits};

/// Checks a refusal: `status`, a JSON body with `detail` alone, and returns the detail.
fn refused(reply: &Reply, status: StatusCode, what: &str) -> String {
    assert_eq!(reply.status, status, "{what}: {}", reply.text());
    assert_eq!(
        reply
            .headers
            .get("content-type")
            .map(|v| v.to_str().unwrap()),
        Some("application/json"),
        "{what}"
    );
    let detail = reply.detail();
    assert!(!detail.is_empty(), "{what}");
    detail
}

fn request(method: Method, uri: &str, content_type: Option<&str>, body: Vec<u8>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(content_type) = content_type {
        builder = builder.header("content-type", content_type);
    }
    builder.body(Body::from(body)).unwrap()
}

async fn post_bytes(app: &TestApp, uri: &str, body: impl Into<Vec<u8>>) -> Reply {
    app.send(request(
        Method::POST,
        uri,
        Some("application/json"),
        body.into(),
    ))
    .await
}

/// Nothing reached the database: no visit, no pre-counted click, nothing in any figure.
async fn assert_nothing_stored(app: &TestApp) {
    assert_eq!(app.stored_visits().await, 0, "a visit was stored");
    let stats = app.get("/stats").await.json();
    assert_eq!(stats["total_visits"], 0, "{stats}");
    let top = app.get("/domains/day").await.json();
    assert_eq!(top["domains"], json!({}), "clicks were stored: {top}");
    assert!(app.rollup_mismatches().await.is_empty());
}

#[tokio::test]
async fn malformed_json_bodies_are_422_and_store_nothing() {
    let app = TestApp::new();
    for (uri, body) in [
        ("/visit", "{\"url\": "),
        ("/visit", "{url: 'https://a.com/'}"),
        ("/visit", "[1, 2"),
        ("/visit", "{\"url\": 42}"),
        ("/visit", "{\"event\": \"pageview\"}"),
        ("/visit", "null"),
        ("/visit", "   "),
        ("/bulk-visits", "[{]"),
        ("/bulk-visits", "{\"url\": \"https://a.com/\"}"),
        ("/bulk-visits", "[{\"url\": \"https://a.com/\"}] trailing"),
        ("/domains", "{\"timestamp\": 1644407344, "),
        ("/domains", "[]"),
    ] {
        let reply = post_bytes(&app, uri, body).await;
        refused(
            &reply,
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("{uri} {body}"),
        );
    }
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn invalid_utf8_anywhere_is_refused_or_ignored_never_a_5xx() {
    let app = TestApp::new();
    // In a JSON body: not JSON at all.
    let mut body = b"{\"url\": \"https://a.com/".to_vec();
    body.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    body.extend_from_slice(b"\"}");
    for uri in ["/visit", "/bulk-visits", "/domains"] {
        let reply = post_bytes(&app, uri, body.clone()).await;
        refused(&reply, StatusCode::UNPROCESSABLE_ENTITY, uri);
    }
    // Percent-encoded in a path or a query: an invalid URL.
    let reply = app.get("/stats/https%3A%2F%2Fa.com%2F%FF%FE").await;
    assert_eq!(
        refused(&reply, StatusCode::BAD_REQUEST, "stats"),
        "Invalid URL format"
    );
    let reply = app.get("/visits/%FF%FE").await;
    refused(&reply, StatusCode::UNPROCESSABLE_ENTITY, "page id");
    let reply = app.get("/breakdown/%FF/pageview/2025").await;
    refused(&reply, StatusCode::UNPROCESSABLE_ENTITY, "site");
    assert_nothing_stored(&app).await;

    // In a query string, percent-decoding is lossy (as in the original service): the bytes
    // become U+FFFD, and the URL is stored as valid UTF-8 text.
    let reply = app.get("/?url=https%3A%2F%2Fa.com%2F%FF%FE").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["url"], "https://a.com/\u{fffd}\u{fffd}");
    assert_eq!(app.stored_visits().await, 1);

    // In a header (obs-text bytes are legal on the wire): the user agent becomes "unknown".
    let request = Request::post("/visit")
        .header("content-type", "application/json")
        .header(
            "user-agent",
            axum::http::HeaderValue::from_bytes(b"Mozilla \xff\xfe").unwrap(),
        )
        .header(
            "x-forwarded-for",
            axum::http::HeaderValue::from_bytes(b"\xff1.2.3.4").unwrap(),
        )
        .body(Body::from(json!({"url": "https://a.com/"}).to_string()))
        .unwrap();
    let reply = app.send(request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["user_agent"], "unknown");
    assert_eq!(reply.json()["ip"], "127.0.0.1");
}

#[tokio::test]
async fn a_body_over_one_mib_is_413_json() {
    let app = TestApp::new();
    let padding = "x".repeat(1024 * 1024);
    let big = json!({ "url": "https://a.com/", "padding": padding }).to_string();
    for uri in ["/visit", "/bulk-visits", "/domains"] {
        let reply = post_bytes(&app, uri, big.clone()).await;
        let detail = refused(&reply, StatusCode::PAYLOAD_TOO_LARGE, uri);
        assert_eq!(detail, "Request body is larger than the limit of 1 MiB");
    }
    // Without a length up front (a streamed body), the limit still holds.
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = (0..20)
        .map(|_| Ok(bytes::Bytes::from(vec![b' '; 64 * 1024])))
        .collect();
    let request = Request::post("/visit")
        .header("content-type", "application/json")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .unwrap();
    let reply = app.send(request).await;
    refused(&reply, StatusCode::PAYLOAD_TOO_LARGE, "streamed");
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn deeply_nested_json_is_refused_without_exhausting_the_stack() {
    let app = TestApp::new();
    for open in ["[", "{\"a\":"] {
        let deep = open.repeat(10_000);
        for uri in ["/visit", "/bulk-visits", "/domains"] {
            let reply = post_bytes(&app, uri, deep.clone()).await;
            refused(&reply, StatusCode::UNPROCESSABLE_ENTITY, uri);
        }
        let reply = app
            .send(request(
                Method::POST,
                "/import",
                Some("application/x-ndjson"),
                deep.clone().into_bytes(),
            ))
            .await;
        assert!(
            reply.status.is_client_error() || reply.json()["imported"] == 0,
            "{}: {}",
            reply.status,
            reply.text()
        );
        if reply.status.is_client_error() {
            reply.detail();
        }
    }
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn nul_bytes_in_urls_names_and_ids_are_refused() {
    let app = TestApp::new();
    let reply = app
        .post_json("/visit", &json!({ "url": "https://a.com/\u{0}x" }))
        .await;
    assert_eq!(
        refused(&reply, StatusCode::BAD_REQUEST, "url"),
        "Invalid URL format"
    );
    let reply = app
        .post_json(
            "/visit",
            &json!({ "url": "https://a.com/", "event": "page\u{0}view" }),
        )
        .await;
    refused(&reply, StatusCode::UNPROCESSABLE_ENTITY, "event");
    let reply = app
        .post_json(
            "/bulk-visits",
            &json!([{ "url": "https://a.com/" }, { "url": "https://a\u{0}.com/" }]),
        )
        .await;
    refused(&reply, StatusCode::BAD_REQUEST, "bulk");
    let reply = app.get("/?url=https%3A%2F%2Fa.com%2F%00").await;
    assert_eq!(
        refused(&reply, StatusCode::BAD_REQUEST, "legacy"),
        "Invalid URL format"
    );
    let reply = app.get("/stats/https%3A%2F%2Fa.com%2F%00").await;
    assert_eq!(
        refused(&reply, StatusCode::BAD_REQUEST, "stats"),
        "Invalid URL format"
    );
    let reply = app.post_raw("/visit/home%00", "application/json", "").await;
    refused(&reply, StatusCode::UNPROCESSABLE_ENTITY, "page id");
    let reply = app.get("/breakdown/a%00.com/pageview/2025").await;
    refused(&reply, StatusCode::UNPROCESSABLE_ENTITY, "site");
    let reply = app.get("/breakdown/all/page%00view/2025").await;
    refused(&reply, StatusCode::UNPROCESSABLE_ENTITY, "event");
    let reply = app
        .post_json(
            "/domains",
            &json!({ "timestamp": 1644407344, "a\u{0}.com": 5 }),
        )
        .await;
    refused(&reply, StatusCode::UNPROCESSABLE_ENTITY, "domains");
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn enormous_headers_and_query_strings_are_handled_in_process() {
    let app = TestApp::new();
    // 60 KB: just under the longest URI the HTTP layer takes (64 KiB; see the wire test).
    let huge = "a".repeat(60 * 1024);
    // An invalid URL where the query is the URL, ignored elsewhere.
    let reply = app
        .get(&format!("/?url=https%3A%2F%2Fa.com%2F{huge}"))
        .await;
    assert_eq!(
        refused(&reply, StatusCode::BAD_REQUEST, "legacy"),
        "Invalid URL format"
    );
    let reply = app.get(&format!("/summary?hours=24&junk={huge}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let reply = app
        .get(&format!("/stats/https%3A%2F%2Fa.com%2F{huge}"))
        .await;
    assert_eq!(
        refused(&reply, StatusCode::BAD_REQUEST, "stats"),
        "Invalid URL format"
    );
    let reply = app.get(&format!("/visits/{huge}")).await;
    refused(&reply, StatusCode::UNPROCESSABLE_ENTITY, "page id");
    let reply = app.get(&format!("/breakdown/{huge}/pageview/2025")).await;
    refused(&reply, StatusCode::UNPROCESSABLE_ENTITY, "site");
    assert_nothing_stored(&app).await;

    let huge = "a".repeat(100 * 1024);
    // A 100 KB user agent is cut to 512 bytes; a 100 KB forwarding header is ignored.
    let request = Request::post("/visit")
        .header("content-type", "application/json")
        .header("user-agent", huge.as_str())
        .header("x-forwarded-for", huge.as_str())
        .header("cookie", huge.as_str())
        .body(Body::from(json!({"url": "https://a.com/"}).to_string()))
        .unwrap();
    let reply = app.send(request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["user_agent"].as_str().unwrap().len(), 512);
    assert_eq!(reply.json()["ip"], "127.0.0.1");
    assert_eq!(app.stored_visits().await, 1);
}

/// Sends `raw` on a fresh connection and returns what the server wrote back (until it closes
/// the connection or stops writing for a second).
fn exchange(addr: &str, raw: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // The server may answer (and close) before it has read everything: ignore a reset.
    let _ = stream.write_all(raw);
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                stream
                    .set_read_timeout(Some(Duration::from_secs(1)))
                    .unwrap();
            }
        }
    }
    answer
}

fn status_of(answer: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(answer);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"))
}

#[tokio::test]
async fn over_the_wire_huge_headers_and_garbage_get_a_4xx_and_the_server_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("visits.db");
    let server = ServerProcess::start(&db, &["--ip-rate-per-second", "0"]);
    let addr = server.base.trim_start_matches("http://").to_owned();
    let answers = tokio::task::spawn_blocking(move || {
        let huge = "a".repeat(100 * 1024);
        let giant = "a".repeat(1024 * 1024);
        let cases: Vec<Vec<u8>> = vec![
            // A 60 KB query string reaches the handler.
            format!(
                "GET /?url=https%3A%2F%2Fa.com%2F{} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                "a".repeat(60 * 1024)
            )
            .into_bytes(),
            // A 100 KB one is past the longest URI hyper parses (64 KiB): 414.
            format!(
                "GET /?url=https%3A%2F%2Fa.com%2F{huge} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
            .into_bytes(),
            // A 100 KB header is within what the server reads.
            format!(
                "GET /health HTTP/1.1\r\nHost: t\r\nX-Junk: {huge}\r\nConnection: close\r\n\r\n"
            )
            .into_bytes(),
            // A 1 MiB header is past it (hyper reads at most ~400 KB of head): 431.
            format!(
                "GET /health HTTP/1.1\r\nHost: t\r\nX-Junk: {giant}\r\nConnection: close\r\n\r\n"
            )
            .into_bytes(),
            // Not HTTP at all.
            b"\x00\x01\x02GARBAGE\r\n\r\n".to_vec(),
            b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        ];
        let answers: Vec<Vec<u8>> = cases.iter().map(|raw| exchange(&addr, raw)).collect();
        let health = exchange(
            &addr,
            b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        (answers, health)
    })
    .await
    .unwrap();
    let (answers, health) = answers;
    let legacy = String::from_utf8_lossy(&answers[0]);
    assert_eq!(status_of(&answers[0]), 400, "{legacy}");
    assert!(
        legacy.ends_with("{\"detail\":\"Invalid URL format\"}"),
        "{legacy}"
    );
    // The HTTP layer (hyper) refuses these before any of footfall's code runs, so their
    // bodies are empty rather than JSON: a 4xx all the same, and the connection is closed.
    assert_eq!(status_of(&answers[1]), 414, "URI too long");
    assert_eq!(status_of(&answers[2]), 200);
    assert_eq!(status_of(&answers[3]), 431, "header too large");
    for answer in &answers[4..] {
        assert_eq!(status_of(answer), 400);
    }
    assert_eq!(status_of(&health), 200, "the server still answers");
    assert_eq!(stored_visits(&db).await, 0);
}

#[tokio::test]
async fn every_numeric_parameter_out_of_range_is_a_4xx() {
    let app = TestApp::new();
    let cases: &[(&str, u16)] = &[
        ("/summary?hours=1000000000", 422),
        ("/summary?hours=-1", 422),
        ("/summary?hours=0", 422),
        ("/summary?hours=8761", 422),
        ("/summary?hours=abc", 422),
        ("/summary?hours=1.5", 422),
        ("/summary?hours=99999999999999999999", 422),
        ("/summary?limit=-5", 422),
        ("/summary?limit=0", 422),
        ("/summary?limit=abc", 422),
        ("/summary?limit=99999999999999999999", 422),
        ("/stats/https://a.com/?hours=1000000000", 422),
        ("/stats/https%3A%2F%2Fa.com%2F?hours=-1", 422),
        ("/stats/https%3A%2F%2Fa.com%2F?hours=abc", 422),
        (
            "/stats/https%3A%2F%2Fa.com%2F?hours=99999999999999999999",
            422,
        ),
        ("/all-visits?limit=-5", 422),
        ("/all-visits?limit=abc", 422),
        ("/all-visits?offset=-1", 422),
        ("/all-visits?offset=99999999999999999999", 422),
        ("/all-visits?start_date=2025-02-30", 422),
        ("/all-visits?end_date=99999-01-01", 422),
        ("/all-visits?since=abc", 422),
        ("/all-visits?range=2025-01-01", 422),
        ("/all-visits?format=xml", 422),
        ("/breakdown/all/pageview/2025/2/30", 422),
        ("/breakdown/all/pageview/2025/13", 422),
        ("/breakdown/all/pageview/2025/0", 422),
        ("/breakdown/all/pageview/2025/1/0", 422),
        ("/breakdown/all/pageview/2025/1/32", 422),
        ("/breakdown/all/pageview/2025/1/1/24", 422),
        ("/breakdown/all/pageview/2025/1/1/-1", 422),
        ("/breakdown/all/pageview/1969", 422),
        ("/breakdown/all/pageview/-1", 422),
        ("/breakdown/all/pageview/99999999999", 422),
        ("/breakdown/all/pageview/abc", 422),
        ("/breakdown/all/pageview/2025/abc", 422),
        ("/breakdown/all/pageview/2025/1/1/99999999999999999999", 422),
        ("/domains/week", 422),
        ("/domains/min?limit=0", 422),
        ("/domains/hour?limit=1001", 422),
        ("/domains/day?limit=-5", 422),
        ("/domains/day?limit=abc", 422),
        ("/visits/{}", 422),
    ];
    for (uri, status) in cases {
        let reply = app.get(uri).await;
        refused(&reply, StatusCode::from_u16(*status).unwrap(), uri);
    }
    let long_id = format!("/visits/{}", "a".repeat(257));
    refused(
        &app.get(&long_id).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "257-char id",
    );

    let cleanups: &[(&str, u16)] = &[
        ("/cleanup?days=0", 400),
        ("/cleanup?days=-1", 400),
        ("/cleanup?days=abc", 422),
        ("/cleanup?days=1.5", 422),
        ("/cleanup?days=99999999999999999999", 422),
    ];
    for (uri, status) in cleanups {
        let reply = app.delete(uri).await;
        let detail = refused(&reply, StatusCode::from_u16(*status).unwrap(), uri);
        if *status == 400 {
            assert_eq!(detail, "Days must be at least 1");
        }
    }
    // A huge but valid day count reaches back before 1970: nothing is that old.
    let reply = app.delete("/cleanup?days=99999999999").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["deleted_visits"], 0);
    assert_eq!(reply.json()["cutoff_date"], "1970-01-01T00:00:00");
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn sql_looking_input_is_refused_and_stores_nothing() {
    let app = TestApp::new();
    let sql = "' OR 1=1 --";
    let enc = "%27%20OR%201%3D1%20--";
    let reply = app.post_json("/visit", &json!({ "url": sql })).await;
    assert_eq!(
        refused(&reply, StatusCode::BAD_REQUEST, "url"),
        "Invalid URL format"
    );
    let reply = app
        .post_json("/bulk-visits", &json!([{ "url": sql }]))
        .await;
    refused(&reply, StatusCode::BAD_REQUEST, "bulk url");
    let reply = app.get(&format!("/?url={enc}")).await;
    assert_eq!(
        refused(&reply, StatusCode::BAD_REQUEST, "legacy"),
        "Invalid URL format"
    );
    let reply = app.get(&format!("/stats/{enc}")).await;
    assert_eq!(
        refused(&reply, StatusCode::BAD_REQUEST, "stats"),
        "Invalid URL format"
    );
    let reply = app
        .post_json("/visit", &json!({ "url": "https://a.com/", "event": sql }))
        .await;
    refused(&reply, StatusCode::UNPROCESSABLE_ENTITY, "event");
    let reply = app
        .post_raw(&format!("/visit/{enc}"), "application/json", "")
        .await;
    refused(&reply, StatusCode::UNPROCESSABLE_ENTITY, "page id");
    let reply = app.get(&format!("/visits/{enc}")).await;
    refused(&reply, StatusCode::UNPROCESSABLE_ENTITY, "page id");
    let reply = app.get(&format!("/breakdown/{enc}/pageview/2025")).await;
    refused(&reply, StatusCode::UNPROCESSABLE_ENTITY, "site");
    let reply = app.get(&format!("/breakdown/all/{enc}/2025")).await;
    refused(&reply, StatusCode::UNPROCESSABLE_ENTITY, "event");
    let reply = app.get(&format!("/domains/{enc}")).await;
    refused(&reply, StatusCode::UNPROCESSABLE_ENTITY, "period");
    let reply = app
        .post_json("/domains", &json!({ "timestamp": 1644407344, sql: 5 }))
        .await;
    refused(&reply, StatusCode::UNPROCESSABLE_ENTITY, "domains site");
    let reply = app.get(&format!("/all-visits?since={enc}")).await;
    refused(&reply, StatusCode::UNPROCESSABLE_ENTITY, "since");
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn a_valid_url_carrying_sql_is_stored_verbatim_and_never_executed() {
    let app = TestApp::new();
    let url = "https://a.com/?q=%27);DROP%20TABLE%20visits;--";
    let reply = app.post_json("/visit", &json!({ "url": url })).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["url"], url);
    let reply = app.get("/stats").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["total_visits"], 1);
    assert_eq!(reply.json()["popular_pages"][url], 1);
    assert_eq!(app.stored_visits().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_concurrent_bad_requests_leave_the_server_working() {
    let app = TestApp::new();
    let bad = |i: usize| -> Request<Body> {
        match i % 5 {
            0 => request(
                Method::POST,
                "/visit",
                Some("application/json"),
                b"{\"url\":".to_vec(),
            ),
            1 => request(Method::GET, "/summary?hours=-1", None, Vec::new()),
            2 => request(
                Method::POST,
                "/visit",
                Some("application/json"),
                b"{\"url\":\"nope\"}".to_vec(),
            ),
            3 => request(
                Method::POST,
                "/bulk-visits",
                Some("application/json"),
                "[".repeat(5_000).into_bytes(),
            ),
            _ => request(
                Method::GET,
                "/breakdown/all/pageview/2025/2/30",
                None,
                Vec::new(),
            ),
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..2_000 {
        let router = app.router.clone();
        let request = bad(i);
        tasks.spawn(async move {
            let response = router.oneshot(request).await.unwrap();
            let status = response.status();
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, body)
        });
    }
    let mut answered = 0;
    while let Some(joined) = tasks.join_next().await {
        let (status, body) = joined.expect("no request panicked");
        assert!(status.is_client_error(), "{status}");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body.as_object().unwrap().len(), 1);
        assert!(body["detail"].is_string());
        answered += 1;
    }
    assert_eq!(answered, 2_000);
    assert_nothing_stored(&app).await;
    let reply = app
        .post_json("/visit", &json!({ "url": "https://a.com/after-the-flood" }))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(app.stored_visits().await, 1);
    let reply = app.get("/health").await;
    assert_eq!(reply.json()["status"], "healthy");
}

#[tokio::test]
async fn the_openapi_document_lists_the_refusals_the_fuzzer_found() {
    // schemathesis (scripts/fuzz.sh) reported these statuses as undocumented.
    let app = TestApp::new();
    let reply = app.get("/openapi.json").await;
    assert_eq!(reply.status, StatusCode::OK);
    let doc = reply.json();
    for (path, method) in [("/domains", "post"), ("/bulk-visits", "post")] {
        let responses = &doc["paths"][path][method]["responses"];
        for status in ["413", "415", "422"] {
            assert!(
                responses[status].is_object(),
                "{method} {path} does not document {status}"
            );
        }
    }
    // Without a Content-Type, POST /domains is the documented 415.
    let reply = app
        .send(request(Method::POST, "/domains", None, b"{}".to_vec()))
        .await;
    refused(&reply, StatusCode::UNSUPPORTED_MEDIA_TYPE, "domains");
}

crate::on_postgres!(
    malformed_json_bodies_are_422_and_store_nothing,
    invalid_utf8_anywhere_is_refused_or_ignored_never_a_5xx,
    a_body_over_one_mib_is_413_json,
    deeply_nested_json_is_refused_without_exhausting_the_stack,
    nul_bytes_in_urls_names_and_ids_are_refused,
    enormous_headers_and_query_strings_are_handled_in_process,
    over_the_wire_huge_headers_and_garbage_get_a_4xx_and_the_server_lives_on,
    every_numeric_parameter_out_of_range_is_a_4xx,
    sql_looking_input_is_refused_and_stores_nothing,
    a_valid_url_carrying_sql_is_stored_verbatim_and_never_executed,
    two_thousand_concurrent_bad_requests_leave_the_server_working,
    the_openapi_document_lists_the_refusals_the_fuzzer_found,
);
