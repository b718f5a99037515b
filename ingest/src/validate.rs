//! Field-by-field validation of an incoming event, so a client learns every problem of a payload
//! in one answer (`details` maps each bad field to what is wrong with it).

use crate::error::ApiError;
use faultline_shared::domain::Level;
use serde_json::{Map, Value, json};
use uuid::Uuid;

pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
pub const MAX_STACK_TRACE_BYTES: usize = 256 * 1024;
pub const MAX_SHORT_FIELD_BYTES: usize = 200;
pub const MAX_URL_BYTES: usize = 4096;
pub const MAX_FINGERPRINT_PARTS: usize = 20;
/// Deepest nesting of `context` (objects and arrays).
pub const MAX_CONTEXT_DEPTH: usize = 10;
/// Most keys in `context`, counted at every depth.
pub const MAX_CONTEXT_KEYS: usize = 500;
/// Longest context key; longer keys are refused (a key is a name, not data).
pub const MAX_CONTEXT_KEY_BYTES: usize = 200;
/// Longest context string value; longer values are truncated with a marker.
pub const MAX_CONTEXT_STRING_BYTES: usize = 16 * 1024;

/// Cuts `s` to at most `max` bytes (on a character boundary) and says how much was cut, so long
/// messages and stack traces are kept, not refused.
pub fn truncate_with_marker(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let cut = s.len();
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(&format!("…[truncated {} bytes]", cut - end));
}

/// Checks the shape limits of `context` (depth, key count, key length) and truncates long string
/// values in place. `Err` says what is wrong.
fn check_context(value: &mut Value, depth: usize, keys: &mut usize) -> Result<(), String> {
    if depth > MAX_CONTEXT_DEPTH {
        return Err(format!(
            "must be nested at most {MAX_CONTEXT_DEPTH} levels deep"
        ));
    }
    match value {
        Value::Object(map) => {
            *keys += map.len();
            if *keys > MAX_CONTEXT_KEYS {
                return Err(format!("must have at most {MAX_CONTEXT_KEYS} keys in all"));
            }
            if let Some(k) = map.keys().find(|k| k.len() > MAX_CONTEXT_KEY_BYTES) {
                let shown: String = k.chars().take(40).collect();
                return Err(format!(
                    "key {shown:?}... is longer than {MAX_CONTEXT_KEY_BYTES} bytes"
                ));
            }
            map.values_mut()
                .try_for_each(|v| check_context(v, depth + 1, keys))
        }
        Value::Array(items) => items
            .iter_mut()
            .try_for_each(|v| check_context(v, depth + 1, keys)),
        Value::String(s) => {
            truncate_with_marker(s, MAX_CONTEXT_STRING_BYTES);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A long text field (message, stack trace): kept, cut to `max` bytes with a marker.
fn long_text(
    obj: &mut Map<String, Value>,
    field: &str,
    max: usize,
    required: bool,
    errors: &mut FieldErrors,
) -> Option<String> {
    let mut text = if required {
        required_string(obj, field, usize::MAX, errors)
    } else {
        optional_string(obj, field, usize::MAX, errors)
    }?;
    truncate_with_marker(&mut text, max);
    Some(text)
}

/// An event as the client described it, checked; ingest adds id, time, IP and user agent.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: Option<Uuid>,
    pub level: Level,
    pub message: String,
    pub source: String,
    pub environment: String,
    pub stack_trace: Option<String>,
    pub context: Option<Value>,
    pub url: Option<String>,
    pub release: Option<String>,
    pub fingerprint: Option<Vec<String>>,
}

/// Per-field problems, in the order found.
pub type FieldErrors = Map<String, Value>;

/// The field's string, moved out of the body (which is not read again once validated).
fn optional_string(
    obj: &mut Map<String, Value>,
    field: &str,
    max: usize,
    errors: &mut FieldErrors,
) -> Option<String> {
    match obj.get_mut(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() > max => {
            errors.insert(field.into(), json!(format!("must be at most {max} bytes")));
            None
        }
        Some(Value::String(s)) => Some(std::mem::take(s)),
        Some(_) => {
            errors.insert(field.into(), json!("must be a string"));
            None
        }
    }
}

fn required_string(
    obj: &mut Map<String, Value>,
    field: &str,
    max: usize,
    errors: &mut FieldErrors,
) -> Option<String> {
    let problem = match obj.get(field) {
        None | Some(Value::Null) => Some("is required"),
        Some(Value::String(s)) if s.trim().is_empty() => Some("must not be empty"),
        _ => None,
    };
    if let Some(problem) = problem {
        errors.insert(field.into(), json!(problem));
        return None;
    }
    optional_string(obj, field, max, errors)
}

/// Checks one event object. `Err` carries the per-field details. The accepted fields are moved out
/// of `value` rather than copied (the context alone is most of an event), so the body is spent.
pub fn validate_event(value: &mut Value) -> Result<NewEvent, FieldErrors> {
    let mut errors = FieldErrors::new();
    let Some(obj) = value.as_object_mut() else {
        errors.insert("body".into(), json!("must be a JSON object"));
        return Err(errors);
    };
    let message = long_text(obj, "message", MAX_MESSAGE_BYTES, true, &mut errors);
    let source = required_string(obj, "source", MAX_SHORT_FIELD_BYTES, &mut errors);
    let level = match obj.get("level") {
        None | Some(Value::Null) => Some(Level::Error),
        Some(Value::String(s)) => match s.parse::<Level>() {
            Ok(l) => Some(l),
            Err(_) => {
                errors.insert(
                    "level".into(),
                    json!("must be one of error, warning, info, debug"),
                );
                None
            }
        },
        Some(_) => {
            errors.insert("level".into(), json!("must be a string"));
            None
        }
    };
    let environment = optional_string(obj, "environment", MAX_SHORT_FIELD_BYTES, &mut errors);
    if environment.as_deref().is_some_and(|e| e.trim().is_empty()) {
        errors.insert("environment".into(), json!("must not be empty"));
    }
    let stack_trace = long_text(
        obj,
        "stack_trace",
        MAX_STACK_TRACE_BYTES,
        false,
        &mut errors,
    );
    let url = optional_string(obj, "url", MAX_URL_BYTES, &mut errors);
    let release = optional_string(obj, "release", MAX_SHORT_FIELD_BYTES, &mut errors);
    let context = match obj.get_mut("context") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => {
            let mut context = v.take();
            match check_context(&mut context, 1, &mut 0) {
                Ok(()) => Some(context),
                Err(why) => {
                    errors.insert("context".into(), json!(why));
                    None
                }
            }
        }
        Some(_) => {
            errors.insert("context".into(), json!("must be an object"));
            None
        }
    };
    let event_id = match obj.get("event_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match Uuid::parse_str(s) {
            Ok(id) => Some(id),
            Err(_) => {
                errors.insert("event_id".into(), json!("must be a UUID"));
                None
            }
        },
        Some(_) => {
            errors.insert("event_id".into(), json!("must be a UUID string"));
            None
        }
    };
    let fingerprint = match obj.get_mut("fingerprint") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items))
            if !items.is_empty()
                && items.len() <= MAX_FINGERPRINT_PARTS
                && items
                    .iter()
                    .all(|i| i.as_str().is_some_and(|s| s.len() <= MAX_SHORT_FIELD_BYTES)) =>
        {
            Some(
                items
                    .iter_mut()
                    .filter_map(|i| match i {
                        Value::String(s) => Some(std::mem::take(s)),
                        _ => None,
                    })
                    .collect(),
            )
        }
        Some(_) => {
            errors.insert(
                "fingerprint".into(),
                json!(format!(
                    "must be an array of 1 to {MAX_FINGERPRINT_PARTS} strings of at most {MAX_SHORT_FIELD_BYTES} bytes"
                )),
            );
            None
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    match (message, source, level) {
        (Some(message), Some(source), Some(level)) => Ok(NewEvent {
            event_id,
            level,
            message,
            source,
            environment: environment.unwrap_or_else(|| "production".to_string()),
            stack_trace,
            context,
            url,
            release,
            fingerprint,
        }),
        // Unreachable: a missing required field always records an error above.
        _ => Err(errors),
    }
}

/// Checks the shape of a `POST /api/errors/batch` body (a non-empty array of at most `max`
/// events), then each event on its own: one bad event does not refuse its neighbours.
pub fn validate_batch(
    body: &mut Value,
    max: usize,
) -> Result<Vec<Result<NewEvent, FieldErrors>>, ApiError> {
    let Value::Array(items) = body else {
        return Err(ApiError::validation(
            "the batch must be a JSON array of events",
            json!({"body": "must be a JSON array"}),
        ));
    };
    if items.is_empty() {
        return Err(ApiError::validation(
            "the batch is empty",
            json!({"body": "must contain at least one event"}),
        ));
    }
    if items.len() > max {
        return Err(ApiError::validation(
            format!("a batch holds at most {max} events"),
            json!({"body": format!("has {} events; the maximum is {max}", items.len())}),
        ));
    }
    Ok(items.iter_mut().map(validate_event).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_level_and_environment() {
        let e = validate_event(&mut json!({"message": "m", "source": "backend"})).unwrap();
        assert_eq!(e.level, Level::Error);
        assert_eq!(e.environment, "production");
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let errors = validate_event(&mut json!({
            "message": "", "level": "fatal", "context": [1], "url": 5, "event_id": "nope"
        }))
        .unwrap_err();
        for field in ["message", "source", "level", "context", "url", "event_id"] {
            assert!(
                errors.contains_key(field),
                "{field} missing from {errors:?}"
            );
        }
    }

    #[test]
    fn a_non_object_is_refused() {
        assert!(
            validate_event(&mut json!([1, 2]))
                .unwrap_err()
                .contains_key("body")
        );
    }

    #[test]
    fn wrong_types_are_named() {
        let errors =
            validate_event(&mut json!({"message": 1, "source": true, "level": 3})).unwrap_err();
        assert_eq!(errors["message"], "must be a string");
        assert_eq!(errors["source"], "must be a string");
        assert_eq!(errors["level"], "must be a string");
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn long_messages_and_traces_are_truncated_with_a_marker() {
        let e = validate_event(&mut json!({
            "message": "é".repeat(MAX_MESSAGE_BYTES),
            "stack_trace": "x".repeat(MAX_STACK_TRACE_BYTES + 10),
            "source": "s",
            "context": {"blob": "y".repeat(MAX_CONTEXT_STRING_BYTES + 1)}
        }))
        .unwrap();
        assert!(e.message.len() < MAX_MESSAGE_BYTES + 40);
        assert!(
            e.message
                .ends_with(&format!("…[truncated {} bytes]", MAX_MESSAGE_BYTES))
        );
        assert!(e.stack_trace.unwrap().ends_with("…[truncated 10 bytes]"));
        assert!(
            e.context.unwrap()["blob"]
                .as_str()
                .unwrap()
                .ends_with("…[truncated 1 bytes]")
        );
    }

    #[test]
    fn deep_wide_or_long_keyed_contexts_are_refused() {
        let mut deep = json!("leaf");
        for _ in 0..MAX_CONTEXT_DEPTH + 1 {
            deep = json!({ "d": deep });
        }
        let wide: Map<String, Value> = (0..=MAX_CONTEXT_KEYS)
            .map(|i| (format!("k{i}"), json!(i)))
            .collect();
        let long_key = json!({ "k".repeat(MAX_CONTEXT_KEY_BYTES + 1): 1 });
        for context in [deep, Value::Object(wide), long_key] {
            let errors =
                validate_event(&mut json!({"message": "m", "source": "s", "context": context}))
                    .unwrap_err();
            assert!(errors["context"].is_string(), "{errors:?}");
        }
        let mut ok = json!("leaf");
        for _ in 0..MAX_CONTEXT_DEPTH - 1 {
            ok = json!({ "d": ok });
        }
        assert!(validate_event(&mut json!({"message": "m", "source": "s", "context": ok})).is_ok());
    }
}

#[cfg(test)]
mod fuzz {
    //! Arbitrary bodies through what `POST /api/errors` and `/api/errors/batch` do with them
    //! (parse, then validate): never a panic, always an event or a typed, client-facing error, and
    //! an accepted event always within the documented limits.
    use super::*;
    use crate::extract::parse_json;
    use proptest::prelude::*;

    /// JSON values a few levels deep whose keys are mostly the event's own fields, so validation
    /// gets past "not an object" and into the per-field checks.
    fn json_value() -> impl Strategy<Value = Value> {
        crate::json_strategy::json_with_keys(
            &[
                "message",
                "source",
                "level",
                "environment",
                "stack_trace",
                "context",
                "url",
                "release",
                "event_id",
                "fingerprint",
            ],
            &["error", "warning"],
        )
    }

    fn check_accepted(e: &NewEvent) {
        assert!(!e.message.is_empty() && !e.source.trim().is_empty());
        assert!(e.source.len() <= MAX_SHORT_FIELD_BYTES);
        assert!(e.message.len() <= MAX_MESSAGE_BYTES + 64);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn arbitrary_bytes_parse_to_a_value_or_a_400(body in prop::collection::vec(any::<u8>(), 0..1024)) {
            match parse_json(&body) {
                Ok(value) => {
                    let _ = validate_event(&mut value.clone()).map(|e| check_accepted(&e));
                    let _ = validate_batch(&mut value.clone(), 10);
                }
                Err(e) => prop_assert_eq!(e.status_code().as_u16(), 400),
            }
        }

        #[test]
        fn arbitrary_json_validates_or_names_the_bad_fields(value in json_value()) {
            match validate_event(&mut value.clone()) {
                Ok(e) => check_accepted(&e),
                Err(details) => prop_assert!(!details.is_empty()),
            }
            // The same value as a one-event batch, and the text form through the parser.
            let mut batch = Value::Array(vec![value.clone()]);
            let results = validate_batch(&mut batch, 10).unwrap();
            prop_assert_eq!(results.len(), 1);
            prop_assert!(parse_json(value.to_string().as_bytes()).is_ok());
        }

    }

    proptest! {
        // Each case is up to 14 events: fewer cases cover as many events as the tests above.
        #![proptest_config(ProptestConfig::with_cases(800))]

        #[test]
        fn batches_validate_element_by_element(items in prop::collection::vec(json_value(), 0..14)) {
            let n = items.len();
            match validate_batch(&mut Value::Array(items), 10) {
                Ok(results) => prop_assert!((1..=10).contains(&results.len()) && results.len() == n),
                Err(e) => {
                    prop_assert!(n == 0 || n > 10);
                    prop_assert_eq!(e.status_code().as_u16(), 400);
                }
            }
        }
    }
}
