//! Every route of ingest, in one place, grouped by audience.

mod events;
mod health;

use crate::AppState;
use axum::{
    Router,
    routing::{get, post},
};

pub fn router(state: AppState) -> Router {
    // SDK ingest: the hot path.
    let sdk = Router::new()
        .route("/api/errors", post(events::create_error))
        .route("/api/errors/batch", post(events::create_errors_batch));

    // Operations: unauthenticated health and metrics.
    let ops = Router::new()
        .route("/health", get(health::health))
        .route("/metrics", get(health::metrics));

    Router::new().merge(sdk).merge(ops).with_state(state)
}
