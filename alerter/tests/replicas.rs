//! Several alerters on one database, and an alerter that dies between the outbox write and the
//! delivery: each notification still arrives, exactly once per alerter pair, at least once after
//! a crash.

mod support;

use alerter::evaluate;
use chrono::{TimeDelta, Utc};
use faultline_shared::{
    config::{AlerterSettings, ServiceUrls},
    domain::Level,
    testkit,
};
use std::{collections::HashMap, time::Duration};
use support::*;

#[tokio::test]
async fn two_alerters_on_one_database_send_each_notification_exactly_once() {
    let db = setup().await;
    let receiver = Receiver::start().await;
    set_integration(&db.pool, "webhook", webhook_config(&receiver, "s")).await;
    for _ in 0..20 {
        create_rule(&db.pool, NewRule::default()).await;
    }
    ingest(&db.pool, "boom", Level::Error, "backend", 11).await;
    // A second alerter: its own pool (its own connections), same database.
    let other = faultline_shared::db::pool_options(5)
        .connect(&db.url)
        .await
        .unwrap();

    // Both evaluate the same tick at once.
    let tick = Utc::now();
    let (a, b) = tokio::join!(evaluate(&db.pool, tick), evaluate(&other, tick));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.len() + b.len(),
        20,
        "each rule evaluated once: {} + {}",
        a.len(),
        b.len()
    );
    // A late replica evaluating the same tick again finds nothing left to do.
    assert!(evaluate(&other, tick).await.unwrap().is_empty());

    let (da, db_) = (delivery(), delivery());
    let now = Utc::now();
    let (ra, rb) = tokio::join!(da.deliver_due(&db.pool, now), db_.deliver_due(&other, now));
    assert_eq!(ra.unwrap().delivered + rb.unwrap().delivered, 20);

    let got = receiver.received();
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for r in &got {
        *per_key
            .entry(r.header("idempotency-key").unwrap())
            .or_default() += 1;
    }
    assert_eq!(got.len(), 20);
    assert_eq!(per_key.len(), 20);
    assert!(per_key.values().all(|n| *n == 1));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn settings(db_url: &str, port: u16) -> AlerterSettings {
    AlerterSettings {
        services: ServiceUrls {
            database_url: db_url.to_string(),
            amqp_url: testkit::amqp_url(),
            redis_url: testkit::redis_url(),
            db_max_connections: 5,
            ..ServiceUrls::from_env().expect("defaults parse")
        },
        port,
        // Every second: the test does not wait for a 30 s tick.
        schedule: "* * * * * *".into(),
        delivery_interval: Duration::from_millis(100),
        delivery_max_attempts: 3,
        delivery_backoff_base: Duration::from_secs(10),
        delivery_backoff_max: Duration::from_secs(60),
        delivery_timeout: Duration::from_secs(5),
        delivery_lease: Duration::from_secs(15),
        allow_private_targets: true,
        public_url: "http://faultline.test".into(),
        health_check_interval: Duration::from_secs(30),
        heartbeat_interval: Duration::from_millis(200),
    }
}

#[tokio::test]
async fn notifications_written_before_a_crash_are_delivered_after_restart() {
    let db = setup().await;
    let receiver = Receiver::start().await;
    set_integration(&db.pool, "webhook", webhook_config(&receiver, "s")).await;
    create_rule(&db.pool, NewRule::default()).await;
    create_rule(
        &db.pool,
        NewRule {
            name: "Second",
            ..NewRule::default()
        },
    )
    .await;
    ingest(&db.pool, "boom", Level::Error, "backend", 11).await;

    // The first alerter wrote the outbox and died: one row untouched, one claimed (mid-delivery)
    // with a lease that has since run out.
    let written = Utc::now();
    assert_eq!(evaluate(&db.pool, written).await.unwrap().len(), 2);
    // Its lease ends now: by the time the new alerter looks, it has run out.
    let claimed = alerter::store::claim_due_notifications(&db.pool, written, Utc::now(), 1)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);

    // The restarted alerter delivers both.
    let port = free_port();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(alerter::run(settings(&db.url, port), async move {
        let _ = rx.await;
    }));
    let got = receiver.wait_for(2, 20).await;
    let keys: std::collections::HashSet<_> = got
        .iter()
        .map(|r| r.header("idempotency-key").unwrap())
        .collect();
    assert_eq!(keys.len(), 2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = notifications(&db.pool).await;
        if n.iter().all(|x| x.0 == "delivered") {
            // The row claimed by the dead alerter was attempted again.
            let mut tries: Vec<i32> = n.iter().map(|x| x.1).collect();
            tries.sort();
            assert_eq!(tries, vec![1, 2]);
            // Its lost first attempt is recorded as such.
            let a = attempts(&db.pool).await;
            assert!(
                a.iter().any(|x| x.0 == 1
                    && !x.1
                    && x.3.as_deref().is_some_and(|e| e.contains("lease expired"))),
                "{a:?}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{n:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // It serves /health and writes its heartbeat.
    let health = reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("alerter_deliveries_total"), "{metrics}");
    let (beats,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM service_heartbeats WHERE service = 'alerter'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(beats, 1);

    // And stops when told to.
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("stops within 10 s")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn two_running_alerters_page_once_per_firing() {
    let db = setup().await;
    let receiver = Receiver::start().await;
    set_integration(&db.pool, "webhook", webhook_config(&receiver, "s")).await;
    for _ in 0..5 {
        create_rule(&db.pool, NewRule::default()).await;
    }
    ingest(&db.pool, "boom", Level::Error, "backend", 11).await;
    let mut stops = Vec::new();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        runs.push(tokio::spawn(alerter::run(
            settings(&db.url, free_port()),
            async move {
                let _ = rx.await;
            },
        )));
        stops.push(tx);
    }
    receiver.wait_for(5, 20).await;
    // Several more ticks pass: the cooldown (10 min) keeps the rules from paging again, and no
    // notification is sent twice.
    let (ticks_before,): (Option<chrono::DateTime<Utc>>,) =
        sqlx::query_as("SELECT min(last_evaluated_at) FROM alert_rules")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (min,): (Option<chrono::DateTime<Utc>>,) =
            sqlx::query_as("SELECT min(last_evaluated_at) FROM alert_rules")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        if min >= ticks_before.map(|t| t + TimeDelta::seconds(3)) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(receiver.received().len(), 5);
    for tx in stops {
        let _ = tx.send(());
    }
    for r in runs {
        r.await.unwrap().unwrap();
    }
}
