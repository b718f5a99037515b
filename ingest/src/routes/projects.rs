//! `/api/projects`: creating a project (with its first admin key, shown once) and listing the
//! projects the calling key can see (each key belongs to exactly one project, so a key sees one),
//! and the project's usage: accepted and refused events per hour.

use crate::{
    AppState,
    auth::Caller,
    error::ApiError,
    extract::JsonBody,
    queries::access::{self, CreateProjectError},
    routes::settings::name_field,
};
use axum::{
    Json,
    extract::{Query, State},
    http::StatusCode,
    response::IntoResponse,
};
use faultline_shared::domain::{ApiKey, Permission};
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// `POST /api/projects` (admin): `{"name"}` → the project and its first admin key.
pub async fn create_project(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Permission::Admin)?;
    let Value::Object(body) = body else {
        return Err(ApiError::validation(
            "the request body must be a JSON object",
            json!({"body": "must be a JSON object"}),
        ));
    };
    let mut errors = Map::new();
    let name = name_field(&body, "name", &mut errors);
    let Some(name) = name.filter(|_| errors.is_empty()) else {
        return Err(ApiError::validation(
            "the request is invalid",
            Value::Object(errors),
        ));
    };
    let key = ApiKey::generate();
    let (project, key_row) = match access::create_project(&state.pool, &name, &key).await {
        Ok(created) => created,
        Err(CreateProjectError::Duplicate) => {
            return Err(ApiError::Conflict {
                message: "a project with this name exists".into(),
                details: json!({"name": "already taken"}),
            });
        }
        Err(CreateProjectError::Db(e)) => return Err(e.into()),
    };
    tracing::info!(project = %project.id, created_by = %caller.key_id, "Project created.");
    let mut data = project.to_json();
    data["api_key"] = Value::String(key.expose().to_string());
    data["api_key_id"] = json!(key_row.id);
    Ok((
        StatusCode::CREATED,
        Json(json!({"data": data, "status": "success"})),
    ))
}

/// `GET /api/projects` (read): the caller's project.
pub async fn list_projects(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Permission::Read)?;
    let projects: Vec<Value> = access::find_project(&state.pool, caller.project_id)
        .await?
        .iter()
        .map(access::ProjectRow::to_json)
        .collect();
    Ok(Json(
        json!({"data": {"projects": projects}, "status": "success"}),
    ))
}

/// `GET /api/usage?hours=24` (read): the project's accepted and refused events per hour (1–168
/// hours, newest first), refusals by reason, and the same per key.
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Permission::Read)?;
    let hours = match query.get("hours").map(|h| h.trim().parse::<u32>()) {
        None => 24,
        Some(Ok(h)) if (1..=168).contains(&h) => h,
        Some(_) => {
            return Err(ApiError::validation(
                "invalid query parameter",
                json!({"hours": "must be an integer from 1 to 168"}),
            ));
        }
    };
    let report = state
        .usage
        .report(caller.project_id, hours)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "Usage unavailable (Redis).");
            ApiError::ServiceUnavailable {
                retry_after_secs: 5,
            }
        })?;
    Ok(Json(json!({"data": report, "status": "success"})))
}
