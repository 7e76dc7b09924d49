//! The roll-up thread: the only writer of the rollups file.
//!
//! Recording commits raw rows only (see [`super::writer`]); this thread counts them into the
//! rollups in bulk, on its own connection ([`super::open_rollups`]), while the writer goes on
//! committing: the two files have separate write locks, and WAL lets the roll-up read the visits
//! file during the writer's commits. It rolls the whole tail up when [`ROLL_UP_AT`] writes have
//! been committed since its last roll-up, once no write has arrived for [`ROLL_UP_IDLE`], and
//! after a read once [`ROLL_UP_FOR_READS`] writes are waiting ([`RollUpBacklog::after_read`]).
//! Writes that queries may only see once rolled up (late visits, clicks) are answered from here,
//! after the roll-up that counted them ([`RollerHandle::after_next_roll_up`]). Cleanup's first
//! step runs here too ([`RollerHandle::take_out_before`]).

use std::mem;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::rollups::{self, RollUpHints, TakenOut};
use super::worker::Worker;
use crate::domain::UnixMillis;

/// Committed writes after which the tail is rolled up even under load: bounds the raw rows a
/// query adds. Large, because every roll-up rewrites the hot pages of the rollup tables, so
/// smaller, more frequent ones cost more per visit (measured: 1,000-visit roll-ups took
/// `POST /visit` from 34k to 20k requests/s when they ran on the writer; `writer_bench 600000
/// 10` puts a roll-up at 7.2–8.2 µs a visit at 20,000 and 5.1–5.3 at 50,000, where each of
/// its 20,000 pages sees two or three visits per roll-up instead of one). One roll-up chunk
/// (`ROLL_UP_CHUNK`): a longer tail is read in two, and gained nothing more in that benchmark.
pub const ROLL_UP_AT: usize = 50_000;
/// Quiet time after which the tail is rolled up, however short.
pub const ROLL_UP_IDLE: Duration = Duration::from_millis(25);
/// Committed writes after which a read asks for a roll-up. Every read re-reads the tail, and
/// the whole of it: while a dashboard reads during traffic, a shorter tail makes each read
/// cheaper than the extra roll-ups cost; recording alone keeps the larger, cheaper roll-ups.
pub const ROLL_UP_FOR_READS: usize = 2_000;
/// Called with the outcome of the roll-up that counted a write: answers its request.
pub type Waiter = Box<dyn FnOnce(Result<(), String>) + Send>;

type TakeOutReply = SyncSender<Result<TakenOut, String>>;

struct State {
    /// Writes committed since the last roll-up began: the tail, roughly.
    pending: usize,
    /// A read asked for a roll-up since the last one began.
    read: bool,
    last_commit: Instant,
    /// Answered after the next roll-up, which starts after they were added.
    waiters: Vec<Waiter>,
    take_out: Option<(UnixMillis, TakeOutReply)>,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// `progress.late_seq` after the last roll-up: `late_visits` rows up to it can go.
    late_seq: AtomicI64,
}

impl State {
    /// Why a roll-up is due now, without waiting for a quiet time: a waiter, a full tail, or a
    /// read's request (the `reason` of `footfall_roll_ups_total`).
    fn roll_up_due(&self) -> Option<&'static str> {
        if !self.waiters.is_empty() {
            Some("waiter")
        } else if self.pending >= ROLL_UP_AT {
            Some("full")
        } else if self.read {
            Some("read")
        } else {
            None
        }
    }
}

impl Shared {
    fn new(pending: usize, late_seq: i64) -> Self {
        Self {
            state: Mutex::new(State {
                pending,
                read: false,
                last_commit: Instant::now(),
                waiters: Vec::new(),
                take_out: None,
                stop: false,
            }),
            wake: Condvar::new(),
            late_seq: AtomicI64::new(late_seq),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The handle the writer owns. Dropped (after the writer's last commit), it makes the thread
/// roll up what is left, answer every waiter and stop, and joins it.
pub struct RollerHandle {
    shared: Arc<Shared>,
    _worker: Worker,
}

impl std::fmt::Debug for RollerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RollerHandle").finish_non_exhaustive()
    }
}

/// How far the roll-ups are behind, readable without the handle (for `/metrics`), and the
/// reads' way to ask for a roll-up ([`Self::after_read`]).
#[derive(Clone)]
pub struct RollUpBacklog(Arc<Shared>);

impl RollUpBacklog {
    /// Writes committed since the last roll-up began: roughly the tail queries add from the
    /// raw rows.
    pub fn writes(&self) -> usize {
        self.0.lock().pending
    }

    /// A read of the tail is done: roll it up now if it has grown past [`ROLL_UP_FOR_READS`],
    /// so that the next read finds it short.
    pub fn after_read(&self) {
        let mut state = self.0.lock();
        if !state.read && state.pending >= ROLL_UP_FOR_READS {
            state.read = true;
            self.0.wake.notify_one();
        }
    }
}

impl std::fmt::Debug for RollUpBacklog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RollUpBacklog")
            .field(&self.writes())
            .finish()
    }
}

enum Work {
    /// A roll-up, and why (see [`State::roll_up_due`]; also `idle`).
    RollUp(&'static str),
    TakeOut(UnixMillis, TakeOutReply),
    Stop,
}

impl RollerHandle {
    /// Starts the thread on `conn` (opened with [`super::open_rollups`]). Whatever the visits
    /// file holds that the rollups do not (left by a crash, or by another process) is rolled up
    /// as soon as writes pause.
    pub fn spawn(conn: Connection) -> anyhow::Result<Self> {
        let progress = rollups::read_progress(&conn)?;
        let outstanding = outstanding(&conn, &progress)?;
        let shared = Arc::new(Shared::new(outstanding, progress.late_seq));
        let roller = Roller {
            conn,
            hints: RollUpHints::default(),
            shared: shared.clone(),
            seconds: metrics::histogram!("footfall_roll_up_seconds"),
        };
        let stopping = shared.clone();
        let worker = Worker::spawn(
            "footfall-roll-up",
            move || roller.run(),
            move || {
                stopping.lock().stop = true;
                stopping.wake.notify_one();
            },
        )?;
        Ok(Self {
            shared,
            _worker: worker,
        })
    }

    /// A view of the backlog that outlives nothing.
    pub fn backlog(&self) -> RollUpBacklog {
        RollUpBacklog(self.shared.clone())
    }

    /// The writer committed `writes` visits or clicks.
    pub fn committed(&self, writes: usize) {
        let mut state = self.shared.lock();
        let before = state.pending;
        state.pending += writes;
        state.last_commit = Instant::now();
        // Wake the thread only when that changes what it waits for: from nothing to an idle
        // timer, or past the roll-up size. A notify is a system call; commits are thousands a
        // second.
        if before == 0 || (before < ROLL_UP_AT && state.pending >= ROLL_UP_AT) {
            self.shared.wake.notify_one();
        }
    }

    /// Calls `waiter` after the next roll-up (which counts everything committed before this
    /// call), with its outcome.
    pub fn after_next_roll_up(&self, waiter: Waiter) {
        let mut state = self.shared.lock();
        if state.stop {
            // The thread may have taken its last waiters already: never leave one unanswered.
            // (The writer stops first, so this does not happen in an orderly shutdown.)
            drop(state);
            waiter(Err("The server is shutting down".into()));
            return;
        }
        state.waiters.push(waiter);
        drop(state);
        self.shared.wake.notify_one();
    }

    /// Cleanup's step 1 (see `super::cleanup`): rolls up everything outstanding and takes every
    /// visit older than `cutoff` out of the rollups, in one transaction; waits for it.
    pub fn take_out_before(&self, cutoff: UnixMillis) -> Result<TakenOut, String> {
        let (reply, answer) = sync_channel(1);
        {
            let mut state = self.shared.lock();
            if state.stop {
                return Err("the roll-up thread is stopping".into());
            }
            state.take_out = Some((cutoff, reply));
        }
        self.shared.wake.notify_one();
        answer
            .recv()
            .unwrap_or_else(|_| Err("the roll-up thread stopped".into()))
    }

    /// `late_visits` rows up to this seq are counted and can be deleted.
    pub fn late_seq(&self) -> i64 {
        self.shared.late_seq.load(Ordering::Relaxed)
    }
}

/// Rows the visits file holds that the rollups, at `progress`, have not counted (on a rollups
/// connection).
pub(crate) fn outstanding(
    conn: &Connection,
    progress: &rollups::Progress,
) -> rusqlite::Result<usize> {
    let n: i64 = conn.query_row(
        "SELECT (SELECT count(*) FROM visits WHERE id >= ?1)
              + (SELECT count(*) FROM late_visits WHERE seq > ?2)
              + (SELECT count(*) FROM clicks WHERE seq > ?3)",
        [
            progress.rolled_up_to,
            progress.late_seq,
            progress.clicks_seq,
        ],
        |r| r.get(0),
    )?;
    Ok(n as usize)
}

/// The thread's side: the rollups connection and what carries over between roll-ups.
struct Roller {
    conn: Connection,
    hints: RollUpHints,
    shared: Arc<Shared>,
    seconds: metrics::Histogram,
}

impl Roller {
    fn run(mut self) {
        let mut state = self.shared.lock();
        loop {
            let work;
            (state, work) = self.next_work(state);
            let waiters = mem::take(&mut state.waiters);
            state.pending = 0;
            state.read = false;
            drop(state);
            let stop = matches!(work, Work::Stop);
            let counted = match work {
                Work::RollUp(reason) => self.roll_up(reason),
                Work::Stop => self.roll_up("stop"),
                Work::TakeOut(cutoff, reply) => self.take_out(cutoff, reply),
            };
            for waiter in waiters {
                waiter(counted.clone());
            }
            if stop {
                break;
            }
            state = self.shared.lock();
        }
        super::truncate_wal(&self.conn);
        tracing::info!("roll-up thread stopped: the rollups count every committed visit");
    }

    /// Waits until there is something to do: a cleanup, a stop, a waiter, a full tail, a read's
    /// request, or a tail and [`ROLL_UP_IDLE`] without a commit.
    fn next_work<'a>(&self, mut state: MutexGuard<'a, State>) -> (MutexGuard<'a, State>, Work) {
        let wake = &self.shared.wake;
        loop {
            if let Some((cutoff, reply)) = state.take_out.take() {
                return (state, Work::TakeOut(cutoff, reply));
            }
            if state.stop {
                return (state, Work::Stop);
            }
            if let Some(reason) = state.roll_up_due() {
                return (state, Work::RollUp(reason));
            }
            state = if state.pending == 0 {
                wake.wait(state).unwrap_or_else(|e| e.into_inner())
            } else {
                let quiet = state.last_commit.elapsed();
                if quiet >= ROLL_UP_IDLE {
                    return (state, Work::RollUp("idle"));
                }
                wake.wait_timeout(state, ROLL_UP_IDLE - quiet)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            };
        }
    }

    /// One roll-up of everything outstanding. A failure only delays it: the raw rows are
    /// committed, and queries count the tail from them.
    fn roll_up(&mut self, reason: &'static str) -> Result<(), String> {
        let started = Instant::now();
        match self.hints.transaction(&self.conn, rollups::roll_up) {
            Ok(done) => {
                self.seconds.record(started.elapsed().as_secs_f64());
                metrics::counter!("footfall_roll_ups_total", "reason" => reason).increment(1);
                self.shared.late_seq.store(done.late_seq, Ordering::Relaxed);
                Ok(())
            }
            Err(err) => {
                tracing::error!(
                    error = format!("{err:#}"),
                    "rolling up the tail failed; it is retried after the next write"
                );
                Err(format!("The rollups could not be written: {err}"))
            }
        }
    }

    /// Cleanup's step 1, in one transaction; answers `reply`.
    fn take_out(&mut self, cutoff: UnixMillis, reply: TakeOutReply) -> Result<(), String> {
        let taken = self
            .hints
            .transaction(&self.conn, |conn, hints| {
                rollups::take_out_before(conn, hints, cutoff)
            })
            .map_err(|err| format!("The rollups could not be written: {err}"));
        if let Ok(taken) = &taken {
            self.shared
                .late_seq
                .store(taken.late_seq, Ordering::Relaxed);
        }
        let counted = taken.as_ref().map(|_| ()).map_err(Clone::clone);
        let _ = reply.send(taken);
        counted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::NewVisit;
    use crate::domain::{PageUrl, now_millis};
    use crate::store::Durability;
    use crate::store::sqlite::ingest::{Ingest, commit_visits};
    use crate::store::sqlite::{open_rollups, open_writer};

    /// A read asks for a roll-up only once the tail has reached `ROLL_UP_FOR_READS`, and once
    /// per roll-up.
    #[test]
    fn a_read_asks_for_a_roll_up_of_a_long_tail() {
        let shared = Arc::new(Shared::new(ROLL_UP_FOR_READS - 1, 0));
        let backlog = RollUpBacklog(shared.clone());
        backlog.after_read();
        assert_eq!(shared.lock().roll_up_due(), None, "a short tail waits");
        shared.lock().pending += 1;
        assert_eq!(shared.lock().roll_up_due(), None, "until a read asks");
        backlog.after_read();
        assert_eq!(shared.lock().roll_up_due(), Some("read"));
    }

    /// Routine roll-ups run one after another, each after a quiet time, and the roll-up at
    /// shutdown counts what came after them.
    #[test]
    fn routine_roll_ups_count_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("v.db");
        let conns = open_writer(&db, Durability::Normal).unwrap();
        let mut ingest = Ingest::new();
        let mut write = |n: usize| {
            let visits = (0..n).map(|i| {
                let url = PageUrl::parse(&format!("https://a.com/{i}")).unwrap();
                NewVisit::pageview(url, "10.0.0.1".parse().unwrap(), "UA".into(), now_millis())
            });
            commit_visits(&conns.raw, &mut ingest, visits);
        };
        let counted = || -> i64 {
            conns
                .rollups
                .query_row("SELECT visits FROM totals", [], |r| r.get(0))
                .unwrap()
        };
        let counted_within_10s = |n: i64| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while counted() < n && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            counted()
        };
        let rollups = open_rollups(&db, Durability::Normal).unwrap();
        let roller = RollerHandle::spawn(rollups).unwrap();
        let backlog = roller.backlog();
        for (batch, total) in [(3, 3), (4, 7)] {
            write(batch);
            roller.committed(batch);
            assert_eq!(counted_within_10s(total), total, "a quiet-time roll-up ran");
            assert_eq!(backlog.writes(), 0);
        }
        write(2);
        roller.committed(2);
        drop(roller);
        assert_eq!(counted(), 9, "the last roll-up counted the rest");
    }
}
