//! The Redis read cache of the dashboard API. Entries are keyed by project, the project's current
//! generation, the endpoint and the normalised query; a write to a project (the worker after a
//! commit, ingest after resolve/reopen/delete) increments the generation, so every older entry of
//! that project stops being read and expires with its TTL. No entry is ever deleted by hand, and
//! two processes can never disagree about which entries are current.
//!
//! Redis is an accelerator: every Redis call has a short timeout, and when Redis is down or slow
//! the answer is computed from Postgres (counted as `bypass`).
//!
//! Every cached answer carries an `ETag` (a hash of its body); a matching `If-None-Match` gets 304.

use crate::{AppState, error::ApiError, redis_handle::RedisHandle};
use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::Response,
};
use faultline_shared::cache::{entry_key, generation_key};
use redis::AsyncCommands;
use serde_json::{Value, json};
use std::{future::Future, time::Duration};
use uuid::Uuid;

/// The contract's TTLs, per kind of answer.
pub mod ttl {
    use std::time::Duration;
    pub const ERROR_LIST: Duration = Duration::from_secs(120);
    pub const STATS: Duration = Duration::from_secs(300);
    pub const TRENDS: Duration = Duration::from_secs(300);
    pub const SERVICE_HEALTH: Duration = Duration::from_secs(30);
    pub const SYSTEM_METRICS: Duration = Duration::from_secs(30);
    pub const PERFORMANCE: Duration = Duration::from_secs(60);
    pub const UPTIME: Duration = Duration::from_secs(300);
}

/// Longest a single Redis call may take before the request goes on without the cache.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct ReadCache {
    redis: RedisHandle,
    prefix: String,
}

/// What a lookup found.
enum Lookup {
    Hit(Vec<u8>),
    /// Not cached; the key to store the fresh answer under.
    Miss(String),
    /// Redis unavailable: compute, do not store.
    Bypass,
}

impl ReadCache {
    pub fn new(redis: RedisHandle, prefix: &str) -> Self {
        Self {
            redis,
            prefix: prefix.to_string(),
        }
    }

    async fn lookup(&self, project: Uuid, endpoint: &str, params: &str) -> Lookup {
        let Ok(mut conn) = self.redis.get().await else {
            return Lookup::Bypass;
        };
        let generation: Option<u64> = match tokio::time::timeout(
            REDIS_TIMEOUT,
            conn.get(generation_key(&self.prefix, project)),
        )
        .await
        {
            Ok(Ok(g)) => g,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "Cache generation unavailable.");
                return Lookup::Bypass;
            }
            Err(_) => return Lookup::Bypass,
        };
        let key = entry_key(
            &self.prefix,
            project,
            generation.unwrap_or(0),
            endpoint,
            &format!("{:016x}", fnv1a(params.as_bytes())),
        );
        match tokio::time::timeout(REDIS_TIMEOUT, conn.get::<_, Option<Vec<u8>>>(&key)).await {
            Ok(Ok(Some(body))) => Lookup::Hit(body),
            Ok(Ok(None)) => Lookup::Miss(key),
            _ => Lookup::Bypass,
        }
    }

    async fn store(&self, key: &str, body: &[u8], ttl: Duration) {
        let Ok(mut conn) = self.redis.get().await else {
            return;
        };
        let set = conn.set_ex::<_, _, ()>(key, body, ttl.as_secs().max(1));
        if let Ok(Err(e)) = tokio::time::timeout(REDIS_TIMEOUT, set).await {
            tracing::debug!(error = %e, "Cache store failed.");
        }
    }

    /// Makes every cached answer of `project` stale. Failure is logged, not returned: with Redis
    /// down nothing is being served from it either.
    pub async fn bump(&self, project: Uuid) {
        let Ok(mut conn) = self.redis.get().await else {
            return;
        };
        let incr = conn.incr::<_, _, u64>(generation_key(&self.prefix, project), 1);
        match tokio::time::timeout(REDIS_TIMEOUT, incr).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, %project, "Cache generation not bumped."),
            Err(_) => tracing::warn!(%project, "Cache generation bump timed out."),
        }
    }
}

/// FNV-1a, 64 bits: stable across processes and versions (unlike `DefaultHasher`), so every
/// ingest instance computes the same ETag and cache key for the same input.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Wraps `data` in the contract's success envelope.
pub fn envelope(data: Value) -> Value {
    json!({ "data": data, "status": "success" })
}

fn etag_of(body: &[u8]) -> String {
    format!("\"{:016x}\"", fnv1a(body))
}

fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

/// The answer of a read endpoint: from the cache when current, otherwise computed by `compute`
/// (the `data` of the envelope) and stored for `ttl`. Sets `ETag`, `X-Cache` (HIT, MISS or
/// BYPASS) and answers 304 when `If-None-Match` matches.
pub async fn cached<F, Fut>(
    state: &AppState,
    headers: &HeaderMap,
    project: Uuid,
    endpoint: &'static str,
    params: &str,
    ttl: Duration,
    compute: F,
) -> Result<Response, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Value, ApiError>>,
{
    let lookup = state.cache.lookup(project, endpoint, params).await;
    let (body, result) = match lookup {
        Lookup::Hit(body) => (body, "hit"),
        Lookup::Miss(key) => {
            let body = serialize(compute().await?)?;
            state.cache.store(&key, &body, ttl).await;
            (body, "miss")
        }
        Lookup::Bypass => (serialize(compute().await?)?, "bypass"),
    };
    metrics::counter!("read_cache_requests_total", "endpoint" => endpoint, "result" => result)
        .increment(1);
    Ok(respond(headers, body, result))
}

fn serialize(data: Value) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(&envelope(data)).map_err(|e| ApiError::Internal(e.into()))
}

fn respond(headers: &HeaderMap, body: Vec<u8>, result: &str) -> Response {
    let etag = etag_of(&body);
    let not_modified = matches_etag(headers, &etag);
    let mut response = if not_modified {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Body::from(body));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    // Clients may keep the answer but must revalidate (cheap with If-None-Match).
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    h.insert(
        "x-cache",
        HeaderValue::from_static(match result {
            "hit" => "HIT",
            "miss" => "MISS",
            _ => "BYPASS",
        }),
    );
    response
}
