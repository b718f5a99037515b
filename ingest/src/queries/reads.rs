//! The SQL of the dashboard API: error groups (list, detail, events, resolve/reopen/delete),
//! statistics and trends from the minute rollups, and the recorded health checks. Every query
//! takes the caller's project and filters by it, so another project's ids are simply absent.

use chrono::{DateTime, Utc};
use faultline_shared::domain::Level;
use serde_json::{Value, json};
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

/// The columns of an error group shown by the API (the contract's error object), but `count` and
/// `last_seen`: the detail reads those from the group, the list from the activity row it is sorted
/// by. Unqualified, so they also name the group's columns when the list joins
/// `error_group_activity` (which has none of these names).
const GROUP_COLUMNS: &str = "id, level, message, stack_trace, context, source, environment, \
     user_agent, ip_address, url, release, fingerprint, resolved, resolved_at, regressed, \
     regressed_at, reopened_at, first_seen, created_at, updated_at, latest_event_id, \
     normalized_message, grouping_frames, grouping_version, custom_fingerprint";

/// A `json` column (an event's or a group's `context`) read as a tree. Postgres's json keeps the
/// text as sent, and a number beyond f64 (`1e400`) has no tree form; ingest refuses such numbers,
/// but a message put on the queue by other means (dead letters moved back by hand) can carry one.
/// Such a value is returned as its text, a JSON string, instead of failing the whole read.
#[derive(Debug)]
pub struct StoredJson(pub Value);

impl sqlx::Type<Postgres> for StoredJson {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        sqlx::postgres::PgTypeInfo::with_name("json")
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for StoredJson {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        // json's text and binary forms are both the text itself.
        let text = value.as_str()?;
        Ok(StoredJson(
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string())),
        ))
    }
}

#[derive(Debug, FromRow)]
pub struct GroupRow {
    pub id: Uuid,
    pub level: String,
    pub message: String,
    pub stack_trace: Option<String>,
    pub context: Option<StoredJson>,
    pub source: String,
    pub environment: String,
    pub user_agent: Option<String>,
    pub ip_address: Option<String>,
    pub url: Option<String>,
    pub release: Option<String>,
    pub fingerprint: String,
    pub resolved: bool,
    pub resolved_at: Option<DateTime<Utc>>,
    pub regressed: bool,
    pub regressed_at: Option<DateTime<Utc>>,
    pub reopened_at: Option<DateTime<Utc>>,
    pub count: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub latest_event_id: Option<Uuid>,
    pub normalized_message: String,
    pub grouping_frames: Value,
    pub grouping_version: i32,
    pub custom_fingerprint: bool,
}

impl GroupRow {
    /// The contract's error object: `timestamp` is the latest occurrence (`last_seen`).
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "timestamp": self.last_seen,
            "level": self.level,
            "message": self.message,
            "stack_trace": self.stack_trace,
            "context": self.context.as_ref().map(|c| &c.0),
            "source": self.source,
            "environment": self.environment,
            "user_agent": self.user_agent,
            "ip_address": self.ip_address,
            "url": self.url,
            "release": self.release,
            "fingerprint": self.fingerprint,
            "resolved": self.resolved,
            "resolved_at": self.resolved_at,
            "regressed": self.regressed,
            "regressed_at": self.regressed_at,
            "count": self.count,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }

    /// Why the group's events were grouped together.
    pub fn grouping_json(&self) -> Value {
        json!({
            "fingerprint": self.fingerprint,
            "version": self.grouping_version,
            "normalized_message": self.normalized_message,
            "frames": self.grouping_frames,
            "custom_fingerprint": self.custom_fingerprint,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    LastSeen,
    FirstSeen,
    Count,
}

impl SortKey {
    /// The sort column and its tie-break, qualified: last_seen and count are read from the
    /// activity row `a`, whose indexes hold them (migrations/0007_group_activity.sql); first_seen
    /// from the group `g`.
    fn columns(self) -> (&'static str, &'static str) {
        match self {
            SortKey::LastSeen => ("a.last_seen", "a.group_id"),
            SortKey::FirstSeen => ("g.first_seen", "g.id"),
            SortKey::Count => ("a.count", "a.group_id"),
        }
    }
}

/// A parsed `GET /api/errors` query. Its `Debug` form is the cache key's parameter part, so two
/// spellings of the same query share one cache entry.
#[derive(Debug, Clone)]
pub struct ErrorQuery {
    pub level: Option<Level>,
    pub source: Option<String>,
    pub environment: Option<String>,
    pub resolved: Option<bool>,
    pub q: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub sort: SortKey,
    pub descending: bool,
    pub limit: i64,
    pub offset: i64,
}

impl ErrorQuery {
    /// Whether a filter reads the group row (rather than only its activity row).
    fn filters_groups(&self) -> bool {
        self.level.is_some()
            || self.source.is_some()
            || self.environment.is_some()
            || self.resolved.is_some()
            || self.q.is_some()
    }

    fn filters_time(&self) -> bool {
        self.since.is_some() || self.until.is_some()
    }
}

/// The filters of a list query over `error_groups g` joined with `error_group_activity a`, or
/// over `a` alone when no filter reads the group (`project_column` names the table to take the
/// project from).
fn push_filters(
    b: &mut QueryBuilder<Postgres>,
    project_column: &str,
    project: Uuid,
    q: &ErrorQuery,
) {
    b.push(format!(" WHERE {project_column} = "))
        .push_bind(project);
    if let Some(level) = q.level {
        b.push(" AND g.level = ")
            .push_bind(level.as_str().to_string());
    }
    if let Some(source) = &q.source {
        b.push(" AND g.source = ").push_bind(source.clone());
    }
    if let Some(env) = &q.environment {
        b.push(" AND g.environment = ").push_bind(env.clone());
    }
    if let Some(resolved) = q.resolved {
        b.push(" AND g.resolved = ").push_bind(resolved);
    }
    if let Some(text) = &q.q {
        let escaped = text
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        // The trigram index is on `error_group_search` (the group's first message), not on the
        // group row, which the worker rewrites with every batch (migrations/0005_hot_groups.sql).
        b.push(" AND g.id IN (SELECT group_id FROM error_group_search WHERE project_id = ")
            .push_bind(project)
            .push(" AND message ILIKE ")
            .push_bind(format!("%{escaped}%"))
            .push(" ESCAPE '\\')");
    }
    if let Some(since) = q.since {
        b.push(" AND a.last_seen >= ").push_bind(since);
    }
    if let Some(until) = q.until {
        b.push(" AND a.last_seen <= ").push_bind(until);
    }
}

/// The group and its activity row. The activity's `project_id` is given too, so the planner can
/// walk the sort index of this project alone.
fn push_activity_join(b: &mut QueryBuilder<Postgres>, project: Uuid) {
    b.push(" JOIN error_group_activity a ON a.group_id = g.id AND a.project_id = ")
        .push_bind(project);
}

/// One page of groups and the total number matching the filters.
#[tracing::instrument(skip_all, fields(%project))]
pub async fn list_groups(
    pool: &PgPool,
    project: Uuid,
    q: &ErrorQuery,
) -> Result<(Vec<GroupRow>, i64), sqlx::Error> {
    // The total reads one table when it can: the groups' filter indexes, or the activity's
    // last_seen index for a time range (an index-only count either way).
    let mut count = if q.filters_groups() {
        let mut b = QueryBuilder::new("SELECT count(*) FROM error_groups g");
        if q.filters_time() {
            push_activity_join(&mut b, project);
        }
        push_filters(&mut b, "g.project_id", project, q);
        b
    } else {
        let mut b = QueryBuilder::new("SELECT count(*) FROM error_group_activity a");
        push_filters(&mut b, "a.project_id", project, q);
        b
    };
    let (total,): (i64,) = count.build_query_as().fetch_one(pool).await?;

    // count and last_seen are shown from the activity row, which the list is sorted by.
    let mut list = QueryBuilder::new(format!(
        "SELECT {GROUP_COLUMNS}, a.count, a.last_seen FROM error_groups g"
    ));
    push_activity_join(&mut list, project);
    push_filters(&mut list, "g.project_id", project, q);
    let dir = if q.descending { "DESC" } else { "ASC" };
    let (col, tie) = q.sort.columns();
    list.push(format!(" ORDER BY {col} {dir}, {tie} {dir} LIMIT "))
        .push_bind(q.limit)
        .push(" OFFSET ")
        .push_bind(q.offset);
    let rows = list.build_query_as().fetch_all(pool).await?;
    Ok((rows, total))
}

#[tracing::instrument(skip_all, fields(%project, %id))]
pub async fn find_group(
    pool: &PgPool,
    project: Uuid,
    id: Uuid,
) -> Result<Option<GroupRow>, sqlx::Error> {
    let mut b = QueryBuilder::new(format!(
        "SELECT {GROUP_COLUMNS}, count, last_seen FROM error_groups WHERE id = "
    ));
    b.push_bind(id)
        .push(" AND project_id = ")
        .push_bind(project);
    b.build_query_as().fetch_optional(pool).await
}

#[derive(Debug, FromRow)]
pub struct EventRow {
    pub id: Uuid,
    pub received_at: DateTime<Utc>,
    pub level: String,
    pub message: String,
    pub stack_trace: Option<String>,
    pub context: Option<StoredJson>,
    pub source: String,
    pub environment: String,
    pub url: Option<String>,
    pub user_agent: Option<String>,
    pub ip_address: Option<String>,
    pub release: Option<String>,
    pub extra: Option<Value>,
}

impl EventRow {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "timestamp": self.received_at,
            "level": self.level,
            "message": self.message,
            "stack_trace": self.stack_trace,
            "context": self.context.as_ref().map(|c| &c.0),
            "source": self.source,
            "environment": self.environment,
            "url": self.url,
            "user_agent": self.user_agent,
            "ip_address": self.ip_address,
            "release": self.release,
            "extra": self.extra,
        })
    }
}

/// A page of a group's stored occurrences, newest first, and how many are stored.
#[tracing::instrument(skip_all, fields(%project, %group))]
pub async fn list_events(
    pool: &PgPool,
    project: Uuid,
    group: Uuid,
    limit: i64,
    offset: i64,
) -> Result<(Vec<EventRow>, i64), sqlx::Error> {
    let (total,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM events WHERE group_id = $1 AND project_id = $2")
            .bind(group)
            .bind(project)
            .fetch_one(pool)
            .await?;
    let rows = sqlx::query_as(
        "SELECT id, received_at, level, message, stack_trace, context, source, environment, url,
                user_agent, ip_address, release, extra
         FROM events WHERE group_id = $1 AND project_id = $2
         ORDER BY received_at DESC, id DESC LIMIT $3 OFFSET $4",
    )
    .bind(group)
    .bind(project)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    Ok((rows, total))
}

/// Marks the group resolved and records the resolution. `None` when the group is not in the
/// project; resolving a resolved group changes nothing.
#[tracing::instrument(skip_all, fields(%project, %id))]
pub async fn resolve_group(
    pool: &PgPool,
    project: Uuid,
    id: Uuid,
) -> Result<Option<()>, sqlx::Error> {
    let changed = sqlx::query(
        "WITH g AS (
             UPDATE error_groups SET resolved = true, resolved_at = now(), updated_at = now()
             WHERE id = $1 AND project_id = $2 AND NOT resolved
             RETURNING id, project_id, GREATEST(first_seen, regressed_at, reopened_at) AS opened_at,
                       resolved_at)
         INSERT INTO error_resolutions (project_id, group_id, opened_at, resolved_at)
         SELECT project_id, id, opened_at, resolved_at FROM g",
    )
    .bind(id)
    .bind(project)
    .execute(pool)
    .await?
    .rows_affected();
    if changed > 0 {
        return Ok(Some(()));
    }
    exists(pool, project, id).await
}

/// Reopens a resolved group by hand. `None` when the group is not in the project.
#[tracing::instrument(skip_all, fields(%project, %id))]
pub async fn reopen_group(
    pool: &PgPool,
    project: Uuid,
    id: Uuid,
) -> Result<Option<()>, sqlx::Error> {
    let changed = sqlx::query(
        "UPDATE error_groups
         SET resolved = false, resolved_at = NULL, reopened_at = now(), updated_at = now()
         WHERE id = $1 AND project_id = $2 AND resolved",
    )
    .bind(id)
    .bind(project)
    .execute(pool)
    .await?
    .rows_affected();
    if changed > 0 {
        return Ok(Some(()));
    }
    exists(pool, project, id).await
}

async fn exists(pool: &PgPool, project: Uuid, id: Uuid) -> Result<Option<()>, sqlx::Error> {
    let row: Option<(Uuid,)> =
        sqlx::query_as("SELECT id FROM error_groups WHERE id = $1 AND project_id = $2")
            .bind(id)
            .bind(project)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|_| ()))
}

/// Deletes the group with its events, minute counts and resolutions, in one transaction.
/// `None` when the group is not in the project.
#[tracing::instrument(skip_all, fields(%project, %id))]
pub async fn delete_group(
    pool: &PgPool,
    project: Uuid,
    id: Uuid,
) -> Result<Option<()>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let locked: Option<(Uuid,)> =
        sqlx::query_as("SELECT id FROM error_groups WHERE id = $1 AND project_id = $2 FOR UPDATE")
            .bind(id)
            .bind(project)
            .fetch_optional(&mut *tx)
            .await?;
    if locked.is_none() {
        return Ok(None);
    }
    sqlx::query("DELETE FROM events WHERE group_id = $1 AND project_id = $2")
        .bind(id)
        .bind(project)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE error_counts_hour h SET count = h.count - d.n
         FROM (SELECT date_trunc('hour', minute, 'UTC') AS hour, level, environment, sum(count) AS n
               FROM error_counts_minute WHERE group_id = $1 AND project_id = $2
               GROUP BY 1, 2, 3) d
         WHERE h.project_id = $2 AND h.hour = d.hour AND h.level = d.level
           AND h.environment = d.environment",
    )
    .bind(id)
    .bind(project)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM error_counts_minute WHERE group_id = $1 AND project_id = $2")
        .bind(id)
        .bind(project)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM error_groups WHERE id = $1 AND project_id = $2")
        .bind(id)
        .bind(project)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(()))
}

/// The raw figures behind `GET /api/stats`.
#[derive(Debug, FromRow)]
pub struct StatsRow {
    pub total_groups: i64,
    pub resolved_groups: i64,
    pub events_today: i64,
    pub events_week: i64,
    pub events_month: i64,
    pub events_24h: i64,
    pub resolutions: i64,
    pub avg_resolution_secs: Option<f64>,
}

/// Groups from `error_groups`; occurrences from the hourly counts (the boundaries of day, week and
/// month are whole hours), plus the minute rollups for the part of the first hour of the last 24
/// hours; resolution times from `error_resolutions`.
#[tracing::instrument(skip_all, fields(%project))]
pub async fn stats(
    pool: &PgPool,
    project: Uuid,
    today: DateTime<Utc>,
    week: DateTime<Utc>,
    month: DateTime<Utc>,
    day_ago: DateTime<Utc>,
) -> Result<StatsRow, sqlx::Error> {
    sqlx::query_as(
        "WITH g AS (
             SELECT count(*) AS total_groups, count(*) FILTER (WHERE resolved) AS resolved_groups
             FROM error_groups WHERE project_id = $1),
         b AS (SELECT date_trunc('hour', $5::timestamptz, 'UTC') + interval '1 hour' AS full_from),
         h AS (
             SELECT COALESCE(sum(count) FILTER (WHERE hour >= $2), 0)::bigint AS events_today,
                    COALESCE(sum(count) FILTER (WHERE hour >= $3), 0)::bigint AS events_week,
                    COALESCE(sum(count) FILTER (WHERE hour >= $4), 0)::bigint AS events_month,
                    COALESCE(sum(count) FILTER (WHERE hour >= b.full_from), 0)::bigint AS full_hours
             FROM error_counts_hour, b
             WHERE project_id = $1 AND hour >= LEAST($2, $3, $4, b.full_from)),
         m AS (
             SELECT COALESCE(sum(count), 0)::bigint AS partial_hour
             FROM error_counts_minute, b
             WHERE project_id = $1 AND minute >= $5 AND minute < b.full_from),
         c AS (
             SELECT events_today, events_week, events_month, full_hours + partial_hour AS events_24h
             FROM h, m),
         r AS (
             SELECT count(*) AS resolutions,
                    avg(EXTRACT(EPOCH FROM resolved_at - opened_at))::float8 AS avg_resolution_secs
             FROM error_resolutions WHERE project_id = $1)
         SELECT * FROM g, c, r",
    )
    .bind(project)
    .bind(today)
    .bind(week)
    .bind(month)
    .bind(day_ago)
    .fetch_one(pool)
    .await
}

#[derive(Debug, FromRow)]
pub struct TrendRow {
    pub bucket: DateTime<Utc>,
    pub error_count: i64,
    pub resolved_count: i64,
    pub critical_count: i64,
}

/// Buckets of `unit` (hour, day, week, month; UTC-aligned, weeks start on Monday) from the one
/// holding `from` to the one holding `to`, empty ones included. Occurrences come from the hourly
/// counts; "critical" is the `error` level; resolved counts resolutions made in the bucket.
#[tracing::instrument(skip_all, fields(%project, unit))]
pub async fn trends(
    pool: &PgPool,
    project: Uuid,
    unit: &'static str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<TrendRow>, sqlx::Error> {
    sqlx::query_as(
        "WITH bounds AS (
             SELECT date_trunc($2, $3::timestamptz, 'UTC') AS lo, date_trunc($2, $4::timestamptz, 'UTC') AS hi),
         buckets AS (
             SELECT generate_series(lo, hi, ('1 ' || $2)::interval) AS bucket FROM bounds),
         c AS (
             SELECT date_trunc($2, hour, 'UTC') AS bucket, sum(count)::bigint AS n,
                    (sum(count) FILTER (WHERE level = 'error'))::bigint AS crit
             FROM error_counts_hour, bounds
             WHERE project_id = $1 AND hour >= bounds.lo AND hour <= $4
             GROUP BY 1),
         r AS (
             SELECT date_trunc($2, resolved_at, 'UTC') AS bucket, count(*)::bigint AS n
             FROM error_resolutions, bounds
             WHERE project_id = $1 AND resolved_at >= bounds.lo AND resolved_at <= $4
             GROUP BY 1)
         SELECT buckets.bucket, COALESCE(c.n, 0) AS error_count, COALESCE(r.n, 0) AS resolved_count,
                COALESCE(c.crit, 0) AS critical_count
         FROM buckets LEFT JOIN c USING (bucket) LEFT JOIN r USING (bucket)
         ORDER BY buckets.bucket",
    )
    .bind(project)
    .bind(unit)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}

/// Records one health check of `component`.
pub async fn record_health_check(
    pool: &PgPool,
    instance: &str,
    component: &str,
    healthy: bool,
    response_time_ms: f64,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO health_checks (instance, component, healthy, response_time_ms, error)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(instance)
    .bind(component)
    .bind(healthy)
    .bind(response_time_ms)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Deletes health checks older than `before`, so the table stays bounded.
pub async fn prune_health_checks(pool: &PgPool, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM health_checks WHERE checked_at < $1")
            .bind(before)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

/// Share of healthy checks of `component` since `since`, in percent; `None` without checks.
pub async fn availability(
    pool: &PgPool,
    component: &str,
    since: DateTime<Utc>,
) -> Result<Option<f64>, sqlx::Error> {
    let (pct,): (Option<f64>,) = sqlx::query_as(
        "SELECT (100.0 * count(*) FILTER (WHERE healthy) / NULLIF(count(*), 0))::float8
         FROM health_checks WHERE component = $1 AND checked_at >= $2",
    )
    .bind(component)
    .bind(since)
    .fetch_one(pool)
    .await?;
    Ok(pct)
}

#[derive(Debug, FromRow)]
pub struct UptimeRow {
    pub pct_24h: Option<f64>,
    pub pct_7d: Option<f64>,
    pub pct_30d: Option<f64>,
    /// Transitions from healthy to unhealthy in the last 30 days (per recording instance).
    pub incidents_30d: i64,
    pub last_down: Option<DateTime<Utc>>,
    pub last_up_since: Option<DateTime<Utc>>,
    pub first_check: Option<DateTime<Utc>>,
}

/// Uptime of the API ("api" checks): availability over 24 h, 7 d and 30 d, incidents (a healthy
/// check followed by an unhealthy one), the last unhealthy check, and since when it has been up.
pub async fn uptime(pool: &PgPool, now: DateTime<Utc>) -> Result<UptimeRow, sqlx::Error> {
    sqlx::query_as(
        "WITH h AS (
             SELECT checked_at, healthy,
                    lag(healthy) OVER (PARTITION BY instance ORDER BY checked_at) AS prev
             FROM health_checks
             WHERE component = 'api' AND checked_at >= $1 - interval '30 days')
         SELECT
             (100.0 * count(*) FILTER (WHERE healthy AND checked_at >= $1 - interval '1 day')
                 / NULLIF(count(*) FILTER (WHERE checked_at >= $1 - interval '1 day'), 0))::float8 AS pct_24h,
             (100.0 * count(*) FILTER (WHERE healthy AND checked_at >= $1 - interval '7 days')
                 / NULLIF(count(*) FILTER (WHERE checked_at >= $1 - interval '7 days'), 0))::float8 AS pct_7d,
             (100.0 * count(*) FILTER (WHERE healthy) / NULLIF(count(*), 0))::float8 AS pct_30d,
             count(*) FILTER (WHERE NOT healthy AND prev) AS incidents_30d,
             max(checked_at) FILTER (WHERE NOT healthy) AS last_down,
             min(checked_at) FILTER (WHERE healthy AND checked_at > COALESCE(
                 (SELECT max(checked_at) FROM health_checks
                  WHERE component = 'api' AND NOT healthy), '-infinity')) AS last_up_since,
             min(checked_at) AS first_check
         FROM h",
    )
    .bind(now)
    .fetch_one(pool)
    .await
}

#[derive(Debug, FromRow)]
pub struct HeartbeatRow {
    pub instance: String,
    pub started_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub details: Value,
}

/// The heartbeats of `service` seen since `since` (live instances).
pub async fn heartbeats(
    pool: &PgPool,
    service: &str,
    since: DateTime<Utc>,
) -> Result<Vec<HeartbeatRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT instance, started_at, last_seen, details FROM service_heartbeats
         WHERE service = $1 AND last_seen >= $2 ORDER BY instance",
    )
    .bind(service)
    .bind(since)
    .fetch_all(pool)
    .await
}

#[derive(Debug, FromRow)]
pub struct PgStatsRow {
    pub max_connections: i64,
    pub connections: i64,
    pub active: i64,
    pub database_bytes: i64,
}

/// Server-wide connection figures and the database size.
pub async fn pg_stats(pool: &PgPool) -> Result<PgStatsRow, sqlx::Error> {
    sqlx::query_as(
        "SELECT current_setting('max_connections')::bigint AS max_connections,
                (SELECT count(*) FROM pg_stat_activity) AS connections,
                (SELECT count(*) FROM pg_stat_activity WHERE state = 'active') AS active,
                pg_database_size(current_database()) AS database_bytes",
    )
    .fetch_one(pool)
    .await
}
