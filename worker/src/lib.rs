//! worker: consumes events from RabbitMQ, fingerprints them, and writes each batch (events,
//! groups, per-minute counts) to Postgres in one transaction, acking only after the commit.
//!
//! # Layout
//! - [`process`]: the unit of work, `process_batch(&pool, &events) -> Outcome`, called by tests.
//! - [`store`]: all of the worker's SQL.
//! - [`consumer`]: the broker loop (batching, dead-lettering, ack after commit, retry).
//! - [`dead_letter`]: the dead-letter exchange, on a connection of its own.
//! - [`retention`]: deletes expired events in bounded batches.
//! - [`http`]: `/health` and `/metrics`.
//! - [`invalidate`]: bumps ingest's read-cache generations after commits; the heartbeat.

pub mod consumer;
pub mod dead_letter;
pub mod http;
pub mod invalidate;
pub mod process;
pub mod retention;
pub mod store;
pub mod window;

use anyhow::Context;
use faultline_shared::{config::WorkerSettings, db, telemetry};
use std::future::Future;
use tokio::sync::watch;

/// Runs the worker until `shutdown` resolves; then the batch in hand is committed and acked
/// before this returns.
pub async fn run(
    settings: WorkerSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", settings.port))
        .await
        .with_context(|| format!("binding WORKER_PORT {}", settings.port))?;
    run_with_listener(settings, listener, shutdown).await
}

/// [`run`] serving `/health` and `/metrics` on a listener the caller bound: tests bind port 0
/// and so know where to ask the worker how it is.
pub async fn run_with_listener(
    settings: WorkerSettings,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let pool = db::connect_and_migrate(
        &settings.services.database_url,
        settings.services.db_max_connections,
    )
    .await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let consumer_state = consumer::ConsumerState::default();
    let http_state = http::HealthState {
        pool: pool.clone(),
        consumer: consumer_state.clone(),
        metrics: telemetry::metrics_handle(),
    };
    let mut http_stop = stop_rx.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, http::router(http_state))
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|s| *s).await;
            })
            .await;
    });
    tokio::spawn(retention::run(
        pool.clone(),
        settings.clone(),
        stop_rx.clone(),
    ));
    let bumps = tokio::spawn(invalidate::bump_loop(
        settings.services.redis_url.clone(),
        settings.services.redis_prefix.clone(),
        consumer_state.progress.clone(),
        stop_rx.clone(),
    ));
    let heartbeat = tokio::spawn(invalidate::heartbeat_loop(
        pool.clone(),
        consumer_state.connected.clone(),
        consumer_state.progress.clone(),
        stop_rx.clone(),
    ));
    consumer::run(settings, pool.clone(), consumer_state, stop_rx).await;
    // The consumer has committed its last batch: let the final bump and heartbeat finish.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), bumps).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), heartbeat).await;
    pool.close().await;
    Ok(())
}
