//! `POST /api/errors` and `POST /api/errors/batch`: validate, stamp, publish, and answer 202 only
//! after the broker confirmed.

use crate::{
    AppState,
    auth::Caller,
    error::ApiError,
    extract::EventBody,
    usage::IngestCounts,
    validate::{NewEvent, validate_batch, validate_event},
};
use axum::{
    Extension, Json,
    extract::{ConnectInfo, FromRequestParts, State},
    http::{HeaderMap, StatusCode, header, request::Parts},
    response::IntoResponse,
};
use chrono::Utc;
use faultline_shared::domain::{ErrorEvent, Permission};
use serde_json::{Value, json};
use std::net::SocketAddr;
use uuid::Uuid;

/// What ingest knows about the request itself, stamped on every event it carries.
pub(super) struct Origin {
    pub(super) ip: Option<String>,
    pub(super) user_agent: Option<String>,
    /// The TCP connection the request came on (its peer address): one client's requests in turn.
    pub(super) connection: Option<SocketAddr>,
}

/// Read from the request's headers in place (a `HeaderMap` argument would copy them all).
impl FromRequestParts<AppState> for Origin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        Ok(origin(state, &parts.headers, peer))
    }
}

pub(super) fn origin(state: &AppState, headers: &HeaderMap, peer: Option<SocketAddr>) -> Origin {
    let forwarded = state
        .settings
        .trust_proxy
        .then(|| {
            headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(|v| v.trim().to_string())
                .filter(|v| v.parse::<std::net::IpAddr>().is_ok())
        })
        .flatten();
    Origin {
        ip: forwarded.or_else(|| peer.map(|p| p.ip().to_string())),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(512).collect()),
        connection: peer,
    }
}

fn stamp(event: NewEvent, project_id: Uuid, origin: &Origin) -> ErrorEvent {
    ErrorEvent {
        event_id: event.event_id.unwrap_or_else(Uuid::now_v7),
        project_id,
        received_at: Utc::now(),
        level: event.level,
        message: event.message,
        source: event.source,
        environment: event.environment,
        stack_trace: event.stack_trace,
        context: event.context,
        url: event.url,
        user_agent: origin.user_agent.clone(),
        ip_address: origin.ip.clone(),
        release: event.release,
        fingerprint: event.fingerprint,
        frames: None,
        extra: None,
    }
}

fn serialise(event: &ErrorEvent) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(event).map_err(|e| ApiError::Internal(e.into()))
}

fn accepted(count: usize) {
    metrics::counter!("ingest_events_accepted_total").increment(count as u64);
}

fn rejected(reason: &'static str, count: usize) {
    metrics::counter!("ingest_events_rejected_total", "reason" => reason).increment(count as u64);
}

pub async fn create_error(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    EventBody {
        json: mut body,
        permit,
    }: EventBody,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Permission::Ingest)?;
    let event = validate_event(&mut body).map_err(|details| {
        rejected("validation", 1);
        ApiError::validation("the event is invalid", Value::Object(details))
    })?;
    drop(body);
    let mut event = stamp(event, caller.project_id, &origin);
    state.scrubber.scrub_event(&mut event);
    let id = event.event_id;
    let payload = serialise(&event)?;
    drop(event);
    let published = state
        .publisher
        .publish_from(origin.connection, vec![payload])
        .await;
    published.map_err(|e| {
        rejected("queue_unavailable", 1);
        tracing::debug!(error = %e, "Event not accepted: broker unavailable.");
        ApiError::QueueUnavailable {
            retry_after_secs: 5,
        }
    })?;
    drop(permit);
    accepted(1);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"data": {"id": id, "status": "queued"}, "status": "success"})),
    ))
}

pub async fn create_errors_batch(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    EventBody {
        json: mut body,
        permit,
    }: EventBody,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Permission::Ingest)?;
    let checked = validate_batch(&mut body, state.settings.batch_max_events)?;
    let mut results = Vec::with_capacity(checked.len());
    let mut payloads = Vec::with_capacity(checked.len());
    for (index, checked) in checked.into_iter().enumerate() {
        match checked {
            Ok(event) => {
                let mut event = stamp(event, caller.project_id, &origin);
                state.scrubber.scrub_event(&mut event);
                payloads.push(serialise(&event)?);
                results.push(json!({"index": index, "status": "accepted", "id": event.event_id}));
            }
            Err(details) => results.push(json!({
                "index": index,
                "status": "rejected",
                "error": "the event is invalid",
                "code": "validation_error",
                "details": details,
            })),
        }
    }
    // The parsed body is the largest thing the request holds (a JSON tree several times the
    // body's size); free it before waiting for the broker's confirm rather than after.
    drop(body);
    let accepted_count = payloads.len();
    let rejected_count = results.len() - accepted_count;
    rejected("validation", rejected_count);
    if accepted_count == 0 {
        return Err(ApiError::validation(
            "every event in the batch is invalid",
            json!({"items": results}),
        ));
    }
    let published = state
        .publisher
        .publish_from(origin.connection, payloads)
        .await;
    published.map_err(|e| {
        rejected("queue_unavailable", accepted_count);
        tracing::debug!(error = %e, events = accepted_count, "Batch not accepted: broker unavailable.");
        ApiError::QueueUnavailable {
            retry_after_secs: 5,
        }
    })?;
    drop(permit);
    accepted(accepted_count);
    Ok((
        StatusCode::ACCEPTED,
        Extension(IngestCounts {
            accepted: accepted_count as u64,
            invalid: rejected_count as u64,
        }),
        Json(json!({
            "data": {"accepted": accepted_count, "rejected": rejected_count, "items": results},
            "status": "success"
        })),
    ))
}
