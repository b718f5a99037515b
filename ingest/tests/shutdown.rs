//! SIGTERM on the real `ingest` binary under load: it stops accepting, finishes the requests in
//! flight (each answered only after its broker confirm), exits 0, and loses nothing it accepted.

mod support;

use serde_json::{Value, json};
use std::{collections::HashSet, process::Stdio, sync::Arc, time::Duration};
use support::TestApp;
use tokio::sync::Mutex;
use uuid::Uuid;

#[tokio::test]
async fn sigterm_under_load_drains_exits_zero_and_keeps_every_accepted_event() {
    let mut app = TestApp::spawn().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ingest"))
        .env("DATABASE_URL", &app.db.url)
        .env("AMQP_URL", &app.settings.services.amqp_url)
        .env("REDIS_URL", &app.settings.services.redis_url)
        .env("QUEUE_PREFIX", &app.prefix)
        .env("PORT", port.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ingest binary starts");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ok = app
            .client
            .get(format!("{base}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ok {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ingest did not become healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let accepted = Arc::new(Mutex::new(HashSet::<Uuid>::new()));
    let mut load = Vec::new();
    for t in 0..8 {
        let client = app.client.clone();
        let key = app.key.clone();
        let base = base.clone();
        let accepted = accepted.clone();
        load.push(tokio::spawn(async move {
            for i in 0.. {
                let resp = client
                    .post(format!("{base}/api/errors"))
                    .header("content-type", "application/json")
                    .header("x-api-key", &key)
                    .body(json!({"message": format!("load {t}/{i}"), "source": "api"}).to_string())
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 202 => {
                        let b: Value = r.json().await.unwrap();
                        accepted
                            .lock()
                            .await
                            .insert(b["data"]["id"].as_str().unwrap().parse().unwrap());
                    }
                    // After the signal: refused connections or closed keep-alive connections.
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => return,
                }
            }
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while accepted.lock().await.len() < 300 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no load went through"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("ingest exits within 20 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    for task in load {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("load stops")
            .unwrap();
    }

    // Drain the queue with a worker: every accepted id must be stored.
    app.start_worker().await;
    let accepted = accepted.lock().await.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ids: Vec<(Uuid,)> = sqlx::query_as("SELECT id FROM events")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
        let stored: HashSet<Uuid> = ids.into_iter().map(|(id,)| id).collect();
        if accepted.is_subset(&stored) {
            assert_eq!(
                stored.len(),
                accepted.len(),
                "nothing stored that was not accepted"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "accepted events lost"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.shutdown().await;
}
