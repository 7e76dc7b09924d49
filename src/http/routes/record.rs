//! Recording endpoints (API.md §1, §5): validate, check the rate limit, submit to the writer,
//! answer only after the commit.

use std::borrow::Cow;
use std::net::IpAddr;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Router, debug_handler};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{IsoTime, PageUrl, event_or_default, format_space, now_millis, parse_page_id};
use crate::domain::{NewVisit, Source, Visitor};
use crate::http::AppState;
use crate::http::client_ip::ClientIp;
use crate::http::error::{ApiError, Result};
use crate::http::extract::{BeaconJson, DoNotTrack, Json, Path, Query, UserAgent};

/// Most items in one `/bulk-visits` request.
pub const MAX_BULK: usize = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/visit", post(record_visit))
        .route("/", get(record_visit_legacy))
        .route("/bulk-visits", post(record_bulk_visits))
        .route("/visit/{page_id}", post(count_page_visit))
        .route("/visits/{page_id}", get(page_visit_count))
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"url": "https://example.com/page"}))]
pub struct VisitRequest {
    /// Absolute http(s) URL of the visited page, at most 2,048 bytes.
    pub url: String,
    /// Event name, `[a-z0-9_-]{1,64}`; `pageview` when absent.
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    pub event: Option<String>,
    /// Where the visitor came from (`document.referrer`): only its host is kept; absent,
    /// unreadable or the page's own site counts as `(direct)`.
    #[serde(default)]
    pub referrer: Option<String>,
}

// Borrows from the stored visit: built on every `POST /visit`, it copies nothing. (A plain
// comment: a doc comment would become the schema's description in the OpenAPI document.)
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"url": "https://example.com/page", "ip": "192.168.1.1",
    "user_agent": "Mozilla/5.0...", "status": "recorded", "timestamp": "2025-07-28T10:30:00"}))]
pub struct VisitResponse<'a> {
    pub url: &'a str,
    /// The client address, or under `--ip-mode hashed` the pseudonym stored for it.
    #[schema(value_type = String)]
    pub ip: Visitor,
    pub user_agent: &'a str,
    /// `recorded`, or `ignored` when the privacy policy stores it nowhere (API.md §12).
    pub status: &'static str,
    /// When the visit was recorded (ISO, UTC).
    #[schema(value_type = String, pattern = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")]
    pub timestamp: IsoTime,
}

impl<'a> VisitResponse<'a> {
    /// The answer for `outcome`.
    fn of(outcome: &'a Outcome) -> Self {
        let visit = &outcome.visit;
        Self {
            url: visit.url.as_str(),
            ip: visit.ip,
            user_agent: &visit.user_agent,
            status: outcome.status(),
            timestamp: IsoTime(visit.at),
        }
    }
}

/// The answer of the legacy `GET /?url=`: the keys of both versions of the original service.
/// The first sent `url`, `ip`, `user_agent` and `status`; the later one `message`, `timestamp`
/// (SPACE form) and `visits`, the page's committed visits as a string with thousands
/// separators, which its clients print as they are.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"url": "https://example.com/page", "ip": "192.168.1.1",
    "user_agent": "Mozilla/5.0...", "status": "recorded", "message": "Visit recorded!",
    "timestamp": "2025-07-28 10:30:00", "visits": "1,234"}))]
pub struct LegacyVisitResponse {
    pub url: String,
    #[schema(value_type = String)]
    pub ip: Visitor,
    pub user_agent: String,
    /// `recorded`, or `ignored` when the privacy policy stores it nowhere (API.md §12).
    pub status: &'static str,
    /// `Visit recorded!` (or `Visit ignored`).
    pub message: &'static str,
    /// When the visit was recorded (SPACE form, UTC).
    #[schema(pattern = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")]
    pub timestamp: String,
    /// The page's committed visits, this one included, with thousands separators.
    #[schema(pattern = r"^\d{1,3}(,\d{3})*$")]
    pub visits: String,
}

/// `n` with a comma between each group of three digits: `1234567` → `1,234,567`.
pub fn with_thousands_separators(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UrlQuery {
    /// The visited page's URL.
    pub url: Option<String>,
    /// Event name; `pageview` when absent.
    pub event: Option<String>,
    /// `/pixel.gif` only: the referring page (`document.referrer`), as `referrer` in `POST /visit`.
    #[serde(rename = "ref")]
    pub referrer: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "recorded", "visits_recorded": 2, "visits_rejected": 0, "ip": "192.168.1.1"}))]
pub struct BulkVisitResponse {
    /// `recorded`, or `ignored` when the privacy policy stores none of them (API.md §12).
    pub status: &'static str,
    pub visits_recorded: usize,
    /// Items refused by their rate limit.
    pub visits_rejected: usize,
    pub ip: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "success", "message": "Visit recorded for page home"}))]
pub struct PageVisitResponse {
    pub status: &'static str,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"count": 123, "served_via": "cache"}))]
pub struct PageCountResponse {
    /// Exact number of committed visits of the page.
    pub count: i64,
    /// `cache` (memory, provably current) or `sqlite`.
    pub served_via: &'static str,
}

/// A validated recording request: page, event, where it came from and who sent it.
pub struct Recording {
    pub url: PageUrl,
    pub event: Cow<'static, str>,
    pub source: Source,
    pub ip: IpAddr,
    pub user_agent: String,
    pub do_not_track: bool,
}

impl Recording {
    pub fn parse(
        url: String,
        event: Option<&str>,
        referrer: Option<&str>,
        ip: ClientIp,
        UserAgent(user_agent): UserAgent,
        DoNotTrack(do_not_track): DoNotTrack,
    ) -> Result<Self> {
        let url = PageUrl::parse_owned(url).ok_or_else(ApiError::invalid_url)?;
        let event = event_or_default(event).map_err(ApiError::validation)?;
        Ok(Self {
            source: Source::of(&url, referrer),
            url,
            event,
            ip: ip.0,
            user_agent,
            do_not_track,
        })
    }

    pub fn into_visit(self, at: i64) -> NewVisit {
        NewVisit {
            url: self.url,
            ip: self.ip.into(),
            user_agent: self.user_agent,
            event: self.event,
            source: self.source,
            at,
            stamped_on_arrival: true,
        }
    }
}

/// A recording request's outcome: the visit as stored, or as received when it was ignored.
pub struct Outcome {
    pub visit: NewVisit,
    /// `false`: ignored by the privacy policy (API.md §12), stored nowhere.
    pub recorded: bool,
}

impl Outcome {
    /// The `status` of the answer.
    pub fn status(&self) -> &'static str {
        if self.recorded { "recorded" } else { "ignored" }
    }
}

/// Applies the privacy policy, checks the limit, records one visit and waits for its commit.
pub async fn record_one(state: &AppState, recording: Recording) -> Result<Outcome> {
    let (ip, dnt) = (recording.ip, recording.do_not_track);
    let visit = recording.into_visit(now_millis());
    let screened = state.privacy.screen(&state.store, visit, dnt).await?;
    if screened.ignored.is_some() {
        return Ok(Outcome {
            visit: screened.visit,
            recorded: false,
        });
    }
    state
        .limits
        .check_visit(ip, screened.visit.url.as_str())
        .await?;
    Ok(Outcome {
        visit: state.store.record(screened.visit).await?,
        recorded: true,
    })
}

/// Record a page visit.
///
/// Answers only after the visit is committed to the database. The body may be sent as
/// `application/json` or as `text/plain` (what `navigator.sendBeacon` sends).
#[utoipa::path(post, path = "/visit", tag = "recording",
    request_body(content((VisitRequest = "application/json"), (VisitRequest = "text/plain"))),
    responses(
        (status = 200, description = "Recorded and committed", body = VisitResponse),
        (status = 400, description = "Invalid URL", body = crate::http::routes::ErrorBody,
            example = json!({"detail": "Invalid URL format"})),
        (status = 413, description = "Body over 1 MiB", body = crate::http::routes::ErrorBody),
        (status = 415, description = "Unsupported content type", body = crate::http::routes::ErrorBody),
        (status = 422, description = "Malformed body", body = crate::http::routes::ErrorBody),
        (status = 429, description = "Rate limited", body = crate::http::routes::ErrorBody,
            example = json!({"detail": "Too many requests, please try again later"})),
        (status = 503, description = "Write queue full; retry after `Retry-After`", body = crate::http::routes::ErrorBody),
    ))]
#[debug_handler(state = AppState)]
pub async fn record_visit(
    State(state): State<AppState>,
    ip: ClientIp,
    user_agent: UserAgent,
    dnt: DoNotTrack,
    BeaconJson(body): BeaconJson<VisitRequest>,
) -> Result<Response> {
    let recording = Recording::parse(
        body.url,
        body.event.as_deref(),
        body.referrer.as_deref(),
        ip,
        user_agent,
        dnt,
    )?;
    let outcome = record_one(&state, recording).await?;
    Ok(Json(VisitResponse::of(&outcome)).into_response())
}

/// Record a page visit (legacy GET form).
#[utoipa::path(get, path = "/", tag = "recording", params(
        ("url" = String, Query, description = "The visited page's URL"),
        ("event" = Option<String>, Query, description = "Event name; `pageview` when absent",
            pattern = "^[a-z0-9_-]{1,64}$")),
    responses(
        (status = 200, description = "Recorded and committed", body = LegacyVisitResponse),
        (status = 400, description = "Invalid URL", body = crate::http::routes::ErrorBody),
        (status = 422, description = "Missing url", body = crate::http::routes::ErrorBody),
        (status = 429, description = "Rate limited", body = crate::http::routes::ErrorBody),
        (status = 503, description = "Write queue full", body = crate::http::routes::ErrorBody),
    ))]
pub async fn record_visit_legacy(
    State(state): State<AppState>,
    ip: ClientIp,
    user_agent: UserAgent,
    dnt: DoNotTrack,
    Query(query): Query<UrlQuery>,
) -> Result<Response> {
    let url = query
        .url
        .ok_or_else(|| ApiError::validation("Query parameter url is required"))?;
    let recording = Recording::parse(url, query.event.as_deref(), None, ip, user_agent, dnt)?;
    let outcome = record_one(&state, recording).await?;
    let (status, visit) = (outcome.status(), outcome.visit);
    // Read after the commit, so the count includes this visit. The window (one hour) does not
    // matter: only the all-time total is used.
    let stats = state
        .store
        .url_stats(visit.url.clone(), visit.at, 1)
        .await?;
    Ok(Json(LegacyVisitResponse {
        url: visit.url.as_str().to_owned(),
        ip: visit.ip,
        user_agent: visit.user_agent,
        status,
        message: if status == "recorded" {
            "Visit recorded!"
        } else {
            "Visit ignored"
        },
        timestamp: format_space(visit.at),
        visits: with_thousands_separators(stats.total_visits),
    })
    .into_response())
}

/// Record up to 100 visits at once.
///
/// Items over their rate limit are counted in `visits_rejected`; the others are recorded in one
/// commit. More than 100 items records nothing.
#[utoipa::path(post, path = "/bulk-visits", tag = "recording",
    request_body(content(
        (Vec<VisitRequest> = "application/json", example = json!([{"url": "https://example.com/page1"}, {"url": "https://example.com/page2"}])),
        (Vec<VisitRequest> = "text/plain"))),
    responses(
        (status = 200, description = "Recorded and committed", body = BulkVisitResponse),
        (status = 400, description = "Too many items or an invalid URL; nothing recorded", body = crate::http::routes::ErrorBody,
            example = json!({"detail": "Too many visits in bulk request (max 100)"})),
        (status = 413, description = "Body over 1 MiB", body = crate::http::routes::ErrorBody),
        (status = 415, description = "Unsupported content type", body = crate::http::routes::ErrorBody),
        (status = 422, description = "Malformed body", body = crate::http::routes::ErrorBody),
        (status = 503, description = "Write queue full", body = crate::http::routes::ErrorBody),
    ))]
pub async fn record_bulk_visits(
    State(state): State<AppState>,
    ip: ClientIp,
    user_agent: UserAgent,
    dnt: DoNotTrack,
    BeaconJson(items): BeaconJson<Vec<VisitRequest>>,
) -> Result<Json<BulkVisitResponse>> {
    if items.len() > MAX_BULK {
        return Err(ApiError::bad_request(format!(
            "Too many visits in bulk request (max {MAX_BULK})"
        )));
    }
    if items.is_empty() {
        return Err(ApiError::validation("At least one visit is required"));
    }
    let recordings = items
        .into_iter()
        .map(|item| {
            let referrer = item.referrer.as_deref();
            Recording::parse(
                item.url,
                item.event.as_deref(),
                referrer,
                ip,
                user_agent.clone(),
                dnt,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let at = now_millis();
    // One client, one user agent, one DNT flag: the policy ignores all the items or none.
    let mut screened = Vec::with_capacity(recordings.len());
    for recording in recordings {
        let visit = recording.into_visit(at);
        let s = state.privacy.screen(&state.store, visit, dnt.0).await?;
        if s.ignored.is_none() {
            screened.push(s.visit);
        }
    }
    if screened.is_empty() {
        return Ok(Json(BulkVisitResponse {
            status: "ignored",
            visits_recorded: 0,
            visits_rejected: 0,
            ip: ip.0.to_string(),
        }));
    }
    // One check for all the items: with Redis, one round trip.
    let urls: Vec<&str> = screened.iter().map(|v| v.url.as_str()).collect();
    let allowed = state.limits.check_bulk(ip.0, &urls).await;
    let mut visits = Vec::with_capacity(screened.len());
    let mut rejected = 0;
    for (visit, allowed) in screened.into_iter().zip(allowed) {
        if allowed {
            visits.push(visit);
        } else {
            rejected += 1;
        }
    }
    let recorded = visits.len();
    if recorded > 0 {
        state.store.record_many(visits).await?;
    }
    Ok(Json(BulkVisitResponse {
        status: "recorded",
        visits_recorded: recorded,
        visits_rejected: rejected,
        ip: ip.0.to_string(),
    }))
}

fn page_id_param(raw: &str) -> Result<&str> {
    parse_page_id(raw).ok_or_else(|| {
        ApiError::validation("page_id must be 1-256 characters of A-Z a-z 0-9 . _ ~ -")
    })
}

/// Count a visit on a per-page counter.
#[utoipa::path(post, path = "/visit/{page_id}", tag = "counters",
    params(("page_id" = String, Path, description = "1-256 characters of `[A-Za-z0-9._~-]`",
        pattern = "^[A-Za-z0-9._~-]{1,256}$")),
    responses(
        (status = 200, description = "Counted and committed", body = PageVisitResponse),
        (status = 422, description = "Invalid page id", body = crate::http::routes::ErrorBody),
        (status = 429, description = "Rate limited", body = crate::http::routes::ErrorBody),
        (status = 503, description = "Write queue full", body = crate::http::routes::ErrorBody),
    ))]
pub async fn count_page_visit(
    State(state): State<AppState>,
    ip: ClientIp,
    Path(page_id): Path<String>,
) -> Result<Json<PageVisitResponse>> {
    let page_id = page_id_param(&page_id)?;
    state
        .limits
        .check_visit(ip.0, &format!("page:{page_id}"))
        .await?;
    state.store.count_page(page_id).await?;
    Ok(Json(PageVisitResponse {
        status: "success",
        message: format!("Visit recorded for page {page_id}"),
    }))
}

/// The exact visit count of a per-page counter.
#[utoipa::path(get, path = "/visits/{page_id}", tag = "counters",
    params(("page_id" = String, Path, description = "1-256 characters of `[A-Za-z0-9._~-]`",
        pattern = "^[A-Za-z0-9._~-]{1,256}$")),
    responses(
        (status = 200, description = "The committed count", body = PageCountResponse),
        (status = 422, description = "Invalid page id", body = crate::http::routes::ErrorBody),
    ))]
pub async fn page_visit_count(
    _: super::reader::Reader,
    State(state): State<AppState>,
    Path(page_id): Path<String>,
) -> Result<Json<PageCountResponse>> {
    let page_id = page_id_param(&page_id)?;
    let counted = state.store.page_count(page_id).await?;
    Ok(Json(PageCountResponse {
        count: counted.count,
        served_via: counted.served_via.as_str(),
    }))
}

#[cfg(test)]
mod tests {
    use super::with_thousands_separators;

    #[test]
    fn thousands_are_separated_by_commas() {
        for (n, want) in [
            (0, "0"),
            (7, "7"),
            (999, "999"),
            (1_000, "1,000"),
            (1_234, "1,234"),
            (12_345, "12,345"),
            (123_456, "123,456"),
            (1_234_567, "1,234,567"),
            (-1_234, "-1,234"),
            (i64::MIN, "-9,223,372,036,854,775,808"),
        ] {
            assert_eq!(with_thousands_separators(n), want, "{n}");
        }
    }
}
