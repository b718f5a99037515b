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
