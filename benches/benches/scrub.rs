//! criterion benches of ingest's scrubbing of one event (sensitive keys and card numbers in every
//! string), on an event like the load generator's: a message with a dozen digits in it and a
//! ~800-byte string in `context`, which the card check must count the digits of.

use criterion::{Criterion, criterion_group, criterion_main};
use faultline_shared::domain::ErrorEvent;
use ingest::scrub::Scrubber;
use std::hint::black_box;

fn event() -> ErrorEvent {
    serde_json::from_value(serde_json::json!({
        "event_id": uuid::Uuid::from_u128(7),
        "project_id": uuid::Uuid::from_u128(1),
        "received_at": "2026-11-23T12:00:00.123456Z",
        "level": "error",
        "message": "Benchqux failed: timeout after 5120 ms for user 482113 from 10.1.22.7 request \
                    0b6f3c52-7d1e-4a8b-9c3d-2e5f60718293",
        "source": "loadgen",
        "environment": "bench",
        "context": {"bench": true, "pad": "x".repeat(800)},
    }))
    .expect("a valid event")
}

fn scrub(c: &mut Criterion) {
    let scrubber = Scrubber::default();
    let template = event();
    c.bench_function("scrub_event/loadgen_like", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |e| scrubber.scrub_event(black_box(e)),
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, scrub);
criterion_main!(benches);
