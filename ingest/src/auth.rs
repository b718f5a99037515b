//! API-key authentication. Keys are looked up by their sha256 and cached in memory for a short
//! TTL, so the hot ingest path does not touch Postgres per request while a revoked or expired key
//! still stops working within that TTL on every instance.
//!
//! A key in use is never waited on twice: when its entry passes the TTL, the request that notices
//! starts one refresh in the background and every request meanwhile is answered from the entry it
//! replaces; a key not cached yet is fetched by one query that all its concurrent requests await.
//! Without that, every request arriving while an entry was being refetched went to Postgres itself
//! (at 10,000 requests/s, dozens of queries per key every TTL, each request waiting for a pool
//! connection), and a restarted instance met its first burst with one query per connection.

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
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};
use tokio::sync::OnceCell;
use uuid::Uuid;

/// Entries above this many are evicted (expired first, then all): bounds memory against clients
/// that spray random keys.
const MAX_ENTRIES: usize = 50_000;

/// Unknown keys are cached too (briefly), so a flood of bad keys cannot flood Postgres either.
const NEGATIVE_TTL: Duration = Duration::from_secs(2);

/// After a failed background refresh, the next one waits this long: during a database outage one
/// query a second per key, not one per request.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// A cached lookup. The record (or `None` for an unknown key) is shared, so that each request's
/// `Caller` holds it without copying its strings.
struct Entry {
    record: Option<Arc<KeyRecord>>,
    /// When the record was read from Postgres.
    fetched: Instant,
    /// A background refresh is running, or failed at this instant (and waits
    /// [`RETRY_AFTER_FAILURE`] before the next).
    refresh: Refresh,
}

#[derive(Clone, Copy)]
enum Refresh {
    Idle,
    Running,
    FailedAt(Instant),
}

impl Entry {
    fn ttl(&self, positive: Duration) -> Duration {
        if self.record.is_some() {
            positive
        } else {
            NEGATIVE_TTL
        }
    }

    /// Past its TTL (`positive` for a known key), with no refresh running and none failed within
    /// [`RETRY_AFTER_FAILURE`]: the request that sees this starts one.
    fn needs_refresh(&self, positive: Duration, now: Instant) -> bool {
        now.duration_since(self.fetched) >= self.ttl(positive)
            && match self.refresh {
                Refresh::Idle => true,
                Refresh::Running => false,
                Refresh::FailedAt(at) => now.duration_since(at) >= RETRY_AFTER_FAILURE,
            }
    }
}

/// The outcome of one query, shared by every request that awaited it.
type Fetched = Result<Option<Arc<KeyRecord>>, Arc<sqlx::Error>>;

#[derive(Clone)]
pub struct KeyCache {
    pool: PgPool,
    ttl: Duration,
    entries: Arc<RwLock<HashMap<KeyHash, Entry>>>,
    /// Queries running for keys not cached yet, one per key.
    loading: Arc<Mutex<HashMap<KeyHash, Arc<OnceCell<Fetched>>>>>,
}

impl KeyCache {
    pub fn new(pool: PgPool, ttl: Duration) -> Self {
        Self {
            pool,
            ttl,
            entries: Arc::default(),
            loading: Arc::default(),
        }
    }

    /// Drops the cached entry of key `id` (after a revocation), so this instance refuses it at
    /// once; other instances refuse it within the TTL.
    pub fn forget(&self, id: Uuid) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, e| e.record.as_ref().is_none_or(|r| r.id != id));
    }

    /// The key's record. A fresh entry answers at once; a stale one answers too, while one
    /// background query replaces it (when Postgres fails, the stale entry goes on answering: a
    /// database outage must not stop ingestion of already-known keys); a key not cached is
    /// fetched once for all the requests that ask for it meanwhile.
    pub async fn lookup(&self, hash: KeyHash) -> Result<Option<Arc<KeyRecord>>, ApiError> {
        let now = Instant::now();
        {
            let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = entries.get(&hash)
                && !e.needs_refresh(self.ttl, now)
            {
                return Ok(e.record.clone());
            }
        }
        {
            let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = entries.get_mut(&hash) {
                let record = e.record.clone();
                // Checked again under the write lock: another request may have started it.
                if e.needs_refresh(self.ttl, now) {
                    e.refresh = Refresh::Running;
                    let cache = self.clone();
                    tokio::spawn(async move { cache.refresh(hash).await });
                }
                return Ok(record);
            }
        }
        self.load(hash).await
    }

    /// Replaces a stale entry with what Postgres holds now; on failure keeps it, marked so the
    /// next attempt waits.
    async fn refresh(&self, hash: KeyHash) {
        let fetched = db::find_key(&self.pool, &hash).await;
        let now = Instant::now();
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        match fetched {
            // Unless the entry was forgotten meanwhile (the key revoked here while the query ran,
            // which may have read it before the revocation): then the next request reads it anew.
            Ok(record) if entries.contains_key(&hash) => {
                self.store(&mut entries, hash, record.map(Arc::new), now)
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "Key lookup failed; using the cached entry.");
                // The entry may have been forgotten (revoked) meanwhile: then nothing to mark.
                if let Some(entry) = entries.get_mut(&hash) {
                    entry.refresh = Refresh::FailedAt(now);
                }
            }
        }
    }

    /// Fetches a key nothing is cached for: the first request queries, the others await its
    /// answer.
    async fn load(&self, hash: KeyHash) -> Result<Option<Arc<KeyRecord>>, ApiError> {
        let cell = {
            let mut loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
            // A query whose requests all went away (clients that hung up) leaves its cell behind;
            // past the bound, cells no request awaits are dropped.
            if loading.len() >= MAX_ENTRIES {
                loading.retain(|_, cell| Arc::strong_count(cell) > 1);
            }
            loading.entry(hash).or_default().clone()
        };
        let fetched = cell
            .get_or_init(|| async {
                let fetched = db::find_key(&self.pool, &hash).await;
                let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
                // Whatever came of it, the next request for this key asks again (or finds the entry).
                self.loading
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&hash);
                match fetched {
                    Ok(record) => {
                        let record = record.map(Arc::new);
                        self.store(&mut entries, hash, record.clone(), Instant::now());
                        Ok(record)
                    }
                    Err(e) => Err(Arc::new(e)),
                }
            })
            .await;
        fetched.clone().map_err(ApiError::from)
    }

    fn store(
        &self,
        entries: &mut HashMap<KeyHash, Entry>,
        hash: KeyHash,
        record: Option<Arc<KeyRecord>>,
        now: Instant,
    ) {
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&hash) {
            let ttl = self.ttl;
            entries.retain(|_, e| now.duration_since(e.fetched) < e.ttl(ttl));
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            hash,
            Entry {
                record,
                fetched: now,
                refresh: Refresh::Idle,
            },
        );
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
