//! `/api/settings/integrations`: the notification channels of the caller's project (email, Slack,
//! webhook). Reading needs `read`; configuring and test sends need `admin`. Secrets (the webhook's
//! signing secret, the SMTP password, the Slack webhook URL, which is a credential) are stored but
//! never answered back: the response says whether each is set. A PUT that omits a secret keeps the
//! stored one, so a dashboard can edit recipients without re-entering the password.

use crate::{AppState, auth::Caller, error::ApiError, extract::JsonBody, queries::alerts};
use alerter::{Delivery, DeliveryConfig, rule::Channel};
use axum::{
    Json,
    extract::{Path, State},
};
use chrono::{DateTime, Utc};
use faultline_shared::{config::AlerterSettings, domain::Permission};
use serde_json::{Map, Value, json};
use std::{str::FromStr, sync::OnceLock};

/// Consecutive failed deliveries after which a channel shows as unhealthy.
const UNHEALTHY_AFTER: usize = 3;

fn ok(data: Value) -> Json<Value> {
    Json(json!({ "data": data, "status": "success" }))
}

fn channel(name: &str) -> Result<Channel, ApiError> {
    Channel::from_str(name).map_err(|()| ApiError::NotFound("integration"))
}

/// The sender of test notifications: the alerter's delivery settings (timeouts, the SSRF guard
/// `ALERTER_ALLOW_PRIVATE_TARGETS`), read from the environment once.
fn delivery() -> Result<&'static Delivery, ApiError> {
    static DELIVERY: OnceLock<Delivery> = OnceLock::new();
    if let Some(d) = DELIVERY.get() {
        return Ok(d);
    }
    let settings = AlerterSettings::from_env().map_err(|e| ApiError::Internal(e.into()))?;
    alerter::install_crypto();
    Ok(DELIVERY.get_or_init(|| Delivery::new(DeliveryConfig::from_settings(&settings))))
}

/// The stored config without its secrets.
fn redact(channel: Channel, config: &Value) -> Value {
    let s = |k: &str| config.get(k).cloned().unwrap_or(Value::Null);
    let set = |k: &str| {
        config
            .get(k)
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())
    };
    match channel {
        Channel::Webhook => json!({
            "url": s("url"),
            "secret_set": set("secret"),
        }),
        Channel::Slack => {
            // Only scheme and host: the path of a Slack webhook URL is the credential.
            let shown = config.get("url").and_then(Value::as_str).and_then(|u| {
                let (scheme, rest) = u.split_once("://")?;
                let host = rest.split(['/', '?', '#']).next()?;
                let host = host.rsplit('@').next()?;
                Some(format!("{scheme}://{host}/…"))
            });
            json!({
                "webhook_url": shown,
                "webhook_url_set": set("url"),
                "channel": s("channel"),
            })
        }
        Channel::Email => json!({
            "smtp_server": s("host"),
            "port": s("port"),
            "tls": s("tls"),
            "username": s("username"),
            "password_set": set("password"),
            "from_email": s("from"),
            "recipients": s("recipients"),
        }),
    }
}

struct Health {
    consecutive_failures: usize,
    last_success_at: Option<DateTime<Utc>>,
    last_failure_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    attempts: usize,
}

fn health(recent: &[&alerts::RecentAttempt]) -> Health {
    Health {
        consecutive_failures: recent.iter().take_while(|a| !a.success).count(),
        last_success_at: recent.iter().find(|a| a.success).map(|a| a.started_at),
        last_failure_at: recent.iter().find(|a| !a.success).map(|a| a.started_at),
        last_error: recent
            .iter()
            .find(|a| !a.success)
            .and_then(|a| a.error.clone()),
        attempts: recent.len(),
    }
}

fn to_json(
    channel: Channel,
    row: Option<&alerts::IntegrationRow>,
    recent: &[&alerts::RecentAttempt],
) -> Value {
    let h = health(recent);
    let Some(row) = row else {
        return json!({
            "name": channel.as_str(),
            "status": "not_configured",
            "enabled": false,
            "config": null,
            "last_test": null,
        });
    };
    let status = if !row.enabled {
        "disabled"
    } else if h.consecutive_failures >= UNHEALTHY_AFTER {
        "unhealthy"
    } else if recent.first().is_some_and(|a| a.success)
        || (h.attempts == 0 && row.last_test_ok == Some(true))
    {
        "connected"
    } else {
        "configured"
    };
    json!({
        "name": channel.as_str(),
        "status": status,
        "enabled": row.enabled,
        "config": redact(channel, &row.config),
        "last_test": row.last_test,
        "last_test_ok": row.last_test_ok,
        "last_test_error": row.last_test_error,
        "health": {
            "consecutive_failures": h.consecutive_failures,
            "last_success_at": h.last_success_at,
            "last_failure_at": h.last_failure_at,
            "last_error": h.last_error,
        },
        "updated_at": row.updated_at,
    })
}

/// `GET /api/settings/integrations`: every channel, configured or not, with its status
/// (not_configured, disabled, configured, connected, unhealthy) judged by recent deliveries.
pub async fn list_integrations(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Permission::Read)?;
    let rows = alerts::list_integrations(&state.pool, caller.project_id).await?;
    let recent = alerts::recent_attempts(&state.pool, caller.project_id, 10).await?;
    let list: Vec<Value> = Channel::ALL
        .iter()
        .map(|c| {
            let row = rows.iter().find(|r| r.name == c.as_str());
            let mine: Vec<&alerts::RecentAttempt> =
                recent.iter().filter(|a| a.channel == c.as_str()).collect();
            to_json(*c, row, &mine)
        })
        .collect();
    Ok(ok(json!({ "integrations": list })))
}

/// `PUT /api/settings/integrations/{name}` with `{"config": {...}, "enabled": true}`.
pub async fn put_integration(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    caller.require(Permission::Admin)?;
    let channel = channel(&name)?;
    let Some(obj) = body.as_object() else {
        return Err(ApiError::validation(
            "the body must be a JSON object",
            json!({ "body": "must be an object with config and enabled" }),
        ));
    };
    let mut errors = Map::new();
    let enabled = match obj.get("enabled") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            errors.insert("enabled".into(), json!("must be true or false"));
            true
        }
    };
    let mut config = match obj.get("config") {
        Some(Value::Object(m)) => m.clone(),
        _ => {
            errors.insert("config".into(), json!("is required and must be an object"));
            Map::new()
        }
    };
    // Omitted (or empty) secrets keep their stored values.
    let existing =
        alerts::get_integration(&state.pool, caller.project_id, channel.as_str()).await?;
    if let Some(stored) = existing.as_ref().and_then(|e| e.config.as_object()) {
        let secret_keys: &[&str] = match channel {
            Channel::Webhook => &["secret"],
            Channel::Slack => &["url"],
            Channel::Email => &["password"],
        };
        for k in secret_keys {
            let given = config
                .get(*k)
                .or_else(|| (*k == "url").then(|| config.get("webhook_url")).flatten())
                .and_then(Value::as_str)
                .is_some_and(|v| !v.is_empty());
            if !given && let Some(v) = stored.get(*k) {
                config.remove("webhook_url");
                config.insert((*k).to_string(), v.clone());
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(
            "invalid integration",
            Value::Object(errors),
        ));
    }
    let canonical =
        alerter::channels::validate_config(channel, &Value::Object(config)).map_err(|details| {
            ApiError::validation("invalid integration config", Value::Object(details))
        })?;
    let row = alerts::upsert_integration(
        &state.pool,
        caller.project_id,
        channel.as_str(),
        &canonical,
        enabled,
    )
    .await?;
    Ok(ok(to_json(channel, Some(&row), &[])))
}

/// `POST /api/settings/integrations/{name}/test`: sends a real test notification with the stored
/// config and reports `success` or the delivery error (also kept as `last_test_*`).
pub async fn test_integration(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Permission::Admin)?;
    let channel = channel(&name)?;
    let row = alerts::get_integration(&state.pool, caller.project_id, channel.as_str())
        .await?
        .ok_or(ApiError::NotFound("integration"))?;
    let result = delivery()?.send_test(channel, &row.config).await;
    let (success, error, http_status) = match &result {
        Ok(sent) => (true, None, sent.http_status),
        Err(e) => (false, Some(e.message.clone()), e.http_status),
    };
    alerts::record_test(
        &state.pool,
        caller.project_id,
        channel.as_str(),
        success,
        error.as_deref(),
    )
    .await?;
    Ok(ok(json!({
        "name": channel.as_str(),
        "success": success,
        "error": error,
        "http_status": http_status,
        "tested_at": Utc::now(),
    })))
}
