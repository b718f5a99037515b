//! One typed settings tree, read from the environment. Every value has a default that works on a
//! developer machine, so `ingest`, `worker` and `alerter` start with no configuration at all.

use std::{env, str::FromStr, time::Duration};

/// Why a variable could not be used; names the variable so the operator knows what to fix.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name} has an invalid value {value:?}: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

/// Reads `name`, falling back to `default` when unset or empty.
pub fn var_or(name: &'static str, default: &str) -> String {
    match env::var(name) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => default.to_string(),
    }
}

/// Reads a comma-separated list; empty when unset.
pub fn list(name: &'static str) -> Vec<String> {
    var_or(name, "")
        .split(',')
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .collect()
}

/// Reads and parses `name`, falling back to `default` when unset or empty.
pub fn parse_or<T>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(|e: T::Err| ConfigError {
            name,
            value: v,
            reason: e.to_string(),
        }),
        _ => Ok(default),
    }
}

/// Connection strings of the three backing services.
#[derive(Debug, Clone)]
pub struct ServiceUrls {
    pub database_url: String,
    pub amqp_url: String,
    pub redis_url: String,
    /// Prefix of every exchange and queue name, so several installations (or tests) share a broker.
    pub queue_prefix: String,
    /// Prefix of every Redis key (cache entries, generations), so several installations (or
    /// tests) share a Redis.
    pub redis_prefix: String,
    pub db_max_connections: u32,
}

impl ServiceUrls {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            database_url: var_or(
                "DATABASE_URL",
                "postgres://postgres:postgres@127.0.0.1:5432/faultline",
            ),
            amqp_url: var_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            redis_url: var_or("REDIS_URL", "redis://127.0.0.1:6379"),
            queue_prefix: var_or("QUEUE_PREFIX", "faultline"),
            redis_prefix: var_or("REDIS_PREFIX", "faultline"),
            db_max_connections: parse_or("DB_MAX_CONNECTIONS", 10)?,
        })
    }
}

/// Settings of the ingest binary.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub services: ServiceUrls,
    pub port: u16,
    /// Largest accepted request body, in bytes; larger bodies answer 413.
    pub max_body_bytes: usize,
    /// Bytes of event bodies in hand at once, from reading a body until its events are confirmed
    /// (`ingest::extract::BodyBudget`); requests over it wait for room. At least `max_body_bytes`.
    pub body_budget_bytes: usize,
    /// Largest number of events in one `POST /api/errors/batch`.
    pub batch_max_events: usize,
    /// Honour `X-Forwarded-For` for the client IP only when a trusted proxy sets it.
    pub trust_proxy: bool,
    /// How long an API-key lookup is cached in memory; bounds how long a revoked key keeps working.
    pub key_cache_ttl: Duration,
    /// How long a publish may wait for the broker's confirm before the request answers 503.
    pub publish_timeout: Duration,
    /// Messages awaiting confirmation at once. Only one of them may be partly filled; the rest
    /// are full (`publish_max_events`) messages of a load that outruns the confirms.
    pub publish_max_in_flight: usize,
    /// Most events put in one broker message by the group-commit publisher.
    pub publish_max_events: usize,
    /// Least time between two messages that are not full (`PUBLISH_LINGER_US`, 1,000 by default;
    /// 0 sends the next one as soon as the previous one is confirmed), unless every connection of
    /// the previous message has sent its next request. RabbitMQ's CPU goes per message: with many
    /// clients at 5,000 events/s a message carries ~11 events instead of ~5 and RabbitMQ uses 0.30
    /// cores instead of 0.53, for ~1 ms more at the median; a few clients that each wait for their
    /// answer share a message instead of taking turns (benches/RESULTS.md, seventeenth session).
    pub publish_linger: Duration,
    /// How often ingest records a health check of its dependencies (uptime and availability are
    /// computed from these records).
    pub health_check_interval: Duration,
    /// Rate limits, API-key bookkeeping and the scrubbing of secrets from events.
    pub access: AccessSettings,
    /// Connection-level limits of the HTTP server (slow or idle clients, oversized headers).
    pub http: HttpSettings,
}

/// Limits that protect the HTTP server from clients that hold connections without finishing a
/// request (slowloris), trickle a body, or send oversized headers: without them each such client
/// pins a connection, a task and a file descriptor for as long as it likes.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Longest a client may take to send a request's headers, counted from the moment the server
    /// is ready for them: a new connection, or a keep-alive connection after its last answer. So
    /// it is also the idle timeout of keep-alive connections.
    pub header_timeout: Duration,
    /// Longest a handler waits for the whole request body once it starts reading it; a body that
    /// trickles in slower answers 408 and the connection is closed.
    pub body_timeout: Duration,
    /// Largest request head (request line and headers); a larger one answers 431. Sentry and our
    /// SDKs send a few hundred bytes.
    pub max_header_bytes: usize,
    /// Most headers in one request; more answer 431.
    pub max_headers: usize,
    /// On shutdown, how long connections get to finish the request in hand before the server
    /// stops waiting for them.
    pub shutdown_grace: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            shutdown_grace: Duration::from_secs(15),
        }
    }
}

impl HttpSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        let d = Self::default();
        Ok(Self {
            header_timeout: Duration::from_millis(
                parse_or(
                    "HTTP_HEADER_TIMEOUT_MS",
                    d.header_timeout.as_millis() as u64,
                )?
                .max(1),
            ),
            body_timeout: Duration::from_millis(
                parse_or("HTTP_BODY_TIMEOUT_MS", d.body_timeout.as_millis() as u64)?.max(1),
            ),
            max_header_bytes: parse_or("HTTP_MAX_HEADER_BYTES", d.max_header_bytes)?.max(1024),
            max_headers: parse_or("HTTP_MAX_HEADERS", d.max_headers)?.max(1),
            shutdown_grace: Duration::from_millis(parse_or(
                "HTTP_SHUTDOWN_GRACE_MS",
                d.shutdown_grace.as_millis() as u64,
            )?),
        })
    }
}

/// Per-key rate limits (requests per window, by scope; 0 turns a scope's limit off) and how often
/// a key's `last_used` is written. Each key may override its limits (`api_keys.rate_limits`).
#[derive(Debug, Clone)]
pub struct AccessSettings {
    /// `POST /api/errors` and `/api/errors/batch` (the contract's "error logging").
    pub ingest_limit: u32,
    /// `/api/stats` and `/api/analytics/*`.
    pub analytics_limit: u32,
    /// Every other authenticated endpoint.
    pub other_limit: u32,
    /// The window the limits count over: one minute, as in the contract (tests shorten it).
    pub window: Duration,
    /// Least time between two writes of one key's `last_used` (no database write per request).
    pub last_used_interval: Duration,
    /// How often pending `last_used` times are written, in one statement.
    pub last_used_flush: Duration,
    /// Context keys (fragments, case-insensitive) whose values ingest filters out of events, in
    /// addition to the built-in list (password, secret, token, authorization, cookie, ...).
    pub scrub_fields: Vec<String>,
    /// Origins whose browser pages may call the API (CORS), e.g. a browser SDK posting errors;
    /// `*` allows any origin; empty turns CORS off.
    pub cors_origins: Vec<String>,
}

impl Default for AccessSettings {
    fn default() -> Self {
        Self {
            ingest_limit: 1000,
            analytics_limit: 100,
            other_limit: 500,
            window: Duration::from_secs(60),
            last_used_interval: Duration::from_secs(60),
            last_used_flush: Duration::from_secs(10),
            scrub_fields: Vec::new(),
            cors_origins: Vec::new(),
        }
    }
}

impl AccessSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        let d = Self::default();
        Ok(Self {
            ingest_limit: parse_or("RATE_LIMIT_INGEST", d.ingest_limit)?,
            analytics_limit: parse_or("RATE_LIMIT_ANALYTICS", d.analytics_limit)?,
            other_limit: parse_or("RATE_LIMIT_OTHER", d.other_limit)?,
            window: Duration::from_secs(parse_or("RATE_LIMIT_WINDOW_SECS", 60u64)?.max(1)),
            last_used_interval: Duration::from_secs(parse_or("KEY_LAST_USED_INTERVAL_SECS", 60)?),
            last_used_flush: Duration::from_secs(
                parse_or("KEY_LAST_USED_FLUSH_SECS", 10u64)?.max(1),
            ),
            scrub_fields: list("SCRUB_FIELDS"),
            cors_origins: list("CORS_ALLOWED_ORIGINS"),
        })
    }
}

impl IngestSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            services: ServiceUrls::from_env()?,
            port: parse_or("PORT", 8080)?,
            max_body_bytes: parse_or("MAX_BODY_BYTES", 1024 * 1024)?,
            body_budget_bytes: parse_or("BODY_BUDGET_BYTES", 8 * 1024 * 1024)?,
            batch_max_events: parse_or("BATCH_MAX_EVENTS", 1000)?,
            trust_proxy: parse_or("TRUST_PROXY", false)?,
            key_cache_ttl: Duration::from_millis(parse_or("KEY_CACHE_TTL_MS", 5000)?),
            publish_timeout: Duration::from_millis(parse_or("PUBLISH_TIMEOUT_MS", 5000)?),
            publish_max_in_flight: parse_or("PUBLISH_MAX_IN_FLIGHT", 16)?,
            publish_max_events: parse_or("PUBLISH_MAX_EVENTS", 500)?,
            publish_linger: Duration::from_micros(parse_or("PUBLISH_LINGER_US", 1000)?),
            health_check_interval: Duration::from_secs(parse_or("HEALTH_CHECK_INTERVAL_SECS", 30)?),
            access: AccessSettings::from_env()?,
            http: HttpSettings::from_env()?,
        })
    }
}

/// Settings of the worker binary.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub services: ServiceUrls,
    /// Port of the worker's `/health` and `/metrics`.
    pub port: u16,
    /// Events per database transaction (upper bound; a batch closes earlier on `batch_wait`).
    /// Only a backlog fills it (after a storm, or with batch requests), and then it sets how fast
    /// the worker catches up: a transaction writes each group, activity and rollup row its events
    /// touch once, and costs the same round trips, whatever its size. 10,000 rather than 5,000
    /// halved Postgres's CPU per event in the batch benchmark and drained it at 46,589–50,541
    /// events/s instead of 27,487–30,676 (interleaved runs), within the worker's 150 MB with
    /// `prefetch_bytes` at 36 MiB (benches/RESULTS.md, fifteenth session).
    pub batch_size: usize,
    /// Longest a partial batch waits for more events before it is written. Each transaction
    /// rewrites every group, activity and rollup row its events touch once, whatever its size, so
    /// under load a longer wait buys fewer row writes per event: 400 ms rather than 50 ms cut
    /// Postgres's CPU per event by a fifth to a half (the more, the quicker commits are;
    /// benches/RESULTS.md, fourteenth session). It is also the most a lone event waits before it
    /// is written.
    pub batch_wait: Duration,
    /// Unacknowledged broker messages in hand at once (each may carry many events). The batches
    /// in hand share it (those committing and the one being gathered), each taking an equal part. It
    /// must be large enough for each part to fill `WORKER_BATCH_SIZE` at ingest's typical packing
    /// (a few events per message under load), or batches stall on the window (benches/RESULTS.md,
    /// "prefetch stall").
    pub prefetch: u16,
    /// Bytes of unacknowledged deliveries the worker lets the broker hand it: the prefetch (in
    /// messages, at most `prefetch`) follows the message sizes seen (`worker::window`). With batch
    /// traffic a message holds tens of events, and `prefetch` of them would be tens of MB; while
    /// messages are small (single events) the byte budget allows all of `prefetch`. It bounds the
    /// worker's memory: the batches in hand are at most this many bytes of messages, decoded.
    /// Each of them takes a third, so 36 MiB lets a batch of 1 KB events reach `batch_size`.
    pub prefetch_bytes: usize,
    /// Batches written at once, each in its own transaction (acks stay in delivery order). One
    /// transaction uses at most one Postgres core; 2 suits a 2-core host.
    pub commit_concurrency: u16,
    /// Events older than this are deleted by the retention job; groups and rollups stay.
    pub retention_days: u32,
    /// How often the retention job runs.
    pub retention_interval: Duration,
    /// Rows deleted per retention statement, so no statement holds locks for long.
    pub retention_batch: i64,
}

impl WorkerSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            services: ServiceUrls::from_env()?,
            port: parse_or("WORKER_PORT", 8081)?,
            batch_size: parse_or("WORKER_BATCH_SIZE", 10_000)?,
            batch_wait: Duration::from_millis(parse_or("WORKER_BATCH_WAIT_MS", 400)?),
            prefetch: parse_or("WORKER_PREFETCH", 1024)?,
            prefetch_bytes: parse_or("WORKER_PREFETCH_BYTES", 36 * 1024 * 1024)?,
            commit_concurrency: parse_or("WORKER_COMMIT_CONCURRENCY", 2)?,
            retention_days: parse_or("EVENT_RETENTION_DAYS", 30)?,
            retention_interval: Duration::from_secs(parse_or("RETENTION_INTERVAL_SECS", 300)?),
            retention_batch: parse_or("RETENTION_BATCH", 5000)?,
        })
    }
}

/// Settings of the alerter binary.
#[derive(Debug, Clone)]
pub struct AlerterSettings {
    pub services: ServiceUrls,
    /// Port of the alerter's `/health` and `/metrics`.
    pub port: u16,
    /// When rules are evaluated: a cron expression with seconds first (6 fields).
    pub schedule: String,
    /// How often the delivery loop looks for due notifications.
    pub delivery_interval: Duration,
    /// Attempts per notification before it is marked failed.
    pub delivery_max_attempts: i32,
    /// Wait before the first retry; doubles with each attempt, capped at `delivery_backoff_max`.
    pub delivery_backoff_base: Duration,
    pub delivery_backoff_max: Duration,
    /// Time limit of one outbound call (HTTP request or SMTP conversation).
    pub delivery_timeout: Duration,
    /// How long a claimed notification stays claimed; a row whose sender died is sent again after it.
    pub delivery_lease: Duration,
    /// Allow webhooks and Slack URLs that resolve to loopback or private addresses. Off by default
    /// (SSRF); `make run` turns it on so local receivers work in development.
    pub allow_private_targets: bool,
    /// Base URL of the dashboard/API, used for links in notifications.
    pub public_url: String,
    /// How often Postgres, Redis and RabbitMQ are checked and the result recorded.
    pub health_check_interval: Duration,
    /// How often the heartbeat row is written.
    pub heartbeat_interval: Duration,
}

impl AlerterSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            services: ServiceUrls::from_env()?,
            port: parse_or("ALERTER_PORT", 8082)?,
            schedule: var_or("ALERTER_SCHEDULE", "*/30 * * * * *"),
            delivery_interval: Duration::from_millis(parse_or("DELIVERY_INTERVAL_MS", 1000)?),
            delivery_max_attempts: parse_or("DELIVERY_MAX_ATTEMPTS", 5)?,
            delivery_backoff_base: Duration::from_secs(parse_or("DELIVERY_BACKOFF_SECS", 10)?),
            delivery_backoff_max: Duration::from_secs(parse_or("DELIVERY_BACKOFF_MAX_SECS", 600)?),
            delivery_timeout: Duration::from_secs(parse_or("DELIVERY_TIMEOUT_SECS", 10)?),
            delivery_lease: Duration::from_secs(parse_or("DELIVERY_LEASE_SECS", 60)?),
            allow_private_targets: parse_or("ALERTER_ALLOW_PRIVATE_TARGETS", false)?,
            public_url: var_or("PUBLIC_URL", "http://localhost:8080"),
            health_check_interval: Duration::from_secs(parse_or("HEALTH_CHECK_INTERVAL_SECS", 30)?),
            heartbeat_interval: Duration::from_secs(parse_or("HEARTBEAT_INTERVAL_SECS", 5)?),
        })
    }
}
