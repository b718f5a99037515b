//! `TestApp`: a real ingest on port 0 against the real Postgres, RabbitMQ and Redis, with its own
//! database and queue prefix, and (optionally) a real worker consuming its queue in-process.
#![allow(dead_code)]

use faultline_shared::{
    config::{AccessSettings, HttpSettings, IngestSettings, ServiceUrls, WorkerSettings},
    db,
    domain::{ApiKey, DEFAULT_PROJECT_ID, Permission, Permissions},
    testkit::{self, TestDb},
};
use reqwest::{Client, Response};
use serde_json::Value;
use std::time::Duration;
use tokio::sync::oneshot;
use uuid::Uuid;

pub struct TestApp {
    pub addr: String,
    pub db: TestDb,
    pub prefix: String,
    pub key: String,
    pub client: Client,
    pub settings: IngestSettings,
    shutdown: Option<oneshot::Sender<()>>,
    worker_stop: Option<oneshot::Sender<()>>,
    worker_done: Option<tokio::task::JoinHandle<()>>,
}

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn services(db_url: &str, prefix: &str) -> ServiceUrls {
    ServiceUrls {
        database_url: db_url.to_string(),
        amqp_url: testkit::amqp_url(),
        redis_url: testkit::redis_url(),
        queue_prefix: prefix.to_string(),
        redis_prefix: prefix.to_string(),
        db_max_connections: 10,
    }
}

pub fn worker_settings(db_url: &str, prefix: &str) -> WorkerSettings {
    WorkerSettings {
        services: services(db_url, prefix),
        port: 0,
        batch_size: 500,
        batch_wait: Duration::from_millis(20),
        prefetch: 32,
        prefetch_bytes: 24 * 1024 * 1024,
        commit_concurrency: 2,
        retention_days: 30,
        retention_interval: Duration::from_secs(3600),
        retention_batch: 1000,
    }
}

impl TestApp {
    /// Ingest only: events stay in the queue.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Ingest with its settings adjusted by `tweak` (e.g. a smaller body limit).
    pub async fn spawn_with(tweak: impl FnOnce(&mut IngestSettings)) -> Self {
        install_crypto();
        faultline_shared::telemetry::init_tracing();
        let db = TestDb::new().await;
        let prefix = format!("test_{}", testkit::unique_tag());
        let mut settings = IngestSettings {
            services: services(&db.url, &prefix),
            port: 0,
            max_body_bytes: 1024 * 1024,
            body_budget_bytes: 8 * 1024 * 1024,
            batch_max_events: 1000,
            trust_proxy: false,
            key_cache_ttl: Duration::from_millis(500),
            publish_timeout: Duration::from_secs(5),
            publish_max_in_flight: 16,
            publish_max_events: 500,
            publish_linger: Duration::from_millis(1),
            health_check_interval: Duration::from_secs(1),
            access: AccessSettings {
                last_used_flush: Duration::from_millis(100),
                ..AccessSettings::default()
            },
            http: HttpSettings::default(),
        };
        tweak(&mut settings);
        let app = ingest::Application::build(settings.clone())
            .await
            .expect("ingest builds");
        let addr = format!("http://127.0.0.1:{}", app.port());
        let publisher = app.state.publisher.clone();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        // The publisher connects in the background; wait until it can take events.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !publisher.is_connected() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let key = ApiKey::generate();
        db::insert_key(
            &db.pool,
            DEFAULT_PROJECT_ID,
            "test",
            &key,
            &Permissions::new(Permission::ALL.to_vec()),
            None,
        )
        .await
        .expect("test key");
        TestApp {
            addr,
            db,
            prefix,
            key: key.expose().to_string(),
            client: Client::new(),
            settings,
            shutdown: Some(tx),
            worker_stop: None,
            worker_done: None,
        }
    }

    /// Ingest plus an in-process worker on the same queue.
    pub async fn spawn_with_worker() -> Self {
        let mut app = Self::spawn().await;
        app.start_worker().await;
        app
    }

    pub async fn start_worker(&mut self) {
        self.start_worker_with(|_| {}).await;
    }

    /// A worker on this app's database and queue prefix, its settings adjusted by `tweak` (e.g.
    /// pointed at a broker of the test's own).
    pub async fn start_worker_with(&mut self, tweak: impl FnOnce(&mut WorkerSettings)) {
        let mut settings = worker_settings(&self.db.url, &self.prefix);
        tweak(&mut settings);
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            worker::run(settings, async move {
                let _ = rx.await;
            })
            .await
            .expect("worker runs");
        });
        self.worker_stop = Some(tx);
        self.worker_done = Some(handle);
    }

    pub async fn create_key(&self, permissions: &[Permission]) -> String {
        let key = ApiKey::generate();
        db::insert_key(
            &self.db.pool,
            DEFAULT_PROJECT_ID,
            "extra",
            &key,
            &Permissions::new(permissions.to_vec()),
            None,
        )
        .await
        .expect("key");
        key.expose().to_string()
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        key: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        let mut req = self
            .client
            .post(format!("{}{}", self.addr, path))
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        req.send().await.expect("request sent")
    }

    pub async fn post_event(&self, event: &Value) -> Response {
        self.post_raw(
            "/api/errors",
            Some("application/json"),
            Some(&self.key),
            event.to_string(),
        )
        .await
    }

    pub async fn post_batch(&self, events: &Value) -> Response {
        self.post_raw(
            "/api/errors/batch",
            Some("application/json"),
            Some(&self.key),
            events.to_string(),
        )
        .await
    }

    /// Any method on any path with the given key; a body is sent as JSON.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> Response {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.addr, path))
            .header("x-api-key", key);
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        req.send().await.expect("request sent")
    }

    /// The value of the unlabelled series `name` on ingest's `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").await.text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(format!("{}{}", self.addr, path))
            .header("x-api-key", &self.key)
            .send()
            .await
            .expect("request sent")
    }

    /// Messages waiting in this test's queue, on the broker ingest publishes to.
    pub async fn queue_depth(&self) -> u32 {
        let conn = faultline_shared::queue::connect(&self.settings.services.amqp_url, "test-probe")
            .await
            .expect("amqp");
        let ch = conn.create_channel().await.expect("channel");
        let t = faultline_shared::queue::Topology::new(&self.prefix);
        t.declare(&ch).await.expect("declare");
        let (n, _) = faultline_shared::queue::queue_depth(&ch, &t.queue)
            .await
            .expect("depth");
        let _ = conn.close(200, "".into()).await;
        n
    }

    /// Sum of group counts in the default project.
    pub async fn counted(&self) -> i64 {
        let (n,): (Option<i64>,) = sqlx::query_as("SELECT sum(count)::bigint FROM error_groups")
            .fetch_one(&self.db.pool)
            .await
            .expect("sum");
        n.unwrap_or(0)
    }

    /// Polls until the groups count `expected` events (or panics after `secs`).
    pub async fn wait_for_count(&self, expected: i64, secs: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let n = self.counted().await;
            if n == expected {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "counted {n}, expected {expected}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop_worker(&mut self) {
        if let Some(tx) = self.worker_stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.worker_done.take() {
            let _ = h.await;
        }
    }

    pub async fn shutdown(mut self) {
        self.stop_worker().await;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        testkit::delete_topology(&self.prefix).await;
    }
}

pub fn new_uuid() -> Uuid {
    Uuid::now_v7()
}
