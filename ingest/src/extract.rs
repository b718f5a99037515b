//! Request-body extraction that answers with our error body: 415 for a non-JSON content type,
//! 413 over the size limit, 408 for a body that does not arrive in time, 400 with the parser's
//! position for malformed JSON.

use crate::{AppState, error::ApiError};
use axum::{
    extract::{FromRequest, Request},
    http::header,
};
use serde_json::Value;
use std::time::Duration;

/// Reads a whole body of at most `limit` bytes within `timeout` (counted from the first read, not
/// per chunk, so a body that trickles one byte at a time cannot hold the request open for long).
/// Every body ingest reads goes through here.
pub async fn read_body(
    body: axum::body::Body,
    limit: usize,
    timeout: Duration,
) -> Result<bytes::Bytes, ApiError> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(ApiError::RequestTimeout {
            timeout_ms: timeout.as_millis() as u64,
        }),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) if is_length_limit(&e) => Err(ApiError::PayloadTooLarge { limit }),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "Request body unreadable.");
            Err(ApiError::UnreadableBody)
        }
    }
}

/// Parses a JSON body. serde_json refuses nesting deeper than 128 levels, so a hostile body of
/// 100,000 nested arrays is a 400, not a stack overflow.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))
}

/// Whether a body error is the size limit (rather than a broken connection or framing).
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// A JSON body parsed to a `Value`; handlers validate its shape field by field so that every bad
/// field is reported, not only the first one serde meets.
pub struct JsonBody(pub Value);

fn is_json_content_type(req: &Request) -> bool {
    let Some(ct) = req.headers().get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(ct) = ct.to_str() else { return false };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !is_json_content_type(&req) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = state.settings.max_body_bytes;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        let bytes = read_body(req.into_body(), limit, state.settings.http.body_timeout).await?;
        Ok(JsonBody(parse_json(&bytes)?))
    }
}
