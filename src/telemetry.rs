//! Logs and metrics: tracing setup (`--log-format text|json`), the per-request log line (at
//! ERROR with its cause for a `500`), and the Prometheus recorder behind `/metrics`.
//!
//! One info line per request (method, path, status, latency, request id); nothing per visit.
//! Headers and query strings are never logged, so neither is an admin token.
//!
//! Metric labels come from bounded sets only (the route *pattern*, a standard method name or
//! `OTHER`, the status code): a label taken from raw request data would let a client create
//! series, and so memory, at will.

use std::cell::RefCell;
use std::io::Write as _;
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
use crate::log_sink::{LogGuard, LogSink};

/// How often histogram samples are folded into their buckets (see [`prometheus`]).
pub const METRICS_UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Longest path written in a log line: a 100 KB path must not become a 100 KB log line.
const MAX_LOGGED_PATH: usize = 256;

/// Installs the global tracing subscriber; `RUST_LOG` overrides the default `info` level.
///
/// Lines go to stderr through a [`LogSink`]: a `write` per request on the request's own thread
/// cost 28% of `POST /visit` throughput, and `tracing-appender`'s per-line channel and
/// formatting another ~12% (see `log_sink`). Keep the returned guard alive: dropping it writes
/// what is still buffered.
pub fn init_tracing(format: LogFormat) -> std::io::Result<LogGuard> {
    let (sink, guard) = LogSink::start(std::io::stderr())?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink.clone())
        .with_ansi(ansi);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if installed.is_ok() {
        let _ = REQUEST_LOG.set(RequestLog { sink, format, ansi });
    }
    Ok(guard)
}

/// The request lines' own writer, set by [`init_tracing`]: the one line of every request is
/// formatted here directly, in exactly the shape `tracing-subscriber` gives the other lines,
/// into a reused buffer (the generic formatter took ~2 µs a line). Without it (a library user's
/// own subscriber), request lines go through `tracing` like any other event.
static REQUEST_LOG: OnceLock<RequestLog> = OnceLock::new();

struct RequestLog {
    sink: LogSink,
    format: LogFormat,
    ansi: bool,
}

/// The fields of one request line.
struct RequestLine<'a> {
    method: &'a str,
    path: &'a str,
    status: u16,
    latency: Latency,
    request_id: &'a str,
}

/// A request's latency as its log line shows it, `1.23 ms`: milliseconds with two decimals,
/// rounded half up from whole nanoseconds. Integer arithmetic: formatting an `f64` was a
/// third of the cost of a request line.
#[derive(Debug, Clone, Copy)]
struct Latency(Duration);

impl Latency {
    /// Hundredths of a millisecond.
    fn hundredths(self) -> u128 {
        (self.0.as_nanos() + 5_000) / 10_000
    }
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hundredths = self.hundredths();
        write!(f, "{}.{:02} ms", hundredths / 100, hundredths % 100)
    }
}

/// The message and target of request lines, as `tracing` would print them.
const REQUEST_MESSAGE: &str = "finished processing request";
const REQUEST_TARGET: &str = module_path!();
/// `2026-11-24T02:25:22`: the part of a timestamp that changes once a second.
const SECOND_TEXT_LEN: usize = 19;

thread_local! {
    /// The line being formatted, and the last timestamp with the second it is in: formatting a
    /// date costs more than the rest of the line, so only the microseconds change per line.
    static LINE: RefCell<(Vec<u8>, i64, String)> = const { RefCell::new((Vec::new(), i64::MIN, String::new())) };
}

impl RequestLog {
    fn write(&self, line: &RequestLine<'_>) {
        LINE.with(|cell| {
            let (buf, cached_second, timestamp) = &mut *cell.borrow_mut();
            let now = chrono::Utc::now();
            if now.timestamp() != *cached_second {
                *cached_second = now.timestamp();
                *timestamp = now.format("%Y-%m-%dT%H:%M:%S").to_string();
            }
            timestamp.truncate(SECOND_TEXT_LEN);
            timestamp.push('.');
            let micros = now.timestamp_subsec_micros().min(999_999);
            for place in [100_000, 10_000, 1_000, 100, 10, 1] {
                timestamp.push(char::from(b'0' + (micros / place % 10) as u8));
            }
            timestamp.push('Z');
            buf.clear();
            let _ = format_request_line(buf, self.format, self.ansi, timestamp, line);
            self.sink.append(buf);
        });
    }
}

/// Appends `line` to `buf` exactly as `tracing-subscriber` prints the event
/// [`log_request_with_tracing`] sends (a unit test holds the two together).
fn format_request_line(
    buf: &mut Vec<u8>,
    format: LogFormat,
    ansi: bool,
    timestamp: &str,
    line: &RequestLine<'_>,
) -> std::io::Result<()> {
    let RequestLine {
        method,
        path,
        status,
        latency,
        request_id,
    } = line;
    match (format, ansi) {
        (LogFormat::Json, _) => write_json_line(buf, timestamp, line),
        // The default, so pieces are copied in, without `fmt`'s machinery (~1,500 instructions
        // a line less, measured with callgrind on `examples/request_path_bench`).
        (LogFormat::Text, false) => {
            let mut number = itoa::Buffer::new();
            for part in [timestamp, "  INFO ", REQUEST_TARGET, ": ", REQUEST_MESSAGE] {
                buf.extend_from_slice(part.as_bytes());
            }
            for part in [" method=", method, " path=", path, " status="] {
                buf.extend_from_slice(part.as_bytes());
            }
            buf.extend_from_slice(number.format(*status).as_bytes());
            buf.extend_from_slice(b" latency=");
            let hundredths = latency.hundredths();
            buf.extend_from_slice(number.format(hundredths / 100).as_bytes());
            let cents = (hundredths % 100) as u8;
            buf.extend_from_slice(&[b'.', b'0' + cents / 10, b'0' + cents % 10]);
            for part in [" ms request_id=", request_id, "\n"] {
                buf.extend_from_slice(part.as_bytes());
            }
            Ok(())
        }
        // tracing-subscriber's colours: dim time and target, green level, italic names.
        (LogFormat::Text, true) => writeln!(
            buf,
            "\x1b[2m{timestamp}\x1b[0m \x1b[32m INFO\x1b[0m \x1b[2m{REQUEST_TARGET}\x1b[0m\
             \x1b[2m:\x1b[0m {REQUEST_MESSAGE} \x1b[3mmethod\x1b[0m\x1b[2m=\x1b[0m{method} \
             \x1b[3mpath\x1b[0m\x1b[2m=\x1b[0m{path} \x1b[3mstatus\x1b[0m\x1b[2m=\x1b[0m{status} \
             \x1b[3mlatency\x1b[0m\x1b[2m=\x1b[0m{latency} \
             \x1b[3mrequest_id\x1b[0m\x1b[2m=\x1b[0m{request_id}"
        ),
    }
}

/// The same line as a `tracing` event, for when [`init_tracing`] did not install the subscriber.
fn log_request_with_tracing(line: &RequestLine<'_>) {
    tracing::info!(
        method = %line.method,
        path = %line.path,
        status = line.status,
        latency = %line.latency,
        request_id = %line.request_id,
        "finished processing request"
    );
}

/// A request line as `tracing-subscriber`'s flattened JSON format writes it (strings escaped
/// by `serde_json`, as there).
fn write_json_line(
    buf: &mut Vec<u8>,
    timestamp: &str,
    line: &RequestLine<'_>,
) -> std::io::Result<()> {
    write!(
        buf,
        "{{\"timestamp\":\"{timestamp}\",\"level\":\"INFO\",\"message\":\"{REQUEST_MESSAGE}\",\"method\":"
    )?;
    serde_json::to_writer(&mut *buf, line.method)?;
    buf.extend_from_slice(b",\"path\":");
    serde_json::to_writer(&mut *buf, line.path)?;
    write!(
        buf,
        ",\"status\":{},\"latency\":\"{}\",\"request_id\":",
        line.status, line.latency
    )?;
    serde_json::to_writer(&mut *buf, line.request_id)?;
    writeln!(buf, ",\"target\":\"{REQUEST_TARGET}\"}}")
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
        "Visits committed to the database (recording endpoints and imports)"
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
    describe_histogram!(
        "footfall_roll_up_seconds",
        Unit::Seconds,
        "Time of one roll-up transaction (the whole tail, beside recording)"
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
    method: &'static str,
    /// Method, URI and request id, kept only when the log line will be written: clones that
    /// share the request's bytes (a reference count each), not copies.
    logged: Option<(Method, Uri, Option<HeaderValue>)>,
}

impl RequestRecord {
    pub fn start(request: &Request) -> Self {
        let logged = tracing::enabled!(tracing::Level::INFO).then(|| {
            (
                request.method().clone(),
                request.uri().clone(),
                request.headers().get("x-request-id").cloned(),
            )
        });
        Self {
            started: Instant::now(),
            // A clone of the pattern's `Arc<str>`: no allocation.
            route: request.extensions().get::<MatchedPath>().cloned(),
            method: method_label(request.method()),
            logged,
        }
    }

    /// Counts the request by route and status, times it, and writes its one log line (method,
    /// path, status, latency, request id): formatted directly into the log sink when
    /// [`init_tracing`] set it up, else as a `tracing` event. A `500`'s line is a `tracing`
    /// event at ERROR level that carries its cause.
    pub fn finish(self, status: u16, cause: Option<InternalCause>) {
        let elapsed = self.started.elapsed();
        observe_request(
            self.route.as_ref().map_or("unmatched", MatchedPath::as_str),
            self.method,
            status,
            elapsed.as_secs_f64(),
        );
        let latency = Latency(elapsed);
        let logged = self.logged.as_ref().map(|(method, uri, request_id)| {
            (
                method,
                crate::domain::truncate_at_char(uri.path(), MAX_LOGGED_PATH),
                request_id
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
            )
        });
        match (logged, cause) {
            (Some((method, path, request_id)), Some(InternalCause(error))) => tracing::error!(
                %method,
                %path,
                status,
                %latency,
                %request_id,
                %error,
                "request failed"
            ),
            // With INFO lines off, a failure is still logged, without the request's details.
            (None, Some(InternalCause(error))) => tracing::error!(%error, "request failed"),
            (Some((method, path, request_id)), None) => {
                let line = RequestLine {
                    method: method.as_str(),
                    path,
                    status,
                    latency,
                    request_id,
                };
                match REQUEST_LOG.get() {
                    Some(log) => log.write(&line),
                    None => log_request_with_tracing(&line),
                }
            }
            (None, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_bounded_sets() {
        assert_eq!(method_label(&Method::GET), "GET");
        let odd = Method::from_bytes(b"XYZZY").unwrap();
        assert_eq!(method_label(&odd), "OTHER");
    }

    /// The hand-formatted request line is byte for byte what `tracing-subscriber` prints for
    /// the same event, in every format: log readers see one shape whichever path wrote it.
    #[test]
    fn request_lines_are_formatted_exactly_as_tracing_formats_them() {
        use crate::log_sink::tests::Captured;
        for (status, nanos) in [(404, 1_234_560), (200, 0), (503, 12_345_678_901)] {
            let line = RequestLine {
                method: "GET",
                path: "/stats/x\"y\\\u{7}é",
                status,
                latency: Latency(Duration::from_nanos(nanos)),
                request_id: "6f0c8a1e-0000-8000-8000-000000000001",
            };
            for (format, ansi) in [
                (LogFormat::Text, false),
                (LogFormat::Text, true),
                (LogFormat::Json, false),
            ] {
                let out = Captured::default();
                let writer = {
                    let out = out.clone();
                    move || out.clone()
                };
                let builder = tracing_subscriber::fmt()
                    .with_writer(writer)
                    .with_ansi(ansi);
                match format {
                    LogFormat::Text => tracing::subscriber::with_default(builder.finish(), || {
                        log_request_with_tracing(&line)
                    }),
                    LogFormat::Json => tracing::subscriber::with_default(
                        builder.json().flatten_event(true).finish(),
                        || log_request_with_tracing(&line),
                    ),
                }
                let expected = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
                // The part that differs between two calls: the time, 2026-11-24T02:25:22.616727Z.
                let at = expected.find("20").unwrap();
                let timestamp = &expected[at..at + 27];
                let mut ours = Vec::new();
                format_request_line(&mut ours, format, ansi, timestamp, &line).unwrap();
                assert_eq!(
                    String::from_utf8(ours).unwrap(),
                    expected,
                    "{format:?} ansi={ansi}"
                );
            }
        }
    }

    #[test]
    fn latencies_are_milliseconds_with_two_decimals_rounded_half_up() {
        for (nanos, shown) in [
            (0, "0.00 ms"),
            (4_999, "0.00 ms"),
            (5_000, "0.01 ms"),
            (1_234_560, "1.23 ms"),
            (1_235_000, "1.24 ms"),
            (12_345_678_901, "12345.68 ms"),
        ] {
            assert_eq!(Latency(Duration::from_nanos(nanos)).to_string(), shown);
        }
    }

    #[test]
    fn logged_paths_are_cut_at_a_character_boundary() {
        assert_eq!(crate::domain::truncate_at_char("/abc", 256), "/abc");
        let long = format!("/{}", "é".repeat(300));
        let logged = crate::domain::truncate_at_char(&long, MAX_LOGGED_PATH);
        assert!(logged.len() <= MAX_LOGGED_PATH && long.starts_with(logged));
    }
}
