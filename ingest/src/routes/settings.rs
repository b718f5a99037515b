//! `/api/settings/api-keys` and `/api/settings/team`: the project's keys (the secret shown once,
//! only its sha256 stored) and its people with the contract's roles.
//!
//! A key never mints more than it has: every permission of a new key must be allowed to the
//! calling key, a new key never outlives the caller's expiry, and only admin keys set rate limits.

use crate::{
    AppState,
    auth::Caller,
    error::ApiError,
    extract::JsonBody,
    queries::access::{self, InviteError, NewKey},
};
use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
};
use chrono::{DateTime, Utc};
use faultline_shared::domain::{ApiKey, Permission, Permissions};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Longest key name, member name and project name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// The contract's roles, most powerful first.
pub const ROLES: [&str; 4] = ["owner", "admin", "developer", "viewer"];
/// Largest per-key rate limit (requests per window).
const MAX_RATE_LIMIT: u64 = 1_000_000;

fn success(status: StatusCode, data: Value) -> impl IntoResponse {
    (status, Json(json!({"data": data, "status": "success"})))
}

fn body_object(body: Value) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::validation(
            "the request body must be a JSON object",
            json!({"body": "must be a JSON object"}),
        )),
    }
}

/// A required, trimmed, non-empty name without control characters.
pub fn name_field(
    body: &Map<String, Value>,
    field: &str,
    errors: &mut Map<String, Value>,
) -> Option<String> {
    match body.get(field) {
        None | Some(Value::Null) => {
            errors.insert(field.into(), "is required".into());
            None
        }
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() {
                errors.insert(field.into(), "must not be empty".into());
                None
            } else if s.chars().count() > MAX_NAME_CHARS {
                errors.insert(
                    field.into(),
                    format!("must be at most {MAX_NAME_CHARS} characters").into(),
                );
                None
            } else if s.chars().any(char::is_control) {
                errors.insert(field.into(), "must not contain control characters".into());
                None
            } else {
                Some(s.to_string())
            }
        }
        Some(_) => {
            errors.insert(field.into(), "must be a string".into());
            None
        }
    }
}

fn finish(errors: Map<String, Value>) -> Result<(), ApiError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(
            "the request is invalid",
            Value::Object(errors),
        ))
    }
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw.trim())
        .map_err(|_| ApiError::validation("invalid id", json!({"id": "must be a UUID"})))
}

/// `GET /api/settings/api-keys` (admin): the project's keys, never their secrets.
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Permission::Admin)?;
    let keys = access::list_keys(&state.pool, caller.project_id).await?;
    let keys: Vec<Value> = keys.iter().map(access::KeyRow::to_json).collect();
    Ok(success(StatusCode::OK, json!({ "api_keys": keys })))
}

/// The validated body of `POST /api/settings/api-keys`.
struct KeyRequest {
    name: String,
    permissions: Permissions,
    requested: Vec<Permission>,
    expires_at: Option<DateTime<Utc>>,
    rate_limits: BTreeMap<String, u32>,
}

fn parse_key_request(body: Value) -> Result<KeyRequest, ApiError> {
    let body = body_object(body)?;
    let mut errors = Map::new();
    let name = name_field(&body, "name", &mut errors);
    let mut requested = Vec::new();
    match body.get("permissions") {
        Some(Value::Array(items)) if !items.is_empty() => {
            for item in items {
                match item.as_str().map(str::parse::<Permission>) {
                    Some(Ok(p)) => requested.push(p),
                    _ => {
                        errors.insert(
                            "permissions".into(),
                            "each must be one of ingest, read, write, admin".into(),
                        );
                        break;
                    }
                }
            }
        }
        None | Some(Value::Null) => {
            errors.insert("permissions".into(), "is required".into());
        }
        Some(_) => {
            errors.insert(
                "permissions".into(),
                "must be a non-empty array of ingest, read, write, admin".into(),
            );
        }
    }
    let expires_at = match body.get("expires_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s.trim()) {
            Ok(at) if at.with_timezone(&Utc) > Utc::now() => Some(at.with_timezone(&Utc)),
            Ok(_) => {
                errors.insert("expires_at".into(), "must be in the future".into());
                None
            }
            Err(_) => {
                errors.insert(
                    "expires_at".into(),
                    "must be an RFC 3339 timestamp, e.g. 2030-12-31T23:59:59Z".into(),
                );
                None
            }
        },
        Some(_) => {
            errors.insert("expires_at".into(), "must be a string".into());
            None
        }
    };
    let mut rate_limits = BTreeMap::new();
    match body.get("rate_limits") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (scope, limit) in map {
                let known = ["ingest", "analytics", "other"].contains(&scope.as_str());
                match limit.as_u64() {
                    Some(n) if known && (1..=MAX_RATE_LIMIT).contains(&n) => {
                        rate_limits.insert(scope.clone(), n as u32);
                    }
                    _ => {
                        errors.insert(
                            format!("rate_limits.{scope}"),
                            format!(
                                "scopes are ingest, analytics, other; limits 1 to {MAX_RATE_LIMIT}"
                            )
                            .into(),
                        );
                    }
                }
            }
        }
        Some(_) => {
            errors.insert(
                "rate_limits".into(),
                "must be an object of scope → requests per window".into(),
            );
        }
    }
    finish(errors)?;
    Ok(KeyRequest {
        name: name.unwrap_or_default(),
        permissions: Permissions::new(requested.clone()),
        requested,
        expires_at,
        rate_limits,
    })
}

/// `POST /api/settings/api-keys` (write): a new key of the caller's project, shown once.
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Permission::Write)?;
    let mut request = parse_key_request(body)?;
    // Never more than the caller has.
    for wanted in &request.requested {
        caller.require(*wanted)?;
    }
    if !request.rate_limits.is_empty() {
        caller.require(Permission::Admin)?;
    }
    if let Some(limit) = caller.key.expires_at {
        match request.expires_at {
            Some(at) if at > limit => {
                return Err(ApiError::validation(
                    "the new key would outlive the key creating it",
                    json!({"expires_at": format!("must not be later than {}", limit.to_rfc3339())}),
                ));
            }
            None => request.expires_at = Some(limit),
            Some(_) => {}
        }
    }
    let key = ApiKey::generate();
    let row = access::insert_key(
        &state.pool,
        NewKey {
            project: caller.project_id,
            name: &request.name,
            key: &key,
            permissions: &request.permissions,
            expires_at: request.expires_at,
            rate_limits: &request.rate_limits,
        },
    )
    .await?;
    tracing::info!(key_id = %row.id, created_by = %caller.key_id, permissions = ?row.permissions, "API key created.");
    let mut data = row.to_json();
    data["api_key"] = Value::String(key.expose().to_string());
    // The key is also a Sentry DSN (for the host this request reached).
    if let Some(base) = crate::sentry::auth::base_url_of(&headers, state.settings.trust_proxy) {
        data["dsn"] = Value::String(crate::sentry::auth::dsn(
            &base,
            key.expose(),
            row.project_id,
        ));
    }
    Ok(success(StatusCode::CREATED, data))
}

/// `DELETE /api/settings/api-keys/{id}` (admin): revokes the key; it stops working on every
/// instance within the key cache TTL. Another project's key answers 404.
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Permission::Admin)?;
    let id = parse_id(&raw_id)?;
    if !access::revoke_key(&state.pool, caller.project_id, id).await? {
        return Err(ApiError::NotFound("API key"));
    }
    state.keys.forget(id);
    tracing::info!(key_id = %id, revoked_by = %caller.key_id, "API key revoked.");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/settings/team` (read).
pub async fn list_team(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Permission::Read)?;
    let members = access::list_members(&state.pool, caller.project_id).await?;
    let members: Vec<Value> = members.iter().map(access::MemberRow::to_json).collect();
    Ok(success(StatusCode::OK, json!({ "members": members })))
}

/// A plausible e-mail address: one `@`, a non-empty local part, a dotted domain, no spaces,
/// at most 254 characters. Deliverability is the invitation mail's business.
pub fn is_plausible_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= 254
        && !local.is_empty()
        && local.len() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && email
            .chars()
            .all(|c| c.is_ascii_graphic() || (!c.is_ascii() && !c.is_whitespace()))
}

/// `POST /api/settings/team/invite` (admin): `{"email", "role", "name"?}`; 409 when the address
/// is already a member of the project.
pub async fn invite(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Permission::Admin)?;
    let body = body_object(body)?;
    let mut errors = Map::new();
    let email = match body.get("email") {
        Some(Value::String(s)) if is_plausible_email(s.trim()) => Some(s.trim().to_string()),
        None | Some(Value::Null) => {
            errors.insert("email".into(), "is required".into());
            None
        }
        Some(_) => {
            errors.insert("email".into(), "must be a valid e-mail address".into());
            None
        }
    };
    let role = match body.get("role") {
        Some(Value::String(s)) if ROLES.contains(&s.trim()) => Some(s.trim().to_string()),
        None | Some(Value::Null) => {
            errors.insert("role".into(), "is required".into());
            None
        }
        Some(_) => {
            errors.insert(
                "role".into(),
                format!("must be one of {}", ROLES.join(", ")).into(),
            );
            None
        }
    };
    let name = if body.get("name").is_some_and(|v| !v.is_null()) {
        name_field(&body, "name", &mut errors)
    } else {
        None
    };
    finish(errors)?;
    let (email, role) = (email.unwrap_or_default(), role.unwrap_or_default());
    let name = name.unwrap_or_else(|| email.split('@').next().unwrap_or_default().to_string());
    match access::insert_member(
        &state.pool,
        caller.project_id,
        &name,
        &email,
        &role,
        caller.key_id,
    )
    .await
    {
        Ok(member) => Ok(success(StatusCode::CREATED, member.to_json())),
        Err(InviteError::Duplicate) => Err(ApiError::Conflict {
            message: "this e-mail address is already a member of the project".into(),
            details: json!({"email": "already a member of this project"}),
        }),
        Err(InviteError::Db(e)) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::is_plausible_email;

    #[test]
    fn plausible_emails_pass_and_junk_does_not() {
        for ok in ["a@b.co", "first.last+tag@mail.example.org", "ü@exämple.de"] {
            assert!(is_plausible_email(ok), "{ok}");
        }
        for bad in [
            "", "plain", "@b.co", "a@", "a@b", "a@@b.co", "a b@c.de", "a@.b.co", "a@b..co",
            "a@b.co.",
        ] {
            assert!(!is_plausible_email(bad), "{bad}");
        }
    }
}
