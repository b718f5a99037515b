//! Request bodies, built before the load starts so the generator spends its CPU on sending, not on
//! formatting JSON. Each fingerprint is a message template whose distinguishing word survives
//! normalisation (letters only: numbers, ids and addresses would be replaced by placeholders);
//! the variable parts (numbers, an IP, a UUID) are the kind normalisation must fold away.

use bytes::Bytes;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::json;

/// Most distinct single-event bodies kept in memory; with more fingerprints than this, only this
/// many templates are used.
const MAX_SINGLE_BODIES: usize = 65_536;
/// Distinct batch bodies (each a slice of the single-event pool).
const BATCH_BODIES: usize = 64;

/// The bodies one load run cycles through.
pub struct Payloads {
    pub singles: Vec<Bytes>,
    pub batches: Vec<Bytes>,
    /// Templates actually present in `singles`.
    pub templates: usize,
    /// Mean size of a single-event body, in bytes.
    pub mean_single_bytes: usize,
}

/// A template's distinguishing word: `k` written in base 26 with letters.
fn word(mut k: usize) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'a' + (k % 26) as u8);
        k /= 26;
        if k == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

fn event(template: usize, payload_bytes: usize, rng: &mut StdRng) -> Vec<u8> {
    let message = format!(
        "Bench{} failed: timeout after {} ms for user {} from 10.{}.{}.{} request {}",
        word(template),
        rng.random_range(1..10_000),
        rng.random_range(1..1_000_000),
        rng.random_range(0..256),
        rng.random_range(0..256),
        rng.random_range(1..255),
        uuid::Uuid::from_u128(rng.random()),
    );
    let mut value = json!({
        "message": message,
        "source": "loadgen",
        "level": "error",
        "environment": "bench",
        "context": {"bench": true, "pad": ""},
    });
    let bare = serde_json::to_vec(&value).unwrap_or_default().len();
    let pad = payload_bytes.saturating_sub(bare);
    value["context"]["pad"] = json!("x".repeat(pad));
    serde_json::to_vec(&value).unwrap_or_default()
}

impl Payloads {
    pub fn build(
        fingerprints: usize,
        payload_bytes: usize,
        batch_share: f64,
        batch_size: usize,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(7);
        let count = fingerprints.clamp(2048, MAX_SINGLE_BODIES);
        let templates = fingerprints.min(count);
        let raw: Vec<Vec<u8>> = (0..count)
            .map(|j| event(j % fingerprints, payload_bytes, &mut rng))
            .collect();
        let mean_single_bytes = raw.iter().map(Vec::len).sum::<usize>() / raw.len();
        let batches = if batch_share > 0.0 {
            (0..BATCH_BODIES)
                .map(|b| {
                    let parts =
                        (0..batch_size).map(|j| raw[(b * batch_size + j) % count].as_slice());
                    Bytes::from(faultline_shared::domain::encode_batch(parts))
                })
                .collect()
        } else {
            Vec::new()
        };
        Self {
            singles: raw.into_iter().map(Bytes::from).collect(),
            batches,
            templates,
            mean_single_bytes,
        }
    }
}

/// Which requests of the sequence are batch posts: spread evenly, `share` of them in all.
pub fn is_batch(index: u64, share: f64) -> bool {
    share > 0.0 && ((index + 1) as f64 * share).floor() > (index as f64 * share).floor()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_distinct_and_letters_only() {
        let words: std::collections::HashSet<String> = (0..2000).map(word).collect();
        assert_eq!(words.len(), 2000);
        assert!(
            words
                .iter()
                .all(|w| w.bytes().all(|b| b.is_ascii_lowercase()))
        );
    }

    #[test]
    fn the_batch_share_is_respected() {
        let n = (0..10_000).filter(|&i| is_batch(i, 0.25)).count();
        assert_eq!(n, 2500);
        assert!(!(0..100).any(|i| is_batch(i, 0.0)));
        assert!((0..100).all(|i| is_batch(i, 1.0)));
    }

    #[test]
    fn bodies_have_about_the_requested_size_and_keep_one_group_per_template() {
        let p = Payloads::build(10, 1024, 0.5, 5);
        assert!(p.singles.iter().all(|b| (1024..1100).contains(&b.len())));
        let groups: std::collections::HashSet<String> = p
            .singles
            .iter()
            .map(|b| {
                let v: serde_json::Value = serde_json::from_slice(b).unwrap();
                faultline_shared::fingerprint::normalize_message(v["message"].as_str().unwrap())
            })
            .collect();
        assert_eq!(groups.len(), 10, "{groups:?}");
        let batch: Vec<serde_json::Value> = serde_json::from_slice(&p.batches[0]).unwrap();
        assert_eq!(batch.len(), 5);
    }
}
