//! `ErrorEvent`: the wire contract on the queue between ingest and worker. One broker message
//! carries a JSON array of events (ingest's group commit); the worker decodes each element on its
//! own, so one bad element is dead-lettered without taking its neighbours with it.

use crate::fingerprint::Frame;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Level;

/// One accepted occurrence, stamped by ingest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEvent {
    /// UUID v7 given by ingest (or the SDK's own id on the Sentry path): the deduplication key.
    pub event_id: Uuid,
    pub project_id: Uuid,
    pub received_at: DateTime<Utc>,
    pub level: Level,
    pub message: String,
    pub source: String,
    pub environment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_trace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// A client-supplied grouping override (`{{ default }}` stands for the default fingerprint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Vec<String>>,
    /// Structured frames, when the client sent them (Sentry SDKs do); otherwise the worker parses
    /// `stack_trace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<Vec<Frame>>,
    /// Anything else worth keeping with the occurrence (tags, user, request, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Value>,
}

/// Joins already-serialised events into the JSON array one broker message carries. Events are
/// serialised by the request that accepted them, so this costs a copy, not a re-encode.
pub fn encode_batch<'a>(events: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    out.push(b'[');
    for (i, e) in events.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(e);
    }
    out.push(b']');
    out
}

/// Decodes one element of a broker message.
pub fn decode_event(value: serde_json::Value) -> Result<ErrorEvent, serde_json::Error> {
    serde_json::from_value(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ErrorEvent {
        ErrorEvent {
            event_id: Uuid::now_v7(),
            project_id: Uuid::from_u128(1),
            received_at: Utc::now(),
            level: Level::Warning,
            message: "boom".into(),
            source: "backend".into(),
            environment: "production".into(),
            stack_trace: None,
            context: Some(serde_json::json!({"a": 1})),
            url: None,
            user_agent: None,
            ip_address: None,
            release: None,
            fingerprint: None,
            frames: None,
            extra: None,
        }
    }

    #[test]
    fn a_batch_decodes_back_to_its_events() {
        let events = [sample(), sample()];
        let encoded: Vec<Vec<u8>> = events
            .iter()
            .map(|e| serde_json::to_vec(e).unwrap())
            .collect();
        let body = encode_batch(encoded.iter().map(|v| v.as_slice()));
        let values: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        let decoded: Vec<ErrorEvent> = values
            .into_iter()
            .map(|v| decode_event(v).unwrap())
            .collect();
        assert_eq!(decoded, events);
    }

    #[test]
    fn an_element_without_required_fields_does_not_decode() {
        assert!(decode_event(serde_json::json!({"message": "x"})).is_err());
    }
}
