//! Delivery to real receivers: a local HTTP server for Slack and webhooks, a local SMTP server for
//! email. Retries are driven by calling `deliver_due` with a later `now`, never by sleeping.

mod support;

use alerter::{Delivery, DeliveryConfig, channels, evaluate};
use chrono::{DateTime, TimeDelta, Utc};
use faultline_shared::domain::Level;
use serde_json::json;
use sqlx::PgPool;
use support::*;

/// Creates a threshold rule on `channels` and makes it fire once; returns the firing time.
async fn fire(pool: &PgPool, channels: Vec<&'static str>) -> DateTime<Utc> {
    create_rule(
        pool,
        NewRule {
            channels,
            source: Some("backend"),
            ..NewRule::default()
        },
    )
    .await;
    ingest(
        pool,
        "Database connection failed",
        Level::Error,
        "backend",
        11,
    )
    .await;
    let now = Utc::now();
    let firings = evaluate(pool, now).await.unwrap();
    assert_eq!(firings.len(), 1);
    now
}

#[tokio::test]
async fn a_webhook_arrives_signed_with_the_rule_count_window_and_source() {
    let db = setup().await;
    let receiver = Receiver::start().await;
    set_integration(&db.pool, "webhook", webhook_config(&receiver, "whsec-test")).await;
    let now = fire(&db.pool, vec!["webhook"]).await;

    let report = delivery().deliver_due(&db.pool, now).await.unwrap();
    assert_eq!(report.delivered, 1);
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    let req = &got[0];
    let signature = req.header("x-faultline-signature").expect("signed");
    assert!(channels::verify("whsec-test", &signature, &req.body));
    assert!(!channels::verify("wrong-secret", &signature, &req.body));
    let body = req.json();
    assert_eq!(body["rule"]["name"], "High Error Rate");
    assert_eq!(body["count"], 11);
    assert_eq!(body["window"]["duration"], "5m");
    assert_eq!(body["source"], "backend");
    assert_eq!(body["top_error"]["message"], "Database connection failed");
    assert_eq!(
        req.header("idempotency-key").as_deref(),
        body["idempotency_key"].as_str()
    );
    assert!(
        body["link"]
            .as_str()
            .unwrap()
            .starts_with("http://faultline.test/api/errors/")
    );
    assert_eq!(notifications(&db.pool).await[0].0, "delivered");
}

#[tokio::test]
async fn a_slack_message_names_the_rule_count_window_and_top_error() {
    let db = setup().await;
    let receiver = Receiver::start().await;
    set_integration(
        &db.pool,
        "slack",
        json!({"url": format!("{}/services/T000/B000/XXXX", receiver.url), "channel": "#alerts"}),
    )
    .await;
    let now = fire(&db.pool, vec!["slack"]).await;

    delivery().deliver_due(&db.pool, now).await.unwrap();
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/services/T000/B000/XXXX");
    let body = got[0].json();
    assert_eq!(body["channel"], "#alerts");
    let text = body["text"].as_str().unwrap();
    assert!(
        text.contains("High Error Rate: 11 events in 5 minutes (threshold 10)"),
        "{text}"
    );
    assert!(
        text.contains("Top error: Database connection failed"),
        "{text}"
    );
    assert!(text.contains("http://faultline.test/api/errors/"), "{text}");
}

#[tokio::test]
async fn an_email_arrives_at_a_real_smtp_server_naming_the_rule() {
    let db = setup().await;
    let smtp = SmtpServer::start().await;
    set_integration(
        &db.pool,
        "email",
        json!({"host": "127.0.0.1", "port": smtp.port, "tls": "none",
               "from": "alerts@faultline.test", "recipients": ["oncall@example.com", "dev@example.com"]}),
    )
    .await;
    let now = fire(&db.pool, vec!["email"]).await;

    let report = delivery().deliver_due(&db.pool, now).await.unwrap();
    assert_eq!(report.delivered, 1, "{:?}", notifications(&db.pool).await);
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.from, "<alerts@faultline.test>");
    assert_eq!(mail.to, vec!["<oncall@example.com>", "<dev@example.com>"]);
    assert!(
        mail.data
            .contains("Subject: [Faultline] High Error Rate: 11 events in 5 minutes"),
        "{}",
        mail.data
    );
    assert!(
        mail.data.contains("Top error: Database connection failed"),
        "{}",
        mail.data
    );
    assert!(mail.data.contains("Message-ID: <"), "{}", mail.data);
}

#[tokio::test]
async fn every_channel_of_a_rule_gets_its_own_notification() {
    let db = setup().await;
    let receiver = Receiver::start().await;
    let smtp = SmtpServer::start().await;
    set_integration(&db.pool, "webhook", webhook_config(&receiver, "s")).await;
    set_integration(
        &db.pool,
        "slack",
        json!({"url": format!("{}/slack", receiver.url)}),
    )
    .await;
    set_integration(
        &db.pool,
        "email",
        json!({"host": "127.0.0.1", "port": smtp.port, "tls": "none",
               "from": "alerts@faultline.test", "recipients": ["oncall@example.com"]}),
    )
    .await;
    let now = fire(&db.pool, vec!["webhook", "slack", "email"]).await;
    let report = delivery().deliver_due(&db.pool, now).await.unwrap();
    assert_eq!(report.delivered, 3);
    assert_eq!(receiver.received().len(), 2);
    assert_eq!(smtp.mails().len(), 1);
}

#[tokio::test]
async fn a_receiver_that_fails_twice_gets_the_notification_on_the_third_attempt() {
    let db = setup().await;
    let receiver = Receiver::start().await;
    receiver.answer(&[(500, None), (503, None)]);
    set_integration(&db.pool, "webhook", webhook_config(&receiver, "s")).await;
    let t0 = fire(&db.pool, vec!["webhook"]).await;
    let d = delivery();

    assert_eq!(d.deliver_due(&db.pool, t0).await.unwrap().retrying, 1);
    // Not due again until the backoff (10 s, then 20 s) has passed.
    assert_eq!(
        d.deliver_due(&db.pool, t0 + TimeDelta::seconds(5))
            .await
            .unwrap()
            .attempted(),
        0
    );
    let t1 = t0 + TimeDelta::seconds(10);
    assert_eq!(d.deliver_due(&db.pool, t1).await.unwrap().retrying, 1);
    assert_eq!(
        d.deliver_due(&db.pool, t1 + TimeDelta::seconds(19))
            .await
            .unwrap()
            .attempted(),
        0
    );
    let report = d
        .deliver_due(&db.pool, t1 + TimeDelta::seconds(20))
        .await
        .unwrap();
    assert_eq!(report.delivered, 1);

    assert_eq!(receiver.received().len(), 3);
    let a = attempts(&db.pool).await;
    assert_eq!(
        a.iter().map(|x| (x.0, x.1, x.2)).collect::<Vec<_>>(),
        vec![
            (1, false, Some(500)),
            (2, false, Some(503)),
            (3, true, Some(200))
        ]
    );
    assert_eq!(notifications(&db.pool).await[0].0, "delivered");
    // All three carried the same idempotency key.
    let keys: std::collections::HashSet<_> = receiver
        .received()
        .iter()
        .map(|r| r.header("idempotency-key"))
        .collect();
    assert_eq!(keys.len(), 1);
}

#[tokio::test]
async fn a_receiver_that_always_fails_ends_failed_with_every_attempt_recorded() {
    let db = setup().await;
    let receiver = Receiver::start().await;
    receiver.always_answer(500);
    set_integration(&db.pool, "webhook", webhook_config(&receiver, "s")).await;
    let t0 = fire(&db.pool, vec!["webhook"]).await;
    let d = delivery();
    for hours in 0..5 {
        d.deliver_due(&db.pool, t0 + TimeDelta::hours(hours))
            .await
            .unwrap();
    }
    assert_eq!(receiver.received().len(), 3, "max_attempts is 3");
    let n = notifications(&db.pool).await;
    assert_eq!(n[0].0, "failed");
    assert_eq!(n[0].1, 3);
    assert!(n[0].2.as_deref().unwrap().contains("500"));
    let a = attempts(&db.pool).await;
    assert_eq!(a.len(), 3);
    assert!(a.iter().all(|x| !x.1 && x.2 == Some(500)));
}

#[tokio::test]
async fn retry_after_from_a_429_is_honoured() {
    let db = setup().await;
    let receiver = Receiver::start().await;
    receiver.answer(&[(429, Some(120))]);
    set_integration(&db.pool, "webhook", webhook_config(&receiver, "s")).await;
    let t0 = fire(&db.pool, vec!["webhook"]).await;
    let d = delivery();
    assert_eq!(d.deliver_due(&db.pool, t0).await.unwrap().retrying, 1);
    // The backoff alone would retry after 10 s; the receiver asked for 120 s.
    assert_eq!(
        d.deliver_due(&db.pool, t0 + TimeDelta::seconds(60))
            .await
            .unwrap()
            .attempted(),
        0
    );
    assert_eq!(
        d.deliver_due(&db.pool, t0 + TimeDelta::seconds(120))
            .await
            .unwrap()
            .delivered,
        1
    );
    assert_eq!(receiver.received().len(), 2);
}

#[tokio::test]
async fn a_webhook_to_a_private_address_is_refused_by_default() {
    let db = setup().await;
    let receiver = Receiver::start().await;
    set_integration(&db.pool, "webhook", webhook_config(&receiver, "s")).await;
    let t0 = fire(&db.pool, vec!["webhook"]).await;
    let strict = Delivery::new(DeliveryConfig {
        allow_private_targets: false,
        ..delivery_config()
    });
    let report = strict.deliver_due(&db.pool, t0).await.unwrap();
    assert_eq!(report.failed, 1, "refusal is permanent: no retries");
    assert!(receiver.received().is_empty());
    let n = notifications(&db.pool).await;
    assert!(
        n[0].2.as_deref().unwrap().contains("private address"),
        "{n:?}"
    );
}

#[tokio::test]
async fn a_channel_without_an_integration_fails_visibly() {
    let db = setup().await;
    let t0 = fire(&db.pool, vec!["slack"]).await;
    let d = delivery();
    for hours in 0..4 {
        d.deliver_due(&db.pool, t0 + TimeDelta::hours(hours))
            .await
            .unwrap();
    }
    let n = notifications(&db.pool).await;
    assert_eq!(n[0].0, "failed");
    assert!(n[0].2.as_deref().unwrap().contains("not configured"));
    assert_eq!(attempts(&db.pool).await.len(), 3);
}

#[tokio::test]
async fn secrets_do_not_appear_in_recorded_errors() {
    let db = setup().await;
    // Nothing listens on port 9: the connection is refused; the error must not name the URL,
    // whose path is the Slack credential.
    set_integration(
        &db.pool,
        "slack",
        json!({"url": "http://127.0.0.1:9/services/T0/B0/SECRETTOKEN"}),
    )
    .await;
    let t0 = fire(&db.pool, vec!["slack"]).await;
    delivery().deliver_due(&db.pool, t0).await.unwrap();
    let a = attempts(&db.pool).await;
    let err = a[0].3.clone().unwrap();
    assert!(!err.contains("SECRETTOKEN"), "{err}");
}

#[tokio::test]
async fn a_test_notification_arrives_on_each_channel() {
    setup().await;
    let receiver = Receiver::start().await;
    let smtp = SmtpServer::start().await;
    let d = delivery();
    d.send_test(
        alerter::rule::Channel::Webhook,
        &webhook_config(&receiver, "s3cret"),
    )
    .await
    .unwrap();
    d.send_test(
        alerter::rule::Channel::Slack,
        &json!({"url": format!("{}/slack", receiver.url)}),
    )
    .await
    .unwrap();
    d.send_test(
        alerter::rule::Channel::Email,
        &json!({"host": "127.0.0.1", "port": smtp.port, "tls": "none",
                "from": "alerts@faultline.test", "recipients": ["oncall@example.com"]}),
    )
    .await
    .unwrap();
    let got = receiver.received();
    assert_eq!(got.len(), 2);
    let hook = got.iter().find(|r| r.path == "/hook").unwrap();
    assert!(channels::verify(
        "s3cret",
        &hook.header("x-faultline-signature").unwrap(),
        &hook.body
    ));
    assert_eq!(hook.json()["type"], "test");
    let slack = got.iter().find(|r| r.path == "/slack").unwrap();
    assert!(
        slack.json()["text"]
            .as_str()
            .unwrap()
            .contains("test notification")
    );
    assert!(
        smtp.mails()[0]
            .data
            .contains("Subject: [Faultline] Faultline test notification")
    );
}
