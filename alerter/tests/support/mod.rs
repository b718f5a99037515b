//! Test helpers for the alerter: a fresh database per test, events written through the real
//! worker code, rules and integrations, and real local receivers: an HTTP server (Slack, webhook)
//! whose answers a test scripts, and a small SMTP server that keeps every message it accepts.
#![allow(dead_code)]

use alerter::{Delivery, DeliveryConfig, store::Xid8};
use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::post,
};
use chrono::{DateTime, Utc};
use faultline_shared::{
    domain::{DEFAULT_PROJECT_ID, ErrorEvent, Level, stored},
    testkit::TestDb,
};
use serde_json::{Value, json};
use sqlx::{PgPool, Postgres, Transaction};
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use uuid::Uuid;

pub async fn setup() -> TestDb {
    alerter::install_crypto();
    faultline_shared::telemetry::init_tracing();
    TestDb::new().await
}

pub fn delivery_config() -> DeliveryConfig {
    DeliveryConfig {
        max_attempts: 3,
        backoff_base: Duration::from_secs(10),
        backoff_max: Duration::from_secs(600),
        timeout: Duration::from_secs(5),
        lease: Duration::from_secs(60),
        allow_private_targets: true,
        public_url: "http://faultline.test".into(),
        batch: 16,
    }
}

pub fn delivery() -> Delivery {
    Delivery::new(delivery_config())
}

/// One event per call, processed by the worker's own unit of work (groups, events, rollups).
pub async fn ingest(pool: &PgPool, message: &str, level: Level, source: &str, n: usize) {
    ingest_at(pool, message, level, source, "production", Utc::now(), n).await
}

pub async fn ingest_at(
    pool: &PgPool,
    message: &str,
    level: Level,
    source: &str,
    environment: &str,
    at: DateTime<Utc>,
    n: usize,
) {
    let events = events(message, level, source, environment, at, n);
    worker::process::process_batch(pool, &stored(&events))
        .await
        .expect("worker processes the batch");
}

/// A worker transaction in flight: `n` events written by the worker's own code (groups, events,
/// rollups) and not committed yet. Commit it to finish the batch, as the worker would.
pub async fn begin_ingest(
    pool: &PgPool,
    message: &str,
    level: Level,
    source: &str,
    n: usize,
) -> Transaction<'static, Postgres> {
    begin_ingest_at(pool, message, level, source, Utc::now(), n).await
}

/// [`begin_ingest`] for events received at `at` (a worker behind writes them long after).
pub async fn begin_ingest_at(
    pool: &PgPool,
    message: &str,
    level: Level,
    source: &str,
    at: DateTime<Utc>,
    n: usize,
) -> Transaction<'static, Postgres> {
    let events = events(message, level, source, "production", at, n);
    let stored_events = stored(&events);
    let batch = worker::process::Batch::prepare(&stored_events);
    let mut tx = pool.begin().await.expect("begin");
    worker::process::write_batch(&mut tx, &batch)
        .await
        .expect("worker writes the batch");
    tx
}

fn events(
    message: &str,
    level: Level,
    source: &str,
    environment: &str,
    at: DateTime<Utc>,
    n: usize,
) -> Vec<ErrorEvent> {
    (0..n)
        .map(|_| ErrorEvent {
            event_id: Uuid::now_v7(),
            project_id: DEFAULT_PROJECT_ID,
            received_at: at,
            level,
            message: message.to_string(),
            source: source.to_string(),
            environment: environment.to_string(),
            stack_trace: None,
            context: None,
            url: None,
            user_agent: None,
            ip_address: None,
            release: None,
            fingerprint: None,
            frames: None,
            extra: None,
        })
        .collect()
}

/// Waits until every transaction that began before this call has ended, on the whole server:
/// new_error and regression rules see a write only once the xmin of their snapshot has passed its
/// transaction, and another test's transaction in flight on the shared Postgres holds the xmin back.
pub async fn settle(pool: &PgPool) {
    // A transaction id of our own, committed at once: when the xmin is past it, every transaction
    // that had an id before it has ended.
    let mine: Xid8 = sqlx::query_scalar("SELECT pg_current_xact_id()")
        .fetch_one(pool)
        .await
        .expect("xid");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (past,): (bool,) =
            sqlx::query_as("SELECT pg_snapshot_xmin(pg_current_snapshot()) > $1")
                .bind(mine)
                .fetch_one(pool)
                .await
                .expect("xmin");
        if past {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a transaction older than {mine:?} is still open after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Evaluates at the current time once everything committed so far is visible to the rules.
pub async fn evaluate_settled(pool: &PgPool) -> Vec<alerter::Firing> {
    settle(pool).await;
    alerter::evaluate(pool, Utc::now())
        .await
        .expect("evaluation")
}

/// A rule row as the API would write it.
pub struct NewRule {
    pub name: &'static str,
    pub kind: &'static str,
    pub threshold: i64,
    pub window_secs: i32,
    pub cooldown_secs: i32,
    pub level: Option<&'static str>,
    pub source: Option<&'static str>,
    pub channels: Vec<&'static str>,
}

impl Default for NewRule {
    fn default() -> Self {
        Self {
            name: "High Error Rate",
            kind: "threshold",
            threshold: 10,
            window_secs: 300,
            cooldown_secs: 600,
            level: None,
            source: None,
            channels: vec!["webhook"],
        }
    }
}

pub async fn create_rule(pool: &PgPool, r: NewRule) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO alert_rules (id, project_id, name, kind, threshold, time_window_secs,
                                  cooldown_secs, filter_level, filter_source, notifications,
                                  created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now() - interval '1 hour')",
    )
    .bind(id)
    .bind(DEFAULT_PROJECT_ID)
    .bind(r.name)
    .bind(r.kind)
    .bind(r.threshold)
    .bind(r.window_secs)
    .bind(r.cooldown_secs)
    .bind(r.level)
    .bind(r.source)
    .bind(r.channels.iter().map(|c| c.to_string()).collect::<Vec<_>>())
    .execute(pool)
    .await
    .expect("rule");
    id
}

pub async fn set_integration(pool: &PgPool, name: &str, config: Value) {
    sqlx::query(
        "INSERT INTO integrations (project_id, name, config, enabled) VALUES ($1, $2, $3, true)
         ON CONFLICT (project_id, name) DO UPDATE SET config = EXCLUDED.config",
    )
    .bind(DEFAULT_PROJECT_ID)
    .bind(name)
    .bind(config)
    .execute(pool)
    .await
    .expect("integration");
}

/// (status, attempts, last_error) of every notification, oldest first.
pub async fn notifications(pool: &PgPool) -> Vec<(String, i32, Option<String>)> {
    sqlx::query_as("SELECT status, attempts, last_error FROM notifications ORDER BY created_at, id")
        .fetch_all(pool)
        .await
        .expect("notifications")
}

/// (attempt, success, http_status, error) of every recorded attempt, in order.
pub async fn attempts(pool: &PgPool) -> Vec<(i32, bool, Option<i32>, Option<String>)> {
    sqlx::query_as(
        "SELECT attempt, success, http_status, error FROM delivery_attempts ORDER BY attempt",
    )
    .fetch_all(pool)
    .await
    .expect("attempts")
}

/// A request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// A scripted answer: status and optional `Retry-After` seconds.
type Answer = (u16, Option<u64>);

#[derive(Clone, Default)]
struct ReceiverState {
    got: Arc<Mutex<Vec<Received>>>,
    /// Answers to give, in order: (status, Retry-After); once empty, 200.
    script: Arc<Mutex<VecDeque<Answer>>>,
    always: Arc<Mutex<Option<u16>>>,
    /// Requests still to be held without an answer (a receiver that hangs).
    hang: Arc<Mutex<usize>>,
}

/// A real HTTP server on a free local port that records every POST.
pub struct Receiver {
    pub url: String,
    state: ReceiverState,
}

async fn receive(
    State(s): State<ReceiverState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    s.got.lock().unwrap().push(Received {
        path: uri.path().to_string(),
        headers,
        body,
    });
    let hang = {
        let mut h = s.hang.lock().unwrap();
        let hang = *h > 0;
        *h = h.saturating_sub(1);
        hang
    };
    if hang {
        tokio::time::sleep(Duration::from_secs(300)).await;
    }
    let scripted = s.script.lock().unwrap().pop_front();
    let always = *s.always.lock().unwrap();
    let (status, retry_after) = scripted.unwrap_or((always.unwrap_or(200), None));
    let mut resp = (StatusCode::from_u16(status).unwrap(), "ok").into_response();
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert("retry-after", secs.to_string().parse().unwrap());
    }
    resp
}

impl Receiver {
    pub async fn start() -> Self {
        let state = ReceiverState::default();
        let app = Router::new()
            .route("/{*path}", post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, state }
    }

    /// The next answers, in order, before falling back to 200 (or `always_answer`).
    pub fn answer(&self, answers: &[Answer]) {
        self.state
            .script
            .lock()
            .unwrap()
            .extend(answers.iter().copied());
    }

    /// The next `n` requests get no answer (the connection stays open).
    pub fn hang_next(&self, n: usize) {
        *self.state.hang.lock().unwrap() = n;
    }

    pub fn always_answer(&self, status: u16) {
        *self.state.always.lock().unwrap() = Some(status);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.got.lock().unwrap().clone()
    }

    /// Polls until at least `n` requests arrived, or panics after `secs`.
    pub async fn wait_for(&self, n: usize, secs: u64) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "received {} of {n} requests",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A message the SMTP server accepted.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

/// A minimal but real SMTP server (RFC 5321 commands over TCP) on a free local port.
pub struct SmtpServer {
    pub port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpServer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mails: Arc<Mutex<Vec<Mail>>> = Arc::default();
        let store = mails.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    let _ = smtp_session(sock, store).await;
                });
            }
        });
        SmtpServer { port, mails }
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

async fn smtp_session(
    sock: tokio::net::TcpStream,
    store: Arc<Mutex<Vec<Mail>>>,
) -> std::io::Result<()> {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 test.local ESMTP ready\r\n").await?;
    let mut from = String::new();
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            w.write_all(b"250-test.local\r\n250 8BITMIME\r\n").await?;
        } else if upper.starts_with("HELO") {
            w.write_all(b"250 test.local\r\n").await?;
        } else if upper.starts_with("MAIL FROM:") {
            from = cmd[10..].trim().to_string();
            to.clear();
            w.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            to.push(cmd[8..].trim().to_string());
            w.write_all(b"250 OK\r\n").await?;
        } else if upper == "DATA" {
            w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await?;
            let mut data = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(&line);
            }
            store.lock().unwrap().push(Mail {
                from: from.clone(),
                to: to.clone(),
                data,
            });
            w.write_all(b"250 OK queued\r\n").await?;
        } else if upper == "QUIT" {
            w.write_all(b"221 Bye\r\n").await?;
            return Ok(());
        } else if upper == "RSET" || upper == "NOOP" {
            w.write_all(b"250 OK\r\n").await?;
        } else {
            w.write_all(b"502 Command not implemented\r\n").await?;
        }
    }
}

pub fn webhook_config(r: &Receiver, secret: &str) -> Value {
    json!({"url": format!("{}/hook", r.url), "secret": secret})
}
