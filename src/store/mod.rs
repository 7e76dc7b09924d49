//! The storage boundary: one [`Store`] that handlers, the CLI and the tests talk to.
//!
//! Every method speaks in domain terms (visits, pages, sites, periods) and answers domain
//! values ([`model`]) or a [`StoreError`]; nothing outside this module names SQL, rusqlite or
//! r2d2. A `Store` is an enum of backends: one fixed set, matched in each method, with no
//! boxing and no generic state: SQLite ([`sqlite`], the embedded default) and PostgreSQL
//! ([`postgres`], for N stateless nodes on one database). `--db` picks one: a `postgres://` or
//! `postgresql://` URL is PostgreSQL, anything else an SQLite file path.
//!
//! What every backend promises:
//! - A write method returns `Ok` only once what it wrote is committed (durable per
//!   [`Durability`]), and from then on every read counts it.
//! - Reads are exact: each answer comes from one consistent snapshot.
//! - A full write queue is [`StoreError::Busy`] at once, never an unbounded wait.
//! - [`Store::close`] commits everything queued before it returns.

pub mod model;
pub mod postgres;
mod relay;
pub mod sqlite;

use std::path::Path;

use bytes::Bytes;

use crate::domain::export::{ExportFilter, ExportFormat};
use crate::domain::period::Period;
use crate::domain::{IdentifiedVisit, NewVisit, PageUrl, UnixMillis};

pub use model::{
    DateRange, Devices, Hourly, PageCount, PageSummary, RecentVisit, ServedVia, SiteRecentVisit,
    SiteStats, Sources, Summary, UrlStats,
};

/// How much a commit survives (SQLite's `synchronous`): `normal` survives a crash of the
/// process, `full` also a power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    Normal,
    Full,
}

/// How a store is opened and sized.
#[derive(Debug, Clone)]
pub struct Options {
    pub durability: Durability,
    /// Write requests that may wait for the writer; past this, [`StoreError::Busy`].
    pub write_queue: usize,
    /// Most visits committed in one transaction.
    pub max_batch: usize,
    /// Most connections reading at once.
    pub read_pool: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            durability: Durability::Normal,
            write_queue: 16_384,
            max_batch: 4_096,
            read_pool: 8,
        }
    }
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The write queue is full: retry shortly.
    #[error("the write queue is full")]
    Busy,
    /// The database cannot take the write now (disk full, locked too long, unreachable).
    #[error("{0}")]
    Unavailable(String),
    /// The store is closing and takes no more work.
    #[error("the store is shutting down")]
    ShuttingDown,
    /// A bug or an I/O failure; the cause is for the log, not for the client.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The export's output: ~64 KiB chunks of the chosen format, produced as they are read.
pub type ExportStream = tokio::sync::mpsc::Receiver<Bytes>;

/// A part of everything a store holds, as `footfall copy` moves it.
#[derive(Debug)]
pub enum Dumped {
    /// Stored visits (times to the millisecond, events, dimensions), oldest first.
    Visits(Vec<NewVisit>),
    /// Pre-counted clicks: (time, site, clicks).
    Clicks(Vec<(UnixMillis, String, i64)>),
    /// Per-page counters: (name, visits).
    Counters(Vec<(String, i64)>),
}

/// The output of [`Store::dump`]: parts in batches, produced as they are read; an error ends it.
pub type DumpStream = tokio::sync::mpsc::Receiver<Result<Dumped>>;

/// The storage of one footfall node.
#[derive(Debug)]
pub enum Store {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PostgresStore),
}

impl Store {
    /// Opens (creating it when missing) the database `db` names: a PostgreSQL URL
    /// ([`Self::is_postgres`]) or an SQLite file path. Starts the backend's workers; [`Self::close`]
    /// stops them. PostgreSQL needs to be called inside a tokio runtime.
    pub fn open(db: &Path, options: &Options) -> anyhow::Result<Self> {
        match db.to_str().filter(|db| postgres::is_url(db)) {
            Some(url) => Ok(Self::Postgres(postgres::PostgresStore::open(url, options)?)),
            None => Ok(Self::Sqlite(sqlite::SqliteStore::open(db, options)?)),
        }
    }

    /// Whether `db` (a `--db` value) names a PostgreSQL database rather than an SQLite file.
    pub fn is_postgres(db: &Path) -> bool {
        db.to_str().is_some_and(postgres::is_url)
    }

    /// The backend's name, as `/health` reports it.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// Records one visit; answers it back (unchanged) once committed.
    pub async fn record(&self, visit: NewVisit) -> Result<NewVisit> {
        match self {
            Self::Sqlite(s) => s.record(visit).await,
            Self::Postgres(s) => s.record(visit).await,
        }
    }

    /// Records visits in one transaction (all or none); answers how many once committed.
    pub async fn record_many(&self, visits: Vec<NewVisit>) -> Result<usize> {
        match self {
            Self::Sqlite(s) => s.record_many(visits).await,
            Self::Postgres(s) => s.record_many(visits).await,
        }
    }

    /// Records visits that may carry a delivery id (bus events, API.md §11), in one transaction
    /// (all or none), and answers, for each in order, whether it was recorded (`true`) or
    /// skipped as a duplicate (`false`).
    ///
    /// A visit without an id is always recorded. A visit with an id is recorded only when that
    /// id is not remembered yet — neither from an earlier call (by this node or any other on the
    /// same database) nor from earlier in this one — and its id is then remembered, committed
    /// with the visit: a crash keeps both or neither. In the same transaction, ids first
    /// remembered before `forget_before` are forgotten (the dedup window: the caller's promise
    /// that no duplicate of them arrives any more).
    ///
    /// Concurrent calls on several nodes with the same id record it once: the second waits for
    /// the first's commit and then sees the id.
    pub async fn record_events(
        &self,
        events: Vec<IdentifiedVisit>,
        forget_before: UnixMillis,
    ) -> Result<Vec<bool>> {
        match self {
            Self::Sqlite(s) => s.record_events(events, forget_before).await,
            Self::Postgres(s) => s.record_events(events, forget_before).await,
        }
    }

    /// Adds one visit to the per-page counter `page_id`; answers its new count.
    pub async fn count_page(&self, page_id: &str) -> Result<i64> {
        self.add_to_page_count(page_id, 1).await
    }

    /// Adds `visits` to the per-page counter `page_id` (as `footfall copy` moves one);
    /// answers its new count.
    pub async fn add_to_page_count(&self, page_id: &str, visits: i64) -> Result<i64> {
        match self {
            Self::Sqlite(s) => s.count_page(page_id, visits).await,
            Self::Postgres(s) => s.count_page(page_id, visits).await,
        }
    }

    /// The sum of every per-page counter (what `footfall copy` checks).
    pub async fn page_counts_total(&self) -> Result<i64> {
        match self {
            Self::Sqlite(s) => s.page_counts_total().await,
            Self::Postgres(s) => s.page_counts_total().await,
        }
    }

    /// The committed count of the per-page counter `page_id` (0 when unknown).
    pub async fn page_count(&self, page_id: &str) -> Result<PageCount> {
        match self {
            Self::Sqlite(s) => s.page_count(page_id).await,
            Self::Postgres(s) => s.page_count(page_id).await,
        }
    }

    /// Adds pre-counted clicks per site at one instant.
    pub async fn add_clicks(&self, at: UnixMillis, clicks: Vec<(String, i64)>) -> Result<()> {
        match self {
            Self::Sqlite(s) => s.add_clicks(at, clicks).await,
            Self::Postgres(s) => s.add_clicks(at, clicks).await,
        }
    }

    /// Every page (or the `limit` most visited), with its figures over the last `hours`.
    pub async fn summary(
        &self,
        now: UnixMillis,
        hours: i64,
        limit: Option<i64>,
    ) -> Result<Summary> {
        match self {
            Self::Sqlite(s) => s.summary(now, hours, limit).await,
            Self::Postgres(s) => s.summary(now, hours, limit).await,
        }
    }

    /// One page's figures over the last `hours` (zeros for an unknown page).
    pub async fn url_stats(&self, url: PageUrl, now: UnixMillis, hours: i64) -> Result<UrlStats> {
        match self {
            Self::Sqlite(s) => s.url_stats(url, now, hours).await,
            Self::Postgres(s) => s.url_stats(url, now, hours).await,
        }
    }

    /// Whole-site figures: totals, unique visitors, popular pages, newest visits.
    pub async fn site_stats(&self) -> Result<SiteStats> {
        match self {
            Self::Sqlite(s) => s.site_stats().await,
            Self::Postgres(s) => s.site_stats().await,
        }
    }

    /// Visits of `site` (or every site, for `None`) and `event` per segment of `period`:
    /// (segment, visits), every segment present, in order.
    pub async fn breakdown(
        &self,
        site: Option<String>,
        event: String,
        period: Period,
    ) -> Result<Vec<(u32, i64)>> {
        match self {
            Self::Sqlite(s) => s.breakdown(site, event, period).await,
            Self::Postgres(s) => s.breakdown(site, event, period).await,
        }
    }

    /// The `limit` sites with the most visits (clicks included) in the trailing `minutes`,
    /// rounded out to whole minutes; most first.
    pub async fn top_sites(
        &self,
        now: UnixMillis,
        minutes: i64,
        limit: usize,
    ) -> Result<Vec<(String, i64)>> {
        match self {
            Self::Sqlite(s) => s.top_sites(now, minutes, limit).await,
            Self::Postgres(s) => s.top_sites(now, minutes, limit).await,
        }
    }

    /// Where the visits of the last `hours` to `site` (or every site, for `None`) came from:
    /// referrers and UTM tags, at most `limit` of each (API.md §12). An unknown site is empty.
    pub async fn sources(
        &self,
        now: UnixMillis,
        hours: i64,
        site: Option<String>,
        limit: usize,
    ) -> Result<Sources> {
        match self {
            Self::Sqlite(s) => s.sources(now, hours, site, limit).await,
            Self::Postgres(s) => s.sources(now, hours, site, limit).await,
        }
    }

    /// What the visitors of the last `hours` to `site` (or every site) used: browsers and
    /// OS families (at most `limit` of each) and device types (API.md §12).
    pub async fn devices(
        &self,
        now: UnixMillis,
        hours: i64,
        site: Option<String>,
        limit: usize,
    ) -> Result<Devices> {
        match self {
            Self::Sqlite(s) => s.devices(now, hours, site, limit).await,
            Self::Postgres(s) => s.devices(now, hours, site, limit).await,
        }
    }

    /// Visits per hour of `site` (or every site) over the last `hours`, with the site's
    /// all-time totals (API.md §12).
    pub async fn hourly(
        &self,
        now: UnixMillis,
        hours: i64,
        site: Option<String>,
    ) -> Result<Hourly> {
        match self {
            Self::Sqlite(s) => s.hourly(now, hours, site).await,
            Self::Postgres(s) => s.hourly(now, hours, site).await,
        }
    }

    /// The salt of `--ip-mode hashed` for `day` (days since the epoch, UTC): created on first
    /// use, the same on every node of one database. Salts of days before `day - 1` are deleted
    /// in the same call, so yesterday's pseudonyms cannot be recomputed the day after.
    pub async fn daily_salt(&self, day: i64) -> Result<[u8; 16]> {
        match self {
            Self::Sqlite(s) => s.daily_salt(day).await,
            Self::Postgres(s) => s.daily_salt(day).await,
        }
    }

    /// Streams the visits `filter` selects, newest first, rendered in `format`. Dropping the
    /// stream stops the read.
    pub fn export(&self, filter: ExportFilter, format: ExportFormat) -> ExportStream {
        match self {
            Self::Sqlite(s) => s.export(filter, format),
            Self::Postgres(s) => s.export(filter, format),
        }
    }

    /// Stores visits from a file or another system (their own times, possibly long past),
    /// in one transaction; answers once they are committed and counted. Both backends take
    /// them through the writer like recorded visits ([`Self::record_many`]): their ids are
    /// drawn like any other's, and those below the rollups' watermark are answered after the
    /// roll-up that counts them.
    pub async fn import(&self, visits: Vec<NewVisit>) -> Result<usize> {
        self.record_many(visits).await
    }

    /// Deletes the visits before `cutoff`, with their share of every figure; answers how many.
    pub async fn cleanup(&self, cutoff: UnixMillis) -> Result<u64> {
        match self {
            Self::Sqlite(s) => s.cleanup(cutoff).await,
            Self::Postgres(s) => s.cleanup(cutoff).await,
        }
    }

    /// Streams everything the store holds (visits, then clicks, then per-page counters) in batches, for `footfall copy`.
    /// Dropping the stream stops the read.
    pub fn dump(&self) -> DumpStream {
        match self {
            Self::Sqlite(s) => s.dump(),
            Self::Postgres(s) => s.dump(),
        }
    }

    /// The sum of the pre-counted clicks stored (what `footfall copy` checks).
    pub async fn stored_clicks(&self) -> Result<i64> {
        match self {
            Self::Sqlite(s) => s.stored_clicks().await,
            Self::Postgres(s) => s.stored_clicks().await,
        }
    }

    /// Whether the database answers reads.
    pub async fn health(&self) -> Result<()> {
        match self {
            Self::Sqlite(s) => s.health().await,
            Self::Postgres(s) => s.health().await,
        }
    }

    /// Raw visits stored (not a figure of the API: what durability checks count).
    pub async fn stored_visits(&self) -> Result<i64> {
        match self {
            Self::Sqlite(s) => s.stored_visits().await,
            Self::Postgres(s) => s.stored_visits().await,
        }
    }

    /// Names of the aggregates that disagree with a recount of the raw visits: empty when the
    /// store is consistent. Reads everything: for tests and checks, not for serving.
    pub async fn rollup_mismatches(&self) -> Result<Vec<String>> {
        match self {
            Self::Sqlite(s) => s.rollup_mismatches().await,
            Self::Postgres(s) => s.rollup_mismatches().await,
        }
    }

    /// Sets the store's gauges (queue depth, roll-up backlog, size) for a metrics scrape.
    pub fn update_gauges(&self) {
        match self {
            Self::Sqlite(s) => s.update_gauges(),
            Self::Postgres(s) => s.update_gauges(),
        }
    }

    /// Commits everything queued, stops the workers and waits for them. Idempotent.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(s) => s.close().await,
            Self::Postgres(s) => s.close().await,
        }
    }
}
