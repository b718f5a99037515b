//! alerter: evaluates alert rules on a cron schedule against the per-minute rollups and group
//! state, opens or updates incidents, and delivers their notifications (SMTP email, Slack incoming
//! webhook, signed JSON webhook) from an outbox with retries and backoff.
//!
//! ```text
//! cron tick --> evaluate(&pool, tick) --(one tx per rule: incident + outbox rows)--> Postgres
//! delivery loop --> deliver_due(&pool, now) --claim (lease)--> send (no tx) --> record attempt
//! ```
//! Several alerters may run at once: rules are claimed with `FOR UPDATE SKIP LOCKED` and marked
//! evaluated for the tick; notifications are claimed with a lease and carry a unique idempotency
//! key. Missed ticks (a pause, a restart) are skipped, not replayed in a burst.
//!
//! # Layout
//! - [`rule`]: rule kinds, channels, durations, the rule's readable sentence (shared with the API).
//! - [`evaluate`]: the evaluator's unit of work, `evaluate(&pool, now) -> Vec<Firing>`.
//! - [`deliver`]: the delivery unit of work, `Delivery::deliver_due(&pool, now)`, and test sends.
//! - [`channels`]: webhook (HMAC signature), Slack and email senders; the SSRF guard.
//! - [`store`]: all of the alerter's SQL.
//! - [`checks`]: Postgres/Redis/RabbitMQ health checks, recorded for the uptime endpoint.
//! - [`http`]: `/health` and `/metrics`.

pub mod channels;
pub mod checks;
pub mod deliver;
pub mod evaluate;
pub mod http;
pub mod rule;
pub mod store;

pub use deliver::{Delivery, DeliveryConfig, DeliveryReport};
pub use evaluate::{Firing, evaluate};

use anyhow::Context;
use chrono::Utc;
use faultline_shared::{config::AlerterSettings, db, telemetry};
use sqlx::PgPool;
use std::{future::Future, str::FromStr, sync::Arc, time::Duration};
use tokio::sync::{Notify, watch};

/// Installs rustls' ring provider (reqwest is built without one); harmless when already done.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Parses a schedule: cron with seconds first, e.g. `*/30 * * * * *`.
pub fn parse_schedule(expr: &str) -> anyhow::Result<cron::Schedule> {
    cron::Schedule::from_str(expr).with_context(|| {
        format!("ALERTER_SCHEDULE {expr:?} is not a 6-field cron expression (seconds first)")
    })
}

/// The first tick strictly after `now`. The loop asks again after every evaluation, so ticks
/// missed during a pause (a stopped process, a slow round) are skipped rather than replayed.
pub fn next_tick(
    schedule: &cron::Schedule,
    now: chrono::DateTime<Utc>,
) -> Option<chrono::DateTime<Utc>> {
    schedule.after(&now).next()
}

/// Runs the alerter until `shutdown` resolves; a delivery round in progress is finished first.
pub async fn run(
    settings: AlerterSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    install_crypto();
    let schedule = parse_schedule(&settings.schedule)?;
    let pool = db::connect_and_migrate(
        &settings.services.database_url,
        settings.services.db_max_connections,
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", settings.port))
        .await
        .with_context(|| format!("binding ALERTER_PORT {}", settings.port))?;
    tracing::info!(port = settings.port, schedule = %settings.schedule, "alerter listening");
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let latest = checks::LatestChecks::default();
    let http_state = http::HealthState {
        pool: pool.clone(),
        latest: latest.clone(),
        metrics: telemetry::metrics_handle(),
    };
    let mut http_stop = stop_rx.clone();
    let http_task = tokio::spawn(async move {
        let _ = axum::serve(listener, http::router(http_state))
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|s| *s).await;
            })
            .await;
    });

    let instance = db::instance_name();
    let started_at = Utc::now();
    tokio::spawn(heartbeat_loop(
        pool.clone(),
        instance.clone(),
        started_at,
        settings.heartbeat_interval,
        stop_rx.clone(),
    ));
    tokio::spawn(checks_loop(
        pool.clone(),
        settings.clone(),
        latest,
        instance,
        stop_rx.clone(),
    ));
    let wake = Arc::new(Notify::new());
    let delivery = Delivery::new(DeliveryConfig::from_settings(&settings));
    let delivery_task = tokio::spawn(delivery_loop(
        pool.clone(),
        delivery,
        settings.delivery_interval,
        wake.clone(),
        stop_rx.clone(),
    ));

    evaluation_loop(&pool, &schedule, &wake, stop_rx).await;

    let _ = delivery_task.await;
    let _ = http_task.await;
    pool.close().await;
    tracing::info!("alerter stopped");
    Ok(())
}

/// Sleeps until the next tick and evaluates for that tick's time. Ticks missed while the process
/// was paused or busy are not replayed: after a late wake the next tick is computed from now.
async fn evaluation_loop(
    pool: &PgPool,
    schedule: &cron::Schedule,
    wake: &Notify,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let Some(tick) = next_tick(schedule, Utc::now()) else {
            tracing::warn!("The schedule has no future tick; evaluation stops.");
            let _ = stop.wait_for(|s| *s).await;
            return;
        };
        let wait = (tick - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match evaluate(pool, tick).await {
            Ok(firings) => {
                if firings.iter().any(|f| !f.notifications.is_empty()) {
                    wake.notify_one();
                }
            }
            Err(e) => tracing::warn!(error = format!("{e:#}"), "Evaluation round failed."),
        }
    }
}

async fn delivery_loop(
    pool: PgPool,
    delivery: Delivery,
    interval: Duration,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if let Err(e) = delivery.deliver_due(&pool, Utc::now()).await {
            tracing::warn!(error = format!("{e:#}"), "Delivery round failed.");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = wake.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

async fn heartbeat_loop(
    pool: PgPool,
    instance: String,
    started_at: chrono::DateTime<Utc>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let details = serde_json::json!({ "version": env!("CARGO_PKG_VERSION") });
        if let Err(e) = db::heartbeat(&pool, "alerter", &instance, started_at, details).await {
            tracing::debug!(error = %e, "Heartbeat not written.");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

async fn checks_loop(
    pool: PgPool,
    settings: AlerterSettings,
    latest: checks::LatestChecks,
    instance: String,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        checks::check_all(&pool, &settings.services, &latest, &instance).await;
        tokio::select! {
            _ = tokio::time::sleep(settings.health_check_interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_default_schedule_ticks_every_30_seconds_and_five_field_lines_are_refused() {
        let s = parse_schedule("*/30 * * * * *").unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 10).unwrap();
        assert_eq!(
            next_tick(&s, now),
            Some(Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 30).unwrap())
        );
        assert!(parse_schedule("*/5 * * * *").is_err());
    }

    #[test]
    fn missed_ticks_are_skipped_not_replayed() {
        let s = parse_schedule("*/30 * * * * *").unwrap();
        // The process was paused for ten minutes after the 12:00:00 tick: the next tick is the
        // first one after waking, not the twenty it slept through.
        let woke = Utc.with_ymd_and_hms(2026, 11, 23, 12, 10, 5).unwrap();
        assert_eq!(
            next_tick(&s, woke),
            Some(Utc.with_ymd_and_hms(2026, 11, 23, 12, 10, 30).unwrap())
        );
    }
}
