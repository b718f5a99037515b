//! Health checks of the backing services, recorded over time in `service_checks` (the uptime
//! endpoint computes availability from them) and kept in memory for the alerter's `/health`.

use crate::store;
use faultline_shared::config::ServiceUrls;
use serde::Serialize;
use sqlx::PgPool;
use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

/// Longest a single check may take before the service counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub healthy: bool,
    pub response_time_ms: f64,
    pub error: Option<String>,
    pub checked_at: chrono::DateTime<chrono::Utc>,
}

/// The latest result per service.
#[derive(Clone, Default)]
pub struct LatestChecks(Arc<RwLock<BTreeMap<&'static str, CheckResult>>>);

impl LatestChecks {
    pub fn get(&self, service: &str) -> Option<CheckResult> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(service)
            .cloned()
    }

    pub fn all(&self) -> BTreeMap<&'static str, CheckResult> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, service: &'static str, r: CheckResult) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(service, r);
    }
}

async fn timed<F, E>(f: F) -> CheckResult
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let started = Instant::now();
    let (healthy, error) = match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(())) => (true, None),
        Ok(Err(e)) => (false, Some(e.to_string())),
        Err(_) => (false, Some("timed out".to_string())),
    };
    CheckResult {
        healthy,
        response_time_ms: started.elapsed().as_secs_f64() * 1000.0,
        error,
        checked_at: chrono::Utc::now(),
    }
}

pub async fn check_postgres(pool: &PgPool) -> CheckResult {
    timed(async { sqlx::query("SELECT 1").execute(pool).await.map(|_| ()) }).await
}

pub async fn check_redis(url: &str) -> CheckResult {
    timed(async {
        let client = faultline_shared::cache::client(url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok::<(), redis::RedisError>(())
    })
    .await
}

pub async fn check_rabbitmq(url: &str) -> CheckResult {
    timed(async {
        let conn = faultline_shared::queue::connect(url, "faultline-alerter-health").await?;
        let _ = conn.close(200, "health check".into()).await;
        Ok::<(), lapin::Error>(())
    })
    .await
}

/// Checks all three services once, records the results (best effort: with Postgres down the
/// Postgres row cannot be written, which the uptime endpoint reads as a gap) and updates `latest`.
pub async fn check_all(pool: &PgPool, urls: &ServiceUrls, latest: &LatestChecks, instance: &str) {
    let (pg, redis, rabbit) = tokio::join!(
        check_postgres(pool),
        check_redis(&urls.redis_url),
        check_rabbitmq(&urls.amqp_url)
    );
    for (name, r) in [("postgres", pg), ("redis", redis), ("rabbitmq", rabbit)] {
        if let Err(e) = store::record_check(
            pool,
            name,
            r.healthy,
            r.response_time_ms,
            r.error.as_deref(),
            instance,
        )
        .await
        {
            tracing::debug!(service = name, error = %e, "Could not record a health check.");
        }
        metrics::gauge!("alerter_dependency_up", "service" => name).set(if r.healthy {
            1.0
        } else {
            0.0
        });
        latest.set(name, r);
    }
}
