//! The worker's `/health` and `/metrics`, on WORKER_PORT.

use crate::consumer::ConsumerState;
use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use sqlx::PgPool;
use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

#[derive(Clone)]
pub struct HealthState {
    pub pool: PgPool,
    pub consumer: ConsumerState,
    pub metrics: PrometheusHandle,
}

pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// 503 unless Postgres answers *and takes writes* and the consumer is attached: any of them
/// missing means events are not being processed. `SELECT 1` alone would call a read-only
/// database (a standby after a failover, `default_transaction_read_only`) or a full disk
/// healthy while every batch fails. A full disk shows only in the batches' errors, so it is
/// reported from the consumer's last attempt (cleared by its next commit).
async fn health(State(state): State<HealthState>) -> impl IntoResponse {
    let started = Instant::now();
    let pg = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query_scalar::<_, bool>(
            "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only')::bool",
        )
        .fetch_one(&state.pool),
    )
    .await;
    let disk_full = state.consumer.db_disk_full.load(Ordering::Relaxed);
    let pg_status = match pg {
        Ok(Ok(true)) => "read_only",
        Ok(Ok(false)) if disk_full => "disk_full",
        Ok(Ok(false)) => "healthy",
        _ => "unhealthy",
    };
    if let Ok(Ok(read_only)) = pg {
        crate::consumer::set_read_only(&state.consumer.db_read_only, read_only);
    }
    let pg_ok = pg_status == "healthy";
    let pg_ms = started.elapsed().as_secs_f64() * 1000.0;
    let broker_ok = state.consumer.connected.load(Ordering::Relaxed);
    let ok = pg_ok && broker_ok;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ok { "ok" } else { "unavailable" },
            "timestamp": chrono::Utc::now(),
            "checks": {
                "postgres": {"status": pg_status, "response_time_ms": pg_ms},
                "rabbitmq": {"status": if broker_ok { "healthy" } else { "unhealthy" }},
            }
        })),
    )
}

async fn metrics(State(state): State<HealthState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}
