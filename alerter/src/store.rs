//! The alerter's SQL, in one place. Evaluation functions take the rule's transaction (the rule row
//! stays locked until the firing is committed); delivery functions take the pool, because no
//! transaction may be held across an outbound call.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{
    PgConnection, PgPool, Postgres,
    encode::IsNull,
    error::BoxDynError,
    postgres::{PgArgumentBuffer, PgTypeInfo, PgValueFormat, PgValueRef},
};
use uuid::Uuid;

/// A Postgres `xid8`: a transaction id, unique and never reused, assigned in the order transactions
/// first write (not the order they commit). What new_error and regression rules follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Xid8(pub u64);

impl sqlx::Type<Postgres> for Xid8 {
    fn type_info() -> PgTypeInfo {
        // xid8's oid is fixed in Postgres' catalog (pg_type.dat); no look-up by name needed.
        PgTypeInfo::with_oid(sqlx::postgres::types::Oid(5069))
    }
}

impl sqlx::Encode<'_, Postgres> for Xid8 {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        buf.extend(&self.0.to_be_bytes());
        Ok(IsNull::No)
    }
}

impl sqlx::Decode<'_, Postgres> for Xid8 {
    fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
        Ok(Xid8(match value.format() {
            PgValueFormat::Binary => u64::from_be_bytes(value.as_bytes()?.try_into()?),
            PgValueFormat::Text => value.as_str()?.parse()?,
        }))
    }
}

/// A rule as the evaluator reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RuleRow {
    pub id: Uuid,
    pub project_id: Uuid,
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
    pub last_evaluated_at: Option<DateTime<Utc>>,
    /// The bound of the last evaluation (see [`snapshot_xmin`]); `None` before the first one.
    pub last_xmin: Option<Xid8>,
    /// The snapshot a threshold rule's last evaluation counted with (`pg_snapshot` as text, see
    /// [`minute_counts`]); `None` before the first one.
    pub last_snapshot: Option<String>,
    pub last_triggered: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// Claims one enabled rule not yet evaluated for `now`, locking its row until the transaction
/// ends. `SKIP LOCKED` lets another alerter take the next rule instead of waiting; the
/// `last_evaluated_at < now` test (re-checked after the lock) stops it from taking this one again
/// once it is committed. `skip` holds rules that failed in this round, so a broken rule cannot
/// stall the rest.
#[tracing::instrument(skip_all)]
pub async fn claim_due_rule(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    skip: &[Uuid],
) -> Result<Option<RuleRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, project_id, name, kind, threshold, time_window_secs, filter_level,
                filter_source, filter_environment, cooldown_secs, severity, notifications,
                last_evaluated_at, last_xmin, last_snapshot::text AS last_snapshot, last_triggered,
                created_at
         FROM alert_rules
         WHERE enabled AND (last_evaluated_at IS NULL OR last_evaluated_at < $1)
           AND id <> ALL($2)
         ORDER BY id
         LIMIT 1
         FOR UPDATE SKIP LOCKED",
    )
    .bind(now)
    .bind(skip)
    .fetch_optional(conn)
    .await
}

/// Records the evaluation for the tick `now`, up to the transaction bound `upto`, and (threshold
/// rules) the snapshot it counted with.
pub async fn mark_evaluated(
    conn: &mut PgConnection,
    rule_id: Uuid,
    now: DateTime<Utc>,
    upto: Xid8,
    snapshot: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE alert_rules SET last_evaluated_at = $2, last_xmin = $3,
                last_snapshot = COALESCE($4::text::pg_snapshot, last_snapshot)
         WHERE id = $1",
    )
    .bind(rule_id)
    .bind(now)
    .bind(upto)
    .bind(snapshot)
    .execute(conn)
    .await?;
    Ok(())
}

/// The xmin of a snapshot taken now: every transaction with a smaller id has ended (committed or
/// aborted), so no row stamped with such an id can still appear, and every committed one is
/// visible to the statements that follow (read committed: each takes a newer snapshot). Rows
/// stamped with a larger id may still be in flight; they belong to a later evaluation.
pub async fn snapshot_xmin(conn: &mut PgConnection) -> Result<Xid8, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())")
        .fetch_one(conn)
        .await
}

pub async fn mark_triggered(
    conn: &mut PgConnection,
    rule_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE alert_rules SET last_triggered = $2, updated_at = now() WHERE id = $1")
        .bind(rule_id)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// The error that contributed most to a firing: what the notification names and links to.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct TopError {
    pub id: Uuid,
    pub message: String,
    pub level: String,
    pub source: String,
    pub count: i64,
}

/// The group with the most matching events in `[from, to]`, from the per-minute rollups (source
/// comes from the group): what a firing threshold rule names.
#[tracing::instrument(skip_all, fields(rule_id = %rule.id))]
pub async fn top_error(
    conn: &mut PgConnection,
    rule: &RuleRow,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Option<TopError>, sqlx::Error> {
    sqlx::query_as(
        "WITH per_group AS (
             SELECT c.group_id, sum(c.count)::bigint AS n
             FROM error_counts_minute c
             JOIN error_groups g ON g.id = c.group_id
             WHERE c.project_id = $1 AND c.minute >= $2 AND c.minute <= $3
               AND ($4::text IS NULL OR c.level = $4)
               AND ($5::text IS NULL OR g.source = $5)
               AND ($6::text IS NULL OR c.environment = $6)
             GROUP BY c.group_id
         )
         SELECT g.id, g.message, g.level, g.source, p.n AS count
         FROM per_group p JOIN error_groups g ON g.id = p.group_id
         ORDER BY p.n DESC, g.id
         LIMIT 1",
    )
    .bind(rule.project_id)
    .bind(from)
    .bind(to)
    .bind(&rule.filter_level)
    .bind(&rule.filter_source)
    .bind(&rule.filter_environment)
    .fetch_optional(&mut *conn)
    .await
}

/// A rule's matching events in one rollup minute, and whether a transaction that the rule's
/// previous evaluation could not see wrote to that minute (so that evaluation did not judge all of
/// it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinuteCount {
    pub minute: DateTime<Utc>,
    pub count: i64,
    pub changed: bool,
}

/// Per rollup minute in `[from, to]`: the rule's matching events, and whether a row of that minute
/// was last written by a transaction that `seen` (the previous evaluation's snapshot) does not show
/// as committed; with no `seen`, nothing counts as changed. Also returns the snapshot this statement
/// counted with, for the next evaluation: one statement, so the two agree exactly.
///
/// A rollup row's `xmin` is its last writer's 32-bit transaction id; it is widened to an `xid8`
/// with the epoch of this snapshot's `xmax` (the previous epoch when it is not below `xmax`'s low
/// half), which is exact for rows written in the last two billion transactions, far more than the
/// minutes asked for (a frozen row reads as xid 2: old, so seen). Reading `xmax` rather than
/// `pg_current_xact_id()` keeps the statement from assigning a transaction id. The query reads
/// every rollup row of the project in the range (an hour more than the window: ~60 × the groups
/// active per minute); the groups are read only for a source filter.
pub async fn minute_counts(
    conn: &mut PgConnection,
    rule: &RuleRow,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    seen: Option<&str>,
) -> Result<(Vec<MinuteCount>, String), sqlx::Error> {
    type Row = (String, Option<DateTime<Utc>>, Option<i64>, Option<bool>);
    let rows: Vec<Row> = sqlx::query_as(
        "WITH cur AS (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS x,
                            pg_current_snapshot() AS snap),
         per_minute AS (
             SELECT c.minute, sum(c.count)::bigint AS count,
                    COALESCE(bool_or(NOT pg_visible_in_snapshot(
                        (CASE WHEN c.xmin::text::bigint < (cur.x & 4294967295)
                              THEN ((cur.x >> 32) << 32) | c.xmin::text::bigint
                              ELSE (((cur.x >> 32) - 1) << 32) | c.xmin::text::bigint
                         END)::text::xid8,
                        $7::text::pg_snapshot)), false) AS changed
             FROM error_counts_minute c
             CROSS JOIN cur
             WHERE c.project_id = $1 AND c.minute >= $2 AND c.minute <= $3
               AND ($4::text IS NULL OR c.level = $4)
               AND ($5::text IS NULL
                    OR EXISTS (SELECT 1 FROM error_groups g WHERE g.id = c.group_id AND g.source = $5))
               AND ($6::text IS NULL OR c.environment = $6)
             GROUP BY c.minute)
         SELECT (SELECT snap::text FROM cur), p.minute, p.count, p.changed
         FROM (SELECT 1) AS one LEFT JOIN per_minute p ON true
         ORDER BY p.minute",
    )
    .bind(rule.project_id)
    .bind(from)
    .bind(to)
    .bind(&rule.filter_level)
    .bind(&rule.filter_source)
    .bind(&rule.filter_environment)
    .bind(seen)
    .fetch_all(conn)
    .await?;
    let snapshot = rows.first().map(|r| r.0.clone()).unwrap_or_default();
    let minutes = rows
        .into_iter()
        .filter_map(|(_, minute, count, changed)| {
            Some(MinuteCount {
                minute: minute?,
                count: count?,
                changed: changed.unwrap_or(false),
            })
        })
        .collect();
    Ok((minutes, snapshot))
}

/// Where a new_error or regression evaluation starts.
#[derive(Debug, Clone, Copy)]
pub enum Since {
    /// Rows stamped by transactions with this id or a larger one: the bound of the previous
    /// evaluation.
    Xid(Xid8),
    /// A rule's first evaluation: rows whose time (created_at, regressed_at) is after this one
    /// (the rule's creation, or its last evaluation by time before migration 0006).
    Time(DateTime<Utc>),
}

/// Groups that appeared (new_error) or came back after resolution (regression) since `since` and
/// were stamped by a transaction below `upto`, and how many there were; the most frequent one is
/// returned as the top error. Consecutive evaluations pass the previous `upto` as the next `since`,
/// so each committed group is counted by exactly one of them.
#[tracing::instrument(skip_all, fields(rule_id = %rule.id))]
pub async fn changed_groups(
    conn: &mut PgConnection,
    rule: &RuleRow,
    regression: bool,
    since: Since,
    upto: Xid8,
) -> Result<(i64, Option<TopError>), sqlx::Error> {
    // New groups are found through their write-once companion row (its index costs the worker
    // nothing per batch, see migration 0006); regressions on the group row itself. A regression
    // from before migration 0006 has no id and is found by time only.
    let (from, stamped, after) = match (regression, since) {
        (false, Since::Xid(_)) => (
            "error_group_search s JOIN error_groups g ON g.id = s.group_id
             WHERE s.project_id = $1",
            "s.created_xid < $3",
            "s.created_xid >= $2",
        ),
        (false, Since::Time(_)) => (
            "error_group_search s JOIN error_groups g ON g.id = s.group_id
             WHERE s.project_id = $1",
            "s.created_xid < $3",
            "g.created_at > $2",
        ),
        (true, Since::Xid(_)) => (
            "error_groups g WHERE g.project_id = $1",
            "g.regressed_xid < $3",
            "g.regressed_xid >= $2",
        ),
        (true, Since::Time(_)) => (
            "error_groups g WHERE g.project_id = $1",
            "(g.regressed_xid IS NULL OR g.regressed_xid < $3)",
            "g.regressed AND g.regressed_at > $2",
        ),
    };
    let sql = format!(
        "SELECT g.id, g.message, g.level, g.source, g.count AS n, count(*) OVER () AS total
         FROM {from} AND {stamped} AND {after}
           AND ($4::text IS NULL OR g.level = $4)
           AND ($5::text IS NULL OR g.source = $5)
           AND ($6::text IS NULL OR g.environment = $6)
         ORDER BY n DESC, g.id
         LIMIT 1"
    );
    let query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(rule.project_id);
    let query = match since {
        Since::Xid(xid) => query.bind(xid),
        Since::Time(at) => query.bind(at),
    };
    let rows: Vec<(Uuid, String, String, String, i64, i64)> = query
        .bind(upto)
        .bind(&rule.filter_level)
        .bind(&rule.filter_source)
        .bind(&rule.filter_environment)
        .fetch_all(&mut *conn)
        .await?;
    Ok(match rows.into_iter().next() {
        Some((id, message, level, source, count, total)) => (
            total,
            Some(TopError {
                id,
                message,
                level,
                source,
                count,
            }),
        ),
        None => (0, None),
    })
}

/// Opens an incident for the rule, or updates its unresolved one. Returns (id, newly opened).
#[allow(clippy::too_many_arguments)]
pub async fn open_or_update_incident(
    conn: &mut PgConnection,
    rule: &RuleRow,
    title: &str,
    description: &str,
    count: i64,
    now: DateTime<Utc>,
) -> Result<(Uuid, bool), sqlx::Error> {
    let existing: Option<(Uuid,)> = sqlx::query_as(
        "UPDATE incidents
         SET trigger_count = trigger_count + 1, last_count = $2, description = $3, updated_at = $4
         WHERE rule_id = $1 AND status <> 'resolved'
         RETURNING id",
    )
    .bind(rule.id)
    .bind(count)
    .bind(description)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((id,)) = existing {
        return Ok((id, false));
    }
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO incidents (id, project_id, rule_id, title, severity, status, description,
                                trigger_count, last_count, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, 'open', $6, 1, $7, $8, $8)",
    )
    .bind(id)
    .bind(rule.project_id)
    .bind(rule.id)
    .bind(title)
    .bind(&rule.severity)
    .bind(description)
    .bind(count)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok((id, true))
}

/// Queues one notification; a second insert with the same idempotency key is a no-op (`None`).
#[allow(clippy::too_many_arguments)]
pub async fn enqueue_notification(
    conn: &mut PgConnection,
    project_id: Uuid,
    rule_id: Uuid,
    incident_id: Uuid,
    channel: &str,
    idempotency_key: &str,
    payload: &Value,
    now: DateTime<Utc>,
) -> Result<Option<Uuid>, sqlx::Error> {
    let row: Option<(Uuid,)> = sqlx::query_as(
        "INSERT INTO notifications (id, project_id, rule_id, incident_id, channel, idempotency_key,
                                    payload, status, next_attempt_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $8)
         ON CONFLICT ON CONSTRAINT notifications_idempotency_key_unique DO NOTHING
         RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(project_id)
    .bind(rule_id)
    .bind(incident_id)
    .bind(channel)
    .bind(idempotency_key)
    .bind(payload)
    .bind(now)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| r.0))
}

/// A notification claimed for sending.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub project_id: Uuid,
    pub channel: String,
    pub idempotency_key: String,
    pub payload: Value,
    /// This attempt's number (1 for the first).
    pub attempts: i32,
    /// The previous attempt's sender stopped before recording an outcome (its lease ran out).
    pub abandoned: bool,
}

/// Claims up to `limit` due notifications: pending ones whose time has come, and ones left
/// 'sending' by a sender whose lease ran out (it died mid-delivery). The claim commits at once;
/// the lease keeps other alerters off the row while it is sent.
#[tracing::instrument(skip_all)]
pub async fn claim_due_notifications(
    pool: &PgPool,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE notifications n
         SET status = 'sending', attempts = n.attempts + 1, locked_until = $2
         FROM (SELECT id, status = 'sending' AS abandoned FROM notifications
               WHERE (status = 'pending' AND next_attempt_at <= $1)
                  OR (status = 'sending' AND locked_until <= $1)
               ORDER BY next_attempt_at
               LIMIT $3
               FOR UPDATE SKIP LOCKED) due
         WHERE n.id = due.id
         RETURNING n.id, n.project_id, n.channel, n.idempotency_key, n.payload, n.attempts,
                   due.abandoned",
    )
    .bind(now)
    .bind(lease_until)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// An integration's stored settings.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IntegrationRow {
    pub config: Value,
    pub enabled: bool,
}

pub async fn integration(
    pool: &PgPool,
    project_id: Uuid,
    name: &str,
) -> Result<Option<IntegrationRow>, sqlx::Error> {
    sqlx::query_as("SELECT config, enabled FROM integrations WHERE project_id = $1 AND name = $2")
        .bind(project_id)
        .bind(name)
        .fetch_optional(pool)
        .await
}

/// One attempt, as recorded.
pub struct AttemptRecord<'a> {
    pub notification_id: Uuid,
    pub project_id: Uuid,
    pub channel: &'a str,
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: f64,
    pub success: bool,
    pub http_status: Option<i32>,
    pub error: Option<&'a str>,
}

/// What becomes of the notification after an attempt.
pub enum Next {
    Delivered,
    Retry { at: DateTime<Utc> },
    Failed,
}

/// Records the attempt and moves the notification on, in one transaction. The update only applies
/// while this sender still holds the claim (same attempt number, still 'sending'): a sender whose
/// lease was taken over does not overwrite the newer attempt's outcome.
pub async fn finish_attempt(
    pool: &PgPool,
    rec: &AttemptRecord<'_>,
    next: Next,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    insert_attempt(&mut tx, rec).await?;
    let (status, next_at): (&str, Option<DateTime<Utc>>) = match next {
        Next::Delivered => ("delivered", None),
        Next::Retry { at } => ("pending", Some(at)),
        Next::Failed => ("failed", None),
    };
    sqlx::query(
        "UPDATE notifications
         SET status = $3, locked_until = NULL, last_error = $4,
             next_attempt_at = COALESCE($5, next_attempt_at),
             delivered_at = CASE WHEN $3 = 'delivered' THEN $6 ELSE delivered_at END
         WHERE id = $1 AND attempts = $2 AND status = 'sending'",
    )
    .bind(rec.notification_id)
    .bind(rec.attempt)
    .bind(status)
    .bind(rec.error)
    .bind(next_at)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Records an attempt whose sender died before finishing it (no state change).
pub async fn record_abandoned_attempt(
    pool: &PgPool,
    rec: &AttemptRecord<'_>,
) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    insert_attempt(&mut conn, rec).await
}

/// Appends to the attempt history; an attempt number already recorded is left as it is.
async fn insert_attempt(
    conn: &mut PgConnection,
    rec: &AttemptRecord<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO delivery_attempts (id, notification_id, attempt, channel, project_id,
                                        started_at, duration_ms, success, http_status, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT ON CONSTRAINT delivery_attempts_once DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(rec.notification_id)
    .bind(rec.attempt)
    .bind(rec.channel)
    .bind(rec.project_id)
    .bind(rec.started_at)
    .bind(rec.duration_ms)
    .bind(rec.success)
    .bind(rec.http_status)
    .bind(rec.error)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records one health check of a backing service in `health_checks` (migration 0002), the table
/// the uptime endpoint reads; ingest instances write their own checks there too.
pub async fn record_check(
    pool: &PgPool,
    service: &str,
    healthy: bool,
    response_time_ms: f64,
    error: Option<&str>,
    instance: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO health_checks (instance, component, healthy, response_time_ms, error)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(instance)
    .bind(service)
    .bind(healthy)
    .bind(response_time_ms)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}
