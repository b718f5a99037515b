//! Secrets are filtered in ingest, before publishing: what reaches the broker and the database
//! holds `[Filtered]` instead (real ingest, RabbitMQ, worker and Postgres).

mod support;

use serde_json::{Value, json};
use support::TestApp;

#[tokio::test]
async fn a_password_an_authorization_header_and_a_card_number_are_never_stored() {
    let app = TestApp::spawn_with_worker().await;
    let resp = app
        .post_event(&json!({
            "message": "payment failed for card 4111 1111 1111 1111",
            "source": "checkout",
            "url": "https://shop.example/pay?order=7&token=abc123",
            "context": {
                "user": {"email": "ann@example.com", "password": "hunter2"},
                "request": {"headers": {"Authorization": "Bearer s3cr3t", "Accept": "text/html"}},
                "payment": {"card": "5500-0000-0000-0004", "amount": 12}
            }
        }))
        .await;
    assert_eq!(resp.status(), 202);
    app.wait_for_count(1, 30).await;

    let (message, context, url): (String, Value, Option<String>) =
        sqlx::query_as("SELECT message, context, url FROM events")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    let stored = format!("{message} {context} {url:?}");
    for secret in [
        "hunter2",
        "s3cr3t",
        "4111 1111 1111 1111",
        "5500-0000-0000-0004",
        "abc123",
    ] {
        assert!(!stored.contains(secret), "{secret} stored in {stored}");
    }
    assert_eq!(context["user"]["password"], "[Filtered]");
    assert_eq!(context["request"]["headers"]["Authorization"], "[Filtered]");
    assert_eq!(context["payment"]["card"], "[Filtered]");
    // What is not secret stays.
    assert_eq!(context["user"]["email"], "ann@example.com");
    assert_eq!(context["request"]["headers"]["Accept"], "text/html");
    assert_eq!(context["payment"]["amount"], 12);
    assert_eq!(message, "payment failed for card [Filtered]");
    assert_eq!(
        url.as_deref(),
        Some("https://shop.example/pay?order=7&token=[Filtered]")
    );
    let (group_context,): (Value,) = sqlx::query_as("SELECT context FROM error_groups")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert!(!group_context.to_string().contains("hunter2"));
    app.shutdown().await;
}

#[tokio::test]
async fn the_scrub_list_is_configurable() {
    let app = TestApp::spawn_with(|s| s.access.scrub_fields = vec!["tenant_pin".into()]).await;
    let mut app = app;
    app.start_worker().await;
    let resp = app
        .post_event(&json!({
            "message": "m",
            "source": "s",
            "context": {"Tenant-PIN": "9911", "tenant": "acme"}
        }))
        .await;
    assert_eq!(resp.status(), 202);
    app.wait_for_count(1, 30).await;
    let (context,): (Value,) = sqlx::query_as("SELECT context FROM events")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(
        context,
        json!({"Tenant-PIN": "[Filtered]", "tenant": "acme"})
    );
    app.shutdown().await;
}
