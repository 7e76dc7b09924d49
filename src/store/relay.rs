//! Answers a writer's committed batch on the runtime that serves the requests, with one wake-up
//! ([decision 0001](../../docs/decisions/0001-ack-relay.md)).
//!
//! Answering a oneshot from a thread outside the serving runtime (the SQLite writer's thread,
//! the PostgreSQL store's own runtime) wakes its task from outside, and tokio's single-threaded
//! scheduler then writes its event fd to unpark the driver: one system call a request on the
//! writer, and one more wake-up of the HTTP thread's `epoll_wait`. Sent here, a batch wakes one
//! task on the serving runtime (none while that task is already scheduled), which answers each
//! request from inside it, where a wake-up only queues the task. The channel needs no bound:
//! what it holds is bounded by the writer's queue.

use tokio::runtime::Handle;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

/// A batch's answers, run on the serving runtime.
type Answers = Box<dyn FnOnce() + Send>;

/// A relay task on a runtime, or none: then the writer answers each request itself.
#[derive(Debug)]
pub struct Relay(Option<UnboundedSender<Answers>>);

impl Relay {
    /// A relay task on the current runtime; without one (a writer started outside any), the
    /// writer answers itself.
    pub fn start() -> Self {
        Self::on(Handle::try_current().ok())
    }

    /// A relay task on `runtime`, if any.
    fn on(runtime: Option<Handle>) -> Self {
        let Some(runtime) = runtime else {
            return Self(None);
        };
        let (sender, mut batches) = unbounded_channel::<Answers>();
        runtime.spawn(async move {
            while let Some(answer) = batches.recv().await {
                answer();
            }
        });
        Self(Some(sender))
    }

    /// Runs `answer` on the relay's runtime; without a relay, or once its runtime has shut
    /// down, runs it here.
    pub fn deliver(&self, answer: impl FnOnce() + Send + 'static) {
        let answer: Answers = Box::new(answer);
        match &self.0 {
            Some(relay) => {
                if let Err(unsent) = relay.send(answer) {
                    (unsent.0)();
                }
            }
            None => answer(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered_through(relay: &Relay) -> bool {
        let (reply, answer) = tokio::sync::oneshot::channel();
        relay.deliver(move || {
            let _ = reply.send(true);
        });
        answer.blocking_recv().unwrap_or(false)
    }

    #[test]
    fn answers_arrive_with_a_runtime_without_one_and_after_it_shut_down() {
        assert!(answered_through(&Relay::start()), "no runtime");

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let relay = Relay::on(Some(runtime.handle().clone()));
        assert!(answered_through(&relay), "on a running runtime");
        runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        assert!(answered_through(&relay), "after the runtime shut down");
    }
}
