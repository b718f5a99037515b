//! Invalidation of ingest's read cache after a commit, and the worker's liveness heartbeat.
//!
//! After a batch commits, the consumer marks the batch's projects as touched (in memory, never
//! blocking). A loop increments each touched project's cache generation in Redis, at most once a
//! second per project, so heavy ingest still leaves the cache useful; a project touched during
//! its quiet second is bumped when the second ends, so no change stays invisible longer than
//! about a second plus a tick. Redis down never blocks or fails the worker: touched projects wait
//! (the set is bounded by the number of projects) and are bumped once Redis is back.

use faultline_shared::{cache::generation_key, db};
use redis::{AsyncCommands, aio::ConnectionManager};
use serde_json::json;
use sqlx::PgPool;
use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::watch;
use uuid::Uuid;

/// Shortest time between two bumps of one project's generation.
const MIN_BUMP_INTERVAL: Duration = Duration::from_secs(1);
const TICK: Duration = Duration::from_millis(200);
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// How often the heartbeat is written (the monitoring API calls a worker gone after 30 s).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// What the consumer reports after each commit; read by the bump loop and the heartbeat.
#[derive(Clone, Default)]
pub struct Progress {
    touched: Arc<Mutex<HashSet<Uuid>>>,
    /// Events committed since start.
    pub events: Arc<AtomicU64>,
    /// Batches committed since start.
    pub batches: Arc<AtomicU64>,
    /// Unix ms of the last commit (0: none yet).
    pub last_commit_ms: Arc<AtomicI64>,
    /// Milliseconds from ingest stamping the oldest event of the last batch to its commit.
    pub last_delay_ms: Arc<AtomicU64>,
}

impl Progress {
    /// Called after a commit; cheap and never blocks on I/O.
    pub fn committed(
        &self,
        projects: impl IntoIterator<Item = Uuid>,
        events: usize,
        oldest: Option<chrono::DateTime<chrono::Utc>>,
    ) {
        let now = chrono::Utc::now();
        self.touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(projects);
        self.events.fetch_add(events as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.last_commit_ms
            .store(now.timestamp_millis(), Ordering::Relaxed);
        if let Some(oldest) = oldest {
            let delay = (now - oldest).num_milliseconds().max(0) as u64;
            self.last_delay_ms.store(delay, Ordering::Relaxed);
        }
    }

    fn take_touched(&self) -> HashSet<Uuid> {
        std::mem::take(&mut *self.touched.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn put_back(&self, projects: impl IntoIterator<Item = Uuid>) {
        self.touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(projects);
    }
}

async fn connect(client: &redis::Client) -> Option<ConnectionManager> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT))
        .set_number_of_retries(1);
    tokio::time::timeout(
        REDIS_TIMEOUT * 2,
        ConnectionManager::new_with_config(client.clone(), config),
    )
    .await
    .ok()?
    .ok()
}

/// Bumps touched projects' generations until `stop` turns true (then once more, so the last
/// batch's changes become visible).
pub async fn bump_loop(
    redis_url: String,
    prefix: String,
    progress: Progress,
    mut stop: watch::Receiver<bool>,
) {
    let client = match faultline_shared::cache::client(&redis_url) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "REDIS_URL is not usable; the read cache will expire by TTL only.");
            return;
        }
    };
    let mut conn: Option<ConnectionManager> = None;
    let mut last_bump: HashMap<Uuid, Instant> = HashMap::new();
    let mut redis_down = false;
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(TICK) => *stop.borrow(),
            _ = stop.changed() => true,
        };
        let touched = progress.take_touched();
        if !touched.is_empty() {
            let now = Instant::now();
            let (due, later): (Vec<Uuid>, Vec<Uuid>) = touched.into_iter().partition(|p| {
                stopping
                    || last_bump
                        .get(p)
                        .is_none_or(|t| now.duration_since(*t) >= MIN_BUMP_INTERVAL)
            });
            progress.put_back(later);
            if conn.is_none() {
                conn = connect(&client).await;
            }
            match conn.as_mut() {
                Some(c) => {
                    let mut failed = Vec::new();
                    for project in due {
                        let incr = c.incr::<_, _, u64>(generation_key(&prefix, project), 1);
                        match tokio::time::timeout(REDIS_TIMEOUT, incr).await {
                            Ok(Ok(_)) => {
                                last_bump.insert(project, now);
                            }
                            _ => failed.push(project),
                        }
                    }
                    if failed.is_empty() {
                        if redis_down {
                            tracing::info!("Redis is back; cache generations bumped again.");
                        }
                        redis_down = false;
                    } else {
                        if !redis_down {
                            tracing::warn!("Cannot bump cache generations in Redis; will retry.");
                        }
                        redis_down = true;
                        conn = None;
                        progress.put_back(failed);
                    }
                }
                None => {
                    if !redis_down {
                        tracing::warn!(
                            "Redis unreachable; cache generations will be bumped when it is back."
                        );
                    }
                    redis_down = true;
                    progress.put_back(due);
                }
            }
            // Forget projects quiet for a while, so the map stays small.
            last_bump.retain(|_, t| now.duration_since(*t) < MIN_BUMP_INTERVAL * 10);
        }
        if stopping {
            return;
        }
    }
}

/// Writes the worker's heartbeat every few seconds until `stop` turns true.
pub async fn heartbeat_loop(
    pool: PgPool,
    connected: Arc<AtomicBool>,
    progress: Progress,
    mut stop: watch::Receiver<bool>,
) {
    let instance = db::instance_name();
    let started_at = chrono::Utc::now();
    loop {
        let last_commit = progress.last_commit_ms.load(Ordering::Relaxed);
        let details = json!({
            "consuming": connected.load(Ordering::Relaxed),
            "events_processed": progress.events.load(Ordering::Relaxed),
            "batches_committed": progress.batches.load(Ordering::Relaxed),
            "last_commit_at": chrono::DateTime::from_timestamp_millis(last_commit).filter(|_| last_commit > 0),
            "ingest_to_visible_ms": (last_commit > 0).then(|| progress.last_delay_ms.load(Ordering::Relaxed)),
        });
        if let Err(e) = db::heartbeat(&pool, "worker", &instance, started_at, details).await {
            tracing::debug!(error = %e, "Heartbeat not written.");
        }
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT_EVERY) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            if let Err(e) = db::remove_heartbeat(&pool, "worker", &instance).await {
                tracing::debug!(error = %e, "Heartbeat not removed.");
            }
            return;
        }
    }
}
