//! Rate limits against the real Redis (each test its own key prefix), and a Redis of the test's
//! own that the test kills to prove ingest fails open.

mod support;

use faultline_shared::{domain::Permission, testkit::OwnRedis};
use reqwest::{Method, Response};
use serde_json::{Value, json};
use std::time::Duration;
use support::TestApp;

fn header(resp: &Response, name: &str) -> Option<u64> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// `limit` requests per `window_secs` for the "other" scope, 2 per window for ingest.
async fn spawn_limited(limit: u32, window_secs: u64) -> TestApp {
    TestApp::spawn_with(|s| {
        s.access.other_limit = limit;
        s.access.ingest_limit = 2;
        s.access.window = Duration::from_secs(window_secs);
    })
    .await
}

#[tokio::test]
async fn the_request_after_the_limit_gets_429_until_the_window_lets_it_pass() {
    // 3 per 6 s: the budget can be spent at once, then one request every 2 s.
    let app = spawn_limited(3, 6).await;
    let key = app.create_key(&[Permission::Read]).await;
    for expected_remaining in [2, 1, 0] {
        let resp = app.call(Method::GET, "/api/projects", &key, None).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-ratelimit-limit"), Some(3));
        assert_eq!(
            header(&resp, "x-ratelimit-remaining"),
            Some(expected_remaining)
        );
        assert!(header(&resp, "x-ratelimit-reset").is_some());
    }
    let resp = app.call(Method::GET, "/api/projects", &key, None).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "x-ratelimit-limit"), Some(3));
    assert_eq!(header(&resp, "x-ratelimit-remaining"), Some(0));
    let reset = header(&resp, "x-ratelimit-reset").unwrap();
    let now = chrono::Utc::now().timestamp() as u64;
    assert!(reset >= now && reset <= now + 7, "reset {reset} now {now}");
    let retry_after = header(&resp, "retry-after").unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    let b: Value = resp.json().await.unwrap();
    assert_eq!(b["status"], "error");
    assert_eq!(b["code"], "throttled");
    assert_eq!(b["details"]["wait_seconds"], retry_after);
    assert!(b["request_id"].is_string());

    // Another key has its own budget.
    let other = app.create_key(&[Permission::Read]).await;
    let resp = app.call(Method::GET, "/api/projects", &other, None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-ratelimit-remaining"), Some(2));

    // After the wait, the first key passes again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let resp = app.call(Method::GET, "/api/projects", &key, None).await;
        if resp.status() == 200 {
            break;
        }
        assert_eq!(resp.status(), 429);
        assert!(
            tokio::time::Instant::now() < deadline,
            "never let through again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.shutdown().await;
}

#[tokio::test]
async fn ingest_analytics_and_other_requests_have_separate_budgets() {
    let app = TestApp::spawn_with(|s| {
        s.access.ingest_limit = 2;
        s.access.analytics_limit = 1;
        s.access.other_limit = 50;
        s.access.window = Duration::from_secs(60);
    })
    .await;
    let event = json!({"message": "boom", "source": "limits"});
    for _ in 0..2 {
        assert_eq!(app.post_event(&event).await.status(), 202);
    }
    let resp = app.post_event(&event).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "x-ratelimit-limit"), Some(2));
    assert_eq!(
        app.queue_depth().await,
        2,
        "the refused event was not published"
    );

    let resp = app.get("/api/stats").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-ratelimit-limit"), Some(1));
    assert_eq!(app.get("/api/analytics/trends").await.status(), 429);

    let resp = app.get("/api/errors").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-ratelimit-limit"), Some(50));
    // Health and metrics are not limited.
    let health = app
        .client
        .get(format!("{}/health", app.addr))
        .send()
        .await
        .unwrap();
    assert!(health.headers().get("x-ratelimit-limit").is_none());
    app.shutdown().await;
}

#[tokio::test]
async fn a_keys_own_limit_overrides_the_default() {
    let app = TestApp::spawn().await;
    let resp = app
        .call(
            Method::POST,
            "/api/settings/api-keys",
            &app.key,
            Some(json!({"name": "tight", "permissions": ["read"], "rate_limits": {"other": 1}})),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let b: Value = resp.json().await.unwrap();
    assert_eq!(b["data"]["rate_limits"], json!({"other": 1}));
    let key = b["data"]["api_key"].as_str().unwrap().to_string();
    let first = app.call(Method::GET, "/api/errors", &key, None).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-ratelimit-limit"), Some(1));
    assert_eq!(
        app.call(Method::GET, "/api/errors", &key, None)
            .await
            .status(),
        429
    );
    // The default (500 per minute) still applies to the app's own key.
    let resp = app.get("/api/errors").await;
    assert_eq!(header(&resp, "x-ratelimit-limit"), Some(500));
    app.shutdown().await;
}

#[tokio::test]
async fn with_redis_down_ingest_still_accepts_events() {
    let mut redis = OwnRedis::new().await;
    let url = redis.url();
    let app = TestApp::spawn_with(move |s| s.services.redis_url = url).await;
    let event = json!({"message": "while redis lives", "source": "failopen"});
    let resp = app.post_event(&event).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(
        header(&resp, "x-ratelimit-limit"),
        Some(1000),
        "limited while Redis is up"
    );

    redis.stop().await;
    for _ in 0..5 {
        let resp = app
            .post_event(&json!({"message": "while redis is dead", "source": "failopen"}))
            .await;
        assert_eq!(resp.status(), 202);
    }
    assert_eq!(app.get("/api/projects").await.status(), 200);
    assert_eq!(app.queue_depth().await, 6);
    let metrics = app
        .client
        .get(format!("{}/metrics", app.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("rate_limit_fail_open_total"),
        "fail-open counted"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn usage_shows_accepted_and_refused_events_by_reason_and_key() {
    let app = TestApp::spawn_with(|s| {
        s.access.ingest_limit = 5;
        s.access.window = Duration::from_secs(60);
    })
    .await;
    let ok = json!({"message": "counted", "source": "usage"});
    assert_eq!(app.post_event(&ok).await.status(), 202);
    assert_eq!(app.post_event(&ok).await.status(), 202);
    assert_eq!(
        app.post_event(&json!({"message": "no source"}))
            .await
            .status(),
        400
    );
    let batch = json!([ok, {"source": "no message"}, ok]);
    assert_eq!(app.post_batch(&batch).await.status(), 202);
    assert_eq!(app.post_event(&ok).await.status(), 202);
    assert_eq!(app.post_event(&ok).await.status(), 429);
    let reader = app.create_key(&[Permission::Read]).await;
    let resp = app
        .call(Method::POST, "/api/errors", &reader, Some(ok.clone()))
        .await;
    assert_eq!(resp.status(), 403);

    // Counts reach Redis in the background (every 100 ms in tests); sum two hours in case the
    // test straddles an hour boundary.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let resp = app
            .call(Method::GET, "/api/usage?hours=2", &reader, None)
            .await;
        let status = resp.status();
        let b: Value = resp.json().await.unwrap();
        assert_eq!(status, 200, "{b}");
        let hours = b["data"]["hours"].as_array().unwrap().clone();
        assert_eq!(hours.len(), 2);
        let sum = |f: &dyn Fn(&Value) -> u64| hours.iter().map(f).sum::<u64>();
        let accepted = sum(&|h| h["accepted"].as_u64().unwrap());
        let refused =
            |reason: &'static str| sum(&move |h| h["refused"][reason].as_u64().unwrap_or(0));
        let seen = (
            accepted,
            refused("validation"),
            refused("rate_limited"),
            refused("permission"),
        );
        if seen == (5, 2, 1, 1) {
            let keys: usize = hours
                .iter()
                .flat_map(|h| h["keys"].as_object().unwrap().keys().cloned())
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            assert_eq!(keys, 2, "per key: the app's key and the read-only key");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "usage so far {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bad = app
        .call(Method::GET, "/api/usage?hours=0", &reader, None)
        .await;
    assert_eq!(bad.status(), 400);
    app.shutdown().await;
}

/// A limiter of its own on the shared Redis under `prefix`: `limit` "other" requests per window.
fn own_limiter(prefix: &str, limit: u32, window: Duration) -> ingest::ratelimit::RateLimiter {
    use faultline_shared::{config::AccessSettings, testkit};
    ingest::ratelimit::RateLimiter::new(
        ingest::redis_handle::RedisHandle::new(&testkit::redis_url()),
        prefix,
        AccessSettings {
            other_limit: limit,
            window,
            ..AccessSettings::default()
        },
    )
}

fn key_record() -> faultline_shared::db::KeyRecord {
    faultline_shared::db::KeyRecord {
        id: uuid::Uuid::new_v4(),
        project_id: uuid::Uuid::new_v4(),
        name: "burst".into(),
        permissions: faultline_shared::domain::Permissions::new(vec![Permission::Read]),
        expires_at: None,
        revoked: false,
        rate_limits: Default::default(),
    }
}

/// Removes the key's "other" bucket from the shared Redis.
async fn forget_bucket(prefix: &str, key: &faultline_shared::db::KeyRecord) {
    let mut redis = redis::Client::open(faultline_shared::testkit::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(format!("{prefix}:ratelimit:other:{}", key.id))
        .query_async(&mut redis)
        .await
        .unwrap();
}

/// Checks `total` requests of `key` on `limiter`, `wave` at a time (each wave at the same moment),
/// and returns how many were allowed.
async fn allowed_in_waves(
    limiter: &ingest::ratelimit::RateLimiter,
    key: &faultline_shared::db::KeyRecord,
    total: usize,
    wave: usize,
) -> usize {
    let mut allowed = 0;
    for start in (0..total).step_by(wave) {
        let n = wave.min(total - start);
        let decisions = futures_util::future::join_all(
            (0..n).map(|_| limiter.check(key, ingest::ratelimit::Scope::Other)),
        )
        .await;
        allowed += decisions
            .into_iter()
            .filter(|d| d.expect("Redis answered").allowed)
            .count();
    }
    allowed
}

/// Many requests of one key at the same moment: their checks are coalesced into rounds of one
/// script call each, and still exactly `limit` pass, each seeing a different remaining budget.
#[tokio::test]
async fn simultaneous_requests_of_one_key_share_script_calls_and_the_limit_stays_exact() {
    use ingest::ratelimit::Scope;

    let prefix = format!("test_{}", faultline_shared::testkit::unique_tag());
    let limiter = own_limiter(&prefix, 25, Duration::from_secs(60));
    let key = key_record();
    let decisions =
        futures_util::future::join_all((0..100).map(|_| limiter.check(&key, Scope::Other))).await;
    let decisions: Vec<_> = decisions
        .into_iter()
        .map(|d| d.expect("Redis answered"))
        .collect();
    let mut remaining: Vec<u64> = decisions
        .iter()
        .filter(|d| d.allowed)
        .map(|d| d.remaining)
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..25).collect::<Vec<u64>>(), "{decisions:?}");
    for refused in decisions.iter().filter(|d| !d.allowed) {
        assert_eq!(refused.remaining, 0);
        assert!(refused.wait_seconds >= 1);
    }
    assert!(
        limiter.script_calls() < 100,
        "checks were not coalesced: {} script calls for 100 requests",
        limiter.script_calls()
    );
    // The next request, alone, is refused too: the rounds left the bucket spent.
    assert!(!limiter.check(&key, Scope::Other).await.unwrap().allowed);
    // A budget this small is never spent locally: every request asked Redis.
    assert_eq!(limiter.local_admissions(), 0);
    forget_bucket(&prefix, &key).await;
}

/// Far from its limit, a key's requests are admitted without waiting for Redis: one after the
/// other, 500 requests cost a handful of script calls, not 500, and the calls that follow debit
/// every one of them, so Redis's bucket ends exactly where 500 single checks would have left it.
#[tokio::test]
async fn far_from_the_limit_requests_pass_at_once_and_redis_is_told_of_each() {
    use ingest::ratelimit::Scope;

    let prefix = format!("test_{}", faultline_shared::testkit::unique_tag());
    // A day's window: no slot comes back during the test, so the figures are exact.
    let day = Duration::from_secs(86_400);
    let limiter = own_limiter(&prefix, 10_000, day);
    let key = key_record();
    for i in 0..500u64 {
        let d = limiter
            .check(&key, Scope::Other)
            .await
            .expect("Redis answered");
        assert!(d.allowed);
        assert_eq!(d.limit, 10_000);
        assert_eq!(d.remaining, 10_000 - 1 - i, "request {i}: {d:?}");
    }
    assert!(
        limiter.local_admissions() >= 450,
        "only {} of 500 requests were admitted locally",
        limiter.local_admissions()
    );
    assert!(
        limiter.script_calls() < 50,
        "{} script calls for 500 requests one after the other",
        limiter.script_calls()
    );
    limiter.settle().await;
    // Another instance, with nothing local yet, asks Redis and sees all 500 debited.
    let other = own_limiter(&prefix, 10_000, day);
    let d = other
        .check(&key, Scope::Other)
        .await
        .expect("Redis answered");
    assert!(d.allowed);
    assert_eq!(d.remaining, 10_000 - 501);
    other.settle().await;
    forget_bucket(&prefix, &key).await;
}

/// Waves of simultaneous requests run a limit of 1,000 down to the last slot: the first waves
/// are admitted locally, the last ones ask Redis, and exactly 1,000 pass.
#[tokio::test]
async fn one_instance_admits_exactly_its_limit_though_it_admits_locally() {
    use ingest::ratelimit::Scope;

    let prefix = format!("test_{}", faultline_shared::testkit::unique_tag());
    let limiter = own_limiter(&prefix, 1_000, Duration::from_secs(86_400));
    let key = key_record();
    assert_eq!(allowed_in_waves(&limiter, &key, 1_500, 40).await, 1_000);
    assert!(
        limiter.local_admissions() > 0,
        "nothing was admitted locally"
    );
    assert!(!limiter.check(&key, Scope::Other).await.unwrap().allowed);
    limiter.settle().await;
    forget_bucket(&prefix, &key).await;
}

/// Four instances on one key at once. Redis refuses only once the debits it has been told of
/// spend the limit, so at least the limit passes; each instance admits locally at most
/// 1/`LOCAL_SHARE` of the budget its last answer reported before Redis hears of it, so they can
/// pass the limit by no more than that. (Measured here: exactly 2,000 of 2,000 in every run; 2,057
/// before local admissions stopped at a quarter of the limit.)
#[tokio::test]
async fn several_instances_on_one_key_stay_within_a_share_of_the_limit() {
    use ingest::ratelimit::LOCAL_SHARE;

    let prefix = format!("test_{}", faultline_shared::testkit::unique_tag());
    let limit = 2_000usize;
    let limiters: Vec<_> = (0..4)
        .map(|_| own_limiter(&prefix, limit as u32, Duration::from_secs(86_400)))
        .collect();
    let key = key_record();
    let allowed: usize = futures_util::future::join_all(
        limiters
            .iter()
            .map(|l| allowed_in_waves(l, &key, 1_000, 20)),
    )
    .await
    .into_iter()
    .sum();
    let locally: u64 = limiters.iter().map(|l| l.local_admissions()).sum();
    let bound = limit + limiters.len() * limit / LOCAL_SHARE as usize;
    assert!(
        (limit..=bound).contains(&allowed),
        "{allowed} passed a limit of {limit} ({locally} admitted locally)"
    );
    assert!(locally > 0, "nothing was admitted locally");
    for l in &limiters {
        l.settle().await;
    }
    forget_bucket(&prefix, &key).await;
}

/// The same through HTTP: 60 concurrent requests against a limit of 20.
#[tokio::test]
async fn concurrent_requests_get_exactly_the_limit_through() {
    let app = spawn_limited(20, 60).await;
    let key = app.create_key(&[Permission::Read]).await;
    let responses = futures_util::future::join_all(
        (0..60).map(|_| app.call(Method::GET, "/api/projects", &key, None)),
    )
    .await;
    let mut remaining = Vec::new();
    let mut refused = 0;
    for resp in &responses {
        match resp.status().as_u16() {
            200 => remaining.push(header(resp, "x-ratelimit-remaining").unwrap()),
            429 => {
                refused += 1;
                assert!(header(resp, "retry-after").unwrap() >= 1);
            }
            other => panic!("unexpected status {other}"),
        }
    }
    remaining.sort_unstable();
    assert_eq!(remaining, (0..20).collect::<Vec<u64>>());
    assert_eq!(refused, 40);
    app.shutdown().await;
}
