//! Per-node group commit: the write requests queued on this node go into PostgreSQL in one
//! transaction per batch (the visits by binary `COPY`), and each is answered after the commit,
//! through one task on the serving runtime ([`Relay`]). The common batch, plain visits whose
//! every dimension the node has cached, is a bare `COPY` that is its own transaction
//! ([`copy_known`]).
//!
//! One writer task per node takes everything queued (up to `--max-batch`), commits it, answers
//! it, and takes again: what arrives during a commit is the next batch, so batches grow with the
//! load. (Tasks committing side by side split the queue into smaller batches, each paying a
//! transaction's fixed cost for fewer visits: docs/PERFORMANCE.md.) A full queue is
//! [`StoreError::Busy`] at once.
//! Visit ids are not chosen here: the `visits` id default draws them from the sequence inside
//! the `COPY` (see `roller.rs` for why that matters). Dimension ids (pages, sites, agents,
//! events, sources, devices) are looked up or inserted in the same transaction, in a fixed
//! order (see [`resolve`]); they are cached once committed, since a dimension row never changes
//! or goes away. A user agent's device is parsed only when the node has not seen the agent.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use super::error::{is_retryable, pool_error, store_error};
use super::writer_dims;
use crate::domain::{DEFAULT_EVENT, IdentifiedVisit, NewVisit, UnixMillis, now_millis};
use crate::store::relay::Relay;
use crate::store::{Result, StoreError};

/// Runs of a batch after a deadlock or serialization failure before giving up.
const RETRIES: usize = 5;
/// Dimension ids cached per kind at most; past it the cache starts over.
const MAX_CACHED: usize = 200_000;

/// One write request.
pub enum WriteOp {
    /// Visits, answered back once committed (all in one transaction).
    Visits {
        visits: Vec<NewVisit>,
        reply: oneshot::Sender<Result<Vec<NewVisit>>>,
    },
    /// `by` more visits of a per-page counter (1 for `POST /visit/{id}`); answered with its
    /// new count.
    Count {
        name: String,
        by: i64,
        reply: oneshot::Sender<Result<i64>>,
    },
    /// Pre-counted clicks per site at one instant.
    Clicks {
        at: UnixMillis,
        clicks: Vec<(String, i64)>,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Bus events: each recorded unless its id is remembered; answered with which were.
    Events {
        events: Vec<IdentifiedVisit>,
        forget_before: UnixMillis,
        reply: oneshot::Sender<Result<Vec<bool>>>,
    },
}

impl WriteOp {
    fn weight(&self) -> usize {
        match self {
            Self::Visits { visits, .. } => visits.len().max(1),
            Self::Count { .. } => 1,
            Self::Clicks { clicks, .. } => clicks.len().max(1),
            Self::Events { events, .. } => events.len().max(1),
        }
    }

    fn fail(self, err: impl Fn() -> StoreError) {
        match self {
            Self::Visits { reply, .. } => drop(reply.send(Err(err()))),
            Self::Count { reply, .. } => drop(reply.send(Err(err()))),
            Self::Clicks { reply, .. } => drop(reply.send(Err(err()))),
            Self::Events { reply, .. } => drop(reply.send(Err(err()))),
        }
    }
}

/// The ids of dimension values the node's writer has committed or seen committed.
#[derive(Debug, Default)]
struct Dims {
    sites: HashMap<String, i64>,
    pages: HashMap<String, i64>,
    agents: HashMap<String, i64>,
    events: HashMap<String, i64>,
    /// Sources and devices (API.md §12).
    more: writer_dims::Cache,
}

/// The node's write queue and its writer task.
#[derive(Debug)]
pub struct Writer {
    queue: std::sync::RwLock<Option<mpsc::Sender<WriteOp>>>,
    capacity: usize,
    task: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
}

impl Writer {
    /// Starts the writer task on the current runtime; it answers each committed batch through
    /// `answers` (on the runtime that serves the requests).
    pub fn spawn(pool: Pool, capacity: usize, max_batch: usize, answers: Relay) -> Self {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let task = tokio::spawn(run(pool, receiver, max_batch.max(1), answers));
        Self {
            queue: std::sync::RwLock::new(Some(sender)),
            capacity: capacity.max(1),
            task: Mutex::new(Some(task)),
            closed: AtomicBool::new(false),
        }
    }

    /// Queues `op`; a full queue is [`StoreError::Busy`], a closed one
    /// [`StoreError::ShuttingDown`].
    pub fn submit(&self, op: WriteOp) -> Result<()> {
        let queue = self.queue.read().unwrap_or_else(|e| e.into_inner());
        let Some(sender) = queue.as_ref() else {
            return Err(StoreError::ShuttingDown);
        };
        sender.try_send(op).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => {
                metrics::counter!("footfall_write_queue_full_total").increment(1);
                StoreError::Busy
            }
            mpsc::error::TrySendError::Closed(_) => StoreError::ShuttingDown,
        })
    }

    /// Requests waiting in the queue.
    pub fn queue_depth(&self) -> usize {
        let queue = self.queue.read().unwrap_or_else(|e| e.into_inner());
        queue
            .as_ref()
            .map_or(0, |s| self.capacity.saturating_sub(s.capacity()))
    }

    /// Stops taking work, commits what is queued and waits for the writer task.
    pub async fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.queue.write().unwrap_or_else(|e| e.into_inner()).take();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// The writer task: gathers a batch from the queue, commits it, answers it.
async fn run(pool: Pool, mut receiver: mpsc::Receiver<WriteOp>, max_batch: usize, answers: Relay) {
    let mut dims = Dims::default();
    let batch_visits = metrics::histogram!("footfall_batch_visits");
    let commit_seconds = metrics::histogram!("footfall_commit_seconds");
    let visits_recorded = metrics::counter!("footfall_visits_recorded_total");
    loop {
        let batch = {
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut weight = first.weight();
            let mut batch = vec![first];
            while weight < max_batch {
                match receiver.try_recv() {
                    Ok(op) => {
                        weight += op.weight();
                        batch.push(op);
                    }
                    Err(_) => break,
                }
            }
            batch
        };
        let started = Instant::now();
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            match commit(&pool, &mut dims, &batch).await {
                Err(Failure::Retry(err)) if attempt < RETRIES => {
                    tracing::debug!(error = %err, attempt, "retrying a batch");
                    tokio::time::sleep(Duration::from_millis(5 * attempt as u64)).await;
                }
                Err(Failure::Retry(err)) => break Err(store_error(err)),
                Err(Failure::Store(err)) => break Err(err),
                Ok(counts) => break Ok(counts),
            }
        };
        match outcome {
            Ok(mut committed) => {
                commit_seconds.record(started.elapsed().as_secs_f64());
                batch_visits.record(committed.visits as f64);
                visits_recorded.increment(committed.visits as u64);
                answers.deliver(move || answer(batch, &mut committed));
            }
            Err(err) => {
                if matches!(err, StoreError::Unavailable(_)) {
                    tracing::warn!(error = %err, "a batch was not committed");
                } else {
                    tracing::error!(error = format!("{err:#}"), "a batch was not committed");
                }
                // One error for everyone in the batch: nothing of it was committed.
                let text = err.to_string();
                let unavailable = matches!(err, StoreError::Unavailable(_));
                answers.deliver(move || {
                    for op in batch {
                        op.fail(|| {
                            if unavailable {
                                StoreError::Unavailable(text.clone())
                            } else {
                                StoreError::Internal(anyhow::anyhow!("{text}"))
                            }
                        });
                    }
                });
            }
        }
    }
}

/// What a committed batch answers.
struct Committed {
    /// Each counter's (value before the batch, value after).
    counts: HashMap<String, (i64, i64)>,
    /// For each `Events` op, in batch order: which of its events were recorded.
    recorded: std::vec::IntoIter<Vec<bool>>,
    /// Visits inserted.
    visits: usize,
}

/// Answers every op of a committed batch; counters get their values in queue order.
fn answer(batch: Vec<WriteOp>, committed: &mut Committed) {
    let counts = &mut committed.counts;
    for op in batch {
        match op {
            WriteOp::Visits { visits, reply } => drop(reply.send(Ok(visits))),
            WriteOp::Count { name, by, reply } => {
                // (the value before this op, final value)
                let value = counts.get_mut(&name).map_or(0, |(next, _)| {
                    *next += by;
                    *next
                });
                drop(reply.send(Ok(value)));
            }
            WriteOp::Clicks { reply, .. } => drop(reply.send(Ok(()))),
            WriteOp::Events { reply, .. } => {
                drop(reply.send(Ok(committed.recorded.next().unwrap_or_default())));
            }
        }
    }
}

/// Why a batch did not commit.
enum Failure {
    /// A deadlock or serialization failure: run it again.
    Retry(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(err: tokio_postgres::Error) -> Self {
        if is_retryable(&err) {
            Self::Retry(err)
        } else {
            Self::Store(store_error(err))
        }
    }
}

const COPY_VISITS: &str =
    "COPY visits (at, page_id, ip, agent_id, event_id, source_id, device_id) FROM STDIN BINARY";
const VISIT_TYPES: [Type; 7] = [
    Type::INT8,
    Type::INT8,
    Type::BYTEA,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT2,
];

/// Commits one batch in one transaction.
async fn commit(pool: &Pool, dims: &mut Dims, batch: &[WriteOp]) -> Result<Committed, Failure> {
    let mut client = pool
        .get()
        .await
        .map_err(|e| Failure::Store(pool_error(e)))?;
    if let Some(committed) = copy_known(&client, dims, batch).await? {
        return Ok(committed);
    }
    let tx = client.transaction().await?;
    let recorded = claim_event_ids(&tx, batch).await?;
    let mut visits: Vec<&NewVisit> = Vec::new();
    let mut events_recorded = recorded.iter();
    for op in batch {
        match op {
            WriteOp::Visits { visits: v, .. } => visits.extend(v),
            WriteOp::Events { events, .. } => {
                let new = events_recorded.next().map_or(&[][..], Vec::as_slice);
                visits.extend(
                    events
                        .iter()
                        .zip(new)
                        .filter(|(_, new)| **new)
                        .map(|(e, _)| &e.visit),
                );
            }
            _ => {}
        }
    }
    let clicks: Vec<(UnixMillis, &str, i64)> = batch
        .iter()
        .flat_map(|op| match op {
            WriteOp::Clicks { at, clicks, .. } => {
                clicks.iter().map(|(s, n)| (*at, s.as_str(), *n)).collect()
            }
            _ => Vec::new(),
        })
        .collect();
    let mut increments: HashMap<&str, i64> = HashMap::new();
    for op in batch {
        if let WriteOp::Count { name, by, .. } = op {
            *increments.entry(name.as_str()).or_default() += by;
        }
    }

    let (ids, learnt) = resolve(&tx, dims, &visits, &clicks).await?;
    if !visits.is_empty() {
        let rows: Vec<VisitRow> = visits
            .iter()
            .map(|v| VisitRow {
                at: v.at,
                page: ids.pages[v.url.as_str()],
                ip: v.ip.to_bytes(),
                agent: ids.agents[v.user_agent.as_str()],
                event: ids.events[v.event.as_ref()],
                source: ids.more.sources[&v.source],
                device: ids.more.agent_devices[v.user_agent.as_str()],
            })
            .collect();
        let copy = tx.prepare_cached(COPY_VISITS).await?;
        copy_rows(tx.copy_in(&copy).await?, rows).await?;
    }
    if !clicks.is_empty() {
        let (mut sites, mut minutes, mut events, mut counts) = (vec![], vec![], vec![], vec![]);
        for (at, site, n) in &clicks {
            sites.push(ids.sites[*site]);
            minutes.push(at.div_euclid(crate::domain::MINUTE_MS));
            events.push(ids.events[DEFAULT_EVENT]);
            counts.push(*n);
        }
        let stmt = tx
            .prepare_cached(
                "INSERT INTO clicks (site_id, minute, event_id, clicks)
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[])",
            )
            .await?;
        tx.execute(&stmt, &[&sites, &minutes, &events, &counts])
            .await?;
    }
    let mut counts = HashMap::new();
    if !increments.is_empty() {
        // In name order, so two nodes' batches lock shared counters in the same order.
        let mut sorted: Vec<(&str, i64)> = increments.into_iter().collect();
        sorted.sort_unstable();
        let (names, adds): (Vec<&str>, Vec<i64>) = sorted.into_iter().unzip();
        let stmt = tx
            .prepare_cached(
                "INSERT INTO page_counters (name, visits)
                 SELECT * FROM unnest($1::text[], $2::bigint[]) ORDER BY 1
                 ON CONFLICT (name) DO UPDATE SET visits = page_counters.visits + excluded.visits
                 RETURNING name, visits",
            )
            .await?;
        let added: HashMap<&str, i64> = names.iter().copied().zip(adds.iter().copied()).collect();
        for row in tx.query(&stmt, &[&names, &adds]).await? {
            let name: String = row.get(0);
            let value: i64 = row.get(1);
            let before = value - added.get(name.as_str()).copied().unwrap_or(0);
            counts.insert(name, (before, value));
        }
    }
    tx.commit().await?;
    remember(dims, learnt);
    Ok(Committed {
        counts,
        recorded: recorded.into_iter(),
        visits: visits.len(),
    })
}

/// One row of `visits`, its dimensions resolved.
struct VisitRow {
    at: UnixMillis,
    page: i64,
    ip: Vec<u8>,
    agent: i64,
    event: i64,
    source: i64,
    device: i16,
}

/// Writes `rows` through `sink` (a [`COPY_VISITS`]) and finishes it.
async fn copy_rows(
    sink: tokio_postgres::CopyInSink<bytes::Bytes>,
    rows: Vec<VisitRow>,
) -> Result<(), tokio_postgres::Error> {
    let writer = BinaryCopyInWriter::new(sink, &VISIT_TYPES);
    tokio::pin!(writer);
    for r in rows {
        let row: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
            &r.at, &r.page, &r.ip, &r.agent, &r.event, &r.source, &r.device,
        ];
        writer.as_mut().write(&row).await?;
    }
    writer.finish().await?;
    Ok(())
}

/// The common batch, plain visits whose every dimension the node has cached, in one `COPY`
/// that is its own transaction: two round trips (`BEGIN`, `COMMIT`) fewer than
/// [`commit`]'s. Answers `None`, having done nothing, for any other batch.
async fn copy_known(
    client: &deadpool_postgres::Client,
    dims: &Dims,
    batch: &[WriteOp],
) -> Result<Option<Committed>, Failure> {
    let mut rows = Vec::new();
    for op in batch {
        let WriteOp::Visits { visits, .. } = op else {
            return Ok(None);
        };
        for v in visits {
            let (Some(&page), Some(&agent), Some(&event), Some((source, device))) = (
                dims.pages.get(v.url.as_str()),
                dims.agents.get(v.user_agent.as_str()),
                dims.events.get(v.event.as_ref()),
                dims.more.ids_of(v),
            ) else {
                return Ok(None);
            };
            let ip = v.ip.to_bytes();
            rows.push(VisitRow {
                at: v.at,
                page,
                ip,
                agent,
                event,
                source,
                device,
            });
        }
    }
    let visits = rows.len();
    let copy = client.prepare_cached(COPY_VISITS).await?;
    copy_rows(client.copy_in(&copy).await?, rows).await?;
    Ok(Some(Committed {
        counts: HashMap::new(),
        recorded: Vec::new().into_iter(),
        visits,
    }))
}

/// Remembers the ids of the batch's bus events in `event_ids` and answers, for each `Events`
/// op in batch order, which of its events are new: those without an id, and the first of each
/// id that no committed transaction (of any node) has remembered yet. Ids remembered before
/// the ops' `forget_before` are forgotten first.
///
/// A second node inserting an id this transaction holds waits on the primary key until this
/// one commits and then inserts nothing, so across nodes each id is recorded once. Ids are
/// inserted in sorted order, so two batches sharing ids lock them in the same order.
async fn claim_event_ids(
    tx: &deadpool_postgres::Transaction<'_>,
    batch: &[WriteOp],
) -> Result<Vec<Vec<bool>>, Failure> {
    let mut forget_before: Option<UnixMillis> = None;
    let mut ids: Vec<&str> = Vec::new();
    for op in batch {
        if let WriteOp::Events {
            events,
            forget_before: before,
            ..
        } = op
        {
            // The earliest bound of the batch: forgetting less than asked is always safe.
            forget_before = Some(forget_before.map_or(*before, |b| b.min(*before)));
            ids.extend(
                events
                    .iter()
                    .filter_map(|e| e.id.as_ref().map(|id| id.as_str())),
            );
        }
    }
    let Some(forget_before) = forget_before else {
        return Ok(Vec::new());
    };
    let forget = tx
        .prepare_cached("DELETE FROM event_ids WHERE seen_at < $1")
        .await?;
    tx.execute(&forget, &[&forget_before]).await?;
    ids.sort_unstable();
    ids.dedup();
    let mut new: HashSet<String> = HashSet::new();
    if !ids.is_empty() {
        let claim = tx
            .prepare_cached(
                "INSERT INTO event_ids (id, seen_at)
                 SELECT id, $2 FROM unnest($1::text[]) AS u(id) ORDER BY id
                 ON CONFLICT (id) DO NOTHING RETURNING id",
            )
            .await?;
        for row in tx.query(&claim, &[&ids, &now_millis()]).await? {
            new.insert(row.get(0));
        }
    }
    let mut taken: HashSet<&str> = HashSet::new();
    Ok(batch
        .iter()
        .filter_map(|op| match op {
            WriteOp::Events { events, .. } => Some(
                events
                    .iter()
                    .map(|e| match &e.id {
                        None => true,
                        Some(id) => new.contains(id.as_str()) && taken.insert(id.as_str()),
                    })
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

/// The ids of every dimension value a batch names.
#[derive(Default)]
struct Ids {
    sites: HashMap<String, i64>,
    pages: HashMap<String, i64>,
    agents: HashMap<String, i64>,
    events: HashMap<String, i64>,
    more: writer_dims::BatchIds,
}

/// Looks up (or inserts) the ids of the batch's pages, sites, agents and events (then its
/// sources and devices, [`writer_dims`]): from the cache
/// when known, else with one insert-or-select statement per kind, inside the batch's
/// transaction (one commit for all). Each kind is inserted in sorted order and the kinds in a fixed order, so two
/// nodes' batches adding the same new values wait for each other rather than deadlock.
async fn resolve(
    client: &deadpool_postgres::Transaction<'_>,
    dims: &Dims,
    visits: &[&NewVisit],
    clicks: &[(UnixMillis, &str, i64)],
) -> Result<(Ids, NewIds), Failure> {
    let mut ids = Ids::default();
    let (mut want_pages, mut want_sites, mut want_agents, mut want_events) = (
        HashSet::new(),
        HashSet::new(),
        HashSet::new(),
        HashSet::new(),
    );
    {
        let look = |cache: &HashMap<String, i64>,
                    found: &mut HashMap<String, i64>,
                    want: &mut HashSet<String>,
                    key: &str| {
            if found.contains_key(key) {
                return;
            }
            match cache.get(key) {
                Some(&id) => {
                    found.insert(key.to_owned(), id);
                }
                None => {
                    if !want.contains(key) {
                        want.insert(key.to_owned());
                    }
                }
            }
        };
        for v in visits {
            look(&dims.pages, &mut ids.pages, &mut want_pages, v.url.as_str());
            look(
                &dims.agents,
                &mut ids.agents,
                &mut want_agents,
                &v.user_agent,
            );
            look(&dims.events, &mut ids.events, &mut want_events, &v.event);
        }
        if !clicks.is_empty() {
            look(
                &dims.events,
                &mut ids.events,
                &mut want_events,
                DEFAULT_EVENT,
            );
        }
        for (_, site, _) in clicks {
            look(&dims.sites, &mut ids.sites, &mut want_sites, site);
        }
    }
    // A new page needs its site's id first.
    let mut page_sites: HashMap<String, String> = HashMap::new();
    for v in visits {
        if want_pages.contains(v.url.as_str()) {
            page_sites.insert(v.url.as_str().to_owned(), v.url.site().to_owned());
        }
    }
    for site in page_sites.values() {
        if let Some(&id) = dims.sites.get(site) {
            ids.sites.insert(site.clone(), id);
        } else if !ids.sites.contains_key(site) {
            want_sites.insert(site.clone());
        }
    }
    // One kind after the other, always in this order (then pages, which need their sites'
    // ids). Pipelining the three was tried: a statement not yet prepared on one connection
    // reaches the server later than the next one, the order differs between two nodes' batches
    // adding the same new values, and they deadlock (seen at the start of the two-node run).
    let new_sites = fetch(client, "sites", "name", want_sites).await?;
    let new_agents = fetch(client, "agents", "ua", want_agents).await?;
    let new_events = fetch(client, "events", "name", want_events).await?;
    ids.sites
        .extend(new_sites.iter().map(|(k, v)| (k.clone(), *v)));
    let new_pages = if want_pages.is_empty() {
        HashMap::new()
    } else {
        let mut pairs: Vec<(String, i64)> = page_sites
            .iter()
            .map(|(url, site)| (url.clone(), ids.sites[site]))
            .collect();
        pairs.sort_unstable();
        let (urls, sites): (Vec<String>, Vec<i64>) = pairs.into_iter().unzip();
        let stmt = client
            .prepare_cached(
                "WITH v(url, site_id) AS (SELECT * FROM unnest($1::text[], $2::bigint[])),
                 ins AS (INSERT INTO pages (url, site_id) SELECT * FROM v ORDER BY 1
                         ON CONFLICT (url) DO NOTHING RETURNING url, id)
                 SELECT url, id FROM ins
                 UNION ALL SELECT p.url, p.id FROM pages p JOIN v ON p.url = v.url",
            )
            .await?;
        let rows = client.query(&stmt, &[&urls, &sites]).await?;
        complete(client, "pages", "url", &urls, rows).await?
    };
    ids.pages
        .extend(new_pages.iter().map(|(k, v)| (k.clone(), *v)));
    ids.agents
        .extend(new_agents.iter().map(|(k, v)| (k.clone(), *v)));
    ids.events
        .extend(new_events.iter().map(|(k, v)| (k.clone(), *v)));

    // Sources and devices last, always after the kinds above (the same fixed order on every
    // node).
    let mut parsed = dims.more.look(visits, &mut ids.more).parse();
    dims.more.look_devices(&mut parsed, &mut ids.more);
    let more = writer_dims::fetch(client, parsed, &mut ids.more).await?;

    Ok((
        ids,
        NewIds {
            named: [new_sites, new_pages, new_agents, new_events],
            more,
        },
    ))
}

/// Dimension ids a batch inserted or looked up.
struct NewIds {
    /// Sites, pages, agents, events.
    named: [HashMap<String, i64>; 4],
    /// Sources and devices.
    more: writer_dims::Learnt,
}

/// Caches the ids a committed batch learnt (only then: an id inserted by a batch that rolled
/// back does not exist).
fn remember(dims: &mut Dims, new: NewIds) {
    let [sites, pages, agents, events] = new.named;
    dims.more.learn(new.more);
    for (cache, new) in [
        (&mut dims.sites, sites),
        (&mut dims.pages, pages),
        (&mut dims.agents, agents),
        (&mut dims.events, events),
    ] {
        if cache.len() + new.len() > MAX_CACHED {
            cache.clear();
        }
        cache.extend(new);
    }
}

/// Inserts the missing values of a `(id, <column> UNIQUE)` dimension table and answers the ids
/// of all of `values`.
async fn fetch(
    client: &deadpool_postgres::Transaction<'_>,
    table: &str,
    column: &str,
    values: HashSet<String>,
) -> Result<HashMap<String, i64>, Failure> {
    if values.is_empty() {
        return Ok(HashMap::new());
    }
    let mut values: Vec<String> = values.into_iter().collect();
    values.sort_unstable();
    let insert = client
        .prepare_cached(&format!(
            "WITH v(val) AS (SELECT unnest($1::text[])),
             ins AS (INSERT INTO {table} ({column}) SELECT val FROM v ORDER BY 1
                     ON CONFLICT ({column}) DO NOTHING RETURNING {column}, id)
             SELECT {column}, id FROM ins
             UNION ALL SELECT t.{column}, t.id FROM {table} t JOIN v ON t.{column} = v.val"
        ))
        .await?;
    let rows = client.query(&insert, &[&values]).await?;
    complete(client, table, column, &values, rows).await
}

/// The ids an insert-or-select statement answered, completed: a value another transaction
/// inserted and committed while the statement ran is in neither half of its answer (its
/// snapshot predates it), so it is looked up again, in a new snapshot.
async fn complete(
    client: &deadpool_postgres::Transaction<'_>,
    table: &str,
    column: &str,
    values: &[String],
    rows: Vec<tokio_postgres::Row>,
) -> Result<HashMap<String, i64>, Failure> {
    let mut ids: HashMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    if ids.len() < values.len() {
        let missing: Vec<String> = values
            .iter()
            .filter(|v| !ids.contains_key(*v))
            .cloned()
            .collect();
        ids.extend(select_ids(client, table, column, &missing).await?);
    }
    Ok(ids)
}

async fn select_ids(
    client: &deadpool_postgres::Transaction<'_>,
    table: &str,
    column: &str,
    values: &[String],
) -> Result<HashMap<String, i64>, Failure> {
    let select = client
        .prepare_cached(&format!(
            "SELECT {column}, id FROM {table} WHERE {column} = ANY($1)"
        ))
        .await?;
    Ok(client
        .query(&select, &[&values])
        .await?
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}
