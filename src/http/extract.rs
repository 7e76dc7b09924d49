//! Extractors whose rejections are [`ApiError`]s, so every malformed request is answered with
//! `{"detail": ...}` in the status API.md gives (axum's own answer plain text).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{CONTENT_TYPE, USER_AGENT};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;

use crate::domain::clean_user_agent;
use crate::http::error::ApiError;

/// `axum::Json` with `{"detail"}` rejections.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

/// The first buffer of a JSON answer: `axum::Json` starts at 128 bytes, so the ~180 of a
/// `POST /visit` answer cost a second allocation and a copy.
const JSON_FIRST_BUFFER: usize = 256;

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        let mut body = BytesMut::with_capacity(JSON_FIRST_BUFFER).writer();
        match serde_json::to_writer(&mut body, &self.0) {
            Ok(()) => (
                [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                body.into_inner().freeze(),
            )
                .into_response(),
            Err(err) => ApiError::Internal(anyhow::anyhow!("cannot serialize an answer: {err}"))
                .into_response(),
        }
    }
}

/// `axum::extract::Query` with `{"detail"}` rejections.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// `axum::extract::Path` with `{"detail"}` rejections.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// The request's user agent as stored (cut to 512 bytes; `unknown` when missing): read from
/// the headers in place, where a `HeaderMap` extractor would copy them all.
#[derive(Debug, Clone)]
pub struct UserAgent(pub String);

impl<S: Send + Sync> FromRequestParts<S> for UserAgent {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(&parts.headers))
    }
}

impl UserAgent {
    pub fn of(headers: &HeaderMap) -> Self {
        Self(clean_user_agent(
            headers.get(USER_AGENT).and_then(|v| v.to_str().ok()),
        ))
    }
}

/// Whether the request asks not to be tracked: `DNT: 1` or `Sec-GPC: 1` (honoured under
/// `--respect-dnt`).
#[derive(Debug, Clone, Copy)]
pub struct DoNotTrack(pub bool);

impl<S: Send + Sync> FromRequestParts<S> for DoNotTrack {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(&parts.headers))
    }
}

impl DoNotTrack {
    pub fn of(headers: &HeaderMap) -> Self {
        let set = |name| {
            headers
                .get(name)
                .is_some_and(|v| v.as_bytes().trim_ascii() == b"1")
        };
        Self(set("dnt") || set("sec-gpc"))
    }
}

/// A JSON body sent as `application/json` **or** `text/plain` (what `navigator.sendBeacon`
/// sends without a CORS preflight), or with no content type at all. Other types are `415`.
#[derive(Debug, Clone)]
pub struct BeaconJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for BeaconJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // The media type without parameters, compared without allocating: this runs on
        // every `POST /visit`.
        let essence = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim());
        let accepted = essence.is_none_or(|t| {
            t.eq_ignore_ascii_case("application/json")
                || t.eq_ignore_ascii_case("text/plain")
                || is_json_suffix_type(t)
        });
        if !accepted {
            let other = essence.unwrap_or_default().to_ascii_lowercase();
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type {other} is not supported: send application/json or text/plain"
            )));
        }
        // Boxed: the collecting future is ~600 bytes, and inside the handler's own boxed future
        // it made that one allocation of ~1.2 KiB, above glibc's per-thread cache (1,032 bytes)
        // and large enough to make it consolidate its small free chunks on every request.
        let body = Box::pin(Bytes::from_request(req, state)).await?;
        parse_json(&body).map(Self)
    }
}

/// `application/*+json`, in any case.
fn is_json_suffix_type(t: &str) -> bool {
    const KIND: &str = "application/";
    const SUFFIX: &str = "+json";
    t.len() >= KIND.len() + SUFFIX.len()
        && t.get(..KIND.len())
            .is_some_and(|k| k.eq_ignore_ascii_case(KIND))
        && t.get(t.len() - SUFFIX.len()..)
            .is_some_and(|s| s.eq_ignore_ascii_case(SUFFIX))
}

/// Parses a JSON body; errors are `422` with serde's position and reason.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::validation(
            "Request body is empty: a JSON body is required",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::validation(format!("Invalid JSON body: {e}")))
}
