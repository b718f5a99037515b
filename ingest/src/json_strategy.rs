//! A proptest strategy for the decoders' fuzz tests: arbitrary JSON a few levels deep whose object
//! keys are mostly the ones a decoder looks for, so the tests reach its per-field branches rather
//! than only its "not an object" exit.

use proptest::prelude::*;
use serde_json::{Value, json};

/// JSON values up to 6 levels deep. Object keys are one of `keys` (each as likely as an arbitrary
/// short string); string leaves are one of `words` (each as likely as an arbitrary string).
pub fn json_with_keys(
    keys: &'static [&'static str],
    words: &'static [&'static str],
) -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        keys.len() as u32 => prop::sample::select(keys).prop_map(str::to_string),
        1 => "\\PC{0,12}",
    ];
    let text: BoxedStrategy<String> = if words.is_empty() {
        "\\PC{0,40}".boxed()
    } else {
        prop_oneof![
            words.len() as u32 => prop::sample::select(words).prop_map(str::to_string),
            1 => "\\PC{0,40}",
        ]
        .boxed()
    };
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        text.prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
