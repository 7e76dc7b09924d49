//! Analytics endpoints (API.md §2): `/summary`, `/stats/{url}`, `/stats`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::domain::{IsoTime, PageUrl, VisitorText, now_millis, write_space};
use crate::http::AppState;
use crate::http::error::{ApiError, Result};
use crate::http::extract::{Json, Query};
use crate::store::model;

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
    #[param(minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct HoursQuery {
    /// Window in hours (1-8760).
    #[param(default = 24, minimum = 1, maximum = 8760)]
    pub hours: Option<i64>,
}

pub(super) fn hours_param(hours: Option<i64>) -> Result<i64> {
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
        (status = 200, description = "Per-page analytics", body = SummaryResponse),
        (status = 422, description = "Bad parameter", body = crate::http::routes::ErrorBody),
    ))]
pub async fn get_summary(
    _: super::reader::Reader,
    State(state): State<AppState>,
    Query(query): Query<SummaryQuery>,
) -> Result<Response> {
    let hours = hours_param(query.hours)?;
    if query.limit.is_some_and(|l| l < 1) {
        return Err(ApiError::validation("limit must be at least 1"));
    }
    let summary = state
        .store
        .summary(now_millis(), hours, query.limit)
        .await?;
    // Streamed: a year-long summary of every page is tens of megabytes of JSON.
    Ok(super::streamed_body("application/json", move |sink| {
        super::summary_body::write_summary(&summary, SUMMARY_CHUNK_BYTES, sink);
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
    params(("url" = String, Path, description = "The page URL, percent-encoded or raw"), HoursQuery),
    responses(
        (status = 200, description = "The page's analytics", body = UrlStatsResponse),
        (status = 400, description = "Invalid URL", body = crate::http::routes::ErrorBody,
            example = json!({"detail": "Invalid URL format"})),
        (status = 422, description = "Bad parameter", body = crate::http::routes::ErrorBody),
    ))]
pub async fn get_url_stats(
    _: super::reader::Reader,
    State(state): State<AppState>,
    uri: Uri,
    Query(query): Query<HoursQuery>,
) -> Result<Response> {
    let hours = hours_param(query.hours)?;
    let raw = url_from_stats_path(&uri).ok_or_else(ApiError::invalid_url)?;
    let url = PageUrl::parse(&raw).ok_or_else(ApiError::invalid_url)?;
    let stats = state.store.url_stats(url, now_millis(), hours).await?;
    Ok(Json(UrlStatsResponse::of(&stats)).into_response())
}

/// Whole-site figures: totals, unique visitors, the 100 most visited pages, the newest visits.
#[utoipa::path(get, path = "/stats", tag = "analytics",
    responses((status = 200, description = "Whole-site figures", body = SiteStatsResponse)))]
pub async fn get_site_stats(
    _: super::reader::Reader,
    State(state): State<AppState>,
) -> Result<Response> {
    let stats = state.store.site_stats().await?;
    Ok(Json(SiteStatsResponse::of(&stats)).into_response())
}

/// Size at which a streamed summary hands a chunk to the response. Each chunk wakes the
/// connection's thread, which under load is busy with thousands of other requests: 256 KiB
/// answered a 4 MB summary ~5 ms sooner than 64 KiB at half of capacity (docs/PERFORMANCE.md).
const SUMMARY_CHUNK_BYTES: usize = 256 * 1024;

#[derive(Debug, Serialize, ToSchema)]
pub struct RecentVisit<'a> {
    #[schema(value_type = String, example = "192.168.1.1")]
    pub ip: VisitorText,
    #[schema(example = "Mozilla/5.0...")]
    pub user_agent: &'a str,
    /// ISO time, UTC.
    #[schema(value_type = String, example = "2025-07-28T11:30:00")]
    pub timestamp: IsoTime,
}

impl<'a> RecentVisit<'a> {
    fn list(visits: &'a [model::RecentVisit]) -> Vec<Self> {
        visits
            .iter()
            .map(|v| Self {
                ip: VisitorText(v.ip),
                user_agent: &v.user_agent,
                timestamp: IsoTime(v.at),
            })
            .collect()
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PageSummary<'a> {
    /// All retained visits of the page (not limited by `hours`).
    pub total_visits: i64,
    /// Distinct client IPs over all retained visits of the page.
    pub unique_ips: i64,
    /// Visits per hour in the window, keyed `YYYY-MM-DD HH:00:00` (UTC); empty hours left out.
    #[schema(value_type = HashMap<String, i64>, example = json!({"2025-07-28 10:00:00": 5}))]
    #[serde(serialize_with = "hours_as_map")]
    pub by_hour: &'a [(i64, i64)],
    /// Visits per user agent in the window, most frequent first.
    #[schema(value_type = HashMap<String, i64>, example = json!({"Mozilla/5.0...": 30}))]
    #[serde(serialize_with = "as_map")]
    pub user_agents: &'a [(Arc<str>, i64)],
    /// The newest visits of the page in the window (at most 10), newest first.
    pub recent_visits: Vec<RecentVisit<'a>>,
}

/// Only the tests build one: `summary_body` writes pages by hand and is held to this shape.
#[cfg(test)]
impl<'a> PageSummary<'a> {
    pub(super) fn of(page: &'a model::PageSummary) -> Self {
        Self {
            total_visits: page.total_visits,
            unique_ips: page.unique_ips,
            by_hour: &page.by_hour,
            user_agents: &page.user_agents,
            recent_visits: RecentVisit::list(&page.recent_visits),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DateRange<'a> {
    #[schema(example = "2025-07-20T10:00:00")]
    pub earliest: &'a str,
    #[schema(example = "2025-07-28T11:30:00")]
    pub latest: &'a str,
}

impl<'a> DateRange<'a> {
    pub(super) fn of(range: &'a model::DateRange) -> Self {
        Self {
            earliest: &range.earliest,
            latest: &range.latest,
        }
    }
}

/// The body of `/summary`, for the OpenAPI document: `summary_body::write_summary` writes it.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct SummaryResponse {
    /// Per page URL, ordered by total visits (most first).
    #[schema(value_type = HashMap<String, PageSummary>)]
    pub data: (),
    /// All retained visits.
    pub total_entries: i64,
    /// Oldest and newest retained visit; `null` when there is none.
    #[schema(value_type = Option<DateRange>)]
    pub date_range: (),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UrlStatsResponse<'a> {
    #[schema(example = "https://example.com/page")]
    pub url: &'a str,
    pub total_visits: i64,
    pub unique_ips: i64,
    /// Visits per hour in the window, keyed `YYYY-MM-DD HH:00:00` (UTC).
    #[schema(value_type = HashMap<String, i64>, example = json!({"2025-07-28 10:00:00": 3}))]
    pub hourly_visits: &'a BTreeMap<String, i64>,
    /// The newest visits in the window (at most 20), newest first.
    pub recent_visits: Vec<RecentVisit<'a>>,
}

impl<'a> UrlStatsResponse<'a> {
    fn of(stats: &'a model::UrlStats) -> Self {
        Self {
            url: &stats.url,
            total_visits: stats.total_visits,
            unique_ips: stats.unique_ips,
            hourly_visits: &stats.hourly_visits,
            recent_visits: RecentVisit::list(&stats.recent_visits),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SiteRecentVisit<'a> {
    pub url: &'a str,
    #[schema(value_type = String)]
    pub ip: VisitorText,
    #[schema(value_type = String)]
    pub timestamp: IsoTime,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SiteStatsResponse<'a> {
    pub total_visits: i64,
    /// Distinct client IPs over all retained visits.
    pub unique_visitors: i64,
    /// The 100 most visited pages, most first.
    #[schema(value_type = HashMap<String, i64>)]
    #[serde(serialize_with = "as_map")]
    pub popular_pages: &'a [(String, i64)],
    /// The 10 newest visits, newest first.
    pub recent_visits: Vec<SiteRecentVisit<'a>>,
}

impl<'a> SiteStatsResponse<'a> {
    fn of(stats: &'a model::SiteStats) -> Self {
        Self {
            total_visits: stats.total_visits,
            unique_visitors: stats.unique_visitors,
            popular_pages: &stats.popular_pages,
            recent_visits: stats
                .recent_visits
                .iter()
                .map(|v| SiteRecentVisit {
                    url: &v.url,
                    ip: VisitorText(v.ip),
                    timestamp: IsoTime(v.at),
                })
                .collect(),
        }
    }
}

/// Serializes ordered pairs as a JSON object, keeping their order (and without building an
/// intermediate `serde_json::Value`: a year-long `/summary` is tens of megabytes).
pub(super) fn as_map<K: Serialize, V: Serialize, S: serde::Serializer>(
    pairs: &&[(K, V)],
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serializer.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

/// Serializes (hour number, visits) pairs as `{"YYYY-MM-DD HH:00:00": visits}`, formatting
/// each key as it is written instead of holding a `String` per hour (a year-long summary of
/// 1,000 pages has ~720,000 of them).
pub(super) fn hours_as_map<S: serde::Serializer>(
    hours: &&[(i64, i64)],
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = serializer.serialize_map(Some(hours.len()))?;
    let mut key = String::with_capacity(19);
    for &(hour, n) in hours.iter() {
        key.clear();
        write_space(&mut key, hour * crate::domain::HOUR_MS / 1000);
        map.serialize_entry(&key, &n)?;
    }
    map.end()
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
