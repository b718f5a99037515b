//! Helpers for the worker's tests: events built like ingest builds them, a publisher straight to
//! the test's own queue, and counters read from the test's own database.
#![allow(dead_code)]

use chrono::Utc;
use faultline_shared::{
    config::{ServiceUrls, WorkerSettings},
    domain::{DEFAULT_PROJECT_ID, ErrorEvent, Level, encode_batch},
    queue::{self, Topology},
    testkit,
};
use lapin::{
    BasicProperties,
    options::{BasicPublishOptions, ConfirmSelectOptions},
};
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

pub fn event(message: &str) -> ErrorEvent {
    ErrorEvent {
        event_id: Uuid::now_v7(),
        project_id: DEFAULT_PROJECT_ID,
        received_at: Utc::now(),
        level: Level::Error,
        message: message.to_string(),
        source: "backend".into(),
        environment: "production".into(),
        stack_trace: None,
        context: None,
        url: None,
        user_agent: None,
        ip_address: None,
        release: None,
        fingerprint: None,
        frames: None,
        extra: None,
    }
}

pub fn settings(db_url: &str, prefix: &str) -> WorkerSettings {
    WorkerSettings {
        services: ServiceUrls {
            database_url: db_url.to_string(),
            amqp_url: testkit::amqp_url(),
            redis_url: testkit::redis_url(),
            queue_prefix: prefix.to_string(),
            redis_prefix: prefix.to_string(),
            db_max_connections: 5,
        },
        port: 0,
        batch_size: 200,
        batch_wait: Duration::from_millis(20),
        prefetch: 16,
        prefetch_bytes: 24 * 1024 * 1024,
        commit_concurrency: 2,
        retention_days: 30,
        retention_interval: Duration::from_secs(3600),
        retention_batch: 1000,
    }
}

/// Publishes raw message bodies to the test's exchange, with confirms, as ingest does.
pub async fn publish_raw(prefix: &str, bodies: &[Vec<u8>]) {
    publish_raw_at(&testkit::amqp_url(), prefix, bodies).await;
}

/// [`publish_raw`] to the broker at `url` (a test's own).
pub async fn publish_raw_at(url: &str, prefix: &str, bodies: &[Vec<u8>]) {
    let conn = queue::connect(url, "worker-test").await.expect("amqp");
    let ch = conn.create_channel().await.expect("channel");
    let t = Topology::new(prefix);
    t.declare(&ch).await.expect("declare");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm");
    for body in bodies {
        ch.basic_publish(
            t.exchange.as_str().into(),
            t.routing_key.as_str().into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirmed");
    }
    let _ = conn.close(200, "".into()).await;
}

pub async fn publish_events(prefix: &str, messages: &[Vec<ErrorEvent>]) {
    let bodies: Vec<Vec<u8>> = messages
        .iter()
        .map(|events| {
            let encoded: Vec<Vec<u8>> = events
                .iter()
                .map(|e| serde_json::to_vec(e).unwrap())
                .collect();
            encode_batch(encoded.iter().map(|v| v.as_slice()))
        })
        .collect();
    publish_raw(prefix, &bodies).await;
}

pub async fn depth(prefix: &str, dead: bool) -> u32 {
    depth_at(&testkit::amqp_url(), prefix, dead).await
}

/// Messages ready in the test's queue (or its dead-letter queue) on the broker at `url`.
pub async fn depth_at(url: &str, prefix: &str, dead: bool) -> u32 {
    let conn = queue::connect(url, "worker-test").await.expect("amqp");
    let ch = conn.create_channel().await.expect("channel");
    let t = Topology::new(prefix);
    t.declare(&ch).await.expect("declare");
    let q = if dead { &t.dead_queue } else { &t.queue };
    let (n, _) = queue::queue_depth(&ch, q).await.expect("depth");
    let _ = conn.close(200, "".into()).await;
    n
}

pub async fn counted(pool: &PgPool) -> i64 {
    let (n,): (Option<i64>,) = sqlx::query_as("SELECT sum(count)::bigint FROM error_groups")
        .fetch_one(pool)
        .await
        .unwrap();
    n.unwrap_or(0)
}

pub async fn stored_events(pool: &PgPool) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap();
    n
}

pub async fn rollup_total(pool: &PgPool) -> i64 {
    let (n,): (Option<i64>,) = sqlx::query_as("SELECT sum(count)::bigint FROM error_counts_minute")
        .fetch_one(pool)
        .await
        .unwrap();
    n.unwrap_or(0)
}

/// Polls `f` until it returns true, failing the test after `secs`.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the groups' counts add up to `n`, failing the test after `secs`.
pub async fn until_counted(pool: &PgPool, n: i64, secs: u64) {
    eventually(secs, &format!("{n} events counted"), || async move {
        counted(pool).await == n
    })
    .await;
}

/// Waits until the test's dead-letter queue holds `n` messages, failing the test after `secs`.
pub async fn until_dead_letters(prefix: &str, n: u32, secs: u64) {
    eventually(secs, &format!("{n} dead letters"), || async move {
        depth(prefix, true).await == n
    })
    .await;
}

/// A worker running in-process with `/health` and `/metrics` on a port the test knows.
pub struct RunningWorker {
    pub addr: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl RunningWorker {
    pub async fn start(settings: WorkerSettings) -> Self {
        // reqwest is built without a default crypto provider (see dependencies.md).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(worker::run_with_listener(settings, listener, async move {
            let _ = stopped.await;
        }));
        RunningWorker {
            addr,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    /// `/health`: its status code and body.
    pub async fn health(&self) -> (u16, serde_json::Value) {
        let resp = reqwest::get(format!("{}/health", self.addr))
            .await
            .expect("health answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("health body is JSON"))
    }

    /// The value of one `/metrics` series (exact name and labels as rendered), if present.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = reqwest::get(format!("{}/metrics", self.addr))
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics body");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Stops the worker and fails the test if it ended with an error.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("worker task").expect("worker ran cleanly");
        }
    }
}

/// One message of a dead-letter queue.
#[derive(Debug)]
pub struct DeadLetter {
    /// The event ids it carries, in order.
    pub ids: Vec<uuid::Uuid>,
    /// Elements in all.
    pub len: usize,
    /// Rejected by a consumer and dead-lettered by the broker (an `x-death` header).
    pub rejected: bool,
    /// The worker's `x-faultline-error` header, if any.
    pub reason: String,
}

/// Every message of the dead-letter queue at `url`, left in it.
pub async fn dead_letters_at(url: &str, prefix: &str) -> Vec<DeadLetter> {
    use lapin::{
        options::{BasicGetOptions, BasicRecoverOptions},
        types::AMQPValue,
    };
    let conn = faultline_shared::queue::connect(url, "worker-test")
        .await
        .expect("amqp");
    let ch = conn.create_channel().await.expect("channel");
    let t = faultline_shared::queue::Topology::new(prefix);
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(
            t.dead_queue.as_str().into(),
            BasicGetOptions { no_ack: false },
        )
        .await
        .expect("basic.get")
    {
        // Raw: a dead-lettered event may hold a number no f64 can (`1e200000`).
        let elements: Vec<&serde_json::value::RawValue> =
            serde_json::from_slice(&m.delivery.data).expect("a JSON array");
        let headers = m.delivery.properties.headers().clone().unwrap_or_default();
        let reason = match headers.inner().get("x-faultline-error") {
            Some(AMQPValue::LongString(r)) => r.to_string(),
            _ => String::new(),
        };
        out.push(DeadLetter {
            ids: elements
                .iter()
                .filter_map(|e| {
                    let fields: std::collections::HashMap<&str, &serde_json::value::RawValue> =
                        serde_json::from_str(e.get()).ok()?;
                    serde_json::from_str(fields.get("event_id")?.get()).ok()
                })
                .collect(),
            len: elements.len(),
            rejected: headers.inner().contains_key("x-death"),
            reason,
        });
    }
    // Unacked, they go back to the queue when the channel closes.
    let _ = ch
        .basic_recover(BasicRecoverOptions { requeue: true })
        .await;
    let _ = conn.close(200, "".into()).await;
    out
}
