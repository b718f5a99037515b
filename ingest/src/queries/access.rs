//! The SQL of access control: API keys, team members, projects and keys' last use. Every query
//! that reads or changes a key or member takes the caller's project and filters by it, so another
//! project's ids are simply absent (404, never 403).

use chrono::{DateTime, Utc};
use faultline_shared::domain::{ApiKey, Permissions};
use serde_json::{Value, json};
use sqlx::{FromRow, PgPool, Postgres};
use std::collections::BTreeMap;
use uuid::Uuid;

/// A key as listed (never its secret or hash).
#[derive(Debug, FromRow)]
pub struct KeyRow {
    pub id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    pub key_preview: String,
    pub permissions: Vec<String>,
    pub rate_limits: Value,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl KeyRow {
    /// The contract's API key object, plus `project_id` and `rate_limits`.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "project_id": self.project_id,
            "name": self.name,
            "key_preview": self.key_preview,
            "permissions": self.permissions,
            "rate_limits": self.rate_limits,
            "expires_at": self.expires_at,
            "last_used": self.last_used,
            "created_at": self.created_at,
        })
    }
}

/// The columns of `KeyRow` (a macro, so queries stay `&'static str` built with `concat!`).
macro_rules! key_columns {
    () => {
        "id, project_id, name, key_preview, permissions, rate_limits, expires_at, last_used, created_at"
    };
}

/// The project's keys that still work or may (not revoked), newest first.
#[tracing::instrument(skip(pool))]
pub async fn list_keys(pool: &PgPool, project: Uuid) -> Result<Vec<KeyRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        key_columns!(),
        " FROM api_keys WHERE project_id = $1 AND revoked_at IS NULL
         ORDER BY created_at DESC, id DESC"
    ))
    .bind(project)
    .fetch_all(pool)
    .await
}

/// What a new key is made of.
pub struct NewKey<'a> {
    pub project: Uuid,
    pub name: &'a str,
    pub key: &'a ApiKey,
    pub permissions: &'a Permissions,
    pub expires_at: Option<DateTime<Utc>>,
    pub rate_limits: &'a BTreeMap<String, u32>,
}

/// Stores a new key (its sha256 and preview only).
#[tracing::instrument(skip_all, fields(project = %new.project))]
pub async fn insert_key<'e, E>(executor: E, new: NewKey<'_>) -> Result<KeyRow, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    sqlx::query_as(concat!(
        "INSERT INTO api_keys
             (id, project_id, name, key_hash, key_preview, permissions, expires_at, rate_limits)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         RETURNING ",
        key_columns!()
    ))
    .bind(Uuid::now_v7())
    .bind(new.project)
    .bind(new.name)
    .bind(&new.key.hash().0[..])
    .bind(new.key.preview())
    .bind(new.permissions.as_strings())
    .bind(new.expires_at)
    .bind(json!(new.rate_limits))
    .fetch_one(executor)
    .await
}

/// Revokes a key of the project; false when there is no such (unrevoked) key in it.
#[tracing::instrument(skip(pool))]
pub async fn revoke_key(pool: &PgPool, project: Uuid, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE api_keys SET revoked_at = now()
         WHERE id = $1 AND project_id = $2 AND revoked_at IS NULL",
    )
    .bind(id)
    .bind(project)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Writes keys' last use in one statement; never moves a `last_used` backwards.
#[tracing::instrument(skip_all, fields(keys = uses.len()))]
pub async fn record_last_used(
    pool: &PgPool,
    uses: &[(Uuid, DateTime<Utc>)],
) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = uses.iter().map(|(id, _)| *id).collect();
    let times: Vec<DateTime<Utc>> = uses.iter().map(|(_, at)| *at).collect();
    sqlx::query(
        "UPDATE api_keys AS k
         SET last_used = GREATEST(k.last_used, u.at)
         FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at)
         WHERE k.id = u.id",
    )
    .bind(ids)
    .bind(times)
    .execute(pool)
    .await?;
    Ok(())
}

/// A member as the contract shows it.
#[derive(Debug, FromRow)]
pub struct MemberRow {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub role: String,
    pub status: String,
    pub last_active: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl MemberRow {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "role": self.role,
            "status": self.status,
            "last_active": self.last_active,
            "created_at": self.created_at,
        })
    }
}

macro_rules! member_columns {
    () => {
        "id, name, email, role, status, last_active, created_at"
    };
}

#[tracing::instrument(skip(pool))]
pub async fn list_members(pool: &PgPool, project: Uuid) -> Result<Vec<MemberRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        member_columns!(),
        " FROM team_members WHERE project_id = $1 ORDER BY created_at, id"
    ))
    .bind(project)
    .fetch_all(pool)
    .await
}

/// Why an invitation was not stored.
pub enum InviteError {
    /// The e-mail address is already a member of the project (any case).
    Duplicate,
    Db(sqlx::Error),
}

#[tracing::instrument(skip(pool, email))]
pub async fn insert_member(
    pool: &PgPool,
    project: Uuid,
    name: &str,
    email: &str,
    role: &str,
    invited_by: Uuid,
) -> Result<MemberRow, InviteError> {
    sqlx::query_as(concat!(
        "INSERT INTO team_members (id, project_id, name, email, role, invited_by)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING ",
        member_columns!()
    ))
    .bind(Uuid::now_v7())
    .bind(project)
    .bind(name)
    .bind(email)
    .bind(role)
    .bind(invited_by)
    .fetch_one(pool)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db)
            if db.constraint() == Some("team_members_project_email_unique") =>
        {
            InviteError::Duplicate
        }
        _ => InviteError::Db(e),
    })
}

#[derive(Debug, FromRow)]
pub struct ProjectRow {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl ProjectRow {
    pub fn to_json(&self) -> Value {
        json!({ "id": self.id, "name": self.name, "created_at": self.created_at })
    }
}

#[tracing::instrument(skip(pool))]
pub async fn find_project(pool: &PgPool, id: Uuid) -> Result<Option<ProjectRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, name, created_at FROM projects WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Why a project was not created.
pub enum CreateProjectError {
    /// The name is taken.
    Duplicate,
    Db(sqlx::Error),
}

/// Creates a project and its first admin key in one transaction: a project never exists without
/// a key that can manage it.
#[tracing::instrument(skip(pool, key))]
pub async fn create_project(
    pool: &PgPool,
    name: &str,
    key: &ApiKey,
) -> Result<(ProjectRow, KeyRow), CreateProjectError> {
    let mut tx = pool.begin().await.map_err(CreateProjectError::Db)?;
    let project: ProjectRow = sqlx::query_as(
        "INSERT INTO projects (id, name) VALUES ($1, $2) RETURNING id, name, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(name)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.constraint() == Some("projects_name_unique") => {
            CreateProjectError::Duplicate
        }
        _ => CreateProjectError::Db(e),
    })?;
    let permissions = Permissions::new(vec![faultline_shared::domain::Permission::Admin]);
    let row = insert_key(
        &mut *tx,
        NewKey {
            project: project.id,
            name: "Initial admin key",
            key,
            permissions: &permissions,
            expires_at: None,
            rate_limits: &BTreeMap::new(),
        },
    )
    .await
    .map_err(CreateProjectError::Db)?;
    tx.commit().await.map_err(CreateProjectError::Db)?;
    Ok((project, row))
}
