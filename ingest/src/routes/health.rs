//! `/health` (each dependency measured now) and `/metrics` (Prometheus text).

use crate::AppState;
use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use chrono::Utc;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn check(ok: bool, started: Instant, error: Option<String>) -> Value {
    let mut v = json!({
        "status": if ok { "healthy" } else { "unhealthy" },
        "response_time_ms": started.elapsed().as_secs_f64() * 1000.0,
    });
    if let Some(e) = error {
        v["error"] = Value::String(e);
    }
    v
}

/// 200 while ingest can take events (the broker is reachable and does not block publishing);
/// 503 otherwise. Postgres and Redis
/// are reported but do not fail the check: known keys are cached and Redis is only an accelerator.
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let started = Instant::now();
    let pg = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&state.pool),
    )
    .await;
    let postgres = match pg {
        Ok(Ok(_)) => check(true, started, None),
        Ok(Err(e)) => check(false, started, Some(e.to_string())),
        Err(_) => check(false, started, Some("timed out".into())),
    };
    let started = Instant::now();
    let redis = match state.redis.ping().await {
        Ok(()) => check(true, started, None),
        Err(e) => check(false, started, Some(e)),
    };
    let broker_error = if !state.publisher.is_connected() {
        Some("not connected".to_string())
    } else {
        state
            .publisher
            .blocked()
            .map(|reason| format!("the broker blocks publishing: {reason}"))
    };
    let broker_ok = broker_error.is_none();
    let rabbitmq = check(broker_ok, Instant::now(), broker_error);
    let status = if broker_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if broker_ok { "ok" } else { "unavailable" },
            "timestamp": Utc::now(),
            "checks": {"postgres": postgres, "rabbitmq": rabbitmq, "redis": redis},
        })),
    )
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // Read at scrape time rather than on every request: the budget is touched twice per event
    // request, a scrape comes every few seconds.
    metrics::gauge!("ingest_body_budget_available_bytes")
        .set(state.body_budget.available_bytes() as f64);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}
