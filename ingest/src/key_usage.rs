//! A key's `last_used`, recorded without a database write per request: each use is noted in
//! memory, at most once per `interval` per key, and a background loop writes what is pending in
//! one statement every `flush` period. With N ingest instances a key is written at most N times
//! per interval.

use crate::queries::access;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::sync::watch;
use uuid::Uuid;

#[derive(Default)]
struct Pending {
    /// Uses not yet written: key → time of use.
    due: HashMap<Uuid, DateTime<Utc>>,
    /// When each key was last queued for writing, to skip uses within the interval.
    queued_at: HashMap<Uuid, Instant>,
}

#[derive(Clone)]
pub struct KeyUsage {
    interval: Duration,
    pending: Arc<Mutex<Pending>>,
}

impl KeyUsage {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            pending: Arc::default(),
        }
    }

    /// Notes a use of `key_id`; cheap (one map lookup) and never touches the database.
    pub fn touch(&self, key_id: Uuid) {
        let now = Instant::now();
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.queued_at
            .get(&key_id)
            .is_some_and(|at| now.duration_since(*at) < self.interval)
        {
            return;
        }
        p.queued_at.insert(key_id, now);
        p.due.insert(key_id, Utc::now());
    }

    /// Writes every pending use in one statement; returns how many keys were written.
    pub async fn flush(&self, pool: &PgPool) -> Result<usize, sqlx::Error> {
        let due: Vec<(Uuid, DateTime<Utc>)> = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let interval = self.interval;
            let now = Instant::now();
            p.queued_at
                .retain(|_, at| now.duration_since(*at) < interval);
            p.due.drain().collect()
        };
        if due.is_empty() {
            return Ok(0);
        }
        let n = due.len();
        if let Err(e) = access::record_last_used(pool, &due).await {
            // Put them back (keeping newer uses): they are written on the next round.
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for (id, at) in due {
                p.due.entry(id).or_insert(at);
            }
            return Err(e);
        }
        Ok(n)
    }

    /// Flushes every `every` until `stop` turns true, then once more.
    pub async fn run(self, pool: PgPool, every: Duration, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            if let Err(e) = self.flush(&pool).await {
                tracing::warn!(error = %e, "Writing keys' last use failed; will retry.");
            }
            if *stop.borrow() {
                break;
            }
        }
        let _ = self.flush(&pool).await;
    }
}
