//! API.md §4, issue 26: admin endpoints are closed to other sites' pages. Without a token a
//! page of another origin, opened in a browser on footfall's machine, can neither read the
//! export nor change data (cross-site marks, a foreign `Origin`, a DNS-rebound `Host`), and no
//! admin route answers CORS headers; recording and public analytics stay open cross-origin;
//! local scripts keep working; with a token the token is the proof, from anywhere.

use std::fs::File;
use std::net::IpAddr;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::json;

use crate::common::{Reply, ServerProcess, TestApp};

const EVIL: &str = "https://evil.example";
/// The address of the visits the attacks try to read or delete.
const VISITOR_IP: &str = "198.51.100.77";
const OLD_VISITS: i64 = 3;

fn loopback() -> IpAddr {
    [127, 0, 0, 1].into()
}

/// An app without a token, holding visits ten days old: `DELETE /cleanup?days=1` would delete
/// all of them, and the export would show [`VISITOR_IP`].
async fn app_with_old_visits(configure: impl FnOnce(&mut footfall::config::ServeArgs)) -> TestApp {
    let app = TestApp::with(configure);
    let at = chrono::Utc::now() - chrono::Duration::days(10);
    let jsonl: String = (0..OLD_VISITS)
        .map(|i| {
            let visit = json!({
                "url": format!("https://shop.example/{i}"),
                "ip": VISITOR_IP,
                "user_agent": "Mozilla/5.0",
                "timestamp": at.format("%Y-%m-%d %H:%M:%S").to_string(),
            });
            format!("{visit}\n")
        })
        .collect();
    assert_eq!(app.import_jsonl(&jsonl).await.imported, OLD_VISITS as u64);
    app
}

/// A request with `headers`, as a browser (or curl) would send it.
fn request(method: Method, uri: &str, headers: &[(&str, &str)], body: &str) -> Request<Body> {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::from(body.to_owned())).unwrap()
}

/// The `Access-Control-*` headers of an answer.
fn cors_headers(reply: &Reply) -> Vec<String> {
    reply
        .headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name.starts_with("access-control-"))
        .collect()
}

fn allow_origin(reply: &Reply) -> Option<&str> {
    reply
        .headers
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap())
}

/// Checks a `403` refusal: status, `{"detail"}` body naming the reason, no CORS header, and
/// nothing of the stored visits in it.
fn assert_refused(reply: &Reply, reason: &str) {
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
    let detail = reply.detail();
    assert!(
        detail.contains(reason),
        "{detail:?} does not say {reason:?}"
    );
    assert!(!reply.text().contains(VISITOR_IP));
    assert_eq!(cors_headers(reply), Vec::<String>::new());
}

/// Everything the app was given is still there, and nothing more.
async fn assert_untouched(app: &TestApp) {
    assert_eq!(app.stored_visits().await, OLD_VISITS);
    assert_eq!(app.get("/stats").await.json()["total_visits"], OLD_VISITS);
}

#[tokio::test]
async fn a_cross_site_page_cannot_read_the_export_without_a_token() {
    let app = app_with_old_visits(|_| {}).await;
    // fetch() from https://evil.example opened in a browser on footfall's machine.
    let cross_site = [
        ("host", "localhost:8000"),
        ("origin", EVIL),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-mode", "cors"),
    ];
    let reply = app
        .send_from(
            loopback(),
            request(Method::GET, "/all-visits?format=jsonl", &cross_site, ""),
        )
        .await;
    assert_refused(&reply, "another site's page");
    // The same with no Origin (a no-cors <img> or <script> load): the fetch metadata suffices.
    let no_cors = [
        ("host", "localhost:8000"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-mode", "no-cors"),
    ];
    let reply = app
        .send_from(
            loopback(),
            request(Method::GET, "/all-visits?format=csv", &no_cors, ""),
        )
        .await;
    assert_refused(&reply, "another site's page");
    // Another port of the same machine (a dev server on localhost:3000) is another origin.
    let same_site = [
        ("host", "localhost:8000"),
        ("origin", "http://localhost:3000"),
        ("sec-fetch-site", "same-site"),
    ];
    let reply = app
        .send_from(
            loopback(),
            request(Method::GET, "/all-visits", &same_site, ""),
        )
        .await;
    assert_refused(&reply, "another site's page");
    assert_untouched(&app).await;
}

#[tokio::test]
async fn a_foreign_origin_cannot_delete_visits_without_a_token() {
    let app = app_with_old_visits(|_| {}).await;
    // Without Sec-Fetch-* (an older browser): the Origin alone is refused.
    let reply = app
        .send_from(
            loopback(),
            request(
                Method::DELETE,
                "/cleanup?days=1",
                &[("host", "127.0.0.1:8000"), ("origin", EVIL)],
                "",
            ),
        )
        .await;
    assert_refused(&reply, "another site's page");
    // A sandboxed iframe or a file: page sends `Origin: null`.
    let reply = app
        .send_from(
            loopback(),
            request(
                Method::DELETE,
                "/cleanup?days=1",
                &[("host", "127.0.0.1:8000"), ("origin", "null")],
                "",
            ),
        )
        .await;
    assert_refused(&reply, "another site's page");
    assert_untouched(&app).await;
}

#[tokio::test]
async fn a_cross_site_page_cannot_import_or_add_clicks_without_a_token() {
    let app = app_with_old_visits(|_| {}).await;
    // A text/plain POST is a "simple" request: the browser sends it without a preflight, so
    // only the server's own check stands between it and the data.
    let record = json!({"url": "https://evil.example/", "ip": "203.0.113.66",
        "user_agent": "x", "timestamp": "2025-07-28 10:30:00"});
    let headers = [
        ("host", "localhost:8000"),
        ("origin", EVIL),
        ("sec-fetch-site", "cross-site"),
        ("content-type", "text/plain"),
    ];
    let reply = app
        .send_from(
            loopback(),
            request(Method::POST, "/import", &headers, &format!("{record}\n")),
        )
        .await;
    assert_refused(&reply, "another site's page");

    let now = chrono::Utc::now().timestamp();
    let clicks = json!({"timestamp": now, "evil.example": 1000});
    let headers = [
        ("host", "localhost:8000"),
        ("origin", EVIL),
        ("sec-fetch-site", "cross-site"),
        ("content-type", "application/json"),
    ];
    let reply = app
        .send_from(
            loopback(),
            request(Method::POST, "/domains", &headers, &clicks.to_string()),
        )
        .await;
    assert_refused(&reply, "another site's page");
    assert_eq!(app.get("/domains/day").await.json(), json!({"domains": {}}));
    assert_untouched(&app).await;
}

#[tokio::test]
async fn a_dns_rebound_host_cannot_read_or_delete_without_a_token() {
    let app = app_with_old_visits(|_| {}).await;
    // evil.example's DNS now answers 127.0.0.1: its page's requests are same-origin to itself
    // and reach footfall from loopback; only the Host says where the browser thinks it is.
    let reply = app
        .send_from(
            loopback(),
            request(
                Method::GET,
                "/all-visits?format=jsonl",
                &[
                    ("host", "evil.example:8000"),
                    ("sec-fetch-site", "same-origin"),
                ],
                "",
            ),
        )
        .await;
    assert_refused(&reply, "localhost");
    let rebound = [
        ("host", "evil.example:8000"),
        ("origin", "http://evil.example:8000"),
        ("sec-fetch-site", "same-origin"),
    ];
    let reply = app
        .send_from(
            loopback(),
            request(Method::DELETE, "/cleanup?days=1", &rebound, ""),
        )
        .await;
    assert_refused(&reply, "localhost");
    // 0.0.0.0 reaches this machine in some browsers, and is not a loopback name.
    let reply = app
        .send_from(
            loopback(),
            request(Method::GET, "/all-visits", &[("host", "0.0.0.0:8000")], ""),
        )
        .await;
    assert_refused(&reply, "localhost");
    assert_untouched(&app).await;
}

#[tokio::test]
async fn a_preflight_from_another_origin_for_an_admin_route_is_refused_without_cors_headers() {
    for token in [None, Some("s3cret")] {
        let app = app_with_old_visits(|args| args.admin_token = token.map(Into::into)).await;
        for (method, uri) in [
            ("DELETE", "/cleanup?days=1"),
            ("GET", "/all-visits"),
            ("POST", "/import"),
            ("POST", "/domains"),
        ] {
            let preflight = [
                ("host", "localhost:8000"),
                ("origin", EVIL),
                ("access-control-request-method", method),
                (
                    "access-control-request-headers",
                    "authorization,content-type",
                ),
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", "cors"),
            ];
            let reply = app
                .send_from(loopback(), request(Method::OPTIONS, uri, &preflight, ""))
                .await;
            assert_eq!(
                reply.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{token:?} {method} {uri}"
            );
            assert_eq!(reply.detail(), "Method Not Allowed");
            assert_eq!(
                cors_headers(&reply),
                Vec::<String>::new(),
                "{token:?} {method} {uri}"
            );
        }
        assert_untouched(&app).await;
    }
}

#[tokio::test]
async fn local_scripts_and_footfalls_own_pages_keep_admin_without_a_token() {
    let app = app_with_old_visits(|_| {}).await;
    let curl = |host: &'static str| {
        [
            ("host", host),
            ("user-agent", "curl/8.5.0"),
            ("accept", "*/*"),
        ]
    };
    // `curl localhost:8000/all-visits?format=jsonl`, and the other loopback names.
    for (peer, host) in [
        (loopback(), "localhost:8000"),
        (loopback(), "127.0.0.1:8000"),
        (loopback(), "localhost"),
        ("::1".parse().unwrap(), "[::1]:8000"),
        (loopback(), "footfall.localhost:8000"),
    ] {
        let reply = app
            .send_from(
                peer,
                request(Method::GET, "/all-visits?format=jsonl", &curl(host), ""),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{host}: {}", reply.text());
        let lines = reply.text().lines().count() as i64;
        assert_eq!(lines, OLD_VISITS, "{host}");
        assert!(reply.text().contains(VISITOR_IP));
    }
    // The address typed into the browser's bar: Sec-Fetch-Site none.
    let typed = [
        ("host", "localhost:8000"),
        ("sec-fetch-site", "none"),
        ("sec-fetch-mode", "navigate"),
    ];
    let reply = app
        .send_from(loopback(), request(Method::GET, "/all-visits", &typed, ""))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["total_count"], OLD_VISITS.to_string());
    // footfall's own page (Swagger UI at /docs, "Try it out"): same origin.
    let own_page = [
        ("host", "localhost:8000"),
        ("origin", "http://localhost:8000"),
        ("sec-fetch-site", "same-origin"),
    ];
    let record = json!({"url": "https://shop.example/new", "ip": "192.0.2.1",
        "user_agent": "x", "timestamp": "2025-07-28 10:30:00"});
    let reply = app
        .send_from(
            loopback(),
            request(Method::POST, "/import", &own_page, &format!("{record}\n")),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["imported"], 1);
    // And `curl -X DELETE 'localhost:8000/cleanup?days=1'` deletes.
    let reply = app
        .send_from(
            loopback(),
            request(
                Method::DELETE,
                "/cleanup?days=1",
                &curl("localhost:8000"),
                "",
            ),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["deleted_visits"], OLD_VISITS + 1);
    assert_eq!(app.stored_visits().await, 0);
    // Admin answers carry no CORS header even when they succeed.
    assert_eq!(cors_headers(&reply), Vec::<String>::new());
}

#[tokio::test]
async fn recording_stays_open_to_every_origin() {
    let app = TestApp::new();
    let from_evil = [
        ("origin", EVIL),
        ("sec-fetch-site", "cross-site"),
        ("content-type", "text/plain"),
    ];
    let body = json!({"url": "https://evil.example/landing"}).to_string();
    let reply = app
        .send_from(
            "203.0.113.5".parse().unwrap(),
            request(Method::POST, "/visit", &from_evil, &body),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["status"], "recorded");
    assert_eq!(allow_origin(&reply), Some("*"));
    let preflight = [
        ("origin", EVIL),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "content-type"),
    ];
    let reply = app
        .send_from(
            "203.0.113.5".parse().unwrap(),
            request(Method::OPTIONS, "/visit", &preflight, ""),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(allow_origin(&reply), Some("*"));
    assert_eq!(app.total_visits("https://evil.example/landing").await, 1);
}

#[tokio::test]
async fn public_analytics_stay_readable_cross_origin_while_post_domains_does_not() {
    let app = app_with_old_visits(|_| {}).await;
    let cross_site = [("origin", EVIL), ("sec-fetch-site", "cross-site")];
    let stats = app
        .send_from(loopback(), request(Method::GET, "/stats", &cross_site, ""))
        .await;
    assert_eq!(stats.status, StatusCode::OK);
    assert_eq!(allow_origin(&stats), Some("*"));
    assert_eq!(stats.json()["total_visits"], OLD_VISITS);
    // `GET /domains/{period}` is public; `POST /domains` beside it is admin.
    let top = app
        .send_from(
            loopback(),
            request(Method::GET, "/domains/day", &cross_site, ""),
        )
        .await;
    assert_eq!(top.status, StatusCode::OK);
    assert_eq!(allow_origin(&top), Some("*"));
    let clicks = json!({"timestamp": chrono::Utc::now().timestamp(), "evil.example": 5});
    let headers = [
        ("origin", EVIL),
        ("sec-fetch-site", "cross-site"),
        ("content-type", "application/json"),
    ];
    let reply = app
        .send_from(
            loopback(),
            request(Method::POST, "/domains", &headers, &clicks.to_string()),
        )
        .await;
    assert_refused(&reply, "another site's page");
    // Unknown paths and wrong methods answer as before: public ones with CORS, admin without.
    let missing = app
        .send_from(
            loopback(),
            request(Method::GET, "/no-such-page", &cross_site, ""),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.detail(), "Not Found");
    assert_eq!(allow_origin(&missing), Some("*"));
    let wrong = app
        .send_from(loopback(), request(Method::GET, "/visit", &cross_site, ""))
        .await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(allow_origin(&wrong), Some("*"));
    let wrong = app
        .send_from(
            loopback(),
            request(Method::GET, "/cleanup", &cross_site, ""),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.detail(), "Method Not Allowed");
    assert_eq!(cors_headers(&wrong), Vec::<String>::new());
    assert_untouched(&app).await;
}

#[tokio::test]
async fn with_a_token_the_token_works_from_anywhere_and_admin_routes_stay_without_cors() {
    let app = app_with_old_visits(|args| args.admin_token = Some("s3cret".into())).await;
    let remote: IpAddr = "203.0.113.9".parse().unwrap();
    // Every mark the loopback rule refuses, but with the token: admitted.
    let anywhere = [
        ("host", "stats.example.com"),
        ("origin", EVIL),
        ("sec-fetch-site", "cross-site"),
        ("authorization", "Bearer s3cret"),
    ];
    let reply = app
        .send_from(
            remote,
            request(Method::GET, "/all-visits?format=jsonl", &anywhere, ""),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text().lines().count() as i64, OLD_VISITS);
    assert_eq!(cors_headers(&reply), Vec::<String>::new());
    // Without it, even from loopback with no browser header: 401, and no CORS either.
    let reply = app
        .send_from(
            loopback(),
            request(Method::DELETE, "/cleanup?days=1", &[("origin", EVIL)], ""),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.detail().contains("token"));
    assert_eq!(cors_headers(&reply), Vec::<String>::new());
    assert_untouched(&app).await;
    let reply = app
        .send_from(
            remote,
            request(Method::DELETE, "/cleanup?days=1", &anywhere, ""),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["deleted_visits"], OLD_VISITS);
    assert_eq!(cors_headers(&reply), Vec::<String>::new());
    assert_eq!(app.stored_visits().await, 0);
}

/// The `serve` log of a real process started with `extra`, up to its clean stop.
fn serve_log(extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let mut server = ServerProcess::start_logging(
        &dir.path().join("visits.db"),
        extra,
        File::create(&log).unwrap(),
        None,
    );
    assert!(server.terminate().success());
    std::fs::read_to_string(&log).unwrap()
}

#[test]
fn serve_without_a_token_warns_once_that_admin_is_loopback_only_and_proxies_must_forward() {
    let log = serve_log(&[]);
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("no admin token"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    let line = warnings[0];
    assert!(line.contains("WARN"), "{line}");
    for words in ["loopback clients only", "X-Forwarded-For", "--admin-token"] {
        assert!(line.contains(words), "{line} lacks {words:?}");
    }
    let log = serve_log(&["--admin-token", "s3cret"]);
    assert!(!log.contains("no admin token"), "{log}");
    assert!(!log.contains("s3cret"), "{log}");
}

crate::on_postgres!(
    a_cross_site_page_cannot_read_the_export_without_a_token,
    a_foreign_origin_cannot_delete_visits_without_a_token,
    a_cross_site_page_cannot_import_or_add_clicks_without_a_token,
    a_dns_rebound_host_cannot_read_or_delete_without_a_token,
    a_preflight_from_another_origin_for_an_admin_route_is_refused_without_cors_headers,
    local_scripts_and_footfalls_own_pages_keep_admin_without_a_token,
    recording_stays_open_to_every_origin,
    public_analytics_stay_readable_cross_origin_while_post_domains_does_not,
    with_a_token_the_token_works_from_anywhere_and_admin_routes_stay_without_cors,
    serve_without_a_token_warns_once_that_admin_is_loopback_only_and_proxies_must_forward,
);
