//! Where log lines go: a shared buffer that a thread of its own (`footfall-log`) writes to
//! stderr a few times a second.
//!
//! A request only appends its formatted line to the buffer under a short lock; it never waits
//! on a slow terminal or pipe, and nothing wakes another thread per line (a channel send per
//! line, as `tracing-appender` does, woke its writer thread for nearly every request and cost
//! about a tenth of `POST /visit` throughput on two cores). When stderr cannot keep up and
//! [`MAX_WAITING_BYTES`] are waiting, new lines are dropped and counted.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in the buffer before it is written.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// Most bytes waiting to be written; past this, lines are dropped (about 40,000 lines).
const MAX_WAITING_BYTES: usize = 8 << 20;

#[derive(Default)]
struct Shared {
    waiting: Mutex<Waiting>,
    wake: Condvar,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Waiting {
    bytes: Vec<u8>,
    closed: bool,
}

/// The `MakeWriter` handed to tracing-subscriber; cheap to clone.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Keeps the writing thread; dropping it writes what is waiting and joins the thread.
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Lines dropped so far because stderr could not keep up.
#[derive(Clone)]
pub struct DroppedLines(Arc<Shared>);

impl DroppedLines {
    pub fn get(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

/// Starts the writing thread over `out` (stderr in the server; anything in tests).
pub fn start(out: impl Write + Send + 'static) -> io::Result<(LogWriter, LogGuard, DroppedLines)> {
    let shared = Arc::new(Shared::default());
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("footfall-log".into())
            .spawn(move || write_loop(&shared, out))?
    };
    let writer = LogWriter {
        shared: shared.clone(),
    };
    let dropped = DroppedLines(shared.clone());
    let guard = LogGuard {
        shared,
        thread: Some(thread),
    };
    Ok((writer, guard, dropped))
}

fn write_loop(shared: &Shared, mut out: impl Write) {
    let mut batch = Vec::new();
    loop {
        // Lines gather for a while rather than waking this thread each; only closing wakes it.
        let closed = {
            let mut waiting = shared.waiting.lock().unwrap_or_else(|e| e.into_inner());
            if !waiting.closed {
                waiting = shared
                    .wake
                    .wait_timeout(waiting, FLUSH_EVERY)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            std::mem::swap(&mut batch, &mut waiting.bytes);
            waiting.closed
        };
        if !batch.is_empty() {
            // A failed write to stderr has nowhere to be reported; the lines are lost.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
        }
        if closed {
            return;
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Write for LogWriter {
    /// Takes one whole formatted line (tracing-subscriber writes each event in one call).
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut waiting = self
            .shared
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if waiting.closed || waiting.bytes.len() + line.len() > MAX_WAITING_BYTES {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            waiting.bytes.extend_from_slice(line);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` the test can read back after the guard is dropped.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_every_line_in_order_by_the_time_the_guard_is_dropped() {
        let sink = Sink::default();
        let (writer, guard, dropped) = start(sink.clone()).unwrap();
        let mut w = writer.make_writer();
        for i in 0..1000 {
            w.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert_eq!(lines[0], "line 0");
        assert_eq!(lines[999], "line 999");
        assert_eq!(dropped.get(), 0);
    }

    #[test]
    fn writes_lines_soon_without_a_shutdown() {
        let sink = Sink::default();
        let (writer, _guard, _) = start(sink.clone()).unwrap();
        writer.make_writer().write_all(b"hello\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while sink.0.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "line not written");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn drops_and_counts_lines_past_the_limit_when_the_output_is_stuck() {
        /// An output that blocks until released, like a pipe nobody reads.
        struct Stuck(Arc<(Mutex<bool>, Condvar)>);
        impl Write for Stuck {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                let (open, cv) = &*self.0;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = cv.wait(open).unwrap();
                }
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let (writer, guard, dropped) = start(Stuck(gate.clone())).unwrap();
        let mut w = writer.make_writer();
        let line = vec![b'x'; 1024];
        // The first line may already be in the stuck write; the rest fill the buffer.
        for _ in 0..(MAX_WAITING_BYTES / 1024 + 100) {
            w.write_all(&line).unwrap();
        }
        assert!(dropped.get() >= 99, "dropped {}", dropped.get());
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(guard);
    }
}
