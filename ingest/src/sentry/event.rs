//! A Sentry event payload (<https://develop.sentry.dev/sdk/data-model/event-payloads/>) mapped to
//! our [`ErrorEvent`], so that it flows through the same queue, worker, groups and alerts as a
//! native event.
//!
//! - `message`: the innermost exception as Sentry titles it (`Type: value`), else the log entry or
//!   message, else `<unlabeled event>`.
//! - `frames`: the innermost exception's stack frames (outermost first, as Sentry sends them and
//!   as our fingerprint expects), else the event's own `stacktrace`, else the crashed thread's; the
//!   worker groups by them, preferring in-app frames as Sentry does. `stack_trace` is a readable
//!   rendering of every exception of the chain.
//! - `source`: the SDK's `platform` (`python`, `javascript`, `java`, ...), so rules and filters
//!   can tell SDKs apart; `server_name` is per host and would split groups, so it goes to context.
//! - `event_id`: the SDK's own id, so an SDK's retry is recognised by the worker and counted once.
//! - `context`: tags, user, request (secret headers and query parameters filtered), contexts,
//!   server name, logger, transaction, dist, SDK, and the exception's type, value and mechanism;
//!   `extra`: the event's `extra`.

use chrono::{DateTime, Utc};
use faultline_shared::{
    domain::{ErrorEvent, Level},
    fingerprint::Frame,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::validate::{
    MAX_FINGERPRINT_PARTS, MAX_MESSAGE_BYTES, MAX_SHORT_FIELD_BYTES, MAX_STACK_TRACE_BYTES,
    MAX_URL_BYTES,
};

/// Frames kept per event: the innermost ones; grouping reads fewer still.
pub const MAX_FRAMES: usize = 250;

/// Longest module, function or file name kept.
const MAX_FRAME_PART_BYTES: usize = 1024;

/// Longest tag key or value kept (Sentry's own limit on tag values is 200).
const MAX_TAG_BYTES: usize = 200;

/// Most tags kept per event.
const MAX_TAGS: usize = 200;

/// Deepest nesting kept in an event's free-form parts (`contexts`, `user`, `request`, `extra`,
/// ...); anything deeper is replaced by a marker string. Sentry SDKs send a few levels. Why bound
/// it: the payload may nest up to serde_json's recursion limit (128), and the worker decodes a
/// whole broker message (many events, one JSON array) under that same limit, so one such event
/// would make the whole message undecodable and dead-letter its neighbours with it.
pub const MAX_VALUE_DEPTH: usize = 20;

/// What a value nested deeper than [`MAX_VALUE_DEPTH`] is replaced with.
pub const DEPTH_MARKER: &str = "[nested too deep]";

/// Replaces everything nested deeper than `max` levels below `value` with [`DEPTH_MARKER`].
fn trim_depth(value: &mut Value, max: usize) {
    match value {
        Value::Object(_) | Value::Array(_) if max == 0 => {
            *value = Value::String(DEPTH_MARKER.to_string());
        }
        Value::Object(map) => map.values_mut().for_each(|v| trim_depth(v, max - 1)),
        Value::Array(items) => items.iter_mut().for_each(|v| trim_depth(v, max - 1)),
        _ => {}
    }
}

/// What ingest knows beyond the payload.
#[derive(Debug, Clone)]
pub struct Received {
    pub project_id: Uuid,
    pub received_at: DateTime<Utc>,
    /// The peer's address (or the trusted proxy's `X-Forwarded-For`).
    pub ip: Option<String>,
    /// The `User-Agent` of the request (the SDK's, for server-side SDKs).
    pub user_agent: Option<String>,
    /// The envelope header's `event_id`, for an event item without its own.
    pub event_id: Option<Uuid>,
}

/// Maps one event payload; `Err` says why it is not an event.
pub fn map_event(payload: &Value, received: &Received) -> Result<ErrorEvent, String> {
    let obj = payload
        .as_object()
        .ok_or_else(|| "an event must be a JSON object".to_string())?;
    let exceptions = exceptions(obj);
    let innermost = exceptions.last().copied();

    let message = innermost
        .and_then(exception_title)
        .or_else(|| log_message(obj))
        .unwrap_or_else(|| "<unlabeled event>".to_string());
    let frames = exceptions
        .iter()
        .rev()
        .find_map(|e| stack_frames(e.get("stacktrace")))
        .or_else(|| stack_frames(obj.get("stacktrace")))
        .or_else(|| thread_frames(obj));

    let level_name = str_of(obj, "level").map(str::to_ascii_lowercase);
    let level = match level_name.as_deref() {
        Some("warning" | "warn") => Level::Warning,
        Some("info" | "log") => Level::Info,
        Some("debug") => Level::Debug,
        _ => Level::Error,
    };
    let request = obj.get("request").and_then(Value::as_object);
    let user = obj.get("user").and_then(Value::as_object);

    let mut context = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(v) = value.filter(|v| !v.is_null()) {
            context.insert(key.to_string(), v);
        }
    };
    put("tags", tags(obj.get("tags")));
    put("user", user.map(|u| Value::Object(u.clone())));
    put("request", request.map(scrub_request));
    put("contexts", obj.get("contexts").cloned());
    for key in ["server_name", "logger", "transaction", "dist", "timestamp"] {
        put(key, obj.get(key).cloned());
    }
    put(
        "sdk",
        obj.get("sdk")
            .and_then(Value::as_object)
            .map(|s| json!({"name": s.get("name"), "version": s.get("version")})),
    );
    put(
        "exception",
        innermost.map(|e| {
            json!({
                "type": e.get("type"),
                "value": e.get("value"),
                "module": e.get("module"),
                "mechanism": e.get("mechanism"),
            })
        }),
    );
    // Sentry's `fatal` (and anything unusual) is kept, as our model has four levels.
    if let Some(name) = level_name.filter(|n| n.as_str() != level.as_str()) {
        put("level", Some(Value::String(name)));
    }

    let user_ip = user
        .and_then(|u| u.get("ip_address"))
        .and_then(Value::as_str)
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
        .map(str::to_string);
    let user_agent = request
        .and_then(|r| header_value(r.get("headers"), "user-agent"))
        .or_else(|| received.user_agent.clone())
        .map(|ua| truncate(&ua, 512));

    let mut context = (!context.is_empty()).then_some(Value::Object(context));
    let mut extra = obj
        .get("extra")
        .filter(|e| e.as_object().is_some_and(|m| !m.is_empty()))
        .cloned();
    for value in [&mut context, &mut extra].into_iter().flatten() {
        trim_depth(value, MAX_VALUE_DEPTH);
    }

    Ok(ErrorEvent {
        event_id: str_of(obj, "event_id")
            .and_then(|id| Uuid::parse_str(id).ok())
            .or(received.event_id)
            .unwrap_or_else(Uuid::now_v7),
        project_id: received.project_id,
        received_at: received.received_at,
        level,
        stack_trace: render_stack_trace(&exceptions, frames.as_deref(), &message),
        message: truncate(&message, MAX_MESSAGE_BYTES),
        source: str_of(obj, "platform")
            .map(|p| truncate(&p.trim().to_ascii_lowercase(), MAX_SHORT_FIELD_BYTES))
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "other".to_string()),
        environment: str_of(obj, "environment")
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| truncate(e, MAX_SHORT_FIELD_BYTES))
            .unwrap_or_else(|| "production".to_string()),
        context,
        url: request
            .and_then(|r| r.get("url"))
            .and_then(Value::as_str)
            .map(|u| truncate(u, MAX_URL_BYTES)),
        user_agent,
        ip_address: user_ip.or_else(|| received.ip.clone()),
        release: str_of(obj, "release")
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(|r| truncate(r, MAX_SHORT_FIELD_BYTES)),
        fingerprint: fingerprint(obj.get("fingerprint")),
        frames,
        extra,
    })
}

fn str_of<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

/// Cuts `s` to at most `max` bytes at a character boundary.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// `exception` is `{"values": [...]}`, or a bare list in old SDKs; oldest (the cause) first.
fn exceptions(obj: &Map<String, Value>) -> Vec<&Map<String, Value>> {
    let values = match obj.get("exception") {
        Some(Value::Object(e)) => e.get("values").and_then(Value::as_array),
        Some(Value::Array(values)) => Some(values),
        _ => None,
    };
    values
        .map(|v| v.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default()
}

fn exception_title(e: &Map<String, Value>) -> Option<String> {
    let ty = str_of(e, "type").filter(|s| !s.is_empty());
    let value = str_of(e, "value").filter(|s| !s.is_empty());
    match (ty, value) {
        (Some(t), Some(v)) => Some(format!("{t}: {v}")),
        (Some(t), None) => Some(t.to_string()),
        (None, Some(v)) => Some(v.to_string()),
        (None, None) => None,
    }
}

/// `logentry` (`formatted`, else the template) or `message` (a string, or the same object).
fn log_message(obj: &Map<String, Value>) -> Option<String> {
    let from = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => str_of(m, "formatted")
            .or_else(|| str_of(m, "message"))
            .map(str::to_string),
        _ => None,
    };
    obj.get("logentry")
        .and_then(from)
        .or_else(|| obj.get("message").and_then(from))
        .filter(|m| !m.trim().is_empty())
}

fn stack_frames(stacktrace: Option<&Value>) -> Option<Vec<Frame>> {
    let frames = stacktrace?.get("frames")?.as_array()?;
    let skip = frames.len().saturating_sub(MAX_FRAMES);
    let frames: Vec<Frame> = frames.iter().skip(skip).filter_map(frame).collect();
    (!frames.is_empty()).then_some(frames)
}

/// The crashed thread's stack, else the current one's (native and mobile SDKs put it there).
fn thread_frames(obj: &Map<String, Value>) -> Option<Vec<Frame>> {
    let threads = match obj.get("threads")? {
        Value::Object(t) => t.get("values")?.as_array()?,
        Value::Array(values) => values,
        _ => return None,
    };
    let flag = |key: &str| {
        threads
            .iter()
            .find(|t| t.get(key).and_then(Value::as_bool) == Some(true))
    };
    stack_frames(
        flag("crashed")
            .or_else(|| flag("current"))?
            .get("stacktrace"),
    )
}

fn frame(v: &Value) -> Option<Frame> {
    let f = v.as_object()?;
    let part = |key: &str| {
        str_of(f, key)
            .filter(|s| !s.is_empty())
            .map(|s| truncate(s, MAX_FRAME_PART_BYTES))
    };
    let number = |key: &str| {
        f.get(key)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    Some(Frame {
        module: part("module"),
        function: part("function"),
        filename: part("filename").or_else(|| part("abs_path")),
        lineno: number("lineno"),
        colno: number("colno"),
        in_app: f.get("in_app").and_then(Value::as_bool),
    })
}

/// A readable traceback of the whole chain, oldest exception first, in the "most recent call
/// last" order the frames come in.
fn render_stack_trace(
    exceptions: &[&Map<String, Value>],
    fallback: Option<&[Frame]>,
    message: &str,
) -> Option<String> {
    use std::fmt::Write;
    fn block(out: &mut String, frames: &[Frame], title: &str) {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str("Traceback (most recent call last):\n");
        for f in frames {
            let file = f.filename.as_deref().or(f.module.as_deref()).unwrap_or("?");
            let _ = write!(out, "  File \"{file}\"");
            if let Some(line) = f.lineno {
                let _ = write!(out, ", line {line}");
            }
            let _ = writeln!(out, ", in {}", f.function.as_deref().unwrap_or("?"));
        }
        out.push_str(title);
        out.push('\n');
    }
    let mut out = String::new();
    for e in exceptions {
        if let Some(frames) = stack_frames(e.get("stacktrace")) {
            block(&mut out, &frames, &exception_title(e).unwrap_or_default());
        }
    }
    if out.is_empty() {
        block(&mut out, fallback?, message);
    }
    Some(truncate(&out, MAX_STACK_TRACE_BYTES))
}

/// `tags` as an object of strings, from an object or a list of pairs.
fn tags(v: Option<&Value>) -> Option<Value> {
    let pairs: Vec<(String, &Value)> = match v? {
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Value::Array(list) => list
            .iter()
            .filter_map(|p| {
                let p = p.as_array()?;
                Some((p.first()?.as_str()?.to_string(), p.get(1)?))
            })
            .collect(),
        _ => return None,
    };
    let map: Map<String, Value> = pairs
        .into_iter()
        .filter_map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Null => return None,
                other => other.to_string(),
            };
            Some((
                truncate(&k, MAX_TAG_BYTES),
                Value::String(truncate(&v, MAX_TAG_BYTES)),
            ))
        })
        .take(MAX_TAGS)
        .collect();
    (!map.is_empty()).then_some(Value::Object(map))
}

/// A client fingerprint: strings (numbers are stringified, as Sentry does), at most
/// [`MAX_FINGERPRINT_PARTS`] parts.
fn fingerprint(v: Option<&Value>) -> Option<Vec<String>> {
    let parts: Vec<String> = v?
        .as_array()?
        .iter()
        .filter_map(|p| match p {
            Value::String(s) => Some(truncate(s, MAX_SHORT_FIELD_BYTES)),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        })
        .take(MAX_FINGERPRINT_PARTS)
        .collect();
    (!parts.is_empty()).then_some(parts)
}

/// Header or parameter names whose values are secrets.
fn is_sensitive(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "auth",
        "cookie",
        "token",
        "secret",
        "password",
        "passwd",
        "session",
        "api-key",
        "api_key",
        "apikey",
        "csrf",
        "xsrf",
        "signature",
        "credential",
    ]
    .iter()
    .any(|s| n.contains(s))
}

const FILTERED: &str = "[Filtered]";

/// Headers as an object of strings, from an object or a list of pairs, secrets filtered.
fn headers(v: &Value) -> Option<Map<String, Value>> {
    let pairs: Vec<(&str, &Value)> = match v {
        Value::Object(m) => m.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        Value::Array(list) => list
            .iter()
            .filter_map(|p| {
                let p = p.as_array()?;
                Some((p.first()?.as_str()?, p.get(1)?))
            })
            .collect(),
        _ => return None,
    };
    Some(
        pairs
            .into_iter()
            .map(|(k, v)| {
                let v = if is_sensitive(k) {
                    Value::String(FILTERED.into())
                } else {
                    v.clone()
                };
                (k.to_string(), v)
            })
            .collect(),
    )
}

fn header_value(v: Option<&Value>, name: &str) -> Option<String> {
    headers(v?)?
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str().map(str::to_string))
}

/// The request without its body, cookies and environment, with secret headers and query
/// parameters filtered: server SDKs filter by default, but not every user keeps the default.
fn scrub_request(r: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    for key in ["url", "method"] {
        if let Some(v) = r.get(key).filter(|v| v.is_string()) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(h) = r.get("headers").and_then(headers) {
        out.insert("headers".into(), Value::Object(h));
    }
    let query = match r.get("query_string") {
        Some(Value::String(q)) => Some(
            q.split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if is_sensitive(k) => format!("{k}={FILTERED}"),
                    _ => pair.to_string(),
                })
                .collect::<Vec<_>>()
                .join("&"),
        ),
        Some(Value::Array(list)) => Some(
            list.iter()
                .filter_map(|p| {
                    let p = p.as_array()?;
                    let k = p.first()?.as_str()?;
                    let v = if is_sensitive(k) {
                        FILTERED.to_string()
                    } else {
                        p.get(1)?.as_str()?.to_string()
                    };
                    Some(format!("{k}={v}"))
                })
                .collect::<Vec<_>>()
                .join("&"),
        ),
        _ => None,
    };
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        out.insert("query_string".into(), Value::String(q));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received() -> Received {
        Received {
            project_id: Uuid::from_u128(1),
            received_at: Utc::now(),
            ip: Some("10.0.0.1".into()),
            user_agent: Some("sentry.python/2.0".into()),
            event_id: None,
        }
    }

    fn python_exception() -> Value {
        json!({
            "event_id": "9ec79c33ec9942ab8353589fcb2e04dc",
            "platform": "python",
            "level": "fatal",
            "environment": "staging",
            "release": "shop@1.2.3",
            "server_name": "web-7",
            "tags": {"region": "eu", "attempt": 3},
            "user": {"id": "42", "ip_address": "{{auto}}"},
            "request": {
                "url": "https://shop.example.com/cart",
                "method": "POST",
                "headers": {"Authorization": "Bearer s3cret", "Cookie": "sid=1", "User-Agent": "Mozilla/5.0", "X-Api-Key": "k"},
                "query_string": "page=2&token=abc",
                "data": {"password": "hunter2"},
                "cookies": {"sid": "1"}
            },
            "extra": {"cart_size": 3},
            "exception": {"values": [
                {"type": "KeyError", "value": "'sku'", "stacktrace": {"frames": [
                    {"module": "shop.cart", "function": "load", "filename": "shop/cart.py", "lineno": 10, "in_app": true}
                ]}},
                {"type": "CartError", "value": "cannot load cart 17", "module": "shop.errors",
                 "mechanism": {"type": "django", "handled": false},
                 "stacktrace": {"frames": [
                    {"module": "django.core.handlers", "function": "inner", "filename": "django/core/handlers/exception.py", "lineno": 55, "in_app": false},
                    {"module": "shop.views", "function": "checkout", "filename": "shop/views.py", "lineno": 88, "colno": 4, "in_app": true}
                ]}}
            ]}
        })
    }

    #[test]
    fn an_exception_event_maps_to_the_innermost_exception_and_its_frames() {
        let e = map_event(&python_exception(), &received()).unwrap();
        assert_eq!(
            e.event_id,
            Uuid::parse_str("9ec79c33-ec99-42ab-8353-589fcb2e04dc").unwrap()
        );
        assert_eq!(e.message, "CartError: cannot load cart 17");
        assert_eq!(e.source, "python");
        assert_eq!(e.level, Level::Error);
        assert_eq!(e.environment, "staging");
        assert_eq!(e.release.as_deref(), Some("shop@1.2.3"));
        let frames = e.frames.unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].function.as_deref(), Some("checkout"));
        assert_eq!(frames[1].in_app, Some(true));
        assert_eq!(frames[1].colno, Some(4));
        let st = e.stack_trace.unwrap();
        assert!(st.contains("KeyError: 'sku'"), "{st}");
        assert!(
            st.contains("File \"shop/views.py\", line 88, in checkout\nCartError"),
            "{st}"
        );
        assert_eq!(e.url.as_deref(), Some("https://shop.example.com/cart"));
        assert_eq!(e.user_agent.as_deref(), Some("Mozilla/5.0"));
        assert_eq!(
            e.ip_address.as_deref(),
            Some("10.0.0.1"),
            "{{auto}} is the peer"
        );
        let ctx = e.context.unwrap();
        assert_eq!(ctx["tags"], json!({"region": "eu", "attempt": "3"}));
        assert_eq!(ctx["server_name"], "web-7");
        assert_eq!(ctx["level"], "fatal");
        assert_eq!(ctx["exception"]["mechanism"]["handled"], false);
        let req = &ctx["request"];
        assert_eq!(req["headers"]["Authorization"], FILTERED);
        assert_eq!(req["headers"]["Cookie"], FILTERED);
        assert_eq!(req["headers"]["X-Api-Key"], FILTERED);
        assert_eq!(req["headers"]["User-Agent"], "Mozilla/5.0");
        assert_eq!(req["query_string"], "page=2&token=[Filtered]");
        assert!(req.get("data").is_none() && req.get("cookies").is_none());
        assert_eq!(e.extra, Some(json!({"cart_size": 3})));
    }

    #[test]
    fn a_message_event_takes_its_formatted_message_and_defaults() {
        let e = map_event(
            &json!({"message": "plain", "level": "info", "user": {"ip_address": "1.2.3.4"}}),
            &received(),
        )
        .unwrap();
        assert_eq!(e.message, "plain");
        assert_eq!(e.level, Level::Info);
        assert_eq!(e.environment, "production");
        assert_eq!(e.source, "other");
        assert_eq!(e.ip_address.as_deref(), Some("1.2.3.4"));
        assert_eq!(e.user_agent.as_deref(), Some("sentry.python/2.0"));
        assert!(e.frames.is_none() && e.stack_trace.is_none());
        let e = map_event(
            &json!({"logentry": {"message": "user %s", "params": [1], "formatted": "user 1"}}),
            &received(),
        )
        .unwrap();
        assert_eq!(e.message, "user 1");
        assert_eq!(e.level, Level::Error);
        let e = map_event(&json!({}), &received()).unwrap();
        assert_eq!(e.message, "<unlabeled event>");
    }

    #[test]
    fn the_client_fingerprint_and_a_legacy_exception_list_are_read() {
        let e = map_event(
            &json!({
                "fingerprint": ["{{ default }}", "tenant-a", 7],
                "exception": [{"type": "Boom"}],
                "stacktrace": {"frames": [{"function": "main", "abs_path": "/app/main.go", "in_app": true}]},
            }),
            &received(),
        )
        .unwrap();
        assert_eq!(
            e.fingerprint,
            Some(vec!["{{ default }}".into(), "tenant-a".into(), "7".into()])
        );
        assert_eq!(e.message, "Boom");
        let frames = e.frames.unwrap();
        assert_eq!(frames[0].filename.as_deref(), Some("/app/main.go"));
    }

    #[test]
    fn the_crashed_threads_stack_is_used_when_nothing_else_has_one() {
        let e = map_event(
            &json!({"threads": {"values": [
                {"id": 1, "stacktrace": {"frames": [{"function": "idle"}]}},
                {"id": 2, "crashed": true, "stacktrace": {"frames": [{"function": "crash"}]}}
            ]}}),
            &received(),
        )
        .unwrap();
        assert_eq!(e.frames.unwrap()[0].function.as_deref(), Some("crash"));
    }

    #[test]
    fn the_envelope_event_id_is_used_when_the_item_has_none_and_junk_is_refused() {
        let id = Uuid::now_v7();
        let mut r = received();
        r.event_id = Some(id);
        assert_eq!(
            map_event(&json!({"message": "x"}), &r).unwrap().event_id,
            id
        );
        assert!(map_event(&json!([1]), &r).is_err());
    }

    #[test]
    fn long_fields_are_cut_at_character_boundaries() {
        let e = map_event(
            &json!({"message": "é".repeat(MAX_MESSAGE_BYTES), "release": "r".repeat(500)}),
            &received(),
        )
        .unwrap();
        assert!(e.message.len() <= MAX_MESSAGE_BYTES);
        assert_eq!(e.release.unwrap().len(), MAX_SHORT_FIELD_BYTES);
    }

    /// `depth` arrays around a number, parsed the way ingest parses a body (so within serde_json's
    /// recursion limit).
    fn nested(depth: usize) -> Value {
        serde_json::from_str(&format!("{}1{}", "[".repeat(depth), "]".repeat(depth))).unwrap()
    }

    #[test]
    fn deeply_nested_parts_are_trimmed_so_the_worker_can_decode_the_whole_message() {
        let deep = nested(125);
        let e = map_event(
            &json!({"message": "deep", "extra": {"x": deep}, "contexts": {"y": deep},
                    "user": {"z": deep}}),
            &received(),
        )
        .unwrap();
        let neighbour = map_event(&json!({"message": "fine"}), &received()).unwrap();
        let encoded = [
            serde_json::to_vec(&e).unwrap(),
            serde_json::to_vec(&neighbour).unwrap(),
        ];
        let message = faultline_shared::domain::encode_batch(encoded.iter().map(|v| v.as_slice()));
        // What the worker does with a broker message.
        let values: Vec<Value> = serde_json::from_slice(&message)
            .expect("the message decodes within the recursion limit");
        assert_eq!(values.len(), 2);
        let text = String::from_utf8(message).unwrap();
        assert!(text.contains(DEPTH_MARKER));
        // Shallow values are kept as they are.
        assert_eq!(
            map_event(&json!({"extra": {"x": nested(3)}}), &received())
                .unwrap()
                .extra,
            Some(json!({"x": [[[1]]]}))
        );
    }

    /// Arbitrary payloads through the Sentry event mapping: it never panics, and whatever it
    /// accepts encodes to an event the worker can decode.
    mod fuzz {
        use super::super::*;
        use super::received;
        use proptest::prelude::*;

        /// Arbitrary JSON values, a few levels deep, with the keys Sentry payloads use so the mapping's
        /// branches are reached rather than only its "not an object" exit.
        fn json_value() -> impl Strategy<Value = Value> {
            crate::json_strategy::json_with_keys(
                &[
                    "exception",
                    "values",
                    "stacktrace",
                    "frames",
                    "threads",
                    "message",
                    "logentry",
                    "level",
                    "tags",
                    "request",
                    "headers",
                    "user",
                    "extra",
                    "contexts",
                    "fingerprint",
                    "event_id",
                    "platform",
                    "type",
                    "value",
                    "function",
                    "in_app",
                ],
                &[],
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn any_payload_maps_or_is_refused_without_panicking(payload in json_value()) {
                if let Ok(event) = map_event(&payload, &received()) {
                    let encoded = serde_json::to_vec(&event).unwrap();
                    prop_assert!(event.message.len() <= MAX_MESSAGE_BYTES + 64);
                    let decoded: Value = serde_json::from_slice(&encoded).unwrap();
                    prop_assert!(faultline_shared::domain::decode_event(decoded).is_ok());
                }
            }

            #[test]
            fn arbitrary_bytes_as_a_store_body_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
                if let Ok(value) = serde_json::from_slice::<Value>(&body) {
                    let _ = map_event(&value, &received());
                }
            }
        }
    }
}
