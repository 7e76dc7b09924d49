//! Where log lines go: a shared buffer that one background thread writes out in batches.
//!
//! Request threads append whole lines to the buffer under a mutex (a copy of ~200 bytes) and
//! wake the writing thread only when the buffer goes from empty to non-empty; that thread waits
//! [`GATHER`] for more lines, then writes everything with one `write`. Under load that is one
//! wake-up and one system call per ~10 ms, not per line, and nothing allocates per line
//! (`tracing-appender`'s channel allocated each line, freed it on the log thread and woke that
//! thread for every few lines: with its formatting, ~5 µs of a `POST /visit`'s ~40).
//!
//! Lines are never interleaved (each is appended whole) and keep their order. When the output
//! cannot keep up and [`MAX_BUFFERED`] bytes are waiting, new lines are dropped, counted, and
//! the count is reported once the output catches up: requests are never slowed by logging.
//! [`LogGuard`] writes what is left when dropped (waiting at most [`FINAL_WRITE_WAIT`]).

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the writing thread lets lines gather after being woken: the most a line waits.
pub const GATHER: Duration = Duration::from_millis(10);
/// Bytes waiting to be written beyond which new lines are dropped (~5,000 request lines).
pub const MAX_BUFFERED: usize = 1 << 20;
/// How long dropping the [`LogGuard`] waits for the last lines to be written: an output that
/// blocks (a pipe nobody reads) must not keep the process from exiting.
pub const FINAL_WRITE_WAIT: Duration = Duration::from_secs(1);
/// Buffer capacity kept between batches; a burst's larger buffer is freed once it is written.
const KEPT_CAPACITY: usize = 64 * 1024;

#[derive(Default)]
struct State {
    lines: Vec<u8>,
    dropped: u64,
    stopping: bool,
    /// Set by the writing thread when it has written everything and returned.
    finished: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writing thread: lines arrived, or stop.
    wake: Condvar,
    /// Wakes the guard: the writing thread has finished.
    done: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves only bytes behind: still fine to write them.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The appending side; cheap to clone. Also a `tracing-subscriber` writer, so `tracing` events
/// and the hand-formatted request lines share one ordered stream.
#[derive(Clone)]
pub struct LogSink {
    shared: Arc<Shared>,
}

/// Keep alive while logging: dropping it stops the writing thread after it writes every line.
#[must_use = "dropping the guard stops the log output"]
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LogSink {
    /// Starts the thread that writes to `out`.
    pub fn start(out: impl Write + Send + 'static) -> std::io::Result<(Self, LogGuard)> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            done: Condvar::new(),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("footfall-log".into())
                .spawn(move || write_out(&shared, out))?
        };
        let guard = LogGuard {
            shared: shared.clone(),
            thread: Some(thread),
        };
        Ok((Self { shared }, guard))
    }

    /// Appends one or more whole lines (ending in `\n`), or counts them as dropped when the
    /// buffer is full.
    pub fn append(&self, lines: &[u8]) {
        let mut state = self.shared.lock();
        if state.lines.len() + lines.len() > MAX_BUFFERED {
            state.dropped += 1;
            return;
        }
        let was_empty = state.lines.is_empty();
        state.lines.extend_from_slice(lines);
        drop(state);
        if was_empty {
            self.shared.wake.notify_one();
        }
    }
}

/// The writing thread: sleeps until there is something to write, lets more gather, writes it
/// all, and reports dropped lines; on stop, writes the rest and returns.
fn write_out(shared: &Shared, mut out: impl Write) {
    let mut spare = Vec::new();
    loop {
        let mut state = shared.lock();
        while state.lines.is_empty() && !state.stopping {
            state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if !state.stopping {
            drop(state);
            std::thread::sleep(GATHER);
            state = shared.lock();
        }
        std::mem::swap(&mut state.lines, &mut spare);
        let dropped = std::mem::take(&mut state.dropped);
        let stopping = state.stopping && spare.is_empty();
        drop(state);
        // A failed write (stderr closed) loses these lines; there is nowhere to report it.
        let _ = out.write_all(&spare).and_then(|()| out.flush());
        if spare.capacity() > KEPT_CAPACITY {
            spare = Vec::new();
        } else {
            spare.clear();
        }
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "log lines dropped: the log output could not keep up"
            );
        }
        if stopping {
            shared.lock().finished = true;
            shared.done.notify_all();
            return;
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.stopping = true;
        self.shared.wake.notify_one();
        let (state, _) = self
            .shared
            .done
            .wait_timeout_while(state, FINAL_WRITE_WAIT, |s| !s.finished)
            .unwrap_or_else(|e| e.into_inner());
        let finished = state.finished;
        drop(state);
        if let Some(thread) = self.thread.take().filter(|_| finished) {
            let _ = thread.join();
        }
    }
}

/// One `tracing` event's output: `tracing-subscriber` formats an event whole and writes it with
/// one `write_all`, which becomes one [`LogSink::append`].
pub struct SinkWriter<'a>(&'a LogSink);

impl Write for SinkWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.append(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = SinkWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SinkWriter(self)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An output that keeps what it is given, shared with the test (also telemetry's tests).
    #[derive(Clone, Default)]
    pub(crate) struct Captured(pub(crate) Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_come_out_whole_and_in_order_and_the_guard_writes_the_rest() {
        let out = Captured::default();
        let (sink, guard) = LogSink::start(out.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        sink.append(format!("thread {t} line {i}\n").as_bytes());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4000);
        for t in 0..4 {
            let own: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with(&format!("thread {t} ")))
                .collect();
            let expected: Vec<String> = (0..1000).map(|i| format!("thread {t} line {i}")).collect();
            assert_eq!(own, expected, "thread {t}'s lines are whole and in order");
        }
    }

    #[test]
    fn an_output_that_never_takes_its_lines_does_not_keep_the_guard_waiting() {
        struct Blocked;
        impl Write for Blocked {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                std::thread::sleep(Duration::from_secs(3600));
                Ok(0)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (sink, guard) = LogSink::start(Blocked).unwrap();
        sink.append(b"never written\n");
        let started = std::time::Instant::now();
        drop(guard);
        let waited = started.elapsed();
        assert!(waited >= FINAL_WRITE_WAIT, "{waited:?}");
        assert!(waited < FINAL_WRITE_WAIT * 10, "{waited:?}");
    }

    #[test]
    fn a_line_is_written_soon_without_waiting_for_more() {
        let out = Captured::default();
        let (sink, _guard) = LogSink::start(out.clone()).unwrap();
        sink.append(b"one line\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while out.0.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(out.0.lock().unwrap().as_slice(), b"one line\n");
    }

    #[test]
    fn lines_beyond_the_buffer_are_dropped_and_counted_not_queued() {
        /// An output that blocks until the test lets it go: the buffer fills meanwhile.
        struct Stuck(Arc<(Mutex<bool>, Condvar)>, Captured);
        impl Write for Stuck {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                let (open, cv) = &*self.0;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = cv.wait(open).unwrap();
                }
                self.1.write(bytes)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let out = Captured::default();
        let (sink, guard) = LogSink::start(Stuck(gate.clone(), out.clone())).unwrap();
        sink.append(b"first\n");
        // Let the thread take "first" and block in the write.
        while !sink.shared.lock().lines.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let line = vec![b'x'; 1023];
        let line = [line.as_slice(), b"\n"].concat();
        for _ in 0..(MAX_BUFFERED / line.len() + 100) {
            sink.append(&line);
        }
        assert!(sink.shared.lock().lines.len() <= MAX_BUFFERED);
        assert_eq!(sink.shared.lock().dropped, 100);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(guard);
        let written = out.0.lock().unwrap().len();
        assert_eq!(
            written,
            b"first\n".len() + (MAX_BUFFERED / line.len()) * line.len()
        );
    }
}
