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
//!
//! Checks of one bucket are coalesced (group commit, as the publisher does for events): while one
//! script call for a bucket is in flight, further requests on that bucket wait together and the
//! next call asks for all of them at once (`ARGV[3]` slots). The script grants the first `k` that
//! fit, exactly as `k` single calls would, so the limit stays exact, while a busy key costs one
//! Redis round trip per round instead of one per request.

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
    collections::{HashMap, hash_map::Entry},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tokio::sync::oneshot;
use uuid::Uuid;

/// KEYS[1]: the bucket. ARGV[1]: limit (requests per window), ARGV[2]: window in ms, ARGV[3]:
/// how many requests ask at once (n). Grants the first `granted` of them, as many as `n` single
/// calls in a row would have. Returns {granted, remaining, retry_after_ms, reset_ms, now_ms}:
/// `remaining` after the last granted one, `retry_after_ms` until one more would pass (0 when all
/// were granted), `reset_ms` until the bucket is full again. Integer arithmetic only (Lua numbers
/// are doubles; ms fit exactly).
const GCRA: &str = r#"
local limit = tonumber(ARGV[1])
local n = tonumber(ARGV[3])
local interval = math.max(1, math.floor(tonumber(ARGV[2]) / limit))
local tolerance = interval * limit
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local granted = math.floor((now + tolerance - tat) / interval)
if granted > n then granted = n end
if granted < 0 then granted = 0 end
if granted > 0 then
  tat = tat + granted * interval
  redis.call('SET', KEYS[1], tat, 'PX', tat - now)
end
local retry = 0
if granted < n then retry = tat + interval - tolerance - now end
return {granted, math.floor((now + tolerance - tat) / interval), retry, tat - now, now}
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

/// Requests waiting for the next script call on one bucket: (bucket, limit) → their answers.
type Waiting = HashMap<(String, u32), Vec<oneshot::Sender<Option<Decision>>>>;

/// Frees a bucket whose rounds ended without freeing it themselves.
struct Leaving {
    waiting: Arc<Mutex<Waiting>>,
    key: Option<(String, u32)>,
}

impl Drop for Leaving {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        }
    }
}

/// The script's answer for one round of `n` requests on a bucket.
#[derive(Debug, Clone, Copy)]
struct Round {
    limit: u32,
    /// ms between two requests once the budget is spent: `window / limit`, as the script has it.
    interval_ms: u64,
    granted: u64,
    /// Left after the last granted request.
    remaining: u64,
    retry_ms: u64,
    reset_ms: u64,
    now_ms: u64,
}

impl Round {
    /// The decision for the round's `i`-th request (in arrival order): the first `granted` pass,
    /// each seeing the budget as it was left after it.
    fn nth(&self, i: usize) -> Decision {
        let i = i as u64;
        let allowed = i < self.granted;
        Decision {
            allowed,
            limit: self.limit,
            remaining: if allowed {
                self.remaining + (self.granted - 1 - i)
            } else {
                0
            },
            // The bucket as this request left it: later grants of the round each added an interval.
            reset_at: (self.now_ms
                + self.reset_ms.saturating_sub(if allowed {
                    (self.granted - 1 - i) * self.interval_ms
                } else {
                    0
                }))
            .div_ceil(1000),
            wait_seconds: if allowed {
                0
            } else {
                self.retry_ms.div_ceil(1000).max(1)
            },
        }
    }
}

#[derive(Clone)]
pub struct RateLimiter {
    redis: RedisHandle,
    prefix: String,
    settings: AccessSettings,
    script: Arc<redis::Script>,
    /// Buckets with a script call in flight, and who waits for the next one. A bucket is present
    /// exactly while a task runs its rounds ([`RateLimiter::rounds`]).
    waiting: Arc<Mutex<Waiting>>,
    /// Unix ms before which Redis is not asked (set after a failure).
    skip_until_ms: Arc<AtomicU64>,
    /// Unix ms of the last "failing open" warning.
    warned_at_ms: Arc<AtomicU64>,
    /// Script calls made (each one round of one or more requests).
    calls: Arc<AtomicU64>,
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
            waiting: Arc::default(),
            skip_until_ms: Arc::default(),
            warned_at_ms: Arc::default(),
            calls: Arc::default(),
        }
    }

    /// How many script calls (rounds) this limiter has made; fewer than checks when they coalesced.
    pub fn script_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
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
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            match waiting.entry((bucket, limit)) {
                Entry::Occupied(mut e) => {
                    e.get_mut().push(tx);
                    None
                }
                Entry::Vacant(e) => {
                    let bucket = e.key().0.clone();
                    e.insert(Vec::new());
                    Some((bucket, tx))
                }
            }
        };
        if let Some((bucket, tx)) = lead {
            tokio::spawn(self.clone().rounds(bucket, limit, scope, tx));
        }
        rx.await.unwrap_or(None)
    }

    /// Answers the bucket's requests, one script call per round: first `first`, then whoever
    /// arrived during the previous call, until a call ends with nobody waiting.
    async fn rounds(
        self,
        bucket: String,
        limit: u32,
        scope: Scope,
        first: oneshot::Sender<Option<Decision>>,
    ) {
        let mut senders = vec![first];
        // Should this task end any other way than below (a panic), the bucket is freed and its
        // waiters are answered `None` (pass) rather than left waiting for a round that never comes.
        let mut guard = Leaving {
            waiting: self.waiting.clone(),
            key: Some((bucket, limit)),
        };
        loop {
            let bucket = &guard.key.as_ref().expect("set until the end").0;
            let decisions = self.ask(bucket, limit, senders.len(), scope).await;
            for (i, tx) in senders.drain(..).enumerate() {
                let _ = tx.send(decisions.as_ref().map(|d| d.nth(i)));
            }
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            let key = guard.key.as_ref().expect("set until the end");
            match waiting.get_mut(key) {
                Some(next) if !next.is_empty() => senders = std::mem::take(next),
                _ => {
                    waiting.remove(key);
                    guard.key = None;
                    return;
                }
            }
        }
    }

    /// One script call for `n` requests on `bucket`; `None` when Redis could not answer.
    async fn ask(&self, bucket: &str, limit: u32, n: usize, scope: Scope) -> Option<Round> {
        let window_ms = self.settings.window.as_millis().max(1) as u64;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let answer = tokio::time::timeout(REDIS_TIMEOUT, async {
            let mut conn = self.redis.get().await?;
            self.script
                .key(bucket)
                .arg(limit)
                .arg(window_ms)
                .arg(n)
                .invoke_async::<Vec<i64>>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|_| Err("timed out".to_string()));
        metrics::histogram!("rate_limit_round_requests").record(n as f64);
        match answer.as_deref() {
            Ok(&[granted, remaining, retry_ms, reset_ms, now]) => Some(Round {
                limit,
                interval_ms: (window_ms / u64::from(limit)).max(1),
                granted: granted.max(0) as u64,
                remaining: remaining.max(0) as u64,
                retry_ms: retry_ms.max(0) as u64,
                reset_ms: reset_ms.max(0) as u64,
                now_ms: now.max(0) as u64,
            }),
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
