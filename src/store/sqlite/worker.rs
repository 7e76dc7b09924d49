//! The engine's threads, started and stopped one way.
//!
//! Each thread of the SQLite engine (writer, roll-up, checkpoint) is a [`Worker`]: a named
//! thread and the one signal that tells it to finish. Dropping the worker sends the signal
//! and joins the thread, so no thread outlives what owns it, and the order of shutdown is the
//! order of ownership: [`super::SqliteStore::close`] drops the writer; the writer, once it has
//! committed everything queued, drops the checkpoint and roll-up workers it owns; the roll-up
//! thread's last roll-up then counts the writer's last commit.

use std::thread::JoinHandle;

/// A named thread, told to stop and joined when dropped.
pub struct Worker {
    name: &'static str,
    /// Tells the thread to finish: its shutdown signal.
    stop: Option<Box<dyn FnOnce() + Send>>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts `run` on a thread called `name`; `stop` is what makes `run` return.
    pub fn spawn(
        name: &'static str,
        run: impl FnOnce() + Send + 'static,
        stop: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<Self> {
        let thread = std::thread::Builder::new().name(name.into()).spawn(run)?;
        Ok(Self {
            name,
            stop: Some(Box::new(stop)),
            thread: Some(thread),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!(thread = self.name, "a footfall thread panicked");
        }
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("name", &self.name).finish()
    }
}
