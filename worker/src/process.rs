//! The worker's unit of work: one batch of events in, one transaction out. Tests call
//! [`process_batch`] directly; only the consumer loop touches the broker.

use crate::store::{self, EventRows, GroupRows, RollupRows};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use faultline_shared::{domain::StoredEvent, fingerprint};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeMap, HashSet};
use std::time::Instant;
use uuid::Uuid;

/// What a batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Events handed in.
    pub received: usize,
    /// Events stored and counted for the first time.
    pub inserted: usize,
    /// Events already stored (redeliveries, client retries with the same id): not counted again.
    pub duplicates: usize,
    /// Groups touched.
    pub groups: usize,
}

/// The group id for (project, fingerprint): derived, not looked up, so every worker agrees on it
/// without a round trip and upserts can be ordered by it.
pub fn group_id(project_id: Uuid, fingerprint: &str) -> Uuid {
    let mut h = Sha256::new();
    h.update(project_id.as_bytes());
    h.update(fingerprint.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::new_v8(bytes)
}

struct Prepared<'a> {
    event: &'a StoredEvent,
    group_id: Uuid,
    grouping: fingerprint::Grouping,
}

struct GroupAgg<'a> {
    latest: &'a Prepared<'a>,
    count: i64,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
}

/// Awaits one statement and records how long it took (`worker_statement_seconds`), so a slow
/// batch can be traced to the statement that made it slow from `/metrics` alone.
async fn timed<T>(statement: &'static str, fut: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let out = fut.await;
    metrics::histogram!("worker_statement_seconds", "statement" => statement)
        .record(started.elapsed().as_secs_f64());
    out
}

fn minute_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::minutes(1)).unwrap_or(t)
}

/// A batch fingerprinted, deduplicated and laid out as rows, ready to be written. Built before the
/// transaction begins, so the transaction holds its locks only while it writes.
pub struct Batch<'a> {
    /// Events handed in, duplicates included.
    received: usize,
    /// One per distinct event id, in id order.
    prepared: Vec<Prepared<'a>>,
    events: EventRows<'a>,
}

impl<'a> Batch<'a> {
    /// Fingerprints the events and keeps the first of each event id, in id order.
    pub fn prepare(events: &'a [StoredEvent]) -> Self {
        let mut seen = HashSet::with_capacity(events.len());
        let mut prepared: Vec<Prepared> = events
            .iter()
            // The same id twice inside one batch: keep the first.
            .filter(|e| seen.insert(e.event_id))
            .map(|event| {
                let grouping = fingerprint::compute(
                    &event.source,
                    &event.message,
                    event.stack_trace.as_deref(),
                    event.frames.as_deref(),
                    event.fingerprint.as_deref(),
                );
                Prepared {
                    group_id: group_id(event.project_id, &grouping.fingerprint),
                    event,
                    grouping,
                }
            })
            .collect();
        // Rows go in id order, like every other statement here, so concurrent batches that share
        // events (a redelivery racing its original) wait on each other instead of deadlocking.
        prepared.sort_unstable_by_key(|p| p.event.event_id);
        let mut rows = EventRows::default();
        for p in &prepared {
            let e = p.event;
            rows.id.push(e.event_id);
            rows.project_id.push(e.project_id);
            rows.group_id.push(p.group_id);
            rows.received_at.push(e.received_at);
            rows.sample.push(e);
            rows.extra
                .push(e.extra.as_deref().map(serde_json::value::RawValue::get));
        }
        Batch {
            received: events.len(),
            prepared,
            events: rows,
        }
    }
}

/// Writes a batch in one transaction: stores each new event (an id seen before is skipped),
/// pre-aggregates per group and per minute, and upserts groups and rollups in key order. Either
/// all of it is committed or none of it; the caller acks only after `Ok`.
pub async fn process_batch(pool: &PgPool, events: &[StoredEvent]) -> Result<Outcome, sqlx::Error> {
    let started = Instant::now();
    let batch = Batch::prepare(events);
    if batch.prepared.is_empty() {
        return Ok(Outcome {
            received: batch.received,
            ..Default::default()
        });
    }
    let mut tx = timed("begin", pool.begin()).await?;
    let outcome = write_batch(&mut tx, &batch).await?;
    timed("commit", tx.commit()).await?;

    metrics::histogram!("worker_transaction_seconds").record(started.elapsed().as_secs_f64());
    metrics::counter!("worker_events_processed_total").increment(outcome.inserted as u64);
    metrics::counter!("worker_duplicates_skipped_total").increment(outcome.duplicates as u64);
    let now = Utc::now();
    if let Some(oldest) = batch.prepared.iter().map(|p| p.event.received_at).min() {
        metrics::gauge!("worker_ingest_lag_seconds")
            .set((now - oldest).num_milliseconds().max(0) as f64 / 1000.0);
    }
    Ok(outcome)
}

/// The writes of [`process_batch`] inside a transaction the caller owns and commits. Tests use it
/// to hold a worker transaction open (e.g. across an alert evaluation) before committing it.
pub async fn write_batch(
    conn: &mut PgConnection,
    batch: &Batch<'_>,
) -> Result<Outcome, sqlx::Error> {
    let mut outcome = Outcome {
        received: batch.received,
        ..Default::default()
    };
    let prepared = &batch.prepared;
    let new_ids: HashSet<Uuid> = timed(
        "insert_events",
        store::insert_events(&mut *conn, &batch.events),
    )
    .await?
    .into_iter()
    .collect();
    outcome.inserted = new_ids.len();
    outcome.duplicates = batch.received - new_ids.len();

    // Pre-aggregate the new events: one row per group, one per (minute, group, level, env).
    let mut groups: BTreeMap<Uuid, GroupAgg> = BTreeMap::new();
    let mut rollups: BTreeMap<(Uuid, DateTime<Utc>, Uuid, &'static str, &str), i64> =
        BTreeMap::new();
    for p in prepared
        .iter()
        .filter(|p| new_ids.contains(&p.event.event_id))
    {
        let at = p.event.received_at;
        groups
            .entry(p.group_id)
            .and_modify(|g| {
                g.count += 1;
                g.first_seen = g.first_seen.min(at);
                if at >= g.last_seen {
                    g.last_seen = at;
                    g.latest = p;
                }
            })
            .or_insert(GroupAgg {
                latest: p,
                count: 1,
                first_seen: at,
                last_seen: at,
            });
        *rollups
            .entry((
                p.event.project_id,
                minute_of(at),
                p.group_id,
                p.event.level.as_str(),
                p.event.environment.as_str(),
            ))
            .or_default() += 1;
    }
    outcome.groups = groups.len();

    if !groups.is_empty() {
        let mut g = GroupRows::default();
        for (id, agg) in &groups {
            let p = agg.latest;
            let e = p.event;
            g.id.push(*id);
            g.project_id.push(e.project_id);
            g.fingerprint.push(&p.grouping.fingerprint);
            g.version.push(p.grouping.version);
            g.normalized_message.push(&p.grouping.normalized_message);
            g.frames.push(serde_json::json!(p.grouping.frames));
            g.custom.push(p.grouping.custom);
            g.sample.push(e);
            g.latest_event_id.push(e.event_id);
            g.count.push(agg.count);
            g.first_seen.push(agg.first_seen);
            g.last_seen.push(agg.last_seen);
        }
        timed("upsert_groups", store::upsert_groups(&mut *conn, &g)).await?;
        timed("upsert_activity", store::upsert_activity(&mut *conn, &g)).await?;

        let mut r = RollupRows::default();
        for ((project_id, minute, group_id, level, environment), count) in &rollups {
            r.project_id.push(*project_id);
            r.minute.push(*minute);
            r.group_id.push(*group_id);
            r.level.push(level);
            r.environment.push(environment);
            r.count.push(*count);
        }
        timed("upsert_rollups", store::upsert_rollups(&mut *conn, &r)).await?;
    }
    Ok(outcome)
}
