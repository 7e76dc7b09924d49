//! Request ids (API.md §9): generated when a request has none, echoed when it has one, on
//! every answer including errors.

use axum::body::Body;
use axum::http::{Request, StatusCode};

use crate::common::{TestApp, header};

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

crate::on_postgres!(a_request_id_is_generated_when_absent_and_echoed_when_present,);
