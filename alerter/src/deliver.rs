//! The delivery loop's unit of work: [`Delivery::deliver_due`] claims due outbox rows, sends each
//! (outside any transaction, with a timeout), records the attempt and schedules a retry with
//! exponential backoff, or marks the row delivered or failed. Delivery is at least once: a row
//! whose sender died is claimed again once its lease runs out; receivers drop duplicates by the
//! idempotency key.

use crate::{
    channels::{self, EmailConfig, SendError, Sent, SlackConfig, WebhookConfig},
    rule::Channel,
    store::{self, AttemptRecord, Claimed, Next},
};
use chrono::{DateTime, TimeDelta, Utc};
use faultline_shared::config::AlerterSettings;
use serde_json::{Value, json};
use sqlx::PgPool;
use std::time::{Duration, Instant};

/// How deliveries behave; see the matching `AlerterSettings` fields.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub max_attempts: i32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub timeout: Duration,
    pub lease: Duration,
    pub allow_private_targets: bool,
    pub public_url: String,
    /// Rows claimed (and sent concurrently) per round; with the timeout this bounds a round's
    /// duration well under the lease.
    pub batch: i64,
}

impl DeliveryConfig {
    pub fn from_settings(s: &AlerterSettings) -> Self {
        Self {
            max_attempts: s.delivery_max_attempts.max(1),
            backoff_base: s.delivery_backoff_base,
            backoff_max: s.delivery_backoff_max,
            timeout: s.delivery_timeout,
            lease: s.delivery_lease.max(s.delivery_timeout * 3),
            allow_private_targets: s.allow_private_targets,
            public_url: s.public_url.clone(),
            batch: 16,
        }
    }

    /// Wait before attempt `attempt + 1`: base · 2^(attempt-1), capped.
    pub fn backoff(&self, attempt: i32) -> Duration {
        let exp = (attempt.max(1) - 1).min(20) as u32;
        self.backoff_base
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.backoff_max)
    }
}

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    pub delivered: usize,
    pub retrying: usize,
    pub failed: usize,
}

impl DeliveryReport {
    pub fn attempted(&self) -> usize {
        self.delivered + self.retrying + self.failed
    }
}

/// Sends notifications; cheap to clone (the HTTP client is shared).
#[derive(Clone)]
pub struct Delivery {
    http: channels::Http,
    pub config: DeliveryConfig,
}

impl Delivery {
    pub fn new(config: DeliveryConfig) -> Self {
        Self {
            http: channels::Http::new(config.timeout),
            config,
        }
    }

    /// Claims and sends every notification due at `now` (in rounds of `batch`), until none is due.
    pub async fn deliver_due(
        &self,
        pool: &PgPool,
        now: DateTime<Utc>,
    ) -> anyhow::Result<DeliveryReport> {
        let mut report = DeliveryReport::default();
        loop {
            let lease_until = now + TimeDelta::from_std(self.config.lease)?;
            let claimed =
                store::claim_due_notifications(pool, now, lease_until, self.config.batch).await?;
            if claimed.is_empty() {
                return Ok(report);
            }
            let results = futures_util::future::join_all(
                claimed.into_iter().map(|c| self.deliver_one(pool, c, now)),
            )
            .await;
            for r in results {
                match r? {
                    Next::Delivered => report.delivered += 1,
                    Next::Retry { .. } => report.retrying += 1,
                    Next::Failed => report.failed += 1,
                }
            }
        }
    }

    async fn deliver_one(
        &self,
        pool: &PgPool,
        c: Claimed,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Next> {
        if c.abandoned {
            // The previous attempt has no outcome: its alerter stopped mid-send. Record that, so
            // the attempt history has no hole (the receiver may or may not have got it).
            let rec = AttemptRecord {
                notification_id: c.id,
                project_id: c.project_id,
                channel: &c.channel,
                attempt: c.attempts - 1,
                started_at: Utc::now(),
                duration_ms: 0.0,
                success: false,
                http_status: None,
                error: Some("no outcome recorded: the sending alerter stopped (lease expired)"),
            };
            store::record_abandoned_attempt(pool, &rec).await?;
        }
        let started_at = Utc::now();
        let started = Instant::now();
        let result = match store::integration(pool, c.project_id, &c.channel).await? {
            None => Err(SendError::new(format!(
                "the {} integration is not configured",
                c.channel
            ))),
            Some(i) if !i.enabled => Err(SendError::new(format!(
                "the {} integration is disabled",
                c.channel
            ))),
            Some(i) => {
                let mut payload = c.payload.clone();
                self.add_link(&mut payload);
                match c.channel.parse::<Channel>() {
                    Ok(ch) => self.send(ch, &i.config, &payload, &c.idempotency_key).await,
                    Err(()) => Err(SendError::permanent("unknown channel")),
                }
            }
        };
        let elapsed = started.elapsed();
        metrics::histogram!("alerter_delivery_duration_seconds", "channel" => c.channel.clone())
            .record(elapsed.as_secs_f64());

        let (next, error, http_status) = match &result {
            Ok(sent) => (Next::Delivered, None, sent.http_status),
            Err(e) => {
                let next = if e.permanent || c.attempts >= self.config.max_attempts {
                    Next::Failed
                } else {
                    let wait = self.config.backoff(c.attempts).max(
                        e.retry_after
                            .unwrap_or_default()
                            .min(self.config.backoff_max),
                    );
                    Next::Retry {
                        at: now + TimeDelta::from_std(wait)?,
                    }
                };
                (next, Some(e.message.clone()), e.http_status)
            }
        };
        let outcome = match &next {
            Next::Delivered => "delivered",
            Next::Retry { .. } => "retry",
            Next::Failed => "failed",
        };
        metrics::counter!("alerter_deliveries_total", "channel" => c.channel.clone(), "outcome" => outcome)
            .increment(1);
        match (&next, &error) {
            (Next::Delivered, _) => {
                tracing::info!(notification_id = %c.id, channel = %c.channel, attempt = c.attempts, "Notification delivered.")
            }
            (Next::Retry { at }, Some(e)) => {
                tracing::warn!(notification_id = %c.id, channel = %c.channel, attempt = c.attempts, retry_at = %at, error = %e, "Delivery failed, will retry.")
            }
            (_, e) => {
                // An operator must act: nobody was told about this alert.
                tracing::error!(notification_id = %c.id, channel = %c.channel, attempt = c.attempts, error = ?e, "Delivery failed for good.")
            }
        }
        let rec = AttemptRecord {
            notification_id: c.id,
            project_id: c.project_id,
            channel: &c.channel,
            attempt: c.attempts,
            started_at,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            success: result.is_ok(),
            http_status: http_status.map(i32::from),
            error: error.as_deref(),
        };
        let kind = match &next {
            Next::Delivered => Next::Delivered,
            Next::Retry { at } => Next::Retry { at: *at },
            Next::Failed => Next::Failed,
        };
        store::finish_attempt(pool, &rec, kind, now).await?;
        Ok(next)
    }

    fn add_link(&self, payload: &mut Value) {
        let base = self.config.public_url.trim_end_matches('/');
        let link = match payload.pointer("/top_error/id").and_then(Value::as_str) {
            Some(id) => format!("{base}/api/errors/{id}"),
            None => format!("{base}/api/alerts/incidents"),
        };
        payload["link"] = json!(link);
    }

    /// One send over `channel` with its stored `config`.
    pub async fn send(
        &self,
        channel: Channel,
        config: &Value,
        payload: &Value,
        idempotency_key: &str,
    ) -> Result<Sent, SendError> {
        let allow = self.config.allow_private_targets;
        match channel {
            Channel::Webhook => {
                let cfg: WebhookConfig = channels::parse_config(config)
                    .map_err(|e| SendError::permanent(format!("webhook config: {e}")))?;
                channels::send_webhook(&self.http, &cfg, payload, idempotency_key, allow).await
            }
            Channel::Slack => {
                let cfg: SlackConfig = channels::parse_config(config)
                    .map_err(|e| SendError::permanent(format!("slack config: {e}")))?;
                channels::send_slack(&self.http, &cfg, payload, idempotency_key, allow).await
            }
            Channel::Email => {
                let cfg: EmailConfig = channels::parse_config(config)
                    .map_err(|e| SendError::permanent(format!("email config: {e}")))?;
                channels::send_email(&cfg, payload, idempotency_key, self.config.timeout).await
            }
        }
    }

    /// Sends a test notification over `channel` with `config` (the API's "test" button).
    pub async fn send_test(&self, channel: Channel, config: &Value) -> Result<Sent, SendError> {
        let key = format!("test:{}", uuid::Uuid::now_v7());
        let mut payload = json!({
            "type": "test",
            "idempotency_key": key,
            "rule": {"name": "Test notification", "kind": "test"},
            "summary": "This is a test notification from Faultline: the integration works.",
            "count": 0,
            "fired_at": Utc::now(),
        });
        self.add_link(&mut payload);
        self.send(channel, config, &payload, &key).await
    }
}
