//! Analytics endpoints (API.md §2): `/summary`, `/stats/{url}`, `/stats`.

use axum::Router;
use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::domain::{PageUrl, now_millis};
use crate::http::AppState;
use crate::http::error::{ApiError, Result};
use crate::http::extract::{Json, Query};
use crate::store::{self, queries};

/// Longest window, in hours (one year).
pub const MAX_HOURS: i64 = 8_760;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/summary", get(get_summary))
        .route("/stats", get(get_site_stats))
        .route("/stats/{*url}", get(get_url_stats))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct SummaryQuery {
    /// Window of `by_hour`, `user_agents` and `recent_visits`, in hours (1-8760).
    #[param(default = 24, minimum = 1, maximum = 8760)]
    pub hours: Option<i64>,
    /// Only the N most visited pages.
    #[param(minimum = 1)]
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct HoursQuery {
    /// Window in hours (1-8760).
    #[param(default = 24, minimum = 1, maximum = 8760)]
    pub hours: Option<i64>,
}

fn hours_param(hours: Option<i64>) -> Result<i64> {
    let hours = hours.unwrap_or(24);
    if (1..=MAX_HOURS).contains(&hours) {
        Ok(hours)
    } else {
        Err(ApiError::validation(format!(
            "hours must be between 1 and {MAX_HOURS}"
        )))
    }
}

/// Analytics of every page: totals, unique IPs, visits per hour, user agents, recent visits.
#[utoipa::path(get, path = "/summary", tag = "analytics", params(SummaryQuery),
    responses(
        (status = 200, description = "Per-page analytics", body = queries::SummaryResponse),
        (status = 422, description = "Bad parameter", body = crate::http::routes::ErrorBody),
    ))]
pub async fn get_summary(
    State(state): State<AppState>,
    Query(query): Query<SummaryQuery>,
) -> Result<Response> {
    let hours = hours_param(query.hours)?;
    if query.limit.is_some_and(|l| l < 1) {
        return Err(ApiError::validation("limit must be at least 1"));
    }
    let now = now_millis();
    let summary = store::read(&state.pool, move |conn| {
        Ok(queries::summary(conn, now, hours, query.limit)?)
    })
    .await?;
    // Streamed: a year-long summary of every page is tens of megabytes of JSON.
    Ok(super::streamed_body("application/json", move |sink| {
        queries::write_summary(&summary, crate::store::export::CHUNK_BYTES, sink);
    }))
}

/// The page URL of a `/stats/{url}` path: percent-encoded (decoded once) or raw, including a
/// raw URL whose `//` a proxy collapsed to `/`.
pub fn url_from_stats_path(uri: &Uri) -> Option<String> {
    let tail = uri.path().strip_prefix("/stats/")?;
    let decoded = if tail.contains(":/") {
        tail.to_owned()
    } else {
        percent_decode(tail)?
    };
    Some(restore_collapsed_slashes(&decoded))
}

fn restore_collapsed_slashes(url: &str) -> String {
    for scheme in ["https:", "http:"] {
        if let Some(rest) = url.strip_prefix(scheme)
            && !rest.starts_with("//")
        {
            return format!("{scheme}//{}", rest.trim_start_matches('/'));
        }
    }
    url.to_owned()
}

fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Analytics of one page. `{url}` may be percent-encoded (needed for a URL with a query
/// string) or raw; an unknown page answers zeros.
#[utoipa::path(get, path = "/stats/{url}", tag = "analytics",
    params(("url" = String, Path, description = "The page URL, percent-encoded or raw",
        pattern = "^[hH][tT][tT][pP][sS]?(:|%3[aA])"), HoursQuery),
    responses(
        (status = 200, description = "The page's analytics", body = queries::UrlStatsResponse),
        (status = 400, description = "Invalid URL", body = crate::http::routes::ErrorBody,
            example = json!({"detail": "Invalid URL format"})),
        (status = 422, description = "Bad parameter", body = crate::http::routes::ErrorBody),
    ))]
pub async fn get_url_stats(
    State(state): State<AppState>,
    uri: Uri,
    Query(query): Query<HoursQuery>,
) -> Result<Json<queries::UrlStatsResponse>> {
    let hours = hours_param(query.hours)?;
    let raw = url_from_stats_path(&uri).ok_or_else(ApiError::invalid_url)?;
    let url = PageUrl::parse(&raw).ok_or_else(ApiError::invalid_url)?;
    let now = now_millis();
    let stats = store::read(&state.pool, move |conn| {
        Ok(queries::url_stats(conn, url.as_str(), now, hours)?)
    })
    .await?;
    Ok(Json(stats))
}

/// Whole-site figures: totals, unique visitors, the 100 most visited pages, the newest visits.
#[utoipa::path(get, path = "/stats", tag = "analytics",
    responses((status = 200, description = "Whole-site figures", body = queries::SiteStatsResponse)))]
pub async fn get_site_stats(
    State(state): State<AppState>,
) -> Result<Json<queries::SiteStatsResponse>> {
    let stats = store::read(&state.pool, |conn| Ok(queries::site_stats(conn)?)).await?;
    Ok(Json(stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url_of(path: &str) -> Option<String> {
        url_from_stats_path(&path.parse().unwrap())
    }

    #[test]
    fn stats_paths_accept_raw_encoded_and_collapsed_urls() {
        assert_eq!(
            url_of("/stats/https://a.com/page").as_deref(),
            Some("https://a.com/page")
        );
        assert_eq!(
            url_of("/stats/https:/a.com/page").as_deref(),
            Some("https://a.com/page")
        );
        assert_eq!(
            url_of("/stats/https%3A%2F%2Fa.com%2Fp%3Fx%3D1").as_deref(),
            Some("https://a.com/p?x=1")
        );
        assert_eq!(
            url_of("/stats/https://a.com/caf%C3%A9").as_deref(),
            Some("https://a.com/caf%C3%A9")
        );
        assert_eq!(url_of("/stats/%ZZ"), None);
    }
}
