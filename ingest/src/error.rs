//! `ApiError`: every failure ingest answers, mapped to one status, one machine-readable `code` and
//! the single error body of the design:
//! `{"status":"error","error":"...","code":"...","details":{...},"request_id":"..."}`.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use std::sync::Arc;

tokio::task_local! {
    /// The id of the request being served, set by the request-id middleware so that every error
    /// body can carry it without threading it through each handler.
    pub static REQUEST_ID: String;
}

/// The request id of the current request, if called inside one.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(|id| id.clone()).ok()
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Validation { message: String, details: Value },
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("unsupported content type: send application/json")]
    UnsupportedMediaType,
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The body did not arrive within `HTTP_BODY_TIMEOUT_MS` (a trickling client, or one that
    /// stopped sending); the connection is closed after the answer.
    #[error("the request body did not arrive within {timeout_ms} ms")]
    RequestTimeout { timeout_ms: u64 },
    /// The body could not be read to its end: the client broke off, or the chunked framing is
    /// invalid.
    #[error("the request body could not be read")]
    UnreadableBody,
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("this API key lacks the '{required}' permission")]
    PermissionDenied { required: &'static str },
    /// A valid key used for another project (the Sentry endpoints name the project in the path).
    #[error("this API key does not belong to the project in the URL")]
    WrongProject,
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A unique value already taken (a member's e-mail, a project's name); `details` names the field.
    #[error("{message}")]
    Conflict { message: String, details: Value },
    /// The key's rate limit for this kind of request is used up; retry after `wait_seconds`.
    #[error("rate limit exceeded; retry in {wait_seconds} s")]
    Throttled { wait_seconds: u64 },
    #[error("the event queue is unavailable; retry later")]
    QueueUnavailable { retry_after_secs: u64 },
    #[error("a backing service is unavailable; retry later")]
    ServiceUnavailable { retry_after_secs: u64 },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn validation(message: impl Into<String>, details: Value) -> Self {
        ApiError::Validation {
            message: message.into(),
            details,
        }
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Validation { .. } | ApiError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnreadableBody => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::PermissionDenied { .. } | ApiError::WrongProject => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::QueueUnavailable { .. } | ApiError::ServiceUnavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Validation { .. } => "validation_error",
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::RequestTimeout { .. } => "request_timeout",
            ApiError::UnreadableBody => "unreadable_body",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::PermissionDenied { .. } => "permission_denied",
            ApiError::WrongProject => "project_mismatch",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict { .. } => "conflict",
            ApiError::Throttled { .. } => "throttled",
            ApiError::QueueUnavailable { .. } => "queue_unavailable",
            ApiError::ServiceUnavailable { .. } => "service_unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }

    fn details(&self) -> Option<Value> {
        match self {
            ApiError::Validation { details, .. } | ApiError::Conflict { details, .. } => {
                Some(details.clone())
            }
            ApiError::Throttled { wait_seconds } => Some(json!({ "wait_seconds": wait_seconds })),
            ApiError::MalformedJson(reason) => Some(json!({ "body": reason })),
            ApiError::PayloadTooLarge { limit } => Some(json!({ "max_bytes": limit })),
            ApiError::PermissionDenied { required } => Some(json!({ "required": required })),
            ApiError::QueueUnavailable { retry_after_secs }
            | ApiError::ServiceUnavailable { retry_after_secs } => {
                Some(json!({ "retry_after_seconds": retry_after_secs }))
            }
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = ?e, "Request failed.");
        } else {
            // Outages are logged once by whatever noticed them, not once per refused request.
            tracing::debug!(code = self.code(), "Request rejected: {self}");
        }
        let mut body = json!({
            "status": "error",
            "error": self.to_string(),
            "code": self.code(),
        });
        if let Some(details) = self.details() {
            body["details"] = details;
        }
        if let Some(id) = current_request_id() {
            body["request_id"] = Value::String(id);
        }
        let mut response = (status, Json(body)).into_response();
        if matches!(self, ApiError::RequestTimeout { .. }) {
            // The rest of the body may never come: do not keep the connection for another request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let ApiError::QueueUnavailable { retry_after_secs }
        | ApiError::ServiceUnavailable { retry_after_secs }
        | ApiError::Throttled {
            wait_seconds: retry_after_secs,
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::from(Arc::new(e))
    }
}

/// One database error answered to several requests (the key cache's single query for a key many
/// requests wait on): each gets the answer the query's own caller would have.
impl From<Arc<sqlx::Error>> for ApiError {
    fn from(e: Arc<sqlx::Error>) -> Self {
        match &*e {
            // Postgres refuses a NUL character in text (22021, "invalid byte sequence") and in
            // jsonb (22P05, "unsupported Unicode escape sequence"). JSON and URLs can carry one, so
            // it is the client's input, wherever it went: a 400 saying so, not a 500.
            sqlx::Error::Database(db)
                if matches!(db.code().as_deref(), Some("22021" | "22P05")) =>
            {
                ApiError::validation(
                    "text must not contain NUL characters (\\u0000 or %00)",
                    json!({}),
                )
            }
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::warn!(error = %e, "Postgres unavailable.");
                ApiError::ServiceUnavailable {
                    retry_after_secs: 5,
                }
            }
            _ => ApiError::Internal(e.into()),
        }
    }
}
