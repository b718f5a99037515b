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
//!
//! Far from the limit, a request does not wait for Redis at all. Each answer says how much budget
//! is left; while that is at least [`LOCAL_MIN`] and a quarter of the limit, this instance may admit up to
//! 1/[`LOCAL_SHARE`] of it on its own before the next answer, and a later script call debits
//! those admissions first (`ARGV[4]`), before it grants anything else. With nobody waiting for an
//! answer, debits are sent at most every [`DEBIT_EVERY`], so a busy key costs Redis ~100 calls a
//! second rather than one per round trip. Waiting for Redis had cost a busy key ~20–30 µs of
//! ingest CPU, ~12 µs of Redis CPU and a round trip of latency per request (RESULTS.md, "What the
//! rate-limit step costs now").
//!
//! One instance stays exact: it never admits more than the budget its last answer reported, and
//! near the limit (under `LOCAL_MIN` or a quarter of it left) every request asks Redis, as before. Redis refuses only
//! once the debits it has heard of spend the budget, so instances never refuse what the limit
//! allows. Several instances busy on one key can together pass its limit: each spends up to its
//! share of its own last answer before Redis hears of it, which the others' answers do not show.
//! That is at most `limit / LOCAL_SHARE` per instance; four instances hammering one key at once
//! let exactly 2,000 requests through a limit of 2,000 in `ingest/tests/rate_limits.rs`.

use crate::{
    AppState,
    auth::Caller,
    error::ApiError,
    redis_handle::RedisHandle,
    usage::{IngestCounts, reason_of},
};
use axum::{
    extract::{FromRequestParts, MatchedPath, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method},
    middleware::Next,
    response::{IntoResponse, Response},
};
use faultline_shared::{config::AccessSettings, db::KeyRecord};
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

/// KEYS[1]: the bucket. ARGV[1]: limit (requests per window), ARGV[2]: window in ms, ARGV[3]:
/// how many requests ask at once (n), ARGV[4]: how many were already admitted locally (debited
/// first, unconditionally: they have passed). Grants the first `granted` of the `n`, as many as
/// `n` single calls in a row would have. Returns {granted, remaining, retry_after_ms, reset_ms, now_ms}:
/// `remaining` after the last granted one, `retry_after_ms` until one more would pass (0 when all
/// were granted), `reset_ms` until the bucket is full again. Integer arithmetic only (Lua numbers
/// are doubles; ms fit exactly).
const GCRA: &str = r#"
local limit = tonumber(ARGV[1])
local n = tonumber(ARGV[3])
local debit = tonumber(ARGV[4])
local interval = math.max(1, math.floor(tonumber(ARGV[2]) / limit))
local tolerance = interval * limit
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
tat = tat + debit * interval
local granted = math.floor((now + tolerance - tat) / interval)
if granted > n then granted = n end
if granted < 0 then granted = 0 end
tat = tat + granted * interval
if tat > now then redis.call('SET', KEYS[1], tat, 'PX', tat - now) end
local retry = 0
if granted < n then retry = tat + interval - tolerance - now end
return {granted, math.max(0, math.floor((now + tolerance - tat) / interval)), retry, tat - now, now}
"#;

/// Longest a rate-limit check may wait for Redis before the request passes unchecked.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// After a Redis failure, requests pass without asking Redis for this long.
const BACKOFF: Duration = Duration::from_secs(1);
/// At most one "failing open" warning per this interval.
const WARN_EVERY: Duration = Duration::from_secs(30);
/// Below this much budget left (as the last answer reported it), or below a quarter of the limit,
/// every request asks Redis. The quarter keeps several instances from passing the limit together
/// in practice: the test's four instances let 2,057 requests through a limit of 2,000 with only
/// the 64, and exactly 2,000 with the quarter.
pub const LOCAL_MIN: u64 = 64;
/// Of the budget the last answer reported, this instance admits at most `1 / LOCAL_SHARE` on its
/// own before the next answer: what a key can pass its limit by, per instance busy on it.
pub const LOCAL_SHARE: u64 = 8;
/// How long an answer's budget may be spent locally: other instances spend it too, so an old
/// answer is not trusted. A busy key gets a fresh answer every round trip anyway.
const LOCAL_VALID: Duration = Duration::from_secs(1);
/// Longest a debit waits for company when nobody waits for an answer: Redis hears of locally
/// admitted requests this late at most, and a busy key costs it ~1 / DEBIT_EVERY calls a second
/// instead of one per round trip.
pub const DEBIT_EVERY: Duration = Duration::from_millis(10);
/// Buckets held before the first sweep drops those neither running nor spendable.
const SWEEP_AT: usize = 4096;

/// What a request is counted against. The contract's defaults: ingest 1000/min, analytics
/// 100/min, other API 500/min.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
        // Names from `from_static`: a `&str` name that is not a standard header is copied into a
        // new allocation on every insert.
        headers.insert(
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderValue::from(self.limit),
        );
        headers.insert(
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderValue::from(self.remaining),
        );
        headers.insert(
            HeaderName::from_static("x-ratelimit-reset"),
            HeaderValue::from(self.reset_at),
        );
    }
}

/// One bucket as this instance sees it: (key, scope, limit).
type BucketId = (Uuid, Scope, u32);

/// This instance's state of one bucket, kept while a task runs its rounds or its last answer's
/// budget may still be spent locally.
#[derive(Default)]
struct Bucket {
    /// Requests waiting for the next script call's answer.
    waiting: Vec<oneshot::Sender<Option<Decision>>>,
    /// Requests admitted locally that Redis has not been told of: the next call debits them.
    debit: u64,
    /// How many more requests may be admitted locally before the next answer.
    allowance: u64,
    /// Until when (Unix ms) `allowance` may be spent.
    valid_until_ms: u64,
    /// The last answer, and how many were admitted locally since (the headers' remaining budget).
    last: Option<Round>,
    admitted_since: u64,
    /// Whether a task runs this bucket's rounds ([`RateLimiter::rounds`]).
    running: bool,
    /// Wakes the rounds early when a request starts waiting during a debit's delay.
    wake: Arc<Notify>,
}

impl Bucket {
    /// Admits one request without asking Redis, when the last answer's budget allows it.
    fn admit_locally(&mut self, now_ms: u64) -> Option<Decision> {
        if self.allowance == 0 || now_ms >= self.valid_until_ms {
            return None;
        }
        let last = self.last?;
        self.allowance -= 1;
        self.debit += 1;
        self.admitted_since += 1;
        Some(last.after_local(self.admitted_since))
    }

    /// Takes in an answer. Requests admitted locally while it was on its way are not in its
    /// figures: they are still to be debited and come off the new allowance.
    fn answered(&mut self, round: Option<Round>, now_ms: u64) {
        match round {
            Some(round) => {
                let share = if round.remaining >= LOCAL_MIN.max(u64::from(round.limit) / 4) {
                    round.remaining / LOCAL_SHARE
                } else {
                    0
                };
                self.allowance = share.saturating_sub(self.debit);
                self.valid_until_ms = now_ms + LOCAL_VALID.as_millis() as u64;
                self.admitted_since = self.debit;
                self.last = Some(round);
            }
            // Redis is failing: requests pass unchecked for a while (fail open), and what was
            // admitted meanwhile is not owed once it is back.
            None => {
                self.debit = 0;
                self.allowance = 0;
                self.last = None;
                self.admitted_since = 0;
            }
        }
    }
}

/// This instance's buckets. Idle ones are dropped in sweeps, each once the map has doubled since
/// the last, so a sweep costs O(1) per check.
#[derive(Default)]
struct Buckets {
    map: HashMap<BucketId, Bucket>,
    sweep_at: usize,
}

impl Buckets {
    fn sweep(&mut self, now_ms: u64) {
        if self.map.len() >= self.sweep_at.max(SWEEP_AT) {
            self.map
                .retain(|_, b| b.running || b.valid_until_ms > now_ms);
            self.sweep_at = self.map.len() * 2;
        }
    }
}

/// Frees a bucket whose rounds ended without freeing it themselves (a panic): its waiters are
/// dropped, which answers them `None` (pass).
struct Leaving {
    buckets: Arc<Mutex<Buckets>>,
    id: Option<BucketId>,
}

impl Drop for Leaving {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.buckets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .map
                .remove(&id);
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
    /// The decision for a request admitted locally, the `k`-th since this answer: each took one
    /// more slot off the budget and pushed the bucket's reset one interval further.
    fn after_local(&self, k: u64) -> Decision {
        Decision {
            allowed: true,
            limit: self.limit,
            remaining: self.remaining.saturating_sub(k),
            reset_at: (self.now_ms + self.reset_ms + k * self.interval_ms).div_ceil(1000),
            wait_seconds: 0,
        }
    }

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
    /// Buckets with a task running their rounds or budget to spend locally.
    buckets: Arc<Mutex<Buckets>>,
    /// Requests admitted locally, without waiting for Redis.
    local: Arc<AtomicU64>,
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
            buckets: Arc::default(),
            local: Arc::default(),
            skip_until_ms: Arc::default(),
            warned_at_ms: Arc::default(),
            calls: Arc::default(),
        }
    }

    /// How many script calls (rounds) this limiter has made; fewer than checks when they coalesced.
    pub fn script_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// How many requests were admitted locally, on the budget of an earlier answer.
    pub fn local_admissions(&self) -> u64 {
        self.local.load(Ordering::Relaxed)
    }

    /// Waits until every bucket's rounds have ended, so Redis has been told of every request
    /// admitted locally (what a test reads Redis after).
    pub async fn settle(&self) {
        loop {
            let busy = {
                let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
                buckets.map.values().any(|b| b.running)
            };
            if !busy {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
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
        let now = now_ms();
        if now < self.skip_until_ms.load(Ordering::Relaxed) {
            self.fail_open(scope, "Redis failed recently");
            return None;
        }
        let id = (key.id, scope, limit);
        let (local, rx, start) = {
            let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            buckets.sweep(now);
            let bucket = buckets.map.entry(id).or_default();
            let local = bucket.admit_locally(now);
            let rx = if local.is_none() {
                let (tx, rx) = oneshot::channel();
                bucket.waiting.push(tx);
                if bucket.running {
                    bucket.wake.notify_one();
                }
                Some(rx)
            } else {
                None
            };
            // Someone must tell Redis: of the debit, or of the new waiter.
            let start = !bucket.running;
            bucket.running = true;
            (local, rx, start)
        };
        if start {
            tokio::spawn(self.clone().rounds(id));
        }
        match rx {
            Some(rx) => rx.await.unwrap_or(None),
            None => {
                self.local.fetch_add(1, Ordering::Relaxed);
                local
            }
        }
    }

    /// Tells Redis of the bucket's requests, one script call per round: each call debits what was
    /// admitted locally since the last one and asks for whoever waits, until a call ends with
    /// nothing new to tell.
    async fn rounds(self, id: BucketId) {
        let (key_id, scope, limit) = id;
        let bucket = format!("{}:ratelimit:{}:{}", self.prefix, scope.as_str(), key_id);
        // Should this task end any other way than below (a panic), the bucket is freed and its
        // waiters are answered `None` (pass) rather than left waiting for a round that never comes.
        let mut guard = Leaving {
            buckets: self.buckets.clone(),
            id: Some(id),
        };
        loop {
            // With nobody waiting, a debit can wait a little and go with those that follow.
            let wake = {
                let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
                buckets
                    .map
                    .get(&id)
                    .filter(|b| b.waiting.is_empty() && b.debit > 0)
                    .map(|b| b.wake.clone())
            };
            if let Some(wake) = wake {
                let _ = tokio::time::timeout(DEBIT_EVERY, wake.notified()).await;
            }
            let (senders, debit) = {
                let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
                let Some(b) = buckets.map.get_mut(&id) else {
                    guard.id = None;
                    return;
                };
                if b.waiting.is_empty() && b.debit == 0 {
                    b.running = false;
                    if b.allowance == 0 {
                        buckets.map.remove(&id);
                    }
                    guard.id = None;
                    return;
                }
                (std::mem::take(&mut b.waiting), std::mem::take(&mut b.debit))
            };
            let round = self.ask(&bucket, limit, senders.len(), debit, scope).await;
            for (i, tx) in senders.into_iter().enumerate() {
                let _ = tx.send(round.as_ref().map(|d| d.nth(i)));
            }
            let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(b) = buckets.map.get_mut(&id) {
                b.answered(round, now_ms());
            }
        }
    }

    /// One script call on `bucket`: debits `debit` requests admitted locally, then asks for `n`
    /// more; `None` when Redis could not answer.
    async fn ask(
        &self,
        bucket: &str,
        limit: u32,
        n: usize,
        debit: u64,
        scope: Scope,
    ) -> Option<Round> {
        let window_ms = self.settings.window.as_millis().max(1) as u64;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let answer = tokio::time::timeout(REDIS_TIMEOUT, async {
            let mut conn = self.redis.get().await?;
            self.script
                .key(bucket)
                .arg(limit)
                .arg(window_ms)
                .arg(n)
                .arg(debit)
                .invoke_async::<Vec<i64>>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|_| Err("timed out".to_string()));
        metrics::histogram!("rate_limit_round_requests").record(n as f64 + debit as f64);
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
