//! Calendar breakdowns per site and event (API.md §6) and top sites per period (§7).

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::domain::period::{Period, period_minutes};
use crate::domain::{EVENT_RULE, now_millis, parse_event, parse_site};
use crate::http::AppState;
use crate::http::error::{ApiError, Result};
use crate::http::extract::{Json, Path, Query};

/// Most sites `/domains/{period}` lists.
pub const MAX_DOMAINS: usize = 1_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/breakdown/{site}/{event}/{year}", get(get_year_breakdown))
        .route(
            "/breakdown/{site}/{event}/{year}/{month}",
            get(get_month_breakdown),
        )
        .route(
            "/breakdown/{site}/{event}/{year}/{month}/{day}",
            get(get_day_breakdown),
        )
        .route(
            "/breakdown/{site}/{event}/{year}/{month}/{day}/{hour}",
            get(get_hour_breakdown),
        )
        .route("/domains/{period}", get(get_top_domains))
}

#[derive(OpenApi)]
#[openapi(paths(
    get_year_breakdown,
    get_month_breakdown,
    get_day_breakdown,
    get_hour_breakdown,
    get_top_domains
))]
pub struct CalendarDoc;

#[derive(Debug, Deserialize)]
pub struct BreakdownPath {
    site: String,
    event: String,
    year: String,
    month: Option<String>,
    day: Option<String>,
    hour: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"site": "acme.com", "event": "pageview", "year": 2013, "month": 2,
    "day": null, "hour": null, "data": {"1": 1489, "2": 50148, "3": 0}}))]
pub struct BreakdownResponse {
    /// The site, or `all`.
    pub site: String,
    pub event: String,
    pub year: i32,
    pub month: Option<u32>,
    pub day: Option<u32>,
    pub hour: Option<u32>,
    /// Every segment of the period (months 1-12, days 1-N, hours 0-23 or minutes 0-59), zeros
    /// included, in order.
    #[schema(value_type = std::collections::HashMap<String, i64>)]
    pub data: serde_json::Map<String, serde_json::Value>,
}

fn number<T: std::str::FromStr>(raw: Option<&str>, what: &str) -> Result<Option<T>> {
    raw.map(|s| {
        s.parse::<T>()
            .map_err(|_| ApiError::validation(format!("{what} must be a number, got {s:?}")))
    })
    .transpose()
}

// One documented operation per depth: OpenAPI path parameters are always required, so the
// optional tail of the route is four paths, each with its own handler. The site pattern leaves
// out `%`, which the code takes but a client cannot send unambiguously in a path (clients
// leave a `%` followed by hex digits as it is, and the server decodes it).

/// Visits of a site (or `all`) and event per month of a year (UTC), every month present.
#[utoipa::path(get, path = "/breakdown/{site}/{event}/{year}", tag = "sites",
    params(("site" = String, Path, description = "Site (host without `www.`), or `all`",
            min_length = 1, max_length = 253, pattern = r"^[!-$&-.0-~]+$"),
        ("event" = String, Path, description = "Event name, e.g. `pageview`",
            pattern = r"^[a-z0-9_-]{1,64}$"),
        ("year" = i32, Path, description = "Year", minimum = 1970, maximum = 2200)),
    responses(
        (status = 200, description = "Months 1-12", body = BreakdownResponse),
        (status = 422, description = "Bad name or year", body = crate::http::routes::ErrorBody),
    ))]
pub async fn get_year_breakdown(
    _: super::reader::Reader,
    state: State<AppState>,
    path: Path<BreakdownPath>,
) -> Result<Json<BreakdownResponse>> {
    get_breakdown(state, path).await
}

/// Visits of a site (or `all`) and event per day of a month (UTC), every day present.
#[utoipa::path(get, path = "/breakdown/{site}/{event}/{year}/{month}", tag = "sites",
    params(("site" = String, Path, description = "Site (host without `www.`), or `all`",
            min_length = 1, max_length = 253, pattern = r"^[!-$&-.0-~]+$"),
        ("event" = String, Path, description = "Event name, e.g. `pageview`",
            pattern = r"^[a-z0-9_-]{1,64}$"),
        ("year" = i32, Path, description = "Year", minimum = 1970, maximum = 2200),
        ("month" = u32, Path, description = "Month", minimum = 1, maximum = 12)),
    responses(
        (status = 200, description = "Days 1-N", body = BreakdownResponse),
        (status = 422, description = "Bad name or date", body = crate::http::routes::ErrorBody),
    ))]
pub async fn get_month_breakdown(
    _: super::reader::Reader,
    state: State<AppState>,
    path: Path<BreakdownPath>,
) -> Result<Json<BreakdownResponse>> {
    get_breakdown(state, path).await
}

/// Visits of a site (or `all`) and event per hour of a day (UTC), every hour present.
///
/// A day the month does not have (February 30) is `422`: the document cannot tie `day` to
/// `month`, so it allows 1-31.
#[utoipa::path(get, path = "/breakdown/{site}/{event}/{year}/{month}/{day}", tag = "sites",
    params(("site" = String, Path, description = "Site (host without `www.`), or `all`",
            min_length = 1, max_length = 253, pattern = r"^[!-$&-.0-~]+$"),
        ("event" = String, Path, description = "Event name, e.g. `pageview`",
            pattern = r"^[a-z0-9_-]{1,64}$"),
        ("year" = i32, Path, description = "Year", minimum = 1970, maximum = 2200),
        ("month" = u32, Path, description = "Month", minimum = 1, maximum = 12),
        ("day" = u32, Path, description = "Day of the month", minimum = 1, maximum = 31)),
    responses(
        (status = 200, description = "Hours 0-23", body = BreakdownResponse),
        (status = 422, description = "Bad name, or a date that does not exist", body = crate::http::routes::ErrorBody),
    ))]
pub async fn get_day_breakdown(
    _: super::reader::Reader,
    state: State<AppState>,
    path: Path<BreakdownPath>,
) -> Result<Json<BreakdownResponse>> {
    get_breakdown(state, path).await
}

/// Visits of a site (or `all`) and event per minute of an hour (UTC), every minute present.
///
/// A day the month does not have (February 30) is `422`, as for a day's breakdown.
#[utoipa::path(get, path = "/breakdown/{site}/{event}/{year}/{month}/{day}/{hour}", tag = "sites",
    params(("site" = String, Path, description = "Site (host without `www.`), or `all`",
            min_length = 1, max_length = 253, pattern = r"^[!-$&-.0-~]+$"),
        ("event" = String, Path, description = "Event name, e.g. `pageview`",
            pattern = r"^[a-z0-9_-]{1,64}$"),
        ("year" = i32, Path, description = "Year", minimum = 1970, maximum = 2200),
        ("month" = u32, Path, description = "Month", minimum = 1, maximum = 12),
        ("day" = u32, Path, description = "Day of the month", minimum = 1, maximum = 31),
        ("hour" = u32, Path, description = "Hour", minimum = 0, maximum = 23)),
    responses(
        (status = 200, description = "Minutes 0-59", body = BreakdownResponse),
        (status = 422, description = "Bad name, or a date that does not exist", body = crate::http::routes::ErrorBody),
    ))]
pub async fn get_hour_breakdown(
    _: super::reader::Reader,
    state: State<AppState>,
    path: Path<BreakdownPath>,
) -> Result<Json<BreakdownResponse>> {
    get_breakdown(state, path).await
}

/// Visits of a site (or `all`) and event per segment of a year, month, day or hour (UTC).
async fn get_breakdown(
    State(state): State<AppState>,
    Path(path): Path<BreakdownPath>,
) -> Result<Json<BreakdownResponse>> {
    let site = if path.site == "all" {
        None
    } else {
        Some(
            parse_site(&path.site)
                .ok_or_else(|| ApiError::validation("site is not a valid site name"))?,
        )
    };
    let event = parse_event(&path.event)
        .ok_or_else(|| ApiError::validation(EVENT_RULE))?
        .to_owned();
    let year: i32 = number(Some(&path.year), "year")?.unwrap_or_default();
    let month = number::<u32>(path.month.as_deref(), "month")?;
    let day = number::<u32>(path.day.as_deref(), "day")?;
    let hour = number::<u32>(path.hour.as_deref(), "hour")?;
    let period = Period::new(year, month, day, hour)
        .ok_or_else(|| ApiError::validation("That date does not exist"))?;
    let segments = state
        .store
        .breakdown(site.clone(), event.clone(), period)
        .await?;
    Ok(Json(BreakdownResponse {
        site: site.unwrap_or_else(|| "all".to_owned()),
        event,
        year,
        month,
        day,
        hour,
        data: segments
            .into_iter()
            .map(|(label, n)| (label.to_string(), n.into()))
            .collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct DomainsQuery {
    /// How many sites to list (1-1000).
    #[param(default = 10, minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"domains": {"example3": 144, "example1.com": 110}}))]
pub struct DomainsResponse {
    /// Site → visits, highest first.
    #[schema(value_type = std::collections::HashMap<String, i64>)]
    pub domains: serde_json::Map<String, serde_json::Value>,
}

/// The sites with the most visits in the trailing minute, hour or day.
///
/// The period is rounded out to whole minutes: every visit of the last 60 s / 60 min / 24 h
/// counts, plus those earlier in its first minute. Pre-counted clicks (`POST /domains`) count.
#[utoipa::path(get, path = "/domains/{period}", tag = "sites",
    params(("period" = String, Path, description = "`min`, `hour` or `day`", pattern = "^(min|hour|day)$"), DomainsQuery),
    responses(
        (status = 200, description = "Top sites, highest first", body = DomainsResponse),
        (status = 422, description = "Unknown period or bad limit", body = crate::http::routes::ErrorBody),
    ))]
pub async fn get_top_domains(
    _: super::reader::Reader,
    State(state): State<AppState>,
    Path(period): Path<String>,
    Query(query): Query<DomainsQuery>,
) -> Result<Json<DomainsResponse>> {
    let minutes = period_minutes(&period)
        .ok_or_else(|| ApiError::validation("period must be min, hour or day"))?;
    let limit = query.limit.unwrap_or(10);
    if !(1..=MAX_DOMAINS as i64).contains(&limit) {
        return Err(ApiError::validation(format!(
            "limit must be between 1 and {MAX_DOMAINS}"
        )));
    }
    let top = state
        .store
        .top_sites(now_millis(), minutes, limit as usize)
        .await?;
    Ok(Json(DomainsResponse {
        domains: top.into_iter().map(|(site, n)| (site, n.into())).collect(),
    }))
}
