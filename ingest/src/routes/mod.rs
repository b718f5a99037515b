//! Every route of ingest, in one place, grouped by audience.

mod alerts;
mod analytics;
mod dashboard;
mod errors;
mod events;
mod health;
mod integrations;
mod monitoring;
mod openapi;
mod params;
mod projects;
mod sentry;
mod settings;
mod sparklines;

use crate::AppState;
use axum::{
    Router,
    routing::{delete, get, post, put},
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
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            sentry::sentry_headers,
        ));

    // Dashboard API: errors, analytics and monitoring (reads cached in Redis).
    let dashboard = Router::new()
        .route("/api/errors", get(errors::list_errors))
        .route(
            "/api/errors/{id}",
            get(errors::get_error).delete(errors::delete_error),
        )
        .route("/api/errors/{id}/events", get(errors::list_error_events))
        .route("/api/errors/sparklines", get(sparklines::sparklines))
        .route("/api/errors/{id}/resolve", put(errors::resolve_error))
        .route("/api/errors/{id}/reopen", put(errors::reopen_error))
        .route("/api/stats", get(analytics::stats))
        .route("/api/analytics/trends", get(analytics::trends))
        .route("/api/analytics/performance", get(analytics::performance))
        .route("/api/monitoring/services", get(monitoring::services))
        .route("/api/monitoring/metrics", get(monitoring::metrics))
        .route("/api/monitoring/uptime", get(monitoring::uptime));

    // Dashboard API: projects, API keys and the team (the permission matrix is in README.md).
    let access = Router::new()
        .route(
            "/api/projects",
            get(projects::list_projects).post(projects::create_project),
        )
        .route(
            "/api/settings/api-keys",
            get(settings::list_keys).post(settings::create_key),
        )
        .route("/api/settings/api-keys/{id}", delete(settings::revoke_key))
        .route("/api/settings/team", get(settings::list_team))
        .route("/api/settings/team/invite", post(settings::invite))
        .route("/api/usage", get(projects::usage));

    // Dashboard API: alert rules, incidents, deliveries and notification channels.
    let alerting = Router::new()
        .route(
            "/api/alerts/rules",
            get(alerts::list_rules).post(alerts::create_rule),
        )
        .route(
            "/api/alerts/rules/{id}",
            put(alerts::update_rule).delete(alerts::delete_rule),
        )
        .route(
            "/api/alerts/incidents",
            get(alerts::list_incidents).post(alerts::create_incident),
        )
        .route("/api/alerts/incidents/{id}", put(alerts::update_incident))
        .route("/api/alerts/deliveries", get(alerts::list_deliveries))
        .route(
            "/api/settings/integrations",
            get(integrations::list_integrations),
        )
        .route(
            "/api/settings/integrations/{name}",
            put(integrations::put_integration),
        )
        .route(
            "/api/settings/integrations/{name}/test",
            post(integrations::test_integration),
        );

    // Operations: unauthenticated health and metrics.
    let ops = Router::new()
        .route("/health", get(health::health))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/docs", get(openapi::docs_page));

    Router::new()
        .merge(sdk)
        .merge(sentry_sdk)
        .merge(dashboard)
        .merge(alerting)
        .merge(access)
        .merge(ops)
        // The web dashboard's page and assets (no key: the page asks for one).
        .merge(dashboard::router())
        // Last, so it wraps every route: key authentication and rate limits by scope.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::ratelimit::enforce,
        ))
        .with_state(state)
}
