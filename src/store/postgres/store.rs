//! [`PostgresStore`]: the PostgreSQL backend's side of the storage boundary.
//!
//! Opening connects once (a wrong or unreachable URL fails here, in one line), creates the
//! database and its schema when missing, then starts this node's writer task and roller.
//! Reads take a pooled connection and one snapshot each.
//!
//! The store runs on a small tokio runtime of its own (two threads, `footfall-pg`): its
//! connections, writer task and roller live there whatever runtime the caller has, or had (a
//! store opened outside a runtime, or on one since shut down, still works: as the SQLite one
//! does with its threads), and the PostgreSQL protocol work runs beside the HTTP thread.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::tls::Target;
use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::oneshot;

use super::error::{pool_error, store_error};
use super::roller::Roller;
use super::writer::{WriteOp, Writer};
use super::{calendar, check, dimensions, export, queries, roller, schema};
use crate::domain::export::{ExportFilter, ExportFormat};
use crate::domain::period::Period;
use crate::domain::{IdentifiedVisit, NewVisit, PageUrl, UnixMillis};
use crate::store::relay::Relay;
use crate::store::{
    Devices, ExportStream, Hourly, Options, PageCount, Result, ServedVia, SiteStats, Sources,
    StoreError, Summary, UrlStats,
};

/// Chunks in flight between the export's cursor and its reader (~256 KiB).
const EXPORT_CHANNEL: usize = 4;
/// How long a request waits for a connection, or for one to be made, before it is answered
/// "unavailable": while PostgreSQL is down, clients get a `503` quickly rather than hang.
const POOL_WAIT: Duration = Duration::from_secs(5);

/// One node's view of a PostgreSQL database.
#[derive(Debug)]
pub struct PostgresStore {
    inner: std::sync::Arc<Inner>,
    handle: tokio::runtime::Handle,
    /// Shut down in the background on drop (a runtime cannot be dropped inside another).
    runtime: std::sync::Mutex<Option<tokio::runtime::Runtime>>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(runtime) = runtime {
            runtime.shutdown_background();
        }
    }
}

/// Threads of the store's runtime.
const THREADS: usize = 2;

#[derive(Debug)]
struct Inner {
    pool: Pool,
    writer: Writer,
    roller: Roller,
    target: Target,
}

/// The store's methods run as tasks on its runtime; their callers await them from theirs.
macro_rules! on_store {
    ($self:ident, |$inner:ident| $body:expr) => {{
        let $inner = $self.inner.clone();
        match $self.handle.spawn(async move { $body }).await {
            Ok(result) => result,
            Err(join) => Err(StoreError::Internal(join.into())),
        }
    }};
}

/// One read in one snapshot (`queries::begin`) on a pooled connection, on the store's runtime:
/// `$body` sees the transaction as `$tx` and answers `Result<_, tokio_postgres::Error>`.
macro_rules! read {
    ($self:ident, |$tx:ident| $body:expr) => {
        on_store!($self, |inner| {
            let mut client = inner.pool.get().await.map_err(pool_error)?;
            let snapshot = queries::begin(&mut client).await.map_err(store_error)?;
            let $tx = &snapshot;
            let value: Result<_, tokio_postgres::Error> = async { $body }.await;
            let value = value.map_err(store_error)?;
            snapshot.commit().await.map_err(store_error)?;
            Ok(value)
        })
    };
}

impl PostgresStore {
    /// Connects to `url` (a libpq URL), creating the database and the schema when missing, and
    /// starts the writer task and the roller. Needs a tokio runtime (every command runs in one).
    pub fn open(url: &str, options: &Options) -> anyhow::Result<Self> {
        let mut target = Target::parse(url)?;
        let config = &mut target.config;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(POOL_WAIT);
        }
        // Every statement is prepared once per connection and run with parameters; with the
        // default plan cache PostgreSQL switches to a generic plan after five runs, and the
        // generic plan of "visits above the watermark" guesses a third of the table and scans
        // it (measured: every read 65 ms at 1M visits, 155 ms at 3M). Plans made for the
        // actual watermark read the tail through the primary key.
        // JIT off: it compiled a plan of these short queries for 50 ms (measured on the tail
        // query at 3M visits) to save nothing.
        const SESSION: &str = "-c plan_cache_mode=force_custom_plan -c jit=off";
        let session = match config.get_options() {
            Some(given) => format!("{given} {SESSION}"),
            None => SESSION.to_owned(),
        };
        config.options(&session);
        if config.get_application_name().is_none() {
            config.application_name("footfall");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(THREADS)
            .thread_name("footfall-pg")
            .enable_all()
            .build()
            .context("cannot start the PostgreSQL store's runtime")?;
        let handle = runtime.handle().clone();
        // Open is synchronous (as for SQLite), and may be called inside another runtime: the
        // first connection and the schema are waited for from a thread of their own.
        let prepare = {
            let (target, handle) = (target.clone(), handle.clone());
            std::thread::spawn(move || handle.block_on(schema::prepare(&target)))
        };
        let prepared = prepare
            .join()
            .map_err(|_| anyhow::anyhow!("connecting to PostgreSQL panicked"));
        if let Err(err) = prepared.and_then(|r| r) {
            runtime.shutdown_background();
            return Err(err);
        }
        // The writer answers through a task on the caller's runtime, if it has one.
        let answers = Relay::start();
        let _guard = handle.enter();
        let manager = Manager::from_config(
            target.config.clone(),
            target.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.read_pool.max(1) as usize + 4)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .recycle_timeout(Some(POOL_WAIT))
            .runtime(Runtime::Tokio1)
            .build()
            .context("cannot make the PostgreSQL connection pool")?;
        let writer = Writer::spawn(
            pool.clone(),
            options.write_queue,
            options.max_batch,
            answers,
        );
        let roller = Roller::spawn(target.clone());
        tracing::info!(database = %schema::describe(&target.config), "PostgreSQL store open");
        drop(_guard);
        Ok(Self {
            inner: std::sync::Arc::new(Inner {
                pool,
                writer,
                roller,
                target,
            }),
            handle,
            runtime: std::sync::Mutex::new(Some(runtime)),
        })
    }

    async fn submit<T>(&self, op: impl FnOnce(oneshot::Sender<Result<T>>) -> WriteOp) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.inner.writer.submit(op(reply))?;
        answer.await.map_err(|_| StoreError::ShuttingDown)?
    }

    pub async fn record(&self, visit: NewVisit) -> Result<NewVisit> {
        let mut visits = self
            .submit(|reply| WriteOp::Visits {
                visits: vec![visit],
                reply,
            })
            .await?;
        visits
            .pop()
            .ok_or_else(|| StoreError::Internal(anyhow::anyhow!("the writer lost a visit")))
    }

    pub async fn record_many(&self, visits: Vec<NewVisit>) -> Result<usize> {
        if visits.is_empty() {
            return Ok(0);
        }
        let visits = self
            .submit(|reply| WriteOp::Visits { visits, reply })
            .await?;
        Ok(visits.len())
    }

    pub async fn record_events(
        &self,
        events: Vec<IdentifiedVisit>,
        forget_before: UnixMillis,
    ) -> Result<Vec<bool>> {
        self.submit(|reply| WriteOp::Events {
            events,
            forget_before,
            reply,
        })
        .await
    }

    pub async fn count_page(&self, page_id: &str, by: i64) -> Result<i64> {
        let name = page_id.to_owned();
        self.submit(|reply| WriteOp::Count { name, by, reply })
            .await
    }

    pub async fn page_counts_total(&self) -> Result<i64> {
        read!(self, |tx| queries::query_one(
            tx,
            "SELECT coalesce(sum(visits), 0)::bigint FROM page_counters",
            &[]
        )
        .await
        .map(|r| r.get(0)))
    }

    /// Always read from the database: another node may have counted since any copy this node
    /// could keep, and nothing short of a read proves otherwise.
    pub async fn page_count(&self, page_id: &str) -> Result<PageCount> {
        let name = page_id.to_owned();
        let count = read!(self, |tx| queries::query(
            tx,
            "SELECT visits FROM page_counters WHERE name = $1",
            &[&name],
        )
        .await
        .map(|rows| rows.first().map_or(0, |r| r.get::<_, i64>(0))))?;
        Ok(PageCount {
            count,
            served_via: ServedVia::Postgres,
        })
    }

    pub async fn add_clicks(&self, at: UnixMillis, clicks: Vec<(String, i64)>) -> Result<()> {
        if clicks.is_empty() {
            return Ok(());
        }
        self.submit(|reply| WriteOp::Clicks { at, clicks, reply })
            .await
    }

    pub async fn summary(
        &self,
        now: UnixMillis,
        hours: i64,
        limit: Option<i64>,
    ) -> Result<Summary> {
        read!(self, |tx| queries::summary(tx, now, hours, limit).await)
    }

    pub async fn url_stats(&self, url: PageUrl, now: UnixMillis, hours: i64) -> Result<UrlStats> {
        read!(self, |tx| queries::url_stats(tx, url.as_str(), now, hours)
            .await)
    }

    pub async fn sources(
        &self,
        now: UnixMillis,
        hours: i64,
        site: Option<String>,
        limit: usize,
    ) -> Result<Sources> {
        read!(self, |tx| dimensions::sources(
            tx,
            now,
            hours,
            site.as_deref(),
            limit
        )
        .await)
    }

    pub async fn devices(
        &self,
        now: UnixMillis,
        hours: i64,
        site: Option<String>,
        limit: usize,
    ) -> Result<Devices> {
        read!(self, |tx| dimensions::devices(
            tx,
            now,
            hours,
            site.as_deref(),
            limit
        )
        .await)
    }

    pub async fn hourly(
        &self,
        now: UnixMillis,
        hours: i64,
        site: Option<String>,
    ) -> Result<Hourly> {
        read!(self, |tx| dimensions::hourly(
            tx,
            now,
            hours,
            site.as_deref()
        )
        .await)
    }

    pub async fn daily_salt(&self, day: i64) -> Result<[u8; 16]> {
        on_store!(self, |inner| {
            let mut client = inner.pool.get().await.map_err(pool_error)?;
            // A second try covers the one race that leaves no row (see daily_salt).
            for _ in 0..3 {
                let mut candidate = [0u8; 16];
                getrandom::fill(&mut candidate)
                    .map_err(|e| anyhow::anyhow!("no random salt from the OS: {e}"))?;
                if let Some(salt) = dimensions::daily_salt(&mut client, day, candidate)
                    .await
                    .map_err(store_error)?
                {
                    return Ok(salt);
                }
            }
            Err(anyhow::anyhow!("the salt of day {day} was deleted as it was made").into())
        })
    }

    pub async fn site_stats(&self) -> Result<SiteStats> {
        read!(self, |tx| queries::site_stats(tx).await)
    }

    pub async fn breakdown(
        &self,
        site: Option<String>,
        event: String,
        period: Period,
    ) -> Result<Vec<(u32, i64)>> {
        read!(self, |tx| calendar::breakdown(
            tx,
            site.as_deref(),
            &event,
            &period
        )
        .await)
    }

    pub async fn top_sites(
        &self,
        now: UnixMillis,
        minutes: i64,
        limit: usize,
    ) -> Result<Vec<(String, i64)>> {
        read!(self, |tx| calendar::top_sites(tx, now, minutes, limit)
            .await)
    }

    pub fn export(&self, filter: ExportFilter, format: ExportFormat) -> ExportStream {
        let (sender, receiver) = tokio::sync::mpsc::channel(EXPORT_CHANNEL);
        let pool = self.inner.pool.clone();
        self.handle.spawn(async move {
            match export::export(pool, filter, format, sender).await {
                Ok(rows) => tracing::debug!(rows, "export finished"),
                Err(err) => tracing::error!(error = format!("{err:#}"), "export failed"),
            }
        });
        receiver
    }

    pub async fn cleanup(&self, cutoff: UnixMillis) -> Result<u64> {
        on_store!(self, |inner| {
            let mut client = inner.pool.get().await.map_err(pool_error)?;
            roller::cleanup(&mut client, cutoff)
                .await
                .map_err(store_error)
        })
    }

    pub fn dump(&self) -> crate::store::DumpStream {
        let (sender, receiver) = tokio::sync::mpsc::channel(2);
        let pool = self.inner.pool.clone();
        self.handle.spawn(async move {
            if let Err(err) = super::dump::dump(pool, &sender).await {
                let _ = sender.send(Err(StoreError::Internal(err))).await;
            }
        });
        receiver
    }

    pub async fn stored_clicks(&self) -> Result<i64> {
        read!(self, |tx| queries::query_one(
            tx,
            "SELECT coalesce(sum(clicks), 0)::bigint FROM clicks",
            &[]
        )
        .await
        .map(|r| r.get(0)))
    }

    pub async fn health(&self) -> Result<()> {
        read!(self, |tx| queries::query_one(
            tx,
            "SELECT 1 FROM progress WHERE id = 1",
            &[]
        )
        .await
        .map(drop))
    }

    pub async fn stored_visits(&self) -> Result<i64> {
        read!(self, |tx| queries::query_one(
            tx,
            "SELECT count(*) FROM visits",
            &[]
        )
        .await
        .map(|r| r.get(0)))
    }

    pub async fn rollup_mismatches(&self) -> Result<Vec<String>> {
        read!(self, |tx| check::check(tx).await)
    }

    pub fn update_gauges(&self) {
        let stats = &self.inner.roller.stats;
        metrics::gauge!("footfall_write_queue_depth").set(self.inner.writer.queue_depth() as f64);
        metrics::gauge!("footfall_roll_up_pending_writes")
            .set(stats.pending.load(Ordering::Relaxed).max(0) as f64);
        metrics::gauge!("footfall_database_bytes")
            .set(stats.database_bytes.load(Ordering::Relaxed) as f64);
    }

    /// Rolls up now, whichever node is elected (the protocol is safe with several rollers):
    /// for tests and for `close`.
    pub async fn roll_up_now(&self) -> Result<u64> {
        on_store!(self, |inner| {
            let mut client = inner.target.connect().await.map_err(store_error)?;
            roller::roll_up(&mut client).await.map_err(store_error)
        })
    }

    /// Commits what is queued, stops the roller, rolls up what is left (so `footfall import`
    /// leaves no tail for the first queries to add), and closes the pool.
    pub async fn close(&self) {
        self.inner.writer.close().await;
        self.inner.roller.close().await;
        if let Err(err) = self.roll_up_now().await {
            tracing::warn!(error = %err, "the last roll-up failed; another node or start does it");
        }
        self.inner.pool.close();
    }
}
