//! Scrubbing of secrets from events in ingest, before they are published: neither the broker nor
//! the database ever holds them.
//!
//! - Context values under a sensitive key (password, secret, token, api_key, authorization,
//!   cookie, session and the like, matched case-insensitively as substrings, `-` read as `_`),
//!   at any depth, become `[Filtered]`; so do such query parameters of the event's URL.
//! - Card-like numbers (13 to 19 digits, optionally grouped by spaces or dashes, passing the Luhn
//!   check) in the message, stack trace and every context string become `[Filtered]`.
//!
//! The key list is configurable (`SCRUB_FIELDS` adds to the defaults).

use faultline_shared::domain::ErrorEvent;
use serde_json::Value;

/// What a scrubbed value is replaced with (Sentry's marker, so people recognise it).
pub const FILTERED: &str = "[Filtered]";

/// Key fragments that mark a value as secret.
pub const DEFAULT_FIELDS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "session",
    "csrf",
    "xsrf",
    "private_key",
    "credential",
    "card_number",
    "cardnumber",
    "credit_card",
    "cvv",
    "ssn",
];

#[derive(Debug, Clone)]
pub struct Scrubber {
    fields: Vec<String>,
}

impl Default for Scrubber {
    fn default() -> Self {
        Self::new(&[])
    }
}

/// How keys and configured fields are compared: ASCII case folded, `-` read as `_` (the caller
/// trims). Only ASCII bytes change, so UTF-8 stays UTF-8.
fn normal_byte(b: u8) -> u8 {
    if b == b'-' {
        b'_'
    } else {
        b.to_ascii_lowercase()
    }
}

fn normalise(key: &str) -> String {
    key.trim()
        .chars()
        .map(|c| {
            if c.is_ascii() {
                char::from(normal_byte(c as u8))
            } else {
                c
            }
        })
        .collect()
}

impl Scrubber {
    /// The default fields plus `extra` (e.g. from `SCRUB_FIELDS`).
    pub fn new(extra: &[String]) -> Self {
        let mut fields: Vec<String> = DEFAULT_FIELDS.iter().map(|f| f.to_string()).collect();
        fields.extend(extra.iter().map(|f| normalise(f)).filter(|f| !f.is_empty()));
        fields.sort();
        fields.dedup();
        Self { fields }
    }

    pub fn is_sensitive_key(&self, key: &str) -> bool {
        // Every key of every event's context comes through here: keys of ordinary length are
        // normalised on the stack rather than into a new string.
        let key = key.trim();
        let mut stack = [0u8; 128];
        let mut long = Vec::new();
        let normal: &mut [u8] = match stack.get_mut(..key.len()) {
            Some(buf) => buf,
            None => {
                long.resize(key.len(), 0);
                &mut long
            }
        };
        for (to, from) in normal.iter_mut().zip(key.bytes()) {
            *to = normal_byte(from);
        }
        let normal = &*normal;
        self.fields.iter().any(|f| {
            let f = f.as_bytes();
            f.is_empty() || normal.windows(f.len()).any(|w| w == f)
        })
    }

    /// Scrubs an event in place; returns how many values were filtered.
    pub fn scrub_event(&self, event: &mut ErrorEvent) -> usize {
        let mut n = 0;
        n += scrub_cards(&mut event.message);
        if let Some(trace) = event.stack_trace.as_mut() {
            n += scrub_cards(trace);
        }
        if let Some(context) = event.context.as_mut() {
            n += self.scrub_value(context);
        }
        if let Some(url) = event.url.as_mut() {
            n += self.scrub_url(url);
        }
        if n > 0 {
            metrics::counter!("ingest_values_scrubbed_total").increment(n as u64);
        }
        n
    }

    /// Scrubs a JSON value in place: sensitive keys at any depth, card numbers in strings.
    pub fn scrub_value(&self, value: &mut Value) -> usize {
        match value {
            Value::Object(map) => map
                .iter_mut()
                .map(|(key, v)| {
                    if self.is_sensitive_key(key) && !v.is_null() {
                        *v = Value::String(FILTERED.into());
                        1
                    } else {
                        self.scrub_value(v)
                    }
                })
                .sum(),
            Value::Array(items) => items.iter_mut().map(|v| self.scrub_value(v)).sum(),
            Value::String(s) => scrub_cards(s),
            // A bare number can be a card number too.
            Value::Number(num) => {
                let digits = num.to_string();
                if looks_like_card(&digits) {
                    *value = Value::String(FILTERED.into());
                    1
                } else {
                    0
                }
            }
            _ => 0,
        }
    }

    /// Filters the values of sensitive query parameters (`?token=...`).
    fn scrub_url(&self, url: &mut String) -> usize {
        let Some((base, rest)) = url.split_once('?') else {
            return scrub_cards(url);
        };
        let (query, fragment) = match rest.split_once('#') {
            Some((q, f)) => (q, Some(f)),
            None => (rest, None),
        };
        let mut n = 0;
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) if self.is_sensitive_key(k) && !v.is_empty() => {
                    n += 1;
                    format!("{k}={FILTERED}")
                }
                _ => pair.to_string(),
            })
            .collect();
        if n > 0 {
            let mut out = format!("{base}?{}", pairs.join("&"));
            if let Some(f) = fragment {
                out.push('#');
                out.push_str(f);
            }
            *url = out;
        }
        n + scrub_cards(url)
    }
}

/// The Luhn check over digit values, most significant first.
fn luhn(digits: impl DoubleEndedIterator<Item = u8>) -> bool {
    let sum: u32 = digits
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Whether `s` (digits, spaces and dashes) is 13 to 19 digits that pass the Luhn check. Called
/// for every run of digits in every message, so it allocates nothing.
fn looks_like_card(s: &str) -> bool {
    let digits = || s.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0');
    s.bytes()
        .all(|b| b.is_ascii_digit() || b == b' ' || b == b'-')
        && (13..=19).contains(&digits().count())
        && luhn(digits())
}

/// How many ASCII digits `bytes` holds. Every string of every event is counted (most have too
/// few digits for a card and stop there), so the count runs in byte-wide lanes, 255 bytes at a
/// time: counted into a `usize` directly, the compiler widened each byte to 64 bits and went
/// four bytes a step (1.2 % of the machine's CPU at maximum throughput, RESULTS twelfth session).
fn ascii_digits(bytes: &[u8]) -> usize {
    bytes
        .chunks(255)
        .map(|chunk| {
            let n: u8 = chunk.iter().map(|b| u8::from(b.is_ascii_digit())).sum();
            usize::from(n)
        })
        .sum()
}

/// Replaces card-like numbers in `text`; returns how many.
pub fn scrub_cards(text: &mut String) -> usize {
    if ascii_digits(text.as_bytes()) < 13 {
        return 0;
    }
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        // A candidate starts at a digit not preceded by a digit or letter.
        match bytes[i..].iter().position(u8::is_ascii_digit) {
            Some(skip) => i += skip,
            None => break,
        }
        if i > 0 && bytes[i - 1].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i;
        let mut j = i;
        while j < bytes.len() {
            if bytes[j].is_ascii_digit() {
                j += 1;
                end = j;
            } else if (bytes[j] == b' ' || bytes[j] == b'-')
                && j + 1 < bytes.len()
                && bytes[j + 1].is_ascii_digit()
            {
                j += 1;
            } else {
                break;
            }
        }
        let followed_by_word = end < bytes.len() && bytes[end].is_ascii_alphanumeric();
        if !followed_by_word && looks_like_card(&text[start..end]) {
            spans.push((start, end));
        }
        i = end.max(i + 1);
    }
    for (start, end) in spans.iter().rev() {
        text.replace_range(start..end, FILTERED);
    }
    spans.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sensitive_keys_are_filtered_at_any_depth() {
        let s = Scrubber::default();
        let mut v = json!({
            "user": {"id": 7, "Password": "hunter2", "profile": {"api-key": "abc", "name": "Ann"}},
            "headers": {"Authorization": "Bearer xyz", "Cookie": "sid=1", "Accept": "*/*"},
            "items": [{"session_id": "s1"}, {"x": 1}],
            "empty_token": null
        });
        assert_eq!(s.scrub_value(&mut v), 5);
        assert_eq!(v["user"]["Password"], FILTERED);
        assert_eq!(v["user"]["profile"]["api-key"], FILTERED);
        assert_eq!(v["user"]["profile"]["name"], "Ann");
        assert_eq!(v["headers"]["Authorization"], FILTERED);
        assert_eq!(v["headers"]["Cookie"], FILTERED);
        assert_eq!(v["headers"]["Accept"], "*/*");
        assert_eq!(v["items"][0]["session_id"], FILTERED);
        assert!(v["empty_token"].is_null());
    }

    #[test]
    fn digits_are_counted_across_the_lanes_and_a_card_after_a_long_pad_is_found() {
        assert_eq!(ascii_digits(&[b'7'; 1000]), 1000);
        assert_eq!(ascii_digits(b""), 0);
        let spread: String = (0..1000)
            .map(|i| if i % 83 == 0 { '5' } else { 'x' })
            .collect();
        assert_eq!(ascii_digits(spread.as_bytes()), 13);
        let mut padded = format!(
            "{} card 4111 1111 1111 1111 {}",
            "x".repeat(600),
            "y".repeat(300)
        );
        assert_eq!(scrub_cards(&mut padded), 1);
        assert!(padded.contains(" card [Filtered] "), "{padded}");
        let mut twelve = format!("{}{}", "ab1".repeat(12), "z".repeat(500));
        assert_eq!(scrub_cards(&mut twelve), 0);
    }

    #[test]
    fn card_numbers_are_filtered_but_other_numbers_stay() {
        let mut t = "paid with 4111 1111 1111 1111 and 5500-0000-0000-0004; order 1234567890123"
            .to_string();
        assert_eq!(scrub_cards(&mut t), 2);
        assert_eq!(
            t,
            "paid with [Filtered] and [Filtered]; order 1234567890123"
        );
        let mut id = "trace 4111111111111111abc".to_string();
        assert_eq!(scrub_cards(&mut id), 0);
        let s = Scrubber::default();
        let mut v = json!({"n": 4111111111111111u64, "m": 42});
        assert_eq!(s.scrub_value(&mut v), 1);
        assert_eq!(v["m"], 42);
    }

    #[test]
    fn keys_match_whatever_their_case_separators_padding_and_length() {
        let s = Scrubber::default();
        for key in [
            "X-API-Key",
            " api-key ",
            "userPassword",
            "Set-Cookie",
            "ÄPI_TOKEN",
        ] {
            assert!(s.is_sensitive_key(key), "{key}");
        }
        for key in ["api_hint", "pass", "", "  ", "résumé"] {
            assert!(!s.is_sensitive_key(key), "{key}");
        }
        // Past the stack buffer the key is normalised into a string, with the same answers.
        let long = format!("{}-Password", "x".repeat(200));
        assert!(s.is_sensitive_key(&long));
        assert!(!s.is_sensitive_key(&"y".repeat(300)));
    }

    #[test]
    fn extra_fields_and_url_parameters() {
        let s = Scrubber::new(&["X-Tenant-PIN".to_string()]);
        assert!(s.is_sensitive_key("x_tenant_pin"));
        let mut url = "https://a.io/cb?code=1&access_token=zzz&x=2#top".to_string();
        assert_eq!(s.scrub_url(&mut url), 1);
        assert_eq!(
            url,
            "https://a.io/cb?code=1&access_token=[Filtered]&x=2#top"
        );
    }
}
