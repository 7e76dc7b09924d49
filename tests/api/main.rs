//! The integration test binary: every module drives footfall as a user would, through HTTP
//! (in-process with `oneshot`, or a real process for signals and crashes) and the CLI.

mod admin_origin;
mod analytics;
mod browser;
mod bus;
mod bus_nats;
mod common;
mod contract;
mod copy;
mod cors;
mod dimensions;
mod hardening;
mod import_layouts;
mod legacy;
mod limits;
mod logs;
mod metrics;
mod pg_fault;
mod privacy;
mod process;
mod record;
mod redis_limits;
mod request_ids;
mod scale_out;
mod seeds;
mod server;
mod web;
