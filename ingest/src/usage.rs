//! Accepted and refused events per project, key, hour and reason, behind `GET /api/usage`, so
//! nothing is dropped silently: a client can see what was refused and why (validation, size,
//! permission, rate limit, broker unavailable).
//!
//! Counting costs the request path one map update: counts gather in memory and a background loop
//! adds them to Redis hashes (`<prefix>:usage:<project>:<hour>`, field `<key id>|<outcome>`, kept
//! 8 days) in one pipeline. Redis is an accelerator here too: while it is down counts wait in
//! memory (bounded) and the Prometheus counters (`ingest_events_rejected_total{reason}`) still
//! count every refusal.

use crate::redis_handle::RedisHandle;
use axum::http::StatusCode;
use chrono::{DateTime, TimeZone, Utc};
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::watch;
use uuid::Uuid;

/// How long hourly counts are kept.
const RETENTION: Duration = Duration::from_secs(8 * 24 * 3600);
/// Most distinct (project, key, hour, outcome) cells held while Redis is unreachable.
const MAX_PENDING: usize = 100_000;

/// What a batch handler reports on its response (an extension) so the exact numbers are counted.
#[derive(Debug, Clone, Copy)]
pub struct IngestCounts {
    pub accepted: u64,
    pub invalid: u64,
}

/// The refusal reason of an ingest answer that carries no `IngestCounts`, from its status.
pub fn reason_of(status: StatusCode) -> Option<&'static str> {
    match status.as_u16() {
        200..=299 => None,
        400 | 415 => Some("validation"),
        413 => Some("size"),
        403 => Some("permission"),
        429 => Some("rate_limited"),
        503 => Some("unavailable"),
        _ => Some("error"),
    }
}

type Cell = (Uuid, Uuid, i64, String);

#[derive(Clone)]
pub struct Usage {
    redis: RedisHandle,
    prefix: String,
    pending: Arc<Mutex<HashMap<Cell, u64>>>,
}

fn hour_of(at: DateTime<Utc>) -> i64 {
    at.timestamp() - at.timestamp().rem_euclid(3600)
}

impl Usage {
    pub fn new(redis: RedisHandle, prefix: &str) -> Self {
        Self {
            redis,
            prefix: prefix.to_string(),
            pending: Arc::default(),
        }
    }

    /// Counts `n` events of `key` as `outcome` ("accepted" or "refused:<reason>").
    pub fn record(&self, project: Uuid, key: Uuid, outcome: &str, n: u64) {
        if n == 0 {
            return;
        }
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let cell = (project, key, hour_of(Utc::now()), outcome.to_string());
        if p.len() >= MAX_PENDING && !p.contains_key(&cell) {
            metrics::counter!("usage_counts_dropped_total").increment(n);
            return;
        }
        *p.entry(cell).or_default() += n;
    }

    fn hash_key(&self, project: Uuid, hour: i64) -> String {
        format!("{}:usage:{project}:{hour}", self.prefix)
    }

    /// Adds what is pending to Redis in one pipeline; on failure it stays pending.
    pub async fn flush(&self) -> Result<usize, String> {
        let cells: Vec<(Cell, u64)> = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.drain().collect()
        };
        if cells.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for ((project, key, hour, outcome), n) in &cells {
            let hash = self.hash_key(*project, *hour);
            pipe.hincr(&hash, format!("{key}|{outcome}"), *n)
                .ignore()
                .expire(&hash, RETENTION.as_secs() as i64)
                .ignore();
        }
        let result = async {
            let mut conn = self.redis.get().await?;
            tokio::time::timeout(Duration::from_secs(2), pipe.query_async::<()>(&mut conn))
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| e.to_string())
        }
        .await;
        if let Err(e) = result {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for (cell, n) in cells {
                *p.entry(cell).or_default() += n;
            }
            return Err(e);
        }
        Ok(cells.len())
    }

    /// Flushes every `every` until `stop`, then once more.
    pub async fn run(self, every: Duration, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            if let Err(e) = self.flush().await {
                tracing::debug!(error = %e, "Usage counts not written yet (Redis); kept in memory.");
            }
            if *stop.borrow() {
                break;
            }
        }
        let _ = self.flush().await;
    }

    /// The project's counts for the last `hours` hours (newest first): per hour the accepted
    /// events, the refused ones by reason, and the same per key.
    pub async fn report(&self, project: Uuid, hours: u32) -> Result<serde_json::Value, String> {
        let now = hour_of(Utc::now());
        let hour_starts: Vec<i64> = (0..i64::from(hours)).map(|i| now - i * 3600).collect();
        let mut pipe = redis::pipe();
        for h in &hour_starts {
            pipe.hgetall(self.hash_key(project, *h));
        }
        let mut conn = self.redis.get().await?;
        let maps: Vec<HashMap<String, u64>> =
            tokio::time::timeout(Duration::from_secs(2), pipe.query_async(&mut conn))
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for (h, fields) in hour_starts.iter().zip(maps) {
            let mut accepted = 0u64;
            let mut refused: BTreeMap<String, u64> = BTreeMap::new();
            let mut keys: BTreeMap<String, serde_json::Value> = BTreeMap::new();
            for (field, n) in fields {
                let Some((key, outcome)) = field.split_once('|') else {
                    continue;
                };
                let entry = keys
                    .entry(key.to_string())
                    .or_insert_with(|| serde_json::json!({"accepted": 0, "refused": {}}));
                if outcome == "accepted" {
                    accepted += n;
                    entry["accepted"] = (entry["accepted"].as_u64().unwrap_or(0) + n).into();
                } else if let Some(reason) = outcome.strip_prefix("refused:") {
                    *refused.entry(reason.to_string()).or_default() += n;
                    entry["refused"][reason] =
                        (entry["refused"][reason].as_u64().unwrap_or(0) + n).into();
                }
            }
            let start = Utc.timestamp_opt(*h, 0).single().unwrap_or_default();
            out.push(serde_json::json!({
                "hour": start,
                "accepted": accepted,
                "refused": refused,
                "refused_total": refused.values().sum::<u64>(),
                "keys": keys,
            }));
        }
        Ok(serde_json::json!({ "hours": out }))
    }
}
