//! CORS (API.md §9): preflights for recording from any origin by default, or from the
//! configured origins only.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::json;

use crate::common::{TestApp, header, ip};

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

crate::on_postgres!(
    a_cors_preflight_for_post_visit_is_allowed_from_any_origin_by_default,
    configured_cors_origins_are_the_only_ones_allowed,
);
