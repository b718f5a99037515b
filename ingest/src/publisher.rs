//! The group-commit publisher. Requests hand their serialised events to one task; it packs every
//! event waiting at that moment into one persistent broker message, publishes it with publisher
//! confirms and answers all those requests when the broker confirms. Under light load each request
//! gets its own message; under heavy load many requests share one confirm round, so durability
//! does not cost throughput. With the broker unreachable, requests fail at once (503) and the task
//! reconnects with backoff by itself.
//!
//! While the broker blocks publishing (a memory or disk alarm: it sends `connection.blocked`),
//! requests are refused at once (503) instead of each waiting out the confirm timeout, and
//! `/health` says why; the first message caught by the block still waits for its confirm.
//!
//! Only one message that is not full awaits its confirm at a time: the next one keeps taking in
//! events until that confirm comes (or it fills up). RabbitMQ's CPU goes mostly per message, not
//! per byte, so this cuts its cost per event under load by ~40 % at no cost in latency: a message
//! sent earlier would wait for the same disk flush anyway (benches/RESULTS.md, "RabbitMQ's cost is
//! per message: fewer, fuller messages"). Full messages do not wait: they go out at once, up to
//! `max_in_flight`, so a slow broker does not cap throughput at one message per round trip.
//!
//! A message that is not full also waits out the linger (`PUBLISH_LINGER_US`, 1 ms by default): at
//! least that long after the previous one that was not full went out. Confirms take about a
//! millisecond on a calm broker, so under a steady moderate load from many clients each round
//! carried a few events and the broker spent half a core on rounds; the linger packs two to three
//! times as many events per message. A request that arrives after a pause does not wait. Nor does
//! a message once every client connection of the previous one has sent its next request: an
//! HTTP/1.1 connection carries one request at a time, so a client that waits for each answer
//! would otherwise wait out the linger on every request (one such connection went from 1,340 to
//! 470 events/s), while waiting for all of them lets a few such clients share one message
//! instead of taking turns.
//!
//! A request's time here is two histograms: `ingest_publish_wait_seconds`, from handing its
//! events over until their message goes out (the previous message's confirm and the linger), and
//! `ingest_publish_confirm_seconds`, from then until the broker confirms. A request that waits
//! behind a slow confirm and then meets a slow one of its own shows in both (benches/RESULTS.md,
//! eighteenth session: that is most of the tail at 10,000 events/s on two cores).

use faultline_shared::{domain::encode_batch, queue};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection,
    options::{BasicPublishOptions, ConfirmSelectOptions},
};
use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Why events could not be handed to the broker. Every variant means: not accepted, answer 503.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to the broker")]
    Disconnected,
    #[error("the broker refused the message")]
    Nacked,
    #[error("no confirm from the broker in time")]
    Timeout,
    #[error("the broker blocks publishing: {0}")]
    Blocked(String),
    #[error("publishing failed: {0}")]
    Broker(String),
}

struct Job {
    events: Vec<Vec<u8>>,
    /// When the request handed its events over: how long they waited for their message is
    /// `ingest_publish_wait_seconds`.
    queued: Instant,
    /// The client connection the request came on, if known (see [`Returns`]).
    from: Option<SocketAddr>,
    done: oneshot::Sender<Result<(), PublishError>>,
}

#[derive(Debug, Clone)]
pub struct PublisherConfig {
    pub amqp_url: String,
    pub topology: queue::Topology,
    pub max_in_flight: usize,
    pub max_events: usize,
    pub confirm_timeout: Duration,
    pub linger: Duration,
}

/// Whether the broker blocks this connection's publishing, and why (`connection.blocked`).
#[derive(Default)]
struct Blocked {
    now: AtomicBool,
    reason: Mutex<String>,
}

impl Blocked {
    fn set(&self, reason: Option<String>) {
        let on = reason.is_some();
        if let Ok(mut r) = self.reason.lock() {
            *r = reason.unwrap_or_default();
        }
        let was = self.now.swap(on, Ordering::Relaxed);
        metrics::gauge!("ingest_broker_blocked").set(if on { 1.0 } else { 0.0 });
        if on && !was {
            tracing::error!(reason = %self.reason(), "The broker blocks publishing (a resource alarm); events are refused with 503 until it lifts.");
        } else if !on && was {
            tracing::info!("The broker accepts messages again.");
        }
    }

    fn reason(&self) -> String {
        self.reason.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// Handle used by request handlers; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::Sender<Job>,
    connected: Arc<AtomicBool>,
    blocked: Arc<Blocked>,
    timeout: Duration,
    sent: Arc<AtomicU64>,
}

impl Publisher {
    /// Starts the publishing task. It runs until every `Publisher` handle is dropped.
    pub fn start(config: PublisherConfig) -> Self {
        // Bounded: when the broker is slow, requests wait here (and time out) instead of piling up
        // without limit in memory.
        let (tx, rx) = mpsc::channel(8192);
        let connected = Arc::new(AtomicBool::new(false));
        let timeout = config.confirm_timeout;
        let sent = Arc::new(AtomicU64::new(0));
        let blocked = Arc::new(Blocked::default());
        tokio::spawn(run(
            config,
            rx,
            connected.clone(),
            blocked.clone(),
            sent.clone(),
        ));
        Publisher {
            tx,
            connected,
            blocked,
            timeout,
            sent,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Why the broker blocks publishing, while it does (a memory or disk alarm).
    pub fn blocked(&self) -> Option<String> {
        self.blocked
            .now
            .load(Ordering::Relaxed)
            .then(|| self.blocked.reason())
    }

    /// Broker messages handed to the broker so far (confirmed or not): how well events are packed.
    pub fn messages_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Publishes serialised events; returns only once the broker has confirmed them.
    pub async fn publish(&self, events: Vec<Vec<u8>>) -> Result<(), PublishError> {
        self.publish_from(None, events).await
    }

    /// [`Publisher::publish`] for a request that came on the client connection `from`: the
    /// linger does not hold a message back once every connection of the previous one has sent
    /// its next request (a client that waits for each answer before it sends again).
    pub async fn publish_from(
        &self,
        from: Option<SocketAddr>,
        events: Vec<Vec<u8>>,
    ) -> Result<(), PublishError> {
        if !self.is_connected() {
            return Err(PublishError::Disconnected);
        }
        if let Some(reason) = self.blocked() {
            return Err(PublishError::Blocked(reason));
        }
        let (done, wait) = oneshot::channel();
        let deadline = tokio::time::Instant::now() + self.timeout;
        tokio::time::timeout_at(
            deadline,
            self.tx.send(Job {
                events,
                queued: Instant::now(),
                from,
                done,
            }),
        )
        .await
        .map_err(|_| PublishError::Timeout)?
        .map_err(|_| PublishError::Disconnected)?;
        match tokio::time::timeout_at(deadline, wait).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(PublishError::Disconnected),
            Err(_) => Err(PublishError::Timeout),
        }
    }
}

async fn open(config: &PublisherConfig) -> lapin::Result<(Connection, Channel)> {
    let conn = queue::connect(&config.amqp_url, "faultline-ingest").await?;
    let channel = conn.create_channel().await?;
    config.topology.declare(&channel).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok((conn, channel))
}

fn fail_all(jobs: Vec<Job>, error: impl Fn() -> PublishError) {
    for job in jobs {
        let _ = job.done.send(Err(error()));
    }
}

/// Jobs waiting for the next message, and the events they carry.
#[derive(Default)]
struct Pending {
    jobs: Vec<Job>,
    events: usize,
}

impl Pending {
    fn push(&mut self, job: Job) {
        self.events += job.events.len();
        self.jobs.push(job);
    }

    /// The client connections these jobs came on, or `None` if any came without one.
    fn senders(&self) -> Option<Vec<SocketAddr>> {
        let mut senders: Vec<SocketAddr> =
            self.jobs.iter().map(|j| j.from).collect::<Option<_>>()?;
        senders.sort_unstable();
        senders.dedup();
        Some(senders)
    }
}

/// Which connections of the previous message that was not full have a request waiting again.
/// An HTTP/1.1 connection carries one request at a time, so once they all have, lingering longer
/// cannot bring more from them: it would only delay them.
struct Returns<'a> {
    /// The previous message's connections, sorted ([`Pending::senders`]).
    previous: &'a [SocketAddr],
    back: Vec<bool>,
    missing: usize,
    /// Jobs of the pending message already looked at.
    counted: usize,
}

impl<'a> Returns<'a> {
    fn new(previous: &'a [SocketAddr]) -> Self {
        Returns {
            previous,
            back: vec![false; previous.len()],
            missing: previous.len(),
            counted: 0,
        }
    }

    /// Takes in the jobs added to `pending` since the last call; whether every connection of the
    /// previous message is back (never when it had none, or had requests of unknown origin).
    fn all_back(&mut self, pending: &Pending) -> bool {
        for job in &pending.jobs[self.counted..] {
            let Some(i) = job.from.and_then(|f| self.previous.binary_search(&f).ok()) else {
                continue;
            };
            if !self.back[i] {
                self.back[i] = true;
                self.missing -= 1;
            }
        }
        self.counted = pending.jobs.len();
        !self.previous.is_empty() && self.missing == 0
    }
}

impl Pending {
    /// Takes in `job` and the jobs queued behind it, until the message is full.
    fn take(&mut self, job: Job, rx: &mut mpsc::Receiver<Job>, max_events: usize) {
        self.push(job);
        self.take_queued(rx, max_events);
    }

    /// Takes in the jobs already queued, until the message is full.
    fn take_queued(&mut self, rx: &mut mpsc::Receiver<Job>, max_events: usize) {
        while self.events < max_events {
            match rx.try_recv() {
                Ok(job) => self.push(job),
                Err(_) => break,
            }
        }
    }
}

/// Takes jobs into `pending` as they arrive until the message is full, `done` says it is ready, or
/// `until` completes first (checked first on each wait); returns `until`'s output if it did.
async fn gather<T>(
    pending: &mut Pending,
    rx: &mut mpsc::Receiver<Job>,
    max_events: usize,
    until: impl std::future::Future<Output = T>,
    mut done: impl FnMut(&Pending) -> bool,
) -> Option<T> {
    tokio::pin!(until);
    while pending.events < max_events && !done(pending) {
        tokio::select! {
            biased;
            out = &mut until => return Some(out),
            job = rx.recv() => match job {
                Some(job) => pending.take(job, rx, max_events),
                // Cannot happen while jobs wait (their requests hold a handle); publish what is
                // here in any case.
                None => break,
            },
        }
    }
    None
}

async fn run(
    config: PublisherConfig,
    mut rx: mpsc::Receiver<Job>,
    connected: Arc<AtomicBool>,
    blocked: Arc<Blocked>,
    sent: Arc<AtomicU64>,
) {
    let in_flight = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    // Held by the one message in flight that is not full (see the module's documentation).
    let partial = Arc::new(Semaphore::new(1));
    let mut backoff = Duration::from_millis(100);
    // When the last message that was not full went out, and the connections its requests came on.
    let mut last_partial: Option<(tokio::time::Instant, Option<Vec<SocketAddr>>)> = None;
    loop {
        let (conn, channel) = match open(&config).await {
            Ok(pair) => pair,
            Err(e) => {
                connected.store(false, Ordering::Relaxed);
                metrics::gauge!("ingest_broker_connected").set(0.0);
                tracing::warn!(error = %e, ?backoff, "Cannot reach the broker; retrying.");
                // Refuse what is waiting rather than letting it time out.
                let deadline = tokio::time::Instant::now() + backoff;
                loop {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(job)) => fail_all(vec![job], || PublishError::Disconnected),
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        // The broker tells of a resource alarm on the connection; the watch ends with it.
        blocked.set(None);
        let watch = {
            let blocked = blocked.clone();
            let mut events = queue::watch_blocked(&conn);
            tokio::spawn(async move {
                while events.changed().await.is_ok() {
                    blocked.set(events.borrow_and_update().clone());
                }
            })
        };
        connected.store(true, Ordering::Relaxed);
        metrics::gauge!("ingest_broker_connected").set(1.0);
        tracing::info!("Connected to the broker.");
        let mut check = tokio::time::interval(Duration::from_millis(250));
        loop {
            let first = tokio::select! {
                job = rx.recv() => job,
                _ = check.tick() => {
                    if conn.status().connected() && channel.status().connected() {
                        continue;
                    }
                    break;
                }
            };
            let Some(first) = first else {
                // Every handle dropped: wait for confirms in flight, then close.
                let _ = in_flight
                    .acquire_many(config.max_in_flight.max(1) as u32)
                    .await;
                let _ = conn.close(200, "shutdown".into()).await;
                return;
            };
            let mut pending = Pending::default();
            pending.take(first, &mut rx, config.max_events);
            // A message that is not full waits for the previous one's confirm, taking in what
            // arrives meanwhile. The wait is bounded by that confirm's timeout, and a lost
            // connection ends it at once: lapin fails the confirms in flight on a channel error.
            let acquire = partial.clone().acquire_owned();
            let partial_permit =
                match gather(&mut pending, &mut rx, config.max_events, acquire, |_| false).await {
                    Some(Ok(permit)) => Some(permit),
                    Some(Err(_)) => return,
                    None => None,
                };
            if let Some((sent, previous)) =
                last_partial.as_ref().filter(|_| !config.linger.is_zero())
            {
                let linger = tokio::time::sleep_until(*sent + config.linger);
                let mut returns = Returns::new(previous.as_deref().unwrap_or_default());
                gather(&mut pending, &mut rx, config.max_events, linger, |p| {
                    returns.all_back(p)
                })
                .await;
            }
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                return;
            };
            pending.take_queued(&mut rx, config.max_events);
            let senders = if config.linger.is_zero() {
                None
            } else {
                pending.senders()
            };
            let Pending {
                mut jobs,
                events: count,
            } = pending;
            let body = encode_batch(
                jobs.iter()
                    .flat_map(|j| j.events.iter().map(|e| e.as_slice())),
            );
            // The message holds a copy of every event: the jobs' own copies are not needed while
            // the confirm is awaited (under a storm of batches they were half of ingest's memory).
            // One instant ends the jobs' wait and starts the confirm's clock, so the two
            // histograms split a request's time in the publisher without a gap or an overlap.
            let started = Instant::now();
            let waited = metrics::histogram!("ingest_publish_wait_seconds");
            for job in &mut jobs {
                job.events = Vec::new();
                waited.record(started.duration_since(job.queued).as_secs_f64());
            }
            if count < config.max_events {
                last_partial = Some((tokio::time::Instant::from_std(started), senders));
            }
            metrics::histogram!("ingest_publish_batch_events").record(count as f64);
            let published = channel
                .basic_publish(
                    config.topology.exchange.as_str().into(),
                    config.topology.routing_key.as_str().into(),
                    // mandatory: an unroutable message comes back instead of vanishing with an ack.
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &body,
                    BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_content_type("application/json".into()),
                )
                .await;
            sent.fetch_add(1, Ordering::Relaxed);
            match published {
                Ok(confirm) => {
                    let timeout = config.confirm_timeout;
                    tokio::spawn(async move {
                        let result = match tokio::time::timeout(timeout, confirm).await {
                            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
                            Ok(Ok(Confirmation::Ack(Some(_)))) | Ok(Ok(Confirmation::Nack(_))) => {
                                Err(PublishError::Nacked)
                            }
                            Ok(Ok(Confirmation::NotRequested)) => Ok(()),
                            Ok(Err(e)) => Err(PublishError::Broker(e.to_string())),
                            Err(_) => Err(PublishError::Timeout),
                        };
                        metrics::histogram!("ingest_publish_confirm_seconds")
                            .record(started.elapsed().as_secs_f64());
                        if let Err(e) = &result {
                            tracing::warn!(error = %e, events = count, "Publish not confirmed.");
                        }
                        for job in jobs {
                            let _ = job.done.send(match &result {
                                Ok(()) => Ok(()),
                                Err(e) => Err(PublishError::Broker(e.to_string())),
                            });
                        }
                        drop(permit);
                        drop(partial_permit);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Publish failed; reconnecting.");
                    fail_all(jobs, || PublishError::Disconnected);
                    break;
                }
            }
        }
        connected.store(false, Ordering::Relaxed);
        metrics::gauge!("ingest_broker_connected").set(0.0);
        watch.abort();
        blocked.set(None);
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            conn.close(200, "reconnecting".into()),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(from: Option<&str>) -> Job {
        let (done, _) = oneshot::channel();
        Job {
            events: vec![b"{}".to_vec()],
            queued: Instant::now(),
            from: from.map(|f| f.parse().unwrap()),
            done,
        }
    }

    #[test]
    fn senders_are_the_distinct_connections_or_none_if_one_is_unknown() {
        let mut pending = Pending::default();
        for from in ["10.0.0.2:2", "10.0.0.1:1", "10.0.0.2:2"] {
            pending.push(job(Some(from)));
        }
        let senders = pending.senders().unwrap();
        let expected: Vec<SocketAddr> =
            vec!["10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap()];
        assert_eq!(senders, expected);
        pending.push(job(None));
        assert_eq!(pending.senders(), None);
    }

    #[test]
    fn the_linger_ends_once_every_previous_connection_is_back() {
        let previous: Vec<SocketAddr> =
            vec!["10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap()];
        let mut returns = Returns::new(&previous);
        let mut pending = Pending::default();
        assert!(!returns.all_back(&pending));
        pending.push(job(Some("10.0.0.2:2")));
        pending.push(job(Some("10.0.0.3:3")));
        pending.push(job(None));
        assert!(!returns.all_back(&pending), "10.0.0.1:1 is not back yet");
        pending.push(job(Some("10.0.0.2:2")));
        assert!(
            !returns.all_back(&pending),
            "the same connection twice counts once"
        );
        pending.push(job(Some("10.0.0.1:1")));
        assert!(returns.all_back(&pending));
        // No previous connections known: the linger runs its course.
        let mut none = Returns::new(&[]);
        assert!(!none.all_back(&pending));
    }
}
