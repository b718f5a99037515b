//! Ingest and a worker on a RabbitMQ node of the test's own, which the test really stops (then
//! kills) and starts again under a steady load (the shared broker is never touched): no 202 while the broker
//! is down, 202s again after it is back without restarting anything, and every event that got a
//! 202 stored exactly once — which holds only because the topology is durable, messages are
//! persistent and a 202 waits for the broker's confirm.

mod support;

use faultline_shared::testkit::OwnRabbit;
use serde_json::{Value, json};
use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
    time::Duration,
};
use support::TestApp;
use uuid::Uuid;

/// Where the broker was when a request started or ended.
const UP: u8 = 0;
const STOPPED: u8 = 1;
const RESTARTED: u8 = 2;
const KILLED: u8 = 3;
const BACK: u8 = 4;

/// One request of the load: the broker's phase at its start and end, its status and, for a 202,
/// the event id ingest gave it.
#[derive(Clone, Copy)]
struct Sample {
    started: u8,
    ended: u8,
    status: u16,
    id: Option<Uuid>,
}

/// Clients posting events one after another until told to stop, as SDKs under steady traffic
/// would; after a 503 a client waits a little (it would honour Retry-After).
struct Load {
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(app: &TestApp, clients: usize) -> Self {
        let phase = Arc::new(AtomicU8::new(UP));
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|c| {
                let (phase, stop, samples) = (phase.clone(), stop.clone(), samples.clone());
                let (client, url, key) = (
                    app.client.clone(),
                    format!("{}/api/errors", app.addr),
                    app.key.clone(),
                );
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let started = phase.load(Ordering::SeqCst);
                        let resp = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .header("x-api-key", &key)
                            .body(
                                json!({"message": format!("client {c} request {i} failed"), "source": "load"})
                                    .to_string(),
                            )
                            .send()
                            .await
                            .expect("ingest answers");
                        let status = resp.status().as_u16();
                        let id = if status == 202 {
                            let b: Value = resp.json().await.expect("202 body");
                            Some(b["data"]["id"].as_str().unwrap().parse().unwrap())
                        } else {
                            None
                        };
                        let ended = phase.load(Ordering::SeqCst);
                        samples.lock().unwrap().push(Sample {
                            started,
                            ended,
                            status,
                            id,
                        });
                        if status != 202 {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                })
            })
            .collect();
        Load {
            phase,
            stop,
            samples,
            tasks,
        }
    }

    fn set_phase(&self, phase: u8) {
        self.phase.store(phase, Ordering::SeqCst);
    }

    fn count(&self, f: impl Fn(&Sample) -> bool) -> usize {
        self.samples.lock().unwrap().iter().filter(|s| f(s)).count()
    }

    /// Waits until `f` holds for at least `n` samples, failing the test after a minute.
    async fn wait_for(&self, n: usize, what: &str, f: impl Fn(&Sample) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.count(&f) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {n} × {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("a load client panicked");
        }
        self.samples.lock().unwrap().clone()
    }
}

/// Marks the broker as down in the load, and checks the outage shows: 503s to the clients and
/// on ingest's `/health`.
async fn outage(app: &TestApp, load: &Load, phase: u8) {
    load.set_phase(phase);
    load.wait_for(30, "503 while the broker is down", |s| {
        s.started == phase && s.status == 503
    })
    .await;
    let health = app
        .client
        .get(format!("{}/health", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503, "ingest's health shows the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_broker_stopped_or_killed_under_load_ingest_answers_503_recovers_and_every_202_is_stored_once()
 {
    let mut rabbit = OwnRabbit::new().await;
    let url = rabbit.url();
    let ingest_url = url.clone();
    let mut app = TestApp::spawn_with(move |s| {
        s.services.amqp_url = ingest_url;
        // The load is the test's, not an abuse: no 429s in the way.
        s.access.ingest_limit = 1_000_000;
    })
    .await;
    app.start_worker_with(|w| w.services.amqp_url = url).await;

    let load = Load::start(&app, 4);
    load.wait_for(200, "202 before the outage", |s| s.status == 202)
        .await;

    // A graceful stop, as `docker stop` or systemd would do it: the node closes every
    // connection, the worker's unacked deliveries go back to the durable queue.
    rabbit.stop().await;
    outage(&app, &load, STOPPED).await;
    load.set_phase(RESTARTED);
    rabbit.start().await;
    // No restart of ingest or the worker: both reconnect by themselves.
    load.wait_for(200, "202 after the restart", |s| {
        s.started == RESTARTED && s.status == 202
    })
    .await;

    // A crash (SIGKILL): only what the node had made durable before confirming survives.
    rabbit.kill().await;
    outage(&app, &load, KILLED).await;
    load.set_phase(BACK);
    rabbit.start().await;
    load.wait_for(200, "202 after the crash", |s| {
        s.started == BACK && s.status == 202
    })
    .await;
    let samples = load.finish().await;

    let down: Vec<&Sample> = samples
        .iter()
        .filter(|s| [STOPPED, KILLED].contains(&s.started) && s.ended == s.started)
        .collect();
    assert!(
        down.iter().all(|s| s.status == 503),
        "only 503 while the broker was down, never 202: {:?}",
        down.iter().map(|s| s.status).collect::<HashSet<_>>()
    );
    for s in &samples {
        assert!(
            s.status == 202 || s.status == 503,
            "unexpected status {}",
            s.status
        );
    }
    let accepted: HashSet<Uuid> = samples.iter().filter_map(|s| s.id).collect();
    assert_eq!(
        accepted.len(),
        samples.iter().filter(|s| s.status == 202).count(),
        "each 202 carries its own event id"
    );

    // Every 202 is in Postgres, once. A 503 whose message had in fact reached the broker before
    // it went away may be stored too (the client would retry it): counted once all the same.
    let pool = app.db.pool.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ids: Vec<(Uuid,)> = sqlx::query_as("SELECT id FROM events")
            .fetch_all(&pool)
            .await
            .unwrap();
        let stored: HashSet<Uuid> = ids.into_iter().map(|(id,)| id).collect();
        if accepted.is_subset(&stored) && app.queue_depth().await == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} accepted events missing from Postgres",
            accepted.difference(&stored).count()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The worker finishes the batch in hand; then stored and counted are read in one snapshot.
    app.stop_worker().await;
    let (stored, counted): (i64, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM events), (SELECT sum(count)::bigint FROM error_groups)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(counted, Some(stored), "each stored event counted once");
    assert!(stored as usize >= accepted.len());
    eprintln!(
        "load: {} requests, {} × 202, {} × 503 entirely while the broker was down; {} events stored",
        samples.len(),
        accepted.len(),
        down.len(),
        stored
    );
    app.shutdown().await;
}

/// A RabbitMQ resource alarm (memory here; a disk alarm acts the same) blocks every publishing
/// connection. Ingest hears the broker's `connection.blocked`: from then on it refuses events at
/// once with 503 and `Retry-After` (not after the confirm timeout, a minute here), its `/health`
/// is 503 and says why, and once the alarm lifts it accepts again without a restart. Every 202
/// is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_broker_out_of_memory_ingest_refuses_at_once_says_why_and_resumes() {
    let rabbit = OwnRabbit::new().await;
    let url = rabbit.url();
    let ingest_url = url.clone();
    let mut app = TestApp::spawn_with(move |s| {
        s.services.amqp_url = ingest_url;
        s.publish_timeout = Duration::from_secs(60);
    })
    .await;
    app.start_worker_with(|w| w.services.amqp_url = url).await;
    let post = |message: &str| {
        let (client, url, key) = (
            app.client.clone(),
            format!("{}/api/errors", app.addr),
            app.key.clone(),
        );
        let id = Uuid::now_v7();
        let body = json!({"message": message, "source": "backend", "event_id": id}).to_string();
        async move {
            let resp = client
                .post(url)
                .header("content-type", "application/json")
                .header("x-api-key", key)
                .body(body)
                .send()
                .await
                .expect("ingest answers");
            (id, resp)
        }
    };
    let health = || async {
        let resp = app.get("/health").await;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        (status, body["checks"]["rabbitmq"]["error"].clone())
    };
    let (before, resp) = post("before the alarm").await;
    assert_eq!(resp.status(), 202);

    rabbit
        .ctl(&["set_vm_memory_high_watermark", "0.000001"])
        .await;
    // The broker blocks a connection when it next publishes: this request's message is the one
    // caught; it is answered when the alarm lifts.
    let caught = tokio::spawn(post("caught by the block"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, error) = health().await;
        if status == 503 {
            let error = error.as_str().unwrap_or_default().to_string();
            assert!(
                error.contains("blocks publishing") && error.contains("memory"),
                "/health says why: {error}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ingest never heard of the block"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Well within the confirm timeout: refused, not waited out.
    let (_, refused) = tokio::time::timeout(Duration::from_secs(30), post("during the alarm"))
        .await
        .expect("a request during the alarm is refused at once");
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "queue_unavailable", "{body}");
    assert!(
        !caught.is_finished(),
        "the caught message waits for its confirm"
    );

    rabbit.ctl(&["set_vm_memory_high_watermark", "0.4"]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while health().await.0 != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ingest never heard the block lift"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (after, resp) = post("after the alarm").await;
    assert_eq!(resp.status(), 202);
    let (caught, resp) = caught.await.unwrap();
    assert_eq!(resp.status(), 202, "confirmed once the alarm lifted");

    app.wait_for_count(3, 30).await;
    let ids: Vec<(Uuid,)> = sqlx::query_as("SELECT id FROM events ORDER BY id")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    let mut expected = vec![before, caught, after];
    expected.sort();
    assert_eq!(
        ids.into_iter().map(|(id,)| id).collect::<Vec<_>>(),
        expected
    );
    app.shutdown().await;
}
