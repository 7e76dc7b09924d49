//! The one error type of the HTTP API: every failure becomes `{"detail": "..."}` with a status.
//!
//! axum's own extractor rejections are converted here too, so malformed JSON, wrong types and bad
//! query strings answer in the same shape as our own validation.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StoreError;

/// Message of every `429` (the exact text of the original service).
pub const TOO_MANY_REQUESTS: &str = "Too many requests, please try again later";
/// Message of an invalid page URL (the exact text of the original service).
pub const INVALID_URL: &str = "Invalid URL format";

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request that parsed but makes no sense (`400`).
    #[error("{0}")]
    BadRequest(String),
    /// Validation failure of a body, path or query (`422`).
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("Not Found")]
    NotFound,
    #[error("Method Not Allowed")]
    MethodNotAllowed,
    #[error("Request body is larger than the limit of 1 MiB")]
    PayloadTooLarge,
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Over a rate limit; `retry_after` in whole seconds (at least 1).
    #[error("{TOO_MANY_REQUESTS}")]
    TooManyRequests { retry_after: u64 },
    /// The write queue is full: the client should retry shortly.
    #[error("Server is busy, please retry shortly")]
    Overloaded,
    /// The database could not take the write (e.g. disk full, locked too long): retry later.
    #[error("{0}")]
    Unavailable(String),
    #[error("The server is shutting down")]
    ShuttingDown,
    /// A bug or an I/O failure: logged with its cause, answered without it.
    #[error("Internal server error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded | Self::Unavailable(_) | Self::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn validation(msg: impl Into<String>) -> Self {
        Self::Validation(msg.into())
    }

    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::BadRequest(msg.into())
    }

    pub fn invalid_url() -> Self {
        Self::BadRequest(INVALID_URL.into())
    }
}

/// The cause of a `500`, kept out of the answer's body and handed to the request's log line
/// (written by `RequestRecord::finish`, which knows the request id).
#[derive(Debug, Clone)]
pub struct InternalCause(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response =
            (status, axum::Json(json!({ "detail": self.to_string() }))).into_response();
        if let Self::Internal(cause) = &self {
            response
                .extensions_mut()
                .insert(InternalCause(format!("{cause:#}")));
        }
        let retry_after = match &self {
            Self::TooManyRequests { retry_after } => Some((*retry_after).max(1)),
            Self::Overloaded | Self::Unavailable(_) | Self::ShuttingDown => Some(1),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> Self {
        Self::Internal(err)
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Busy => Self::Overloaded,
            StoreError::Unavailable(cause) => Self::Unavailable(cause),
            StoreError::ShuttingDown => Self::ShuttingDown,
            StoreError::Internal(cause) => Self::Internal(cause),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(err: tokio::task::JoinError) -> Self {
        Self::Internal(err.into())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::PayloadTooLarge
        } else {
            Self::bad_request(rejection.body_text())
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => {
                Self::UnsupportedMediaType("Content-Type must be application/json".into())
            }
            JsonRejection::BytesRejection(inner) => inner.into(),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            other => Self::Validation(other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::Validation(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::Validation(rejection.body_text())
    }
}

/// The body of a JSON error, for handlers that build responses by hand.
pub fn detail_body(detail: &str) -> serde_json::Value {
    json!({ "detail": detail })
}
