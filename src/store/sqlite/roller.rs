//! The roll-up thread: the only writer of the rollups file.
//!
//! Recording commits raw rows only (see [`super::writer`]); this thread counts them into the
//! rollups in bulk, on its own connection ([`super::open_rollups`]), while the writer goes on
//! committing: the two files have separate write locks, and WAL lets the roll-up read the visits
//! file during the writer's commits. It rolls the whole tail up when [`ROLL_UP_AT`] writes have
//! been committed since its last roll-up, and once no write has arrived for [`ROLL_UP_IDLE`].
//! Writes that queries may only see once rolled up (late visits, clicks) are answered from here,
//! after the roll-up that counted them ([`RollerHandle::after_next_roll_up`]). Cleanup's first
//! step runs here too ([`RollerHandle::take_out_before`]).
//!
//! Routine roll-ups run at idle CPU priority (`--roll-up-priority idle`, the default): on a
//! second thread, `footfall-idle-roll-up`, scheduled `SCHED_IDLE`, to which this thread hands
//! its connection for one roll-up and waits for it back. Nobody waits for a routine roll-up —
//! queries count the tail themselves — so it takes only CPU time that recording and queries
//! leave unused: the gaps while HTTP workers wait for a commit or the network, and the quiet
//! after a burst. At normal priority it competed with them for the two cores, and under load
//! every visit waited longer for its commit. What someone waits for runs on this thread, at
//! normal priority: a roll-up with waiters (late visits, clicks), cleanup's step, the last
//! roll-up at shutdown, and any roll-up of a tail of [`CATCH_UP_AT`] writes or more, so that
//! under sustained load, when no CPU time is left over, the tail still stays bounded. A second
//! thread because an unprivileged thread may lower its own priority but never raise it back.
//! A request that comes to wait for a roll-up while a routine one runs takes it over: the
//! routine roll-up is interrupted and done again here, at normal priority
//! (`IdleThread::roll_up`).

use std::mem;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::rollups::{self, RollUpHints, TakenOut};
use crate::config::RollUpPriority;
use crate::domain::UnixMillis;

/// Why a roll-up could not run: the idle thread panicked holding the rollups connection.
const LOST: &str = "the idle roll-up thread failed and took the rollups connection with it";

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
/// A tail at least this long is rolled up at normal priority even with nobody waiting for it:
/// under sustained load, idle priority would leave it to grow, and queries to add it up (each
/// query holds the tail in memory while it answers: ~96 bytes a visit).
pub const CATCH_UP_AT: usize = 2 * ROLL_UP_AT;
/// A routine roll-up that has run this long at idle priority while a request waits for a
/// roll-up is interrupted and done again at normal priority (see the module docs).
const HAND_OVER_AFTER: Duration = Duration::from_millis(200);
/// How often the roll-up thread looks for waiting requests while the idle thread rolls up.
const HAND_OVER_POLL: Duration = Duration::from_millis(20);
/// SQLite virtual-machine steps between two looks of an idle roll-up at `hand_over`: fewer than
/// the shortest statement of a roll-up runs, so that every statement looks.
const YIELD_CHECK_OPS: i32 = 8;

/// Called with the outcome of the roll-up that counted a write: answers its request.
pub type Waiter = Box<dyn FnOnce(Result<(), String>) + Send>;

type TakeOutReply = SyncSender<Result<TakenOut, String>>;

struct State {
    /// Writes committed since the last roll-up began: the tail, roughly.
    pending: usize,
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
    /// Set by the roll-up thread when the idle thread's roll-up should stop for a waiting
    /// request; taken by the first SQL statement that sees it (see [`IdleThread::roll_up`]).
    hand_over: AtomicBool,
    /// Roll-ups interrupted for a waiting request, counted by the roll-up that was.
    handed_over: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a request waits for the next roll-up (or the thread must stop).
    fn someone_waits(&self) -> bool {
        let state = self.lock();
        !state.waiters.is_empty() || state.take_out.is_some() || state.stop
    }
}

/// The handle the writer (and shutdown) uses; cheap to share behind an `Arc`.
pub struct RollerHandle {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for RollerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RollerHandle").finish_non_exhaustive()
    }
}

enum Work {
    /// `routine`: nobody waits for it, and the tail is below [`CATCH_UP_AT`].
    RollUp {
        routine: bool,
    },
    TakeOut(UnixMillis, TakeOutReply),
    Stop,
}

impl RollerHandle {
    /// Starts the thread on `conn` (opened with [`super::open_rollups`]). Whatever the visits
    /// file holds that the rollups do not (left by a crash, or by another process) is rolled up
    /// as soon as writes pause.
    pub fn spawn(conn: Connection, priority: RollUpPriority) -> anyhow::Result<Self> {
        let progress = rollups::read_progress(&conn)?;
        let outstanding = outstanding(&conn, &progress)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pending: outstanding,
                last_commit: Instant::now(),
                waiters: Vec::new(),
                take_out: None,
                stop: false,
            }),
            wake: Condvar::new(),
            late_seq: AtomicI64::new(progress.late_seq),
            hand_over: AtomicBool::new(false),
            handed_over: AtomicU64::new(0),
        });
        let executor = Executor {
            conn,
            hints: RollUpHints::default(),
            shared: shared.clone(),
        };
        let idle = match priority {
            RollUpPriority::Idle => Some(IdleThread::spawn()?),
            RollUpPriority::Normal => None,
        };
        let roller = Roller {
            executor: Some(executor),
            shared: shared.clone(),
            idle,
            seconds: metrics::histogram!("footfall_roll_up_seconds", "priority" => "normal"),
        };
        let thread = std::thread::Builder::new()
            .name("footfall-roll-up".into())
            .spawn(move || roller.run())?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
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

    /// Writes committed since the last roll-up began: roughly the tail queries add from the raw
    /// rows (for `/metrics`).
    pub fn pending(&self) -> usize {
        self.shared.lock().pending
    }

    /// Routine roll-ups interrupted so far for a waiting request, and done again at normal
    /// priority (for `/metrics` and tests).
    pub fn handed_over(&self) -> u64 {
        self.shared.handed_over.load(Ordering::Relaxed)
    }

    /// `late_visits` rows up to this seq are counted and can be deleted.
    pub fn late_seq(&self) -> i64 {
        self.shared.late_seq.load(Ordering::Relaxed)
    }

    /// Rolls up what is left, answers every waiter, and stops the thread; waits for it.
    /// Call after the writer has stopped. Idempotent.
    pub fn shutdown(&self) {
        let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if thread.join().is_err() {
            tracing::error!("the roll-up thread panicked");
        }
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

/// What a roll-up needs: the rollups connection and what carries over between roll-ups. Owned
/// by the roll-up thread, lent to the idle thread for a routine roll-up.
struct Executor {
    conn: Connection,
    hints: RollUpHints,
    shared: Arc<Shared>,
}

impl Executor {
    /// One roll-up of everything outstanding, timed into `seconds`. A failure only delays it:
    /// the raw rows are committed, and queries count the tail from them.
    fn roll_up(&mut self, seconds: &metrics::Histogram) -> Result<(), String> {
        let started = Instant::now();
        match self.hints.transaction(&self.conn, rollups::roll_up) {
            Ok(done) => {
                seconds.record(started.elapsed().as_secs_f64());
                self.shared.late_seq.store(done.late_seq, Ordering::Relaxed);
                Ok(())
            }
            Err(err) if is_interrupt(&err) => {
                self.shared.handed_over.fetch_add(1, Ordering::Relaxed);
                tracing::info!("a request waits for a roll-up: routine roll-up handed over");
                Err("interrupted to run at normal priority".into())
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

    /// [`Self::roll_up`], stopping early once `shared.hand_over` is set: a progress handler
    /// looks at it every [`YIELD_CHECK_OPS`] steps of SQLite's virtual machine and makes the
    /// statement running then fail as interrupted. (`sqlite3_interrupt` would not do: it only
    /// stops a statement already running, and a starved thread is most often preempted between
    /// statements, when the next one to start clears it.) The handler takes the flag, so the
    /// ROLLBACK that follows runs to its end.
    fn roll_up_yielding(&mut self, seconds: &metrics::Histogram) -> Result<(), String> {
        let shared = self.shared.clone();
        let handler = move || shared.hand_over.swap(false, Ordering::Relaxed);
        let installed = self.conn.progress_handler(YIELD_CHECK_OPS, Some(handler));
        let outcome = self.roll_up(seconds);
        if installed.is_ok() {
            let _ = self.conn.progress_handler(0, None::<fn() -> bool>);
        }
        outcome
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

type Lent = (Executor, Result<(), String>);

/// The `SCHED_IDLE` thread that runs routine roll-ups: it receives the [`Executor`], rolls up,
/// and sends it back with the outcome.
struct IdleThread {
    lend: SyncSender<Executor>,
    back: Receiver<Lent>,
    thread: JoinHandle<()>,
}

impl IdleThread {
    fn spawn() -> anyhow::Result<Self> {
        let (lend, lent) = sync_channel::<Executor>(1);
        let (give_back, back) = sync_channel::<Lent>(1);
        let (lowered, ready) = sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("footfall-idle-roll-up".into())
            .spawn(move || {
                lower_to_idle_priority();
                let _ = lowered.send(());
                let seconds = metrics::histogram!("footfall_roll_up_seconds", "priority" => "idle");
                for mut executor in lent {
                    let outcome = executor.roll_up_yielding(&seconds);
                    if give_back.send((executor, outcome)).is_err() {
                        break;
                    }
                }
            })?;
        // Started once its priority is set, so that nothing it runs runs at the wrong one.
        let _ = ready.recv();
        Ok(Self { lend, back, thread })
    }

    /// Lends the executor in `slot` to the idle thread for one roll-up and puts it back; leaves
    /// `slot` empty if that thread is gone (it panicked) with it.
    ///
    /// Meanwhile it looks every [`HAND_OVER_POLL`] for a request waiting for a roll-up (late
    /// visits, clicks, a cleanup, shutdown). Once one waits and the roll-up has run for
    /// [`HAND_OVER_AFTER`], it asks the roll-up to stop ([`Executor::roll_up_yielding`]): the
    /// transaction rolls back, the idle thread hands the connection back, and the caller rolls
    /// up again at normal priority — where other programs keep the cores busy, a roll-up at
    /// idle priority can take many seconds. A routine roll-up carries no waiters of its own, so
    /// a stopped one fails no request.
    fn roll_up(&self, slot: &mut Option<Executor>, shared: &Shared) -> Result<(), String> {
        let executor = slot.take().ok_or_else(|| LOST.to_owned())?;
        shared.hand_over.store(false, Ordering::Relaxed);
        let lent = self
            .lend
            .send(executor)
            .ok()
            .and_then(|()| self.take_back(shared));
        match lent {
            Some((executor, outcome)) => {
                *slot = Some(executor);
                outcome
            }
            None => {
                tracing::error!("{LOST}; queries go on adding the tail from the raw rows");
                Err(LOST.into())
            }
        }
    }

    /// Waits for the lent executor, asking for a hand-over as [`Self::roll_up`] says.
    fn take_back(&self, shared: &Shared) -> Option<Lent> {
        let started = Instant::now();
        loop {
            match self.back.recv_timeout(HAND_OVER_POLL) {
                Ok(lent) => return Some(lent),
                Err(RecvTimeoutError::Disconnected) => return None,
                Err(RecvTimeoutError::Timeout) => {
                    if started.elapsed() >= HAND_OVER_AFTER && shared.someone_waits() {
                        shared.hand_over.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

/// Makes the calling thread `SCHED_IDLE`; where that fails, it keeps its normal priority.
fn lower_to_idle_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
            set_thread_priority_and_policy, thread_native_id,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        match set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
            Ok(()) => tracing::debug!("routine roll-ups run at idle CPU priority"),
            Err(err) => tracing::warn!(
                error = ?err,
                "cannot lower the routine roll-ups' CPU priority; they run at normal priority"
            ),
        }
    }
    #[cfg(not(target_os = "linux"))]
    tracing::info!("idle CPU priority is Linux's; routine roll-ups run at normal priority");
}

/// Whether `err` is SQLite's answer to an interrupt (here: a progress handler's).
fn is_interrupt(err: &rusqlite::Error) -> bool {
    err.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted)
}

struct Roller {
    /// `None` only if the idle thread died holding it.
    executor: Option<Executor>,
    shared: Arc<Shared>,
    /// Where routine roll-ups run; `None`: on this thread (`--roll-up-priority normal`).
    idle: Option<IdleThread>,
    /// Times the roll-ups run on this thread.
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
            drop(state);
            let stop = matches!(work, Work::Stop);
            let counted = match (work, &self.idle) {
                (Work::RollUp { routine: true }, Some(idle)) => {
                    idle.roll_up(&mut self.executor, &self.shared)
                }
                (Work::RollUp { .. } | Work::Stop, _) => self
                    .executor
                    .as_mut()
                    .ok_or_else(|| LOST.to_owned())
                    .and_then(|executor| executor.roll_up(&self.seconds)),
                (Work::TakeOut(cutoff, reply), _) => match self.executor.as_mut() {
                    Some(executor) => executor.take_out(cutoff, reply),
                    None => {
                        let _ = reply.send(Err(LOST.into()));
                        Err(LOST.into())
                    }
                },
            };
            for waiter in waiters {
                waiter(counted.clone());
            }
            if stop {
                break;
            }
            state = self.shared.lock();
        }
        if let Some(idle) = self.idle.take() {
            drop(idle.lend);
            let _ = idle.thread.join();
        }
        tracing::info!("roll-up thread stopped: the rollups count every committed visit");
    }

    /// Waits until there is something to do: a cleanup, a stop, a waiter, a full tail, or a tail
    /// and [`ROLL_UP_IDLE`] without a commit.
    fn next_work<'a>(&self, mut state: MutexGuard<'a, State>) -> (MutexGuard<'a, State>, Work) {
        let wake = &self.shared.wake;
        loop {
            if let Some((cutoff, reply)) = state.take_out.take() {
                return (state, Work::TakeOut(cutoff, reply));
            }
            if state.stop {
                return (state, Work::Stop);
            }
            if !state.waiters.is_empty() || state.pending >= ROLL_UP_AT {
                let routine = state.waiters.is_empty() && state.pending < CATCH_UP_AT;
                return (state, Work::RollUp { routine });
            }
            state = if state.pending == 0 {
                wake.wait(state).unwrap_or_else(|e| e.into_inner())
            } else {
                let quiet = state.last_commit.elapsed();
                if quiet >= ROLL_UP_IDLE {
                    return (state, Work::RollUp { routine: true });
                }
                wake.wait_timeout(state, ROLL_UP_IDLE - quiet)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;
    use crate::domain::{PageUrl, now_millis};
    use crate::store::ingest::{Ingest, NewVisit, commit_visits};
    use crate::store::{open_rollups, open_writer, rollups_path};

    /// Held by each test that starts a roll-up thread: the tests count this process's idle
    /// roll-up threads, so no two may run at once.
    static ONE_ROLLER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn one_roller_at_a_time() -> std::sync::MutexGuard<'static, ()> {
        ONE_ROLLER_AT_A_TIME
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Linux's number for the `SCHED_IDLE` policy.
    #[cfg(target_os = "linux")]
    const SCHED_IDLE: u32 = 5;

    /// The scheduling policy of this process's threads named `comm` (as `/proc` shows names:
    /// cut to 15 bytes): field 41 of `/proc/self/task/TID/stat`.
    #[cfg(target_os = "linux")]
    fn policies_of(comm: &str) -> Vec<u32> {
        let mut policies = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let task = task.unwrap().path();
            let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
            if name.trim_end() != comm {
                continue;
            }
            let stat = std::fs::read_to_string(task.join("stat")).unwrap();
            // The fields after the name, which is in parentheses: field 3 is the first.
            let after_name = &stat[stat.rfind(')').unwrap() + 2..];
            let policy = after_name.split(' ').nth(41 - 3).unwrap();
            policies.push(policy.parse().unwrap());
        }
        policies
    }

    /// Routine roll-ups run on the `SCHED_IDLE` thread, one after another (each gives the
    /// connection back), and the roll-up at shutdown counts what came after them.
    #[test]
    fn routine_roll_ups_run_at_idle_priority_and_count_the_tail() {
        routine_roll_ups_count_the_tail(RollUpPriority::Idle);
    }

    /// The same with every roll-up on the roll-up thread itself.
    #[test]
    fn at_normal_priority_routine_roll_ups_count_the_tail_too() {
        routine_roll_ups_count_the_tail(RollUpPriority::Normal);
    }

    fn routine_roll_ups_count_the_tail(priority: RollUpPriority) {
        let _alone = one_roller_at_a_time();
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
        let roller = RollerHandle::spawn(rollups, priority).unwrap();
        #[cfg(target_os = "linux")]
        if priority == RollUpPriority::Idle {
            assert_eq!(policies_of("footfall-idle-r"), [SCHED_IDLE]);
        }

        for (batch, total) in [(3, 3), (4, 7)] {
            write(batch);
            roller.committed(batch);
            assert_eq!(counted_within_10s(total), total, "a quiet-time roll-up ran");
            assert_eq!(roller.pending(), 0);
        }
        write(2);
        roller.committed(2);
        roller.shutdown();
        assert_eq!(counted(), 9, "the last roll-up counted the rest");
        #[cfg(target_os = "linux")]
        assert!(
            policies_of("footfall-idle-r").is_empty(),
            "the idle thread stopped"
        );
    }

    /// A request that waits for a roll-up does not wait for a long routine one at idle
    /// priority: it is interrupted, rolled back, and done again at normal priority, and every
    /// visit is counted once. (Another connection holding the rollups' write lock stands in for
    /// the CPU an idle-priority thread does not get.)
    #[test]
    fn a_waiting_request_takes_the_roll_up_over_from_the_idle_thread() {
        let _alone = one_roller_at_a_time();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("v.db");
        let conns = open_writer(&db, Durability::Normal).unwrap();
        let mut ingest = Ingest::new();
        // A routine roll-up's worth, found by the roll-up thread when it starts.
        let tail = ROLL_UP_AT;
        let visits = (0..tail).map(|i| {
            let url = PageUrl::parse(&format!("https://a.com/{}", i % 5_000)).unwrap();
            let ip = std::net::IpAddr::from([10, 0, (i >> 8) as u8, i as u8]);
            NewVisit::pageview(url, ip, "UA".into(), now_millis())
        });
        commit_visits(&conns.raw, &mut ingest, visits);
        let rollups = open_rollups(&db, Durability::Normal).unwrap();
        let blocker = rusqlite::Connection::open(rollups_path(&db)).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let roller = RollerHandle::spawn(rollups, RollUpPriority::Idle).unwrap();
        // The idle thread now waits for the lock; a request starts waiting for a roll-up.
        std::thread::sleep(HAND_OVER_AFTER + Duration::from_millis(100));
        let (answer, answered) = sync_channel(1);
        roller.after_next_roll_up(Box::new(move |outcome| {
            let _ = answer.send(outcome);
        }));
        std::thread::sleep(Duration::from_millis(100));
        blocker.execute_batch("COMMIT").unwrap();
        let outcome = answered.recv_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(outcome, Ok(()));
        assert_eq!(
            roller.handed_over(),
            1,
            "the routine roll-up was interrupted"
        );
        let counted: i64 = conns
            .rollups
            .query_row("SELECT visits FROM totals", [], |r| r.get(0))
            .unwrap();
        assert_eq!(counted, tail as i64, "every visit counted once");
        assert!(rollups::check(&conns.rollups).unwrap().is_empty());
        roller.shutdown();
    }
}
