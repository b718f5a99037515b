//! Every route of ingest, in one place, grouped by audience.

mod analytics;
mod errors;
mod events;
mod health;
mod monitoring;
mod params;
mod sentry;

use crate::AppState;
use axum::{
    Router,
    routing::{get, post, put},
};

pub fn router(state: AppState) -> Router {
    // SDK ingest: the hot path.
    let sdk = Router::new()
        .route("/api/errors", post(events::create_error))
        .route("/api/errors/batch", post(events::create_errors_batch));

    // Sentry SDKs (any Sentry SDK with a Faultline DSN): envelopes and legacy store requests.
    let sentry_sdk = Router::new()
        .route("/api/{project_id}/envelope/", post(sentry::envelope))
        .route("/api/{project_id}/envelope", post(sentry::envelope))
        .route("/api/{project_id}/store/", post(sentry::store))
        .route("/api/{project_id}/store", post(sentry::store))
        .layer(axum::middleware::from_fn(sentry::sentry_headers));

    // Dashboard API: errors, analytics and monitoring (reads cached in Redis).
    let dashboard = Router::new()
        .route("/api/errors", get(errors::list_errors))
        .route(
            "/api/errors/{id}",
            get(errors::get_error).delete(errors::delete_error),
        )
        .route("/api/errors/{id}/events", get(errors::list_error_events))
        .route("/api/errors/{id}/resolve", put(errors::resolve_error))
        .route("/api/errors/{id}/reopen", put(errors::reopen_error))
        .route("/api/stats", get(analytics::stats))
        .route("/api/analytics/trends", get(analytics::trends))
        .route("/api/analytics/performance", get(analytics::performance))
        .route("/api/monitoring/services", get(monitoring::services))
        .route("/api/monitoring/metrics", get(monitoring::metrics))
        .route("/api/monitoring/uptime", get(monitoring::uptime));

    // Operations: unauthenticated health and metrics.
    let ops = Router::new()
        .route("/health", get(health::health))
        .route("/metrics", get(health::metrics));

    Router::new()
        .merge(sdk)
        .merge(sentry_sdk)
        .merge(dashboard)
        .merge(ops)
        .with_state(state)
}
