//! Per-key rate limits in Redis, by scope: SDK ingest, analytics, everything else.
//!
//! Each (key, scope) is a GCRA bucket: one Redis value, the "theoretical arrival time", read and
//! advanced by one Lua script, so concurrent requests on many ingest instances can never both
//! take the last slot (no read-then-write). A key may spend its whole window's budget at once and
//! then gets one more request every `window / limit`. The script uses Redis's clock, so instances
//! with skewed clocks still agree.
//!
//! Redis is an accelerator, not a dependency: when it is down or slow the request passes (fail
//! open), a metric counts it and a warning (at most one per interval) says so; for a second after
//! a failure Redis is not asked at all, so a dead Redis costs requests nothing.

use crate::{
    AppState,
    auth::Caller,
    error::ApiError,
    redis_handle::RedisHandle,
    usage::{IngestCounts, reason_of},
};
use axum::{
    extract::{FromRequestParts, MatchedPath, Request, State},
    http::{HeaderMap, HeaderValue, Method},
    middleware::Next,
    response::{IntoResponse, Response},
};
use faultline_shared::{config::AccessSettings, db::KeyRecord};
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use uuid::Uuid;

/// KEYS[1]: the bucket. ARGV[1]: limit (requests per window), ARGV[2]: window in ms.
/// Returns {allowed (0/1), remaining, retry_after_ms, reset_ms, now_ms}; `reset_ms` is when the
/// bucket is full again. Integer arithmetic only (Lua numbers are doubles; ms fit exactly).
const GCRA: &str = r#"
local limit = tonumber(ARGV[1])
local interval = math.max(1, math.floor(tonumber(ARGV[2]) / limit))
local tolerance = interval * limit
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if allow_at > now then
  return {0, 0, allow_at - now, tat - now, now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
return {1, math.floor((now - allow_at) / interval), 0, new_tat - now, now}
"#;

/// Longest a rate-limit check may wait for Redis before the request passes unchecked.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// After a Redis failure, requests pass without asking Redis for this long.
const BACKOFF: Duration = Duration::from_secs(1);
/// At most one "failing open" warning per this interval.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// What a request is counted against. The contract's defaults: ingest 1000/min, analytics
/// 100/min, other API 500/min.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Ingest,
    Analytics,
    Other,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Analytics => "analytics",
            Scope::Other => "other",
        }
    }

    /// The scope of a request from its method and matched route; `None` for what is not limited
    /// (health, metrics: unauthenticated operations endpoints).
    pub fn of(method: &Method, route: &str) -> Option<Scope> {
        if !route.starts_with("/api/") {
            return None;
        }
        let sentry = route.starts_with("/api/{project_id}/");
        if method == Method::POST
            && (route == "/api/errors" || route == "/api/errors/batch" || sentry)
        {
            return Some(Scope::Ingest);
        }
        if route == "/api/stats" || route.starts_with("/api/analytics/") {
            return Some(Scope::Analytics);
        }
        Some(Scope::Other)
    }
}

/// The outcome of one check, with what the `X-RateLimit-*` headers report.
#[derive(Debug, Clone, Copy)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u64,
    /// Unix time (seconds) at which the bucket is full again.
    pub reset_at: u64,
    /// Whole seconds until the next request would pass (0 when allowed).
    pub wait_seconds: u64,
}

impl Decision {
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert("x-ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(self.reset_at));
    }
}

#[derive(Clone)]
pub struct RateLimiter {
    redis: RedisHandle,
    prefix: String,
    settings: AccessSettings,
    script: Arc<redis::Script>,
    /// Unix ms before which Redis is not asked (set after a failure).
    skip_until_ms: Arc<AtomicU64>,
    /// Unix ms of the last "failing open" warning.
    warned_at_ms: Arc<AtomicU64>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl RateLimiter {
    pub fn new(redis: RedisHandle, prefix: &str, settings: AccessSettings) -> Self {
        Self {
            redis,
            prefix: prefix.to_string(),
            settings,
            script: Arc::new(redis::Script::new(GCRA)),
            skip_until_ms: Arc::default(),
            warned_at_ms: Arc::default(),
        }
    }

    /// The key's limit for `scope`: its own override, else the configured default; 0 = unlimited.
    pub fn limit_for(&self, key: &KeyRecord, scope: Scope) -> u32 {
        key.rate_limits
            .get(scope.as_str())
            .copied()
            .unwrap_or(match scope {
                Scope::Ingest => self.settings.ingest_limit,
                Scope::Analytics => self.settings.analytics_limit,
                Scope::Other => self.settings.other_limit,
            })
    }

    /// Counts one request of `key` in `scope`. `None` when the scope is unlimited or Redis could
    /// not answer (the request passes: fail open).
    pub async fn check(&self, key: &KeyRecord, scope: Scope) -> Option<Decision> {
        let limit = self.limit_for(key, scope);
        if limit == 0 {
            return None;
        }
        if now_ms() < self.skip_until_ms.load(Ordering::Relaxed) {
            self.fail_open(scope, "Redis failed recently");
            return None;
        }
        let bucket = format!("{}:ratelimit:{}:{}", self.prefix, scope.as_str(), key.id);
        let window_ms = self.settings.window.as_millis().max(1) as u64;
        let answer = tokio::time::timeout(REDIS_TIMEOUT, async {
            let mut conn = self.redis.get().await?;
            self.script
                .key(bucket)
                .arg(limit)
                .arg(window_ms)
                .invoke_async::<Vec<i64>>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|_| Err("timed out".to_string()));
        match answer.as_deref() {
            Ok([allowed, remaining, retry_ms, reset_ms, now]) => {
                let (retry_ms, reset_ms, now) = (*retry_ms as u64, *reset_ms as u64, *now as u64);
                Some(Decision {
                    allowed: *allowed == 1,
                    limit,
                    remaining: *remaining as u64,
                    reset_at: (now + reset_ms).div_ceil(1000),
                    wait_seconds: if *allowed == 1 {
                        0
                    } else {
                        retry_ms.div_ceil(1000).max(1)
                    },
                })
            }
            Ok(other) => {
                self.failed(scope, &format!("unexpected script answer {other:?}"));
                None
            }
            Err(e) => {
                self.failed(scope, e);
                None
            }
        }
    }

    fn failed(&self, scope: Scope, error: &str) {
        self.skip_until_ms
            .store(now_ms() + BACKOFF.as_millis() as u64, Ordering::Relaxed);
        self.fail_open(scope, error);
    }

    fn fail_open(&self, scope: Scope, error: &str) {
        metrics::counter!("rate_limit_fail_open_total", "scope" => scope.as_str()).increment(1);
        let now = now_ms();
        let last = self.warned_at_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64
            && self
                .warned_at_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                error,
                "Rate limits unavailable (Redis); requests pass unlimited."
            );
        }
    }
}

/// The middleware in front of every `/api/` route: authenticates the key (once: the handler's
/// `Caller` reuses it), counts the request in its scope, answers 429 when the budget is spent and
/// puts the `X-RateLimit-*` headers on every limited answer.
pub async fn enforce(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let scope = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| Scope::of(req.method(), p.as_str()));
    // Without `X-API-Key` the handler authenticates by itself (and answers 401, or reads a Sentry
    // SDK's key from its own header and calls `RateLimiter::check`).
    let Some(scope) = scope.filter(|_| req.headers().contains_key("x-api-key")) else {
        return next.run(req).await;
    };
    let (mut parts, body) = req.into_parts();
    let caller = match Caller::from_request_parts(&mut parts, &state).await {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    let decision = state.limiter.check(&caller.key, scope).await;
    if let Some(d) = decision {
        let outcome = if d.allowed { "allowed" } else { "throttled" };
        metrics::counter!("rate_limit_decisions_total", "scope" => scope.as_str(), "outcome" => outcome)
            .increment(1);
        if !d.allowed {
            if scope == Scope::Ingest {
                metrics::counter!("ingest_events_rejected_total", "reason" => "rate_limited")
                    .increment(1);
            }
            tracing::debug!(key_id = %caller.key_id, scope = scope.as_str(), wait = d.wait_seconds, "Rate limit reached.");
            if scope == Scope::Ingest {
                state
                    .usage
                    .record(caller.project_id, caller.key_id, "refused:rate_limited", 1);
            }
            let mut response = ApiError::Throttled {
                wait_seconds: d.wait_seconds,
            }
            .into_response();
            d.write_headers(response.headers_mut());
            return response;
        }
    }
    let (project, key_id) = (caller.project_id, caller.key_id);
    parts.extensions.insert(caller);
    let mut response = next.run(Request::from_parts(parts, body)).await;
    if let Some(d) = decision {
        d.write_headers(response.headers_mut());
    }
    if scope == Scope::Ingest {
        count_usage(&state, project, key_id, &response);
    }
    response
}

/// Counts an ingest answer for `GET /api/usage`: the batch handler's exact numbers, else one
/// event accepted or refused for the reason its status stands for.
fn count_usage(state: &AppState, project: Uuid, key: Uuid, response: &Response) {
    if let Some(c) = response.extensions().get::<IngestCounts>() {
        state.usage.record(project, key, "accepted", c.accepted);
        state
            .usage
            .record(project, key, "refused:validation", c.invalid);
    } else {
        match reason_of(response.status()) {
            None => state.usage.record(project, key, "accepted", 1),
            Some(reason) => state
                .usage
                .record(project, key, &format!("refused:{reason}"), 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_fall_into_the_contract_scopes() {
        assert_eq!(Scope::of(&Method::POST, "/api/errors"), Some(Scope::Ingest));
        assert_eq!(
            Scope::of(&Method::POST, "/api/errors/batch"),
            Some(Scope::Ingest)
        );
        assert_eq!(Scope::of(&Method::GET, "/api/errors"), Some(Scope::Other));
        assert_eq!(
            Scope::of(&Method::GET, "/api/stats"),
            Some(Scope::Analytics)
        );
        assert_eq!(
            Scope::of(&Method::GET, "/api/analytics/trends"),
            Some(Scope::Analytics)
        );
        assert_eq!(
            Scope::of(&Method::POST, "/api/settings/api-keys"),
            Some(Scope::Other)
        );
        assert_eq!(
            Scope::of(&Method::POST, "/api/{project_id}/envelope/"),
            Some(Scope::Ingest)
        );
        assert_eq!(Scope::of(&Method::GET, "/health"), None);
        assert_eq!(Scope::of(&Method::GET, "/metrics"), None);
    }
}
