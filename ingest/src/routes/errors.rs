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
#[utoipa::path(get, path = "/api/errors", tag = "errors", summary = "List errors (groups), filtered, sorted and paged",
    params(
        ("limit" = Option<i64>, Query, description = "1-100, default 50"),
        ("offset" = Option<i64>, Query, description = "0 or more, default 0"),
        ("level" = Option<String>, Query, description = "error, warning, info or debug"),
        ("source" = Option<String>, Query, description = "exact source, e.g. backend"),
        ("environment" = Option<String>, Query, description = "exact environment"),
        ("resolved" = Option<bool>, Query, description = "true or false"),
        ("q" = Option<String>, Query, description = "text contained in the message of the group's first event, its title (case-insensitive)"),
        ("since" = Option<String>, Query, description = "RFC 3339; last_seen at or after"),
        ("until" = Option<String>, Query, description = "RFC 3339; last_seen at or before"),
        ("sort" = Option<String>, Query, description = "last_seen (default), first_seen or count; a leading - means descending"),
        ("order" = Option<String>, Query, description = "desc (default) or asc"),
    ),
    responses((status = 200, description = "`{data: ErrorList, status}`; cached 2 min", body = super::openapi::ErrorList),
              (status = 304, description = "If-None-Match matched the ETag"), (status = 400, description = "A bad parameter, named in `details`", body = super::openapi::ErrorBody), (status = 401, description = "Missing or invalid key", body = super::openapi::ErrorBody), (status = 403, description = "The key lacks the permission", body = super::openapi::ErrorBody)),
    security(("api_key" = [])))]
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
#[utoipa::path(get, path = "/api/errors/{id}", tag = "errors",
    summary = "One error with its grouping (normalised message, frames, version) and latest occurrences",
    params(("id" = String, Path, description = "Error (group) id, a UUID")),
    responses((status = 200, description = "ErrorObject plus `grouping`, `events_stored`, `recent_events`", body = super::openapi::ErrorObject),
              (status = 304, description = "If-None-Match matched"), (status = 400, description = "A bad parameter, named in `details`", body = super::openapi::ErrorBody), (status = 404, description = "No such error in the caller's project", body = super::openapi::ErrorBody), (status = 401, description = "Missing or invalid key", body = super::openapi::ErrorBody), (status = 403, description = "The key lacks the permission", body = super::openapi::ErrorBody)),
    security(("api_key" = [])))]
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
#[utoipa::path(get, path = "/api/errors/{id}/events", tag = "errors",
    summary = "Every stored occurrence of an error, newest first",
    params(("id" = String, Path, description = "Error (group) id, a UUID"), ("limit" = Option<i64>, Query, description = "1-100, default 50"), ("offset" = Option<i64>, Query)),
    responses((status = 200, description = "`{events, total, page, limit, offset}`"), (status = 400, description = "A bad parameter, named in `details`", body = super::openapi::ErrorBody), (status = 404, description = "No such error in the caller's project", body = super::openapi::ErrorBody), (status = 401, description = "Missing or invalid key", body = super::openapi::ErrorBody), (status = 403, description = "The key lacks the permission", body = super::openapi::ErrorBody)),
    security(("api_key" = [])))]
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
#[utoipa::path(put, path = "/api/errors/{id}/resolve", tag = "errors",
    summary = "Mark an error resolved (idempotent; needs write)", params(("id" = String, Path, description = "Error (group) id, a UUID")),
    responses((status = 200, description = "`{data: {id, status: \"resolved\"}, status}`"), (status = 400, description = "A bad parameter, named in `details`", body = super::openapi::ErrorBody), (status = 404, description = "No such error in the caller's project", body = super::openapi::ErrorBody), (status = 401, description = "Missing or invalid key", body = super::openapi::ErrorBody), (status = 403, description = "The key lacks the permission", body = super::openapi::ErrorBody)),
    security(("api_key" = [])))]
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
#[utoipa::path(put, path = "/api/errors/{id}/reopen", tag = "errors",
    summary = "Reopen a resolved error (idempotent; needs write)", params(("id" = String, Path, description = "Error (group) id, a UUID")),
    responses((status = 200, description = "`{data: {id, status: \"unresolved\"}, status}`"), (status = 400, description = "A bad parameter, named in `details`", body = super::openapi::ErrorBody), (status = 404, description = "No such error in the caller's project", body = super::openapi::ErrorBody), (status = 401, description = "Missing or invalid key", body = super::openapi::ErrorBody), (status = 403, description = "The key lacks the permission", body = super::openapi::ErrorBody)),
    security(("api_key" = [])))]
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
#[utoipa::path(delete, path = "/api/errors/{id}", tag = "errors",
    summary = "Delete an error with its events and counts (needs write)", params(("id" = String, Path, description = "Error (group) id, a UUID")),
    responses((status = 204, description = "Deleted"), (status = 400, description = "A bad parameter, named in `details`", body = super::openapi::ErrorBody), (status = 404, description = "No such error in the caller's project", body = super::openapi::ErrorBody), (status = 401, description = "Missing or invalid key", body = super::openapi::ErrorBody), (status = 403, description = "The key lacks the permission", body = super::openapi::ErrorBody)),
    security(("api_key" = [])))]
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
