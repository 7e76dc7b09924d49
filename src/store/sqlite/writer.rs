//! The writer: one thread, the only writable connection, group commit.
//!
//! Handlers submit a [`WriteOp`] through a bounded queue and await a oneshot reply. The thread
//! blocks for the first queued op, drains whatever else is already queued (up to `max_batch`
//! visits), writes all of it in one transaction, commits, and only then replies to each
//! submitter. Throughput therefore grows with load, with no timer and
//! no added latency at low load. A full queue is refused at once ([`StoreError::Busy`], a
//! `503`), so memory stays bounded. [`WriterHandle::shutdown`] makes the thread commit what is
//! queued and exit; as it exits it drops the roll-up and checkpoint threads it owns, which
//! stop after it (see [`super::worker`]).
//!
//! Recording commits the raw rows only; the roll-up thread ([`super::roller`]) counts them into
//! the rollups file in bulk, beside these commits. Queries add the tail themselves, so a visit
//! is in every answer from its acknowledgement on. The exceptions wait for the roll-up before
//! they are answered: late visits (stored below the watermark, which queries do not add) and
//! pre-counted clicks. A cleanup runs alone, in the two steps of [`super::cleanup`].
//!
//! Most of the log's checkpointing happens on [`super::checkpointer`]'s thread, told of each
//! commit; the writer's own automatic checkpoint then finds little left to copy.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::CounterCache;
use super::checkpointer::Checkpointer;
use super::ingest::{Ingest, count_page};
use super::roller::RollerHandle;
use super::worker::Worker;
use crate::domain::UnixMillis;
use crate::domain::{IdentifiedVisit, NewVisit};
use crate::store::StoreError;
use crate::store::relay::Relay;

/// One unit of work for the writer; each is atomic and committed before it is answered.
#[derive(Debug)]
pub enum WriteOp {
    /// Visits to record (one request's worth: 1 for `/visit`, up to 100 for `/bulk-visits`, a
    /// chunk for imports).
    Visits(Vec<NewVisit>),
    /// Bus events: each recorded unless its id is remembered (see `Store::record_events`).
    Events {
        events: Vec<IdentifiedVisit>,
        forget_before: UnixMillis,
    },
    /// `POST /visit/{page_id}`: one more visit on a per-page counter.
    CountPage(String, i64),
    /// `POST /domains`: pre-counted clicks per site at one time.
    Clicks {
        at: UnixMillis,
        clicks: Vec<(String, i64)>,
    },
    /// The salt of a day (days since the epoch) for `--ip-mode hashed` (see `super::salts`).
    Salt(i64),
}

impl WriteOp {
    /// The visits this op writes, for the batch cap.
    fn weight(&self) -> usize {
        match self {
            Self::Visits(v) => v.len(),
            Self::Events { events, .. } => events.len(),
            _ => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    Recorded(usize),
    /// Per event, in order: recorded (`true`) or a duplicate (`false`).
    Events(Vec<bool>),
    Counted(i64),
    ClicksAdded,
    Salt([u8; 16]),
}

/// How the writer answers a request: the outcome, or why nothing was written.
type Reply<T> = oneshot::Sender<Result<T, String>>;

/// A job's reply and what it is answered with.
type Ack = (
    Reply<(WriteOutcome, WriteOp)>,
    Result<(WriteOutcome, WriteOp), String>,
);

/// Answers a batch's replies, in order.
fn answer_each(acks: Vec<Ack>) {
    for (reply, answer) in acks {
        let _ = reply.send(answer);
    }
}

struct Job {
    op: WriteOp,
    /// Answered with the op itself beside its outcome: the submitter answers from what it
    /// stored without copying it first, and frees it on its own thread (memory allocated on
    /// one thread and freed on another is what glibc's allocator handles slowest).
    reply: Reply<(WriteOutcome, WriteOp)>,
}

enum Message {
    Job(Job),
    /// `DELETE /cleanup`: visits older than the cutoff go, with their share of every rollup.
    /// It runs alone, in its own two-file protocol, after what was queued before it.
    Cleanup(UnixMillis, Reply<u64>),
    /// Commit what is queued, then exit.
    Stop,
}

/// The submitting side of the writer; cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    sender: SyncSender<Message>,
    queued: Arc<AtomicI64>,
    /// Taken by the first [`Self::shutdown`]; dropped with the last handle otherwise.
    worker: Arc<Mutex<Option<Worker>>>,
}

impl std::fmt::Debug for WriterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterHandle")
            .field("queued", &self.queued.load(Ordering::Relaxed))
            .finish()
    }
}

impl WriterHandle {
    /// Starts the writer thread on `conn` (opened with [`super::open_writer`] on `db`), handing
    /// what it commits to `roller`. Called on a runtime, the writer delivers each batch's
    /// answers through a task on that runtime ([`Relay`]), so that runtime must keep
    /// being driven while requests are submitted; once it has shut down, the writer answers
    /// each request itself. The rare answers that wait for a roll-up, and cleanups, are sent
    /// directly from the thread that has them. `checkpointer` (on the same file) hears of every
    /// commit, and is stopped once the writer has made its last.
    pub fn spawn(
        conn: Connection,
        db: PathBuf,
        counters: Arc<CounterCache>,
        roller: RollerHandle,
        checkpointer: Checkpointer,
        queue_capacity: usize,
        max_batch: usize,
    ) -> anyhow::Result<Self> {
        let (sender, receiver) = sync_channel(queue_capacity.max(1));
        let queued = Arc::new(AtomicI64::new(0));
        let writer = Writer {
            metrics: WriterMetrics::new(),
            conn,
            db,
            ingest: Ingest::new(),
            counters,
            roller,
            checkpointer,
            late_pruned: 0,
            queued: queued.clone(),
            max_batch: max_batch.max(1),
            acks: Relay::start(),
        };
        let stop = sender.clone();
        let worker = Worker::spawn(
            "footfall-writer",
            move || writer.run(receiver),
            // A blocking send: if the queue is full, the writer is draining it and makes room.
            move || drop(stop.send(Message::Stop)),
        )?;
        Ok(Self {
            sender,
            queued,
            worker: Arc::new(Mutex::new(Some(worker))),
        })
    }

    /// Queues `op` and waits until it is committed. A full queue answers `Busy` at once.
    pub async fn submit(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        self.commit(op).await.map(|(outcome, _)| outcome)
    }

    /// Stores one visit and hands it back once it is committed.
    pub async fn record(&self, visit: NewVisit) -> Result<NewVisit, StoreError> {
        match self.commit(WriteOp::Visits(vec![visit])).await? {
            (_, WriteOp::Visits(mut visits)) if visits.len() == 1 => {
                Ok(visits.pop().expect("one visit"))
            }
            _ => unreachable!("the writer hands back the op it was given"),
        }
    }

    /// [`Self::submit`], handing the op back beside its outcome.
    async fn commit(&self, op: WriteOp) -> Result<(WriteOutcome, WriteOp), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Message::Job(Job { op, reply }), answer).await
    }

    /// Queues a cleanup of the visits older than `cutoff` and waits for it; answers how many
    /// visits it deleted.
    pub async fn cleanup(&self, cutoff: UnixMillis) -> Result<u64, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Message::Cleanup(cutoff, reply), answer).await
    }

    async fn send<T>(
        &self,
        message: Message,
        answer: oneshot::Receiver<Result<T, String>>,
    ) -> Result<T, StoreError> {
        match self.sender.try_send(message) {
            Ok(()) => {
                // The gauge is set from this count when /metrics is scraped, not per request.
                self.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => {
                metrics::counter!("footfall_write_queue_full_total").increment(1);
                return Err(StoreError::Busy);
            }
            Err(TrySendError::Disconnected(_)) => return Err(StoreError::ShuttingDown),
        }
        match answer.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(cause)) => Err(StoreError::Unavailable(cause)),
            // The writer exited without answering: it was stopping.
            Err(_) => Err(StoreError::ShuttingDown),
        }
    }

    /// Requests waiting for the writer right now.
    pub fn queue_depth(&self) -> i64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Makes the writer commit everything queued and exit, then the threads it owns; waits
    /// for all of them. Idempotent.
    pub fn shutdown(&self) {
        let worker = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(worker);
    }
}

/// The writer's metric handles, looked up once: a lookup per commit hashes and locks.
struct WriterMetrics {
    batch_visits: metrics::Histogram,
    commit_seconds: metrics::Histogram,
    visits_recorded: metrics::Counter,
}

impl WriterMetrics {
    /// Call after the metrics recorder is installed, or the handles record nowhere.
    fn new() -> Self {
        Self {
            batch_visits: metrics::histogram!("footfall_batch_visits"),
            commit_seconds: metrics::histogram!("footfall_commit_seconds"),
            visits_recorded: metrics::counter!("footfall_visits_recorded_total"),
        }
    }
}

struct Writer {
    metrics: WriterMetrics,
    conn: Connection,
    /// The visits file, to find its rollups file for a cleanup.
    db: PathBuf,
    ingest: Ingest,
    counters: Arc<CounterCache>,
    /// Dropped when the writer exits: its last roll-up counts the writer's last commit.
    roller: RollerHandle,
    /// Told of every commit; dropped (and so stopped) after the last.
    checkpointer: Checkpointer,
    /// `late_visits` rows up to this seq are deleted (with a later one of `roller.late_seq()`,
    /// the next transaction deletes more).
    late_pruned: i64,
    queued: Arc<AtomicI64>,
    max_batch: usize,
    acks: Relay,
}

/// What a job needs once its transaction is committed.
enum Answer {
    /// Answer now: queries already see it.
    Now(WriteOutcome),
    /// Answer after the roll-up that counts it.
    AfterRollUp(WriteOutcome),
}

impl Writer {
    fn run(mut self, receiver: Receiver<Message>) {
        let mut stopping = false;
        loop {
            // Block for the first op; once stopping, only take what is already queued.
            let first = if stopping {
                receiver.try_recv().ok()
            } else {
                receiver.recv().ok()
            };
            let Some(first) = first else { break };
            // Let the request threads that are runnable right now queue their visits before
            // the batch is cut: not a timer, just the rest of this time slice. Batches grow
            // when the CPUs are busy, and nothing waits when they are not.
            std::thread::yield_now();
            let mut jobs = Vec::new();
            let mut weight = 0;
            let mut cleanup = None;
            let mut next = Some(first);
            while let Some(message) = next {
                match message {
                    Message::Stop => stopping = true,
                    Message::Job(job) => {
                        weight += job.op.weight();
                        jobs.push(job);
                    }
                    // The batch ends here: what came before is committed first.
                    Message::Cleanup(cutoff, reply) => {
                        cleanup = Some((cutoff, reply));
                        break;
                    }
                }
                next = if weight < self.max_batch {
                    receiver.try_recv().ok()
                } else {
                    None
                };
            }
            let taken = jobs.len() + usize::from(cleanup.is_some());
            self.queued.fetch_sub(taken as i64, Ordering::Relaxed);
            self.commit_batch(jobs);
            if let Some((cutoff, reply)) = cleanup {
                self.cleanup(reply, cutoff);
            }
        }
        // The roll-up thread first: its last roll-up reads this file.
        drop(self.roller);
        drop(self.checkpointer);
        super::truncate_wal(&self.conn);
        tracing::info!("writer stopped: every queued write is committed");
    }

    /// Writes `jobs` in one transaction and answers each: all committed, or all failed.
    fn commit_batch(&mut self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        let started = Instant::now();
        let weight: usize = jobs.iter().map(|j| j.op.weight()).sum();
        // The late-visit log rows counted since the last deletion go with this transaction.
        let prune_late_to = Some(self.roller.late_seq()).filter(|&seq| seq > self.late_pruned);
        match self.write(&jobs, prune_late_to) {
            Ok(answers) => {
                if let Some(seq) = prune_late_to {
                    self.late_pruned = seq;
                }
                self.checkpointer.committed();
                self.metrics.batch_visits.record(weight as f64);
                self.metrics
                    .commit_seconds
                    .record(started.elapsed().as_secs_f64());
                let mut recorded = 0;
                let mut for_roll_up = 0;
                for answer in &answers {
                    let (Answer::Now(outcome) | Answer::AfterRollUp(outcome)) = answer;
                    match outcome {
                        WriteOutcome::Recorded(n) => {
                            recorded += n;
                            for_roll_up += n;
                        }
                        WriteOutcome::Events(new) => {
                            let n = new.iter().filter(|&&new| new).count();
                            recorded += n;
                            for_roll_up += n;
                        }
                        WriteOutcome::ClicksAdded => for_roll_up += 1,
                        _ => {}
                    }
                }
                self.metrics.visits_recorded.increment(recorded as u64);
                if for_roll_up > 0 {
                    self.roller.committed(for_roll_up);
                }
                let mut acks = Vec::with_capacity(jobs.len());
                for (Job { op, reply }, answer) in jobs.into_iter().zip(answers) {
                    match answer {
                        Answer::Now(outcome) => acks.push((reply, Ok((outcome, op)))),
                        Answer::AfterRollUp(outcome) => {
                            self.roller.after_next_roll_up(Box::new(move |counted| {
                                let _ = reply.send(counted.map(|()| (outcome, op)));
                            }));
                        }
                    }
                }
                if !acks.is_empty() {
                    self.acks.deliver(move || answer_each(acks));
                }
            }
            Err(err) => {
                self.ingest.rolled_back();
                tracing::error!(
                    error = format!("{err:#}"),
                    ops = jobs.len(),
                    "write batch failed"
                );
                let cause = format!("The database could not be written: {err}");
                let acks: Vec<Ack> = jobs
                    .into_iter()
                    .map(|job| (job.reply, Err(cause.clone())))
                    .collect();
                self.acks.deliver(move || answer_each(acks));
            }
        }
    }

    /// `DELETE /cleanup`: both steps of [`super::cleanup::run`], then the answer.
    fn cleanup(&mut self, reply: Reply<u64>, cutoff: UnixMillis) {
        let db = &self.db;
        let roller = &self.roller;
        let done = super::cleanup::run(
            &self.conn,
            cutoff,
            || Ok(super::rollups::read_progress(&super::open_reader(db)?)?),
            |cutoff| roller.take_out_before(cutoff).map_err(anyhow::Error::msg),
        );
        let answer = match done {
            Ok(deleted) => {
                self.checkpointer.committed();
                Ok(deleted)
            }
            Err(err) => {
                self.ingest.rolled_back();
                tracing::error!(error = format!("{err:#}"), "cleanup failed");
                Err(format!("The database could not be written: {err:#}"))
            }
        };
        let _ = reply.send(answer);
    }

    /// One transaction: `jobs`, and the deletion of the `late_visits` rows up to
    /// `prune_late_to`. Commits, then updates the counter cache.
    fn write(&mut self, jobs: &[Job], prune_late_to: Option<i64>) -> rusqlite::Result<Vec<Answer>> {
        let conn = &self.conn;
        // The counter-cache protocol costs two `data_version` reads and two locks: skip it when
        // there is no counter to write and none cached to carry across this commit.
        let track_counters = !self.counters.is_empty()
            || jobs.iter().any(|j| matches!(j.op, WriteOp::CountPage(..)));
        let ingest = &mut self.ingest;
        let counters = &self.counters;
        let (answers, counts, version_before) = super::immediate(conn, |conn| {
            write_ops(conn, ingest, counters, jobs, prune_late_to, track_counters)
        })?;
        if let Some(version_before) = version_before {
            let ingest = &self.ingest;
            self.counters.after_commit(version_before, &counts, || {
                ingest.foreign_commit_since_begin(conn)
            });
        }
        Ok(answers)
    }
}

/// What [`write_ops`] did: each op's answer, the counters it changed, and the counter cache's
/// version before the commit (when tracked).
type Written = (Vec<Answer>, Vec<(String, i64)>, Option<i64>);

/// The body of [`Writer::write`], inside its transaction.
fn write_ops(
    conn: &Connection,
    ingest: &mut Ingest,
    counters: &CounterCache,
    jobs: &[Job],
    prune_late_to: Option<i64>,
    track_counters: bool,
) -> rusqlite::Result<Written> {
    ingest.begin(conn)?;
    let version_before = if track_counters {
        Some(counters.version_before_commit()?)
    } else {
        None
    };
    if let Some(seq) = prune_late_to {
        super::ingest::prune_late(conn, seq)?;
    }
    let mut counts = Vec::new();
    let mut answers = Vec::with_capacity(jobs.len());
    for job in jobs {
        let answer = match &job.op {
            WriteOp::Visits(visits) => {
                let late_before = ingest.late_logged();
                for visit in visits {
                    ingest.add_visit(conn, visit)?;
                }
                let outcome = WriteOutcome::Recorded(visits.len());
                if ingest.late_logged() > late_before {
                    Answer::AfterRollUp(outcome)
                } else {
                    Answer::Now(outcome)
                }
            }
            WriteOp::Events {
                events,
                forget_before,
            } => {
                let late_before = ingest.late_logged();
                super::ingest::forget_event_ids(conn, *forget_before)?;
                let seen_at = crate::domain::now_millis();
                let mut recorded = Vec::with_capacity(events.len());
                for event in events {
                    let new = match &event.id {
                        Some(id) => super::ingest::remember_event_id(conn, id, seen_at)?,
                        None => true,
                    };
                    if new {
                        ingest.add_visit(conn, &event.visit)?;
                    }
                    recorded.push(new);
                }
                let outcome = WriteOutcome::Events(recorded);
                if ingest.late_logged() > late_before {
                    Answer::AfterRollUp(outcome)
                } else {
                    Answer::Now(outcome)
                }
            }
            WriteOp::CountPage(name, by) => {
                let n = count_page(conn, name, *by)?;
                counts.push((name.clone(), n));
                Answer::Now(WriteOutcome::Counted(n))
            }
            WriteOp::Clicks { at, clicks } => {
                for (site, n) in clicks {
                    ingest.add_clicks(conn, site, *at, *n)?;
                }
                Answer::AfterRollUp(WriteOutcome::ClicksAdded)
            }
            WriteOp::Salt(day) => {
                Answer::Now(WriteOutcome::Salt(super::salts::daily_salt(conn, *day)?))
            }
        };
        answers.push(answer);
    }
    Ok((answers, counts, version_before))
}
