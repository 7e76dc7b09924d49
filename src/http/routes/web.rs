//! What a browser loads (API.md §1, §4): the tracker script a site embeds, the tracking pixel
//! for pages without JavaScript, and the dashboard page with its script and style sheet.
//!
//! Every file is embedded in the binary with `include_str!`, so the server needs nothing beside
//! it and the dashboard makes no request outside its own origin (its CSP says so to the
//! browser, too). Each file's ETag is a hash of its bytes: it changes exactly when a new binary
//! ships different bytes.

use std::sync::LazyLock;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::extract::rejection::QueryRejection;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERER,
    REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::OpenApi;

use crate::http::AppState;
use crate::http::client_ip::ClientIp;
use crate::http::error::ApiError;
use crate::http::extract::{DoNotTrack, UserAgent};
use crate::http::routes::record::{Recording, UrlQuery, record_one};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/tracker.js", get(serve_tracker))
        .route("/pixel.gif", get(record_pixel))
        .route("/dashboard", get(show_dashboard))
        .route("/dashboard/app.js", get(serve_dashboard_script))
        .route("/dashboard/app.css", get(serve_dashboard_style))
}

#[derive(OpenApi)]
#[openapi(
    paths(
        serve_tracker,
        record_pixel,
        show_dashboard,
        serve_dashboard_script,
        serve_dashboard_style
    ),
    tags((name = "dashboard", description = "The dashboard page and its files (§4)"))
)]
pub struct WebDoc;

/// A transparent 1×1 GIF89a: one two-colour palette, colour 0 marked transparent.
pub const PIXEL_GIF: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, // "GIF89a"
    0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, // 1×1, global palette of 2 colours
    0x00, 0x00, 0x00, 0xff, 0xff, 0xff, // palette: black, white
    0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, // graphic control: colour 0 transparent
    0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, // image 1×1 at 0,0
    0x02, 0x02, 0x44, 0x01, 0x00, // LZW data: one pixel of colour 0
    0x3b, // trailer
];

/// `Cross-Origin-Resource-Policy`: the tracker and the pixel are loaded by other sites, and a
/// site that isolates itself (`Cross-Origin-Embedder-Policy: require-corp`) only loads
/// cross-origin files that opt in.
const CORP: HeaderName = HeaderName::from_static("cross-origin-resource-policy");

/// The dashboard may load its own files and call its own API, nothing else. Its script and
/// style are separate files rather than inline so `'unsafe-inline'` is not needed: the page
/// shows URLs and user agents anyone can record, and markup smuggled into them must not run.
const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// An embedded file and the headers it is served with.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    cache_control: &'static str,
    /// Strong ETag: a quoted hash of `body`.
    etag: HeaderValue,
}

impl Asset {
    fn new(body: &'static str, content_type: &'static str, cache_control: &'static str) -> Self {
        let etag = format!("\"{:016x}\"", fnv1a_64(body.as_bytes()));
        Self {
            body,
            content_type,
            cache_control,
            etag: HeaderValue::from_str(&etag).expect("a quoted hex string is a header value"),
        }
    }

    /// `200` with the file, or `304` when the client already holds these bytes.
    fn respond(&self, request: &HeaderMap) -> Response {
        let mut response = if etag_matches(request, &self.etag) {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let mut ok = Body::from(self.body).into_response();
            ok.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
            ok
        };
        let headers = response.headers_mut();
        headers.insert(ETAG, self.etag.clone());
        headers.insert(CACHE_CONTROL, HeaderValue::from_static(self.cache_control));
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        response
    }
}

/// Sites cache the tracker for an hour; the ETag makes the revalidation after that cheap.
static TRACKER: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_str!("../assets/tracker.js"),
        "application/javascript; charset=utf-8",
        "public, max-age=3600",
    )
});

// The dashboard's files are revalidated on every load (`no-cache`), so a new binary's page
// never runs with the old binary's script.
static DASHBOARD_HTML: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_str!("../assets/dashboard.html"),
        "text/html; charset=utf-8",
        "no-cache",
    )
});
static DASHBOARD_JS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_str!("../assets/dashboard.js"),
        "application/javascript; charset=utf-8",
        "no-cache",
    )
});
static DASHBOARD_CSS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_str!("../assets/dashboard.css"),
        "text/css; charset=utf-8",
        "no-cache",
    )
});

/// 64-bit FNV-1a: a stable content hash for ETags (not a security boundary, and unlike std's
/// `DefaultHasher` it is the same in every build of the same bytes).
const fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// Whether `If-None-Match` names `etag` (or is `*`). The comparison is weak, as RFC 9110
/// §13.1.2 asks: a proxy that compressed the file may have turned our tag into `W/"..."`.
fn etag_matches(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(etag) = etag.to_str() else {
        return false;
    };
    request
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// The tracker script a site embeds.
///
/// `<script defer src="https://stats.example.com/tracker.js"></script>` records the page with
/// `POST /visit` (`navigator.sendBeacon`, else `fetch` with `keepalive`, both as `text/plain`
/// so no CORS preflight is needed), and again on every `history.pushState` and `popstate`.
/// Attributes on the tag: `data-event="order"` names the event; `data-allow-local` records
/// `localhost`/`127.0.0.1` pages (skipped by default); `data-allow-automation` records even
/// when `navigator.webdriver` is set (skipped by default; for browser tests).
#[utoipa::path(get, path = "/tracker.js", tag = "recording",
    params(("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier answer")),
    responses(
        (status = 200, description = "The script (under 2 KB)", body = String,
            content_type = "application/javascript",
            headers(
                ("ETag" = String, description = "Strong ETag: a hash of the script's bytes"),
                ("Cache-Control" = String, description = "`public, max-age=3600`"),
            )),
        (status = 304, description = "The client's copy (its `If-None-Match`) is current"),
    ))]
pub async fn serve_tracker(headers: HeaderMap) -> Response {
    let mut response = TRACKER.respond(&headers);
    response
        .headers_mut()
        .insert(CORP, HeaderValue::from_static("cross-origin"));
    response
}

/// Record a visit with an image: `<img src=".../pixel.gif?url=...">`.
///
/// Always answers the 43-byte transparent GIF with `Cache-Control: no-store`, so a broken-image
/// icon never shows on the site. The visit is recorded (and committed before the answer) only
/// when the URL is valid — `url`, or the `Referer` header when `url` is absent — the event is
/// valid and the (client IP, URL) pair is under its rate limit; otherwise nothing is recorded.
/// A `HEAD` request records nothing.
#[utoipa::path(get, path = "/pixel.gif", tag = "recording",
    params(
        ("url" = Option<String>, Query, description = "The visited page's URL; the `Referer` header when absent"),
        ("event" = Option<String>, Query, description = "Event name, `[a-z0-9_-]{1,64}`; `pageview` when absent"),
    ),
    responses(
        (status = 200, description = "A 1×1 transparent GIF, whether or not a visit was recorded",
            body = Vec<u8>, content_type = "image/gif",
            headers(("Cache-Control" = String, description = "`no-store`"))),
    ))]
pub async fn record_pixel(
    State(state): State<AppState>,
    method: Method,
    ip: ClientIp,
    headers: HeaderMap,
    query: Result<axum::extract::Query<UrlQuery>, QueryRejection>,
) -> Response {
    // Link checkers and prefetchers send HEAD: they are not visitors.
    if method != Method::HEAD
        && let Err(err) = record_pixel_visit(&state, ip, &headers, query).await
    {
        log_unrecorded(&err);
    }
    pixel_response()
}

/// The recording half of [`record_pixel`]: the same validation, limit and commit as
/// `POST /visit`, with the `Referer` standing in for a missing `url`.
async fn record_pixel_visit(
    state: &AppState,
    ip: ClientIp,
    headers: &HeaderMap,
    query: Result<axum::extract::Query<UrlQuery>, QueryRejection>,
) -> Result<(), ApiError> {
    // An unreadable query (e.g. `url` twice) records nothing rather than guess from the Referer.
    let axum::extract::Query(query) = query?;
    let url = match query.url.filter(|url| !url.is_empty()) {
        Some(url) => url,
        None => headers
            .get(REFERER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| ApiError::validation("no url parameter and no Referer header"))?,
    };
    let recording = Recording::parse(
        url,
        query.event.as_deref(),
        query.referrer.as_deref(),
        ip,
        UserAgent::of(headers),
        DoNotTrack::of(headers),
    )?;
    record_one(state, recording).await?;
    Ok(())
}

/// Why a pixel recorded nothing. Refusals (bad input, rate limit, full queue, shutdown) are
/// debug noise — a flood would otherwise flood the log, and metrics count them already; only
/// a failing database is a warning.
fn log_unrecorded(err: &ApiError) {
    match err {
        ApiError::Internal(_) | ApiError::Unavailable(_) => {
            tracing::warn!(error = %err, "pixel: visit not recorded");
        }
        _ => tracing::debug!(error = %err, "pixel: visit not recorded"),
    }
}

fn pixel_response() -> Response {
    let mut response = Body::from(bytes::Bytes::from_static(&PIXEL_GIF)).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("image/gif"));
    // Every load must reach the server to count; a cached pixel counts nothing.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(CORP, HeaderValue::from_static("cross-origin"));
    response
}

/// The dashboard: totals, visits per hour (24 h / 7 d / 30 d), top pages, top sites, user
/// agents and recent visits, refreshed every 30 s.
///
/// One HTML page from the binary with its own script and style sheet (`/dashboard/app.js`,
/// `/dashboard/app.css`); it calls `/stats`, `/summary` and `/domains/day` and loads nothing
/// from any other origin.
#[utoipa::path(get, path = "/dashboard", tag = "dashboard",
    responses(
        (status = 200, description = "The dashboard page", body = String, content_type = "text/html",
            headers(("Content-Security-Policy" = String, description = "Only the server's own origin"))),
        (status = 304, description = "The client's copy is current"),
    ))]
pub async fn show_dashboard(headers: HeaderMap) -> Response {
    let mut response = DASHBOARD_HTML.respond(&headers);
    let out = response.headers_mut();
    out.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DASHBOARD_CSP),
    );
    // Links to tracked pages must not tell those sites where the dashboard lives.
    out.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// The dashboard's script.
#[utoipa::path(get, path = "/dashboard/app.js", tag = "dashboard",
    responses(
        (status = 200, description = "JavaScript", body = String, content_type = "application/javascript"),
        (status = 304, description = "The client's copy is current"),
    ))]
pub async fn serve_dashboard_script(headers: HeaderMap) -> Response {
    DASHBOARD_JS.respond(&headers)
}

/// The dashboard's style sheet.
#[utoipa::path(get, path = "/dashboard/app.css", tag = "dashboard",
    responses(
        (status = 200, description = "CSS", body = String, content_type = "text/css"),
        (status = 304, description = "The client's copy is current"),
    ))]
pub async fn serve_dashboard_style(headers: HeaderMap) -> Response {
    DASHBOARD_CSS.respond(&headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pixel_is_a_43_byte_gif89a() {
        assert_eq!(PIXEL_GIF.len(), 43);
        assert_eq!(&PIXEL_GIF[..6], b"GIF89a");
        assert_eq!(PIXEL_GIF[42], 0x3b);
    }

    #[test]
    fn if_none_match_compares_weakly_and_accepts_lists_and_star() {
        let etag = HeaderValue::from_static("\"abc\"");
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(IF_NONE_MATCH, HeaderValue::from_static(value));
            etag_matches(&headers, &etag)
        };
        assert!(with("\"abc\""));
        assert!(with("W/\"abc\""));
        assert!(with("\"x\", \"abc\""));
        assert!(with("*"));
        assert!(!with("\"abd\""));
        assert!(!with("abc"));
        assert!(!etag_matches(&HeaderMap::new(), &etag));
    }

    #[test]
    fn fnv1a_matches_its_reference_values() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
