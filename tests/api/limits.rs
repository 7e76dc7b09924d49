//! Limits and operations (API.md §9, issue 4): the (client IP, page URL) rate limits, the
//! per-IP ceiling, forged forwarding headers, the limiter's bounded key table, timeouts, CORS,
//! request ids, `/metrics` and the request log.
//!
//! `TestApp` turns every limit off; each test here turns on the ones it is about. The
//! Prometheus recorder is process-global and shared by every test of this binary, so metric
//! assertions compare a value before and after, and only ever ask for "at least".

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use footfall::config::ServeArgs;
use serde_json::{Value, json};

use crate::common::{Reply, ServerProcess, TestApp, stored_visits};

const TOO_MANY: &str = "Too many requests, please try again later";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn visit_request(url: &str) -> Request<Body> {
    Request::post("/visit")
        .header("content-type", "application/json")
        .body(Body::from(json!({ "url": url }).to_string()))
        .unwrap()
}

fn legacy_request(url: &str) -> Request<Body> {
    let encoded: String = url::form_urlencoded::byte_serialize(url.as_bytes()).collect();
    Request::get(format!("/?url={encoded}"))
        .body(Body::empty())
        .unwrap()
}

fn bulk_request(items: &[&str]) -> Request<Body> {
    let body: Vec<Value> = items.iter().map(|u| json!({ "url": u })).collect();
    Request::post("/bulk-visits")
        .header("content-type", "application/json")
        .body(Body::from(Value::from(body).to_string()))
        .unwrap()
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn retry_after(reply: &Reply) -> u64 {
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
fn assert_too_many(reply: &Reply) -> u64 {
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.text()
    );
    assert_eq!(reply.json(), json!({ "detail": TOO_MANY }));
    assert_eq!(
        reply.headers.get("content-type").unwrap(),
        "application/json"
    );
    let wait = retry_after(reply);
    assert!(wait >= 1, "Retry-After {wait}");
    wait
}

fn limited(configure: impl FnOnce(&mut ServeArgs)) -> TestApp {
    TestApp::with(|args| {
        args.rate_limit_per_minute = 10;
        args.bulk_rate_limit_per_minute = 20;
        configure(args);
    })
}

// ---------------------------------------------------------------------------------------------
// Per (client IP, page URL)

#[tokio::test]
async fn the_eleventh_visit_of_a_page_from_one_ip_in_a_minute_is_429_and_records_nothing() {
    let app = limited(|_| {});
    let client = ip("198.51.100.1");
    let url = "https://limits.example/a";
    for i in 0..10 {
        let reply = app.send_from(client, visit_request(url)).await;
        assert_eq!(reply.status, StatusCode::OK, "visit {i}: {}", reply.text());
        assert_eq!(reply.json()["status"], "recorded");
    }
    let reply = app.send_from(client, visit_request(url)).await;
    let wait = assert_too_many(&reply);
    // 10 per minute refills one every 6 s: the wait is never more than that.
    assert!(wait <= 6, "Retry-After {wait}");
    assert_eq!(app.total_visits(url).await, 10);
    assert_eq!(stored_visits(&app.db), 10);
}

#[tokio::test]
async fn the_legacy_get_form_is_limited_like_post_visit_and_shares_its_quota() {
    let app = limited(|_| {});
    let client = ip("198.51.100.2");
    let url = "https://limits.example/legacy?x=1";
    for _ in 0..5 {
        let reply = app.send_from(client, visit_request(url)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    for _ in 0..5 {
        let reply = app.send_from(client, legacy_request(url)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.json()["url"], url);
    }
    assert_too_many(&app.send_from(client, legacy_request(url)).await);
    assert_too_many(&app.send_from(client, visit_request(url)).await);
    assert_eq!(app.total_visits(url).await, 10);
}

#[tokio::test]
async fn the_pixel_over_its_limit_still_answers_the_gif_but_records_nothing() {
    let app = limited(|_| {});
    let client = ip("198.51.100.8");
    let url = "https://limits.example/pixel";
    let encoded: String = url::form_urlencoded::byte_serialize(url.as_bytes()).collect();
    for _ in 0..5 {
        assert_eq!(
            app.send_from(client, visit_request(url)).await.status,
            StatusCode::OK
        );
    }
    for i in 0..7 {
        let reply = app
            .send_from(client, get(&format!("/pixel.gif?url={encoded}")))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "pixel {i}");
        assert_eq!(reply.headers.get("content-type").unwrap(), "image/gif");
        assert!(reply.body.starts_with(b"GIF89a"));
    }
    // 5 + 5 recorded; the last two pixels were over the shared quota.
    assert_eq!(app.total_visits(url).await, 10);
    assert_too_many(&app.send_from(client, visit_request(url)).await);
}

#[tokio::test]
async fn the_eleventh_count_of_a_page_counter_is_429_and_does_not_count() {
    let app = limited(|_| {});
    let client = ip("198.51.100.3");
    for _ in 0..10 {
        let reply = app
            .send_from(
                client,
                Request::post("/visit/home").body(Body::empty()).unwrap(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.json()["message"], "Visit recorded for page home");
    }
    let reply = app
        .send_from(
            client,
            Request::post("/visit/home").body(Body::empty()).unwrap(),
        )
        .await;
    assert_too_many(&reply);
    // Another counter has its own quota.
    let reply = app
        .send_from(
            client,
            Request::post("/visit/about").body(Body::empty()).unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let count = app.get("/visits/home").await;
    assert_eq!(count.status, StatusCode::OK);
    assert_eq!(count.json()["count"], 10);
}

#[tokio::test]
async fn bulk_items_over_twenty_a_minute_are_rejected_and_the_rest_recorded() {
    let app = limited(|_| {});
    let client = ip("198.51.100.4");
    let hot = "https://limits.example/bulk-hot";
    let cold = "https://limits.example/bulk-cold";
    let mut items = vec![hot; 25];
    items.push(cold);
    let reply = app.send_from(client, bulk_request(&items)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({"status": "recorded", "visits_recorded": 21, "visits_rejected": 5,
               "ip": "198.51.100.4"})
    );
    // The hot page's quota is spent; the cold page still has 19.
    let reply = app
        .send_from(client, bulk_request(&[hot, cold, cold]))
        .await;
    assert_eq!(reply.json()["visits_recorded"], 2);
    assert_eq!(reply.json()["visits_rejected"], 1);
    // The bulk quota is separate from the single-visit one.
    let reply = app.send_from(client, visit_request(hot)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(app.total_visits(hot).await, 21);
    assert_eq!(app.total_visits(cold).await, 3);
}

#[tokio::test]
async fn another_page_or_another_client_ip_has_its_own_quota() {
    let app = limited(|_| {});
    let (first, second) = (ip("198.51.100.5"), ip("198.51.100.6"));
    let (page, other_page) = ("https://limits.example/own", "https://limits.example/other");
    for _ in 0..10 {
        assert_eq!(
            app.send_from(first, visit_request(page)).await.status,
            StatusCode::OK
        );
    }
    assert_too_many(&app.send_from(first, visit_request(page)).await);
    for _ in 0..10 {
        assert_eq!(
            app.send_from(first, visit_request(other_page)).await.status,
            StatusCode::OK
        );
        assert_eq!(
            app.send_from(second, visit_request(page)).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(app.total_visits(page).await, 20);
    assert_eq!(app.total_visits(other_page).await, 10);
}

#[tokio::test]
async fn a_limit_of_zero_is_no_limit() {
    let app = TestApp::with(|args| {
        args.rate_limit_per_minute = 0;
        args.bulk_rate_limit_per_minute = 0;
    });
    let client = ip("198.51.100.7");
    let url = "https://limits.example/unlimited";
    for _ in 0..30 {
        assert_eq!(
            app.send_from(client, visit_request(url)).await.status,
            StatusCode::OK
        );
    }
    let reply = app.send_from(client, bulk_request(&[url; 100])).await;
    assert_eq!(reply.json()["visits_recorded"], 100);
    assert_eq!(reply.json()["visits_rejected"], 0);
    assert_eq!(app.total_visits(url).await, 130);
}

// ---------------------------------------------------------------------------------------------
// Per-IP ceiling over every route

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hammering_health_from_one_ip_is_429_after_the_default_burst_and_other_ips_are_unaffected()
{
    // The defaults: 50 requests per second, bursts of 100.
    let app = TestApp::with(|args| {
        args.ip_rate_per_second = 50;
        args.ip_burst = 100;
    });
    let flooder = ip("198.51.100.10");
    let started = Instant::now();
    let mut ok = 0;
    let mut refused = None;
    for _ in 0..2_000 {
        let reply = app.send_from(flooder, get("/health")).await;
        if reply.status == StatusCode::OK {
            ok += 1;
        } else {
            refused = Some(reply);
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let refused = refused.expect("the flood was never refused");
    assert_too_many(&refused);
    // The burst, plus what refilled at 50/s while the loop ran.
    assert!(ok >= 100, "only {ok} requests passed");
    assert!(
        f64::from(ok) <= 101.0 + elapsed * 50.0,
        "{ok} requests passed in {elapsed:.2}s"
    );
    let other = app.send_from(ip("198.51.100.11"), get("/health")).await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.json()["status"], "healthy");
}

#[tokio::test]
async fn the_ceilings_retry_after_is_long_enough_to_get_through() {
    let app = TestApp::with(|args| {
        args.ip_rate_per_second = 1;
        args.ip_burst = 2;
    });
    let client = ip("198.51.100.12");
    for _ in 0..2 {
        assert_eq!(
            app.send_from(client, get("/health")).await.status,
            StatusCode::OK
        );
    }
    let refused = app.send_from(client, get("/health")).await;
    let wait = assert_too_many(&refused);
    assert_eq!(wait, 1, "one token a second: the wait is under a second");
    // The ceiling covers every route, not only /health (checked here, where a token takes a
    // second to come back, not at 50 a second, where a stalled machine refills one in 20 ms).
    assert_too_many(
        &app.send_from(client, visit_request("https://a.example/"))
            .await,
    );
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(
        app.send_from(client, get("/health")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn ipv6_clients_share_a_ceiling_per_slash_64() {
    let app = TestApp::with(|args| {
        args.ip_rate_per_second = 1;
        args.ip_burst = 1;
    });
    let ok = app.send_from(ip("2001:db8:1:2::1"), get("/health")).await;
    assert_eq!(ok.status, StatusCode::OK);
    // Same /64, another address: the same bucket.
    assert_too_many(
        &app.send_from(ip("2001:db8:1:2::ffff"), get("/health"))
            .await,
    );
    // Another /64: its own.
    let other = app.send_from(ip("2001:db8:1:3::1"), get("/health")).await;
    assert_eq!(other.status, StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// Forged forwarding headers

#[tokio::test]
async fn an_untrusted_peer_rotating_forwarding_headers_is_still_limited_after_ten() {
    let app = limited(|_| {});
    let peer = ip("203.0.113.7");
    let url = "https://limits.example/spoof";
    for i in 0..12 {
        let request = Request::post("/visit")
            .header("content-type", "application/json")
            .header("x-forwarded-for", format!("10.0.{i}.1, 192.0.2.{i}"))
            .header("x-real-ip", format!("192.0.2.{}", 100 + i))
            .body(Body::from(json!({ "url": url }).to_string()))
            .unwrap();
        let reply = app.send_from(peer, request).await;
        if i < 10 {
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            assert_eq!(reply.json()["ip"], "203.0.113.7", "the header was believed");
        } else {
            assert_too_many(&reply);
        }
    }
    assert_eq!(app.total_visits(url).await, 10);
}

#[tokio::test]
async fn an_untrusted_peer_rotating_forwarding_headers_still_hits_the_ceiling() {
    let app = TestApp::with(|args| {
        args.ip_rate_per_second = 1;
        args.ip_burst = 3;
    });
    let peer = ip("203.0.113.8");
    let mut statuses = Vec::new();
    for i in 0..4 {
        let request = Request::get("/health")
            .header("x-forwarded-for", format!("192.0.2.{i}"))
            .body(Body::empty())
            .unwrap();
        statuses.push(app.send_from(peer, request).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_rightmost_untrusted_address_is_the_client() {
    let app = limited(|_| {});
    let proxy = ip("127.0.0.1");
    let cases = [
        // (X-Forwarded-For, X-Real-IP, expected client)
        (
            Some("6.6.6.6, 1.2.3.4, garbage, 127.0.0.2"),
            None,
            "1.2.3.4",
        ),
        (Some("not-an-ip, 127.0.0.9"), None, "127.0.0.9"),
        (Some("[2001:db8::7]:443"), None, "2001:db8::7"),
        (None, Some("9.9.9.9"), "9.9.9.9"),
        (Some("not-an-ip"), Some("also-not-an-ip"), "127.0.0.1"),
        (None, None, "127.0.0.1"),
    ];
    for (i, (xff, real, want)) in cases.into_iter().enumerate() {
        let mut request = Request::post("/visit").header("content-type", "application/json");
        if let Some(xff) = xff {
            request = request.header("x-forwarded-for", xff);
        }
        if let Some(real) = real {
            request = request.header("x-real-ip", real);
        }
        let url = format!("https://limits.example/proxied/{i}");
        let body = Body::from(json!({ "url": url }).to_string());
        let reply = app.send_from(proxy, request.body(body).unwrap()).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(
            reply.json()["ip"],
            want,
            "X-Forwarded-For {xff:?}, X-Real-IP {real:?}"
        );
    }
    // A client behind the proxy that forges the left part of the header is still itself.
    let url = "https://limits.example/proxied-spoof";
    for i in 0..11 {
        let request = Request::post("/visit")
            .header("content-type", "application/json")
            .header("x-forwarded-for", format!("192.0.2.{i}, 1.2.3.4"))
            .body(Body::from(json!({ "url": url }).to_string()))
            .unwrap();
        let reply = app.send_from(proxy, request).await;
        if i < 10 {
            assert_eq!(reply.json()["ip"], "1.2.3.4");
        } else {
            assert_too_many(&reply);
        }
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_ceiling() {
    let app = TestApp::with(|args| {
        args.ip_rate_per_second = 1;
        args.ip_burst = 2;
    });
    let proxy = ip("127.0.0.1");
    let from = |client: &str| {
        Request::get("/health")
            .header("x-forwarded-for", client)
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        app.send_from(proxy, from("1.1.1.1")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.send_from(proxy, from("1.1.1.1")).await.status,
        StatusCode::OK
    );
    assert_too_many(&app.send_from(proxy, from("1.1.1.1")).await);
    assert_eq!(
        app.send_from(proxy, from("2.2.2.2")).await.status,
        StatusCode::OK
    );
}

// ---------------------------------------------------------------------------------------------
// Bounded limiter memory

#[tokio::test]
async fn past_the_key_cap_new_pages_are_refused_until_keys_expire() {
    let app = limited(|args| args.limiter_max_keys = 5);
    let client = ip("198.51.100.20");
    for i in 0..5 {
        let reply = app
            .send_from(client, visit_request(&format!("https://cap.example/{i}")))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    // The table is full of fresh keys: a new one fails closed (otherwise a flood of new keys
    // would be a way around the limit), and nothing is recorded.
    let reply = app
        .send_from(client, visit_request("https://cap.example/new"))
        .await;
    assert_too_many(&reply);
    assert_eq!(app.state.limits.key_count(), 5);
    assert_eq!(stored_visits(&app.db), 5);
}

#[tokio::test]
async fn the_server_purges_limiter_keys_whose_quota_has_refilled() {
    let dir = tempfile::tempdir().unwrap();
    // 600 a minute: one visit's token is back after 100 ms, so its key is stale at once.
    let server = ServerProcess::start(
        &dir.path().join("visits.db"),
        &["--rate-limit-per-minute", "600"],
    );
    let client = reqwest::Client::new();
    for i in 0..20 {
        let reply = client
            .post(format!("{}/visit", server.base))
            .json(&json!({ "url": format!("https://purge.example/{i}") }))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
    }
    let keys = |text: &str| metric(text, "footfall_rate_limiter_keys", &[]);
    let scrape = || async {
        client
            .get(format!("{}/metrics", server.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = keys(&scrape().await);
    assert!(before >= 1.0, "the keys were never stored ({before})");
    // The purge runs every 2 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = keys(&scrape().await);
        if now == 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "keys never purged: {now}");
    }
}

// ---------------------------------------------------------------------------------------------
// Timeouts, CORS, request ids

/// Reads one HTTP/1.1 response from `stream`: (status, lower-cased headers, body).
fn read_response(stream: &mut TcpStream) -> (u16, HashMap<String, String>, Vec<u8>) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let n = stream.read(&mut buf).expect("the server answered");
        assert!(n > 0, "connection closed before a response: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[head_end + 4..].to_vec();
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"));
    if let Some(len) = headers.get("content-length") {
        let len: usize = len.parse().unwrap();
        while body.len() < len {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0);
            body.extend_from_slice(&buf[..n]);
        }
    } else if chunked {
        while !body.ends_with(b"0\r\n\r\n") {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0);
            body.extend_from_slice(&buf[..n]);
        }
        let mut decoded = Vec::new();
        let mut rest = &body[..];
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16).unwrap();
            if size == 0 {
                break;
            }
            decoded.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            rest = &rest[line_end + 2 + size + 2..];
        }
        body = decoded;
    }
    (status, headers, body)
}

#[tokio::test]
async fn a_request_body_slower_than_the_timeout_is_answered_408_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("visits.db");
    let server = ServerProcess::start(&db, &["--request-timeout", "1"]);
    let addr = server.base.trim_start_matches("http://").to_owned();
    let (status, headers, body) = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let body = json!({ "url": "https://slow.example/" }).to_string();
        let head = format!(
            "POST /visit HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        // A trickle: the first half now, the rest long after the timeout.
        stream.write_all(&body.as_bytes()[..10]).unwrap();
        let started = Instant::now();
        let response = read_response(&mut stream);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the timeout did not cut the request short"
        );
        let _ = stream.write_all(&body.as_bytes()[10..]);
        response
    })
    .await
    .unwrap();
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "application/json");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body, json!({ "detail": "Request timed out" }));
    assert_eq!(stored_visits(&db), 0);
}

fn preflight(origin: &str) -> Request<Body> {
    Request::builder()
        .method(Method::OPTIONS)
        .uri("/visit")
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .body(Body::empty())
        .unwrap()
}

fn header<'r>(reply: &'r Reply, name: &str) -> Option<&'r str> {
    reply.headers.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn a_cors_preflight_for_post_visit_is_allowed_from_any_origin_by_default() {
    let app = TestApp::new();
    let reply = app
        .send_from(ip("198.51.100.30"), preflight("https://site.example"))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(header(&reply, "access-control-allow-origin"), Some("*"));
    let methods = header(&reply, "access-control-allow-methods").unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let allowed = header(&reply, "access-control-allow-headers").unwrap();
    assert!(allowed.contains("content-type"), "{allowed}");
    // The actual request carries the header too.
    let request = Request::post("/visit")
        .header("origin", "https://site.example")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"url": "https://site.example/"}).to_string(),
        ))
        .unwrap();
    let reply = app.send_from(ip("198.51.100.30"), request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(header(&reply, "access-control-allow-origin"), Some("*"));
}

#[tokio::test]
async fn configured_cors_origins_are_the_only_ones_allowed() {
    let app = TestApp::with(|args| args.cors_origins = vec!["https://a.example".into()]);
    let allowed = app
        .send_from(ip("198.51.100.31"), preflight("https://a.example"))
        .await;
    assert_eq!(allowed.status, StatusCode::OK);
    assert_eq!(
        header(&allowed, "access-control-allow-origin"),
        Some("https://a.example")
    );
    assert!(header(&allowed, "vary").is_some_and(|v| v.contains("origin")));
    let refused = app
        .send_from(ip("198.51.100.31"), preflight("https://site.example"))
        .await;
    assert_eq!(header(&refused, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn a_request_id_is_generated_when_absent_and_echoed_when_present() {
    let app = TestApp::new();
    let reply = app.get("/health").await;
    let generated = header(&reply, "x-request-id").expect("a request id");
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    assert_eq!(generated.matches('-').count(), 4, "a UUID: {generated}");
    let again = app.get("/health").await;
    assert_ne!(header(&again, "x-request-id"), Some(generated));

    let request = Request::get("/health")
        .header("x-request-id", "trace-abc-123")
        .body(Body::empty())
        .unwrap();
    let reply = app.send(request).await;
    assert_eq!(header(&reply, "x-request-id"), Some("trace-abc-123"));
    // Error answers carry it too.
    let request = Request::get("/no-such-page")
        .header("x-request-id", "trace-404")
        .body(Body::empty())
        .unwrap();
    let reply = app.send(request).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(header(&reply, "x-request-id"), Some("trace-404"));
}

// ---------------------------------------------------------------------------------------------
// Metrics

/// Parses the labels of one Prometheus sample line: `{a="x",b="y"}`.
fn labels_of(raw: &str) -> HashMap<String, String> {
    raw.trim_matches(['{', '}'])
        .split("\",")
        .filter(|p| !p.is_empty())
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

/// Sum of the samples of `name` whose labels include `want` (absent metric: 0).
fn metric(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric_name, labels) = match series.find('{') {
                Some(i) => (&series[..i], labels_of(&series[i..])),
                None => (series, HashMap::new()),
            };
            let matches = metric_name == name
                && want
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

fn has_series(text: &str, name: &str) -> bool {
    text.lines().any(|l| {
        !l.starts_with('#')
            && (l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
    })
}

async fn scrape(app: &TestApp) -> String {
    let reply = app.get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    let content_type = header(&reply, "content-type").unwrap();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    reply.text()
}

#[tokio::test]
async fn metrics_show_requests_latency_visits_rate_limits_the_writer_and_the_database() {
    let app = TestApp::with(|args| {
        args.rate_limit_per_minute = 2;
        args.bulk_rate_limit_per_minute = 1;
        args.ip_rate_per_second = 1;
        args.ip_burst = 1_000;
    });
    let before = scrape(&app).await;
    let client = ip("198.51.100.40");
    let url = "https://metrics.example/";
    for _ in 0..3 {
        app.send_from(client, visit_request(url)).await;
    }
    let bulk = app.send_from(client, bulk_request(&[url, url])).await;
    assert_eq!(bulk.json()["visits_rejected"], 1);
    // Exhaust a small ceiling on its own app to see the `ip` limiter counted.
    let tight = TestApp::with(|args| {
        args.ip_rate_per_second = 1;
        args.ip_burst = 1;
    });
    tight.send_from(client, get("/health")).await;
    assert_too_many(&tight.send_from(client, get("/health")).await);

    let after = scrape(&app).await;
    let grew = |name: &str, labels: &[(&str, &str)], by: f64| {
        let (was, is) = (metric(&before, name, labels), metric(&after, name, labels));
        assert!(
            is - was >= by,
            "{name}{labels:?}: {was} -> {is}, expected +{by}"
        );
    };
    let visit_200 = [("route", "/visit"), ("method", "POST"), ("status", "200")];
    grew("footfall_http_requests_total", &visit_200, 2.0);
    grew(
        "footfall_http_requests_total",
        &[("route", "/visit"), ("status", "429")],
        1.0,
    );
    grew(
        "footfall_http_request_duration_seconds_count",
        &[("route", "/visit"), ("method", "POST")],
        3.0,
    );
    assert!(
        after.contains("footfall_http_request_duration_seconds_bucket{"),
        "latency is a histogram"
    );
    grew("footfall_visits_recorded_total", &[], 3.0);
    grew("footfall_rate_limited_total", &[("limiter", "visit")], 1.0);
    grew("footfall_rate_limited_total", &[("limiter", "bulk")], 1.0);
    grew("footfall_rate_limited_total", &[("limiter", "ip")], 1.0);
    grew("footfall_batch_visits_count", &[], 1.0);
    grew("footfall_commit_seconds_count", &[], 1.0);
    assert!(after.contains("footfall_batch_visits_bucket{"));
    assert!(after.contains("footfall_commit_seconds_bucket{"));
    assert!(has_series(&after, "footfall_write_queue_depth"));
    assert!(has_series(&after, "footfall_roll_up_pending_writes"));
    assert!(has_series(&after, "footfall_roll_up_handovers_total"));
    // The visits above are rolled up once writes pause, by a routine roll-up at idle priority.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let idle_roll_ups = loop {
        let count = metric(
            &scrape(&app).await,
            "footfall_roll_up_seconds_count",
            &[("priority", "idle")],
        );
        if count > 0.0 || std::time::Instant::now() > deadline {
            break count;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(idle_roll_ups > 0.0, "no roll-up timed at idle priority");
    assert!(has_series(&after, "footfall_rate_limiter_keys"));
    assert!(has_series(&after, "footfall_ip_ceiling_keys"));
    assert!(metric(&after, "footfall_database_bytes", &[]) > 0.0);
    assert!(after.contains("# HELP footfall_http_requests_total"));
}

#[tokio::test]
async fn metric_labels_stay_bounded_whatever_clients_send() {
    let app = TestApp::new();
    for i in 0..5 {
        let request = Request::builder()
            .method(Method::from_bytes(format!("FUZZ{i}").as_bytes()).unwrap())
            .uri(format!("/random/path/{i}"))
            .body(Body::empty())
            .unwrap();
        let reply = app.send(request).await;
        assert!(reply.status.is_client_error(), "{}", reply.status);
        app.get(&format!("/stats/https://labels.example/{i}")).await;
    }
    let text = scrape(&app).await;
    assert!(!text.contains("FUZZ"), "a method became a label");
    assert!(!text.contains("/random/path"), "a raw path became a label");
    assert!(
        !text.contains("labels.example"),
        "a raw path became a label"
    );
    assert!(
        metric(
            &text,
            "footfall_http_requests_total",
            &[("method", "OTHER")]
        ) >= 5.0
    );
    assert!(
        metric(
            &text,
            "footfall_http_requests_total",
            &[("route", "/stats/{*url}")]
        ) >= 5.0
    );
}

#[tokio::test]
async fn histogram_samples_are_drained_even_when_nobody_scrapes() {
    // The recorder is installed without the exporter's own upkeep task; footfall runs it on a
    // thread of its own so unscraped histograms do not grow forever.
    let _app = TestApp::new();
    let names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect();
    assert!(
        names.iter().any(|n| n == "metrics-upkeep"),
        "no upkeep thread among {names:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Logs

/// A real server whose stderr (the log) goes to a file.
struct LoggedServer {
    server: ServerProcess,
    base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoggedServer {
    fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let server = ServerProcess::start_with_stderr(
            &dir.path().join("visits.db"),
            extra,
            File::create(&log).unwrap(),
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

    // Visits log one line per request, none per visit (counted once the server has stopped:
    // lines are written by a background thread, and only a stop flushes them all).
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
    let log = server.stop();
    let recording_lines = log
        .lines()
        .filter(|l| l.contains("\"path\":\"/visit\"") || l.contains("\"path\":\"/bulk-visits\""))
        .count();
    assert_eq!(recording_lines, 6, "{log}");
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
    assert!(found("POST", "/bulk-visits", 200), "{log}");
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
    assert_eq!(lines.len(), 4 + 1 + 5);
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
