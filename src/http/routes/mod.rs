//! The HTTP surface: one router per area, merged and wrapped in the shared middleware.
//!
//! [`router`] is pure (state in, `Router` out), so tests drive it in-process with
//! `tower::ServiceExt::oneshot`; `app::serve` only adds the listener and shutdown.

pub mod admin;
pub mod analytics;
pub mod calendar;
mod contract;
pub mod dimensions;
pub mod docs;
mod edge;
pub mod ops;
pub mod reader;
pub mod record;
mod summary_body;
pub mod web;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use futures_util::future::Either;
use serde::Serialize;
use tower::{Layer, Service, ServiceBuilder};
use tower_http::cors::{AllowOrigin, Any, Cors, CorsLayer};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use utoipa::ToSchema;

use crate::http::AppState;
use crate::http::error::ApiError;

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
///
/// The middleware is one `ServiceBuilder` stack applied with a single `Router::layer`: each
/// separate `.layer()` call boxes the stack again, and every box is cloned on every request.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    // Outermost first: the first layer sees a request first.
    let middleware = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(
            request_id.clone(),
            SequentialRequestId::new(),
        ))
        .layer(PropagateRequestIdLayer::new(request_id))
        .layer(edge::EdgeLayer::new(state.trusted.clone()))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(state.request_timeout_secs.max(1)),
        ))
        // Before the ceiling, so preflights do not count and a `429` stays readable
        // cross-origin; admin routes pass through without CORS (see `CorsExceptAdmin`).
        .layer(CorsExceptAdmin(cors(&state.cors_origins)))
        .option_layer(
            state
                .ip_ceiling
                .clone()
                .map(crate::http::ratelimit::ip_ceiling_layer),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    Router::new()
        .merge(record::router())
        .merge(analytics::router())
        .merge(dimensions::router())
        .merge(admin::router())
        .merge(calendar::router())
        .merge(ops::router())
        .merge(docs::router())
        .merge(web::router())
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware)
        .with_state(state)
}

/// Request ids for requests that bring none: a random 64-bit prefix drawn at start and a
/// counter, laid out as a UUID (version 8, RFC 9562's custom format). Unique within the process
/// and not guessable across restarts, without the `getrandom` call per request that a UUIDv4
/// costs.
#[derive(Debug, Clone)]
struct SequentialRequestId {
    prefix: u64,
    next: Arc<AtomicU64>,
}

impl SequentialRequestId {
    fn new() -> Self {
        use std::hash::BuildHasher;
        // `RandomState` is seeded from the OS's random source.
        let prefix =
            std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now());
        Self {
            prefix,
            next: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The `n`th id: the prefix's top 64 bits, then the counter, with the version and variant
    /// bits set; UUID-shaped hex written into a stack buffer (no `format!` per request).
    fn id(&self, n: u64) -> [u8; 36] {
        let high = (self.prefix & !0xF000) | 0x8000;
        let low = (n & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
        let mut id = [b'-'; 36];
        // (value, digits) per group of `8-4-4-4-12`.
        let groups = [
            (high >> 32, 8),
            ((high >> 16) & 0xFFFF, 4),
            (high & 0xFFFF, 4),
            (low >> 48, 4),
            (low & 0xFFFF_FFFF_FFFF, 12),
        ];
        let mut at = 0;
        for (value, digits) in groups {
            for i in 0..digits {
                let nibble = (value >> (4 * (digits - 1 - i))) & 0xF;
                id[at + i] = b"0123456789abcdef"[nibble as usize];
            }
            at += digits + 1;
        }
        id
    }
}

impl MakeRequestId for SequentialRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = self.id(self.next.fetch_add(1, Ordering::Relaxed));
        HeaderValue::from_bytes(&id).ok().map(RequestId::new)
    }
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
    let (sender, receiver) = tokio::sync::mpsc::channel::<bytes::Bytes>(STREAM_CHANNEL);
    tokio::task::spawn_blocking(move || {
        // `blocking_send` fails once the response (and so the client) is gone.
        produce(&mut |chunk| sender.blocking_send(chunk).is_ok());
    });
    channel_body(content_type, receiver)
}

/// A response whose body is the chunks `receiver` yields, until its sender closes. Dropping
/// the response (the client went away) closes the channel, which stops the producer.
pub fn channel_body(
    content_type: &'static str,
    mut receiver: tokio::sync::mpsc::Receiver<bytes::Bytes>,
) -> Response {
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

/// Applies a [`CorsLayer`] to every request except those to an admin route
/// ([`admin::is_admin_path`]), which answer no `Access-Control-*` header at all: another site's
/// page may neither read them nor get a preflight through, so a `DELETE /cleanup` (which needs
/// one) is never sent; an admin preflight reaches the router, which answers `405`.
///
/// Decided by path in front of the router, not by a CORS layer on the public routes inside it:
/// that would put CORS behind the per-IP ceiling, so preflights would count against it and its
/// `429`s would lose their CORS headers. The paths are the admin router's own ([`admin::PATHS`]),
/// and every method on them is admin.
#[derive(Debug, Clone)]
struct CorsExceptAdmin(CorsLayer);

impl<S> Layer<S> for CorsExceptAdmin {
    type Service = CorsExceptAdminService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CorsExceptAdminService(self.0.layer(inner))
    }
}

/// The service of [`CorsExceptAdmin`]: the CORS service, whose inner service admin requests
/// are handed to directly.
#[derive(Debug, Clone)]
struct CorsExceptAdminService<S>(Cors<S>);

impl<S> Service<Request> for CorsExceptAdminService<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<tower_http::cors::ResponseFuture<S::Future>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        // Readies the one inner service both branches call.
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if admin::is_admin_path(request.uri().path()) {
            Either::Right(self.0.get_mut().call(request))
        } else {
            Either::Left(self.0.call(request))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_request_ids_are_distinct_version_8_uuids() {
        let ids = SequentialRequestId::new();
        let text = |n| String::from_utf8(ids.id(n).to_vec()).unwrap();
        let (a, b) = (text(0), text(1));
        assert_ne!(a, b);
        for id in [&a, &b] {
            assert_eq!(id.len(), 36, "{id}");
            let groups: Vec<&str> = id.split('-').collect();
            assert_eq!(
                groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12]
            );
            assert!(groups[2].starts_with('8'), "version 8: {id}");
            assert!(
                matches!(&groups[3][..1], "8" | "9" | "a" | "b"),
                "variant: {id}"
            );
        }
        assert_eq!(a[..19], b[..19], "one process, one prefix");
        // The digits are the prefix's and the counter's, in order.
        let high = (ids.prefix & !0xF000) | 0x8000;
        for n in [0, 1, 0xABC, u64::MAX] {
            let low = (n & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
            let want = format!(
                "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                high >> 32,
                (high >> 16) & 0xFFFF,
                high & 0xFFFF,
                low >> 48,
                low & 0xFFFF_FFFF_FFFF
            );
            assert_eq!(text(n), want);
        }
    }
}
