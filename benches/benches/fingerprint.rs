//! criterion benches of fingerprinting, the worker's per-event CPU cost: message normalisation,
//! stack-trace parsing and the whole `compute`.

use criterion::{Criterion, criterion_group, criterion_main};
use faultline_shared::fingerprint::{compute, normalize_message, parse_stack_trace};
use std::hint::black_box;

const MESSAGE: &str = "Timeout after 5023 ms for user 8812 (alice@example.com) from 10.0.3.17 \
     request 0190f3c2-7a1e-7cc0-9d2e-3b1f8e2a9c11 at 2026-11-23T12:34:56Z";

const PLAIN: &str = "Connection refused";

const PYTHON: &str = r#"Traceback (most recent call last):
  File "/srv/app/api/views.py", line 118, in create_order
    order = service.place(cart)
  File "/srv/app/orders/service.py", line 52, in place
    self.repo.save(order)
  File "/srv/app/orders/repo.py", line 31, in save
    cursor.execute(SQL, params)
psycopg2.OperationalError: could not connect to server"#;

const JAVA: &str = "java.lang.NullPointerException: Cannot invoke \"String.length()\"
\tat com.example.orders.OrderService.place(OrderService.java:52)
\tat com.example.orders.OrderController.create(OrderController.java:118)
\tat jdk.internal.reflect.GeneratedMethodAccessor42.invoke(Unknown Source)
\tat org.springframework.web.method.support.InvocableHandlerMethod.doInvoke(InvocableHandlerMethod.java:205)";

const NODE: &str = "TypeError: Cannot read properties of undefined (reading 'id')
    at placeOrder (/srv/app/dist/orders.js:52:17)
    at async createOrder (/srv/app/dist/api.js:118:5)
    at async Layer.handle [as handle_request] (/srv/app/node_modules/express/lib/router/layer.js:95:5)";

fn benches(c: &mut Criterion) {
    c.bench_function("normalize_message/parameterised", |b| {
        b.iter(|| normalize_message(black_box(MESSAGE)))
    });
    c.bench_function("normalize_message/plain", |b| {
        b.iter(|| normalize_message(black_box(PLAIN)))
    });
    for (name, trace) in [("python", PYTHON), ("java", JAVA), ("node", NODE)] {
        c.bench_function(&format!("parse_stack_trace/{name}"), |b| {
            b.iter(|| parse_stack_trace(black_box(trace)))
        });
        c.bench_function(&format!("compute/{name}"), |b| {
            b.iter(|| {
                compute(
                    "backend",
                    black_box(MESSAGE),
                    Some(black_box(trace)),
                    None,
                    None,
                )
            })
        });
    }
    c.bench_function("compute/message_only", |b| {
        b.iter(|| compute("backend", black_box(MESSAGE), None, None, None))
    });
    let custom = vec!["{{ default }}".to_string(), "tenant-a".to_string()];
    c.bench_function("compute/client_fingerprint", |b| {
        b.iter(|| compute("backend", black_box(MESSAGE), None, None, Some(&custom)))
    });
}

criterion_group!(fingerprint, benches);
criterion_main!(fingerprint);
