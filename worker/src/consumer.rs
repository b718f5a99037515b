//! The consumer loop: the only code that talks to the broker. It gathers deliveries into a batch
//! (bounded by size and wait), dead-letters what cannot be decoded, hands the events to
//! [`process_batch`](crate::process::process_batch), and acks only after the commit. A database
//! failure is retried with backoff while the deliveries stay unacked, so nothing is lost.

use crate::{
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
    BasicProperties, Channel, Connection, Consumer, PublisherConfirm,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
        BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    },
    types::{AMQPValue, FieldTable},
};
use serde_json::Value;
use sqlx::PgPool;
use std::{
    borrow::Cow,
    collections::VecDeque,
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
/// it: class 22 (data exception: a number jsonb cannot hold, a timestamp out of range), 23
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
    batch: &mut Vec<DecodedMessage>,
    events: &mut usize,
) -> Option<u64> {
    let Some(decoded) = decode_message(data) else {
        return Some(tag);
    };
    *events += decoded.events.len();
    batch.push(decoded);
    None
}

async fn open(
    settings: &WorkerSettings,
    topology: &Topology,
    prefetch: u16,
) -> lapin::Result<(Connection, Channel, Channel, Consumer)> {
    let conn = queue::connect(&settings.services.amqp_url, "faultline-worker").await?;
    let channel = conn.create_channel().await?;
    topology.declare(&channel).await?;
    // A second channel, in confirm mode, for dead-lettering single bad elements of a message.
    let dead = conn.create_channel().await?;
    dead.confirm_select(ConfirmSelectOptions::default()).await?;
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
    }
    tracing::info!("Consumer finished.");
}

/// A batch gathered from the broker, ready to be written: its events and the tag that acks it.
struct Batch {
    events: Vec<StoredEvent>,
    last_tag: u64,
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
    dead: &Channel,
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
        Refusals { dead, topology },
        pending,
        settings.commit_concurrency.max(1),
        shutdown.clone(),
    );
    let gatherer = gather_batches(
        settings, topology, channel, dead, consumer, window, ready, shutdown,
    );
    tokio::try_join!(gatherer, committer)?;
    Ok(())
}

/// Batches unacknowledged at once: those committing and the one being gathered.
fn batches_in_hand(settings: &WorkerSettings) -> usize {
    usize::from(settings.commit_concurrency.max(1)) + 1
}

/// Receives deliveries into batches, dead-letters what cannot be decoded, and hands each batch to
/// the committer. Returns on shutdown (dropping the sender lets the committer finish what it has).
#[allow(clippy::too_many_arguments)]
async fn gather_batches(
    settings: &WorkerSettings,
    topology: &Topology,
    channel: &Channel,
    dead: &Channel,
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
        let mut batch: Vec<DecodedMessage> = Vec::new();
        let mut events = 0usize;
        let mut last_tag = first.delivery_tag;
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
                    last_tag = d.delivery_tag;
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
        let poison: Vec<Value> = batch
            .iter_mut()
            .flat_map(|d| std::mem::take(&mut d.poison))
            .collect();
        if !poison.is_empty() {
            dead_letter(dead, topology, &poison).await?;
            tracing::warn!(events = poison.len(), "Undecodable events dead-lettered.");
            metrics::counter!("worker_dead_lettered_total", "kind" => "event")
                .increment(poison.len() as u64);
        }
        window.observe(deliveries, bytes);
        if let Some(prefetch) = window.update() {
            source.change(prefetch).await?;
        }
        let events: Vec<StoredEvent> = batch.into_iter().flat_map(|d| d.events).collect();
        metrics::histogram!("worker_batch_events").record(events.len() as f64);
        metrics::counter!("worker_batches_total").increment(1);
        if ready.send(Batch { events, last_tag }).await.is_err() {
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
    refusals: Refusals<'_>,
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
                    Some(batch) => committing.push_back(commit_one(pool, state, refusals, batch, shutdown.clone())),
                    None => open = false,
                }
            }
            done = committing.next(), if !committing.is_empty() => {
                match done {
                    Some(Some(last_tag)) => {
                        channel
                            .basic_ack(last_tag, BasicAckOptions { multiple: true })
                            .await?;
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

/// Where events that Postgres refuses on their own go: the dead-letter exchange, through the
/// channel in confirm mode.
#[derive(Clone, Copy)]
struct Refusals<'a> {
    dead: &'a Channel,
    topology: &'a Topology,
}

/// Why [`commit_once`] did not take a batch.
enum CommitError {
    Db(sqlx::Error),
    /// The events Postgres refused could not be dead-lettered, so the batch may not be acked.
    DeadLetter(anyhow::Error),
}

/// Writes one batch, retrying with backoff until the database takes it; returns the tag that acks
/// it, or `None` when shutdown came first.
async fn commit_one(
    pool: &PgPool,
    state: &ConsumerState,
    refusals: Refusals<'_>,
    Batch { events, last_tag }: Batch,
    mut shutdown: watch::Receiver<bool>,
) -> Option<u64> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match commit_once(pool, refusals, &events).await {
            Ok(outcome) => {
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
                return Some(last_tag);
            }
            Err(e) => {
                let (reason, error) = match &e {
                    CommitError::Db(e) => (failure_reason(e), e.to_string()),
                    CommitError::DeadLetter(e) => ("dead_letter", e.to_string()),
                };
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
/// holds, [`commit_isolating`] and the refused events dead-lettered (confirmed) before `Ok`.
async fn commit_once(
    pool: &PgPool,
    refusals: Refusals<'_>,
    events: &[StoredEvent],
) -> Result<Outcome, CommitError> {
    match process_batch(pool, events).await {
        Err(e) if Refusal::of(&e).is_some() => {
            metrics::counter!("worker_batch_failures_total", "reason" => "refused").increment(1);
            tracing::warn!(error = %e, events = events.len(), "Postgres refused the batch for what it holds; finding the events it refuses.");
            let (outcome, refused) = commit_isolating(pool, events)
                .await
                .map_err(CommitError::Db)?;
            dead_letter_refused(refusals, &refused)
                .await
                .map_err(CommitError::DeadLetter)?;
            Ok(outcome)
        }
        other => other.map_err(CommitError::Db),
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

/// Publishes each event Postgres refused to the dead-letter exchange, as a one-event message in
/// the queue's own format (so it can be shovelled back once the cause is fixed) with the refusal in
/// the `x-faultline-error` header, and waits for every confirm before the batch may be acked.
async fn dead_letter_refused(
    Refusals { dead, topology }: Refusals<'_>,
    refused: &[(StoredEvent, Refusal)],
) -> anyhow::Result<()> {
    let Some((first, why)) = refused.first() else {
        return Ok(());
    };
    // One line per batch: a deleted project's backlog would otherwise log a line per event.
    tracing::warn!(
        events = refused.len(),
        first_event_id = %first.event_id,
        project_id = %first.project_id,
        sqlstate = why.sqlstate,
        error = why.error,
        "Postgres refused events; dead-lettered with the reason in their x-faultline-error header."
    );
    let mut confirms = Vec::with_capacity(refused.len());
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
        confirms.push(publish_dead(dead, topology, &body, headers).await?);
    }
    for confirm in confirms {
        confirmed(confirm).await?;
    }
    metrics::counter!("worker_dead_lettered_total", "kind" => "refused")
        .increment(refused.len() as u64);
    Ok(())
}

/// Publishes undecodable events to the dead-letter exchange and waits for the broker's confirm,
/// so they are safe before their message is acked.
async fn dead_letter(dead: &Channel, topology: &Topology, poison: &[Value]) -> anyhow::Result<()> {
    let body = serde_json::to_vec(poison).unwrap_or_default();
    confirmed(publish_dead(dead, topology, &body, FieldTable::default()).await?).await
}

/// Publishes one persistent message to the dead-letter exchange; the confirm is the caller's to
/// wait for.
async fn publish_dead(
    dead: &Channel,
    topology: &Topology,
    body: &[u8],
    headers: FieldTable,
) -> lapin::Result<PublisherConfirm> {
    dead.basic_publish(
        topology.dead_exchange.as_str().into(),
        "".into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_headers(headers),
    )
    .await
}

/// Waits for a dead letter's confirm: only an ack makes it safe to ack what it came from.
async fn confirmed(confirm: PublisherConfirm) -> anyhow::Result<()> {
    anyhow::ensure!(confirm.await?.is_ack(), "the broker refused a dead letter");
    Ok(())
}
