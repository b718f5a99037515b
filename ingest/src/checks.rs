//! Probes of what ingest depends on (Postgres, Redis, RabbitMQ) and of the worker and alerter
//! (their heartbeats), each timed. `/api/monitoring/services` runs them on demand; the recorder
//! loop runs the cheap ones every `HEALTH_CHECK_INTERVAL_SECS` and stores the verdicts in
//! `health_checks`, which uptime and availability are computed from.

use crate::{AppState, queries::reads};
use chrono::{Duration as ChronoDuration, Utc};
use faultline_shared::queue::{self, Topology};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A heartbeat older than this means the process is gone (they are written every few seconds).
pub const HEARTBEAT_FRESH: ChronoDuration = ChronoDuration::seconds(30);
/// Health checks are kept this long (the longest uptime window is 30 days).
const KEEP_CHECKS: ChronoDuration = ChronoDuration::days(31);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct Probe {
    pub component: &'static str,
    /// "healthy", "unhealthy" or "unknown" (never seen).
    pub status: &'static str,
    pub response_time_ms: f64,
    pub error: Option<String>,
    pub details: Value,
}

impl Probe {
    pub fn healthy(&self) -> bool {
        self.status == "healthy"
    }

    fn new(component: &'static str, started: Instant, result: Result<Value, String>) -> Self {
        let response_time_ms = started.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok(details) => Probe {
                component,
                status: "healthy",
                response_time_ms,
                error: None,
                details,
            },
            Err(e) => Probe {
                component,
                status: "unhealthy",
                response_time_ms,
                error: Some(e),
                details: json!({}),
            },
        }
    }
}

async fn timed<T, E: std::fmt::Display>(
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(PROBE_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_string()),
    }
}

/// `SELECT 1`; with `deep`, also the pool and server connection figures.
pub async fn postgres(state: &AppState, deep: bool) -> Probe {
    let started = Instant::now();
    let result = async {
        timed(sqlx::query("SELECT 1").execute(&state.pool)).await?;
        if !deep {
            return Ok(json!({}));
        }
        let pg = timed(reads::pg_stats(&state.pool)).await?;
        Ok(json!({
            "connections": pg.connections,
            "active_connections": pg.active,
            "max_connections": pg.max_connections,
            "pool_size": state.pool.size(),
            "pool_idle": state.pool.num_idle(),
            "pool_max": state.settings.services.db_max_connections,
            "database_bytes": pg.database_bytes,
        }))
    }
    .await;
    Probe::new("postgres", started, result)
}

/// `PING`; with `deep`, also memory and clients from `INFO`.
pub async fn redis(state: &AppState, deep: bool) -> Probe {
    let started = Instant::now();
    let result = async {
        state.redis.ping().await?;
        if !deep {
            return Ok(json!({}));
        }
        let mut conn = state.redis.get().await?;
        let info: String = timed(redis::cmd("INFO").query_async(&mut conn)).await?;
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        Ok(json!({
            "used_memory_bytes": field("used_memory"),
            "connected_clients": field("connected_clients"),
            "keyspace_hits": field("keyspace_hits"),
            "keyspace_misses": field("keyspace_misses"),
        }))
    }
    .await;
    Probe::new("redis", started, result)
}

/// Whether the publisher is connected; with `deep`, also the queue depth and consumers (a
/// passive declare on a short-lived connection).
pub async fn rabbitmq(state: &AppState, deep: bool) -> Probe {
    let started = Instant::now();
    let result = async {
        if !state.publisher.is_connected() {
            return Err("the publisher is not connected".to_string());
        }
        if let Some(reason) = state.publisher.blocked() {
            return Err(format!("the broker blocks publishing: {reason}"));
        }
        if !deep {
            return Ok(json!({}));
        }
        let topology = Topology::new(&state.settings.services.queue_prefix);
        let conn = timed(queue::connect(
            &state.settings.services.amqp_url,
            "faultline-ingest-probe",
        ))
        .await?;
        let depth = async {
            let ch = timed(conn.create_channel()).await?;
            let (ready, consumers) = timed(queue::queue_depth(&ch, &topology.queue)).await?;
            let (dead, _) = timed(queue::queue_depth(&ch, &topology.dead_queue)).await?;
            Ok::<_, String>((ready, consumers, dead))
        }
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.close(200, "probe".into())).await;
        let (ready, consumers, dead) = depth?;
        Ok(json!({
            "queue": topology.queue,
            "queue_depth": ready,
            "consumers": consumers,
            "dead_lettered": dead,
        }))
    }
    .await;
    Probe::new("rabbitmq", started, result)
}

/// Liveness of `service` ("worker" or "alerter") from its heartbeats: healthy while at least one
/// instance wrote one recently, unknown when none ever did.
pub async fn heartbeat(state: &AppState, service: &'static str) -> Probe {
    let started = Instant::now();
    let live = timed(reads::heartbeats(
        &state.pool,
        service,
        Utc::now() - HEARTBEAT_FRESH,
    ))
    .await;
    // A worker that is alive but not attached to the broker is not processing anything.
    let live = live.map(|rows| {
        rows.into_iter()
            .filter(|r| r.details.get("consuming") != Some(&Value::Bool(false)))
            .collect::<Vec<_>>()
    });
    let mut probe = match live {
        Ok(rows) if !rows.is_empty() => {
            let instances: Vec<Value> = rows
                .iter()
                .map(|r| {
                    json!({
                        "instance": r.instance,
                        "started_at": r.started_at,
                        "last_seen": r.last_seen,
                        "details": r.details,
                    })
                })
                .collect();
            Probe::new(service, started, Ok(json!({ "instances": instances })))
        }
        Ok(_) => {
            let ever = timed(reads::heartbeats(
                &state.pool,
                service,
                chrono::DateTime::<Utc>::UNIX_EPOCH,
            ))
            .await
            .map(|rows| !rows.is_empty())
            .unwrap_or(true);
            let mut p = Probe::new(
                service,
                started,
                Err(format!(
                    "no {service} heartbeat in the last {}s",
                    HEARTBEAT_FRESH.num_seconds()
                )),
            );
            if !ever {
                p.status = "unknown";
            }
            p
        }
        Err(e) => Probe::new(service, started, Err(e)),
    };
    probe.response_time_ms = started.elapsed().as_secs_f64() * 1000.0;
    probe
}

/// Records one round of checks. "api" is healthy when ingest can take events and serve reads
/// (Postgres and the broker are reachable); Redis, worker and alerter are recorded on their own.
pub async fn record_once(state: &AppState) {
    let started = Instant::now();
    let (pg, rd, mq, worker, alerter) = tokio::join!(
        postgres(state, false),
        redis(state, false),
        rabbitmq(state, false),
        heartbeat(state, "worker"),
        heartbeat(state, "alerter"),
    );
    let api_ok = pg.healthy() && mq.healthy();
    let api = Probe::new(
        "api",
        started,
        if api_ok {
            Ok(json!({}))
        } else {
            Err("postgres or the broker is unreachable".to_string())
        },
    );
    for p in [&api, &pg, &rd, &mq, &worker, &alerter] {
        // A service never deployed (no heartbeat ever) is not recorded as down.
        if p.status == "unknown" {
            continue;
        }
        if let Err(e) = reads::record_health_check(
            &state.pool,
            &state.instance,
            p.component,
            p.healthy(),
            p.response_time_ms,
            p.error.as_deref(),
        )
        .await
        {
            // Postgres down: nothing can be recorded; the gap itself shows in uptime.
            tracing::debug!(error = %e, "Health check not recorded.");
            return;
        }
    }
}

/// Records checks every `interval` until `stop` turns true; prunes old checks once an hour.
pub async fn record_loop(state: AppState, interval: Duration, mut stop: watch::Receiver<bool>) {
    // The first check waits one interval: at start-up the publisher is still connecting.
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune = Instant::now() - Duration::from_secs(3600);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        record_once(&state).await;
        if last_prune.elapsed() >= Duration::from_secs(3600) {
            last_prune = Instant::now();
            match reads::prune_health_checks(&state.pool, Utc::now() - KEEP_CHECKS).await {
                Ok(n) if n > 0 => tracing::debug!(deleted = n, "Old health checks pruned."),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "Health checks not pruned."),
            }
        }
    }
}
