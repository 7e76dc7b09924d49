//! Admin endpoints (API.md §3, §4, §7): export, import, cleanup, pre-counted clicks; and the
//! [`Admin`] guard they share.
//!
//! With `--admin-token` set they need `Authorization: Bearer <token>` (compared in constant
//! time), from anywhere. Without one they answer this machine only, and not the web pages its
//! browser opens: the *resolved* client must be loopback (so a non-loopback address forwarded
//! by a trusted proxy is refused too), the `Host` must name loopback (a DNS-rebound name does
//! not), and the browser must not mark the request as sent by another site (`Sec-Fetch-Site`,
//! `Origin`). Either way these routes are never CORS-enabled ([`PATHS`],
//! `routes::CorsExceptAdmin`).

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, post};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::{IntoParams, ToSchema};

use crate::domain::export::{ExportFilter, ExportFormat, FilterParams};
use crate::domain::import::{ImportReport, Layout, read_records_as};
use crate::domain::{canonical_ip, cleanup_cutoff, format_iso, now_millis, parse_site};
use crate::http::AppState;
use crate::http::client_ip::ClientIp;
use crate::http::error::{ApiError, Result};
use crate::http::extract::{Json, Query};

/// Largest `POST /import` body.
pub const MAX_IMPORT_BYTES: usize = 512 * 1024 * 1024;
/// Visits per transaction of an HTTP import.
const IMPORT_CHUNK: usize = 5_000;

/// The paths of the admin routes. Every method on them is admin: `POST /domains` is the only
/// route at `/domains` (the public `GET /domains/{period}` is another path). The router below
/// is built from them, and `routes::CorsExceptAdmin` leaves requests to them without CORS
/// headers.
pub const PATHS: [&str; 4] = ["/all-visits", "/import", "/cleanup", "/domains"];

/// Whether `path` (a request's raw path, as the router matches it) is an admin route's.
pub fn is_admin_path(path: &str) -> bool {
    PATHS.contains(&path)
}

pub fn router() -> Router<AppState> {
    let [export, import, cleanup, domains] = PATHS;
    Router::new()
        .route(export, get(export_visits))
        .route(
            import,
            post(import_visits).layer(DefaultBodyLimit::max(MAX_IMPORT_BYTES)),
        )
        .route(cleanup, delete(cleanup_visits))
        .route(domains, post(add_domain_clicks))
}

/// The `403` of a non-loopback client when no token is configured.
const NOT_LOCAL: &str =
    "Admin endpoints answer local clients only when no admin token is configured";
/// The `403` of a `Host` that is not loopback (DNS rebinding) when no token is configured.
const NOT_LOOPBACK_HOST: &str = "Admin endpoints answer requests addressed to localhost, \
    127.0.0.1 or [::1] only when no admin token is configured";
/// The `403` of a request a browser sent for another site's page when no token is configured.
const CROSS_SITE: &str = "Admin endpoints refuse requests sent by another site's page when no \
    admin token is configured";

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
                if !ip.is_loopback() {
                    return Err(ApiError::Forbidden(NOT_LOCAL.into()));
                }
                let host = request_host(parts);
                if host.is_some_and(|host| !is_loopback_host(host)) {
                    return Err(ApiError::Forbidden(NOT_LOOPBACK_HOST.into()));
                }
                if sent_by_another_site(parts, host) {
                    return Err(ApiError::Forbidden(CROSS_SITE.into()));
                }
                Ok(Self)
            }
        }
    }
}

/// The host a request is addressed to: the authority of an absolute-form URI (which takes
/// precedence, RFC 9112 §3.2.2), else the `Host` header; `None` when neither is there, which no
/// browser sends (so it cannot be a rebound page), and which the in-process tests do.
fn request_host(parts: &Parts) -> Option<&str> {
    match parts.uri.authority() {
        Some(authority) => Some(authority.as_str()),
        None => parts.headers.get(HOST).map(|v| v.to_str().unwrap_or("")),
    }
}

/// Whether `host` (`name[:port]` or `[v6][:port]`) is a loopback name or address: `localhost`
/// or a name under `.localhost` (browsers resolve those to loopback themselves, never through
/// DNS, RFC 6761 §6.3), an address of `127.0.0.0/8`, or `[::1]` (also as `[::ffff:127.x.y.z]`).
/// Any other name may have been rebound to 127.0.0.1 by its owner's DNS; `0.0.0.0` and a
/// trailing-dot `localhost.` are refused too.
fn is_loopback_host(host: &str) -> bool {
    let valid_port = |port: &str| port.parse::<u16>().is_ok();
    if let Some(rest) = host.strip_prefix('[') {
        let Some((address, port)) = rest.split_once(']') else {
            return false;
        };
        let port_ok = port.is_empty() || port.strip_prefix(':').is_some_and(valid_port);
        return port_ok
            && address
                .parse::<std::net::Ipv6Addr>()
                .is_ok_and(|ip| canonical_ip(ip.into()).is_loopback());
    }
    let name = match host.split_once(':') {
        Some((name, port)) if valid_port(port) => name,
        Some(_) => return false,
        None => host,
    };
    if let Ok(ip) = name.parse::<std::net::Ipv4Addr>() {
        return ip.is_loopback();
    }
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name
            .strip_suffix(".localhost")
            .is_some_and(|sub| !sub.is_empty())
}

/// Whether a browser marked the request as sent by a page of another origin: a
/// `Sec-Fetch-Site` other than `same-origin` (footfall's own pages, e.g. `/docs`) or `none` (an
/// address typed or bookmarked), or an `Origin` that is not footfall's own — the scheme-less
/// `host[:port]` the request is addressed to. `null` (a sandboxed or `file:` page) is another
/// origin. A request carrying neither header (curl, scripts) is not a browser's cross-site one.
fn sent_by_another_site(parts: &Parts, host: Option<&str>) -> bool {
    let fetch_site = parts.headers.get("sec-fetch-site");
    if fetch_site.is_some_and(|site| site != "same-origin" && site != "none") {
        return true;
    }
    let Some(origin) = parts.headers.get(ORIGIN) else {
        return false;
    };
    let own = origin
        .to_str()
        .ok()
        .and_then(|o| {
            o.strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
        })
        .zip(host)
        .is_some_and(|(origin_host, host)| origin_host.eq_ignore_ascii_case(host));
    !own
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
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub limit: Option<i64>,
    /// Visits to skip first.
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
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
        (status = 403, description = "No token configured, and not a local client, a non-loopback Host, or a request from another site's page", body = crate::http::routes::ErrorBody),
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
    request_body(description = "Records `{url, ip|ip_address, user_agent, timestamp[, event]}`: JSONL (`application/x-ndjson`; every line a record, bad lines skipped) or one JSON array (`application/json`; anything but an array is 422). With another or no media type the layout is told by the first non-blank byte. An empty JSONL body imports nothing.",
        content(
            (ImportJsonl = "application/x-ndjson",
                example = "{\"url\":\"https://example.com/page\",\"ip\":\"192.168.1.1\",\"user_agent\":\"Mozilla/5.0\",\"timestamp\":\"2025-07-28 10:30:00\"}\n"),
            (ImportArray = "application/json",
                example = json!([{"url": "https://example.com/page", "ip": "192.168.1.1", "user_agent": "Mozilla/5.0", "timestamp": "2025-07-28 10:30:00"}])),
        )),
    responses(
        (status = 200, description = "What was imported and what was skipped", body = ImportReport),
        (status = 401, description = "Missing or wrong admin token", body = crate::http::routes::ErrorBody),
        (status = 403, description = "No token configured, and not a local client, a non-loopback Host, or a request from another site's page", body = crate::http::routes::ErrorBody),
        (status = 422, description = "The body is not JSONL or a JSON array", body = crate::http::routes::ErrorBody),
    ))]
pub async fn import_visits(
    _: Admin,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ImportReport>> {
    let layout = import_layout(&headers);
    let mut report = ImportReport::default();
    let mut chunks: Vec<Vec<_>> = vec![Vec::new()];
    let parsed = tokio::task::spawn_blocking(move || {
        let result = read_records_as(body.as_ref(), layout, |line, record| {
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
        let mut stored = Vec::with_capacity(chunk.len());
        for visit in chunk {
            stored.push(state.privacy.anonymize(&state.store, visit).await?);
        }
        report.imported += state.store.import(stored).await? as u64;
    }
    Ok(Json(report))
}

/// The layout an import body's media type declares (parameters such as `charset` ignored).
fn import_layout(headers: &HeaderMap) -> Layout {
    let media_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match media_type.as_deref() {
        Some("application/json") => Layout::JsonArray,
        Some("application/x-ndjson" | "application/jsonl") => Layout::Jsonl,
        _ => Layout::Detect,
    }
}

/// The `application/x-ndjson` body of `POST /import`: any text, one record a line.
#[derive(ToSchema)]
#[schema(value_type = String)]
#[allow(dead_code)]
pub struct ImportJsonl(String);

/// The `application/json` body of `POST /import`: one array of records (each checked and
/// skipped when bad, like a JSONL line).
#[derive(ToSchema)]
#[schema(value_type = Vec<serde_json::Value>)]
#[allow(dead_code)]
pub struct ImportArray(Vec<serde_json::Value>);

#[derive(Debug, Deserialize, IntoParams)]
pub struct CleanupQuery {
    /// Delete visits older than this many days (at least 1).
    #[param(default = 30, minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
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
        (status = 403, description = "No token configured, and not a local client, a non-loopback Host, or a request from another site's page", body = crate::http::routes::ErrorBody),
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
pub const MAX_CLICKS: i64 = 1_000_000_000;

/// Add pre-counted clicks per site at a unix time (seed 000's body format).
#[utoipa::path(post, path = "/domains", tag = "sites", security(("bearer" = [])),
    request_body(content = Object, description = "`timestamp` (unix seconds) and site → clicks",
        example = json!({"timestamp": 1644407344, "example1.com": 80, "example2.com": 5})),
    responses(
        (status = 200, description = "Added and committed", body = DomainClicksResponse),
        (status = 401, description = "Missing or wrong admin token", body = crate::http::routes::ErrorBody),
        (status = 403, description = "No token configured, and not a local client, a non-loopback Host, or a request from another site's page", body = crate::http::routes::ErrorBody),
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
        // An integer, also when written with a zero fraction (`5.0`), as JSON Schema counts it.
        let n = value
            .as_i64()
            .or_else(|| {
                value
                    .as_f64()
                    .filter(|f| f.fract() == 0.0 && (0.0..=MAX_CLICKS as f64).contains(f))
                    .map(|f| f as i64)
            })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_localhost_its_subdomains_127_8_and_ipv6_loopback() {
        for host in [
            "localhost",
            "localhost:8000",
            "LocalHost:8000",
            "app.localhost:8000",
            "127.0.0.1",
            "127.0.0.1:8000",
            "127.8.9.10:1",
            "[::1]",
            "[::1]:8000",
            "[::ffff:127.0.0.1]:8000",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "",
            "evil.example",
            "evil.example:8000",
            "localhost.evil.example:8000",
            "evillocalhost:8000",
            ".localhost",
            "localhost.",
            "localhost:",
            "localhost:99999",
            "localhost:8000:1",
            "0.0.0.0:8000",
            "192.168.1.10:8000",
            "127.1:8000",
            "::1",
            "[::1",
            "[::1]8000",
            "[::2]:8000",
            "[::]:8000",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut request = axum::http::Request::get("/all-visits");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn only_a_browser_mark_of_another_origin_counts_as_another_site() {
        let host = Some("localhost:8000");
        let own = [
            vec![],
            vec![("sec-fetch-site", "same-origin")],
            vec![("sec-fetch-site", "none")],
            vec![("origin", "http://localhost:8000")],
            vec![("origin", "http://LOCALHOST:8000")],
            vec![("origin", "https://localhost:8000")],
        ];
        for headers in own {
            assert!(!sent_by_another_site(&parts(&headers), host), "{headers:?}");
        }
        let foreign = [
            vec![("sec-fetch-site", "cross-site")],
            vec![("sec-fetch-site", "same-site")],
            vec![("sec-fetch-site", "something-new")],
            vec![("origin", "https://evil.example")],
            vec![("origin", "http://localhost:3000")],
            vec![("origin", "http://127.0.0.1:8000")],
            vec![("origin", "null")],
            vec![("origin", "localhost:8000")],
            vec![
                ("sec-fetch-site", "same-origin"),
                ("origin", "http://localhost:3000"),
            ],
        ];
        for headers in foreign {
            assert!(sent_by_another_site(&parts(&headers), host), "{headers:?}");
        }
        // Without a host to compare with, any Origin is foreign.
        let origin = parts(&[("origin", "http://localhost:8000")]);
        assert!(sent_by_another_site(&origin, None));
    }

    #[test]
    fn the_host_is_the_absolute_uris_authority_before_the_host_header() {
        let request = axum::http::Request::get("http://evil.example:8000/all-visits")
            .header("host", "localhost:8000")
            .body(())
            .unwrap();
        assert_eq!(
            request_host(&request.into_parts().0),
            Some("evil.example:8000")
        );
        let request = parts(&[("host", "localhost:8000")]);
        assert_eq!(request_host(&request), Some("localhost:8000"));
        assert_eq!(request_host(&parts(&[])), None);
    }

    #[test]
    fn the_admin_paths_are_exact_paths_not_prefixes() {
        for path in PATHS {
            assert!(is_admin_path(path));
        }
        for path in [
            "/domains/day",
            "/domains/",
            "/all-visits/",
            "/cleanup2",
            "/",
            "/stats",
        ] {
            assert!(!is_admin_path(path), "{path}");
        }
    }
}
