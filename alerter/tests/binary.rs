//! The `alerter` binary as `make run` starts it: configured from the environment, serving
//! `/health` and `/metrics` on ALERTER_PORT, writing its heartbeat, stopping cleanly on SIGTERM.

mod support;

use std::{process::Stdio, time::Duration};

#[tokio::test]
async fn the_binary_serves_health_writes_heartbeats_and_stops_on_sigterm() {
    let db = support::setup().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_alerter"))
        .env("DATABASE_URL", &db.url)
        .env("ALERTER_PORT", port.to_string())
        .env("HEARTBEAT_INTERVAL_SECS", "1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("alerter starts");

    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            && r.status() == 200
        {
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["checks"]["postgres"]["status"], "healthy");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no healthy /health");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);

    // Heartbeat and recorded health checks of the three backing services.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (beats,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM service_heartbeats WHERE service = 'alerter'")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        let (checks,): (i64,) = sqlx::query_as(
            "SELECT count(DISTINCT component) FROM health_checks
             WHERE component IN ('postgres', 'redis', 'rabbitmq')",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if beats == 1 && checks == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "heartbeats {beats}, checked services {checks}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let pid = child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits within 15 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn an_alerter_killed_mid_delivery_is_replaced_and_the_notification_still_arrives() {
    let db = support::setup().await;
    let receiver = support::Receiver::start().await;
    // The first request hangs: the alerter is killed while it waits for the answer.
    receiver.hang_next(1);
    support::set_integration(&db.pool, "webhook", support::webhook_config(&receiver, "s")).await;
    support::create_rule(&db.pool, support::NewRule::default()).await;
    support::ingest(
        &db.pool,
        "boom",
        faultline_shared::domain::Level::Error,
        "backend",
        11,
    )
    .await;

    let start = || {
        spawn_alerter(
            &db.url,
            &[
                ("DELIVERY_TIMEOUT_SECS", "5"),
                ("DELIVERY_LEASE_SECS", "15"),
                ("DELIVERY_INTERVAL_MS", "200"),
            ],
        )
    };
    let mut first = start();
    receiver.wait_for(1, 30).await;
    // SIGKILL, and wait for it to be gone.
    first.kill().await.expect("alerter killed");

    let _second = start();
    // Once the dead alerter's lease (15 s) has run out, the new one sends the notification again.
    let got = receiver.wait_for(2, 45).await;
    assert_eq!(
        got[0].header("idempotency-key"),
        got[1].header("idempotency-key"),
        "the same notification, recognisable as such by the receiver"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = support::notifications(&db.pool).await;
        if n.len() == 1 && n[0].0 == "delivered" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{n:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let a = support::attempts(&db.pool).await;
    assert_eq!(a.len(), 2, "{a:?}");
    assert!(!a[0].1 && a[0].3.as_deref().unwrap().contains("lease expired"));
    assert!(a[1].1);
    assert_eq!(receiver.received().len(), 2, "no third copy");
}

/// A steady stream of new errors while alerters are SIGKILLed at random moments, round after
/// round: every firing that was recorded gets its notification, every notification is delivered
/// (at least once, as documented: a kill between the send and its record repeats it, with the same
/// idempotency key), and no firing is paged twice under different keys.
#[tokio::test]
async fn alerters_killed_at_random_moments_over_many_rounds_lose_no_notification() {
    use rand::Rng;
    let db = support::setup().await;
    let receiver = support::Receiver::start().await;
    support::set_integration(&db.pool, "webhook", support::webhook_config(&receiver, "s")).await;
    support::create_rule(
        &db.pool,
        support::NewRule {
            name: "Any new error",
            kind: "new_error",
            threshold: 1,
            window_secs: 60,
            cooldown_secs: 0,
            ..Default::default()
        },
    )
    .await;

    // The steady load: a new error group every 150 ms until the kills are over.
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let pool = db.pool.clone();
    let load = tokio::spawn(async move {
        let mut n = 0u32;
        while !*stopped.borrow() {
            n += 1;
            support::ingest(
                &pool,
                &format!("new failure number {n} in module m{n}"),
                faultline_shared::domain::Level::Error,
                "backend",
                1,
            )
            .await;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(150)) => {}
                _ = stopped.changed() => {}
            }
        }
        n
    });

    let start = || {
        spawn_alerter(
            &db.url,
            &[
                ("DELIVERY_TIMEOUT_SECS", "2"),
                ("DELIVERY_LEASE_SECS", "3"),
                ("DELIVERY_INTERVAL_MS", "100"),
            ],
        )
    };
    let rounds = 8;
    for _ in 0..rounds {
        let mut alerter = start();
        let alive = rand::rng().random_range(300..2500);
        tokio::time::sleep(Duration::from_millis(alive)).await;
        // SIGKILL, and wait for it to be gone.
        alerter.kill().await.expect("alerter killed");
    }
    let _ = stop.send(true);
    let groups = load.await.unwrap();

    // One alerter that lives: it takes over what the killed ones left (expired leases included).
    let _last = start();
    // Settled: every notification delivered, every group evaluated, and nothing changed over a
    // whole second (an evaluation in flight could still add a firing).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut previous = None;
    let (firings, keys) = loop {
        let (firings,): (i64,) =
            sqlx::query_as("SELECT coalesce(sum(trigger_count), 0)::bigint FROM incidents")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        let n = support::notifications(&db.pool).await;
        let keys: Vec<String> = sqlx::query_scalar(
            "SELECT idempotency_key FROM notifications ORDER BY idempotency_key",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        let settled = !n.is_empty() && n.iter().all(|(status, _, _)| status == "delivered");
        // Every group created before the load stopped has been looked at by an evaluation: its
        // transaction is below the bound the rule last evaluated up to.
        let (unseen,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM error_group_search s
             WHERE s.created_xid >= (SELECT coalesce(min(last_xmin), '0') FROM alert_rules)",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        let state = (firings, keys.clone());
        if settled && unseen == 0 && previous.as_ref() == Some(&state) {
            assert_eq!(
                firings as usize,
                n.len(),
                "one notification per firing: {n:?}"
            );
            break state;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "firings {firings}, unseen groups {unseen}, notifications {n:?}"
        );
        previous = Some(state);
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert!(
        firings >= 2,
        "the rule fired {firings} times over {groups} new groups"
    );

    // Every notification reached the receiver, each under its own key, some perhaps twice.
    let mut received: Vec<String> = receiver
        .received()
        .iter()
        .filter_map(|r| r.header("idempotency-key"))
        .collect();
    received.sort();
    received.dedup();
    assert_eq!(received, keys, "every notification delivered, none unknown");
}

/// The alerter binary on a free port, evaluating every second, allowed to post to the local
/// receiver, with the delivery settings a test needs.
fn spawn_alerter(database_url: &str, env: &[(&str, &str)]) -> tokio::process::Child {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_alerter"))
        .env("DATABASE_URL", database_url)
        .env("ALERTER_PORT", port.to_string())
        .env("ALERTER_SCHEDULE", "* * * * * *")
        .env("ALERTER_ALLOW_PRIVATE_TARGETS", "true")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("alerter starts")
}
