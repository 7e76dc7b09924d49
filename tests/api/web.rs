//! API.md §1 `/tracker.js` and `/pixel.gif`, §4 `/dashboard`: headers, caching, what the pixel
//! records and what it refuses, and that the dashboard loads nothing from another origin.
//! The same files in a real browser: `tests/browser/run.mjs` (wrapped by `browser.rs`).

use axum::body::Body;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERER,
};
use axum::http::{Request, StatusCode};

use crate::common::{Reply, TestApp};

/// The 43-byte transparent GIF every pixel answer carries.
const GIF: &[u8] = &footfall::http::routes::web::PIXEL_GIF;

fn encoded(url: &str) -> String {
    url.bytes().map(|b| format!("%{b:02X}")).collect()
}

async fn site_total(app: &TestApp) -> i64 {
    app.get("/stats").await.json()["total_visits"]
        .as_i64()
        .unwrap()
}

async fn events_this_year(app: &TestApp, site: &str, event: &str) -> i64 {
    let year = chrono::Utc::now().format("%Y").to_string();
    let reply = app.get(&format!("/breakdown/{site}/{event}/{year}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()["data"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_i64().unwrap())
        .sum()
}

fn header(reply: &Reply, name: impl axum::http::header::AsHeaderName) -> &str {
    reply
        .headers
        .get(name)
        .expect("header present")
        .to_str()
        .unwrap()
}

fn assert_is_the_gif(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(header(reply, CONTENT_TYPE), "image/gif");
    assert_eq!(header(reply, CACHE_CONTROL), "no-store");
    assert_eq!(reply.body.as_ref(), GIF);
}

async fn pixel(app: &TestApp, query: &str) -> Reply {
    app.get(&format!("/pixel.gif{query}")).await
}

#[tokio::test]
async fn tracker_js_is_small_cacheable_javascript_with_a_strong_etag() {
    let app = TestApp::new();
    let reply = app.get("/tracker.js").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        header(&reply, CONTENT_TYPE),
        "application/javascript; charset=utf-8"
    );
    assert_eq!(header(&reply, CACHE_CONTROL), "public, max-age=3600");
    assert!(
        reply.body.len() < 2048,
        "tracker.js is {} bytes",
        reply.body.len()
    );
    let etag = header(&reply, ETAG);
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "a strong ETag: {etag}"
    );
    let script = reply.text();
    for needle in [
        "sendBeacon",
        "text/plain",
        "keepalive",
        "pushState",
        "popstate",
    ] {
        assert!(script.contains(needle), "tracker.js mentions {needle}");
    }
    // Computed once from the embedded bytes: the same on every answer.
    assert_eq!(header(&app.get("/tracker.js").await, ETAG), etag);
}

#[tokio::test]
async fn tracker_js_answers_304_to_a_matching_if_none_match() {
    let app = TestApp::new();
    let etag = header(&app.get("/tracker.js").await, ETAG).to_owned();
    let conditional = |value: String| {
        Request::get("/tracker.js")
            .header(IF_NONE_MATCH, value)
            .body(Body::empty())
            .unwrap()
    };

    let reply = app.send(conditional(etag.clone())).await;
    assert_eq!(reply.status, StatusCode::NOT_MODIFIED);
    assert!(reply.body.is_empty());
    assert_eq!(header(&reply, ETAG), etag);
    assert_eq!(header(&reply, CACHE_CONTROL), "public, max-age=3600");

    // A list, and the weak form a compressing proxy may have made of our tag, match too.
    let reply = app.send(conditional(format!("\"other\", W/{etag}"))).await;
    assert_eq!(reply.status, StatusCode::NOT_MODIFIED);

    let reply = app.send(conditional("\"stale\"".to_owned())).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(!reply.body.is_empty());
}

#[tokio::test]
async fn the_pixel_records_a_valid_url_and_answers_the_gif() {
    let app = TestApp::new();
    let url = "https://example.com/page?ref=mail";
    let reply = pixel(&app, &format!("?url={}", encoded(url))).await;
    assert_is_the_gif(&reply);
    assert_eq!(GIF.len(), 43);
    assert_eq!(app.total_visits(url).await, 1);
    assert!(app.rollup_mismatches().await.is_empty());
}

#[tokio::test]
async fn the_pixel_records_the_client_ip_and_user_agent_like_post_visit() {
    let app = TestApp::new();
    let url = "https://example.com/who";
    let request = Request::get(format!("/pixel.gif?url={}", encoded(url)))
        .header("x-forwarded-for", "198.51.100.7")
        .header("user-agent", "PixelAgent/2.0")
        .body(Body::empty())
        .unwrap();
    assert_is_the_gif(&app.send(request).await);
    let stats = app.get(&format!("/stats/{}", encoded(url))).await.json();
    assert_eq!(stats["recent_visits"][0]["ip"], "198.51.100.7");
    assert_eq!(stats["recent_visits"][0]["user_agent"], "PixelAgent/2.0");
}

#[tokio::test]
async fn the_pixel_with_an_invalid_url_answers_the_gif_and_records_nothing() {
    let app = TestApp::new();
    for query in [
        "?url=not-a-url",
        "?url=ftp%3A%2F%2Fexample.com%2F",
        "?url=https%3A%2F%2Fexample.com%2F%0A",
    ] {
        assert_is_the_gif(&pixel(&app, query).await);
    }
    assert_eq!(site_total(&app).await, 0);
    assert_eq!(app.stored_visits().await, 0);
}

#[tokio::test]
async fn the_pixel_with_an_invalid_event_answers_the_gif_and_records_nothing() {
    let app = TestApp::new();
    let reply = pixel(&app, "?url=https%3A%2F%2Fexample.com%2F&event=Not%20Valid").await;
    assert_is_the_gif(&reply);
    assert_eq!(site_total(&app).await, 0);
}

#[tokio::test]
async fn the_pixel_without_url_records_the_referer() {
    let app = TestApp::new();
    let referer = "https://blog.example.org/post?id=7";
    let request = Request::get("/pixel.gif")
        .header(REFERER, referer)
        .body(Body::empty())
        .unwrap();
    assert_is_the_gif(&app.send(request).await);
    assert_eq!(app.total_visits(referer).await, 1);

    // An explicit url wins over the Referer.
    let request = Request::get("/pixel.gif?url=https%3A%2F%2Fexample.com%2Fexplicit")
        .header(REFERER, referer)
        .body(Body::empty())
        .unwrap();
    assert_is_the_gif(&app.send(request).await);
    assert_eq!(app.total_visits("https://example.com/explicit").await, 1);
    assert_eq!(app.total_visits(referer).await, 1);
}

#[tokio::test]
async fn the_pixel_with_an_unreadable_query_records_nothing_not_even_the_referer() {
    let app = TestApp::new();
    let request =
        Request::get("/pixel.gif?url=https%3A%2F%2Fa.com%2F1&url=https%3A%2F%2Fa.com%2F2")
            .header(REFERER, "https://a.com/from")
            .body(Body::empty())
            .unwrap();
    assert_is_the_gif(&app.send(request).await);
    assert_eq!(site_total(&app).await, 0);
}

#[tokio::test]
async fn the_pixel_without_url_or_referer_answers_the_gif_and_records_nothing() {
    let app = TestApp::new();
    assert_is_the_gif(&pixel(&app, "").await);
    assert_is_the_gif(&pixel(&app, "?url=").await);
    assert_eq!(site_total(&app).await, 0);
}

#[tokio::test]
async fn the_pixel_event_counts_in_the_breakdown() {
    let app = TestApp::new();
    let reply = pixel(&app, "?url=https%3A%2F%2Fshop.example%2Fthanks&event=order").await;
    assert_is_the_gif(&reply);
    assert_eq!(events_this_year(&app, "all", "order").await, 1);
    assert_eq!(events_this_year(&app, "shop.example", "order").await, 1);
    assert_eq!(events_this_year(&app, "all", "pageview").await, 0);
}

#[tokio::test]
async fn the_pixel_over_its_rate_limit_still_answers_the_gif_but_records_nothing() {
    let app = TestApp::with(|args| args.rate_limit_per_minute = 2);
    let query = "?url=https%3A%2F%2Fexample.com%2Flimited";
    for _ in 0..4 {
        assert_is_the_gif(&pixel(&app, query).await);
    }
    assert_eq!(app.total_visits("https://example.com/limited").await, 2);
}

#[tokio::test]
async fn a_head_request_for_the_pixel_records_nothing() {
    let app = TestApp::new();
    let request = Request::head("/pixel.gif?url=https%3A%2F%2Fexample.com%2F")
        .body(Body::empty())
        .unwrap();
    let reply = app.send(request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(header(&reply, CONTENT_TYPE), "image/gif");
    assert_eq!(site_total(&app).await, 0);
}

#[tokio::test]
async fn the_dashboard_is_html_that_loads_nothing_from_another_origin() {
    let app = TestApp::new();
    let page = app.get("/dashboard").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(header(&page, CONTENT_TYPE), "text/html; charset=utf-8");
    let csp = header(&page, CONTENT_SECURITY_POLICY);
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let html = page.text();
    for id in [
        "total-visits",
        "unique-visitors",
        "hourly-chart",
        "top-pages",
        "top-sites",
        "recent-visits",
        "site",
        "referrers",
        "utm-campaign",
        "device-types",
        "browsers",
        "token-form",
    ] {
        assert!(html.contains(&format!("id=\"{id}\"")), "the page has #{id}");
    }

    let mut files = vec![("/dashboard".to_owned(), html)];
    for (path, content_type) in [
        ("/dashboard/app.js", "application/javascript; charset=utf-8"),
        ("/dashboard/app.css", "text/css; charset=utf-8"),
    ] {
        // The page names its files relatively (it may be served under a path prefix).
        let relative = &path[1..];
        assert!(files[0].1.contains(relative), "the page loads {relative}");
        let reply = app.get(path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(header(&reply, CONTENT_TYPE), content_type, "{path}");
        files.push((path.to_owned(), reply.text()));
    }
    for (path, text) in &files {
        let lower = text.to_ascii_lowercase();
        for external in [
            "src=\"http",
            "href=\"http",
            "src=\"//",
            "href=\"//",
            "@import",
            "url(http",
            "url(//",
            "fonts.googleapis",
            "cdn.",
        ] {
            assert!(!lower.contains(external), "{path} contains {external}");
        }
    }
    let script = &files[1].1;
    assert!(!script.contains("innerHTML"), "values go in as text only");
    for api in [
        "'stats'",
        "'hourly'",
        "'sources'",
        "'devices'",
        "'domains/day",
    ] {
        assert!(script.contains(api), "the script calls {api}");
    }
    // Issue 24: the chart comes from /hourly, not from the whole of /summary.
    assert!(
        !script.contains("'summary"),
        "the script does not call /summary"
    );
    assert!(
        script.contains("'Bearer '"),
        "the script sends the analytics token"
    );
}

#[tokio::test]
async fn the_dashboard_files_revalidate_with_their_etag() {
    let app = TestApp::new();
    for path in ["/dashboard", "/dashboard/app.js", "/dashboard/app.css"] {
        let reply = app.get(path).await;
        assert_eq!(header(&reply, CACHE_CONTROL), "no-cache", "{path}");
        let etag = header(&reply, ETAG).to_owned();
        let request = Request::get(path)
            .header(IF_NONE_MATCH, etag)
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            app.send(request).await.status,
            StatusCode::NOT_MODIFIED,
            "{path}"
        );
    }
}

#[tokio::test]
async fn the_openapi_document_describes_the_tracker_pixel_and_dashboard() {
    let app = TestApp::new();
    let doc = app.get("/openapi.json").await.json();
    let paths = doc["paths"].as_object().unwrap();
    for path in ["/tracker.js", "/pixel.gif", "/dashboard"] {
        assert!(paths.contains_key(path), "openapi.json lacks {path}");
    }
    let pixel = &paths["/pixel.gif"]["get"];
    assert!(pixel["responses"]["200"]["content"]["image/gif"].is_object());
    let names: Vec<&str> = pixel["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["url", "event"]);
}

crate::on_postgres!(
    tracker_js_is_small_cacheable_javascript_with_a_strong_etag,
    tracker_js_answers_304_to_a_matching_if_none_match,
    the_pixel_records_a_valid_url_and_answers_the_gif,
    the_pixel_records_the_client_ip_and_user_agent_like_post_visit,
    the_pixel_with_an_invalid_url_answers_the_gif_and_records_nothing,
    the_pixel_with_an_invalid_event_answers_the_gif_and_records_nothing,
    the_pixel_without_url_records_the_referer,
    the_pixel_with_an_unreadable_query_records_nothing_not_even_the_referer,
    the_pixel_without_url_or_referer_answers_the_gif_and_records_nothing,
    the_pixel_event_counts_in_the_breakdown,
    the_pixel_over_its_rate_limit_still_answers_the_gif_but_records_nothing,
    a_head_request_for_the_pixel_records_nothing,
    the_dashboard_is_html_that_loads_nothing_from_another_origin,
    the_dashboard_files_revalidate_with_their_etag,
    the_openapi_document_describes_the_tracker_pixel_and_dashboard,
);
