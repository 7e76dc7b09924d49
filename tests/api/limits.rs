//! Rate limits (API.md §9, issue 4): the (client IP, page URL) limits, the per-IP ceiling,
//! forged forwarding headers, the limiter's bounded key table, and the request timeout.
//!
//! `TestApp` turns every limit off; each test here turns on the ones it is about.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use footfall::config::ServeArgs;
use serde_json::{Value, json};

use crate::common::{
    ServerProcess, TestApp, assert_too_many, bulk_request, get, ip, metric, stored_visits,
    visit_request,
};

fn legacy_request(url: &str) -> Request<Body> {
    let encoded: String = url::form_urlencoded::byte_serialize(url.as_bytes()).collect();
    Request::get(format!("/?url={encoded}"))
        .body(Body::empty())
        .unwrap()
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
    assert_eq!(app.stored_visits().await, 10);
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
    assert_eq!(app.stored_visits().await, 5);
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
// Request timeout

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
    assert_eq!(stored_visits(&db).await, 0);
}

crate::on_postgres!(
    the_eleventh_visit_of_a_page_from_one_ip_in_a_minute_is_429_and_records_nothing,
    the_legacy_get_form_is_limited_like_post_visit_and_shares_its_quota,
    the_pixel_over_its_limit_still_answers_the_gif_but_records_nothing,
    the_eleventh_count_of_a_page_counter_is_429_and_does_not_count,
    bulk_items_over_twenty_a_minute_are_rejected_and_the_rest_recorded,
    another_page_or_another_client_ip_has_its_own_quota,
    a_limit_of_zero_is_no_limit,
    hammering_health_from_one_ip_is_429_after_the_default_burst_and_other_ips_are_unaffected,
    the_ceilings_retry_after_is_long_enough_to_get_through,
    ipv6_clients_share_a_ceiling_per_slash_64,
    an_untrusted_peer_rotating_forwarding_headers_is_still_limited_after_ten,
    an_untrusted_peer_rotating_forwarding_headers_still_hits_the_ceiling,
    behind_a_trusted_proxy_the_rightmost_untrusted_address_is_the_client,
    behind_a_trusted_proxy_each_forwarded_client_has_its_own_ceiling,
    past_the_key_cap_new_pages_are_refused_until_keys_expire,
    the_server_purges_limiter_keys_whose_quota_has_refilled,
    a_request_body_slower_than_the_timeout_is_answered_408_in_json,
);
