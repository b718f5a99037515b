//! Field-by-field validation of an incoming event, so a client learns every problem of a payload
//! in one answer (`details` maps each bad field to what is wrong with it).

use faultline_shared::domain::Level;
use serde_json::{Map, Value, json};
use uuid::Uuid;

pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
pub const MAX_STACK_TRACE_BYTES: usize = 256 * 1024;
pub const MAX_SHORT_FIELD_BYTES: usize = 200;
pub const MAX_URL_BYTES: usize = 4096;
pub const MAX_FINGERPRINT_PARTS: usize = 20;

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

fn optional_string(
    obj: &Map<String, Value>,
    field: &str,
    max: usize,
    errors: &mut FieldErrors,
) -> Option<String> {
    match obj.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() > max => {
            errors.insert(field.into(), json!(format!("must be at most {max} bytes")));
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.insert(field.into(), json!("must be a string"));
            None
        }
    }
}

fn required_string(
    obj: &Map<String, Value>,
    field: &str,
    max: usize,
    errors: &mut FieldErrors,
) -> Option<String> {
    match obj.get(field) {
        None | Some(Value::Null) => {
            errors.insert(field.into(), json!("is required"));
            None
        }
        Some(Value::String(s)) if s.trim().is_empty() => {
            errors.insert(field.into(), json!("must not be empty"));
            None
        }
        _ => optional_string(obj, field, max, errors),
    }
}

/// Checks one event object. `Err` carries the per-field details.
pub fn validate_event(value: &Value) -> Result<NewEvent, FieldErrors> {
    let mut errors = FieldErrors::new();
    let Some(obj) = value.as_object() else {
        errors.insert("body".into(), json!("must be a JSON object"));
        return Err(errors);
    };
    let message = required_string(obj, "message", MAX_MESSAGE_BYTES, &mut errors);
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
    let stack_trace = optional_string(obj, "stack_trace", MAX_STACK_TRACE_BYTES, &mut errors);
    let url = optional_string(obj, "url", MAX_URL_BYTES, &mut errors);
    let release = optional_string(obj, "release", MAX_SHORT_FIELD_BYTES, &mut errors);
    let context = match obj.get("context") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
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
    let fingerprint = match obj.get("fingerprint") {
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
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_string))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_level_and_environment() {
        let e = validate_event(&json!({"message": "m", "source": "backend"})).unwrap();
        assert_eq!(e.level, Level::Error);
        assert_eq!(e.environment, "production");
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let errors = validate_event(&json!({
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
            validate_event(&json!([1, 2]))
                .unwrap_err()
                .contains_key("body")
        );
    }

    #[test]
    fn wrong_types_are_named() {
        let errors =
            validate_event(&json!({"message": 1, "source": true, "level": 3})).unwrap_err();
        assert_eq!(errors["message"], "must be a string");
        assert_eq!(errors["source"], "must be a string");
        assert_eq!(errors["level"], "must be a string");
    }
}
