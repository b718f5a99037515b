//! `GET /api/errors/sparklines?ids=<id>,<id>,...`: each group's events per hour over the last
//! 24 hours, from the minute rollups, for the small charts of the dashboard's errors list. One
//! request for a whole page of the list, so the page does not ask once per row.

use super::params::{Params, RawQuery, parse_id};
use crate::{AppState, auth::Caller, cache::envelope, error::ApiError};
use axum::{Json, extract::State};
use chrono::{DateTime, Duration, DurationRound, Utc};
use faultline_shared::domain::Permission;
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// Hours in a sparkline; the last one is the current (partial) hour.
const HOURS: i64 = 24;
/// Most ids in one request: the list's largest page.
const MAX_IDS: usize = 100;

pub async fn sparklines(
    State(state): State<AppState>,
    caller: Caller,
    raw: RawQuery,
) -> Result<Json<Value>, ApiError> {
    caller.require(Permission::Read)?;
    let mut p = Params::new(raw)?;
    let raw_ids = p.text("ids", MAX_IDS * 37).unwrap_or_default();
    p.finish()?;
    let ids = raw_ids
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_id)
        .collect::<Result<Vec<Uuid>, _>>()?;
    if ids.len() > MAX_IDS {
        return Err(ApiError::validation(
            "too many ids",
            json!({ "ids": format!("at most {MAX_IDS}") }),
        ));
    }
    let now = Utc::now();
    let current_hour = now.duration_trunc(Duration::hours(1)).unwrap_or(now);
    let from = current_hour - Duration::hours(HOURS - 1);
    let rows = hourly_counts(&state.pool, caller.project_id, &ids, from).await?;
    let mut lines: Map<String, Value> = Map::new();
    for id in &ids {
        lines.insert(id.to_string(), json!(vec![0i64; HOURS as usize]));
    }
    for (group, hour, count) in rows {
        let slot = (hour - from).num_hours();
        if let Some(Value::Array(counts)) = lines.get_mut(&group.to_string())
            && (0..HOURS).contains(&slot)
        {
            counts[slot as usize] = json!(count);
        }
    }
    Ok(Json(envelope(json!({
        "from": from,
        "hours": HOURS,
        "sparklines": lines,
    }))))
}

/// (group, hour, events) for the caller's groups among `ids` since `from`.
#[tracing::instrument(skip(pool, ids), fields(ids = ids.len()))]
async fn hourly_counts(
    pool: &sqlx::PgPool,
    project: Uuid,
    ids: &[Uuid],
    from: DateTime<Utc>,
) -> Result<Vec<(Uuid, DateTime<Utc>, i64)>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        "SELECT group_id, date_trunc('hour', minute, 'UTC') AS hour, sum(count)::bigint
         FROM error_counts_minute
         WHERE project_id = $1 AND group_id = ANY($2) AND minute >= $3
         GROUP BY 1, 2",
    )
    .bind(project)
    .bind(ids)
    .bind(from)
    .fetch_all(pool)
    .await
}
