//! [`SqliteStore`]: the SQLite backend's side of the storage boundary.
//!
//! Writes go to the writer thread (group commit) and are answered once committed; reads run on
//! a pooled read-only connection on tokio's blocking pool; exports stream from a cursor on a
//! blocking thread through a small bounded channel.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rusqlite::Connection;

use super::checkpointer::Checkpointer;
use super::roller::{RollUpBacklog, RollerHandle};
use super::{
    CounterCache, ReadPool, WriteOp, WriteOutcome, WriterHandle, calendar, dimensions, export,
    file_size, open_read_pool, open_writer, queries, rollups,
};
use crate::domain::export::{ExportFilter, ExportFormat};
use crate::domain::period::Period;
use crate::domain::{IdentifiedVisit, NewVisit, PageUrl, UnixMillis};
use crate::store::{
    Devices, ExportStream, Hourly, Options, PageCount, Result, SiteStats, Sources, StoreError,
    Summary, UrlStats,
};

/// Chunks in flight between the export's cursor and its reader: with 64 KiB chunks, at most
/// ~256 KiB of an export is in memory at once.
const EXPORT_CHANNEL: usize = 4;

/// One database file (and the rollups file beside it), its threads and its read pool.
#[derive(Debug)]
pub struct SqliteStore {
    pool: ReadPool,
    /// Owns the roll-up and checkpoint threads, which stop after it.
    writer: WriterHandle,
    backlog: RollUpBacklog,
    counters: Arc<CounterCache>,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (or creates) the visits file `path` and its rollups file, migrating older schemas,
    /// and starts the writer, roll-up and checkpoint threads.
    pub fn open(path: &Path, options: &Options) -> anyhow::Result<Self> {
        let conns = open_writer(path, options.durability)?;
        let pool = open_read_pool(path, options.durability, options.read_pool)?;
        let counters = Arc::new(CounterCache::open(path)?);
        let roller =
            RollerHandle::spawn(conns.rollups).context("cannot start the roll-up thread")?;
        let backlog = roller.backlog();
        let checkpointer = Checkpointer::spawn(path, options.durability)
            .context("cannot start the checkpoint thread")?;
        let writer = WriterHandle::spawn(
            conns.raw,
            path.to_owned(),
            counters.clone(),
            roller,
            checkpointer,
            options.write_queue,
            options.max_batch,
        )
        .context("cannot start the writer thread")?;
        Ok(Self {
            pool,
            writer,
            backlog,
            counters,
            path: path.to_owned(),
        })
    }

    /// Runs `f` on a pooled read connection on the blocking thread pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let pool = self.pool.clone();
        let outcome = tokio::task::spawn_blocking(move || -> anyhow::Result<T> {
            let conn = pool.get()?;
            Ok(f(&conn)?)
        })
        .await;
        match outcome {
            Ok(result) => result.map_err(StoreError::Internal),
            Err(join) => Err(StoreError::Internal(join.into())),
        }
    }

    /// [`Self::read`] of an answer that adds the tail from the raw rows: afterwards, a long
    /// tail is rolled up, so that the next such read finds it short
    /// ([`RollUpBacklog::after_read`]).
    async fn read_tail<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let backlog = self.backlog.clone();
        self.read(move |conn| {
            let answer = f(conn);
            backlog.after_read();
            answer
        })
        .await
    }

    pub async fn record(&self, visit: NewVisit) -> Result<NewVisit> {
        self.writer.record(visit).await
    }

    pub async fn record_many(&self, visits: Vec<NewVisit>) -> Result<usize> {
        match self.writer.submit(WriteOp::Visits(visits)).await? {
            WriteOutcome::Recorded(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    pub async fn record_events(
        &self,
        events: Vec<IdentifiedVisit>,
        forget_before: UnixMillis,
    ) -> Result<Vec<bool>> {
        match self
            .writer
            .submit(WriteOp::Events {
                events,
                forget_before,
            })
            .await?
        {
            WriteOutcome::Events(recorded) => Ok(recorded),
            other => Err(unexpected(other)),
        }
    }

    pub async fn count_page(&self, page_id: &str, by: i64) -> Result<i64> {
        match self
            .writer
            .submit(WriteOp::CountPage(page_id.into(), by))
            .await?
        {
            WriteOutcome::Counted(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    pub async fn page_count(&self, page_id: &str) -> Result<PageCount> {
        let counters = self.counters.clone();
        let page_id = page_id.to_owned();
        let read = tokio::task::spawn_blocking(move || counters.get(&page_id))
            .await
            .map_err(|e| StoreError::Internal(e.into()))?;
        let (count, served_via) = read.map_err(|e| StoreError::Internal(e.into()))?;
        Ok(PageCount { count, served_via })
    }

    pub async fn add_clicks(&self, at: UnixMillis, clicks: Vec<(String, i64)>) -> Result<()> {
        self.writer.submit(WriteOp::Clicks { at, clicks }).await?;
        Ok(())
    }

    pub async fn summary(
        &self,
        now: UnixMillis,
        hours: i64,
        limit: Option<i64>,
    ) -> Result<Summary> {
        self.read_tail(move |conn| queries::summary(conn, now, hours, limit))
            .await
    }

    pub async fn url_stats(&self, url: PageUrl, now: UnixMillis, hours: i64) -> Result<UrlStats> {
        self.read_tail(move |conn| queries::url_stats(conn, url.as_str(), now, hours))
            .await
    }

    pub async fn sources(
        &self,
        now: UnixMillis,
        hours: i64,
        site: Option<String>,
        limit: usize,
    ) -> Result<Sources> {
        self.read_tail(move |conn| dimensions::sources(conn, now, hours, site.as_deref(), limit))
            .await
    }

    pub async fn devices(
        &self,
        now: UnixMillis,
        hours: i64,
        site: Option<String>,
        limit: usize,
    ) -> Result<Devices> {
        self.read_tail(move |conn| dimensions::devices(conn, now, hours, site.as_deref(), limit))
            .await
    }

    pub async fn hourly(
        &self,
        now: UnixMillis,
        hours: i64,
        site: Option<String>,
    ) -> Result<Hourly> {
        self.read_tail(move |conn| dimensions::hourly(conn, now, hours, site.as_deref()))
            .await
    }

    /// Through the writer: the salt is created, read back and pruned in one of its
    /// transactions (see `salts`).
    pub async fn daily_salt(&self, day: i64) -> Result<[u8; 16]> {
        match self.writer.submit(WriteOp::Salt(day)).await? {
            WriteOutcome::Salt(salt) => Ok(salt),
            other => Err(unexpected(other)),
        }
    }

    pub async fn site_stats(&self) -> Result<SiteStats> {
        self.read_tail(queries::site_stats).await
    }

    pub async fn breakdown(
        &self,
        site: Option<String>,
        event: String,
        period: Period,
    ) -> Result<Vec<(u32, i64)>> {
        self.read_tail(move |conn| calendar::breakdown(conn, site.as_deref(), &event, &period))
            .await
    }

    pub async fn top_sites(
        &self,
        now: UnixMillis,
        minutes: i64,
        limit: usize,
    ) -> Result<Vec<(String, i64)>> {
        self.read_tail(move |conn| calendar::top_sites(conn, now, minutes, limit))
            .await
    }

    /// Runs the export's cursor on a blocking thread; it stops when the stream is dropped.
    pub fn export(&self, filter: ExportFilter, format: ExportFormat) -> ExportStream {
        let (sender, receiver) = tokio::sync::mpsc::channel(EXPORT_CHANNEL);
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let result = pool.get().map_err(anyhow::Error::from).and_then(|conn| {
                // `blocking_send` fails once the reader is gone: that stops the cursor.
                export::export(&conn, &filter, format, |chunk| {
                    sender.blocking_send(chunk).is_ok()
                })
                .map_err(anyhow::Error::from)
            });
            match result {
                Ok(rows) => tracing::debug!(rows, "export finished"),
                Err(err) => tracing::error!(error = format!("{err:#}"), "export failed"),
            }
        });
        receiver
    }

    pub async fn cleanup(&self, cutoff: UnixMillis) -> Result<u64> {
        self.writer.cleanup(cutoff).await
    }

    /// Reads everything on a blocking thread through a small channel (see `dump`).
    pub fn dump(&self) -> crate::store::DumpStream {
        let (sender, receiver) = tokio::sync::mpsc::channel(2);
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let result = pool
                .get()
                .map_err(anyhow::Error::from)
                .and_then(|conn| super::dump::dump(&conn, &sender).map_err(anyhow::Error::from));
            if let Err(err) = result {
                let _ = sender.blocking_send(Err(StoreError::Internal(err)));
            }
        });
        receiver
    }

    pub async fn page_counts_total(&self) -> Result<i64> {
        self.read(|conn| {
            conn.query_row(
                "SELECT coalesce(sum(visits), 0) FROM page_counters",
                [],
                |r| r.get(0),
            )
        })
        .await
    }

    pub async fn stored_clicks(&self) -> Result<i64> {
        self.read(|conn| {
            conn.query_row("SELECT coalesce(sum(clicks), 0) FROM clicks", [], |r| {
                r.get(0)
            })
        })
        .await
    }

    pub async fn health(&self) -> Result<()> {
        self.read(|conn| conn.query_row("SELECT count(*) FROM totals", [], |r| r.get::<_, i64>(0)))
            .await
            .map(drop)
    }

    pub async fn stored_visits(&self) -> Result<i64> {
        self.read(|conn| conn.query_row("SELECT count(*) FROM visits", [], |r| r.get(0)))
            .await
    }

    pub async fn rollup_mismatches(&self) -> Result<Vec<String>> {
        self.read(rollups::check).await
    }

    pub fn update_gauges(&self) {
        metrics::gauge!("footfall_write_queue_depth").set(self.writer.queue_depth() as f64);
        metrics::gauge!("footfall_roll_up_pending_writes").set(self.backlog.writes() as f64);
        metrics::gauge!("footfall_database_bytes").set(file_size(&self.path) as f64);
    }

    /// Writes committed since the last roll-up began: about the tail queries add.
    pub fn roll_up_pending(&self) -> usize {
        self.backlog.writes()
    }

    /// Commits what is queued, then rolls up what is left, and stops every thread: the one
    /// shutdown signal of the engine (see `worker`).
    pub async fn close(&self) {
        let writer = self.writer.clone();
        if tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .is_err()
        {
            tracing::error!("stopping the store's threads panicked");
        }
    }
}

/// An outcome the writer never gives for this kind of write: a bug, answered as one.
fn unexpected(outcome: WriteOutcome) -> StoreError {
    StoreError::Internal(anyhow::anyhow!("unexpected write outcome {outcome:?}"))
}
