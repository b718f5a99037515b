//! The Postgres pool, the one migrator every binary and test applies, and the API-key queries
//! shared by ingest's request path and its `create-key` command.

use crate::domain::{ApiKey, KeyHash, Permissions};
use chrono::{DateTime, Utc};
use sqlx::{
    PgPool,
    migrate::{MigrateDatabase, Migrator},
    postgres::PgPoolOptions,
};
use std::time::Duration;
use uuid::Uuid;

/// The migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Creates the database named in `url` when it does not exist yet, so a first start (or a compose
/// stack with an empty volume) needs no manual `createdb`.
pub async fn ensure_database(url: &str) -> Result<(), sqlx::Error> {
    if !sqlx::Postgres::database_exists(url).await? {
        match sqlx::Postgres::create_database(url).await {
            Ok(()) => {}
            // Another process created it between the check and the create.
            Err(e) if sqlx::Postgres::database_exists(url).await.unwrap_or(false) => {
                tracing::debug!(error = %e, "database appeared concurrently");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A pool with bounded connect time, so a binary started before Postgres fails fast and loudly
/// instead of hanging. `lazy` pools open connections on first use (used when Postgres may be down).
pub fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(300))
}

/// Connects, creating the database if needed, and applies the migrations.
pub async fn connect_and_migrate(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    use anyhow::Context;
    ensure_database(url)
        .await
        .context("checking or creating the database")?;
    let pool = pool_options(max_connections)
        .connect(url)
        .await
        .context("connecting to Postgres")?;
    MIGRATOR.run(&pool).await.context("applying migrations")?;
    Ok(pool)
}

/// A key as the request path needs it: who it belongs to and what it may do.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    pub permissions: Permissions,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked: bool,
    /// Per-scope overrides of the rate limits ("ingest", "analytics", "other" → requests per window).
    pub rate_limits: std::collections::BTreeMap<String, u32>,
}

impl KeyRecord {
    /// Usable now: not revoked, not expired.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        !self.revoked && self.expires_at.is_none_or(|at| at > now)
    }
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: Uuid,
    project_id: Uuid,
    name: String,
    permissions: Vec<String>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    rate_limits: serde_json::Value,
}

/// Finds a key by its hash: the lookup cost does not depend on how much of a key matched.
#[tracing::instrument(skip_all)]
pub async fn find_key(pool: &PgPool, hash: &KeyHash) -> Result<Option<KeyRecord>, sqlx::Error> {
    let row: Option<KeyRow> = sqlx::query_as(
        "SELECT id, project_id, name, permissions, expires_at, revoked_at, rate_limits
         FROM api_keys WHERE key_hash = $1",
    )
    .bind(&hash.0[..])
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| KeyRecord {
        id: r.id,
        project_id: r.project_id,
        name: r.name,
        // The table's CHECK constraint only admits known permissions.
        permissions: Permissions::parse_list(&r.permissions).unwrap_or_default(),
        expires_at: r.expires_at,
        revoked: r.revoked_at.is_some(),
        rate_limits: serde_json::from_value(r.rate_limits).unwrap_or_default(),
    }))
}

/// Returns the id of the project called `name`, creating it when missing.
pub async fn ensure_project(pool: &PgPool, name: &str) -> Result<Uuid, sqlx::Error> {
    let id: (Uuid,) = sqlx::query_as(
        "INSERT INTO projects (id, name) VALUES ($1, $2)
         ON CONFLICT ON CONSTRAINT projects_name_unique DO UPDATE SET name = EXCLUDED.name
         RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(name)
    .fetch_one(pool)
    .await?;
    Ok(id.0)
}

/// Stores a key (its hash and preview only). Idempotent for the same raw key: the existing row's
/// id is returned and nothing changes, so `make run` can run again and again.
pub async fn insert_key(
    pool: &PgPool,
    project_id: Uuid,
    name: &str,
    key: &ApiKey,
    permissions: &Permissions,
    expires_at: Option<DateTime<Utc>>,
) -> Result<Uuid, sqlx::Error> {
    let row: (Uuid,) = sqlx::query_as(
        "INSERT INTO api_keys (id, project_id, name, key_hash, key_preview, permissions, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT ON CONSTRAINT api_keys_key_hash_unique DO UPDATE SET key_hash = EXCLUDED.key_hash
         RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(project_id)
    .bind(name)
    .bind(&key.hash().0[..])
    .bind(key.preview())
    .bind(permissions.as_strings())
    .bind(expires_at)
    .fetch_one(pool)
    .await?;
    Ok(row.0)
}

/// Records that `service`/`instance` is alive, with what it last did; see `service_heartbeats`.
pub async fn heartbeat(
    pool: &PgPool,
    service: &str,
    instance: &str,
    started_at: DateTime<Utc>,
    details: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO service_heartbeats (service, instance, started_at, last_seen, details)
         VALUES ($1, $2, $3, now(), $4)
         ON CONFLICT (service, instance)
         DO UPDATE SET last_seen = now(), started_at = EXCLUDED.started_at, details = EXCLUDED.details",
    )
    .bind(service)
    .bind(instance)
    .bind(started_at)
    .bind(details)
    .execute(pool)
    .await?;
    Ok(())
}

/// Removes an instance's heartbeat when it stops cleanly, so it is not reported alive until its
/// heartbeat goes stale.
pub async fn remove_heartbeat(
    pool: &PgPool,
    service: &str,
    instance: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM service_heartbeats WHERE service = $1 AND instance = $2")
        .bind(service)
        .bind(instance)
        .execute(pool)
        .await?;
    Ok(())
}

/// A name for this process instance: host name and pid, stable for the life of the process.
pub fn instance_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string());
    format!("{host}:{}", std::process::id())
}
