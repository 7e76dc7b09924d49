//! Admin endpoints (API.md §3, §4, §7): export, import, cleanup, pre-counted clicks; and the
//! [`Admin`] guard they share.
//!
//! With `--admin-token` set they need `Authorization: Bearer <token>` (compared in constant
//! time); without one they answer loopback clients only — the *resolved* client, so a
//! non-loopback address forwarded by a trusted proxy is refused too.

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::{delete, get, post};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::{IntoParams, ToSchema};

use crate::domain::export::{ExportFilter, ExportFormat, FilterParams};
use crate::domain::import::{ImportReport, read_records};
use crate::domain::{cleanup_cutoff, format_iso, now_millis, parse_site};
use crate::http::AppState;
use crate::http::client_ip::ClientIp;
use crate::http::error::{ApiError, Result};
use crate::http::extract::{Json, Query};

/// Largest `POST /import` body.
pub const MAX_IMPORT_BYTES: usize = 512 * 1024 * 1024;
/// Visits per transaction of an HTTP import.
const IMPORT_CHUNK: usize = 5_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/all-visits", get(export_visits))
        .route(
            "/import",
            post(import_visits).layer(DefaultBodyLimit::max(MAX_IMPORT_BYTES)),
        )
        .route("/cleanup", delete(cleanup_visits))
        .route("/domains", post(add_domain_clicks))
}

/// Proof that the request may use an admin endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        match state.admin_token.as_deref() {
            Some(token) => {
                let given = parts
                    .headers
                    .get(AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or("");
                if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
                    Ok(Self)
                } else {
                    Err(ApiError::Unauthorized(
                        "A valid admin token is required (Authorization: Bearer <token>)".into(),
                    ))
                }
            }
            None => {
                let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await?;
                if ip.is_loopback() {
                    Ok(Self)
                } else {
                    Err(ApiError::Forbidden(
                        "Admin endpoints answer local clients only when no admin token is configured"
                            .into(),
                    ))
                }
            }
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ExportQuery {
    /// First day to include (YYYY-MM-DD).
    pub start_date: Option<String>,
    /// Last day to include (YYYY-MM-DD).
    pub end_date: Option<String>,
    /// Only visits after this timestamp (exclusive).
    pub since: Option<String>,
    /// `START,END` (dates or timestamps; START inclusive, END exclusive); overrides the others.
    pub range: Option<String>,
    /// Most visits to return.
    #[param(minimum = 0)]
    pub limit: Option<i64>,
    /// Visits to skip first.
    #[param(minimum = 0)]
    pub offset: Option<i64>,
    /// `json` (default), `jsonl` or `csv`.
    #[param(inline, value_type = Option<ExportFormatParam>)]
    pub format: Option<ExportFormat>,
}

/// The export formats, as the OpenAPI document shows them ([`ExportFormat`] is parsed).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum ExportFormatParam {
    Json,
    Jsonl,
    Csv,
}

/// Export raw visits, newest first, streamed.
#[utoipa::path(get, path = "/all-visits", tag = "admin", params(ExportQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Visits. json: `{\"visits\": [...], \"total_count\": \"N\"}`; jsonl: one visit per line; csv: header `url,ip,user_agent,timestamp`.",
            content(
                (ExportedVisits = "application/json"),
                (ExportedVisit = "application/x-ndjson", example = json!({"url": "https://example.com/page", "ip": "192.168.1.1", "user_agent": "Mozilla/5.0...", "timestamp": "2025-07-28 10:30:00"})),
                (String = "text/csv", example = "url,ip,user_agent,timestamp\nhttps://example.com/page,192.168.1.1,Mozilla/5.0...,2025-07-28 10:30:00\n"),
            )),
        (status = 401, description = "Missing or wrong admin token", body = crate::http::routes::ErrorBody),
        (status = 403, description = "Not a local client and no token configured", body = crate::http::routes::ErrorBody),
        (status = 422, description = "Malformed filter", body = crate::http::routes::ErrorBody),
    ))]
pub async fn export_visits(
    _: Admin,
    State(state): State<AppState>,
    Query(query): Query<ExportQuery>,
) -> Result<Response> {
    let filter = FilterParams {
        start_date: query.start_date,
        end_date: query.end_date,
        since: query.since,
        range: query.range,
        limit: query.limit,
        offset: query.offset,
    }
    .parse()
    .map_err(ApiError::Validation)?;
    let format = query.format.unwrap_or_default();
    Ok(stream_export(&state, filter, format))
}

/// The store's export stream as the response body.
fn stream_export(state: &AppState, filter: ExportFilter, format: ExportFormat) -> Response {
    let content_type = match format {
        ExportFormat::Json => "application/json",
        ExportFormat::Jsonl => "application/x-ndjson",
        ExportFormat::Csv => "text/csv; charset=utf-8",
    };
    super::channel_body(content_type, state.store.export(filter, format))
}

/// One exported visit (`jsonl` lines, and the items of `json`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportedVisit {
    pub url: String,
    pub ip: String,
    pub user_agent: String,
    /// `YYYY-MM-DD HH:MM:SS`, UTC.
    pub timestamp: String,
    /// Present only when not `pageview`.
    pub event: Option<String>,
}

/// The `json` export.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportedVisits {
    pub visits: Vec<ExportedVisit>,
    /// The number of visits, as a string (as the original service wrote it).
    #[schema(example = "123")]
    pub total_count: String,
}

/// Import visits (JSONL or a JSON array), each batch of 5,000 committed as one transaction.
#[utoipa::path(post, path = "/import", tag = "admin", security(("bearer" = [])),
    request_body(content = String, description = "JSONL, or a JSON array, of `{url, ip|ip_address, user_agent, timestamp[, event]}`",
        content_type = "application/x-ndjson",
        example = "{\"url\":\"https://example.com/page\",\"ip\":\"192.168.1.1\",\"user_agent\":\"Mozilla/5.0\",\"timestamp\":\"2025-07-28 10:30:00\"}\n"),
    responses(
        (status = 200, description = "What was imported and what was skipped", body = ImportReport),
        (status = 401, description = "Missing or wrong admin token", body = crate::http::routes::ErrorBody),
        (status = 403, description = "Not a local client and no token configured", body = crate::http::routes::ErrorBody),
        (status = 422, description = "The body is not JSONL or a JSON array", body = crate::http::routes::ErrorBody),
    ))]
pub async fn import_visits(
    _: Admin,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<ImportReport>> {
    let mut report = ImportReport::default();
    let mut chunks: Vec<Vec<_>> = vec![Vec::new()];
    let parsed = tokio::task::spawn_blocking(move || {
        let result = read_records(body.as_ref(), |line, record| {
            match record {
                Ok(visit) => {
                    let chunk = chunks.last_mut().expect("never empty");
                    chunk.push(visit);
                    if chunk.len() >= IMPORT_CHUNK {
                        chunks.push(Vec::new());
                    }
                }
                Err(detail) => report.skip(line, detail),
            }
            Ok(())
        });
        (result, chunks, report)
    })
    .await?;
    let (result, chunks, mut report) = parsed;
    result.map_err(|e| ApiError::validation(format!("{e:#}")))?;
    for chunk in chunks.into_iter().filter(|c| !c.is_empty()) {
        report.imported += state.store.import(chunk).await? as u64;
    }
    Ok(Json(report))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct CleanupQuery {
    /// Delete visits older than this many days (at least 1).
    #[param(default = 30, minimum = 1)]
    pub days: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "completed", "deleted_visits": 1200, "cutoff_date": "2025-06-28T10:30:00"}))]
pub struct CleanupResponse {
    pub status: &'static str,
    pub deleted_visits: u64,
    /// Visits before this instant were deleted (ISO, UTC).
    pub cutoff_date: String,
}

/// Delete visits older than `days`, with their share of every rollup, in one transaction.
#[utoipa::path(delete, path = "/cleanup", tag = "admin", params(CleanupQuery), security(("bearer" = [])),
    responses(
        (status = 200, description = "Deleted", body = CleanupResponse),
        (status = 400, description = "days < 1", body = crate::http::routes::ErrorBody,
            example = json!({"detail": "Days must be at least 1"})),
        (status = 401, description = "Missing or wrong admin token", body = crate::http::routes::ErrorBody),
        (status = 403, description = "Not a local client and no token configured", body = crate::http::routes::ErrorBody),
        (status = 422, description = "days is not an integer", body = crate::http::routes::ErrorBody),
    ))]
pub async fn cleanup_visits(
    _: Admin,
    State(state): State<AppState>,
    Query(query): Query<CleanupQuery>,
) -> Result<Json<CleanupResponse>> {
    let cutoff =
        cleanup_cutoff(now_millis(), query.days.unwrap_or(30)).map_err(ApiError::bad_request)?;
    let deleted = state.store.cleanup(cutoff).await?;
    tracing::info!(deleted, cutoff = format_iso(cutoff), "cleanup done");
    Ok(Json(CleanupResponse {
        status: "completed",
        deleted_visits: deleted,
        cutoff_date: format_iso(cutoff),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "recorded", "sites": 2}))]
pub struct DomainClicksResponse {
    pub status: &'static str,
    /// Sites whose clicks were added.
    pub sites: usize,
}

/// Largest pre-counted click count per site and request.
const MAX_CLICKS: i64 = 1_000_000_000;

/// Add pre-counted clicks per site at a unix time (seed 000's body format).
#[utoipa::path(post, path = "/domains", tag = "sites", security(("bearer" = [])),
    request_body(content = Object, description = "`timestamp` (unix seconds) and site → clicks",
        example = json!({"timestamp": 1644407344, "example1.com": 80, "example2.com": 5})),
    responses(
        (status = 200, description = "Added and committed", body = DomainClicksResponse),
        (status = 401, description = "Missing or wrong admin token", body = crate::http::routes::ErrorBody),
        (status = 403, description = "Not a local client and no token configured", body = crate::http::routes::ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = crate::http::routes::ErrorBody),
        (status = 415, description = "Content-Type is not application/json", body = crate::http::routes::ErrorBody),
        (status = 422, description = "Malformed body", body = crate::http::routes::ErrorBody),
    ))]
pub async fn add_domain_clicks(
    _: Admin,
    State(state): State<AppState>,
    Json(body): Json<serde_json::Map<String, serde_json::Value>>,
) -> Result<(StatusCode, Json<DomainClicksResponse>)> {
    let at = body
        .get("timestamp")
        .and_then(serde_json::Value::as_f64)
        .and_then(crate::domain::timestamp_from_unix_seconds)
        .ok_or_else(|| ApiError::validation("timestamp (unix seconds) is required"))?;
    let mut clicks = Vec::new();
    for (key, value) in body.iter().filter(|(k, _)| k.as_str() != "timestamp") {
        let site = parse_site(key)
            .ok_or_else(|| ApiError::validation(format!("{key:?} is not a valid site name")))?;
        let n = value
            .as_i64()
            .filter(|n| (0..=MAX_CLICKS).contains(n))
            .ok_or_else(|| {
                ApiError::validation(format!(
                    "clicks of {key:?} must be an integer 0-{MAX_CLICKS}"
                ))
            })?;
        if n > 0 {
            clicks.push((site, n));
        }
    }
    let sites = clicks.len();
    if sites > 0 {
        state.store.add_clicks(at, clicks).await?;
    }
    Ok((
        StatusCode::OK,
        Json(DomainClicksResponse {
            status: "recorded",
            sites,
        }),
    ))
}
