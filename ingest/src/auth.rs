//! API-key authentication. Keys are looked up by their sha256 and cached in memory for a short
//! TTL, so the hot ingest path does not touch Postgres per request while a revoked or expired key
//! still stops working within that TTL on every instance.

use crate::{AppState, error::ApiError};
use axum::{extract::FromRequestParts, http::request::Parts};
use chrono::Utc;
use faultline_shared::{
    db::{self, KeyRecord},
    domain::{ApiKey, KeyHash, Permission},
};
use sqlx::PgPool;
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};
use uuid::Uuid;

/// Entries above this many are evicted (expired first, then all): bounds memory against clients
/// that spray random keys.
const MAX_ENTRIES: usize = 50_000;

/// Unknown keys are cached too (briefly), so a flood of bad keys cannot flood Postgres either.
const NEGATIVE_TTL: Duration = Duration::from_secs(2);

/// A cached lookup: the record (or `None` for an unknown key) and when it was fetched.
/// Shared, so that each request's `Caller` holds the record without copying its strings.
type CacheEntry = (Option<Arc<KeyRecord>>, Instant);

#[derive(Clone)]
pub struct KeyCache {
    pool: PgPool,
    ttl: Duration,
    entries: Arc<RwLock<HashMap<KeyHash, CacheEntry>>>,
}

impl KeyCache {
    pub fn new(pool: PgPool, ttl: Duration) -> Self {
        Self {
            pool,
            ttl,
            entries: Arc::default(),
        }
    }

    /// Drops the cached entry of key `id` (after a revocation), so this instance refuses it at
    /// once; other instances refuse it within the TTL.
    pub fn forget(&self, id: Uuid) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, (record, _)| record.as_ref().is_none_or(|r| r.id != id));
    }

    /// The key's record, from the cache when fresh. When Postgres fails, a stale entry is still
    /// used: a database outage must not stop ingestion of already-known keys.
    pub async fn lookup(&self, hash: KeyHash) -> Result<Option<Arc<KeyRecord>>, ApiError> {
        let now = Instant::now();
        let stale = {
            let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
            match entries.get(&hash) {
                Some((record, at)) => {
                    let ttl = if record.is_some() {
                        self.ttl
                    } else {
                        NEGATIVE_TTL
                    };
                    if now.duration_since(*at) < ttl {
                        return Ok(record.clone());
                    }
                    Some(record.clone())
                }
                None => None,
            }
        };
        match db::find_key(&self.pool, &hash).await {
            Ok(record) => {
                let record = record.map(Arc::new);
                let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
                if entries.len() >= MAX_ENTRIES {
                    let ttl = self.ttl;
                    entries.retain(|_, (_, at)| now.duration_since(*at) < ttl);
                    if entries.len() >= MAX_ENTRIES {
                        entries.clear();
                    }
                }
                entries.insert(hash, (record.clone(), now));
                Ok(record)
            }
            Err(e) => match stale {
                Some(record) => {
                    tracing::warn!(error = %e, "Key lookup failed; using the cached entry.");
                    Ok(record)
                }
                None => Err(e.into()),
            },
        }
    }
}

/// An authenticated caller: the key's id, project and permissions.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: Uuid,
    pub project_id: Uuid,
    pub key: Arc<KeyRecord>,
}

impl Caller {
    /// Refuses with 403 `permission_denied`, naming what was required.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.key.permissions.allows(permission) {
            Ok(())
        } else {
            Err(ApiError::PermissionDenied {
                required: permission.as_str(),
            })
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // The rate-limit middleware authenticated this request already.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let raw = parts
            .headers
            .get("x-api-key")
            .ok_or(ApiError::Unauthorized("missing X-API-Key header"))?;
        let key = raw
            .to_str()
            .ok()
            .and_then(ApiKey::parse)
            .ok_or(ApiError::Unauthorized("invalid API key"))?;
        let record = state
            .keys
            .lookup(key.hash())
            .await?
            .filter(|r| r.is_active(Utc::now()))
            .ok_or(ApiError::Unauthorized("invalid API key"))?;
        state.key_usage.touch(record.id);
        Ok(Caller {
            key_id: record.id,
            project_id: record.project_id,
            key: record,
        })
    }
}
