//! The edge of every request, in one layer: the client IP, request metrics, the access-log
//! line, and `{"detail"}` bodies for the layers' own bare error answers.
//!
//! One hand-written `tower` service rather than three `from_fn` middlewares: each of those
//! boxes the rest of the stack and its future on every request, and `POST /visit` is cheap
//! enough that this showed up in its throughput.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::http::client_ip::{self, TrustedProxies};
use crate::http::error::InternalCause;
use crate::telemetry::RequestRecord;

/// Adds [`Edge`] around a service.
#[derive(Debug, Clone)]
pub struct EdgeLayer {
    trusted: TrustedProxies,
}

impl EdgeLayer {
    pub fn new(trusted: TrustedProxies) -> Self {
        Self { trusted }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            trusted: self.trusted.clone(),
        }
    }
}

/// Resolves the client IP into a [`client_ip::ClientIp`] extension, then, once the answer is
/// ready, counts and logs the request and gives a bare error answer the `{"detail"}` shape.
#[derive(Debug, Clone)]
pub struct Edge<S> {
    inner: S,
    trusted: TrustedProxies,
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let client = client_ip::of_request(&self.trusted, &request);
        request.extensions_mut().insert(client);
        let record = Some(RequestRecord::start(&request));
        EdgeFuture {
            inner: self.inner.call(request),
            record,
        }
    }
}

pin_project! {
    /// The answer of [`Edge`].
    pub struct EdgeFuture<F> {
        #[pin]
        inner: F,
        record: Option<RequestRecord>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for EdgeFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = ready!(this.inner.poll(cx));
        let mut response = json_error_body(response);
        if let Some(record) = this.record.take() {
            let cause = response.extensions_mut().remove::<InternalCause>();
            record.finish(response.status().as_u16(), cause);
        }
        Poll::Ready(Ok(response))
    }
}

/// Gives an error answer without a body (the timeout's, CORS's) the `{"detail"}` shape.
fn json_error_body(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let empty = response
        .headers()
        .get(CONTENT_LENGTH)
        .is_some_and(|len| len == "0")
        || !response.headers().contains_key(CONTENT_TYPE);
    if !empty {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let detail = match status {
        StatusCode::REQUEST_TIMEOUT => "Request timed out",
        other => other.canonical_reason().unwrap_or("Error"),
    };
    let body = axum::Json(crate::http::error::detail_body(detail)).into_response();
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::new(body.into_body()))
}
