//! Retention: events older than `EVENT_RETENTION_DAYS` are deleted in bounded batches; groups and
//! per-minute counts stay, so totals and trends survive the purge.

use crate::store;
use chrono::{TimeDelta, Utc};
use faultline_shared::config::WorkerSettings;
use sqlx::PgPool;
use tokio::sync::watch;

/// Deletes every event received before now minus `days`, `batch` rows per statement. Returns the
/// number deleted.
pub async fn purge_expired(pool: &PgPool, days: u32, batch: i64) -> Result<u64, sqlx::Error> {
    let cutoff = Utc::now() - TimeDelta::days(i64::from(days));
    let mut total = 0;
    loop {
        let n = store::delete_expired_events(pool, cutoff, batch).await?;
        total += n;
        if (n as i64) < batch {
            break;
        }
        // Let other transactions through between batches.
        tokio::task::yield_now().await;
    }
    Ok(total)
}

pub async fn run(pool: PgPool, settings: WorkerSettings, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(settings.retention_interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        match purge_expired(&pool, settings.retention_days, settings.retention_batch).await {
            Ok(0) => {}
            Ok(n) => {
                metrics::counter!("worker_events_expired_total").increment(n);
                tracing::info!(deleted = n, "Expired events deleted.");
            }
            Err(e) => tracing::warn!(error = %e, "Retention run failed; will retry next interval."),
        }
    }
}
