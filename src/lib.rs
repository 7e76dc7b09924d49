//! footfall: a page-visit analytics server on an embedded SQLite database.
//!
//! Visits arrive over HTTP, are validated, rate-limited and handed to a single writer thread
//! that commits them in groups before anyone is told "recorded". A roll-up thread counts them
//! into the rollup tables in bulk, behind a watermark, in a second database file, so it never
//! holds up recording. Analytics read the rollups plus the few visits above the watermark, so
//! they cost the same at ten million visits as at one million. Exports stream from a cursor.
//!
//! # Layout
//!
//! - [`config`]: command line and environment (clap).
//! - [`app`]: state, router assembly, serving and shutdown.
//! - [`server`]: the HTTP/1.1 connection loop (hyper, with half-close and a header timeout).
//! - [`routes`]: the HTTP endpoints, one module per area, and the middleware stack (with the
//!   per-request edge layer: client IP, metrics, access log, JSON error bodies).
//! - [`store`]: SQLite: the two files and their schemas, read pool, the group-commit writer,
//!   the roll-up thread, rollups, cleanup, queries, export.
//! - [`domain`]: validated values (page URLs, sites, events) and time formats.
//! - [`client_ip`]: trusted-proxy resolution of the client address.
//! - [`ratelimit`]: per-(IP, URL) limits and the per-IP ceiling.
//! - [`import`]: parsing JSONL / JSON-array visit files.
//! - [`cli`]: the `import`, `export` and `cleanup` commands.
//! - [`error`], [`extract`]: the `{"detail"}` error shape and extractors that use it.
//! - [`telemetry`]: logs (tracing-subscriber's text or JSON format) and Prometheus metrics.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod domain;
pub mod http;
pub mod store;
pub mod telemetry;
