//! footfall: a page-visit analytics server on an embedded SQLite file, or on PostgreSQL for
//! several nodes.
//!
//! Visits arrive over HTTP, are validated, rate-limited and handed to the [`store::Store`]; on
//! SQLite a single writer thread commits them in groups before anyone is told "recorded". A
//! roll-up thread counts them into the rollup tables in bulk, behind a watermark, in a second
//! database file, so it never holds up recording. Analytics read the rollups plus the few visits above the watermark, so
//! they cost the same at ten million visits as at one million. Exports stream from a cursor.
//!
//! # Layout
//!
//! - [`config`]: command line and environment (clap).
//! - [`cli`]: the commands: `serve`, `import`, `export`, `cleanup`.
//! - [`http`]: everything HTTP: state and serving, the connection loop (`server`), the router
//!   and middleware (`routes`, with one module per area), errors, extractors, client IP and
//!   rate limits.
//! - [`domain`]: validated values (page URLs, sites, events, visits, periods, export filters)
//!   and the time formats of the API.
//! - [`store`]: the storage boundary ([`store::Store`], its values and errors) and its backends
//!   (`store::sqlite`: the two files, the writer, roll-up and checkpoint threads, queries and
//!   export).
//! - [`bus`]: event-bus ingest: the NATS JetStream and ZeroMQ subscribers, which record through
//!   the same store as the handlers.
//! - [`telemetry`]: logs (tracing-subscriber's text or JSON format) and Prometheus metrics;
//!   [`log_writer`]: the thread that writes log lines to stderr in batches.
#![forbid(unsafe_code)]
// These docs are for the people working on footfall, private items included (`cargo doc
// --document-private-items`): a module's doc may point at the private items that do its work.
#![allow(rustdoc::private_intra_doc_links)]

pub mod bus;
pub mod cli;
pub mod config;
pub mod domain;
pub mod http;
pub mod log_writer;
pub mod privacy;
pub mod store;
pub mod telemetry;
