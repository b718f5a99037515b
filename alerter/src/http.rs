//! The alerter's `/health` and `/metrics`, on ALERTER_PORT.

use crate::checks::{self, LatestChecks};
use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use sqlx::PgPool;

#[derive(Clone)]
pub struct HealthState {
    pub pool: PgPool,
    pub latest: LatestChecks,
    pub metrics: PrometheusHandle,
}

pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// 503 when Postgres does not answer: without it the alerter can neither evaluate nor deliver.
/// Redis and RabbitMQ are reported from the last recorded check but are not needed here.
async fn health(State(state): State<HealthState>) -> impl IntoResponse {
    let pg = checks::check_postgres(&state.pool).await;
    let ok = pg.healthy;
    let mut deps = serde_json::Map::new();
    for (name, r) in state.latest.all() {
        deps.insert(
            name.to_string(),
            json!({
                "status": if r.healthy { "healthy" } else { "unhealthy" },
                "response_time_ms": r.response_time_ms,
                "last_checked": r.checked_at,
            }),
        );
    }
    deps.insert(
        "postgres".into(),
        json!({
            "status": if pg.healthy { "healthy" } else { "unhealthy" },
            "response_time_ms": pg.response_time_ms,
            "last_checked": pg.checked_at,
        }),
    );
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
            "checks": deps,
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
