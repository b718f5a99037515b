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

/// 503 unless both Postgres answers and the consumer is attached: either missing means events
/// are not being processed.
async fn health(State(state): State<HealthState>) -> impl IntoResponse {
    let started = Instant::now();
    let pg = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&state.pool),
    )
    .await;
    let pg_ok = matches!(pg, Ok(Ok(_)));
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
                "postgres": {"status": if pg_ok { "healthy" } else { "unhealthy" }, "response_time_ms": pg_ms},
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
