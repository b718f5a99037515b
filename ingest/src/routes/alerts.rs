//! Alert rules, incidents and deliveries. Reads need `read`, changes need `write`. A rule is the
//! contract's object plus `kind`, `filters`, `cooldown` and `severity`; its `condition` is computed
//! (a readable sentence), never taken from the client. Rules are evaluated by the alerter.

use super::params::{Params, RawQuery, parse_id};
use crate::{
    AppState,
    auth::Caller,
    error::ApiError,
    extract::JsonBody,
    queries::alerts::{self, DeliveryQuery, IncidentInput, RuleInput},
};
use alerter::rule::{self, Channel, RuleKind};
use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use faultline_shared::domain::{Level, Permission};
use serde_json::{Map, Value, json};
use std::str::FromStr;

fn ok(data: Value) -> Json<Value> {
    Json(json!({ "data": data, "status": "success" }))
}

fn created(data: Value) -> Response {
    (StatusCode::CREATED, ok(data)).into_response()
}

/// Collects every problem of a body, so one 400 names them all.
struct Fields<'a> {
    body: &'a Map<String, Value>,
    errors: Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn new(body: &'a Value) -> Result<Self, ApiError> {
        let body = body.as_object().ok_or_else(|| {
            ApiError::validation(
                "the body must be a JSON object",
                json!({ "body": "must be an object" }),
            )
        })?;
        Ok(Self {
            body,
            errors: Map::new(),
        })
    }

    fn fail(&mut self, field: &str, msg: impl Into<String>) {
        self.errors
            .entry(field.to_string())
            .or_insert(Value::String(msg.into()));
    }

    fn get(&self, field: &str) -> Option<&'a Value> {
        self.body.get(field).filter(|v| !v.is_null())
    }

    /// A string of 1..=max characters (trimmed); `None` when absent (and an error if `required`).
    fn text(&mut self, field: &str, max: usize, required: bool) -> Option<String> {
        match self.get(field) {
            None if required => {
                self.fail(field, "is required");
                None
            }
            None => None,
            Some(Value::String(s)) => {
                let s = s.trim();
                if s.is_empty() {
                    self.fail(field, "must not be empty");
                    None
                } else if s.chars().count() > max {
                    self.fail(field, format!("must be at most {max} characters"));
                    None
                } else {
                    Some(s.to_string())
                }
            }
            Some(_) => {
                self.fail(field, "must be a string");
                None
            }
        }
    }

    fn one_of(&mut self, field: &str, allowed: &[&str], default: &str) -> String {
        match self.text(field, 50, false) {
            None => default.to_string(),
            Some(v) if allowed.contains(&v.as_str()) => v,
            Some(_) => {
                self.fail(field, format!("must be one of {}", allowed.join(", ")));
                default.to_string()
            }
        }
    }

    fn duration(&mut self, field: &str, default: &str, required: bool) -> u64 {
        let raw = match self.get(field) {
            None if required => {
                self.fail(field, "is required, e.g. \"5m\"");
                return 0;
            }
            None => default.to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                self.fail(
                    field,
                    "must be a string such as \"30s\", \"5m\", \"1h\" or \"1d\"",
                );
                return 0;
            }
        };
        match rule::parse_duration(&raw) {
            Ok(d) if d.as_secs() == 0 && field == "time_window" => {
                self.fail(field, "must be longer than zero");
                0
            }
            Ok(d) => d.as_secs(),
            Err(e) => {
                self.fail(field, e);
                0
            }
        }
    }

    fn finish(self, what: &str) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = self.errors.keys().map(String::as_str).collect();
        Err(ApiError::validation(
            format!("invalid {what}: {}", names.join(", ")),
            Value::Object(self.errors),
        ))
    }
}

/// Validates a rule body (POST and PUT take the same, whole body).
fn parse_rule(body: &Value) -> Result<RuleInput, ApiError> {
    let mut f = Fields::new(body)?;
    let name = f.text("name", 200, true);
    let kind_names: Vec<&str> = RuleKind::ALL.iter().map(|k| k.as_str()).collect();
    let kind = f.one_of("kind", &kind_names, "threshold");
    let is_threshold = kind == "threshold";
    let threshold = match f.get("threshold") {
        None if is_threshold => {
            f.fail("threshold", "is required for a threshold rule");
            0
        }
        None => 0,
        Some(v) => match v.as_i64() {
            Some(n) if (0..=1_000_000_000).contains(&n) => n,
            _ => {
                f.fail("threshold", "must be a whole number from 0 to 1000000000");
                0
            }
        },
    };
    let window = f.duration("time_window", "5m", is_threshold);
    let cooldown = f.duration("cooldown", "10m", false);
    let severity = f.one_of("severity", &rule::SEVERITIES, "high");
    let (mut level, mut source, mut environment) = (None, None, None);
    match f.get("filters") {
        None => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let value = match v {
                    Value::Null => continue,
                    Value::String(s) if !s.trim().is_empty() && s.chars().count() <= 200 => {
                        s.trim().to_string()
                    }
                    _ => {
                        f.fail(&format!("filters.{k}"), "must be a non-empty string");
                        continue;
                    }
                };
                match k.as_str() {
                    "level" => {
                        if Level::ALL.iter().any(|l| l.as_str() == value) {
                            level = Some(value);
                        } else {
                            f.fail(
                                "filters.level",
                                "must be one of error, warning, info, debug",
                            );
                        }
                    }
                    "source" => source = Some(value),
                    "environment" => environment = Some(value),
                    other => f.fail(
                        &format!("filters.{other}"),
                        "unknown filter; known: level, source, environment",
                    ),
                }
            }
        }
        Some(_) => f.fail("filters", "must be an object"),
    }
    let mut notifications: Vec<String> = Vec::new();
    match f.get("notifications") {
        None => {}
        Some(Value::Array(items)) => {
            for item in items {
                match item.as_str().map(Channel::from_str) {
                    Some(Ok(c)) => {
                        if !notifications.iter().any(|n| n == c.as_str()) {
                            notifications.push(c.as_str().to_string());
                        }
                    }
                    Some(Err(())) => f.fail(
                        "notifications",
                        format!(
                            "unknown channel {}; known: email, slack, webhook",
                            item.as_str().unwrap_or_default()
                        ),
                    ),
                    None => f.fail("notifications", "must be an array of channel names"),
                }
            }
        }
        Some(_) => f.fail("notifications", "must be an array of channel names"),
    }
    let enabled = match f.get("enabled") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            f.fail("enabled", "must be true or false");
            true
        }
    };
    if let Some(c) = f.get("condition")
        && !c.is_string()
    {
        f.fail(
            "condition",
            "must be a string (it is computed from the rule)",
        );
    }
    f.finish("alert rule")?;
    Ok(RuleInput {
        name: name.unwrap_or_default(),
        kind,
        threshold,
        window_secs: window as i32,
        level,
        source,
        environment,
        cooldown_secs: cooldown as i32,
        severity,
        notifications,
        enabled,
    })
}

/// `GET /api/alerts/rules`
pub async fn list_rules(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Permission::Read)?;
    let rules = alerts::list_rules(&state.pool, caller.project_id).await?;
    Ok(ok(json!({
        "rules": rules.iter().map(alerts::RuleRow::to_json).collect::<Vec<_>>(),
    })))
}

/// `POST /api/alerts/rules`: 201 with the rule.
pub async fn create_rule(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    caller.require(Permission::Write)?;
    let input = parse_rule(&body)?;
    let row = alerts::insert_rule(&state.pool, caller.project_id, &input).await?;
    Ok(created(row.to_json()))
}

/// `PUT /api/alerts/rules/{id}`: replaces the rule (same body as POST).
pub async fn update_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    caller.require(Permission::Write)?;
    let id = parse_id(&id)?;
    let input = parse_rule(&body)?;
    let row = alerts::update_rule(&state.pool, caller.project_id, id, &input)
        .await?
        .ok_or(ApiError::NotFound("alert rule"))?;
    Ok(ok(row.to_json()))
}

/// `DELETE /api/alerts/rules/{id}`: 204. Its incidents and notifications stay (history).
pub async fn delete_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Permission::Write)?;
    let id = parse_id(&id)?;
    if alerts::delete_rule(&state.pool, caller.project_id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("alert rule"))
    }
}

/// `GET /api/alerts/incidents`: `status`, `severity`, `limit` (1-100, default 50), `offset`.
pub async fn list_incidents(
    State(state): State<AppState>,
    caller: Caller,
    raw: RawQuery,
) -> Result<Json<Value>, ApiError> {
    caller.require(Permission::Read)?;
    let mut p = Params::new(raw)?;
    let status = p.optional_one_of("status", &rule::INCIDENT_STATUSES);
    let severity = p.optional_one_of("severity", &rule::SEVERITIES);
    let limit = p.int("limit", 50, 1, 100);
    let offset = p.int("offset", 0, 0, 1_000_000);
    p.finish()?;
    let (rows, total) = alerts::list_incidents(
        &state.pool,
        caller.project_id,
        status,
        severity,
        limit,
        offset,
    )
    .await?;
    Ok(ok(json!({
        "incidents": rows.iter().map(alerts::IncidentRow::to_json).collect::<Vec<_>>(),
        "total": total,
        "limit": limit,
        "offset": offset,
    })))
}

/// Validates an incident body; `base` holds the current values for an update (absent fields keep
/// them), `None` for a creation.
fn parse_incident(body: &Value, base: Option<&IncidentInput>) -> Result<IncidentInput, ApiError> {
    let mut f = Fields::new(body)?;
    let title = f.text("title", 200, base.is_none());
    let severity = f.one_of(
        "severity",
        &rule::SEVERITIES,
        base.map_or("medium", |b| b.severity.as_str()),
    );
    let status = f.one_of(
        "status",
        &rule::INCIDENT_STATUSES,
        base.map_or("open", |b| b.status.as_str()),
    );
    // For these two an explicit null clears the value.
    let optional = |f: &mut Fields, field: &str, current: Option<&String>| {
        if f.body.get(field).is_some_and(Value::is_null) {
            None
        } else {
            f.text(field, 5000, false).or_else(|| current.cloned())
        }
    };
    let description = optional(
        &mut f,
        "description",
        base.and_then(|b| b.description.as_ref()),
    );
    let assigned_to = optional(
        &mut f,
        "assigned_to",
        base.and_then(|b| b.assigned_to.as_ref()),
    );
    f.finish("incident")?;
    Ok(IncidentInput {
        title: title
            .or_else(|| base.map(|b| b.title.clone()))
            .unwrap_or_default(),
        severity,
        status,
        description,
        assigned_to,
    })
}

/// `POST /api/alerts/incidents`: 201 with the incident.
pub async fn create_incident(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    caller.require(Permission::Write)?;
    let input = parse_incident(&body, None)?;
    let row = alerts::insert_incident(&state.pool, caller.project_id, &input).await?;
    Ok(created(row.to_json()))
}

/// `PUT /api/alerts/incidents/{id}`: changes the fields given (status, severity, assignee, ...).
pub async fn update_incident(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    caller.require(Permission::Write)?;
    let id = parse_id(&id)?;
    let current = alerts::get_incident(&state.pool, caller.project_id, id)
        .await?
        .ok_or(ApiError::NotFound("incident"))?;
    let base = IncidentInput {
        title: current.title,
        severity: current.severity,
        status: current.status,
        description: current.description,
        assigned_to: current.assigned_to,
    };
    let input = parse_incident(&body, Some(&base))?;
    match alerts::update_incident(&state.pool, caller.project_id, id, &input).await {
        Ok(Some(row)) => Ok(ok(row.to_json())),
        Ok(None) => Err(ApiError::NotFound("incident")),
        Err(sqlx::Error::Database(e))
            if e.constraint() == Some("incidents_one_unresolved_per_rule") =>
        {
            Err(ApiError::validation(
                "the rule of this incident already has another unresolved incident",
                json!({ "status": "cannot reopen while the rule has another unresolved incident" }),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /api/alerts/deliveries`: every notification with its attempts; filters `rule_id`,
/// `incident_id`, `channel`, `status`, and `limit`/`offset`.
pub async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    raw: RawQuery,
) -> Result<Json<Value>, ApiError> {
    caller.require(Permission::Read)?;
    let mut p = Params::new(raw)?;
    let uuid = |p: &mut Params, name: &str| {
        let raw = p.text(name, 100)?;
        match uuid::Uuid::parse_str(&raw) {
            Ok(id) => Some(id),
            Err(_) => {
                p.fail(name, "must be a UUID");
                None
            }
        }
    };
    let rule_id = uuid(&mut p, "rule_id");
    let incident_id = uuid(&mut p, "incident_id");
    let channel = p.optional_one_of("channel", &["email", "slack", "webhook"]);
    let status = p.optional_one_of("status", &["pending", "sending", "delivered", "failed"]);
    let limit = p.int("limit", 50, 1, 100);
    let offset = p.int("offset", 0, 0, 1_000_000);
    p.finish()?;
    let q = DeliveryQuery {
        rule_id,
        incident_id,
        channel: channel.map(str::to_string),
        status: status.map(str::to_string),
        limit,
        offset,
    };
    let rows = alerts::list_deliveries(&state.pool, caller.project_id, &q).await?;
    let total = rows.first().map_or(0, |r| r.total);
    Ok(ok(json!({
        "deliveries": rows.iter().map(alerts::DeliveryRow::to_json).collect::<Vec<_>>(),
        "total": total,
        "limit": limit,
        "offset": offset,
    })))
}
