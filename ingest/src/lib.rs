//! ingest: the HTTP front door. It authenticates, validates and stamps events and hands them to
//! RabbitMQ, answering 202 only once the broker confirmed; it also serves health and metrics.
//!
//! # Layout
//! - [`routes`]: every route in one function; one file per route group.
//! - [`publisher`]: the group-commit publisher (many requests, one confirm round).
//! - [`auth`]: `X-API-Key` authentication with a short-TTL in-memory key cache.
//! - [`ratelimit`]: per-key, per-scope rate limits (GCRA in one Redis Lua step; fails open).
//! - [`key_usage`]: keys' `last_used`, coalesced (no database write per request).
//! - [`usage`]: accepted and refused events per project, key, hour and reason (`GET /api/usage`).
//! - [`cors`]: CORS for browser SDKs and dashboards on other origins (`CORS_ALLOWED_ORIGINS`).
//! - [`scrub`]: filters secrets (sensitive context keys, card numbers) out of events before publish.
//! - [`extract`], [`validate`]: body extraction (415/413/400) and per-field validation.
//! - [`error`]: `ApiError`, the one error body.
//! - [`cli`]: `ingest migrate` and `ingest create-key`.
//! - [`server`]: the accept loop (hyper HTTP/1.1 with header, idle and size limits; graceful
//!   shutdown).
//! - [`sentry`]: the Sentry protocol (DSNs, envelopes, event mapping), served by `routes::sentry`.
//! - [`queries`]: ingest's SQL (the dashboard reads in `queries::reads`).
//! - [`cache`]: the Redis read cache (per-project generations, ETag/304).
//! - [`checks`]: timed probes of dependencies and the health-check recorder behind uptime.
//! - [`request_stats`]: this process's per-minute request figures (performance, metrics).

pub mod auth;
pub mod cache;
pub mod checks;
pub mod cli;
pub mod cors;
pub mod error;
pub mod extract;
#[cfg(test)]
mod json_strategy;
pub mod key_usage;
pub mod publisher;
pub mod queries;
pub mod ratelimit;
pub mod redis_handle;
pub mod request_stats;
pub mod route_metrics;
pub mod routes;
pub mod scrub;
pub mod sentry;
pub mod server;
pub mod usage;
pub mod validate;

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderName, HeaderValue},
    middleware::Next,
    response::Response,
};
use faultline_shared::{config::IngestSettings, db, queue::Topology, telemetry};
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use std::{future::Future, sync::Arc, time::Instant};
use tokio::net::TcpListener;
use tracing::Instrument;

/// Everything a handler may need. Axum clones the state for every extractor and middleware of
/// every request, so it is one `Arc`: cloning the parts themselves (Redis client settings, scrub
/// patterns, strings) cost ~5 % of ingest's CPU under load in a profile.
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl std::ops::Deref for AppState {
    type Target = AppParts;
    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct AppParts {
    pub settings: Arc<IngestSettings>,
    pub pool: PgPool,
    pub publisher: publisher::Publisher,
    pub keys: auth::KeyCache,
    pub redis: redis_handle::RedisHandle,
    pub metrics: PrometheusHandle,
    /// Per-key rate limits in Redis.
    pub limiter: ratelimit::RateLimiter,
    /// Keys' last use, written in the background at most once a minute per key.
    pub key_usage: key_usage::KeyUsage,
    /// Filters secrets out of events before they are published.
    pub scrubber: scrub::Scrubber,
    /// Bounds the bytes of event bodies in hand at once (`extract::BodyBudget`).
    pub body_budget: extract::BodyBudget,
    /// Accepted and refused events per project, key and hour.
    pub usage: usage::Usage,
    /// The Redis read cache of the dashboard API.
    pub cache: cache::ReadCache,
    /// This process's request figures, for the performance and metrics endpoints.
    pub requests: request_stats::RequestStats,
    pub route_metrics: route_metrics::RouteMetrics,
    /// When this process started, and its name in health checks.
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub instance: String,
    /// The port actually bound (PORT may be 0).
    pub local_port: u16,
}

/// A bound, not yet serving, ingest. Binding first lets tests use port 0 and learn the port.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    pub state: AppState,
    /// Stops the background tasks (the health-check recorder) when serving ends.
    background_stop: tokio::sync::watch::Sender<bool>,
}

impl Application {
    /// Connects to Postgres (applying migrations), starts the publisher and binds the port.
    pub async fn build(settings: IngestSettings) -> anyhow::Result<Self> {
        use anyhow::Context;
        let pool = db::connect_and_migrate(
            &settings.services.database_url,
            settings.services.db_max_connections,
        )
        .await?;
        let publisher = publisher::Publisher::start(publisher::PublisherConfig {
            amqp_url: settings.services.amqp_url.clone(),
            topology: Topology::new(&settings.services.queue_prefix),
            max_in_flight: settings.publish_max_in_flight,
            max_events: settings.publish_max_events,
            linger: settings.publish_linger,
            confirm_timeout: settings.publish_timeout,
        });
        let listener =
            bind(settings.port).with_context(|| format!("binding port {}", settings.port))?;
        let redis = redis_handle::RedisHandle::new(&settings.services.redis_url);
        let state = AppState(Arc::new(AppParts {
            keys: auth::KeyCache::new(pool.clone(), settings.key_cache_ttl),
            cache: cache::ReadCache::new(redis.clone(), &settings.services.redis_prefix),
            limiter: ratelimit::RateLimiter::new(
                redis.clone(),
                &settings.services.redis_prefix,
                settings.access.clone(),
            ),
            key_usage: key_usage::KeyUsage::new(settings.access.last_used_interval),
            scrubber: scrub::Scrubber::new(&settings.access.scrub_fields),
            body_budget: extract::BodyBudget::new(
                settings.body_budget_bytes,
                settings.max_body_bytes,
            ),
            usage: usage::Usage::new(redis.clone(), &settings.services.redis_prefix),
            redis,
            metrics: telemetry::metrics_handle(),
            settings: Arc::new(settings.clone()),
            pool,
            publisher,
            requests: request_stats::RequestStats::new(),
            route_metrics: route_metrics::RouteMetrics::default(),
            started_at: chrono::Utc::now(),
            instance: db::instance_name(),
            local_port: listener.local_addr().map(|a| a.port()).unwrap_or(0),
        }));
        let router = routes::router(state.clone())
            .layer(cors::layer(&settings.access.cors_origins))
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                track_request,
            ));
        let (background_stop, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(
            state
                .usage
                .clone()
                .run(settings.access.last_used_flush, stop_rx.clone()),
        );
        tokio::spawn(state.key_usage.clone().run(
            state.pool.clone(),
            settings.access.last_used_flush,
            stop_rx.clone(),
        ));
        tokio::spawn(checks::record_loop(
            state.clone(),
            settings.health_check_interval,
            stop_rx,
        ));
        Ok(Self {
            listener,
            router,
            state,
            background_stop,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(port = self.port(), "ingest listening");
        let http = self.state.settings.http.clone();
        server::serve(self.listener, self.router, &http, shutdown).await;
        // Requests admitted locally in the last few ms are still owed to Redis: tell it, unless it
        // does not answer in time.
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            self.state.limiter.settle(),
        )
        .await;
        let _ = self.background_stop.send(true);
        Ok(())
    }
}

/// Most connections the kernel completes and queues before ingest accepts them (capped by
/// `net.core.somaxconn`). tokio's default of 1024 overflows in a burst of new connections, and
/// then the kernel drops handshakes: the clients wait seconds to retry, or believe they are
/// connected to a server that never heard of them.
const LISTEN_BACKLOG: u32 = 4096;

fn bind(port: u16) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(std::net::SocketAddr::from(([0, 0, 0, 0], port)))?;
    socket.listen(LISTEN_BACKLOG)
}

/// Gives each request an id (the client's `X-Request-Id` when sane, else a new UUID v7), makes it
/// available to error bodies, echoes it in the response, and records request metrics by route.
async fn track_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let _in_flight = state.requests.started();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    // The matched path shares its text (an `Arc<str>`), so keeping it costs no copy.
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let method = req.method().clone();
    // Every log line of the request carries its id (and route), through this span.
    let span = tracing::info_span!("request", request_id = %id, %method, route = %route);
    let mut response = error::REQUEST_ID
        .scope(id.clone(), next.run(req))
        .instrument(span)
        .await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-request-id"), v);
    }
    let elapsed = started.elapsed();
    state
        .requests
        .record(elapsed, response.status().is_server_error());
    state
        .route_metrics
        .record(route, &method, response.status().as_u16(), elapsed);
    response
}
