//! SQL of the alerting API: rules, incidents, deliveries and integrations. Every query filters by
//! the caller's project, so another project's ids are simply not found.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

/// A validated rule as the API writes it.
#[derive(Debug, Clone)]
pub struct RuleInput {
    pub name: String,
    pub kind: String,
    pub threshold: i64,
    pub window_secs: i32,
    pub level: Option<String>,
    pub source: Option<String>,
    pub environment: Option<String>,
    pub cooldown_secs: i32,
    pub severity: String,
    pub notifications: Vec<String>,
    pub enabled: bool,
}

#[derive(Debug, Clone, FromRow)]
pub struct RuleRow {
    pub id: Uuid,
    pub name: String,
    pub kind: String,
    pub threshold: i64,
    pub time_window_secs: i32,
    pub filter_level: Option<String>,
    pub filter_source: Option<String>,
    pub filter_environment: Option<String>,
    pub cooldown_secs: i32,
    pub severity: String,
    pub notifications: Vec<String>,
    pub enabled: bool,
    pub last_triggered: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl RuleRow {
    /// The contract's alert rule object, plus kind, filters, cooldown and severity.
    pub fn to_json(&self) -> Value {
        use alerter::rule::{self, Filters, RuleKind};
        let filters = Filters {
            level: self.filter_level.clone(),
            source: self.filter_source.clone(),
            environment: self.filter_environment.clone(),
        };
        let window = self.time_window_secs.max(0) as u64;
        let condition = match self.kind.parse::<RuleKind>() {
            Ok(kind) => rule::condition_sentence(kind, self.threshold, window, &filters),
            Err(()) => String::new(),
        };
        json!({
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "condition": condition,
            "threshold": self.threshold,
            "time_window": rule::format_duration(window),
            "filters": {
                "level": filters.level,
                "source": filters.source,
                "environment": filters.environment,
            },
            "cooldown": rule::format_duration(self.cooldown_secs.max(0) as u64),
            "severity": self.severity,
            "enabled": self.enabled,
            "notifications": self.notifications,
            "last_triggered": self.last_triggered,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }
}

const RULE_COLUMNS: &str = "id, name, kind, threshold, time_window_secs, filter_level, filter_source, \
     filter_environment, cooldown_secs, severity, notifications, enabled, last_triggered, \
     created_at, updated_at";

#[tracing::instrument(skip(pool))]
pub async fn list_rules(pool: &PgPool, project_id: Uuid) -> Result<Vec<RuleRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RULE_COLUMNS} FROM alert_rules WHERE project_id = $1 ORDER BY created_at, id"
    )))
    .bind(project_id)
    .fetch_all(pool)
    .await
}

#[tracing::instrument(skip(pool, r))]
pub async fn insert_rule(
    pool: &PgPool,
    project_id: Uuid,
    r: &RuleInput,
) -> Result<RuleRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO alert_rules (id, project_id, name, kind, threshold, time_window_secs,
                                  filter_level, filter_source, filter_environment, cooldown_secs,
                                  severity, notifications, enabled)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         RETURNING {RULE_COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(project_id)
    .bind(&r.name)
    .bind(&r.kind)
    .bind(r.threshold)
    .bind(r.window_secs)
    .bind(&r.level)
    .bind(&r.source)
    .bind(&r.environment)
    .bind(r.cooldown_secs)
    .bind(&r.severity)
    .bind(&r.notifications)
    .bind(r.enabled)
    .fetch_one(pool)
    .await
}

#[tracing::instrument(skip(pool, r))]
pub async fn update_rule(
    pool: &PgPool,
    project_id: Uuid,
    id: Uuid,
    r: &RuleInput,
) -> Result<Option<RuleRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE alert_rules
         SET name = $3, kind = $4, threshold = $5, time_window_secs = $6, filter_level = $7,
             filter_source = $8, filter_environment = $9, cooldown_secs = $10, severity = $11,
             notifications = $12, enabled = $13, updated_at = now()
         WHERE project_id = $1 AND id = $2
         RETURNING {RULE_COLUMNS}"
    )))
    .bind(project_id)
    .bind(id)
    .bind(&r.name)
    .bind(&r.kind)
    .bind(r.threshold)
    .bind(r.window_secs)
    .bind(&r.level)
    .bind(&r.source)
    .bind(&r.environment)
    .bind(r.cooldown_secs)
    .bind(&r.severity)
    .bind(&r.notifications)
    .bind(r.enabled)
    .fetch_optional(pool)
    .await
}

#[tracing::instrument(skip(pool))]
pub async fn delete_rule(pool: &PgPool, project_id: Uuid, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM alert_rules WHERE project_id = $1 AND id = $2")
        .bind(project_id)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

#[derive(Debug, Clone, FromRow)]
pub struct IncidentRow {
    pub id: Uuid,
    pub rule_id: Option<Uuid>,
    pub title: String,
    pub severity: String,
    pub status: String,
    pub description: Option<String>,
    pub assigned_to: Option<String>,
    pub trigger_count: i32,
    pub last_count: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

impl IncidentRow {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "title": self.title,
            "severity": self.severity,
            "status": self.status,
            "description": self.description,
            "assigned_to": self.assigned_to,
            "rule_id": self.rule_id,
            "trigger_count": self.trigger_count,
            "last_count": self.last_count,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "resolved_at": self.resolved_at,
        })
    }
}

const INCIDENT_COLUMNS: &str = "id, rule_id, title, severity, status, description, assigned_to, \
     trigger_count, last_count, created_at, updated_at, resolved_at";

/// Incidents newest first, optionally of one status and/or severity; with the total matching.
#[tracing::instrument(skip(pool))]
pub async fn list_incidents(
    pool: &PgPool,
    project_id: Uuid,
    status: Option<&str>,
    severity: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<IncidentRow>, i64), sqlx::Error> {
    let rows: Vec<IncidentRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents
         WHERE project_id = $1 AND ($2::text IS NULL OR status = $2)
           AND ($3::text IS NULL OR severity = $3)
         ORDER BY created_at DESC, id DESC
         LIMIT $4 OFFSET $5"
    )))
    .bind(project_id)
    .bind(status)
    .bind(severity)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    let (total,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM incidents
         WHERE project_id = $1 AND ($2::text IS NULL OR status = $2)
           AND ($3::text IS NULL OR severity = $3)",
    )
    .bind(project_id)
    .bind(status)
    .bind(severity)
    .fetch_one(pool)
    .await?;
    Ok((rows, total))
}

pub async fn get_incident(
    pool: &PgPool,
    project_id: Uuid,
    id: Uuid,
) -> Result<Option<IncidentRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE project_id = $1 AND id = $2"
    )))
    .bind(project_id)
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The fields a person sets on an incident.
#[derive(Debug, Clone)]
pub struct IncidentInput {
    pub title: String,
    pub severity: String,
    pub status: String,
    pub description: Option<String>,
    pub assigned_to: Option<String>,
}

#[tracing::instrument(skip(pool, i))]
pub async fn insert_incident(
    pool: &PgPool,
    project_id: Uuid,
    i: &IncidentInput,
) -> Result<IncidentRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO incidents (id, project_id, title, severity, status, description, assigned_to,
                                resolved_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $5 = 'resolved' THEN now() END)
         RETURNING {INCIDENT_COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(project_id)
    .bind(&i.title)
    .bind(&i.severity)
    .bind(&i.status)
    .bind(&i.description)
    .bind(&i.assigned_to)
    .fetch_one(pool)
    .await
}

/// Writes the person-set fields; `resolved_at` follows the status.
#[tracing::instrument(skip(pool, i))]
pub async fn update_incident(
    pool: &PgPool,
    project_id: Uuid,
    id: Uuid,
    i: &IncidentInput,
) -> Result<Option<IncidentRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE incidents
         SET title = $3, severity = $4, status = $5, description = $6, assigned_to = $7,
             updated_at = now(),
             resolved_at = CASE WHEN $5 = 'resolved' THEN COALESCE(resolved_at, now()) END
         WHERE project_id = $1 AND id = $2
         RETURNING {INCIDENT_COLUMNS}"
    )))
    .bind(project_id)
    .bind(id)
    .bind(&i.title)
    .bind(&i.severity)
    .bind(&i.status)
    .bind(&i.description)
    .bind(&i.assigned_to)
    .fetch_optional(pool)
    .await
}

/// Filters of `GET /api/alerts/deliveries`.
#[derive(Debug, Default)]
pub struct DeliveryQuery {
    pub rule_id: Option<Uuid>,
    pub incident_id: Option<Uuid>,
    pub channel: Option<String>,
    pub status: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

#[derive(Debug, FromRow)]
pub struct DeliveryRow {
    pub id: Uuid,
    pub rule_id: Option<Uuid>,
    pub incident_id: Option<Uuid>,
    pub channel: String,
    pub status: String,
    pub attempts: i32,
    pub idempotency_key: String,
    pub last_error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub attempt_list: Value,
    pub total: i64,
}

impl DeliveryRow {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "rule_id": self.rule_id,
            "incident_id": self.incident_id,
            "channel": self.channel,
            "status": self.status,
            "attempt_count": self.attempts,
            "idempotency_key": self.idempotency_key,
            "last_error": self.last_error,
            "next_attempt_at": if self.status == "pending" { json!(self.next_attempt_at) } else { Value::Null },
            "created_at": self.created_at,
            "delivered_at": self.delivered_at,
            "attempts": self.attempt_list,
        })
    }
}

/// Notifications newest first, each with every attempt.
#[tracing::instrument(skip(pool))]
pub async fn list_deliveries(
    pool: &PgPool,
    project_id: Uuid,
    q: &DeliveryQuery,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT n.id, n.rule_id, n.incident_id, n.channel, n.status, n.attempts, n.idempotency_key,
                n.last_error, n.next_attempt_at, n.created_at, n.delivered_at,
                COALESCE((SELECT json_agg(json_build_object(
                              'attempt', a.attempt, 'success', a.success,
                              'http_status', a.http_status, 'error', a.error,
                              'started_at', a.started_at, 'duration_ms', a.duration_ms)
                              ORDER BY a.attempt)
                          FROM delivery_attempts a WHERE a.notification_id = n.id),
                         '[]'::json)::jsonb AS attempt_list,
                count(*) OVER () AS total
         FROM notifications n
         WHERE n.project_id = $1
           AND ($2::uuid IS NULL OR n.rule_id = $2)
           AND ($3::uuid IS NULL OR n.incident_id = $3)
           AND ($4::text IS NULL OR n.channel = $4)
           AND ($5::text IS NULL OR n.status = $5)
         ORDER BY n.created_at DESC, n.id DESC
         LIMIT $6 OFFSET $7",
    )
    .bind(project_id)
    .bind(q.rule_id)
    .bind(q.incident_id)
    .bind(&q.channel)
    .bind(&q.status)
    .bind(q.limit)
    .bind(q.offset)
    .fetch_all(pool)
    .await
}

#[derive(Debug, Clone, FromRow)]
pub struct IntegrationRow {
    pub name: String,
    pub config: Value,
    pub enabled: bool,
    pub last_test: Option<DateTime<Utc>>,
    pub last_test_ok: Option<bool>,
    pub last_test_error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

pub async fn list_integrations(
    pool: &PgPool,
    project_id: Uuid,
) -> Result<Vec<IntegrationRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, config, enabled, last_test, last_test_ok, last_test_error, updated_at
         FROM integrations WHERE project_id = $1",
    )
    .bind(project_id)
    .fetch_all(pool)
    .await
}

pub async fn get_integration(
    pool: &PgPool,
    project_id: Uuid,
    name: &str,
) -> Result<Option<IntegrationRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, config, enabled, last_test, last_test_ok, last_test_error, updated_at
         FROM integrations WHERE project_id = $1 AND name = $2",
    )
    .bind(project_id)
    .bind(name)
    .fetch_optional(pool)
    .await
}

pub async fn upsert_integration(
    pool: &PgPool,
    project_id: Uuid,
    name: &str,
    config: &Value,
    enabled: bool,
) -> Result<IntegrationRow, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO integrations (project_id, name, config, enabled)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (project_id, name)
         DO UPDATE SET config = EXCLUDED.config, enabled = EXCLUDED.enabled, updated_at = now()
         RETURNING name, config, enabled, last_test, last_test_ok, last_test_error, updated_at",
    )
    .bind(project_id)
    .bind(name)
    .bind(config)
    .bind(enabled)
    .fetch_one(pool)
    .await
}

pub async fn record_test(
    pool: &PgPool,
    project_id: Uuid,
    name: &str,
    ok: bool,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE integrations SET last_test = now(), last_test_ok = $3, last_test_error = $4
         WHERE project_id = $1 AND name = $2",
    )
    .bind(project_id)
    .bind(name)
    .bind(ok)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// The latest delivery attempts of one channel, newest first: what its health is judged by.
#[derive(Debug, Clone, FromRow)]
pub struct RecentAttempt {
    pub channel: String,
    pub success: bool,
    pub started_at: DateTime<Utc>,
    pub error: Option<String>,
}

pub async fn recent_attempts(
    pool: &PgPool,
    project_id: Uuid,
    per_channel: i64,
) -> Result<Vec<RecentAttempt>, sqlx::Error> {
    sqlx::query_as(
        "SELECT channel, success, started_at, error FROM (
             SELECT channel, success, started_at, error,
                    row_number() OVER (PARTITION BY channel ORDER BY started_at DESC) AS rn
             FROM delivery_attempts WHERE project_id = $1
         ) t
         WHERE rn <= $2
         ORDER BY channel, started_at DESC",
    )
    .bind(project_id)
    .bind(per_channel)
    .fetch_all(pool)
    .await
}
