//! `/api/projects`: creating a project (with its first admin key, shown once) and listing the
//! projects the calling key can see. Each key belongs to exactly one project, so a key sees one.

use crate::{
    AppState,
    auth::Caller,
    error::ApiError,
    extract::JsonBody,
    queries::access::{self, CreateProjectError},
    routes::settings::name_field,
};
use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use faultline_shared::domain::{ApiKey, Permission};
use serde_json::{Map, Value, json};

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
