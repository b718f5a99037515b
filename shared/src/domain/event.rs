//! `ErrorEvent`: the wire contract on the queue between ingest and worker. One broker message
//! carries a JSON array of events (ingest's group commit); the worker decodes each element on its
//! own, so one bad element is dead-lettered without taking its neighbours with it.

use crate::fingerprint::Frame;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::Level;

/// One accepted occurrence, stamped by ingest.
///
/// `J` is how the free-form JSON (`context`, `extra`) is held. Ingest builds and scrubs it as a
/// tree ([`serde_json::Value`], the default); the worker only stores it, so it keeps the text it
/// arrived as ([`StoredEvent`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEvent<J = serde_json::Value> {
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
    pub context: Option<J>,
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
    pub extra: Option<J>,
}

/// An event as the worker holds it: `context` and `extra` stay the JSON text of the broker
/// message. The worker never looks inside them, and Postgres stores them as that text (json), so
/// a tree per event would cost the worker a parse, an allocation per key and value (several
/// times the text's size, for every event of the batches in hand) and a re-serialisation to bind
/// it (benches/RESULTS.md, sixth session).
pub type StoredEvent = ErrorEvent<Box<RawValue>>;

impl ErrorEvent {
    /// The event as the worker holds it. Tests and tools that build events as trees use this to
    /// hand them to the worker's unit of work.
    pub fn into_stored(self) -> StoredEvent {
        let raw = |v: serde_json::Value| {
            serde_json::value::to_raw_value(&v).expect("a JSON tree always serialises")
        };
        ErrorEvent {
            event_id: self.event_id,
            project_id: self.project_id,
            received_at: self.received_at,
            level: self.level,
            message: self.message,
            source: self.source,
            environment: self.environment,
            stack_trace: self.stack_trace,
            context: self.context.map(raw),
            url: self.url,
            user_agent: self.user_agent,
            ip_address: self.ip_address,
            release: self.release,
            fingerprint: self.fingerprint,
            frames: self.frames,
            extra: self.extra.map(raw),
        }
    }
}

impl StoredEvent {
    /// Replaces each NUL character with U+FFFD (the replacement character), in every string of
    /// the event, JSON keys included. JSON and Rust strings allow NUL; Postgres stores it neither
    /// in text nor in jsonb, so an event carrying one would fail its batch's transaction on every
    /// retry and hold up the whole queue behind it. Free when there is none (a byte search).
    pub fn replace_nul(&mut self) {
        fn text(s: &mut String) {
            if s.contains('\0') {
                *s = s.replace('\0', "\u{FFFD}");
            }
        }
        fn opt(s: &mut Option<String>) {
            if let Some(s) = s {
                text(s);
            }
        }
        fn tree(v: &mut serde_json::Value) {
            match v {
                serde_json::Value::String(s) => text(s),
                serde_json::Value::Array(items) => items.iter_mut().for_each(tree),
                serde_json::Value::Object(map) => {
                    let entries = std::mem::take(map);
                    for (mut key, mut value) in entries {
                        text(&mut key);
                        tree(&mut value);
                        map.insert(key, value);
                    }
                }
                _ => {}
            }
        }
        fn json(raw: &mut Option<Box<RawValue>>) {
            // In JSON text a NUL can only be the escape `\u0000` (a raw control character is
            // invalid JSON); an escaped backslash before `u0000` makes this a false alarm, which
            // costs a parse and changes nothing.
            let Some(r) = raw.as_ref().filter(|r| r.get().contains("\\u0000")) else {
                return;
            };
            if let Ok(mut value) = serde_json::from_str::<serde_json::Value>(r.get()) {
                tree(&mut value);
                if let Ok(clean) = serde_json::value::to_raw_value(&value) {
                    *raw = Some(clean);
                }
            }
        }
        text(&mut self.message);
        text(&mut self.source);
        text(&mut self.environment);
        opt(&mut self.stack_trace);
        opt(&mut self.url);
        opt(&mut self.user_agent);
        opt(&mut self.ip_address);
        opt(&mut self.release);
        if let Some(parts) = &mut self.fingerprint {
            parts.iter_mut().for_each(text);
        }
        if let Some(frames) = &mut self.frames {
            for f in frames {
                opt(&mut f.module);
                opt(&mut f.function);
                opt(&mut f.filename);
            }
        }
        json(&mut self.context);
        json(&mut self.extra);
    }
}

/// [`ErrorEvent::into_stored`] for a slice.
pub fn stored(events: &[ErrorEvent]) -> Vec<StoredEvent> {
    events
        .iter()
        .cloned()
        .map(ErrorEvent::into_stored)
        .collect()
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

/// A broker message decoded: its events, and the elements that are not events (kept whole, for
/// the dead-letter queue).
#[derive(Debug, Default)]
pub struct DecodedMessage {
    pub events: Vec<StoredEvent>,
    pub poison: Vec<serde_json::Value>,
}

/// Decodes a whole broker message, each element straight from its bytes into an [`ErrorEvent`]
/// (no intermediate JSON tree per event, no copy of it kept for the dead-letter case); `None`
/// when the message is not a JSON array at all.
pub fn decode_message(data: &[u8]) -> Option<DecodedMessage> {
    let items: Vec<&serde_json::value::RawValue> = serde_json::from_slice(data).ok()?;
    let mut out = DecodedMessage {
        events: Vec::with_capacity(items.len()),
        poison: Vec::new(),
    };
    for raw in items {
        match serde_json::from_str::<StoredEvent>(raw.get()) {
            Ok(mut event) => {
                event.replace_nul();
                out.events.push(event);
            }
            // The element parsed as part of the array, so it parses alone as a JSON value.
            Err(_) => out.poison.push(
                serde_json::from_str(raw.get())
                    .unwrap_or_else(|_| serde_json::Value::String(raw.get().to_string())),
            ),
        }
    }
    Some(out)
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
    fn a_message_keeps_context_and_extra_as_the_json_it_carried() {
        let mut event = sample();
        event.context = Some(serde_json::json!({"user": {"id": 7, "tags": ["a", "é"]}, "n": 1.5}));
        event.extra = Some(serde_json::json!([null, true, "x"]));
        let one = serde_json::to_vec(&event).unwrap();
        let decoded = decode_message(&encode_batch([one.as_slice()])).unwrap();
        let stored = &decoded.events[0];
        let context: serde_json::Value =
            serde_json::from_str(stored.context.as_ref().unwrap().get()).unwrap();
        let extra: serde_json::Value =
            serde_json::from_str(stored.extra.as_ref().unwrap().get()).unwrap();
        assert_eq!(Some(context), event.context);
        assert_eq!(Some(extra), event.extra);
        assert_eq!(stored.message, event.message);
        // A tree handed to the worker directly holds the same text.
        let converted = event.clone().into_stored();
        assert_eq!(
            converted.context.unwrap().get(),
            serde_json::to_string(event.context.as_ref().unwrap()).unwrap()
        );
    }

    #[test]
    fn nul_characters_are_replaced_everywhere_postgres_would_refuse_them() {
        let mut event = sample();
        event.message = "a\0b".into();
        event.environment = "\0".into();
        event.stack_trace = Some("at f\0".into());
        event.release = Some("1\0".into());
        event.fingerprint = Some(vec!["x\0".into()]);
        event.frames = Some(vec![Frame {
            module: Some("m\0".into()),
            function: Some("f\0".into()),
            filename: Some("a\0.js".into()),
            lineno: Some(1),
            colno: None,
            in_app: None,
        }]);
        event.context = Some(serde_json::json!({"k\0": ["v\0", {"deep": "\0"}], "ok": 1}));
        // An escaped backslash followed by `u0000` is no NUL and stays as it is.
        event.extra = Some(serde_json::json!({"path": "C:\\u0000"}));
        let one = serde_json::to_vec(&event).unwrap();
        let decoded = decode_message(&encode_batch([one.as_slice()])).unwrap();
        let e = &decoded.events[0];
        let r = "\u{FFFD}";
        assert_eq!(e.message, format!("a{r}b"));
        assert_eq!(e.environment, r);
        assert_eq!(e.stack_trace.as_deref(), Some(format!("at f{r}").as_str()));
        assert_eq!(e.release.as_deref(), Some(format!("1{r}").as_str()));
        assert_eq!(e.fingerprint.as_ref().unwrap()[0], format!("x{r}"));
        let frame = &e.frames.as_ref().unwrap()[0];
        assert_eq!(frame.filename.as_deref(), Some(format!("a{r}.js").as_str()));
        let context: serde_json::Value =
            serde_json::from_str(e.context.as_ref().unwrap().get()).unwrap();
        assert_eq!(
            context,
            serde_json::json!({format!("k{r}"): [format!("v{r}"), {"deep": r}], "ok": 1})
        );
        let extra: serde_json::Value =
            serde_json::from_str(e.extra.as_ref().unwrap().get()).unwrap();
        assert_eq!(extra, serde_json::json!({"path": "C:\\u0000"}));
        // Nothing else in the event changed, and an event without NUL is left as it was.
        assert_eq!(e.event_id, event.event_id);
        let clean = serde_json::to_vec(&sample()).unwrap();
        let again = decode_message(&encode_batch([clean.as_slice()])).unwrap();
        assert_eq!(
            serde_json::to_value(&again.events[0]).unwrap(),
            serde_json::from_slice::<serde_json::Value>(&clean).unwrap()
        );
    }

    #[test]
    fn an_element_without_required_fields_does_not_decode() {
        assert!(decode_event(serde_json::json!({"message": "x"})).is_err());
    }
}

#[cfg(test)]
mod fuzz {
    //! What the worker does with a broker message ([`decode_message`]: a JSON array, then each
    //! element decoded on its own), over arbitrary bytes and arbitrary event-shaped JSON: never a panic, always events or
    //! a typed error; and every event survives encode → decode unchanged.
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// A stored event back as the tree form, to compare with what was sent.
    fn as_tree(event: &StoredEvent) -> ErrorEvent {
        serde_json::from_slice(&serde_json::to_vec(event).unwrap()).unwrap()
    }

    /// Event-shaped objects: the right keys with values of any (often wrong) type.
    fn event_like() -> impl Strategy<Value = Value> {
        let value = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            Just(json!("error")),
            Just(json!("0190a6f4-6e5b-7000-8000-000000000001")),
            Just(json!("2026-11-30T02:00:00Z")),
            "\\PC{0,20}".prop_map(Value::String),
            Just(json!([{"function": "f", "module": "m"}])),
            Just(json!({"k": [1, {"x": null}]})),
        ];
        let key = prop_oneof![
            Just("event_id"),
            Just("project_id"),
            Just("received_at"),
            Just("level"),
            Just("message"),
            Just("source"),
            Just("environment"),
            Just("stack_trace"),
            Just("context"),
            Just("frames"),
            Just("fingerprint"),
            Just("extra"),
            Just("other"),
        ];
        prop::collection::btree_map(key, value, 0..13)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn arbitrary_bytes_never_panic_the_message_decoder(data in prop::collection::vec(any::<u8>(), 0..1024)) {
            if let Some(m) = decode_message(&data) {
                prop_assert!(m.events.len() + m.poison.len() <= data.len());
            }
        }

    }

    proptest! {
        // Each case is a message of several events: fewer cases, as many events.
        #![proptest_config(ProptestConfig::with_cases(800))]

        #[test]
        fn event_shaped_json_decodes_or_is_a_typed_error(items in prop::collection::vec(event_like(), 0..8)) {
            let body = serde_json::to_vec(&items).unwrap();
            let decoded = decode_message(&body).expect("an array decodes");
            prop_assert_eq!(decoded.events.len() + decoded.poison.len(), items.len());
            // Straight from the bytes, an element decodes exactly when it does as a JSON value.
            let as_values = items.iter().filter(|v| decode_event((*v).clone()).is_ok()).count();
            prop_assert_eq!(decoded.events.len(), as_values);
            for event in decoded.events {
                // Whatever decodes re-encodes to the same event.
                let value = serde_json::to_value(&event).unwrap();
                let again = decode_event(value.clone()).unwrap();
                prop_assert_eq!(serde_json::to_value(&again).unwrap(), value);
            }
        }

        #[test]
        fn every_event_survives_a_round_trip_through_a_batch(
            message in "\\PC{0,200}",
            source in "\\PC{1,20}",
            extra_depth in 0usize..40,
        ) {
            let mut extra = json!("leaf");
            for _ in 0..extra_depth {
                extra = json!({ "d": extra });
            }
            let event = ErrorEvent {
                event_id: Uuid::now_v7(),
                project_id: Uuid::from_u128(7),
                received_at: Utc::now(),
                level: Level::Error,
                message,
                source,
                environment: "production".into(),
                stack_trace: None,
                context: None,
                url: None,
                user_agent: None,
                ip_address: None,
                release: None,
                fingerprint: None,
                frames: None,
                extra: Some(extra),
            };
            let one = serde_json::to_vec(&event).unwrap();
            let body = encode_batch([one.as_slice(), one.as_slice()]);
            let decoded = decode_message(&body).unwrap();
            prop_assert_eq!(decoded.events.len(), 2);
            prop_assert!(decoded.poison.is_empty());
            for d in decoded.events {
                prop_assert_eq!(as_tree(&d), event.clone());
            }
        }
    }
}
