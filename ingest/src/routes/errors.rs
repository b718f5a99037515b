//! The dashboard's error endpoints: list, detail (with why the events were grouped), the stored
//! occurrences of a group, resolve/reopen and delete. Reads need `read`, changes need `write`;
//! another project's ids answer 404 because every query filters by the caller's project.

use super::params::{Params, RawQuery, parse_id};
use crate::{
    AppState,
    auth::Caller,
    cache::{self, envelope, ttl},
    error::ApiError,
    queries::reads::{self, ErrorQuery, SortKey},
};
use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use faultline_shared::domain::{Level, Permission};
use serde_json::{Value, json};

/// Occurrences shown in a group's detail; the rest are paged by `/api/errors/{id}/events`.
const RECENT_EVENTS: i64 = 10;
const LEVELS: [&str; 4] = ["error", "warning", "info", "debug"];

fn parse_level(s: &str) -> Option<Level> {
    Level::ALL.into_iter().find(|l| l.as_str() == s)
}

/// `GET /api/errors`: filters `level`, `source`, `environment`, `resolved`, `q` (text in the
/// message), `since`/`until` (on `last_seen`); `sort` = last_seen | first_seen | count with
/// `order` = desc | asc (or `sort=-count` style); `limit` 1–100 (default 50) and `offset`.
pub async fn list_errors(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    raw: RawQuery,
) -> Result<Response, ApiError> {
    caller.require(Permission::Read)?;
    let query = parse_list_query(raw)?;
    let params = format!("{query:?}");
    cache::cached(
        &state,
        &headers,
        caller.project_id,
        "errors",
        &params,
        ttl::ERROR_LIST,
        || async {
            let (rows, total) = reads::list_groups(&state.pool, caller.project_id, &query).await?;
            Ok(json!({
                "errors": rows.iter().map(reads::GroupRow::to_json).collect::<Vec<_>>(),
                "total": total,
                "page": query.offset / query.limit + 1,
                "limit": query.limit,
                "offset": query.offset,
            }))
        },
    )
    .await
}

fn parse_list_query(raw: RawQuery) -> Result<ErrorQuery, ApiError> {
    let mut p = Params::new(raw)?;
    let limit = p.int("limit", 50, 1, 100);
    let offset = p.int("offset", 0, 0, i64::MAX);
    let level = p.optional_one_of("level", &LEVELS).and_then(parse_level);
    let source = p.text("source", 200);
    let environment = p.text("environment", 200);
    let resolved = p.bool("resolved");
    let q = p.text("q", 500);
    let since = p.time("since");
    let until = p.time("until");
    // `sort=-count` / `sort=+count` are shorthands for `order=desc` / `order=asc`.
    let raw_sort = p.text("sort", 40);
    let ascending_prefix = raw_sort.as_deref().is_some_and(|s| s.starts_with('+'));
    let sort_name = raw_sort
        .as_deref()
        .map(|s| s.trim_start_matches(['-', '+']));
    let sort = match sort_name {
        None | Some("last_seen") => SortKey::LastSeen,
        Some("first_seen") => SortKey::FirstSeen,
        Some("count") => SortKey::Count,
        Some(_) => {
            p.fail("sort", "must be one of last_seen, first_seen, count");
            SortKey::LastSeen
        }
    };
    let order = p.optional_one_of("order", &["desc", "asc"]);
    let descending = match order {
        Some(o) => o == "desc",
        None => !ascending_prefix,
    };
    if let (Some(s), Some(u)) = (since, until)
        && s > u
    {
        p.fail("since", "must not be after until");
    }
    p.finish()?;
    Ok(ErrorQuery {
        level,
        source,
        environment,
        resolved,
        q,
        since,
        until,
        sort,
        descending,
        limit,
        offset,
    })
}

/// `GET /api/errors/{id}`: the group, why its events were grouped, and its latest occurrences.
pub async fn get_error(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(raw_id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Permission::Read)?;
    let id = parse_id(&raw_id)?;
    cache::cached(
        &state,
        &headers,
        caller.project_id,
        "error",
        &id.to_string(),
        ttl::ERROR_LIST,
        || async {
            let group = reads::find_group(&state.pool, caller.project_id, id)
                .await?
                .ok_or(ApiError::NotFound("error"))?;
            let (events, stored) =
                reads::list_events(&state.pool, caller.project_id, id, RECENT_EVENTS, 0).await?;
            let mut data = group.to_json();
            data["grouping"] = group.grouping_json();
            data["events_stored"] = json!(stored);
            data["recent_events"] =
                Value::Array(events.iter().map(reads::EventRow::to_json).collect());
            Ok(data)
        },
    )
    .await
}

/// `GET /api/errors/{id}/events`: every stored occurrence of the group, newest first, paged with
/// `limit` (1–100, default 50) and `offset`.
pub async fn list_error_events(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(raw_id): Path<String>,
    raw: RawQuery,
) -> Result<Response, ApiError> {
    caller.require(Permission::Read)?;
    let id = parse_id(&raw_id)?;
    let mut p = Params::new(raw)?;
    let limit = p.int("limit", 50, 1, 100);
    let offset = p.int("offset", 0, 0, i64::MAX);
    p.finish()?;
    cache::cached(
        &state,
        &headers,
        caller.project_id,
        "error_events",
        &format!("{id}:{limit}:{offset}"),
        ttl::ERROR_LIST,
        || async {
            reads::find_group(&state.pool, caller.project_id, id)
                .await?
                .ok_or(ApiError::NotFound("error"))?;
            let (events, total) =
                reads::list_events(&state.pool, caller.project_id, id, limit, offset).await?;
            Ok(json!({
                "events": events.iter().map(reads::EventRow::to_json).collect::<Vec<_>>(),
                "total": total,
                "page": offset / limit + 1,
                "limit": limit,
                "offset": offset,
            }))
        },
    )
    .await
}

/// `PUT /api/errors/{id}/resolve`: idempotent; the resolution time is recorded for statistics.
pub async fn resolve_error(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Permission::Write)?;
    let id = parse_id(&raw_id)?;
    reads::resolve_group(&state.pool, caller.project_id, id)
        .await?
        .ok_or(ApiError::NotFound("error"))?;
    state.cache.bump(caller.project_id).await;
    Ok(Json(envelope(json!({ "id": id, "status": "resolved" }))))
}

/// `PUT /api/errors/{id}/reopen`: the inverse of resolve; idempotent.
pub async fn reopen_error(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Permission::Write)?;
    let id = parse_id(&raw_id)?;
    reads::reopen_group(&state.pool, caller.project_id, id)
        .await?
        .ok_or(ApiError::NotFound("error"))?;
    state.cache.bump(caller.project_id).await;
    Ok(Json(envelope(json!({ "id": id, "status": "unresolved" }))))
}

/// `DELETE /api/errors/{id}`: 204; the group's events and minute counts go with it.
pub async fn delete_error(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Permission::Write)?;
    let id = parse_id(&raw_id)?;
    reads::delete_group(&state.pool, caller.project_id, id)
        .await?
        .ok_or(ApiError::NotFound("error"))?;
    state.cache.bump(caller.project_id).await;
    Ok(StatusCode::NO_CONTENT)
}
