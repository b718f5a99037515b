//! criterion benches of the worker's decoding of one broker message: the JSON array ingest's
//! group commit publishes, each element turned into an event — as the worker does it now
//! (`decode_message`: straight from the bytes, `context` and `extra` kept as text), as it did
//! before that (straight from the bytes into JSON trees) and as it did first (a JSON tree per
//! element, then `decode_event`), so the differences stay measured.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use faultline_shared::domain::{ErrorEvent, decode_event, decode_message, encode_batch};
use std::hint::black_box;

/// One event as ingest serialises it (a 1 KB-ish event, like the load generator's).
fn event(i: usize) -> serde_json::Value {
    serde_json::json!({
        "event_id": uuid::Uuid::now_v7(),
        "project_id": uuid::Uuid::from_u128(1),
        "received_at": "2026-11-23T12:00:00.123456Z",
        "level": "error",
        "message": format!("Timeout after {i} ms for user {}", i * 7),
        "source": "backend",
        "environment": "production",
        "context": {"bench": true, "pad": "x".repeat(700)},
        "url": "https://example.com/orders",
        "user_agent": "loadgen/1",
        "ip_address": "127.0.0.1",
    })
}

fn message(events: usize) -> Vec<u8> {
    let encoded: Vec<Vec<u8>> = (0..events)
        .map(|i| serde_json::to_vec(&event(i)).expect("serialisable"))
        .collect();
    encode_batch(encoded.iter().map(Vec::as_slice))
}

fn decode_via_values(body: &[u8]) -> Vec<ErrorEvent> {
    let values: Vec<serde_json::Value> = serde_json::from_slice(body).expect("a JSON array");
    values
        .into_iter()
        .map(|v| decode_event(v).expect("a valid event"))
        .collect()
}

/// What `decode_message` did before the worker kept `context` and `extra` as text: each element
/// straight from its bytes, but into JSON trees.
fn decode_as_trees(body: &[u8]) -> Vec<ErrorEvent> {
    let items: Vec<&serde_json::value::RawValue> = serde_json::from_slice(body).expect("an array");
    items
        .into_iter()
        .map(|raw| serde_json::from_str(raw.get()).expect("a valid event"))
        .collect()
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_message");
    for events in [1usize, 100, 500] {
        let body = message(events);
        group.throughput(Throughput::Elements(events as u64));
        group.bench_function(format!("{events}_events_{}_bytes", body.len()), |b| {
            b.iter(|| decode_message(black_box(&body)).expect("a JSON array"))
        });
        group.bench_function(
            format!("as_trees/{events}_events_{}_bytes", body.len()),
            |b| b.iter(|| decode_as_trees(black_box(&body))),
        );
        group.bench_function(
            format!("via_values/{events}_events_{}_bytes", body.len()),
            |b| b.iter(|| decode_via_values(black_box(&body))),
        );
    }
    group.finish();
}

criterion_group!(decode_benches, benches);
criterion_main!(decode_benches);
