//! End to end through the real components: HTTP → ingest → RabbitMQ → worker → Postgres, and
//! ingest's behaviour while the broker is unreachable.

mod support;

use faultline_shared::testkit::TcpProxy;
use serde_json::json;
use std::time::Duration;
use support::TestApp;

#[tokio::test]
async fn posted_events_are_grouped_and_counted_end_to_end() {
    let app = TestApp::spawn_with_worker().await;
    // 1,000 events from 10 templates, half as single posts, half in batches.
    let templates = [
        "user {} not found",
        "timeout after {} ms",
        "order {} failed",
        "cannot parse id={}",
        "retry {} of 5",
        "socket {} closed",
        "invalid token {}",
        "queue depth {} exceeded",
        "payment {} refunded",
        "cache key {} evicted",
    ];
    let event = |i: usize| {
        json!({
            "message": templates[i % 10].replace("{}", &(i * 31).to_string()),
            "source": "backend",
            "level": if i.is_multiple_of(3) { "warning" } else { "error" },
            "context": {"i": i},
        })
    };
    for i in 0..500 {
        let resp = app.post_event(&event(i)).await;
        assert_eq!(resp.status(), 202);
    }
    for chunk in (500..1000).collect::<Vec<_>>().chunks(100) {
        let batch: Vec<_> = chunk.iter().map(|&i| event(i)).collect();
        let resp = app.post_batch(&json!(batch)).await;
        assert_eq!(resp.status(), 202);
    }
    app.wait_for_count(1000, 60).await;
    let (groups,): (i64,) = sqlx::query_as("SELECT count(*) FROM error_groups")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(groups, 10);
    let (events, ips): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(ip_address) FROM events")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!((events, ips), (1000, 1000));
    app.shutdown().await;
}

#[tokio::test]
async fn with_the_broker_unreachable_ingest_answers_503_and_recovers_by_itself() {
    let mut proxy = TcpProxy::start("127.0.0.1:5672").await;
    let port = proxy.port;
    let app = TestApp::spawn_with(|s| {
        s.services.amqp_url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    })
    .await;
    let ev = json!({"message": "still there?", "source": "backend"});
    assert_eq!(app.post_event(&ev).await.status(), 202);

    proxy.cut();
    // Every answer during the outage is 503 with Retry-After; never 202.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut saw_503 = false;
    while tokio::time::Instant::now() < deadline {
        let resp = app.post_event(&ev).await;
        assert_ne!(resp.status(), 202, "no 202 while the broker is unreachable");
        if resp.status() == 503 {
            assert!(resp.headers().contains_key("retry-after"));
            let b: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(b["code"], "queue_unavailable");
            saw_503 = true;
            break;
        }
    }
    assert!(saw_503);
    for _ in 0..5 {
        assert_eq!(app.post_event(&ev).await.status(), 503);
    }
    let health = app
        .client
        .get(format!("{}/health", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503);

    proxy.restore().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = app.post_event(&ev).await.status();
        if status == 202 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            tokio::time::Instant::now() < deadline,
            "ingest did not recover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Exactly the two accepted events are in the queue.
    assert_eq!(app.queue_depth().await, 2);
    app.shutdown().await;
}

/// Postgres stores no NUL: not in text (`invalid byte sequence`), not as `\u0000` in jsonb
/// (`unsupported Unicode escape sequence`). JSON allows both, so an SDK can send them; such an
/// event must still be stored, and must not hold up the events behind it.
#[tokio::test]
async fn an_event_with_nul_characters_is_stored_and_does_not_hold_up_the_queue() {
    let app = TestApp::spawn_with_worker().await;
    let nul = json!({
        "message": "bad\u{0}byte",
        "source": "backend",
        "environment": "prod\u{0}",
        "stack_trace": "Error: x\u{0}\n    at f (a.js:1:1)",
        "url": "https://example.com/\u{0}",
        "release": "1.0\u{0}",
        "context": {"k\u{0}ey": "v\u{0}alue", "nested": ["\u{0}"]},
    });
    assert_eq!(app.post_event(&nul).await.status(), 202);
    let after = json!({"message": "the next one", "source": "backend"});
    assert_eq!(app.post_event(&after).await.status(), 202);
    app.wait_for_count(2, 30).await;
    let (message, environment, context): (String, String, String) = sqlx::query_as(
        "SELECT message, environment, context::text FROM events WHERE message LIKE 'bad%'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    // Each NUL became U+FFFD, the replacement character: visible, and nothing else changed.
    assert_eq!(message, "bad\u{FFFD}byte");
    assert_eq!(environment, "prod\u{FFFD}");
    assert!(
        context.contains("k\u{FFFD}ey") && context.contains("v\u{FFFD}alue"),
        "{context}"
    );
    app.shutdown().await;
}
