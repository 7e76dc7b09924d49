//! Logs and metrics: tracing setup (`--log-format text|json`), the per-request log line (at
//! ERROR with its cause for a `500`), and the Prometheus recorder behind `/metrics`.
//!
//! One line per request (method, path, status, latency, request id), at info but for the
//! successful answers of the recording routes, at debug ([`RECORDING_ROUTES`]); nothing per
//! visit. Headers and query strings are never logged, so neither is an admin token.
//!
//! Metric labels come from bounded sets only (the route *pattern*, a standard method name or
//! `OTHER`, the status code): a label taken from raw request data would let a client create
//! series, and so memory, at will.

use std::cell::RefCell;
use std::io::IsTerminal as _;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, Uri};
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use rustc_hash::FxHashMap;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::http::error::InternalCause;
use crate::log_writer::{self, DroppedLines, LogGuard};

/// How often histogram samples are folded into their buckets (see [`prometheus`]).
pub const METRICS_UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Longest path written in a log line: a 100 KB path must not become a 100 KB log line.
const MAX_LOGGED_PATH: usize = 256;

/// Routes that record visits or count a page: a request per page view of every tracked site.
/// Their successful answers are logged at debug, not info: a line each would be most of a busy
/// server's log (gigabytes a day, past journald's rate limit, which then drops the lines that
/// matter) and would say nothing that `footfall_http_requests_total` and
/// `footfall_http_request_duration_seconds` do not. Their failures stay at info.
const RECORDING_ROUTES: [&str; 5] = [
    "/visit",
    "/",
    "/bulk-visits",
    "/visit/{page_id}",
    "/pixel.gif",
];

/// Lines the log writer dropped because stderr could not keep up, when [`init_tracing`]
/// installed it; read into a metric at each scrape ([`observe_dropped_log_lines`]).
static DROPPED_LOG_LINES: OnceLock<DroppedLines> = OnceLock::new();

/// Installs the global tracing subscriber: tracing-subscriber's own text or JSON format,
/// `RUST_LOG` overriding the default `info`, colours only when stderr is a terminal.
///
/// Lines reach stderr through [`log_writer`]: a thread of its own writes them in batches, so
/// a request never waits for a slow terminal or pipe; past 8 MiB waiting, lines are dropped
/// and counted in `footfall_log_lines_dropped_total`. Keep the returned guard alive: dropping
/// it writes what is still waiting.
pub fn init_tracing(format: LogFormat) -> anyhow::Result<LogGuard> {
    let (writer, guard, dropped) = log_writer::start(std::io::stderr())?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if installed.is_ok() {
        let _ = DROPPED_LOG_LINES.set(dropped);
    }
    Ok(guard)
}

/// Brings `footfall_log_lines_dropped_total` up to date; `/metrics` calls it at each scrape.
/// Without [`init_tracing`]'s writer (tests, a library user's own subscriber) there is no
/// such metric.
pub fn observe_dropped_log_lines() {
    if let Some(dropped) = DROPPED_LOG_LINES.get() {
        metrics::counter!("footfall_log_lines_dropped_total").absolute(dropped.get());
    }
}

/// The process-wide Prometheus recorder, installed on first use (tests build many apps in one
/// process; a recorder can be installed only once).
///
/// `install_recorder` does not start the exporter's upkeep: every histogram sample is kept
/// until the next render, so a server nobody scrapes would grow by a few bytes per request,
/// forever. A small thread runs the upkeep instead (a thread, not a task, because the recorder
/// outlives any one runtime — tests build many).
pub fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ];
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("seconds".into()), &buckets)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("footfall_batch_visits".into()),
                        &[
                            1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 4096.0,
                        ],
                    )
                })
                .and_then(|b| b.install_recorder())
                .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
                .ok()?;
            describe_metrics();
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(METRICS_UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "metrics upkeep thread not started");
            }
            Some(handle)
        })
        .clone()
}

/// The `# HELP` lines of every metric footfall records.
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "footfall_http_requests_total",
        "HTTP requests answered, by method, route pattern and status"
    );
    describe_histogram!(
        "footfall_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer a request (headers sent), by method and route pattern"
    );
    describe_counter!(
        "footfall_visits_recorded_total",
        "Visits committed to the database (recording endpoints, bus events and imports)"
    );
    describe_counter!(
        "footfall_rate_limited_total",
        "Requests or bulk items refused by a rate limiter: visit, bulk or ip (the per-IP ceiling)"
    );
    describe_gauge!(
        "footfall_rate_limiter_keys",
        "Keys held by the (client IP, page URL) limiters"
    );
    describe_gauge!(
        "footfall_ip_ceiling_keys",
        "Client IPs (IPv6: /64 prefixes) held by the per-IP ceiling"
    );
    describe_gauge!(
        "footfall_write_queue_depth",
        "Write requests waiting for the writer thread"
    );
    describe_gauge!(
        "footfall_roll_up_pending_writes",
        "Visits and clicks committed since the last roll-up began: about what queries add from the raw rows"
    );
    describe_counter!(
        "footfall_write_queue_full_total",
        "Write requests refused with 503 because the write queue was full"
    );
    describe_histogram!(
        "footfall_batch_visits",
        "Visits (or other write units) committed per group-commit transaction"
    );
    describe_histogram!(
        "footfall_commit_seconds",
        Unit::Seconds,
        "Time to write and commit one group-commit transaction"
    );
    describe_counter!(
        "footfall_checkpoints_total",
        "Background checkpoints of the visits file (at most ten a second, only after commits)"
    );
    describe_counter!(
        "footfall_roll_ups_total",
        "Roll-ups that counted something, by what started them (full, idle, read, waiter, stop; interval on PostgreSQL)"
    );
    describe_histogram!(
        "footfall_roll_up_seconds",
        Unit::Seconds,
        "Time of one roll-up transaction (the whole tail, beside recording)"
    );
    describe_counter!(
        "footfall_log_lines_dropped_total",
        "Log lines dropped because stderr could not keep up (more than 8 MiB waiting)"
    );
    describe_counter!(
        "footfall_bus_events_total",
        "Bus events by bus (nats, zmq) and result: recorded, duplicate (id already recorded) or rejected (malformed; acknowledged and dropped)"
    );
    describe_counter!(
        "footfall_bus_busy_waits_total",
        "Times a bus subscriber waited for room in the full write queue instead of dropping or nacking"
    );
    describe_gauge!(
        "footfall_database_bytes",
        Unit::Bytes,
        "Size of the visits and rollups files plus their write-ahead logs"
    );
}

/// The method as a label: the standard methods, anything else `OTHER` (a client may send any
/// token as a method, and each distinct label value is a new series kept forever).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// Handles of one route's request metrics, by (method, status).
type RouteMetrics = FxHashMap<(&'static str, u16), (Counter, Histogram)>;

thread_local! {
    /// Per worker thread: the request metrics' handles by route pattern, method and status.
    /// Looking a labelled metric up in the recorder builds and hashes its labels and locks a
    /// registry shard, ~300 ns for the two of a request; a cached handle costs ~80 ns (measured
    /// in release on this machine). Bounded like the labels: patterns × methods × statuses.
    /// Fx-hashed: SipHash over the route made these lookups ~500 instructions a request.
    static REQUEST_METRICS: RefCell<FxHashMap<Box<str>, RouteMetrics>> =
        RefCell::new(FxHashMap::default());
}

/// Counts one answered request and records how long it took.
fn observe_request(route: &str, method: &'static str, status: u16, seconds: f64) {
    REQUEST_METRICS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if !cache.contains_key(route) {
            cache.insert(route.into(), RouteMetrics::default());
        }
        let Some(by_status) = cache.get_mut(route) else {
            return;
        };
        let (requests, latency) = by_status.entry((method, status)).or_insert_with(|| {
            let route = route.to_owned();
            (
                metrics::counter!("footfall_http_requests_total",
                    "method" => method, "route" => route.clone(), "status" => status.to_string()),
                metrics::histogram!("footfall_http_request_duration_seconds",
                    "method" => method, "route" => route),
            )
        });
        requests.increment(1);
        latency.record(seconds);
    });
}

/// One request in flight, as metrics and the log see it: taken when the request arrives,
/// finished when its answer is ready (see `routes::edge`).
///
/// The route is the matched *pattern* (`/stats/{*url}`), never the raw path, and requests that
/// matched no route share `unmatched`: the label sets stay small whatever clients send.
pub struct RequestRecord {
    started: Instant,
    route: Option<MatchedPath>,
    /// Method, URI and request id for the log line: clones that share the request's bytes (a
    /// reference count each), not copies. Only the URI's path is logged, never its query.
    method: Method,
    uri: Uri,
    request_id: Option<HeaderValue>,
}

impl RequestRecord {
    pub fn start(request: &Request) -> Self {
        Self {
            started: Instant::now(),
            // A clone of the pattern's `Arc<str>`: no allocation.
            route: request.extensions().get::<MatchedPath>().cloned(),
            method: request.method().clone(),
            uri: request.uri().clone(),
            request_id: request.headers().get("x-request-id").cloned(),
        }
    }

    /// Counts the request by route and status, times it, and logs its one line: method, path
    /// (at most [`MAX_LOGGED_PATH`] bytes), status, `latency_ms` (milliseconds to the
    /// microsecond, a number) and request id, at INFO; a `500`'s line is at ERROR and carries
    /// its cause as `error`.
    pub fn finish(self, status: u16, cause: Option<InternalCause>) {
        let elapsed = self.started.elapsed();
        observe_request(
            self.route.as_ref().map_or("unmatched", MatchedPath::as_str),
            method_label(&self.method),
            status,
            elapsed.as_secs_f64(),
        );
        let method = self.method.as_str();
        let path = crate::domain::truncate_at_char(self.uri.path(), MAX_LOGGED_PATH);
        let request_id = self
            .request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let latency_ms = elapsed.as_micros() as f64 / 1000.0;
        let recorded = status < 400
            && (self.route.as_ref()).is_some_and(|r| RECORDING_ROUTES.contains(&r.as_str()));
        // `%`: strings as they are (`path=/health`), not quoted as `Debug` would.
        macro_rules! request_line {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    method = %method,
                    path = %path,
                    status,
                    latency_ms,
                    request_id = %request_id,
                    "finished processing request"
                )
            };
        }
        match cause {
            Some(InternalCause(error)) => tracing::error!(
                method = %method,
                path = %path,
                status,
                latency_ms,
                request_id = %request_id,
                error = %error,
                "request failed"
            ),
            None if recorded => request_line!(tracing::Level::DEBUG),
            None => request_line!(tracing::Level::INFO),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The list names routes by their pattern: a route renamed without it would quietly log
    /// every visit at info again.
    #[test]
    fn the_recording_routes_are_routes_of_the_api() {
        let doc = crate::http::routes::docs::openapi();
        for route in RECORDING_ROUTES {
            assert!(
                doc.paths.paths.contains_key(route),
                "{route} is not a route"
            );
        }
    }

    #[test]
    fn labels_come_from_bounded_sets() {
        assert_eq!(method_label(&Method::GET), "GET");
        let odd = Method::from_bytes(b"XYZZY").unwrap();
        assert_eq!(method_label(&odd), "OTHER");
    }

    #[test]
    fn logged_paths_are_cut_at_a_character_boundary() {
        assert_eq!(crate::domain::truncate_at_char("/abc", 256), "/abc");
        let long = format!("/{}", "é".repeat(300));
        let logged = crate::domain::truncate_at_char(&long, MAX_LOGGED_PATH);
        assert!(logged.len() <= MAX_LOGGED_PATH && long.starts_with(logged));
    }
}
