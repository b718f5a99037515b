//! The ingest front door against real Postgres and RabbitMQ: what gets 202, and every kind of bad
//! input with its status, its `code`, and proof that nothing reached the queue.

mod support;

use faultline_shared::domain::Permission;
use serde_json::{Value, json};
use support::TestApp;

async fn body(resp: reqwest::Response) -> Value {
    resp.json().await.expect("JSON body")
}

#[tokio::test]
async fn a_valid_event_is_accepted_after_the_broker_confirms_it() {
    let app = TestApp::spawn().await;
    let resp = app
        .post_event(
            &json!({"level": "warning", "message": "disk almost full", "source": "backend"}),
        )
        .await;
    assert_eq!(resp.status(), 202);
    assert!(resp.headers().contains_key("x-request-id"));
    let b = body(resp).await;
    assert_eq!(b["status"], "success");
    assert_eq!(b["data"]["status"], "queued");
    let id = b["data"]["id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
    assert_eq!(app.queue_depth().await, 1);
    app.shutdown().await;
}

async fn assert_refused(app: &TestApp, resp: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status(), status, "status");
    let b = body(resp).await;
    assert_eq!(b["status"], "error");
    assert_eq!(b["code"], code, "code in {b}");
    assert!(b["error"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(b["request_id"].as_str().is_some());
    assert_eq!(app.queue_depth().await, 0, "nothing may reach the queue");
    b
}

#[tokio::test]
async fn malformed_json_is_refused_with_its_position() {
    let app = TestApp::spawn().await;
    let resp = app
        .post_raw(
            "/api/errors",
            Some("application/json"),
            Some(&app.key),
            "{\"message\": ",
        )
        .await;
    let b = assert_refused(&app, resp, 400, "malformed_json").await;
    assert!(b["details"]["body"].as_str().unwrap().contains("line"));
    app.shutdown().await;
}

#[tokio::test]
async fn missing_and_empty_required_fields_are_named() {
    let app = TestApp::spawn().await;
    let resp = app.post_event(&json!({"message": "   "})).await;
    let b = assert_refused(&app, resp, 400, "validation_error").await;
    assert_eq!(b["details"]["message"], "must not be empty");
    assert_eq!(b["details"]["source"], "is required");
    app.shutdown().await;
}

#[tokio::test]
async fn wrong_types_and_unknown_levels_are_refused() {
    let app = TestApp::spawn().await;
    let resp = app
        .post_event(&json!({"message": 5, "source": "x", "level": "fatal", "context": "nope"}))
        .await;
    let b = assert_refused(&app, resp, 400, "validation_error").await;
    assert_eq!(b["details"]["message"], "must be a string");
    assert_eq!(
        b["details"]["level"],
        "must be one of error, warning, info, debug"
    );
    assert_eq!(b["details"]["context"], "must be an object");
    let resp = app.post_event(&json!([1, 2])).await;
    assert_refused(&app, resp, 400, "validation_error").await;
    app.shutdown().await;
}

#[tokio::test]
async fn an_oversized_body_gets_413() {
    let app = TestApp::spawn_with(|s| s.max_body_bytes = 2048).await;
    let big = json!({"message": "x".repeat(4096), "source": "backend"}).to_string();
    let resp = app
        .post_raw(
            "/api/errors",
            Some("application/json"),
            Some(&app.key),
            big.clone(),
        )
        .await;
    assert_refused(&app, resp, 413, "payload_too_large").await;
    // Without a Content-Length (chunked), the limit still holds.
    let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(big.into_bytes())]);
    let resp = app
        .post_raw(
            "/api/errors",
            Some("application/json"),
            Some(&app.key),
            reqwest::Body::wrap_stream(stream),
        )
        .await;
    assert_refused(&app, resp, 413, "payload_too_large").await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_non_json_content_type_gets_415() {
    let app = TestApp::spawn().await;
    let ev = json!({"message": "m", "source": "s"}).to_string();
    let resp = app
        .post_raw(
            "/api/errors",
            Some("text/plain"),
            Some(&app.key),
            ev.clone(),
        )
        .await;
    assert_refused(&app, resp, 415, "unsupported_media_type").await;
    let resp = app
        .post_raw("/api/errors", None, Some(&app.key), ev.clone())
        .await;
    assert_refused(&app, resp, 415, "unsupported_media_type").await;
    // Parameters such as a charset are fine.
    let resp = app
        .post_raw(
            "/api/errors",
            Some("application/json; charset=utf-8"),
            Some(&app.key),
            ev,
        )
        .await;
    assert_eq!(resp.status(), 202);
    app.shutdown().await;
}

#[tokio::test]
async fn missing_or_unknown_keys_get_401() {
    let app = TestApp::spawn().await;
    let ev = json!({"message": "m", "source": "s"}).to_string();
    let resp = app
        .post_raw("/api/errors", Some("application/json"), None, ev.clone())
        .await;
    assert_refused(&app, resp, 401, "unauthorized").await;
    let resp = app
        .post_raw(
            "/api/errors",
            Some("application/json"),
            Some("fl_not-a-real-key"),
            ev,
        )
        .await;
    assert_refused(&app, resp, 401, "unauthorized").await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_key_without_ingest_permission_gets_403() {
    let app = TestApp::spawn().await;
    let read_only = app.create_key(&[Permission::Read]).await;
    let resp = app
        .post_raw(
            "/api/errors",
            Some("application/json"),
            Some(&read_only),
            json!({"message": "m", "source": "s"}).to_string(),
        )
        .await;
    let b = assert_refused(&app, resp, 403, "permission_denied").await;
    assert_eq!(b["details"]["required"], "ingest");
    app.shutdown().await;
}

#[tokio::test]
async fn a_batch_accepts_valid_items_and_reports_each_rejected_one() {
    let app = TestApp::spawn().await;
    let resp = app
        .post_batch(&json!([
            {"message": "one", "source": "web"},
            {"message": "two"},
            {"message": "three", "source": "web", "level": "info"},
            "not an object"
        ]))
        .await;
    assert_eq!(resp.status(), 202);
    let b = body(resp).await;
    assert_eq!(b["data"]["accepted"], 2);
    assert_eq!(b["data"]["rejected"], 2);
    let items = b["data"]["items"].as_array().unwrap();
    assert_eq!(items[0]["status"], "accepted");
    assert!(items[0]["id"].as_str().is_some());
    assert_eq!(items[1]["status"], "rejected");
    assert_eq!(items[1]["details"]["source"], "is required");
    assert_eq!(items[3]["details"]["body"], "must be a JSON object");
    // Both valid events travel in one broker message (group commit), and nothing else.
    assert_eq!(app.queue_depth().await, 1);
    app.shutdown().await;
}

#[tokio::test]
async fn a_batch_of_only_invalid_items_or_too_many_items_is_refused() {
    let app = TestApp::spawn_with(|s| s.batch_max_events = 3).await;
    let resp = app.post_batch(&json!([{"message": "x"}])).await;
    let b = assert_refused(&app, resp, 400, "validation_error").await;
    assert_eq!(b["details"]["items"][0]["details"]["source"], "is required");
    let four = json!([{"message":"a","source":"s"},{"message":"a","source":"s"},{"message":"a","source":"s"},{"message":"a","source":"s"}]);
    let resp = app.post_batch(&four).await;
    assert_refused(&app, resp, 400, "validation_error").await;
    let resp = app
        .post_batch(&json!({"message": "a", "source": "s"}))
        .await;
    assert_refused(&app, resp, 400, "validation_error").await;
    app.shutdown().await;
}

#[tokio::test]
async fn health_reports_each_dependency_and_metrics_are_exposed() {
    let app = TestApp::spawn().await;
    let resp = app
        .client
        .get(format!("{}/health", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let b = body(resp).await;
    assert_eq!(b["status"], "ok");
    for dep in ["postgres", "rabbitmq", "redis"] {
        assert_eq!(b["checks"][dep]["status"], "healthy", "{dep}");
    }
    app.post_event(&json!({"message": "m", "source": "s"}))
        .await;
    let text = app
        .client
        .get(format!("{}/metrics", app.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("ingest_events_accepted_total"));
    assert!(text.contains("http_request_duration_seconds"));
    app.shutdown().await;
}

/// With room for one batch body at a time, concurrent batches wait their turn (the budget's
/// wait counter shows they did) instead of being refused, and every event arrives once.
#[tokio::test]
async fn concurrent_batches_over_the_body_budget_wait_their_turn_and_all_arrive() {
    let mut app = TestApp::spawn_with(|s| {
        s.max_body_bytes = 16 * 1024;
        s.body_budget_bytes = 16 * 1024;
    })
    .await;
    app.start_worker().await;
    let batch: Vec<Value> = (0..20)
        .map(|i| json!({"message": format!("budget {i}"), "source": "web", "context": {"pad": "x".repeat(400)}}))
        .collect();
    let batch = Value::Array(batch);
    assert!(
        batch.to_string().len() > 8 * 1024,
        "two bodies must not fit"
    );
    let answers = futures_util::future::join_all((0..12).map(|_| app.post_batch(&batch))).await;
    for resp in answers {
        assert_eq!(resp.status(), 202);
        assert_eq!(body(resp).await["data"]["accepted"], 20);
    }
    app.wait_for_count(12 * 20, 30).await;
    let waits = app.metric("ingest_body_budget_waits_total").await;
    assert!(waits >= 1.0, "no request waited for the budget");
    // Every request gave its share back.
    assert_eq!(
        app.metric("ingest_body_budget_available_bytes").await,
        16384.0,
        "budget not all returned"
    );
    app.shutdown().await;
}
