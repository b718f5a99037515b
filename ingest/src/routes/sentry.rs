//! The Sentry SDKs' endpoints: `POST /api/{project}/envelope/` and the legacy
//! `POST /api/{project}/store/`. Events are mapped to our model ([`crate::sentry::event`]) and
//! published like native ones, so the answer (`200 {"id": ...}`, as Sentry answers) is given only
//! after the broker confirmed; with the broker down the answer is 503 with `Retry-After`.

use super::events::{Origin, origin};
use crate::{
    AppState,
    error::ApiError,
    extract::BodyPermit,
    ratelimit::{Decision, Scope},
    sentry::{
        auth::{key_from_auth_header, key_from_dsn, key_from_query, parse_project},
        body::{Encoding, decode_blocking},
        envelope,
        event::{Received, map_event},
    },
    usage::{IngestCounts, reason_of},
};
use axum::{
    Json,
    body::Body,
    extract::{ConnectInfo, Path, RawQuery, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use chrono::Utc;
use faultline_shared::domain::{ApiKey, Permission};
use serde_json::{Value, json};
use std::net::SocketAddr;
use uuid::Uuid;

/// What the request says about itself before its body is read: project, key, origin.
struct Preamble {
    project: Uuid,
    key: Option<String>,
    /// An `X-API-Key` request was counted by the rate-limit middleware already.
    counted: bool,
    origin: Origin,
}

fn preamble(
    state: &AppState,
    project: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Preamble, ApiError> {
    let project = parse_project(project).ok_or(ApiError::NotFound("project"))?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let key = header("x-sentry-auth")
        .and_then(key_from_auth_header)
        .or_else(|| {
            header("authorization")
                .filter(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case("sentry "))
                .and_then(key_from_auth_header)
        })
        .or_else(|| query.and_then(key_from_query))
        .or_else(|| header("x-api-key").map(str::to_string));
    Ok(Preamble {
        project,
        key,
        counted: headers.contains_key("x-api-key"),
        origin: origin(state, headers, Some(peer)),
    })
}

/// An authenticated Sentry request: whose key, and its rate-limit decision (for the headers).
struct Authed {
    key_id: Uuid,
    decision: Option<Decision>,
}

/// Checks the key (known, active, allowed to ingest, of the project in the path) and counts the
/// request against its ingest rate limit, as the rate-limit middleware does for `X-API-Key`
/// requests (it leaves Sentry requests to us: their key may be in the body). The decision's
/// `X-RateLimit-*` headers go on the answer.
async fn authenticate(
    state: &AppState,
    req: &Preamble,
    raw: Option<&str>,
) -> Result<Authed, ApiError> {
    let raw = raw.ok_or(ApiError::Unauthorized(
        "missing Sentry key (X-Sentry-Auth header, sentry_key parameter or envelope dsn)",
    ))?;
    let key = ApiKey::parse(raw).ok_or(ApiError::Unauthorized("invalid API key"))?;
    let record = state
        .keys
        .lookup(key.hash())
        .await?
        .filter(|r| r.is_active(Utc::now()))
        .ok_or(ApiError::Unauthorized("invalid API key"))?;
    if !record.permissions.allows(Permission::Ingest) {
        return Err(ApiError::PermissionDenied {
            required: Permission::Ingest.as_str(),
        });
    }
    if record.project_id != req.project {
        return Err(ApiError::WrongProject);
    }
    if req.counted {
        return Ok(Authed {
            key_id: record.id,
            decision: None,
        });
    }
    state.key_usage.touch(record.id);
    let decision = state.limiter.check(&record, Scope::Ingest).await;
    if let Some(d) = decision.filter(|d| !d.allowed) {
        metrics::counter!("rate_limit_decisions_total", "scope" => "ingest", "outcome" => "throttled")
            .increment(1);
        metrics::counter!("ingest_events_rejected_total", "reason" => "rate_limited").increment(1);
        state
            .usage
            .record(record.project_id, record.id, "refused:rate_limited", 1);
        return Err(ApiError::Throttled {
            wait_seconds: d.wait_seconds.max(1),
        });
    }
    if decision.is_some() {
        metrics::counter!("rate_limit_decisions_total", "scope" => "ingest", "outcome" => "allowed")
            .increment(1);
    }
    Ok(Authed {
        key_id: record.id,
        decision,
    })
}

/// What a handler did once past authentication: the id to answer with, and how many events it
/// published.
type Outcome = Result<(Option<Uuid>, u64), ApiError>;

/// Records the request in `GET /api/usage` (as the rate-limit middleware does for `X-API-Key`
/// requests, which it counts itself from the `IngestCounts` put on the answer) and answers.
fn finish(
    state: &AppState,
    req: &Preamble,
    authed: Option<Authed>,
    outcome: Outcome,
) -> Result<Response, ApiError> {
    if let Some(a) = authed.as_ref().filter(|_| !req.counted) {
        match &outcome {
            Ok((_, 0)) => {}
            Ok((_, n)) => state.usage.record(req.project, a.key_id, "accepted", *n),
            Err(e) => {
                if let Some(reason) = reason_of(e.status_code()) {
                    let outcome = format!("refused:{reason}");
                    state.usage.record(req.project, a.key_id, &outcome, 1);
                }
            }
        }
    }
    let (id, accepted) = outcome?;
    let mut response = answer(id, authed.and_then(|a| a.decision));
    response.extensions_mut().insert(IngestCounts {
        accepted,
        invalid: 0,
    });
    Ok(response)
}

/// The body, decoded, within `max_body_bytes` both before and after decoding, with its share of
/// the body budget, to be kept until its events are confirmed. The raw body is read under the
/// budget like a native event body (`extract::read_body_within`: its declared size reserved before
/// it is read); once decoded, that share is given back and the decoded size reserved instead, as
/// the decoded body is what is then held (never both at once: a request holding room while
/// waiting for more could wait forever on others doing the same).
async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, BodyPermit), ApiError> {
    let limit = state.settings.max_body_bytes;
    let encoding = Encoding::from_header(
        headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok()),
    )?;
    metrics::counter!("ingest_sentry_requests_total", "encoding" => encoding.as_str()).increment(1);
    let declared = crate::extract::declared_length(headers, limit)?;
    let (raw, raw_permit) = crate::extract::read_body_within(
        &state.body_budget,
        body,
        declared.unwrap_or(limit),
        limit,
        state.settings.http.body_timeout,
    )
    .await?;
    if encoding == Encoding::Identity {
        return Ok((raw, raw_permit));
    }
    let decoded = decode_blocking(encoding, raw, limit).await?;
    drop(raw_permit);
    let permit = state.body_budget.reserve(decoded.len()).await;
    Ok((decoded, permit))
}

fn received(project: Uuid, origin: &Origin, event_id: Option<Uuid>) -> Received {
    Received {
        project_id: project,
        received_at: Utc::now(),
        ip: origin.ip.clone(),
        user_agent: origin.user_agent.clone(),
        event_id,
    }
}

fn invalid(message: String) -> ApiError {
    metrics::counter!("ingest_events_rejected_total", "reason" => "validation").increment(1);
    ApiError::validation(message.clone(), json!({ "body": message }))
}

/// Publishes the events and waits for the broker's confirm.
async fn publish(
    state: &AppState,
    origin: &Origin,
    payloads: Vec<Vec<u8>>,
) -> Result<(), ApiError> {
    let count = payloads.len();
    if count == 0 {
        return Ok(());
    }
    let published = state
        .publisher
        .publish_from(origin.connection, payloads)
        .await;
    published.map_err(|e| {
        metrics::counter!("ingest_events_rejected_total", "reason" => "queue_unavailable")
            .increment(count as u64);
        tracing::debug!(error = %e, events = count, "Sentry events not accepted: broker unavailable.");
        ApiError::QueueUnavailable {
            retry_after_secs: 5,
        }
    })?;
    metrics::counter!("ingest_events_accepted_total").increment(count as u64);
    Ok(())
}

/// The same secret filtering as native events get, plus the Sentry event's `extra`.
fn scrub(state: &AppState, event: &mut faultline_shared::domain::ErrorEvent) {
    state.scrubber.scrub_event(event);
    if let Some(extra) = event.extra.as_mut() {
        state.scrubber.scrub_value(extra);
    }
}

fn serialise(event: &faultline_shared::domain::ErrorEvent) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(event).map_err(|e| ApiError::Internal(e.into()))
}

/// A low-cardinality label for an item type.
fn item_label(kind: &str) -> &'static str {
    match kind {
        "event" => "event",
        "transaction" => "transaction",
        "session" | "sessions" => "session",
        "attachment" => "attachment",
        "client_report" => "client_report",
        _ => "other",
    }
}

/// `POST /api/{project}/envelope/`: `event` items become events; every other item type
/// (transactions, sessions, client reports, attachments, unknown ones) is accepted and dropped.
pub async fn envelope(
    State(state): State<AppState>,
    Path(project): Path<String>,
    RawQuery(query): RawQuery,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req = preamble(&state, &project, query.as_deref(), &headers, peer)?;
    // A key in the headers is checked before the body is read and decoded.
    let mut authed = None;
    if req.key.is_some() {
        authed = Some(authenticate(&state, &req, req.key.as_deref()).await?);
    }
    let outcome: Outcome = async {
        let (body, _permit) = read_body(&state, &headers, body).await?;
        let envelope = envelope::parse(&body).map_err(|e| invalid(e.to_string()))?;
        if authed.is_none() {
            let from_dsn = envelope
                .header
                .get("dsn")
                .and_then(Value::as_str)
                .and_then(key_from_dsn)
                .map(|(key, _)| key);
            authed = Some(authenticate(&state, &req, from_dsn.as_deref()).await?);
        }
        let header_id = envelope
            .header
            .get("event_id")
            .and_then(Value::as_str)
            .and_then(|id| Uuid::parse_str(id).ok());
        let mut ids = Vec::new();
        let mut payloads = Vec::new();
        for (index, item) in envelope.items.iter().enumerate() {
            metrics::counter!("ingest_sentry_items_total", "type" => item_label(&item.kind))
                .increment(1);
            if item.kind != "event" {
                continue;
            }
            let value: Value = serde_json::from_slice(item.payload)
                .map_err(|e| invalid(format!("item {} is not a JSON event: {e}", index + 1)))?;
            let mut event = map_event(&value, &received(req.project, &req.origin, header_id))
                .map_err(|e| invalid(format!("item {}: {e}", index + 1)))?;
            scrub(&state, &mut event);
            ids.push(event.event_id);
            payloads.push(serialise(&event)?);
        }
        let count = payloads.len() as u64;
        publish(&state, &req.origin, payloads).await?;
        Ok((ids.first().copied().or(header_id), count))
    }
    .await;
    finish(&state, &req, authed, outcome)
}

/// `POST /api/{project}/store/`: one JSON event, as SDKs from before envelopes send it.
pub async fn store(
    State(state): State<AppState>,
    Path(project): Path<String>,
    RawQuery(query): RawQuery,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req = preamble(&state, &project, query.as_deref(), &headers, peer)?;
    let authed = authenticate(&state, &req, req.key.as_deref()).await?;
    let outcome: Outcome = async {
        let (body, _permit) = read_body(&state, &headers, body).await?;
        let value: Value =
            serde_json::from_slice(&body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
        let mut event =
            map_event(&value, &received(req.project, &req.origin, None)).map_err(invalid)?;
        scrub(&state, &mut event);
        let id = event.event_id;
        publish(&state, &req.origin, vec![serialise(&event)?]).await?;
        Ok((Some(id), 1))
    }
    .await;
    finish(&state, &req, Some(authed), outcome)
}

/// Sentry's answer: the event id without dashes.
fn answer(id: Option<Uuid>, decision: Option<Decision>) -> Response {
    let body = match id {
        Some(id) => json!({ "id": id.simple().to_string() }),
        None => json!({}),
    };
    let mut response = (StatusCode::OK, Json(body)).into_response();
    if let Some(d) = decision {
        d.write_headers(response.headers_mut());
    }
    response
}

/// Gives every 429 of the Sentry routes an `X-Sentry-Rate-Limits` header (all categories, scoped
/// to the key, for as long as `Retry-After` says), which the SDKs honour by holding back events
/// instead of retrying into the limit. With `CORS_ALLOWED_ORIGINS` empty, browser SDKs on any
/// origin may read the answer (as Sentry allows any domain by default); with origins listed, the
/// CORS layer decides, as for every route.
pub async fn sentry_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    if response.status() == StatusCode::TOO_MANY_REQUESTS {
        let secs = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(60);
        let h = response.headers_mut();
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        if let Ok(v) = HeaderValue::from_str(&format!("{secs}::key")) {
            h.insert("x-sentry-rate-limits", v);
        }
    }
    if !state.settings.access.cors_origins.is_empty() {
        return response;
    }
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("x-sentry-rate-limits, retry-after"),
    );
    response
}
