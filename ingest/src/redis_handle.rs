//! A Redis connection that is created lazily and re-created after failures, so ingest starts and
//! keeps serving while Redis is down (Redis is an accelerator, never a dependency of correctness).

use redis::aio::ConnectionManager;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::Mutex;

#[derive(Clone)]
pub struct RedisHandle {
    client: Option<redis::Client>,
    conn: Arc<Mutex<Option<ConnectionManager>>>,
    /// When the last connection attempt failed: for `RETRY_AFTER` after it, callers are refused at
    /// once instead of each paying a connection attempt (~100+ ms) while Redis is down.
    failed_at: Arc<Mutex<Option<Instant>>>,
}

const TIMEOUT: Duration = Duration::from_millis(500);
const RETRY_AFTER: Duration = Duration::from_secs(1);

impl RedisHandle {
    pub fn new(url: &str) -> Self {
        let client = faultline_shared::cache::client(url)
            .inspect_err(
                |e| tracing::warn!(error = %e, "REDIS_URL is not usable; running without Redis."),
            )
            .ok();
        Self {
            client,
            conn: Arc::default(),
            failed_at: Arc::default(),
        }
    }

    /// A connection, if Redis can be reached within a short timeout.
    pub async fn get(&self) -> Result<ConnectionManager, String> {
        let client = self.client.as_ref().ok_or("Redis is not configured")?;
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let mut failed_at = self.failed_at.lock().await;
        if failed_at.is_some_and(|at| at.elapsed() < RETRY_AFTER) {
            return Err("Redis unreachable (retrying shortly)".to_string());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1);
        let conn = tokio::time::timeout(
            TIMEOUT * 2,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| "connecting to Redis timed out".to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
        .inspect_err(|_| *failed_at = Some(Instant::now()))?;
        *failed_at = None;
        *guard = Some(conn.clone());
        Ok(conn)
    }

    pub async fn ping(&self) -> Result<(), String> {
        let mut conn = self.get().await?;
        let pong: Result<String, _> =
            tokio::time::timeout(TIMEOUT, redis::cmd("PING").query_async(&mut conn))
                .await
                .map_err(|_| "PING timed out".to_string())?;
        pong.map(|_| ()).map_err(|e| e.to_string())
    }
}
