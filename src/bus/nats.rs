//! The NATS JetStream subscriber (`--nats URL --nats-subject S`): a durable pull consumer whose
//! messages are acknowledged only once their visits are committed.
//!
//! - **At least once, counted once.** A message is acknowledged after the store committed its
//!   visit; a crash before that means JetStream delivers it again (after the consumer's
//!   AckWait), to this node or another on the same durable consumer. Its id — the event's own
//!   `id`, or else one derived from the stream and the message's sequence in it — is committed
//!   with the visit, so the delivery after a crash between commit and acknowledgement is
//!   recognised and skipped (`Store::record_events`).
//! - **Batches.** What the client has received when the subscriber looks (up to
//!   [`super::BATCH`]) is committed in one call, then acknowledged.
//! - **Backpressure.** A full write queue is waited out while the messages are held (and
//!   reported in progress to the server), never nacked: see [`super::commit`].
//! - **Reconnects.** The NATS client reconnects by itself, with its own backoff; when the
//!   consumer itself fails (no stream for the subject yet, the consumer deleted), the
//!   subscriber sets it up again with doubling pauses. Every change is logged and shown on
//!   `/health`.
//! - **Stop.** On the stop signal the subscriber takes no more messages, commits and
//!   acknowledges what it holds, flushes the acknowledgements and returns. Messages the client
//!   had received but not handed over are delivered again after AckWait.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::{Config as PullConfig, MessagesErrorKind};
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer};
use async_nats::jetstream::{self, AckKind, Message};
use futures_util::StreamExt;

use super::{Backoff, Phase, Status, Stop};
use crate::domain::{EventId, IdentifiedVisit, now_millis};
use crate::privacy::Privacy;
use crate::store::Store;

/// What `serve`'s NATS flags say.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// Server URL, e.g. `nats://127.0.0.1:4222` (may hold credentials: never logged).
    pub url: String,
    /// Subject filter of the consumer, e.g. `visits.>`: a JetStream stream must hold it.
    pub subject: String,
    /// Durable consumer name, shared by every footfall node that consumes the subject.
    pub durable: String,
    /// How long the server waits for an acknowledgement before delivering a message again
    /// (set when footfall creates the consumer).
    pub ack_wait: Duration,
    /// How long event ids are remembered (see docs/OPERATIONS.md).
    pub dedup_window: Duration,
    /// Which events are stored, and their visitors' form (API.md §12).
    pub privacy: Arc<Privacy>,
}

/// Most messages the server may have delivered to one consumer and not had acknowledged:
/// room for a few batches in flight on each of several nodes.
const MAX_ACK_PENDING: i64 = 20_000;

/// The server's heartbeat on an idle pull: a silent server is noticed within two of these.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// Runs the subscriber until `stop` is set.
pub async fn run(config: NatsConfig, store: Arc<Store>, status: Arc<Status>, mut stop: Stop) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    let Some(client) = connect(&config, &status, &mut stop, &mut backoff).await else {
        status.set(Phase::Stopped, None);
        return;
    };
    loop {
        status.set(Phase::Connecting, None);
        match consume(&config, &client, &store, &status, &mut stop, &mut backoff).await {
            Ok(()) => break,
            Err(err) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    subject = %config.subject,
                    error = format!("{err:#}"),
                    retry_in_ms = delay.as_millis() as u64,
                    "NATS consumer failed; setting it up again"
                );
                status.set(Phase::Disconnected, Some(format!("{err:#}")));
                if !stop.sleep(delay).await {
                    break;
                }
            }
        }
    }
    // The acknowledgements of the last batch are queued in the client: send them before the
    // connection goes with it.
    if let Err(err) = client.flush().await {
        tracing::warn!(error = %err, "could not flush the last NATS acknowledgements");
    }
    status.set(Phase::Stopped, None);
    tracing::info!(subject = %config.subject, "NATS subscriber stopped");
}

/// Connects, retrying with `backoff` until it works or `stop` is set. Once connected, the
/// client reconnects by itself; its events are logged and shown in `status`.
async fn connect(
    config: &NatsConfig,
    status: &Arc<Status>,
    stop: &mut Stop,
    backoff: &mut Backoff,
) -> Option<async_nats::Client> {
    loop {
        status.set(Phase::Connecting, None);
        let events = status.clone();
        let connecting = connect_options(&config.url)
            .name("footfall")
            .event_callback(move |event| {
                let status = events.clone();
                async move { on_client_event(&status, event) }
            })
            .connect(config.url.as_str());
        let outcome = tokio::select! {
            () = stop.wait() => return None,
            outcome = connecting => outcome,
        };
        match outcome {
            Ok(client) => {
                status.set_link(true);
                tracing::info!(subject = %config.subject, "connected to NATS");
                return Some(client);
            }
            Err(err) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    error = %err,
                    retry_in_ms = delay.as_millis() as u64,
                    "cannot connect to NATS; retrying"
                );
                status.set(Phase::Disconnected, Some(err.to_string()));
                if !stop.sleep(delay).await {
                    return None;
                }
            }
        }
    }
}

/// Connect options with the user and password (or token) of `url`, if it has them: the client
/// does not read them from the URL itself.
pub fn connect_options(url: &str) -> async_nats::ConnectOptions {
    let options = async_nats::ConnectOptions::new();
    let Ok(url) = url::Url::parse(url) else {
        return options;
    };
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map_or_else(String::new, |(_, v)| v.into_owned())
    };
    match (url.username(), url.password()) {
        ("", _) => options,
        (user, Some(password)) => options.user_and_password(decode(user), decode(password)),
        (token, None) => options.token(decode(token)),
    }
}

fn on_client_event(status: &Status, event: async_nats::Event) {
    use async_nats::Event;
    match event {
        Event::Disconnected => {
            status.set_link(false);
            tracing::warn!("connection to NATS lost; reconnecting");
        }
        Event::Connected => {
            status.set_link(true);
            tracing::info!("reconnected to NATS");
        }
        other => tracing::info!(event = %other, "NATS client event"),
    }
}

/// Sets up the durable consumer and commits its messages until `stop` is set (`Ok`) or the
/// consumer fails (`Err`: the caller sets it up again).
async fn consume(
    config: &NatsConfig,
    client: &async_nats::Client,
    store: &Store,
    status: &Status,
    stop: &mut Stop,
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    let js = jetstream::new(client.clone());
    let stream_name = js
        .stream_by_subject(config.subject.as_str())
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "no JetStream stream holds the subject {} ({e})",
                config.subject
            )
        })?;
    let stream = js.get_stream(&stream_name).await?;
    // A stream deleted and created again starts its sequences over: its creation time keeps
    // the derived ids of the new one apart from the old one's.
    let created = stream.cached_info().created.unix_timestamp_nanos();
    let consumer: PullConsumer = stream
        .get_or_create_consumer(
            &config.durable,
            PullConfig {
                durable_name: Some(config.durable.clone()),
                filter_subject: config.subject.clone(),
                ack_policy: AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                max_ack_pending: MAX_ACK_PENDING,
                ..Default::default()
            },
        )
        .await?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(super::BATCH)
        .heartbeat(HEARTBEAT)
        .messages()
        .await?;
    let mut batches = messages.ready_chunks(super::BATCH);
    status.set(Phase::Consuming, None);
    backoff.reset();
    tracing::info!(
        subject = %config.subject,
        stream = %stream_name,
        durable = %config.durable,
        "consuming from NATS JetStream"
    );
    let batch = Batch {
        config,
        store,
        status,
        id_prefix: format!("nats:{stream_name}:{created}:"),
    };
    loop {
        let received = tokio::select! {
            biased;
            () = stop.wait() => return Ok(()),
            received = batches.next() => received,
        };
        let Some(received) = received else {
            anyhow::bail!("the consumer's message stream ended");
        };
        let mut messages = Vec::with_capacity(received.len());
        let mut failed = None;
        for item in received {
            match item {
                Ok(message) => messages.push(message),
                Err(err) => match err.kind() {
                    // Passing trouble (the server went quiet, a pull failed): the client
                    // reconnects and pulls again by itself.
                    MessagesErrorKind::MissingHeartbeat
                    | MessagesErrorKind::Pull
                    | MessagesErrorKind::NoResponders
                    | MessagesErrorKind::Other => {
                        tracing::warn!(error = %err, "NATS consumer trouble; going on");
                    }
                    _ => failed = Some(err),
                },
            }
        }
        if !batch.commit_and_ack(messages, stop).await {
            return Ok(());
        }
        if let Some(err) = failed {
            return Err(err.into());
        }
    }
}

/// What committing one batch of messages needs.
struct Batch<'a> {
    config: &'a NatsConfig,
    store: &'a Store,
    status: &'a Status,
    /// The derived id of a message without its own is this and its stream sequence.
    id_prefix: String,
}

impl Batch<'_> {
    /// Parses `messages`, commits their visits and acknowledges them all (bad ones too: they
    /// would only come back). Answers `false` when footfall stopped before the commit: nothing
    /// is acknowledged then, and the server delivers the messages again.
    async fn commit_and_ack(&self, messages: Vec<Message>, stop: &mut Stop) -> bool {
        let now = now_millis();
        let mut events = Vec::with_capacity(messages.len());
        let mut carriers = Vec::with_capacity(messages.len());
        for message in messages {
            match super::event::parse(&message.payload, now) {
                Ok(event) => {
                    events.push(self.with_id(event, &message));
                    carriers.push(message);
                }
                Err(detail) => {
                    super::reject("nats", &detail);
                    ack(&message, AckKind::Ack).await;
                }
            }
        }
        if events.is_empty() {
            return true;
        }
        let committed = super::commit(
            self.store,
            &self.config.privacy,
            events,
            self.config.dedup_window,
            self.status,
            stop,
            &InProgress {
                messages: &carriers,
                every: self.config.ack_wait / 3,
            },
        )
        .await;
        if committed.is_none() {
            return false;
        }
        for message in &carriers {
            ack(message, AckKind::Ack).await;
        }
        true
    }

    /// `event` with the message's own place in its stream as its id when it carries none, so
    /// a redelivery of the same message is recognised.
    fn with_id(&self, mut event: IdentifiedVisit, message: &Message) -> IdentifiedVisit {
        if event.id.is_none()
            && let Ok(info) = message.info()
        {
            event.id = Some(EventId::derived(format!(
                "{}{}",
                self.id_prefix, info.stream_sequence
            )));
        }
        event
    }
}

/// Messages whose commit waits: reported in progress, which restarts their AckWait, so the
/// server does not deliver them to another node meanwhile.
struct InProgress<'a> {
    messages: &'a [Message],
    every: Duration,
}

impl super::KeepAlive for InProgress<'_> {
    fn every(&self) -> Duration {
        self.every
    }

    async fn keep_alive(&self) {
        for message in self.messages {
            ack(message, AckKind::Progress).await;
        }
    }
}

/// Sends an acknowledgement. One that is lost costs a redelivery, which the id then skips:
/// worth a debug line, not more.
async fn ack(message: &Message, kind: AckKind) {
    if let Err(err) = message.ack_with(kind).await {
        tracing::debug!(error = %err, "NATS acknowledgement not sent");
    }
}
