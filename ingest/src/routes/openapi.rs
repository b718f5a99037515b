//! The OpenAPI 3 document of ingest (`GET /openapi.json`) and an offline docs page (`GET /docs`)
//! that renders it without any external script. The dashboard handlers carry their own
//! `#[utoipa::path]`; the other routes are described here. `tests/openapi.rs` checks that every
//! route of `routes::router` is in the document, so a new route cannot go undocumented.

use axum::{
    Json,
    http::header,
    response::{Html, IntoResponse},
};
use utoipa::{
    Modify, OpenApi, ToSchema,
    openapi::{
        ContentBuilder, Object, ObjectBuilder, Ref, RefOr, Response, ResponseBuilder, Schema, Type,
        request_body::RequestBodyBuilder,
        security::{ApiKey, ApiKeyValue, SecurityScheme},
    },
};

/// The one error body of every failure.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// Always "error".
    status: String,
    /// Human-readable message.
    error: String,
    /// Machine-readable code, e.g. `validation_error`, `not_found`, `unauthorized`.
    code: String,
    /// Per-field (or per-parameter) details, when there are any.
    #[schema(value_type = Option<Object>)]
    details: Option<serde_json::Value>,
    request_id: Option<String>,
}

/// An error group: the contract's "error" object.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorObject {
    id: uuid::Uuid,
    /// The latest occurrence (same as `last_seen`).
    timestamp: chrono::DateTime<chrono::Utc>,
    /// error, warning, info or debug.
    level: String,
    message: String,
    stack_trace: Option<String>,
    #[schema(value_type = Option<Object>)]
    context: Option<serde_json::Value>,
    source: String,
    environment: String,
    user_agent: Option<String>,
    ip_address: Option<String>,
    url: Option<String>,
    release: Option<String>,
    fingerprint: String,
    resolved: bool,
    resolved_at: Option<chrono::DateTime<chrono::Utc>>,
    regressed: bool,
    regressed_at: Option<chrono::DateTime<chrono::Utc>>,
    count: i64,
    first_seen: chrono::DateTime<chrono::Utc>,
    last_seen: chrono::DateTime<chrono::Utc>,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

/// `data` of `GET /api/errors`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorList {
    errors: Vec<ErrorObject>,
    /// Groups matching the filters (all pages).
    total: i64,
    page: i64,
    limit: i64,
    offset: i64,
}

/// `data` of `GET /api/stats`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Stats {
    total_errors: i64,
    resolved_errors: i64,
    unresolved_errors: i64,
    errors_today: i64,
    errors_this_week: i64,
    errors_this_month: i64,
    events_24h: i64,
    /// Occurrences per hour over the last 24 hours.
    error_rate_24h: f64,
    /// Percentage of groups resolved.
    resolution_rate: f64,
    /// e.g. "2h 15m"; null before the first resolution.
    avg_resolution_time: Option<String>,
    avg_resolution_seconds: Option<f64>,
    resolutions: i64,
}

/// One bucket of `GET /api/analytics/trends`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TrendPoint {
    timestamp: chrono::DateTime<chrono::Utc>,
    error_count: i64,
    resolved_count: i64,
    /// Occurrences of level `error`.
    critical_count: i64,
}

/// `data` of `GET /api/analytics/trends`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Trends {
    period: String,
    group_by: String,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    data_points: Vec<TrendPoint>,
}

struct KeyAuth;

impl Modify for KeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// Answers every operation can give besides its own, added where the operation does not list
/// them, so that the document names every status ingest really answers (schemathesis checks
/// this; clients switch on it): key failures and rate limits on authenticated routes, body
/// failures on routes that read a JSON body, and parameter failures on routes with a path
/// parameter. Each is the one error body. Also wraps documented success schemas in the
/// `{data, status}` envelope every success is answered with.
struct CommonResponses;

/// Operations that read a JSON body (`extract::JsonBody`, or `extract::EventBody` for events), by
/// method and path.
const JSON_BODY_OPERATIONS: &[(&str, &str)] = &[
    ("post", "/api/errors"),
    ("post", "/api/errors/batch"),
    ("post", "/api/projects"),
    ("post", "/api/settings/api-keys"),
    ("post", "/api/settings/team/invite"),
    ("post", "/api/alerts/rules"),
    ("put", "/api/alerts/rules/{id}"),
    ("post", "/api/alerts/incidents"),
    ("put", "/api/alerts/incidents/{id}"),
    ("put", "/api/settings/integrations/{name}"),
];

fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

fn enveloped(data: RefOr<Schema>) -> Schema {
    ObjectBuilder::new()
        .property("data", data)
        .property("status", ObjectBuilder::new().schema_type(Type::String))
        .required("data")
        .required("status")
        .into()
}

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let sentry = path.starts_with("/api/{project_id}/");
            let operations = [
                ("get", &mut item.get),
                ("post", &mut item.post),
                ("put", &mut item.put),
                ("delete", &mut item.delete),
            ];
            for (method, op) in operations {
                let Some(op) = op.as_mut() else { continue };
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let json_body = JSON_BODY_OPERATIONS.contains(&(method, path.as_str()));
                if json_body && op.request_body.is_none() {
                    op.request_body = Some(RefOr::T(
                        RequestBodyBuilder::new()
                            .content(
                                "application/json",
                                ContentBuilder::new().schema(Some(Object::new())).build(),
                            )
                            .required(Some(utoipa::openapi::Required::True))
                            .build(),
                    ));
                }
                let responses = &mut op.responses.responses;
                for (code, response) in responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    if !code.starts_with('2') || sentry {
                        continue;
                    }
                    for content in response.content.values_mut() {
                        let RefOr::T(content) = content else { continue };
                        if let Some(schema @ RefOr::Ref(_)) = &content.schema {
                            content.schema = Some(RefOr::T(enveloped(schema.clone())));
                        }
                    }
                }
                let mut add = |code: &str, description: &str| {
                    responses
                        .entry(code.to_string())
                        .or_insert_with(|| error_response(description));
                };
                if secured || sentry {
                    add("401", "Missing or invalid key");
                    add(
                        "403",
                        "The key lacks the permission (or, on Sentry routes, belongs to another project)",
                    );
                    add(
                        "429",
                        "The key's rate limit is used up; `Retry-After` says when to retry",
                    );
                    add(
                        "503",
                        "A backing service is unavailable; `Retry-After` says when to retry",
                    );
                }
                if json_body || sentry {
                    add(
                        "400",
                        "Malformed JSON or invalid fields, named in `details`",
                    );
                    add("408", "The body did not arrive within HTTP_BODY_TIMEOUT_MS");
                    add("413", "The body is larger than MAX_BODY_BYTES");
                }
                if json_body {
                    add("415", "The content type is not JSON");
                }
                if path.contains('{') {
                    add("400", "A bad path parameter, named in `details`");
                    add("404", "No such resource in the caller's project");
                }
            }
        }
    }
}

/// Routes owned by other route files, described here (request and response details are in
/// README.md). The functions exist only to carry the descriptions.
#[allow(dead_code)]
mod others {
    #[utoipa::path(post, path = "/api/errors", tag = "ingest",
        summary = "Report one error event (202 once the broker confirmed it)",
        request_body(content = Object, description = "level, message, source, stack_trace, context, environment, url, ..."),
        responses((status = 202, description = "Accepted: `{data: {id}, status}`"),
                   (status = 400, body = super::ErrorBody), (status = 503, description = "Queue unavailable; Retry-After")),
        security(("api_key" = [])))]
    pub fn create_error() {}

    #[utoipa::path(post, path = "/api/errors/batch", tag = "ingest",
        summary = "Report many error events in one request",
        request_body(content = Object, description = "An array of events (or {events: [...]})"),
        responses((status = 202, description = "Accepted"), (status = 400, body = super::ErrorBody)),
        security(("api_key" = [])))]
    pub fn create_errors_batch() {}

    #[utoipa::path(post, path = "/api/{project_id}/envelope/", tag = "sentry",
        summary = "Sentry SDK envelope endpoint (DSN authentication)",
        params(("project_id" = String, Path, description = "The project's number, as in the DSN (the default project is 1)", example = "1")),
        request_body(content((String = "application/x-sentry-envelope"), (String = "text/plain")), description = "A header line, then items: a header line and a payload each (any content type is read)"),
        responses((status = 200, description = "Accepted: `{id}`")))]
    pub fn sentry_envelope_slash() {}

    #[utoipa::path(post, path = "/api/{project_id}/envelope", tag = "sentry",
        summary = "Sentry SDK envelope endpoint (DSN authentication)",
        params(("project_id" = String, Path, description = "The project's number, as in the DSN (the default project is 1)", example = "1")),
        request_body(content((String = "application/x-sentry-envelope"), (String = "text/plain")), description = "A header line, then items: a header line and a payload each (any content type is read)"),
        responses((status = 200, description = "Accepted: `{id}`")))]
    pub fn sentry_envelope() {}

    #[utoipa::path(post, path = "/api/{project_id}/store/", tag = "sentry",
        summary = "Sentry SDK legacy store endpoint",
        params(("project_id" = String, Path, description = "The project's number, as in the DSN (the default project is 1)", example = "1")),
        request_body(content = Object, description = "One Sentry event"),
        responses((status = 200, description = "Accepted: `{id}`")))]
    pub fn sentry_store_slash() {}

    #[utoipa::path(post, path = "/api/{project_id}/store", tag = "sentry",
        summary = "Sentry SDK legacy store endpoint",
        params(("project_id" = String, Path, description = "The project's number, as in the DSN (the default project is 1)", example = "1")),
        request_body(content = Object, description = "One Sentry event"),
        responses((status = 200, description = "Accepted: `{id}`")))]
    pub fn sentry_store() {}

    #[utoipa::path(get, path = "/api/projects", tag = "access", summary = "List projects",
        responses((status = 200, description = "Projects")), security(("api_key" = [])))]
    pub fn list_projects() {}

    #[utoipa::path(post, path = "/api/projects", tag = "access", summary = "Create a project",
        responses((status = 201, description = "Created")), security(("api_key" = [])))]
    pub fn create_project() {}

    #[utoipa::path(get, path = "/api/settings/api-keys", tag = "access", summary = "List API keys",
        responses((status = 200, description = "`{api_keys: [...]}`")), security(("api_key" = [])))]
    pub fn list_keys() {}

    #[utoipa::path(post, path = "/api/settings/api-keys", tag = "access",
        summary = "Create an API key (shown once)",
        responses((status = 201, description = "The key, once")), security(("api_key" = [])))]
    pub fn create_key() {}

    #[utoipa::path(delete, path = "/api/settings/api-keys/{id}", tag = "access",
        summary = "Revoke an API key", params(("id" = uuid::Uuid, Path)),
        responses((status = 204, description = "Revoked"), (status = 404, body = super::ErrorBody)),
        security(("api_key" = [])))]
    pub fn revoke_key() {}

    #[utoipa::path(get, path = "/api/settings/team", tag = "access", summary = "List team members",
        responses((status = 200, description = "`{members: [...]}`")), security(("api_key" = [])))]
    pub fn list_team() {}

    #[utoipa::path(post, path = "/api/settings/team/invite", tag = "access",
        summary = "Invite a team member",
        responses((status = 201, description = "The member")), security(("api_key" = [])))]
    pub fn invite() {}

    #[utoipa::path(get, path = "/api/alerts/rules", tag = "alerts",
        summary = "List alert rules",
        responses((status = 200, description = "`{rules: [...]}`"), (status = 400, body = super::ErrorBody)),
        security(("api_key" = [])))]
    pub fn list_rules() {}

    #[utoipa::path(post, path = "/api/alerts/rules", tag = "alerts",
        summary = "Create an alert rule",
        responses((status = 201, description = "The rule"), (status = 400, body = super::ErrorBody)),
        security(("api_key" = [])))]
    pub fn create_rule() {}

    #[utoipa::path(put, path = "/api/alerts/rules/{id}", tag = "alerts",
        summary = "Update an alert rule",
        params(("id" = String, Path)),
        responses((status = 200, description = "The rule"), (status = 400, body = super::ErrorBody)),
        security(("api_key" = [])))]
    pub fn update_rule() {}

    #[utoipa::path(delete, path = "/api/alerts/rules/{id}", tag = "alerts",
        summary = "Delete an alert rule",
        params(("id" = String, Path)),
        responses((status = 204, description = "Deleted"), (status = 400, body = super::ErrorBody)),
        security(("api_key" = [])))]
    pub fn delete_rule() {}

    #[utoipa::path(get, path = "/api/alerts/incidents", tag = "alerts",
        summary = "List incidents",
        responses((status = 200, description = "`{incidents: [...]}`"), (status = 400, body = super::ErrorBody)),
        security(("api_key" = [])))]
    pub fn list_incidents() {}

    #[utoipa::path(post, path = "/api/alerts/incidents", tag = "alerts",
        summary = "Create an incident",
        responses((status = 201, description = "The incident"), (status = 400, body = super::ErrorBody)),
        security(("api_key" = [])))]
    pub fn create_incident() {}

    #[utoipa::path(put, path = "/api/alerts/incidents/{id}", tag = "alerts",
        summary = "Update an incident",
        params(("id" = String, Path)),
        responses((status = 200, description = "The incident"), (status = 400, body = super::ErrorBody)),
        security(("api_key" = [])))]
    pub fn update_incident() {}

    #[utoipa::path(get, path = "/api/alerts/deliveries", tag = "alerts",
        summary = "Notification deliveries and their attempts",
        responses((status = 200, description = "`{deliveries: [...]}`"), (status = 400, body = super::ErrorBody)),
        security(("api_key" = [])))]
    pub fn list_deliveries() {}

    #[utoipa::path(get, path = "/api/settings/integrations", tag = "settings",
        summary = "Integration status (email, Slack, webhook)",
        responses((status = 200, description = "`{integrations: [...]}`"), (status = 400, body = super::ErrorBody)),
        security(("api_key" = [])))]
    pub fn list_integrations() {}

    #[utoipa::path(put, path = "/api/settings/integrations/{name}", tag = "settings",
        summary = "Configure an integration",
        params(("name" = String, Path)),
        responses((status = 200, description = "The integration"), (status = 400, body = super::ErrorBody)),
        security(("api_key" = [])))]
    pub fn put_integration() {}

    #[utoipa::path(post, path = "/api/settings/integrations/{name}/test", tag = "settings",
        summary = "Send a test notification through an integration",
        params(("name" = String, Path)),
        responses((status = 200, description = "The test result"), (status = 400, body = super::ErrorBody)),
        security(("api_key" = [])))]
    pub fn test_integration() {}

    #[utoipa::path(get, path = "/api/errors/sparklines", tag = "errors",
        summary = "Each listed group's events per hour over the last day (for list sparklines)",
        params(("ids" = String, Query, description = "comma-separated error ids")),
        responses((status = 200, description = "`{sparklines: ...}`"), (status = 400, body = super::ErrorBody)),
        security(("api_key" = [])))]
    pub fn sparklines() {}

    #[utoipa::path(get, path = "/api/usage", tag = "access",
        summary = "The project's accepted and refused events per hour, refusals by reason, per key",
        params(("hours" = Option<i64>, Query, description = "1-168, default 24")),
        responses((status = 200, description = "Usage per hour"), (status = 400, body = super::ErrorBody)),
        security(("api_key" = [])))]
    pub fn usage() {}

    #[utoipa::path(get, path = "/", tag = "dashboard",
        summary = "The web dashboard (asks for an API key in the page)",
        responses((status = 200, description = "HTML")))]
    pub fn dashboard_index() {}

    #[utoipa::path(get, path = "/assets/{path}", tag = "dashboard",
        summary = "The web dashboard's scripts and styles", params(("path" = String, Path)),
        responses((status = 200, description = "The asset"), (status = 404, description = "No such asset")))]
    pub fn dashboard_asset() {}

    #[utoipa::path(get, path = "/health", tag = "operations",
        summary = "Postgres, Redis and RabbitMQ status (503 when ingest cannot take events)",
        responses((status = 200, description = "ok"), (status = 503, description = "unavailable")))]
    pub fn health() {}

    #[utoipa::path(get, path = "/metrics", tag = "operations", summary = "Prometheus metrics",
        responses((status = 200, description = "Prometheus text format")))]
    pub fn metrics() {}

    #[utoipa::path(get, path = "/openapi.json", tag = "operations", summary = "This document",
        responses((status = 200, description = "OpenAPI 3")))]
    pub fn openapi() {}

    #[utoipa::path(get, path = "/docs", tag = "operations",
        summary = "Human-readable API documentation (works offline)",
        responses((status = 200, description = "HTML")))]
    pub fn docs() {}
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Faultline API",
        description = "Error ingestion, the dashboard read API (errors, analytics, monitoring), \
                       access control and operations. Every success answers \
                       `{\"data\": ..., \"status\": \"success\"}`; every failure the `ErrorBody`. \
                       Cached reads carry `ETag` and `X-Cache`; send `If-None-Match` for 304."
    ),
    paths(
        others::create_error,
        others::create_errors_batch,
        others::sentry_envelope_slash,
        others::sentry_envelope,
        others::sentry_store_slash,
        others::sentry_store,
        super::errors::list_errors,
        super::errors::get_error,
        super::errors::list_error_events,
        super::errors::resolve_error,
        super::errors::reopen_error,
        super::errors::delete_error,
        super::analytics::stats,
        super::analytics::trends,
        super::analytics::performance,
        super::monitoring::services,
        super::monitoring::metrics,
        super::monitoring::uptime,
        others::list_projects,
        others::create_project,
        others::list_keys,
        others::create_key,
        others::revoke_key,
        others::list_team,
        others::invite,
        others::list_rules,
        others::create_rule,
        others::update_rule,
        others::delete_rule,
        others::list_incidents,
        others::create_incident,
        others::update_incident,
        others::list_deliveries,
        others::list_integrations,
        others::put_integration,
        others::test_integration,
        others::sparklines,
        others::usage,
        others::dashboard_index,
        others::dashboard_asset,
        others::health,
        others::metrics,
        others::openapi,
        others::docs,
    ),
    components(schemas(ErrorBody, ErrorObject, ErrorList, Stats, TrendPoint, Trends)),
    modifiers(&KeyAuth, &CommonResponses),
)]
pub struct ApiDoc;

/// The document, built once per call (cheap; it is all static data).
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub async fn openapi_json() -> impl IntoResponse {
    Json(document())
}

/// A self-contained page: it fetches `/openapi.json` and lists every operation with its
/// parameters and responses. No external script or style, so it works offline.
pub async fn docs_page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-cache")], Html(DOCS_HTML))
}

const DOCS_HTML: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Faultline API</title>
<style>
body{font:14px/1.5 system-ui,sans-serif;margin:0 auto;max-width:980px;padding:1em;color:#222}
h1{margin-bottom:0}.op{border:1px solid #ddd;border-radius:6px;margin:.6em 0;padding:.4em .8em}
.m{display:inline-block;min-width:4.5em;font-weight:bold;text-transform:uppercase}
.get{color:#0a6}.post{color:#06c}.put{color:#a60}.delete{color:#c22}
code{background:#f4f4f4;padding:0 .2em}table{border-collapse:collapse}td{padding:0 .6em 0 0;vertical-align:top}
summary{cursor:pointer}.tag{margin-top:1.5em;border-bottom:2px solid #333}
</style></head><body>
<h1 id="title">Faultline API</h1><p id="desc"></p><p><a href="/openapi.json">openapi.json</a></p>
<div id="ops">Loading…</div>
<script>
fetch('/openapi.json').then(r => r.json()).then(doc => {
  const esc = s => String(s ?? '').replace(/[&<>]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;'}[c]));
  document.getElementById('desc').textContent = doc.info.description || '';
  const byTag = {};
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const tag = (op.tags || ['other'])[0];
      (byTag[tag] = byTag[tag] || []).push({path, method, op});
    }
  }
  let html = '';
  for (const [tag, ops] of Object.entries(byTag)) {
    html += `<h2 class="tag">${esc(tag)}</h2>`;
    for (const {path, method, op} of ops) {
      const params = (op.parameters || []).map(p =>
        `<tr><td><code>${esc(p.name)}</code></td><td>${esc(p.in)}</td><td>${p.required ? 'required' : ''}</td><td>${esc(p.description)}</td></tr>`).join('');
      const resps = Object.entries(op.responses || {}).map(([code, r]) =>
        `<tr><td><code>${esc(code)}</code></td><td>${esc(r.description)}</td></tr>`).join('');
      html += `<details class="op"><summary><span class="m ${method}">${method}</span> <code>${esc(path)}</code> ${esc(op.summary)}</summary>
        <p>${esc(op.description)}</p>${op.security ? '<p>Needs <code>X-API-Key</code>.</p>' : ''}
        ${params ? `<h4>Parameters</h4><table>${params}</table>` : ''}
        <h4>Responses</h4><table>${resps}</table></details>`;
    }
  }
  document.getElementById('ops').innerHTML = html;
});
</script></body></html>
"#;
