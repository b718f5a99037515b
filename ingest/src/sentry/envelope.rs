//! The Sentry envelope: a JSON header line, then items, each a JSON header line and a payload.
//! A payload is `length` bytes when the item header says so, otherwise it runs to the next newline
//! (or the end). See <https://develop.sentry.dev/sdk/data-model/envelopes/>.

use serde_json::{Map, Value};

/// A parsed envelope; payloads borrow from the body.
#[derive(Debug)]
pub struct Envelope<'a> {
    pub header: Map<String, Value>,
    pub items: Vec<Item<'a>>,
}

#[derive(Debug)]
pub struct Item<'a> {
    /// `event`, `transaction`, `session`, `attachment`, `client_report`, ...
    pub kind: String,
    pub payload: &'a [u8],
}

/// Why an envelope could not be read; the message names the line, for the SDK author's sake.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the envelope header (line 1) is not a JSON object")]
    Header,
    #[error("the header of item {0} is not a JSON object with a string \"type\"")]
    ItemHeader(usize),
    #[error("item {0} declares a length past the end of the envelope")]
    Length(usize),
    #[error("item {0} is not followed by a newline")]
    MissingNewline(usize),
}

/// Most items one envelope may carry; SDKs send a handful.
pub const MAX_ITEMS: usize = 1000;

/// The line starting at `pos` (without its newline) and where the next one starts.
fn line(body: &[u8], pos: usize) -> (&[u8], usize) {
    match body[pos..].iter().position(|&b| b == b'\n') {
        Some(n) => (&body[pos..pos + n], pos + n + 1),
        None => (&body[pos..], body.len()),
    }
}

fn object(line: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Value>(line).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

pub fn parse(body: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    let (first, mut pos) = line(body, 0);
    let header = object(first).ok_or(EnvelopeError::Header)?;
    let mut items = Vec::new();
    while pos < body.len() {
        let index = items.len() + 1;
        let (head, next) = line(body, pos);
        pos = next;
        // Blank lines between items (and a trailing one) are tolerated.
        if head.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if items.len() >= MAX_ITEMS {
            return Err(EnvelopeError::ItemHeader(index));
        }
        let head = object(head).ok_or(EnvelopeError::ItemHeader(index))?;
        let kind = head
            .get("type")
            .and_then(Value::as_str)
            .ok_or(EnvelopeError::ItemHeader(index))?
            .to_string();
        let payload = match head.get("length") {
            Some(Value::Null) | None => {
                let (payload, next) = line(body, pos);
                pos = next;
                payload
            }
            Some(length) => {
                let length = length
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or(EnvelopeError::ItemHeader(index))?;
                let end = pos
                    .checked_add(length)
                    .filter(|&end| end <= body.len())
                    .ok_or(EnvelopeError::Length(index))?;
                let payload = &body[pos..end];
                pos = end;
                match body.get(pos) {
                    None => {}
                    Some(b'\n') => pos += 1,
                    Some(_) => return Err(EnvelopeError::MissingNewline(index)),
                }
                payload
            }
        };
        items.push(Item { kind, payload });
    }
    Ok(Envelope { header, items })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_with_and_without_length_are_read() {
        let body = b"{\"event_id\":\"9ec79c33ec9942ab8353589fcb2e04dc\"}\n\
{\"type\":\"attachment\",\"length\":10}\n\
0123456\n89\n\
{\"type\":\"event\"}\n\
{\"message\":\"hi\"}\n";
        let env = parse(body).unwrap();
        assert_eq!(env.items.len(), 2);
        assert_eq!(env.items[0].kind, "attachment");
        assert_eq!(env.items[0].payload, b"0123456\n89");
        assert_eq!(env.items[1].kind, "event");
        assert_eq!(env.items[1].payload, b"{\"message\":\"hi\"}");
        assert!(env.header.contains_key("event_id"));
    }

    #[test]
    fn the_last_item_may_end_without_a_newline() {
        let env = parse(b"{}\n{\"type\":\"event\",\"length\":2}\n{}").unwrap();
        assert_eq!(env.items[0].payload, b"{}");
        let env = parse(b"{}\n{\"type\":\"session\"}\n{\"sid\":1}").unwrap();
        assert_eq!(env.items[0].payload, b"{\"sid\":1}");
        assert!(parse(b"{}").unwrap().items.is_empty());
    }

    #[test]
    fn malformed_envelopes_are_refused_with_the_reason() {
        assert_eq!(parse(b"not json\n").unwrap_err(), EnvelopeError::Header);
        assert_eq!(
            parse(b"{}\n{\"length\":2}\n{}").unwrap_err(),
            EnvelopeError::ItemHeader(1)
        );
        assert_eq!(
            parse(b"{}\n{\"type\":\"event\",\"length\":99}\n{}").unwrap_err(),
            EnvelopeError::Length(1)
        );
        assert_eq!(
            parse(b"{}\n{\"type\":\"event\",\"length\":1}\n{}").unwrap_err(),
            EnvelopeError::MissingNewline(1)
        );
    }
}

#[cfg(test)]
mod fuzz {
    //! Arbitrary bytes, and arbitrary envelope-shaped text, through the envelope parser: never a
    //! panic, and every item it returns lies inside the body (payloads borrow from it).
    use super::*;
    use proptest::prelude::*;

    fn within(body: &[u8], payload: &[u8]) -> bool {
        let start = body.as_ptr() as usize;
        let p = payload.as_ptr() as usize;
        payload.is_empty() || (p >= start && p + payload.len() <= start + body.len())
    }

    /// One line of an envelope: a header with a type and maybe a (possibly wrong) length, or junk.
    fn line() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z_]{0,12}".prop_map(|t| format!("{{\"type\":\"{t}\"}}")),
            ("[a-z]{0,8}", any::<u16>())
                .prop_map(|(t, n)| format!("{{\"type\":\"{t}\",\"length\":{n}}}")),
            Just("{\"type\":\"event\",\"length\":-1}".to_string()),
            Just("{\"type\":\"event\",\"length\":18446744073709551615}".to_string()),
            Just("{}".to_string()),
            Just(String::new()),
            "\\PC{0,30}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..1024)) {
            if let Ok(env) = parse(&body) {
                prop_assert!(env.items.len() <= MAX_ITEMS);
                for item in &env.items {
                    prop_assert!(within(&body, item.payload));
                }
            }
        }

        #[test]
        fn envelope_shaped_text_parses_or_names_the_bad_item(
            lines in prop::collection::vec(line(), 0..12),
            newline_at_end in any::<bool>(),
        ) {
            let mut body = format!("{{}}\n{}", lines.join("\n"));
            if newline_at_end {
                body.push('\n');
            }
            match parse(body.as_bytes()) {
                Ok(env) => {
                    for item in &env.items {
                        prop_assert!(within(body.as_bytes(), item.payload));
                    }
                }
                Err(EnvelopeError::Header) => prop_assert!(false, "the header line is valid"),
                Err(EnvelopeError::ItemHeader(n) | EnvelopeError::Length(n) | EnvelopeError::MissingNewline(n)) => {
                    prop_assert!(n >= 1 && n <= lines.len());
                }
            }
        }
    }
}
