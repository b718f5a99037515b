//! The Sentry endpoints against a real ingest and worker: envelopes and store requests as SDKs send
//! them (compressed, several items, unknown types), every way to get them wrong, and the official
//! Python `sentry-sdk` reporting through a Faultline DSN.

mod support;

use faultline_shared::{
    db,
    domain::{ApiKey, DEFAULT_PROJECT_ID, Permission, Permissions},
};
use flate2::{Compression, write::GzEncoder};
use serde_json::{Value, json};
use std::{io::Write, path::PathBuf, time::Duration};
use support::TestApp;
use uuid::Uuid;

const ENVELOPE: &str = "/api/1/envelope/";

fn auth(key: &str) -> String {
    format!("Sentry sentry_key={key}, sentry_version=7, sentry_client=sentry.test/1.0")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// An envelope of `items` (type, payload); attachments get a `length`, the rest end at a newline.
fn envelope(header: Value, items: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = format!("{header}\n").into_bytes();
    for (kind, payload) in items {
        let head = if *kind == "attachment" {
            json!({"type": kind, "length": payload.len(), "filename": "a.txt"})
        } else {
            json!({"type": kind})
        };
        out.extend_from_slice(format!("{head}\n").as_bytes());
        out.extend_from_slice(payload);
        out.push(b'\n');
    }
    out
}

fn exception_event(id: Uuid, value: &str, function: &str) -> Vec<u8> {
    json!({
        "event_id": id.simple().to_string(),
        "platform": "python",
        "level": "error",
        "environment": "staging",
        "release": "shop@2.0.0",
        "server_name": "web-1",
        "tags": {"tenant": "acme"},
        "extra": {"db_password": "hunter2", "cart_items": 3},
        "request": {"url": "https://shop.example.com/pay", "method": "POST",
                    "headers": {"Authorization": "Bearer hunter2", "Cookie": "sid=9"}},
        "exception": {"values": [{
            "type": "PaymentError",
            "value": value,
            "stacktrace": {"frames": [
                {"module": "flask.app", "function": "dispatch", "filename": "flask/app.py", "lineno": 900, "in_app": false},
                {"module": "shop.pay", "function": function, "filename": "shop/pay.py", "lineno": 31, "in_app": true}
            ]}
        }]}
    })
    .to_string()
    .into_bytes()
}

struct Sent {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn post(
    app: &TestApp,
    path: &str,
    headers: &[(&str, String)],
    body: impl Into<reqwest::Body>,
) -> Sent {
    let mut req = app
        .client
        .post(format!("{}{path}", app.addr))
        .header("content-type", "application/x-sentry-envelope")
        .body(body);
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    Sent {
        status,
        headers,
        body,
    }
}

type GroupRow = (String, i64, String, String, Option<String>, Option<Value>);

async fn group_rows(app: &TestApp) -> Vec<GroupRow> {
    sqlx::query_as(
        "SELECT message, count, source, environment, release, context FROM error_groups ORDER BY message",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("groups")
}

#[tokio::test]
async fn a_gzipped_envelope_with_several_items_becomes_grouped_events() {
    let app = TestApp::spawn_with_worker().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let body = envelope(
        json!({"event_id": a.simple().to_string(), "sent_at": "2026-11-23T12:00:00Z"}),
        &[
            ("event", exception_event(a, "card 4242 declined", "charge")),
            ("session", br#"{"sid":"x","status":"ok"}"#.to_vec()),
            ("client_report", br#"{"discarded_events":[]}"#.to_vec()),
            ("attachment", b"line one\nline two".to_vec()),
            ("something_new", b"{}".to_vec()),
            ("event", exception_event(b, "card 1111 declined", "charge")),
        ],
    );
    let sent = post(
        &app,
        ENVELOPE,
        &[
            ("x-sentry-auth", auth(&app.key)),
            ("content-encoding", "gzip".into()),
        ],
        gzip(&body),
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert_eq!(sent.body, json!({"id": a.simple().to_string()}));
    assert!(sent.headers.contains_key("access-control-allow-origin"));

    app.wait_for_count(2, 30).await;
    let groups = group_rows(&app).await;
    assert_eq!(groups.len(), 1, "same stack, one group: {groups:?}");
    let (message, count, source, environment, release, context) = &groups[0];
    let context = context.as_ref().expect("context");
    assert!(message.starts_with("PaymentError: card"), "{message}");
    assert_eq!(*count, 2);
    assert_eq!(source, "python");
    assert_eq!(environment, "staging");
    assert_eq!(release.as_deref(), Some("shop@2.0.0"));
    assert_eq!(context["tags"]["tenant"], "acme");
    assert_eq!(context["server_name"], "web-1");
    assert_eq!(
        context["request"]["headers"]["Authorization"], "[Filtered]",
        "secrets never reach storage"
    );
    assert_eq!(context["request"]["headers"]["Cookie"], "[Filtered]");
    // The SDK's event ids are ours.
    let (ids,): (Vec<Uuid>,) = sqlx::query_as("SELECT array_agg(id ORDER BY id) FROM events")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(ids, expected);
    let (extra,): (Value,) = sqlx::query_as("SELECT extra FROM events LIMIT 1")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(extra, json!({"db_password": "[Filtered]", "cart_items": 3}));
    app.shutdown().await;
}

#[tokio::test]
async fn a_client_fingerprint_regroups_sentry_events() {
    let app = TestApp::spawn_with_worker().await;
    let with_fingerprint = |function: &str, fingerprint: Value| {
        let mut event: Value =
            serde_json::from_slice(&exception_event(Uuid::new_v4(), "declined", function)).unwrap();
        event["fingerprint"] = fingerprint;
        event.to_string().into_bytes()
    };
    let items = [
        // Same stack, split by tenant on top of the default grouping.
        with_fingerprint("charge", json!(["{{ default }}", "tenant-a"])),
        with_fingerprint("charge", json!(["{{ default }}", "tenant-b"])),
        with_fingerprint("charge", json!(["{{ default }}", "tenant-b"])),
        // Different stacks, one group by the client's choice.
        with_fingerprint("refund", json!(["payments-down"])),
        with_fingerprint("capture", json!(["payments-down"])),
    ];
    let items: Vec<(&str, Vec<u8>)> = items.into_iter().map(|i| ("event", i)).collect();
    let sent = post(
        &app,
        ENVELOPE,
        &[("x-sentry-auth", auth(&app.key))],
        envelope(json!({}), &items),
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    app.wait_for_count(5, 30).await;
    let (counts,): (Vec<i64>,) = sqlx::query_as(
        "SELECT array_agg(count ORDER BY count) FROM error_groups WHERE custom_fingerprint",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(counts, [1, 2, 2]);
    app.shutdown().await;
}

#[tokio::test]
async fn sentry_events_fire_alert_rules_like_native_ones() {
    let app = TestApp::spawn_with_worker().await;
    let rule = json!({
        "name": "Python errors",
        "condition": "error_count > threshold in time_window",
        "threshold": 2,
        "time_window": "5m",
        "filters": {"source": "python", "level": "error"},
        "notifications": ["email"],
        "enabled": true
    });
    let resp = app
        .client
        .post(format!("{}/api/alerts/rules", app.addr))
        .header("x-api-key", &app.key)
        .json(&rule)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let items: Vec<(&str, Vec<u8>)> = (0..3)
        .map(|_| {
            (
                "event",
                exception_event(Uuid::new_v4(), "declined", "charge"),
            )
        })
        .collect();
    let sent = post(
        &app,
        ENVELOPE,
        &[("x-sentry-auth", auth(&app.key))],
        envelope(json!({}), &items),
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    app.wait_for_count(3, 30).await;
    let firings = alerter::evaluate(&app.db.pool, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(firings.len(), 1, "{firings:?}");
    assert_eq!(firings[0].rule_name, "Python errors");
    assert_eq!(firings[0].count, 3);
    app.shutdown().await;
}

#[tokio::test]
async fn an_sdk_retry_of_the_same_event_is_counted_once() {
    let app = TestApp::spawn_with_worker().await;
    let id = Uuid::new_v4();
    let body = envelope(
        json!({}),
        &[("event", exception_event(id, "declined", "charge"))],
    );
    for _ in 0..3 {
        let sent = post(
            &app,
            ENVELOPE,
            &[("x-sentry-auth", auth(&app.key))],
            body.clone(),
        )
        .await;
        assert_eq!(sent.status, 200, "{}", sent.body);
    }
    let other = envelope(
        json!({}),
        &[("event", exception_event(Uuid::new_v4(), "x", "refund"))],
    );
    post(&app, ENVELOPE, &[("x-sentry-auth", auth(&app.key))], other).await;
    // The last event is processed after the retries, so by the time it is counted they all are.
    app.wait_for_count(2, 30).await;
    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(events, 2);
    app.shutdown().await;
}

#[tokio::test]
async fn the_key_may_come_from_the_query_or_the_envelope_dsn_and_store_takes_legacy_events() {
    let app = TestApp::spawn_with_worker().await;
    let event = |msg: &str| json!({"message": msg, "platform": "javascript", "level": "warning"});

    let body = envelope(
        json!({}),
        &[("event", event("from query").to_string().into())],
    );
    let path = format!("{ENVELOPE}?sentry_version=7&sentry_key={}", app.key);
    let sent = post(&app, &path, &[], body).await;
    assert_eq!(sent.status, 200, "{}", sent.body);

    let dsn = format!("http://{}@127.0.0.1/1", app.key);
    let body = envelope(
        json!({"dsn": dsn}),
        &[("event", event("from dsn").to_string().into())],
    );
    let sent = post(&app, "/api/1/envelope", &[], body).await;
    assert_eq!(sent.status, 200, "{}", sent.body);

    // The project may also be named by its UUID.
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
    z.write_all(event("from store").to_string().as_bytes())
        .unwrap();
    let path = format!("/api/{DEFAULT_PROJECT_ID}/store/");
    let sent = post(
        &app,
        &path,
        &[
            ("x-sentry-auth", auth(&app.key)),
            ("content-encoding", "deflate".into()),
        ],
        z.finish().unwrap(),
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert_eq!(sent.body["id"].as_str().map(str::len), Some(32));

    app.wait_for_count(3, 30).await;
    let groups = group_rows(&app).await;
    let messages: Vec<&str> = groups.iter().map(|g| g.0.as_str()).collect();
    assert_eq!(messages, ["from dsn", "from query", "from store"]);
    assert!(groups.iter().all(|g| g.2 == "javascript"));
    app.shutdown().await;
}

#[tokio::test]
async fn a_key_created_through_the_api_comes_with_a_working_dsn() {
    let app = TestApp::spawn_with_worker().await;
    let resp = app
        .client
        .post(format!("{}/api/settings/api-keys", app.addr))
        .header("x-api-key", &app.key)
        .json(&json!({"name": "python app", "permissions": ["ingest"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.unwrap();
    let key = created["data"]["api_key"].as_str().unwrap();
    let dsn = created["data"]["dsn"].as_str().expect("dsn");
    let port = app.addr.rsplit(':').next().unwrap();
    assert_eq!(dsn, format!("http://{key}@127.0.0.1:{port}/1"));
    // Used the way an SDK uses a DSN: key in the auth header, project in the path.
    let (key, project) = dsn
        .strip_prefix("http://")
        .and_then(|rest| rest.split_once('@'))
        .map(|(key, rest)| (key, rest.rsplit('/').next().unwrap()))
        .unwrap();
    let body = envelope(
        json!({}),
        &[("event", br#"{"message":"via dsn"}"#.to_vec())],
    );
    let path = format!("/api/{project}/envelope/");
    let sent = post(&app, &path, &[("x-sentry-auth", auth(key))], body).await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    app.wait_for_count(1, 30).await;
    app.shutdown().await;
}

#[tokio::test]
async fn wrong_keys_other_projects_and_malformed_envelopes_are_refused() {
    let app = TestApp::spawn().await;
    let good = || envelope(json!({}), &[("event", br#"{"message":"x"}"#.to_vec())]);

    let sent = post(&app, ENVELOPE, &[], good()).await;
    assert_eq!(sent.status, 401, "no key: {}", sent.body);
    let sent = post(
        &app,
        ENVELOPE,
        &[("x-sentry-auth", auth("fl_wrong"))],
        good(),
    )
    .await;
    assert_eq!(sent.status, 401, "unknown key: {}", sent.body);
    assert_eq!(sent.body["code"], "unauthorized");

    let other = db::ensure_project(&app.db.pool, "other").await.unwrap();
    let other_key = ApiKey::generate();
    db::insert_key(
        &app.db.pool,
        other,
        "other",
        &other_key,
        &Permissions::new(vec![Permission::Ingest]),
        None,
    )
    .await
    .unwrap();
    let sent = post(
        &app,
        ENVELOPE,
        &[("x-sentry-auth", auth(other_key.expose()))],
        good(),
    )
    .await;
    assert_eq!(sent.status, 403, "another project's key: {}", sent.body);
    assert_eq!(sent.body["code"], "project_mismatch");
    // ...which works for its own project, named by the DSN's decimal form.
    let path = format!("/api/{}/envelope/", other.as_u128());
    let sent = post(
        &app,
        &path,
        &[("x-sentry-auth", auth(other_key.expose()))],
        good(),
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.body);

    let read_only = app.create_key(&[Permission::Read]).await;
    let sent = post(
        &app,
        ENVELOPE,
        &[("x-sentry-auth", auth(&read_only))],
        good(),
    )
    .await;
    assert_eq!(sent.status, 403, "{}", sent.body);

    let sent = post(
        &app,
        "/api/not-a-project/envelope/",
        &[("x-sentry-auth", auth(&app.key))],
        good(),
    )
    .await;
    assert_eq!(sent.status, 404);

    let key = [("x-sentry-auth", auth(&app.key))];
    let sent = post(
        &app,
        ENVELOPE,
        &key,
        b"{not json\n{\"type\":\"event\"}\n{}\n".to_vec(),
    )
    .await;
    assert_eq!(sent.status, 400, "{}", sent.body);
    assert_eq!(sent.body["code"], "validation_error");
    let sent = post(
        &app,
        ENVELOPE,
        &key,
        b"{}\n{\"type\":\"event\"}\n{broken\n".to_vec(),
    )
    .await;
    assert_eq!(sent.status, 400, "bad event payload: {}", sent.body);
    let sent = post(
        &app,
        ENVELOPE,
        &key,
        b"{}\n{\"type\":\"event\",\"length\":500}\n{}\n".to_vec(),
    )
    .await;
    assert_eq!(sent.status, 400, "length past the end: {}", sent.body);
    let sent = post(
        &app,
        ENVELOPE,
        &[key[0].clone(), ("content-encoding", "gzip".into())],
        b"not gzip at all".to_vec(),
    )
    .await;
    assert_eq!(sent.status, 400, "corrupt gzip: {}", sent.body);
    let sent = post(
        &app,
        ENVELOPE,
        &[key[0].clone(), ("content-encoding", "compress".into())],
        good(),
    )
    .await;
    assert_eq!(sent.status, 400, "unknown encoding: {}", sent.body);

    // Nothing refused reached the queue; the one accepted event did.
    assert_eq!(app.queue_depth().await, 1);
    app.shutdown().await;
}

#[tokio::test]
async fn an_oversized_body_and_a_zip_bomb_get_413() {
    let app = TestApp::spawn_with(|s| s.max_body_bytes = 64 * 1024).await;
    let key = ("x-sentry-auth", auth(&app.key));

    let big = format!("{{\"message\":\"{}\"}}", "x".repeat(100 * 1024));
    let body = envelope(json!({}), &[("event", big.into_bytes())]);
    let sent = post(&app, ENVELOPE, std::slice::from_ref(&key), body.clone()).await;
    assert_eq!(sent.status, 413, "{}", sent.body);

    // Compressed it fits the limit, decompressed it does not.
    let packed = gzip(&body);
    assert!(packed.len() < 64 * 1024);
    let sent = post(
        &app,
        ENVELOPE,
        &[key.clone(), ("content-encoding", "gzip".into())],
        packed,
    )
    .await;
    assert_eq!(sent.status, 413, "{}", sent.body);

    // A zip bomb: 1 GiB of zeros as 1,024 gzip members of 1 MiB each (concatenated members are
    // one valid gzip stream), about 1 MiB on the wire, under a limit that lets the compressed
    // body in so that it is the decoded size that is refused.
    let app2 = TestApp::spawn_with(|s| s.max_body_bytes = 2 * 1024 * 1024).await;
    let member = {
        let mut e = GzEncoder::new(Vec::new(), Compression::best());
        e.write_all(&vec![0u8; 1024 * 1024]).unwrap();
        e.finish().unwrap()
    };
    let bomb = member.repeat(1024);
    assert!(bomb.len() < 2 * 1024 * 1024, "bomb is {} bytes", bomb.len());
    let started = std::time::Instant::now();
    let sent = post(
        &app2,
        ENVELOPE,
        &[
            ("x-sentry-auth", auth(&app2.key)),
            ("content-encoding", "gzip".into()),
        ],
        bomb,
    )
    .await;
    assert_eq!(sent.status, 413, "{}", sent.body);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "decoding stops at the limit"
    );
    assert_eq!(app.queue_depth().await, 0);
    assert_eq!(app2.queue_depth().await, 0);
    app.shutdown().await;
    app2.shutdown().await;
}

/// A Sentry body is read under the same body budget as native event bodies: its declared size is
/// reserved before it is read, and a body still arriving after the hold gives that room back (the
/// slow-body counter) and is accepted once complete; the decoded body's share is returned after
/// the confirm.
#[tokio::test]
async fn a_sentry_body_is_read_under_the_body_budget_and_gives_its_room_back_when_slow() {
    let mut app = TestApp::spawn_with(|s| {
        s.max_body_bytes = 64 * 1024;
        s.body_budget_bytes = 64 * 1024;
    })
    .await;
    app.start_worker().await;
    let event = json!({"message": "arrived slowly", "platform": "python"}).to_string();
    let packed = gzip(&envelope(json!({}), &[("event", event.into_bytes())]));
    let (head, tail) = packed.split_at(packed.len() / 2);
    let (head, tail) = (head.to_vec(), tail.to_vec());
    // The second half comes well after HOLD_WHILE_ARRIVING (250 ms), even on a loaded machine.
    let parts = futures_util::stream::unfold(0, move |i| {
        let (head, tail) = (head.clone(), tail.clone());
        async move {
            match i {
                0 => Some((Ok::<_, std::io::Error>(head), 1)),
                1 => {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    Some((Ok(tail), 2))
                }
                _ => None,
            }
        }
    });
    let sent = post(
        &app,
        ENVELOPE,
        &[
            ("x-sentry-auth", auth(&app.key)),
            ("content-encoding", "gzip".into()),
        ],
        reqwest::Body::wrap_stream(parts),
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert!(
        app.metric("ingest_body_budget_slow_bodies_total").await >= 1.0,
        "the Sentry body was not read under the budget"
    );
    app.wait_for_count(1, 30).await;
    assert_eq!(
        app.metric("ingest_body_budget_available_bytes").await,
        (64 * 1024) as f64,
        "the body's share was not given back"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_rate_limited_sdk_gets_429_with_the_sentry_rate_limit_header() {
    let app = TestApp::spawn_with(|s| {
        s.access.ingest_limit = 2;
        s.access.window = Duration::from_secs(60);
    })
    .await;
    let body = || envelope(json!({}), &[("event", br#"{"message":"x"}"#.to_vec())]);
    let key = [("x-sentry-auth", auth(&app.key))];
    for remaining in ["1", "0"] {
        let sent = post(&app, ENVELOPE, &key, body()).await;
        assert_eq!(sent.status, 200, "{}", sent.body);
        assert_eq!(sent.headers["x-ratelimit-remaining"], remaining);
    }
    // The key may also come from the envelope: it is counted against the same budget.
    let dsn = format!("http://{}@127.0.0.1/1", app.key);
    let in_body = envelope(
        json!({"dsn": dsn}),
        &[("event", br#"{"message":"x"}"#.to_vec())],
    );
    let sent = post(&app, ENVELOPE, &[], in_body).await;
    assert_eq!(sent.status, 429, "{}", sent.body);
    let retry_after: u64 = sent.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(
        sent.headers["x-sentry-rate-limits"].to_str().unwrap(),
        format!("{retry_after}::key")
    );
    assert_eq!(sent.body["code"], "throttled");
    assert_eq!(
        app.queue_depth().await,
        2,
        "the refused event was not queued"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn listed_cors_origins_apply_to_the_sentry_routes_too() {
    let app =
        TestApp::spawn_with(|s| s.access.cors_origins = vec!["https://app.example".into()]).await;
    let body = || envelope(json!({}), &[("event", br#"{"message":"x"}"#.to_vec())]);
    let from = |origin: &str| {
        vec![
            ("x-sentry-auth", auth(&app.key)),
            ("origin", origin.to_string()),
        ]
    };
    let sent = post(&app, ENVELOPE, &from("https://app.example"), body()).await;
    assert_eq!(sent.status, 200);
    assert_eq!(
        sent.headers["access-control-allow-origin"],
        "https://app.example"
    );
    let exposed = sent.headers["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("x-sentry-rate-limits"), "{exposed}");
    let sent = post(&app, ENVELOPE, &from("https://elsewhere.example"), body()).await;
    assert_eq!(
        sent.status, 200,
        "CORS only decides what a browser may read"
    );
    assert!(!sent.headers.contains_key("access-control-allow-origin"));
    app.shutdown().await;
}

#[tokio::test]
async fn sentry_requests_are_counted_in_the_usage_report() {
    let app = TestApp::spawn_with(|s| {
        s.access.ingest_limit = 3;
        s.access.window = Duration::from_secs(60);
    })
    .await;
    let key = [("x-sentry-auth", auth(&app.key))];
    let two = envelope(
        json!({}),
        &[
            ("event", br#"{"message":"a"}"#.to_vec()),
            ("event", br#"{"message":"b"}"#.to_vec()),
        ],
    );
    assert_eq!(post(&app, ENVELOPE, &key, two).await.status, 200);
    let session = envelope(json!({}), &[("session", br#"{"sid":"x"}"#.to_vec())]);
    assert_eq!(post(&app, ENVELOPE, &key, session).await.status, 200);
    assert_eq!(
        post(&app, ENVELOPE, &key, b"nope".to_vec()).await.status,
        400
    );
    let one = envelope(json!({}), &[("event", br#"{"message":"c"}"#.to_vec())]);
    assert_eq!(post(&app, ENVELOPE, &key, one).await.status, 429);

    let reader = app.create_key(&[Permission::Read]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let b: Value = app
            .client
            .get(format!("{}/api/usage?hours=2", app.addr))
            .header("x-api-key", &reader)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let hours = b["data"]["hours"].as_array().expect("hours").clone();
        let sum = |f: &dyn Fn(&Value) -> u64| hours.iter().map(f).sum::<u64>();
        let seen = (
            sum(&|h| h["accepted"].as_u64().unwrap_or(0)),
            sum(&|h| h["refused"]["validation"].as_u64().unwrap_or(0)),
            sum(&|h| h["refused"]["rate_limited"].as_u64().unwrap_or(0)),
        );
        if seen == (2, 1, 1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "usage so far {seen:?}: {b}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The official Python SDK
// ---------------------------------------------------------------------------------------------

/// A virtualenv with `sentry-sdk` (and `brotli`) from PyPI, made once under `target/tmp/` and reused. Built in a
/// side directory and renamed into place, so an interrupted install is never mistaken for a
/// finished one.
async fn python_with_sentry_sdk() -> PathBuf {
    // Tests of one process share it; the first one builds it.
    static VENV: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
    VENV.get_or_init(build_venv).await.clone()
}

/// A lock between processes: a directory only one can create. One left by a killed run is taken
/// over after ten minutes.
struct DirLock(PathBuf);

impl DirLock {
    async fn acquire(path: PathBuf) -> Self {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        loop {
            if std::fs::create_dir(&path).is_ok() {
                return DirLock(path);
            }
            let stale = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > Duration::from_secs(600)));
            if stale {
                let _ = std::fs::remove_dir(&path);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} held too long",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

async fn build_venv() -> PathBuf {
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let venv = target.join("sentry-venv");
    let python = venv.join("bin/python");
    let ready = |python: &PathBuf| {
        std::process::Command::new(python)
            .args(["-c", "import sentry_sdk, brotli"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready(&python) {
        return python;
    }
    // Test runners may run the tests of this file in parallel processes (nextest): one builds,
    // the others wait for it.
    let _lock = DirLock::acquire(target.join("sentry-venv.lock")).await;
    if ready(&python) {
        return python;
    }
    let building = target.join(format!("sentry-venv.building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    let run = |program: &std::path::Path, args: &[&str]| {
        let out = std::process::Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("could not run {}: {e}", program.display()));
        assert!(
            out.status.success(),
            "{} {args:?} failed (python3 with venv, and PyPI, are needed for this test):\n{}\n{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let building_str = building.to_str().expect("utf-8 path");
    tokio::task::spawn_blocking({
        let building = building.clone();
        let building_str = building_str.to_string();
        move || {
            run(
                std::path::Path::new("python3"),
                &["-m", "venv", &building_str],
            );
            run(
                &building.join("bin/python"),
                &[
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "sentry-sdk>=2,<3",
                    "brotli",
                ],
            );
        }
    })
    .await
    .expect("venv set-up");
    // An environment from an older version of this test (or a broken one) is replaced; nobody
    // uses it, as it is not ready.
    let _ = std::fs::remove_dir_all(&venv);
    std::fs::rename(&building, &venv).expect("venv moved into place");
    assert!(
        ready(&python),
        "sentry-sdk and brotli are not importable from {}",
        venv.display()
    );
    python
}

#[tokio::test]
async fn the_python_sentry_sdk_reports_through_a_faultline_dsn() {
    python_scenario("gzip").await;
}

#[tokio::test]
async fn the_python_sentry_sdk_sending_brotli_is_understood() {
    python_scenario("br").await;
}

/// Runs `capture.py` with the SDK compressing its envelopes with `compression`, then reads the
/// groups it made through the read API.
async fn python_scenario(compression: &str) {
    let python = python_with_sentry_sdk().await;
    let app = TestApp::spawn_with_worker().await;
    let port = app.addr.rsplit(':').next().unwrap();
    let dsn = format!("http://{}@127.0.0.1:{port}/1", app.key);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sentry_py/capture.py");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(&python)
            .arg(&script)
            .env("SENTRY_DSN", &dsn)
            .env("SENTRY_COMPRESSION", compression)
            .output(),
    )
    .await
    .expect("the script finishes within a minute")
    .expect("the script runs");
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "capture.py failed:\n{log}");

    // Two exceptions from one line, one from another function, one from the standard library,
    // one message.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while app.counted().await < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "counted {} of 5 events; SDK log:\n{log}",
            app.counted().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resp = app
        .get("/api/errors?source=python&sort=count&limit=100")
        .await;
    assert_eq!(resp.status(), 200);
    let list: Value = resp.json().await.unwrap();
    let groups = list["data"]["errors"].as_array().expect("errors").clone();
    assert_eq!(groups.len(), 4, "{groups:#?}\nSDK log:\n{log}");
    let find = |prefix: &str| {
        groups
            .iter()
            .find(|g| g["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
            .unwrap_or_else(|| panic!("no group {prefix:?} in {groups:#?}"))
            .clone()
    };
    let charge = find("ValueError: card declined for cart 1");
    assert_eq!(charge["count"], 2, "one line raised twice is one group");
    let lookup = find("ValueError: no such user 7");
    assert_eq!(lookup["count"], 1, "another line is another group");
    let message = find("checkout queue is backing up");
    assert_eq!(message["count"], 1);
    assert_eq!(message["level"], "warning");
    for g in [&charge, &lookup, &message] {
        assert_eq!(g["environment"], "staging");
        assert_eq!(g["release"], "shop@1.4.2");
        assert_eq!(g["source"], "python");
        assert_eq!(g["context"]["tags"]["tenant"], "acme");
    }
    assert_eq!(charge["context"]["exception"]["type"], "ValueError");

    // The group was made from the in-app frames of the raising function.
    let id = charge["id"].as_str().unwrap();
    let detail: Value = app
        .get(&format!("/api/errors/{id}"))
        .await
        .json()
        .await
        .unwrap();
    let frames = detail["data"]["grouping"]["frames"].to_string();
    assert!(frames.contains("charge"), "grouping frames: {frames}");
    assert!(!frames.contains("lookup_user"), "grouping frames: {frames}");
    let stack = charge["stack_trace"].as_str().unwrap_or_default();
    assert!(
        stack.contains("capture.py") && stack.contains("in charge"),
        "{stack}"
    );
    // Raised inside `json`: only the application's (in-app) frames group it.
    let decode = find("JSONDecodeError: Expecting property name");
    let id = decode["id"].as_str().unwrap();
    let detail: Value = app
        .get(&format!("/api/errors/{id}"))
        .await
        .json()
        .await
        .unwrap();
    let frames = detail["data"]["grouping"]["frames"].to_string();
    assert!(
        frames.contains("parse_payload"),
        "grouping frames: {frames}"
    );
    assert!(
        !frames.contains("decode"),
        "library frames do not group: {frames}"
    );
    let stack = decode["stack_trace"].as_str().unwrap_or_default();
    assert!(
        stack.contains("raw_decode"),
        "the whole stack is kept: {stack}"
    );
    assert!(log.contains("sentry-sdk 2."), "{log}");
    // The SDK did compress as asked (the counter is per process: other tests send no brotli).
    let metrics = app
        .client
        .get(format!("{}/metrics", app.addr))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    let label = format!("ingest_sentry_requests_total{{encoding=\"{compression}\"}}");
    assert!(metrics.contains(&label), "{label} not in /metrics");
    app.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The official Node SDK
// ---------------------------------------------------------------------------------------------

/// `npm ci` of `tests/sentry_js` (pinned `@sentry/node`) unless done already.
async fn node_with_sentry_sdk() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sentry_js");
    if !dir.join("node_modules/@sentry/node").exists() {
        let out = tokio::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .output()
            .await
            .expect("npm is needed for this test (as for the dashboard's browser test)");
        assert!(
            out.status.success(),
            "npm ci in {} failed:\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

#[tokio::test]
async fn the_node_sentry_sdk_reports_through_a_faultline_dsn() {
    let dir = node_with_sentry_sdk().await;
    let app = TestApp::spawn_with_worker().await;
    let port = app.addr.rsplit(':').next().unwrap();
    let dsn = format!("http://{}@127.0.0.1:{port}/1", app.key);
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("node")
            .arg("capture.js")
            .current_dir(&dir)
            .env("SENTRY_DSN", &dsn)
            .output(),
    )
    .await
    .expect("the script finishes within a minute")
    .expect("node runs");
    let log =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "capture.js failed:\n{log}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while app.counted().await < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "counted {} of 3 events; SDK log:\n{log}",
            app.counted().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resp = app.get("/api/errors?source=node&limit=100").await;
    assert_eq!(resp.status(), 200);
    let list: Value = resp.json().await.unwrap();
    let groups = list["data"]["errors"].as_array().expect("errors").clone();
    assert_eq!(
        groups.len(),
        2,
        "the transaction made no group: {groups:#?}"
    );
    let find = |prefix: &str| {
        groups
            .iter()
            .find(|g| g["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
            .unwrap_or_else(|| panic!("no group {prefix:?} in {groups:#?}"))
            .clone()
    };
    let error = find("TypeError: order ");
    assert_eq!(error["count"], 2);
    assert_eq!(error["level"], "error");
    let message = find("the node queue is backing up");
    assert_eq!(message["level"], "warning");
    for g in [&error, &message] {
        assert_eq!(g["environment"], "staging");
        assert_eq!(g["release"], "web@3.1.0");
    }
    assert!(
        error["stack_trace"]
            .as_str()
            .is_some_and(|s| s.contains("parseOrder")),
        "{error:#?}"
    );
    assert_eq!(app.counted().await, 3, "the transaction is not an event");
    app.shutdown().await;
}
