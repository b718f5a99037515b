//! The consumer loop: the only code that talks to the broker. It gathers deliveries into a batch
//! (bounded by size and wait), dead-letters what cannot be decoded, hands the events to
//! [`process_batch`](crate::process::process_batch), and acks only after the commit. A database
//! failure is retried with backoff while the deliveries stay unacked, so nothing is lost.

use crate::{
    dead_letter::DeadLetters,
    process::{Outcome, process_batch},
    window::Window,
};
use faultline_shared::{
    config::WorkerSettings,
    domain::{DecodedMessage, StoredEvent, decode_message},
    queue::{self, Topology},
};
use futures_util::StreamExt;
use lapin::{
    Channel, Connection, Consumer,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    },
    types::{AMQPValue, FieldTable},
};
use serde_json::Value;
use sqlx::PgPool;
use std::{
    borrow::Cow,
    collections::{HashSet, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::sync::watch;
use uuid::Uuid;

/// Shared with `/health`: whether the consumer is attached to the broker; and with the cache
/// invalidation and heartbeat loops: what was committed.
#[derive(Clone, Default)]
pub struct ConsumerState {
    pub connected: Arc<AtomicBool>,
    /// Set while Postgres refuses the batch's writes as read-only (a failover that left the
    /// worker on a standby, `default_transaction_read_only`, a disk-full guard turning the
    /// database read-only): retrying cannot help until an operator acts, so it is reported
    /// apart from an outage.
    pub db_read_only: Arc<AtomicBool>,
    /// Set while Postgres fails the batch for lack of disk space: another condition only an
    /// operator can end, and one `SELECT 1` does not see.
    pub db_disk_full: Arc<AtomicBool>,
    pub progress: crate::invalidate::Progress,
}

/// Why a batch was not committed, as a low-cardinality metric label.
fn failure_reason(e: &sqlx::Error) -> &'static str {
    match e {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some(c) if refused_for_its_data(c) => "refused",
            // read_only_sql_transaction
            Some("25006") => "read_only",
            Some("53100") => "disk_full",
            // insufficient_resources, out_of_memory, too_many_connections, ...
            Some(c) if c.starts_with("53") => "resources",
            // admin/crash shutdown, cannot connect now, connection exceptions
            Some(c) if c.starts_with("57P") || c.starts_with("08") => "unavailable",
            _ => "other",
        },
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => "unavailable",
        _ => "other",
    }
}

/// Whether a SQLSTATE says Postgres refused what the statement carried rather than failed to run
/// it: class 22 (data exception: a timestamp out of range, a number in a jsonb column), 23
/// (integrity constraint: an event of a project deleted while its events were queued), 54
/// (program limit: a value too large for an index). The same batch would fail the same way on
/// every retry and hold up the queue behind it, so such a batch is split to find the events that
/// cause it ([`commit_isolating`]).
fn refused_for_its_data(sqlstate: &str) -> bool {
    ["22", "23", "54"]
        .iter()
        .any(|class| sqlstate.starts_with(class))
}

/// Records whether Postgres refuses writes as read-only: the `worker_postgres_read_only` gauge,
/// and one log line per change (ERROR when it starts: nothing is processed until an operator
/// acts).
pub fn set_read_only(flag: &AtomicBool, read_only: bool) {
    set_condition(flag, "worker_postgres_read_only", "read-only", read_only);
}

/// The same for a full disk, with the `worker_postgres_disk_full` gauge.
pub fn set_disk_full(flag: &AtomicBool, full: bool) {
    set_condition(flag, "worker_postgres_disk_full", "out of disk space", full);
}

fn set_condition(flag: &AtomicBool, gauge: &'static str, what: &str, on: bool) {
    metrics::gauge!(gauge).set(if on { 1.0 } else { 0.0 });
    let was = flag.swap(on, Ordering::Relaxed);
    if on && !was {
        tracing::error!(
            condition = what,
            "Postgres refuses writes; batches stay unacked until an operator fixes it."
        );
    } else if !on && was {
        tracing::info!(condition = what, "Postgres accepts writes again.");
    }
}

/// Adds a delivery to the batch; returns its tag when the message is not a JSON array at all
/// (the whole message goes to the dead-letter queue).
fn handle(
    tag: u64,
    data: &[u8],
    batch: &mut Vec<(u64, DecodedMessage)>,
    events: &mut usize,
) -> Option<u64> {
    let Some(decoded) = decode_message(data) else {
        return Some(tag);
    };
    *events += decoded.events.len();
    batch.push((tag, decoded));
    None
}

/// The consuming connection and its channel, the dead-letter connection (see [`DeadLetters`]:
/// the consuming connection never publishes, so a resource alarm never blocks its acks), and the
/// consumer.
async fn open(
    settings: &WorkerSettings,
    topology: &Topology,
    prefetch: u16,
) -> lapin::Result<(Connection, Channel, DeadLetters, Consumer)> {
    let conn = queue::connect(&settings.services.amqp_url, "faultline-worker").await?;
    let channel = conn.create_channel().await?;
    topology.declare(&channel).await?;
    let dead = DeadLetters::open(&settings.services.amqp_url, topology).await?;
    let consumer = start_consumer(&channel, topology, prefetch).await?;
    Ok((conn, channel, dead, consumer))
}

/// Consumes the queue with a per-consumer prefetch of `prefetch` messages. RabbitMQ fixes that
/// prefetch when the consumer starts (its per-channel `global` limit, which could change on the
/// fly, is deprecated and refused by default since 4.3), so the window changes by starting a new
/// consumer ([`Source::change`]).
async fn start_consumer(
    channel: &Channel,
    topology: &Topology,
    prefetch: u16,
) -> lapin::Result<Consumer> {
    static GENERATION: AtomicU64 = AtomicU64::new(0);
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    metrics::gauge!("worker_prefetch_window_messages").set(f64::from(prefetch));
    let tag = format!(
        "faultline-worker-{}",
        GENERATION.fetch_add(1, Ordering::Relaxed)
    );
    channel
        .basic_consume(
            topology.queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Where a batch's deliveries come from: the consumer, and what a replaced consumer had already
/// been sent. Changing the window ([`Source::change`]) cancels the consumer, carries its deliveries
/// (in order) and starts the new consumer only once they have all been batched: the new consumer's
/// prefetch does not count the carried ones, so starting it at once would hold both windows.
/// Nothing is lost: deliveries stay unacknowledged on the channel across consumers, the carried
/// ones are batched before anything the new consumer receives, and delivery tags keep rising, so
/// the acks stay cumulative.
struct Source<'a> {
    channel: &'a Channel,
    topology: &'a Topology,
    consumer: &'a mut Consumer,
    carry: VecDeque<Delivery>,
    /// The prefetch of the consumer to start once nothing is carried.
    pending: Option<u16>,
}

impl Source<'_> {
    /// Starts the pending consumer when nothing is carried any more. Called before every
    /// [`Source::next`], outside any timeout or `select!`, so a consumer is never started and then
    /// dropped unseen.
    async fn settle(&mut self) -> lapin::Result<()> {
        if self.carry.is_empty()
            && let Some(prefetch) = self.pending.take()
        {
            *self.consumer = start_consumer(self.channel, self.topology, prefetch).await?;
        }
        Ok(())
    }

    /// The next delivery (after [`Source::settle`]): a carried one, else the consumer's next.
    async fn next(&mut self) -> Option<lapin::Result<Delivery>> {
        match self.carry.pop_front() {
            Some(d) => Some(Ok(d)),
            None => self.consumer.next().await,
        }
    }

    /// Moves to a window of `prefetch` messages (see the type's doc).
    async fn change(&mut self, prefetch: u16) -> anyhow::Result<()> {
        if self.pending.is_none() {
            self.channel
                .basic_cancel(
                    self.consumer.tag().as_str().into(),
                    BasicCancelOptions::default(),
                )
                .await?;
            // After cancel-ok the broker sends this consumer nothing more; the stream yields
            // what it buffered, then ends.
            while let Some(d) = self.consumer.next().await {
                self.carry.push_back(d?);
            }
        }
        self.pending = Some(prefetch);
        tracing::debug!(
            prefetch,
            carried = self.carry.len(),
            "Prefetch window changing."
        );
        self.settle().await?;
        Ok(())
    }
}

/// Runs until `shutdown` turns true: then finishes the batch in hand, acks it and returns.
pub async fn run(
    settings: WorkerSettings,
    pool: PgPool,
    state: ConsumerState,
    mut shutdown: watch::Receiver<bool>,
) {
    let topology = Topology::new(&settings.services.queue_prefix);
    let mut backoff = Duration::from_millis(200);
    let in_hand = batches_in_hand(&settings);
    while !*shutdown.borrow() {
        // Each connection starts with a small window (a queue may be full of large messages).
        let mut window = Window::new(settings.prefetch_bytes, settings.prefetch, in_hand);
        let opened = open(&settings, &topology, window.messages()).await;
        let (conn, channel, dead, mut consumer) = match opened {
            Ok(parts) => parts,
            Err(e) => {
                state.connected.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, ?backoff, "Cannot reach the broker; retrying.");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        state.connected.store(true, Ordering::Relaxed);
        tracing::info!(queue = %topology.queue, "Consuming.");
        let result = consume(
            &settings,
            &pool,
            &state,
            &topology,
            &channel,
            &dead,
            &mut consumer,
            &mut window,
            &mut shutdown,
        )
        .await;
        state.connected.store(false, Ordering::Relaxed);
        if let Err(e) = result {
            tracing::warn!(error = %e, "Consumer stopped; reconnecting.");
        }
        let _ = channel
            .basic_cancel(
                consumer.tag().as_str().into(),
                BasicCancelOptions::default(),
            )
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(200, "bye".into())).await;
        dead.close().await;
    }
    tracing::info!("Consumer finished.");
}

/// A batch gathered from the broker, ready to be written.
struct Batch {
    events: Vec<StoredEvent>,
    /// The delivery each event came in, by position: the message to reject when its event cannot
    /// be dead-lettered alone.
    origins: Vec<u64>,
    /// Elements of decodable messages that are not events, by delivery.
    poison: Vec<(u64, Vec<Value>)>,
    /// The decodable deliveries, in order: what the batch acks (undecodable ones were rejected
    /// already).
    tags: Vec<u64>,
}

/// How a committed batch is settled with the broker: deliveries rejected (the broker
/// dead-letters them), then everything up to `ack` acked.
struct Settle {
    reject: Vec<u64>,
    ack: Option<u64>,
}

impl Settle {
    /// Acks the latest delivery not rejected, which covers every earlier one (`multiple`); a
    /// rejected delivery must not be named by an ack, the broker would close the channel.
    fn new(tags: &[u64], mut reject: Vec<u64>) -> Self {
        reject.sort_unstable();
        reject.dedup();
        let ack = tags
            .iter()
            .rev()
            .find(|t| reject.binary_search(t).is_err())
            .copied();
        Settle { reject, ack }
    }
}

/// Gathers batches and commits them at the same time: while batches are being written, the next
/// one is received and decoded (prefetch permitting), so Postgres does not sit idle through the
/// broker round trip after every ack. Up to `WORKER_COMMIT_CONCURRENCY` transactions run at once
/// (one per core lets Postgres use them all); acks still go out in delivery order, each after
/// its batch and every batch before it committed, so `ack(multiple)` covers exactly the committed
/// deliveries.
#[allow(clippy::too_many_arguments)]
async fn consume(
    settings: &WorkerSettings,
    pool: &PgPool,
    state: &ConsumerState,
    topology: &Topology,
    channel: &Channel,
    dead: &DeadLetters,
    consumer: &mut Consumer,
    window: &mut Window,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // One batch may wait while another commits; more would only hold deliveries unacked.
    let (ready, pending) = tokio::sync::mpsc::channel::<Batch>(1);
    let committer = commit_batches(
        pool,
        state,
        channel,
        dead,
        pending,
        settings.commit_concurrency.max(1),
        shutdown.clone(),
    );
    let gatherer = gather_batches(
        settings, topology, channel, consumer, window, ready, shutdown,
    );
    tokio::try_join!(gatherer, committer)?;
    Ok(())
}

/// Batches unacknowledged at once: those committing and the one being gathered.
fn batches_in_hand(settings: &WorkerSettings) -> usize {
    usize::from(settings.commit_concurrency.max(1)) + 1
}

/// Receives deliveries into batches, rejects (dead-letters) messages that cannot be decoded, and
/// hands each batch to the committer, which dead-letters its undecodable elements. Returns on
/// shutdown (dropping the sender lets the committer finish what it has).
async fn gather_batches(
    settings: &WorkerSettings,
    topology: &Topology,
    channel: &Channel,
    consumer: &mut Consumer,
    window: &mut Window,
    ready: tokio::sync::mpsc::Sender<Batch>,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // Several batches are unacked at once (those committing, one gathering), so each takes its
    // share of the prefetch window; with the whole window in hand nothing more can arrive before
    // an ack, and waiting out `batch_wait` would only idle.
    let in_hand = batches_in_hand(settings);
    let mut source = Source {
        channel,
        topology,
        consumer,
        carry: VecDeque::new(),
        pending: None,
    };
    loop {
        let max_deliveries = (usize::from(window.messages()) / in_hand).max(1);
        source.settle().await?;
        // Wait for the first delivery (or shutdown, also when it came while a batch was sent).
        let first = tokio::select! {
            d = source.next() => d,
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
        };
        let Some(first) = first else {
            anyhow::bail!("the broker ended the consumer");
        };
        let first = first?;
        let mut bytes = first.data.len();
        let mut batch: Vec<(u64, DecodedMessage)> = Vec::new();
        let mut events = 0usize;
        let mut unreadable = Vec::new();
        unreadable.extend(handle(
            first.delivery_tag,
            &first.data,
            &mut batch,
            &mut events,
        ));
        let deadline = tokio::time::Instant::now() + settings.batch_wait;
        let mut deliveries = 1usize;
        while events < settings.batch_size && deliveries < max_deliveries {
            source.settle().await?;
            match tokio::time::timeout_at(deadline, source.next()).await {
                Ok(Some(Ok(d))) => {
                    deliveries += 1;
                    bytes += d.data.len();
                    unreadable.extend(handle(d.delivery_tag, &d.data, &mut batch, &mut events));
                }
                Ok(Some(Err(e))) => return Err(e.into()),
                Ok(None) | Err(_) => break,
            }
        }
        for tag in unreadable {
            tracing::warn!(delivery_tag = tag, "Undecodable message dead-lettered.");
            metrics::counter!("worker_dead_lettered_total", "kind" => "message").increment(1);
            channel
                .basic_nack(
                    tag,
                    BasicNackOptions {
                        multiple: false,
                        requeue: false,
                    },
                )
                .await?;
        }
        window.observe(deliveries, bytes);
        if let Some(prefetch) = window.update() {
            source.change(prefetch).await?;
        }
        let mut gathered = Batch {
            events: Vec::with_capacity(events),
            origins: Vec::with_capacity(events),
            poison: Vec::new(),
            tags: Vec::with_capacity(batch.len()),
        };
        for (tag, decoded) in batch {
            gathered.tags.push(tag);
            if !decoded.poison.is_empty() {
                gathered.poison.push((tag, decoded.poison));
            }
            gathered
                .origins
                .extend(std::iter::repeat_n(tag, decoded.events.len()));
            gathered.events.extend(decoded.events);
        }
        metrics::histogram!("worker_batch_events").record(gathered.events.len() as f64);
        metrics::counter!("worker_batches_total").increment(1);
        if ready.send(gathered).await.is_err() {
            // The committer stopped: on shutdown that is expected; otherwise its error is the
            // one `try_join!` reports.
            return Ok(());
        }
    }
}

/// Commits up to `concurrency` batches at once and acks them in the order they were gathered,
/// each once it and every batch before it committed. A database failure is retried with backoff
/// while the deliveries stay unacked: a crash or a shutdown here hands them back to the broker,
/// never loses them. Concurrent transactions cannot deadlock on rows: every statement writes in
/// key order.
async fn commit_batches(
    pool: &PgPool,
    state: &ConsumerState,
    channel: &Channel,
    dead: &DeadLetters,
    mut pending: tokio::sync::mpsc::Receiver<Batch>,
    concurrency: u16,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut committing = futures_util::stream::FuturesOrdered::new();
    let mut open = true;
    loop {
        tokio::select! {
            batch = pending.recv(), if open && committing.len() < usize::from(concurrency) => {
                match batch {
                    Some(batch) => committing.push_back(commit_one(pool, state, dead, batch, shutdown.clone())),
                    None => open = false,
                }
            }
            done = committing.next(), if !committing.is_empty() => {
                match done {
                    Some(Some(settle)) => {
                        for tag in settle.reject {
                            let requeue = false;
                            channel
                                .basic_nack(tag, BasicNackOptions { multiple: false, requeue })
                                .await?;
                        }
                        if let Some(tag) = settle.ack {
                            channel
                                .basic_ack(tag, BasicAckOptions { multiple: true })
                                .await?;
                        }
                    }
                    // Shutting down with this batch uncommitted: nothing after it may be acked
                    // (an ack is cumulative); the broker redelivers them all, and the ids already
                    // stored are skipped.
                    Some(None) => return Ok(()),
                    None => {}
                }
            }
            else => return Ok(()),
        }
    }
}

/// Writes one batch, retrying with backoff until the database takes it, then dead-letters its bad
/// events; returns how to settle it with the broker, or `None` when shutdown came first.
async fn commit_one(
    pool: &PgPool,
    state: &ConsumerState,
    dead: &DeadLetters,
    batch: Batch,
    mut shutdown: watch::Receiver<bool>,
) -> Option<Settle> {
    let events = &batch.events;
    let mut backoff = Duration::from_millis(100);
    loop {
        match commit_once(pool, events).await {
            Ok((outcome, refused)) => {
                tracing::debug!(?outcome, "Batch committed.");
                if state.db_read_only.load(Ordering::Relaxed) {
                    set_read_only(&state.db_read_only, false);
                }
                if state.db_disk_full.load(Ordering::Relaxed) {
                    set_disk_full(&state.db_disk_full, false);
                }
                state.progress.committed(
                    events.iter().map(|e| e.project_id),
                    outcome.inserted,
                    events.iter().map(|e| e.received_at).min(),
                );
                let reject = dead_letter_batch(dead, &batch, &refused).await;
                return Some(Settle::new(&batch.tags, reject));
            }
            Err(e) => {
                let (reason, error) = (failure_reason(&e), e.to_string());
                metrics::counter!("worker_batch_failures_total", "reason" => reason).increment(1);
                match reason {
                    "read_only" => set_read_only(&state.db_read_only, true),
                    "disk_full" => set_disk_full(&state.db_disk_full, true),
                    _ => {}
                }
                tracing::warn!(%error, reason, ?backoff, events = events.len(), "Batch not committed; will retry.");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    // Resolves at once when shutdown came earlier (or its sender is gone).
                    _ = shutdown.wait_for(|stop| *stop) => {
                        tracing::info!("Shutting down with an uncommitted batch; the broker will redeliver it.");
                        return None;
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// One attempt at a batch: one transaction, or, when Postgres refuses the batch for what it
/// holds, [`commit_isolating`]; returns the events it refused, for the dead-letter queue.
async fn commit_once(
    pool: &PgPool,
    events: &[StoredEvent],
) -> Result<(Outcome, Vec<(StoredEvent, Refusal)>), sqlx::Error> {
    match process_batch(pool, events).await {
        Ok(outcome) => Ok((outcome, Vec::new())),
        Err(e) if Refusal::of(&e).is_some() => {
            metrics::counter!("worker_batch_failures_total", "reason" => "refused").increment(1);
            tracing::warn!(error = %e, events = events.len(), "Postgres refused the batch for what it holds; finding the events it refuses.");
            commit_isolating(pool, events).await
        }
        Err(e) => Err(e),
    }
}

/// Why Postgres refused an event: its SQLSTATE and message, as the dead letter carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub sqlstate: String,
    pub error: String,
}

impl Refusal {
    fn of(e: &sqlx::Error) -> Option<Self> {
        let sqlx::Error::Database(db) = e else {
            return None;
        };
        let sqlstate = db.code()?.into_owned();
        refused_for_its_data(&sqlstate).then(|| Refusal {
            sqlstate,
            error: db.message().to_string(),
        })
    }
}

/// Commits every event of a batch that Postgres takes and returns the others, each with why it
/// was refused. Events of a project that no longer exists are set aside first (one query: a
/// deleted project's queued events would otherwise be found one by one, ~1.5 ms each). Then
/// each part Postgres still refuses is halved until the events it refuses on their own are found:
/// one bad event among n costs about 2·log2(n) small transactions. An error that is not a refusal
/// (an outage meanwhile) is returned at once: the whole batch is retried later, and the parts
/// already committed are then skipped as duplicates, so nothing is counted twice.
pub async fn commit_isolating(
    pool: &PgPool,
    events: &[StoredEvent],
) -> Result<(Outcome, Vec<(StoredEvent, Refusal)>), sqlx::Error> {
    let mut project_ids: Vec<Uuid> = events.iter().map(|e| e.project_id).collect();
    project_ids.sort_unstable();
    project_ids.dedup();
    let missing = crate::store::missing_projects(pool, &project_ids).await?;
    let mut refused = Vec::new();
    let kept: Cow<[StoredEvent]> = if missing.is_empty() {
        Cow::Borrowed(events)
    } else {
        let (orphans, kept): (Vec<StoredEvent>, Vec<StoredEvent>) = events
            .iter()
            .cloned()
            .partition(|e| missing.contains(&e.project_id));
        refused.extend(orphans.into_iter().map(|e| {
            let refusal = Refusal {
                // foreign_key_violation, as the group's upsert raises it.
                sqlstate: "23503".into(),
                error: format!("project {} does not exist", e.project_id),
            };
            (e, refusal)
        }));
        Cow::Owned(kept)
    };
    let mut outcome = Outcome::default();
    let mut parts = vec![&kept[..]];
    while let Some(part) = parts.pop() {
        if part.is_empty() {
            continue;
        }
        let error = match process_batch(pool, part).await {
            Ok(o) => {
                outcome.received += o.received;
                outcome.inserted += o.inserted;
                outcome.duplicates += o.duplicates;
                outcome.groups += o.groups;
                continue;
            }
            Err(e) => e,
        };
        let Some(refusal) = Refusal::of(&error) else {
            return Err(error);
        };
        if let [event] = part {
            refused.push((event.clone(), refusal));
        } else {
            let (front, back) = part.split_at(part.len() / 2);
            // A stack: the front half is written first.
            parts.push(back);
            parts.push(front);
        }
    }
    Ok((outcome, refused))
}

/// Sends a committed batch's bad events to the dead-letter queue before the batch is acked:
/// each event Postgres refused as a one-event message in the queue's own format (so it can be
/// shovelled back once the cause is fixed) with the refusal in its `x-faultline-error` header, and
/// the undecodable elements of decodable messages together in one message. Returns the
/// deliveries to reject instead when the broker does not confirm those letters (a resource alarm
/// blocks the dead-letter connection, or it failed): the broker then dead-letters the messages
/// that carried the bad events, whole, by itself. Their other events are stored already; a
/// replay of such a message skips them as duplicates.
async fn dead_letter_batch(
    dead: &DeadLetters,
    batch: &Batch,
    refused: &[(StoredEvent, Refusal)],
) -> Vec<u64> {
    let poison = batch.poison.iter().map(|(_, p)| p.len()).sum::<usize>();
    if refused.is_empty() && poison == 0 {
        return Vec::new();
    }
    let mut letters = Vec::with_capacity(refused.len() + 1);
    if let Some((first, why)) = refused.first() {
        // One line per batch: a deleted project's backlog would otherwise log a line per event.
        tracing::warn!(
            events = refused.len(),
            first_event_id = %first.event_id,
            project_id = %first.project_id,
            sqlstate = why.sqlstate,
            error = why.error,
            "Postgres refused events; dead-lettering them with the reason in their x-faultline-error header."
        );
    }
    for (event, refusal) in refused {
        tracing::debug!(
            event_id = %event.event_id,
            project_id = %event.project_id,
            sqlstate = refusal.sqlstate,
            error = refusal.error,
            "Refused event dead-lettered."
        );
        let body = serde_json::to_vec(std::slice::from_ref(event)).unwrap_or_default();
        let mut headers = FieldTable::default();
        headers.insert(
            "x-faultline-error".into(),
            AMQPValue::LongString(
                format!("SQLSTATE {}: {}", refusal.sqlstate, refusal.error).into(),
            ),
        );
        letters.push((body, headers));
    }
    if poison > 0 {
        let elements: Vec<&Value> = batch.poison.iter().flat_map(|(_, p)| p).collect();
        let body = serde_json::to_vec(&elements).unwrap_or_default();
        letters.push((body, FieldTable::default()));
    }
    match dead.publish(letters).await {
        Ok(()) => {
            if poison > 0 {
                tracing::warn!(events = poison, "Undecodable events dead-lettered.");
                metrics::counter!("worker_dead_lettered_total", "kind" => "event")
                    .increment(poison as u64);
            }
            metrics::counter!("worker_dead_lettered_total", "kind" => "refused")
                .increment(refused.len() as u64);
            Vec::new()
        }
        Err(why) => {
            let ids: HashSet<Uuid> = refused.iter().map(|(e, _)| e.event_id).collect();
            let mut reject: Vec<u64> = batch
                .events
                .iter()
                .zip(&batch.origins)
                .filter(|(e, _)| ids.contains(&e.event_id))
                .map(|(_, tag)| *tag)
                .collect();
            reject.extend(batch.poison.iter().map(|(tag, _)| *tag));
            reject.sort_unstable();
            reject.dedup();
            tracing::warn!(
                %why,
                messages = reject.len(),
                "Dead letters not confirmed; rejecting the messages that carried those events, so the broker dead-letters them whole (their other events are stored)."
            );
            metrics::counter!("worker_dead_lettered_total", "kind" => "message")
                .increment(reject.len() as u64);
            reject
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Settle;

    #[test]
    fn a_batch_acks_its_latest_delivery_that_was_not_rejected() {
        let all = Settle::new(&[5, 6, 7], vec![]);
        assert_eq!((all.ack, all.reject), (Some(7), vec![]));
        // The last one rejected: acking 7 would name a settled delivery.
        let last = Settle::new(&[5, 6, 7], vec![7, 7]);
        assert_eq!((last.ack, last.reject), (Some(6), vec![7]));
        let none = Settle::new(&[5, 6, 7], vec![6, 5, 7]);
        assert_eq!((none.ack, none.reject), (None, vec![5, 6, 7]));
        assert_eq!(Settle::new(&[], vec![]).ack, None);
    }
}
