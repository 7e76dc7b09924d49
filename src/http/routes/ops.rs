//! Operational endpoints (API.md §4): `/health` and `/metrics`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{format_iso, now_millis};
use crate::http::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "healthy", "timestamp": "2025-07-28T11:30:00", "database": "connected", "backend": "sqlite"}))]
pub struct HealthResponse {
    /// `healthy` or `unhealthy`.
    pub status: &'static str,
    pub timestamp: String,
    /// `connected` or `disconnected`.
    pub database: &'static str,
    /// `sqlite` or `postgres` (API.md §10).
    pub backend: &'static str,
    /// Why the database is unusable (only when unhealthy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Each bus subscriber's state (only when `serve` runs any, API.md §11). A bus that cannot
    /// be reached does not make the node unhealthy: it still records and answers over HTTP.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subscribers: Vec<SubscriberHealth>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"bus": "nats", "source": "visits.>", "state": "consuming"}))]
pub struct SubscriberHealth {
    /// `nats` or `zmq`.
    pub bus: &'static str,
    /// The NATS subject, or the ZeroMQ endpoint.
    pub source: String,
    /// `connecting`, `consuming`, `disconnected` (retrying with backoff), `stalled` (holding
    /// events the database cannot take now) or `stopped`.
    pub state: &'static str,
    /// Why it is not consuming, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Liveness and database reachability.
#[utoipa::path(get, path = "/health", tag = "ops",
    responses(
        (status = 200, description = "Healthy", body = HealthResponse),
        (status = 503, description = "The database cannot be read", body = HealthResponse,
            example = json!({"status": "unhealthy", "timestamp": "2025-07-28T11:30:00", "database": "disconnected", "backend": "postgres", "detail": "..."})),
    ))]
pub async fn health(State(state): State<AppState>) -> Response {
    let probe = state.store.health().await;
    let timestamp = format_iso(now_millis());
    let subscribers = || {
        state
            .buses
            .statuses()
            .into_iter()
            .map(|s| SubscriberHealth {
                bus: s.bus,
                source: s.source,
                state: s.state,
                detail: s.detail,
            })
            .collect()
    };
    match probe {
        Ok(_) => axum::Json(HealthResponse {
            status: "healthy",
            timestamp,
            database: "connected",
            backend: state.store.backend(),
            detail: None,
            subscribers: subscribers(),
        })
        .into_response(),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(HealthResponse {
                status: "unhealthy",
                timestamp,
                database: "disconnected",
                backend: state.store.backend(),
                detail: Some(format!("{err:#}")),
                subscribers: subscribers(),
            }),
        )
            .into_response(),
    }
}

/// Prometheus metrics: requests, latency, visits, rate limiting, the writer and the database.
///
/// Gauges that are cheap to read but would cost something on every request (the database's
/// file size, the limiters' key counts, the log's dropped lines) are read here, once per
/// scrape, rather than kept up to date on the hot path.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    state.store.update_gauges();
    metrics::gauge!("footfall_rate_limiter_keys").set(state.limits.key_count() as f64);
    let ceiling_keys = state.ip_ceiling.as_ref().map_or(0, |c| c.limiter().len());
    metrics::gauge!("footfall_ip_ceiling_keys").set(ceiling_keys as f64);
    crate::telemetry::observe_dropped_log_lines();
    let body = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response()
}
