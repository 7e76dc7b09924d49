//! The PostgreSQL backend: N stateless footfall nodes on one database (API.md §10).
//!
//! Everything PostgreSQL-specific lives under this module; the rest of footfall sees
//! [`PostgresStore`] through `store::Store`, with the same answers as the SQLite backend.
//!
//! - [`store`]: [`PostgresStore`], the backend's side of the boundary: connects, applies the
//!   schema, starts the writer task and the roller, answers each `Store` method.
//! - [`schema`]: the versioned schema (`schema/postgres/`), created on first start.
//! - [`writer`]: per-node group commit: whatever is queued goes in one transaction (binary
//!   `COPY`), answered after the commit.
//!   [`writer_dims`] resolves the sources and devices of API.md §12 for it.
//! - [`roller`]: the roll-up, run by one node elected with a session advisory lock, with a
//!   watermark that is safe whoever runs it; and cleanup, the roll-up's inverse.
//! - [`queries`], [`calendar`], [`dimensions`]: analytics reads, each in one `REPEATABLE READ` snapshot:
//!   rollups plus the tail above the watermark.
//! - [`export`]: the streaming cursor behind `/all-visits` and `footfall export`.
//! - [`dump`]: everything the database holds, for `footfall copy`.
//! - [`check`]: the recount the invariant tests hold the rollups to.
//! - [`error`]: which failures are "the database is unavailable" (`503`) and which are bugs.

pub mod calendar;
pub mod check;
pub mod dimensions;
pub mod dump;
pub mod error;
pub mod export;
pub mod queries;
pub mod roller;
pub mod schema;
mod store;
#[cfg(test)]
mod tests;
pub mod tls;
pub mod writer;
mod writer_dims;

pub use store::PostgresStore;

/// Whether `--db` names a PostgreSQL database (a libpq URL) rather than an SQLite file.
pub fn is_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}
