//! Where visitors come from and what they use (API.md §12): `/sources`, `/devices`, `/hourly`.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::analytics::{as_map, hours_as_map, hours_param};
use super::reader::Reader;
use crate::domain::{now_millis, parse_site};
use crate::http::AppState;
use crate::http::error::{ApiError, Result};
use crate::http::extract::{Json, Query};

/// Most entries one list of `/sources` or `/devices` may ask for.
pub const MAX_LIMIT: usize = 1_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sources", get(get_sources))
        .route("/devices", get(get_devices))
        .route("/hourly", get(get_hourly))
}

#[derive(OpenApi)]
#[openapi(paths(get_sources, get_devices, get_hourly))]
pub struct DimensionsDoc;

#[derive(Debug, Deserialize, IntoParams)]
pub struct DimensionQuery {
    /// Window in hours (1-8760).
    #[param(default = 24, minimum = 1, maximum = 8760)]
    pub hours: Option<i64>,
    /// One site (host without `www.`); all sites when absent.
    #[param(pattern = "^[!-.0-~]{1,253}$")]
    pub site: Option<String>,
    /// Most entries in each list.
    #[param(default = 10, minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct HourlyQuery {
    /// Window in hours (1-8760).
    #[param(default = 24, minimum = 1, maximum = 8760)]
    pub hours: Option<i64>,
    /// One site (host without `www.`); all sites when absent.
    #[param(pattern = "^[!-.0-~]{1,253}$")]
    pub site: Option<String>,
}

fn site_param(site: Option<String>) -> Result<Option<String>> {
    site.map(|raw| {
        parse_site(&raw).ok_or_else(|| {
            ApiError::validation("site must be 1-253 printable characters without spaces or /")
        })
    })
    .transpose()
}

fn limit_param(limit: Option<i64>) -> Result<usize> {
    match limit.unwrap_or(10) {
        n @ 1..=1_000 => Ok(n as usize),
        _ => Err(ApiError::validation(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        ))),
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"referrers": {"(direct)": 40, "news.ycombinator.com": 12},
    "utm_source": {"newsletter": 5}, "utm_medium": {"email": 5}, "utm_campaign": {"spring": 5}}))]
pub struct SourcesResponse<'a> {
    /// Visits per referrer host (lower-case, without `www.`); `(direct)`: no referrer or the
    /// site itself; `(unknown)`: recorded before referrers were stored. Most first.
    #[serde(serialize_with = "as_map")]
    #[schema(value_type = std::collections::BTreeMap<String, i64>)]
    pub referrers: &'a [(String, i64)],
    /// Visits per `utm_source` of the page URL (untagged visits left out). Most first.
    #[serde(serialize_with = "as_map")]
    #[schema(value_type = std::collections::BTreeMap<String, i64>)]
    pub utm_source: &'a [(String, i64)],
    #[serde(serialize_with = "as_map")]
    #[schema(value_type = std::collections::BTreeMap<String, i64>)]
    pub utm_medium: &'a [(String, i64)],
    #[serde(serialize_with = "as_map")]
    #[schema(value_type = std::collections::BTreeMap<String, i64>)]
    pub utm_campaign: &'a [(String, i64)],
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"browsers": {"Chrome": 30, "Safari": 12}, "os": {"Windows": 20, "iOS": 9},
    "device_types": {"desktop": 25, "mobile": 10, "tablet": 0, "bot": 3}}))]
pub struct DevicesResponse<'a> {
    /// Visits per browser family (`Other` for anything unrecognised). Most first.
    #[serde(serialize_with = "as_map")]
    #[schema(value_type = std::collections::BTreeMap<String, i64>)]
    pub browsers: &'a [(String, i64)],
    /// Visits per OS family. Most first.
    #[serde(serialize_with = "as_map")]
    #[schema(value_type = std::collections::BTreeMap<String, i64>)]
    pub os: &'a [(String, i64)],
    /// `desktop`, `mobile`, `tablet`, `bot` (always all four), then `(unknown)` for visits
    /// recorded before devices were stored, if any.
    #[serde(serialize_with = "as_map")]
    #[schema(value_type = std::collections::BTreeMap<String, i64>)]
    pub device_types: &'a [(String, i64)],
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"by_hour": {"2025-07-28 10:00:00": 5}, "total_visits": 150, "unique_ips": 45}))]
pub struct HourlyResponse<'a> {
    /// Visits per hour in the window, keyed `YYYY-MM-DD HH:00:00` (UTC); empty hours left out.
    #[serde(serialize_with = "hours_as_map")]
    #[schema(value_type = std::collections::BTreeMap<String, i64>)]
    pub by_hour: &'a [(i64, i64)],
    /// All retained visits of the site (or of all sites), not limited by `hours`.
    pub total_visits: i64,
    /// Distinct visitors over all retained visits of the site (IPs, or pseudonyms under
    /// `--ip-mode hashed`).
    pub unique_ips: i64,
}

/// Where visitors came from: referrer hosts and UTM tags in the window.
#[utoipa::path(get, path = "/sources", tag = "analytics", params(DimensionQuery),
    responses(
        (status = 200, description = "Visits per referrer and UTM tag", body = SourcesResponse),
        (status = 422, description = "Bad parameter", body = crate::http::routes::ErrorBody),
    ))]
pub async fn get_sources(
    _: Reader,
    State(state): State<AppState>,
    Query(query): Query<DimensionQuery>,
) -> Result<axum::response::Response> {
    let hours = hours_param(query.hours)?;
    let (site, limit) = (site_param(query.site)?, limit_param(query.limit)?);
    let s = state
        .store
        .sources(now_millis(), hours, site, limit)
        .await?;
    Ok(axum::response::IntoResponse::into_response(Json(
        SourcesResponse {
            referrers: &s.referrers,
            utm_source: &s.utm_source,
            utm_medium: &s.utm_medium,
            utm_campaign: &s.utm_campaign,
        },
    )))
}

/// What visitors used: browser and OS families and device types in the window.
#[utoipa::path(get, path = "/devices", tag = "analytics", params(DimensionQuery),
    responses(
        (status = 200, description = "Visits per browser, OS and device type", body = DevicesResponse),
        (status = 422, description = "Bad parameter", body = crate::http::routes::ErrorBody),
    ))]
pub async fn get_devices(
    _: Reader,
    State(state): State<AppState>,
    Query(query): Query<DimensionQuery>,
) -> Result<axum::response::Response> {
    let hours = hours_param(query.hours)?;
    let (site, limit) = (site_param(query.site)?, limit_param(query.limit)?);
    let d = state
        .store
        .devices(now_millis(), hours, site, limit)
        .await?;
    Ok(axum::response::IntoResponse::into_response(Json(
        DevicesResponse {
            browsers: &d.browsers,
            os: &d.os,
            device_types: &d.device_types,
        },
    )))
}

/// Visits per hour of one site or all sites, with their all-time totals: a dashboard's chart.
#[utoipa::path(get, path = "/hourly", tag = "analytics", params(HourlyQuery),
    responses(
        (status = 200, description = "Visits per hour", body = HourlyResponse),
        (status = 422, description = "Bad parameter", body = crate::http::routes::ErrorBody),
    ))]
pub async fn get_hourly(
    _: Reader,
    State(state): State<AppState>,
    Query(query): Query<HourlyQuery>,
) -> Result<axum::response::Response> {
    let hours = hours_param(query.hours)?;
    let site = site_param(query.site)?;
    let h = state.store.hourly(now_millis(), hours, site).await?;
    Ok(axum::response::IntoResponse::into_response(Json(
        HourlyResponse {
            by_hour: &h.by_hour,
            total_visits: h.total_visits,
            unique_ips: h.unique_ips,
        },
    )))
}
