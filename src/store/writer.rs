//! The writer: one thread, the only writable connection, group commit.
//!
//! Handlers submit a [`WriteOp`] through a bounded queue and await a oneshot reply. The thread
//! blocks for the first queued op, drains whatever else is already queued (up to `max_batch`
//! visits), writes all of it in one transaction, commits, and only then replies to each
//! submitter. Throughput therefore grows with load, with no timer and
//! no added latency at low load. A full queue is refused at once ([`ApiError::Overloaded`], a
//! `503`), so memory stays bounded. [`WriterHandle::shutdown`] makes the thread commit what is
//! queued and exit.
//!
//! Recording commits the raw rows; their rollups follow in bulk (see `schema.sql` on the
//! watermark): the writer rolls the whole tail up when it reaches [`ROLL_UP_AT`] visits, and
//! once no write has arrived for [`ROLL_UP_IDLE`] it rolls it up [`IDLE_SLICE`] visits at a
//! time, looking for new writes between slices. Queries add the tail themselves, so answers are
//! exact at every moment; only the cost of keeping rollups moves off the request path.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::CounterCache;
use super::ingest::{Ingest, NewVisit, WHOLE_TAIL, count_page};
use super::rollups::{self, RollupDelta};
use crate::domain::UnixMillis;
use crate::error::ApiError;

/// One unit of work for the writer; each is atomic and committed before it is answered.
#[derive(Debug)]
pub enum WriteOp {
    /// Visits to record (one request's worth: 1 for `/visit`, up to 100 for `/bulk-visits`, a
    /// chunk for imports).
    Visits(Vec<NewVisit>),
    /// `POST /visit/{page_id}`: one more visit on a per-page counter.
    CountPage(String),
    /// `POST /domains`: pre-counted clicks per site at one time.
    Clicks {
        at: UnixMillis,
        clicks: Vec<(String, i64)>,
    },
    /// `DELETE /cleanup`: visits older than `cutoff` go, with their share of every rollup.
    Cleanup { cutoff: UnixMillis },
}

impl WriteOp {
    /// The visits this op writes, for the batch cap.
    fn weight(&self) -> usize {
        match self {
            Self::Visits(v) => v.len(),
            _ => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    Recorded(usize),
    Counted(i64),
    ClicksAdded,
    Cleaned { deleted: u64 },
}

/// Tail length at which the writer rolls up even under load: bounds the raw rows a query adds.
pub const ROLL_UP_AT: usize = 20_000;
/// Tail visits an idle writer rolls up per transaction, checking for new writes in between: a
/// write that arrives during an idle roll-up waits for one slice (~30 ms), not the whole tail.
pub const IDLE_SLICE: usize = 5_000;
/// Quiet time after which the writer starts rolling the tail up, [`IDLE_SLICE`] visits at a time.
pub const ROLL_UP_IDLE: Duration = Duration::from_millis(25);

struct Job {
    op: WriteOp,
    reply: oneshot::Sender<Result<WriteOutcome, String>>,
}

enum Message {
    Job(Job),
    /// Commit what is queued, then exit.
    Stop,
}

/// The submitting side of the writer; cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    sender: SyncSender<Message>,
    queued: Arc<AtomicI64>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for WriterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterHandle")
            .field("queued", &self.queued.load(Ordering::Relaxed))
            .finish()
    }
}

impl WriterHandle {
    /// Starts the writer thread on `conn` (opened with [`super::open_writer`]).
    pub fn spawn(
        conn: Connection,
        counters: Arc<CounterCache>,
        queue_capacity: usize,
        max_batch: usize,
    ) -> anyhow::Result<Self> {
        let (sender, receiver) = sync_channel(queue_capacity.max(1));
        let queued = Arc::new(AtomicI64::new(0));
        let writer = Writer {
            metrics: WriterMetrics::new(),
            conn,
            ingest: Ingest::new(),
            counters,
            queued: queued.clone(),
            max_batch: max_batch.max(1),
        };
        let thread = std::thread::Builder::new()
            .name("footfall-writer".into())
            .spawn(move || writer.run(receiver))?;
        Ok(Self {
            sender,
            queued,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    /// Queues `op` and waits until it is committed. A full queue answers `Overloaded` at once.
    pub async fn submit(&self, op: WriteOp) -> Result<WriteOutcome, ApiError> {
        let (reply, answer) = oneshot::channel();
        match self.sender.try_send(Message::Job(Job { op, reply })) {
            Ok(()) => {
                // The gauge is set from this count when /metrics is scraped, not per request.
                self.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => {
                metrics::counter!("footfall_write_queue_full_total").increment(1);
                return Err(ApiError::Overloaded);
            }
            Err(TrySendError::Disconnected(_)) => return Err(ApiError::ShuttingDown),
        }
        match answer.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(cause)) => Err(ApiError::Unavailable(cause)),
            // The writer exited without answering: it was stopping.
            Err(_) => Err(ApiError::ShuttingDown),
        }
    }

    /// Requests waiting for the writer right now.
    pub fn queue_depth(&self) -> i64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Makes the writer commit everything queued and exit; waits for it. Idempotent.
    pub fn shutdown(&self) {
        let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        // A blocking send: if the queue is full, the writer is draining it and makes room.
        let _ = self.sender.send(Message::Stop);
        if thread.join().is_err() {
            tracing::error!("the writer thread panicked");
        }
    }
}

/// The writer's metric handles, looked up once: a lookup per commit hashes and locks.
struct WriterMetrics {
    batch_visits: metrics::Histogram,
    commit_seconds: metrics::Histogram,
    visits_recorded: metrics::Counter,
    roll_up_seconds: metrics::Histogram,
}

impl WriterMetrics {
    /// Call after the metrics recorder is installed, or the handles record nowhere.
    fn new() -> Self {
        Self {
            batch_visits: metrics::histogram!("footfall_batch_visits"),
            commit_seconds: metrics::histogram!("footfall_commit_seconds"),
            visits_recorded: metrics::counter!("footfall_visits_recorded_total"),
            roll_up_seconds: metrics::histogram!("footfall_roll_up_seconds"),
        }
    }
}

struct Writer {
    metrics: WriterMetrics,
    conn: Connection,
    ingest: Ingest,
    counters: Arc<CounterCache>,
    queued: Arc<AtomicI64>,
    max_batch: usize,
}

impl Writer {
    fn run(mut self, receiver: Receiver<Message>) {
        // Count a tail left in the file (a crash between a commit and its roll-up): with a tail
        // to roll up, the loop below waits only briefly for a write, so it is rolled up once
        // the server is idle rather than after the first write.
        if let Err(err) = self.ingest.begin(&self.conn) {
            tracing::warn!(error = %err, "cannot count the visits left to roll up");
        }
        let mut stopping = false;
        // Whether the last wait for a write timed out: the writer then rolls the tail up slice
        // by slice, looking for new writes between slices instead of waiting again.
        let mut idle = false;
        loop {
            // Block for the first op; once stopping, only take what is already queued. With a
            // tail to roll up, wait only a moment: a quiet writer is a writer with time to spare.
            let first = if stopping {
                receiver.try_recv().ok()
            } else if self.ingest.tail_len() > 0 {
                let wait = if idle { Duration::ZERO } else { ROLL_UP_IDLE };
                match receiver.recv_timeout(wait) {
                    Ok(message) => Some(message),
                    Err(RecvTimeoutError::Timeout) => {
                        idle = true;
                        self.roll_up(IDLE_SLICE);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => None,
                }
            } else {
                receiver.recv().ok()
            };
            idle = false;
            let Some(first) = first else { break };
            // Let the request threads that are runnable right now queue their visits before
            // the batch is cut: not a timer, just the rest of this time slice. Batches grow
            // when the CPUs are busy, and nothing waits when they are not.
            std::thread::yield_now();
            let mut jobs = Vec::new();
            let mut weight = 0;
            let mut next = Some(first);
            while let Some(message) = next {
                match message {
                    Message::Stop => stopping = true,
                    Message::Job(job) => {
                        weight += job.op.weight();
                        jobs.push(job);
                    }
                }
                next = if weight < self.max_batch {
                    receiver.try_recv().ok()
                } else {
                    None
                };
            }
            self.queued.fetch_sub(jobs.len() as i64, Ordering::Relaxed);
            if !jobs.is_empty() {
                self.commit_batch(jobs, weight);
            }
            // Under load, the whole tail at once: every roll-up transaction rewrites the hot
            // pages of the rollup tables, so smaller, more frequent ones cost more per visit
            // (measured: 1,000-visit slices took POST /visit from 34k to 20k requests/s).
            if self.ingest.tail_len() >= ROLL_UP_AT {
                self.roll_up(WHOLE_TAIL);
            }
        }
        self.roll_up(WHOLE_TAIL);
        tracing::info!("writer stopped: every queued write is committed");
    }

    /// Rolls up the oldest `limit` tail visits ([`WHOLE_TAIL`]: all) in their own transaction. A
    /// failure only delays them: the raw rows are committed and queries count the tail from
    /// them.
    fn roll_up(&mut self, limit: usize) {
        if self.ingest.tail_len() == 0 {
            return;
        }
        let started = Instant::now();
        match self.write(&[], Some(limit)) {
            Ok(_) => {
                self.metrics
                    .roll_up_seconds
                    .record(started.elapsed().as_secs_f64());
            }
            Err(err) => {
                self.ingest.rolled_back();
                tracing::error!(
                    error = format!("{err:#}"),
                    "rolling up the tail failed; it is retried after the next write"
                );
            }
        }
    }

    /// Writes `jobs` in one transaction and answers each: all committed, or all failed.
    fn commit_batch(&mut self, jobs: Vec<Job>, weight: usize) {
        let started = Instant::now();
        match self.write(&jobs, None) {
            Ok(outcomes) => {
                self.metrics.batch_visits.record(weight as f64);
                self.metrics
                    .commit_seconds
                    .record(started.elapsed().as_secs_f64());
                let recorded: usize = outcomes
                    .iter()
                    .map(|o| match o {
                        WriteOutcome::Recorded(n) => *n,
                        _ => 0,
                    })
                    .sum();
                self.metrics.visits_recorded.increment(recorded as u64);
                for (job, outcome) in jobs.into_iter().zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(err) => {
                self.ingest.rolled_back();
                tracing::error!(
                    error = format!("{err:#}"),
                    ops = jobs.len(),
                    "write batch failed"
                );
                for job in jobs {
                    let _ = job
                        .reply
                        .send(Err(format!("The database could not be written: {err}")));
                }
            }
        }
    }

    /// One transaction: `jobs`, then (if `roll_up`) the tail's rollups. Commits, then updates
    /// the counter cache; the outcomes are those of `jobs`.
    ///
    /// `BEGIN IMMEDIATE` and `COMMIT` are cached statements rather than rusqlite's
    /// `Transaction`, which parses both again for every commit; under load there are thousands
    /// of commits a second.
    fn write(
        &mut self,
        jobs: &[Job],
        roll_up: Option<usize>,
    ) -> rusqlite::Result<Vec<WriteOutcome>> {
        let conn = &self.conn;
        // The counter-cache protocol costs two `data_version` reads and two locks: skip it when
        // there is no counter to write and none cached to carry across this commit.
        let track_counters =
            !self.counters.is_empty() || jobs.iter().any(|j| matches!(j.op, WriteOp::CountPage(_)));
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let written = write_ops(
            conn,
            &mut self.ingest,
            &self.counters,
            jobs,
            roll_up,
            track_counters,
        );
        let (outcomes, counts, version_before) = match written {
            Ok(written) => written,
            Err(err) => {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                return Err(err);
            }
        };
        if let Some(version_before) = version_before {
            let ingest = &self.ingest;
            self.counters.after_commit(version_before, &counts, || {
                ingest.foreign_commit_since_begin(conn)
            });
        }
        Ok(outcomes)
    }
}

/// What [`write_ops`] did: each op's outcome, the counters it changed, and the counter cache's
/// version before the commit (when tracked).
type Written = (Vec<WriteOutcome>, Vec<(String, i64)>, Option<i64>);

/// The body of [`Writer::write`], inside its transaction; commits at the end.
fn write_ops(
    conn: &Connection,
    ingest: &mut Ingest,
    counters: &CounterCache,
    jobs: &[Job],
    roll_up: Option<usize>,
    track_counters: bool,
) -> rusqlite::Result<Written> {
    ingest.begin(conn)?;
    let version_before = if track_counters {
        Some(counters.version_before_commit()?)
    } else {
        None
    };
    let mut delta = RollupDelta::default();
    let mut counts = Vec::new();
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs {
        let outcome = match &job.op {
            WriteOp::Visits(visits) => {
                for visit in visits {
                    ingest.add_visit(conn, &mut delta, visit)?;
                }
                WriteOutcome::Recorded(visits.len())
            }
            WriteOp::CountPage(name) => {
                let n = count_page(conn, name)?;
                counts.push((name.clone(), n));
                WriteOutcome::Counted(n)
            }
            WriteOp::Clicks { at, clicks } => {
                for (site, n) in clicks {
                    ingest.add_clicks(conn, &mut delta, site, *at, *n)?;
                }
                WriteOutcome::ClicksAdded
            }
            WriteOp::Cleanup { cutoff } => {
                // Cleanup inverts rollups: earlier ops of this batch must be in them (it
                // rolls the tail up itself, which moves the watermark under `ingest`).
                delta.apply(conn)?;
                let deleted = rollups::cleanup(conn, *cutoff)?;
                ingest.tail_rolled_up_elsewhere();
                WriteOutcome::Cleaned { deleted }
            }
        };
        outcomes.push(outcome);
    }
    delta.apply(conn)?;
    if let Some(limit) = roll_up {
        ingest.roll_up_oldest(conn, limit)?;
    }
    conn.prepare_cached("COMMIT")?.execute([])?;
    Ok((outcomes, counts, version_before))
}
