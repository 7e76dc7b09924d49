//! The visits file's background checkpointer: copies committed WAL frames into the database
//! file, and pays their fsyncs, on a thread of its own rather than the writer's.
//!
//! SQLite checkpoints a WAL file from the connection that commits past `wal_autocheckpoint`:
//! here the writer, which then stops committing while the checkpoint copies about a second of
//! frames and fsyncs the log and the database file (6–24 ms each on this machine). Every
//! request in flight waits for that commit: under `ingest.sh` those stalls made the 99th
//! percentile latency ~20–25 ms. This thread runs a `PASSIVE` checkpoint shortly after commits
//! — it never blocks the writer, and the writer never waits for it — so most frames are already
//! copied and synced when the writer's own auto-checkpoint comes due, and that one is short.
//! The writer's auto-checkpoint stays: only a checkpoint that finds every frame copied and no
//! writer between lets the next commit restart the log from its start, and without it the log
//! grows for as long as commits keep coming (~300 MB in one 8 s `ingest.sh` run).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::Connection;

use super::worker::Worker;
use crate::store::Durability;

/// Least time between two checkpoints: each one fsyncs both files, so under steady commits
/// they come at this pace rather than after every commit.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct Shared {
    /// Set by a commit, taken by the thread: there are frames to copy.
    dirty: AtomicBool,
    /// Guards the waits on `wake` (and holds the stop request).
    stop: Mutex<bool>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, bool> {
        self.stop.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The handle the writer owns: it reports each commit; dropped after the writer's last, it
/// stops the thread (after the checkpoint it may be running) and joins it.
#[derive(Debug)]
pub struct Checkpointer {
    shared: Arc<Shared>,
    _worker: Worker,
}

impl Checkpointer {
    /// Starts the thread on a connection of its own to the visits file `db` (which must exist).
    pub fn spawn(db: &Path, durability: Durability) -> anyhow::Result<Self> {
        let conn = super::open_wal(db, durability)?;
        let shared = Arc::new(Shared::default());
        let (running, stopping) = (shared.clone(), shared.clone());
        let worker = Worker::spawn(
            "footfall-checkpoint",
            move || run(&conn, &running),
            move || {
                *stopping.lock() = true;
                stopping.wake.notify_one();
            },
        )?;
        Ok(Self {
            shared,
            _worker: worker,
        })
    }

    /// Tells the thread that a commit added frames. Cheap when it already knows: one atomic swap.
    pub fn committed(&self) {
        if !self.shared.dirty.swap(true, Ordering::AcqRel) {
            // Under the lock, so the wake-up cannot fall between the thread's look at `dirty`
            // and its wait.
            let _stop = self.shared.lock();
            self.shared.wake.notify_one();
        }
    }
}

fn run(conn: &Connection, shared: &Shared) {
    loop {
        {
            let mut stop = shared.lock();
            while !*stop && !shared.dirty.load(Ordering::Acquire) {
                stop = shared.wake.wait(stop).unwrap_or_else(|e| e.into_inner());
            }
            if *stop {
                return;
            }
        }
        shared.dirty.store(false, Ordering::Release);
        checkpoint(conn);
        // The pause, cut short by a stop.
        let stop = shared.lock();
        let (stop, _) = shared
            .wake
            .wait_timeout_while(stop, CHECKPOINT_EVERY, |stop| !*stop)
            .unwrap_or_else(|e| e.into_inner());
        if *stop {
            return;
        }
    }
}

/// One `PASSIVE` checkpoint: copies what it can without waiting for anyone. A failure costs
/// nothing but this round (the writer's auto-checkpoint still bounds the log), so it is logged
/// and the next commit brings another.
fn checkpoint(conn: &Connection) {
    let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    match done {
        Ok((busy, log, copied)) => {
            tracing::trace!(busy, log, copied, "checkpoint");
            metrics::counter!("footfall_checkpoints_total").increment(1);
        }
        Err(err) => tracing::warn!(error = %err, "background checkpoint failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer's commits reach the database file through the thread, once it is told of
    /// them: the writer's own auto-checkpoint is off here, so nothing else copies them.
    #[test]
    fn copies_committed_frames_into_the_database_file_when_told() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("v.db");
        let conns = super::super::open_writer(&db, Durability::Normal).unwrap();
        conns
            .raw
            .pragma_update(None, "wal_autocheckpoint", 0)
            .unwrap();
        let checkpointer = Checkpointer::spawn(&db, Durability::Normal).unwrap();
        let size = || std::fs::metadata(&db).unwrap().len();
        // The schema is still only in the log: the file holds its first page.
        let before = size();
        std::thread::sleep(CHECKPOINT_EVERY * 3);
        assert_eq!(size(), before, "no checkpoint before a commit is reported");

        checkpointer.committed();
        let started = std::time::Instant::now();
        while size() == before && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            size() > before,
            "the reported commits reached the database file"
        );
        drop(checkpointer);
    }
}
