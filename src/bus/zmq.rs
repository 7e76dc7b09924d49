//! The ZeroMQ subscriber (`--zmq-sub tcp://host:port [--zmq-topic PREFIX]`): a SUB socket, as
//! the seed's aggregator used; the last frame of each message is the event.
//!
//! ZeroMQ PUB/SUB is **at most once**: a publisher drops messages while no subscriber is
//! connected (before footfall starts, while it reconnects) and when a subscriber falls behind
//! by more than its high-water mark; nothing is acknowledged or delivered again, and a crash
//! loses what was received and not yet committed. Use NATS JetStream where every event must
//! count. An event's `id` still makes a republished event count once.
//!
//! The socket reconnects by itself (the `zeromq` crate's backoff); connects and disconnects
//! are logged and shown on `/health`. What arrived together is committed in one call; while
//! the write queue is full the subscriber waits, and meanwhile the publisher's high-water mark
//! decides what is dropped.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use zeromq::{Socket, SocketEvent, SocketOptions, SocketRecv, SubSocket, ZmqMessage};

use super::{Backoff, Phase, Status, Stop};
use crate::domain::now_millis;
use crate::privacy::Privacy;
use crate::store::Store;

/// What `serve`'s ZeroMQ flags say.
#[derive(Debug, Clone)]
pub struct ZmqConfig {
    /// `tcp://host:port` of the publisher.
    pub endpoint: String,
    /// Topic prefix to subscribe to; empty for every message.
    pub topic: String,
    /// How long event ids are remembered.
    pub dedup_window: Duration,
    /// Which events are stored, and their visitors' form (API.md §12).
    pub privacy: Arc<Privacy>,
}

/// How long one connection attempt may take before it is retried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the subscriber until `stop` is set.
pub async fn run(config: ZmqConfig, store: Arc<Store>, status: Arc<Status>, mut stop: Stop) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    if let Some(socket) = connect(&config, &status, &mut stop, &mut backoff).await {
        receive(&config, socket, &store, &status, &mut stop, &mut backoff).await;
    }
    status.set(Phase::Stopped, None);
    tracing::info!(endpoint = %config.endpoint, "ZeroMQ subscriber stopped");
}

/// Connects and subscribes, retrying with `backoff` until it works or `stop` is set.
async fn connect(
    config: &ZmqConfig,
    status: &Arc<Status>,
    stop: &mut Stop,
    backoff: &mut Backoff,
) -> Option<SubSocket> {
    loop {
        status.set(Phase::Connecting, None);
        let mut options = SocketOptions::default();
        options.connect_timeout(CONNECT_TIMEOUT);
        let mut socket = SubSocket::with_options(options);
        watch_socket(socket.monitor(), status.clone(), config.endpoint.clone());
        let connected = tokio::select! {
            () = stop.wait() => return None,
            connected = socket.connect(&config.endpoint) => connected,
        };
        let subscribed = match connected {
            Ok(()) => socket.subscribe(&config.topic).await,
            Err(err) => Err(err),
        };
        match subscribed {
            Ok(()) => {
                status.set(Phase::Consuming, None);
                status.set_link(true);
                backoff.reset();
                tracing::info!(endpoint = %config.endpoint, topic = %config.topic, "subscribed to ZeroMQ");
                return Some(socket);
            }
            Err(err) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    endpoint = %config.endpoint,
                    error = %err,
                    retry_in_ms = delay.as_millis() as u64,
                    "cannot connect to the ZeroMQ publisher; retrying"
                );
                status.set(Phase::Disconnected, Some(err.to_string()));
                if !stop.sleep(delay).await {
                    return None;
                }
            }
        }
    }
}

/// Logs the socket's connects and disconnects and shows them in `status`; ends with the socket.
fn watch_socket(
    mut events: impl futures_util::Stream<Item = SocketEvent> + Send + Unpin + 'static,
    status: Arc<Status>,
    endpoint: String,
) {
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                SocketEvent::Disconnected(_) => {
                    status.set_link(false);
                    tracing::warn!(%endpoint, "ZeroMQ publisher went away; reconnecting");
                }
                SocketEvent::Connected(..) => {
                    status.set_link(true);
                    tracing::info!(%endpoint, "connected to the ZeroMQ publisher");
                }
                _ => {}
            }
        }
    });
}

/// Receives and commits until `stop` is set; what is received when it is set is committed first.
async fn receive(
    config: &ZmqConfig,
    mut socket: SubSocket,
    store: &Store,
    status: &Status,
    stop: &mut Stop,
    backoff: &mut Backoff,
) {
    loop {
        let first = tokio::select! {
            biased;
            () = stop.wait() => return,
            first = socket.recv() => first,
        };
        let mut received = match first {
            Ok(message) => vec![message],
            Err(err) => {
                // No publisher connected (the socket reconnects by itself): wait, not spin.
                let delay = backoff.next_delay();
                tracing::debug!(error = %err, "ZeroMQ receive failed");
                if !stop.sleep(delay).await {
                    return;
                }
                continue;
            }
        };
        backoff.reset();
        // What has already arrived joins the batch (a receive is a poll of the socket's
        // queue, so one not ready is dropped without losing anything).
        while received.len() < super::BATCH {
            match socket.recv().now_or_never() {
                Some(Ok(message)) => received.push(message),
                _ => break,
            }
        }
        commit(config, received, store, status, stop).await;
    }
}

async fn commit(
    config: &ZmqConfig,
    received: Vec<ZmqMessage>,
    store: &Store,
    status: &Status,
    stop: &mut Stop,
) {
    let now = now_millis();
    let events: Vec<_> = received
        .iter()
        .filter_map(|message| {
            let payload = message.iter().last().map_or(&[][..], |frame| &frame[..]);
            super::event::parse(payload, now)
                .map_err(|detail| super::reject("zmq", &detail))
                .ok()
        })
        .collect();
    if events.is_empty() {
        return;
    }
    // Nothing to keep alive: ZeroMQ has no acknowledgements.
    let committed = super::commit(
        store,
        &config.privacy,
        events,
        config.dedup_window,
        status,
        stop,
        &(),
    )
    .await;
    if committed.is_none() {
        tracing::warn!(
            endpoint = %config.endpoint,
            "stopping: ZeroMQ events received but not committed are lost (at most once)"
        );
    }
}
