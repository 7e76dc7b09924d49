//! The HTTP surface: one router per area, merged and wrapped in the shared middleware.
//!
//! [`router`] is pure (state in, `Router` out), so tests drive it in-process with
//! `tower::ServiceExt::oneshot`; `app::serve` only adds the listener and shutdown.

pub mod admin;
pub mod analytics;
pub mod calendar;
pub mod docs;
pub mod ops;
pub mod record;
pub mod web;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::client_ip;
use crate::error::ApiError;

/// Largest request body (except `POST /import`, which sets its own).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"detail": "Invalid URL format"}))]
pub struct ErrorBody {
    /// What went wrong, for a person to read.
    pub detail: String,
}

/// The whole application router with its middleware.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let mut routes = Router::new()
        .merge(record::router())
        .merge(analytics::router())
        .merge(admin::router())
        .merge(calendar::router())
        .merge(ops::router())
        .merge(docs::router())
        .merge(web::router())
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // Each `.layer()` wraps everything above it: the last one sees a request first.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    if let Some(ceiling) = state.ip_ceiling.clone() {
        routes = routes.layer(crate::ratelimit::ip_ceiling_layer(ceiling));
    }
    routes
        .layer(middleware::from_fn_with_state(
            state.trusted.clone(),
            client_ip::resolve_client_ip,
        ))
        .layer(cors(&state.cors_origins))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(state.request_timeout_secs.max(1)),
        ))
        // Plain or empty error answers of the layers above (timeout, CORS) become JSON.
        .layer(middleware::from_fn(json_error_bodies))
        .layer(middleware::from_fn(crate::telemetry::record_request))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// Chunks in flight between a producing thread and the response: with 64 KiB chunks, at most
/// ~256 KiB of a streamed answer is in memory at once.
const STREAM_CHANNEL: usize = 4;

/// A response whose body `produce` writes, on a blocking thread, through a small bounded
/// channel: memory stays flat however large the answer, a slow client slows the producer, and
/// a client that goes away stops it (the sink then answers `false`).
pub fn streamed_body(
    content_type: &'static str,
    produce: impl FnOnce(&mut dyn FnMut(bytes::Bytes) -> bool) + Send + 'static,
) -> Response {
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<bytes::Bytes>(STREAM_CHANNEL);
    tokio::task::spawn_blocking(move || {
        // `blocking_send` fails once the response (and so the client) is gone.
        produce(&mut |chunk| sender.blocking_send(chunk).is_ok());
    });
    let stream = futures_util::stream::poll_fn(move |cx| {
        receiver
            .poll_recv(cx)
            .map(|chunk| chunk.map(Ok::<_, std::convert::Infallible>))
    });
    let mut response = Response::new(Body::from_stream(stream));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// CORS: any origin by default (sites on other origins post visits), or the configured list.
fn cors(origins: &[String]) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([CONTENT_TYPE, axum::http::header::AUTHORIZATION])
        .max_age(Duration::from_secs(86_400));
    if origins.is_empty() || origins.iter().any(|o| o.trim() == "*") {
        layer.allow_origin(Any)
    } else {
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o.trim()).ok())
            .collect();
        layer.allow_origin(AllowOrigin::list(list))
    }
}

/// Gives every error answer without a body the `{"detail"}` shape.
async fn json_error_bodies(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let empty = response
        .headers()
        .get(CONTENT_LENGTH)
        .is_some_and(|len| len == "0")
        || !response.headers().contains_key(CONTENT_TYPE);
    if (status.is_client_error() || status.is_server_error()) && empty {
        let (mut parts, _) = response.into_parts();
        let detail = match status {
            StatusCode::REQUEST_TIMEOUT => "Request timed out".to_owned(),
            other => other.canonical_reason().unwrap_or("Error").to_owned(),
        };
        let body = axum::Json(crate::error::detail_body(&detail)).into_response();
        parts.headers.remove(CONTENT_LENGTH);
        parts
            .headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Response::from_parts(parts, Body::new(body.into_body()));
    }
    response
}
