//! Faults under load, through TCP proxies the test cuts and restores in front of the real services
//! (the shared servers are never stopped): what got 202 is never lost, nothing is counted twice.

mod support;

use faultline_shared::testkit::TcpProxy;
use serde_json::{Value, json};
use std::{collections::HashSet, time::Duration};
use support::TestApp;
use uuid::Uuid;

#[tokio::test]
async fn every_event_that_got_202_during_a_broker_outage_is_stored_exactly_once() {
    let mut proxy = TcpProxy::start("127.0.0.1:5672").await;
    let port = proxy.port;
    let mut app = TestApp::spawn_with(|s| {
        s.services.amqp_url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    })
    .await;
    app.start_worker().await;

    let mut accepted: HashSet<Uuid> = HashSet::new();
    let mut refused = 0;
    let post = async |app: &TestApp, i: usize, accepted: &mut HashSet<Uuid>| -> u16 {
        let resp = app
            .post_event(&json!({"message": format!("request {i} failed"), "source": "api"}))
            .await;
        let status = resp.status().as_u16();
        if status == 202 {
            let b: Value = resp.json().await.unwrap();
            accepted.insert(b["data"]["id"].as_str().unwrap().parse().unwrap());
        }
        status
    };
    for i in 0..200 {
        assert_eq!(post(&app, i, &mut accepted).await, 202);
    }
    proxy.cut();
    for i in 200..400 {
        match post(&app, i, &mut accepted).await {
            202 => {}
            503 => refused += 1,
            other => panic!("unexpected status {other} during the outage"),
        }
    }
    assert!(
        refused > 150,
        "the outage must be visible as 503s, got {refused}"
    );
    proxy.restore().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut i = 400;
    while accepted.len() < 500 {
        let status = post(&app, i, &mut accepted).await;
        assert!(status == 202 || status == 503);
        if status == 503 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "ingest did not recover"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        i += 1;
    }
    // Everything acknowledged with 202 is stored, once; an event refused with 503 whose message
    // had in fact reached the broker may be stored too (the client would retry it).
    let pool = app.db.pool.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ids: Vec<(Uuid,)> = sqlx::query_as("SELECT id FROM events")
            .fetch_all(&pool)
            .await
            .unwrap();
        let stored: HashSet<Uuid> = ids.into_iter().map(|(id,)| id).collect();
        if accepted.is_subset(&stored) {
            let counted = app.counted().await;
            assert_eq!(
                counted,
                stored.len() as i64,
                "each stored event counted once"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "accepted events missing from Postgres"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.shutdown().await;
}

#[tokio::test]
async fn with_postgres_unreachable_known_keys_keep_ingesting_and_unknown_keys_get_503_not_401() {
    let mut proxy = TcpProxy::start("127.0.0.1:5432").await;
    let port = proxy.port;
    let app = TestApp::spawn().await;
    // A second ingest on the same database and queue, but reaching Postgres through the proxy.
    let db_url = app
        .db
        .url
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{port}"));
    let mut settings = app.settings.clone();
    settings.services.database_url = db_url;
    settings.key_cache_ttl = Duration::from_millis(100);
    let other = ingest::Application::build(settings).await.unwrap();
    let addr = format!("http://127.0.0.1:{}", other.port());
    let publisher = other.state.publisher.clone();
    tokio::spawn(other.run_until(std::future::pending()));
    while !publisher.is_connected() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let post = |key: String| {
        let client = app.client.clone();
        let addr = addr.clone();
        async move {
            client
                .post(format!("{addr}/api/errors"))
                .header("content-type", "application/json")
                .header("x-api-key", key)
                .body(json!({"message": "db down?", "source": "api"}).to_string())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(post(app.key.clone()).await, 202);
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(300)).await; // past the cache TTL: lookups hit Postgres
    assert_eq!(
        post(app.key.clone()).await,
        202,
        "a known key keeps working from the cache"
    );
    assert_eq!(
        post("fl_never-seen-before".into()).await,
        503,
        "unknown while the DB is down"
    );
    proxy.restore().await;
    assert_eq!(post("fl_never-seen-before".into()).await, 401);
    assert_eq!(app.queue_depth().await, 2);
    app.shutdown().await;
}
