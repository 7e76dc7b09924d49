//! Event-bus ingest (API.md §11): subscribers that take visits from NATS JetStream
//! ([`nats`]) or a ZeroMQ SUB socket ([`zmq`]) and record them through the [`Store`], as the
//! HTTP handlers do.
//!
//! What every subscriber shares lives here: the stop signal ([`Stop`]), the state `/health`
//! shows ([`Status`]), the registry the server joins before it closes the store ([`Buses`]),
//! and [`commit`], which waits out a full write queue (or an unavailable database) instead of
//! dropping events or handing them back to the bus in a loop. [`event`] parses one event.

pub mod event;
pub mod nats;
pub mod zmq;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::BusArgs;
use crate::domain::{IdentifiedVisit, MINUTE_MS, UnixMillis, now_millis};
use crate::privacy::Privacy;
use crate::store::{Store, StoreError};

/// Most events a subscriber hands the store in one call: what arrived together, up to this.
pub const BATCH: usize = 1_000;

/// Starts the subscribers `args` asks for, registering each in `buses`.
pub fn start(
    args: &BusArgs,
    store: &Arc<Store>,
    privacy: &Arc<Privacy>,
    buses: &Buses,
    stop: &Stop,
) {
    let window = Duration::from_secs(u64::from(args.bus_dedup_hours) * 3600);
    if let (Some(url), Some(subject)) = (&args.nats, &args.nats_subject) {
        let config = nats::NatsConfig {
            url: url.clone(),
            subject: subject.clone(),
            durable: args.nats_durable.clone(),
            ack_wait: Duration::from_secs(args.nats_ack_wait),
            dedup_window: window,
            privacy: privacy.clone(),
        };
        let status = Status::new("nats", subject.clone());
        let task = tokio::spawn(nats::run(
            config,
            store.clone(),
            status.clone(),
            stop.clone(),
        ));
        buses.register(status, task);
    }
    if let Some(endpoint) = &args.zmq_sub {
        let config = zmq::ZmqConfig {
            endpoint: endpoint.clone(),
            topic: args.zmq_topic.clone(),
            dedup_window: window,
            privacy: privacy.clone(),
        };
        let status = Status::new("zmq", endpoint.clone());
        let task = tokio::spawn(zmq::run(
            config,
            store.clone(),
            status.clone(),
            stop.clone(),
        ));
        buses.register(status, task);
    }
}

/// The sending side of the one stop signal every subscriber watches.
#[derive(Debug)]
pub struct StopSender(watch::Sender<bool>);

impl StopSender {
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

/// The stop signal as a subscriber holds it: cheap to clone; once set, stays set. A dropped
/// [`StopSender`] counts as set.
#[derive(Debug, Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// A new signal and its sender.
    pub fn channel() -> (StopSender, Self) {
        let (sender, receiver) = watch::channel(false);
        (StopSender(sender), Self(receiver))
    }

    /// Resolves once the signal is set.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }

    pub fn is_set(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }

    /// Sleeps `delay`, or less if the signal is set meanwhile; answers whether it is still
    /// unset (i.e. whether to go on).
    pub async fn sleep(&mut self, delay: Duration) -> bool {
        tokio::select! {
            () = self.wait() => false,
            () = tokio::time::sleep(delay) => !self.is_set(),
        }
    }
}

/// Where a subscriber is, as `/health` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connecting to the bus, or setting up its consumer.
    Connecting,
    /// Taking events.
    Consuming,
    /// The bus cannot be reached (or its consumer cannot be set up); retrying with backoff.
    Disconnected,
    /// Holding events the store cannot commit now (database unavailable); retrying.
    Stalled,
    /// Stopped (shutdown).
    Stopped,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Consuming => "consuming",
            Self::Disconnected => "disconnected",
            Self::Stalled => "stalled",
            Self::Stopped => "stopped",
        }
    }
}

/// One subscriber's state, shared between its task and `/health`.
#[derive(Debug)]
pub struct Status {
    /// `nats` or `zmq`: also the `bus` label of its metrics.
    pub bus: &'static str,
    /// What it consumes: the NATS subject, or the ZeroMQ endpoint.
    pub source: String,
    phase: Mutex<(Phase, Option<String>)>,
    /// Whether the client's connection is up, as the client library reports it between the
    /// subscriber's own phases (NATS reconnects by itself, under a running consumer).
    link_up: AtomicBool,
}

/// A [`Status`] read at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSnapshot {
    pub bus: &'static str,
    pub source: String,
    pub state: &'static str,
    /// Why it is not consuming, when it is not.
    pub detail: Option<String>,
}

impl Status {
    pub fn new(bus: &'static str, source: String) -> Arc<Self> {
        Arc::new(Self {
            bus,
            source,
            phase: Mutex::new((Phase::Connecting, None)),
            link_up: AtomicBool::new(true),
        })
    }

    pub fn set(&self, phase: Phase, detail: Option<String>) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = (phase, detail);
    }

    pub fn set_link(&self, up: bool) {
        self.link_up.store(up, Ordering::Relaxed);
    }

    pub fn phase(&self) -> Phase {
        self.phase.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    pub fn snapshot(&self) -> StatusSnapshot {
        let (phase, detail) = self.phase.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (state, detail) = if phase == Phase::Consuming && !self.link_up.load(Ordering::Relaxed)
        {
            (
                Phase::Disconnected.as_str(),
                Some("the connection was lost; reconnecting".to_owned()),
            )
        } else {
            (phase.as_str(), detail)
        };
        StatusSnapshot {
            bus: self.bus,
            source: self.source.clone(),
            state,
            detail,
        }
    }
}

/// A subscriber's state, and its task until [`Buses::join`] takes it.
type Subscriber = (Arc<Status>, Option<JoinHandle<()>>);

/// The subscribers of one server: their states for `/health`, their tasks to join on shutdown.
#[derive(Debug, Default)]
pub struct Buses {
    subscribers: Mutex<Vec<Subscriber>>,
}

impl Buses {
    pub fn register(&self, status: Arc<Status>, task: JoinHandle<()>) {
        self.lock().push((status, Some(task)));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every subscriber's state, in the order they were started.
    pub fn statuses(&self) -> Vec<StatusSnapshot> {
        self.lock().iter().map(|(s, _)| s.snapshot()).collect()
    }

    /// Waits for every subscriber to finish (after the stop signal: each commits and
    /// acknowledges what it holds, then returns). Call before the store is closed.
    pub async fn join(&self) {
        let tasks: Vec<_> = self
            .lock()
            .iter_mut()
            .filter_map(|(_, t)| t.take())
            .collect();
        for task in tasks {
            if let Err(err) = task.await {
                tracing::error!(error = %err, "a bus subscriber panicked");
            }
        }
    }
}

/// Doubling delays between retries, from `first` up to `max`.
#[derive(Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The delay to wait now; the next one is twice as long (up to the maximum).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// The oldest `seen_at` an event id keeps (see `Store::record_events`), for a dedup window.
pub fn forget_before(window: Duration) -> UnixMillis {
    let window = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    now_millis().saturating_sub(window.max(MINUTE_MS))
}

/// Counts events by bus and outcome (`recorded`, `duplicate`, `rejected`).
pub fn count_events(bus: &'static str, result: &'static str, n: usize) {
    if n > 0 {
        metrics::counter!("footfall_bus_events_total", "bus" => bus, "result" => result)
            .increment(n as u64);
    }
}

/// Logs and counts an event that cannot be recorded: the caller acknowledges it all the same,
/// so that a bad event is never redelivered forever.
pub fn reject(bus: &'static str, detail: &str) {
    tracing::warn!(bus, detail, "bus event rejected");
    count_events(bus, "rejected", 1);
}

/// What a subscriber does for the events it holds while [`commit`] waits.
pub trait KeepAlive: Sync {
    /// How long [`commit`] may wait before it calls [`Self::keep_alive`].
    fn every(&self) -> Duration;
    fn keep_alive(&self) -> impl Future<Output = ()> + Send;
}

/// Nothing to do (a bus without acknowledgements).
impl KeepAlive for () {
    fn every(&self) -> Duration {
        Duration::MAX
    }

    fn keep_alive(&self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }
}

/// Commits `events` through `store` and answers, per event, whether it was recorded (or was a
/// duplicate); `None` when footfall stopped before they could be committed (the caller then
/// leaves them unacknowledged, for the bus to deliver again).
///
/// A full write queue ([`StoreError::Busy`]) is waited out, with short doubling pauses, even
/// while stopping (the store stays open until every subscriber has returned, and its queue
/// drains). A database that cannot take the write is retried with longer pauses, the
/// subscriber showing `stalled` meanwhile, until it can or footfall stops. Every
/// `keep_alive.every()` of waiting, `keep_alive` runs (NATS: tell the server the messages are
/// still being worked on, so they are not redelivered elsewhere meanwhile).
pub async fn commit(
    store: &Store,
    privacy: &Privacy,
    events: Vec<IdentifiedVisit>,
    dedup_window: Duration,
    status: &Status,
    stop: &mut Stop,
    keep_alive: &impl KeepAlive,
) -> Option<Vec<bool>> {
    let mut busy = Backoff::new(Duration::from_millis(2), Duration::from_millis(200));
    let mut failing = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut kept_alive = Instant::now();
    let (events, kept) = screen(store, privacy, events, status, stop).await?;
    loop {
        let delay = match store
            .record_events(events.clone(), forget_before(dedup_window))
            .await
        {
            Ok(recorded) => {
                let mut recorded = recorded.into_iter();
                let recorded: Vec<bool> = kept
                    .iter()
                    .map(|&kept| kept && recorded.next().unwrap_or(false))
                    .collect();
                if status.phase() == Phase::Stalled {
                    tracing::info!(bus = status.bus, "the store takes events again");
                    status.set(Phase::Consuming, None);
                }
                let new = recorded.iter().filter(|&&new| new).count();
                let ignored = kept.iter().filter(|&&kept| !kept).count();
                count_events(status.bus, "recorded", new);
                count_events(status.bus, "ignored", ignored);
                count_events(status.bus, "duplicate", recorded.len() - new - ignored);
                return Some(recorded);
            }
            Err(StoreError::Busy) => {
                metrics::counter!("footfall_bus_busy_waits_total", "bus" => status.bus)
                    .increment(1);
                busy.next_delay()
            }
            Err(StoreError::ShuttingDown) => return None,
            Err(err) => {
                if stop.is_set() {
                    return None;
                }
                let delay = failing.next_delay();
                tracing::warn!(
                    bus = status.bus,
                    error = format!("{err:#}"),
                    retry_in_ms = delay.as_millis() as u64,
                    "the store cannot take events now; holding them"
                );
                status.set(Phase::Stalled, Some(format!("{err:#}")));
                delay
            }
        };
        if kept_alive.elapsed() >= keep_alive.every() {
            keep_alive.keep_alive().await;
            kept_alive = Instant::now();
        }
        if stop.is_set() {
            tokio::time::sleep(delay).await;
        } else {
            stop.sleep(delay).await;
        }
    }
}

/// Applies the privacy policy to `events`: the events to store (their visitors in stored
/// form), and per event in order whether it is among them (`false`: ignored). Waits out a
/// store that cannot give the day's salt (`--ip-mode hashed`); `None` when footfall stops
/// meanwhile.
async fn screen(
    store: &Store,
    privacy: &Privacy,
    events: Vec<IdentifiedVisit>,
    status: &Status,
    stop: &mut Stop,
) -> Option<(Vec<IdentifiedVisit>, Vec<bool>)> {
    let mut kept = Vec::with_capacity(events.len());
    let mut stored = Vec::with_capacity(events.len());
    let mut failing = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    for IdentifiedVisit { id, visit } in events {
        let screened = loop {
            match privacy.screen(store, visit.clone(), false).await {
                Ok(screened) => break screened,
                Err(err) => {
                    tracing::warn!(bus = status.bus, error = %err, "no salt for --ip-mode hashed");
                    if stop.is_set() || !stop.sleep(failing.next_delay()).await {
                        return None;
                    }
                }
            }
        };
        kept.push(screened.ignored.is_none());
        if screened.ignored.is_none() {
            stored.push(IdentifiedVisit {
                id,
                visit: screened.visit,
            });
        }
    }
    Some((stored, kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_maximum_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }

    #[tokio::test]
    async fn a_stop_signal_stays_set_and_cuts_sleeps_short() {
        let (sender, mut stop) = Stop::channel();
        assert!(!stop.is_set());
        assert!(stop.sleep(Duration::from_millis(1)).await);
        sender.stop();
        let started = Instant::now();
        assert!(!stop.sleep(Duration::from_secs(30)).await);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(stop.clone().is_set());
        drop(sender);
        let (sender, stop) = Stop::channel();
        drop(sender);
        assert!(stop.is_set(), "a dropped sender counts as stop");
    }
}
