//! Rule evaluation against real rollups and group state written by the worker's own code.

mod support;

use alerter::evaluate;
use chrono::{TimeDelta, Utc};
use faultline_shared::domain::Level;
use support::*;

#[tokio::test]
async fn a_threshold_rule_fires_once_when_the_count_crosses_the_threshold() {
    let db = setup().await;
    let pool = &db.pool;
    let rule = create_rule(pool, NewRule::default()).await;

    ingest(
        pool,
        "Database connection failed",
        Level::Error,
        "backend",
        10,
    )
    .await;
    let firings = evaluate(pool, Utc::now()).await.unwrap();
    assert!(
        firings.is_empty(),
        "10 events are not more than 10: {firings:?}"
    );

    ingest(
        pool,
        "Database connection failed",
        Level::Error,
        "backend",
        1,
    )
    .await;
    let firings = evaluate(pool, Utc::now()).await.unwrap();
    assert_eq!(firings.len(), 1);
    let f = &firings[0];
    assert_eq!(f.rule_id, rule);
    assert_eq!(f.count, 11);
    assert!(f.notified && f.new_incident);
    assert_eq!(f.notifications.len(), 1);

    let (status, severity, title): (String, String, String) =
        sqlx::query_as("SELECT status, severity, title FROM incidents WHERE rule_id = $1")
            .bind(rule)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), severity.as_str(), title.as_str()),
        ("open", "high", "High Error Rate")
    );
    let (last_triggered,): (Option<chrono::DateTime<Utc>>,) =
        sqlx::query_as("SELECT last_triggered FROM alert_rules WHERE id = $1")
            .bind(rule)
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(last_triggered.is_some());
}

#[tokio::test]
async fn events_outside_the_window_or_the_filters_are_not_counted() {
    let db = setup().await;
    let pool = &db.pool;
    create_rule(
        pool,
        NewRule {
            source: Some("backend"),
            level: Some("error"),
            ..NewRule::default()
        },
    )
    .await;
    let now = Utc::now();
    // Old events, another source, another level: none of them count.
    ingest_at(
        pool,
        "old",
        Level::Error,
        "backend",
        "production",
        now - TimeDelta::minutes(20),
        50,
    )
    .await;
    ingest(pool, "frontend", Level::Error, "frontend", 50).await;
    ingest(pool, "warning", Level::Warning, "backend", 50).await;
    ingest(pool, "counted", Level::Error, "backend", 5).await;
    assert!(evaluate(pool, Utc::now()).await.unwrap().is_empty());

    ingest(pool, "counted", Level::Error, "backend", 6).await;
    let firings = evaluate(pool, Utc::now()).await.unwrap();
    assert_eq!(firings.len(), 1);
    assert_eq!(firings[0].count, 11);
}

#[tokio::test]
async fn the_cooldown_suppresses_a_second_notification_for_the_same_burst() {
    let db = setup().await;
    let pool = &db.pool;
    create_rule(pool, NewRule::default()).await;
    ingest(pool, "boom", Level::Error, "backend", 11).await;

    let first = evaluate(pool, Utc::now()).await.unwrap();
    assert!(first[0].notified);
    // Still above the threshold a tick later: the incident is updated, nobody is paged again.
    let second = evaluate(pool, Utc::now()).await.unwrap();
    assert_eq!(second.len(), 1);
    assert!(!second[0].notified);
    assert!(second[0].notifications.is_empty());
    assert_eq!(second[0].incident_id, first[0].incident_id);
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM notifications")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let (incidents, triggers): (i64, i64) =
        sqlx::query_as("SELECT count(*), sum(trigger_count)::bigint FROM incidents")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!((incidents, triggers), (1, 2));

    // After the cooldown (10 minutes) a burst still going on notifies again, on the same incident.
    let later = Utc::now() + TimeDelta::minutes(11);
    ingest_at(
        pool,
        "boom",
        Level::Error,
        "backend",
        "production",
        later,
        11,
    )
    .await;
    let third = evaluate(pool, later + TimeDelta::seconds(1)).await.unwrap();
    assert!(third[0].notified);
    assert_eq!(third[0].incident_id, first[0].incident_id);
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM notifications")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(n, 2);
}

#[tokio::test]
async fn a_new_error_rule_fires_on_a_group_first_seen_since_the_last_evaluation() {
    let db = setup().await;
    let pool = &db.pool;
    ingest(pool, "known before", Level::Error, "backend", 1).await;
    create_rule(
        pool,
        NewRule {
            name: "New error",
            kind: "new_error",
            cooldown_secs: 0,
            ..NewRule::default()
        },
    )
    .await;
    // The rule was created (in the helper) an hour ago: the first run counts groups since then.
    let first = evaluate_settled(pool).await;
    assert_eq!(first.len(), 1);
    assert!(evaluate_settled(pool).await.is_empty(), "nothing new since");

    ingest(pool, "known before", Level::Error, "backend", 3).await;
    assert!(
        evaluate_settled(pool).await.is_empty(),
        "a known group is not new"
    );

    ingest(
        pool,
        "Payment provider unreachable",
        Level::Error,
        "payments",
        2,
    )
    .await;
    let firings = evaluate_settled(pool).await;
    assert_eq!(firings.len(), 1);
    assert_eq!(firings[0].count, 1);
    let (payload,): (serde_json::Value,) =
        sqlx::query_as("SELECT payload FROM notifications ORDER BY created_at DESC LIMIT 1")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(
        payload["top_error"]["message"],
        "Payment provider unreachable"
    );
}

#[tokio::test]
async fn a_regression_rule_fires_when_a_resolved_group_occurs_again() {
    let db = setup().await;
    let pool = &db.pool;
    create_rule(
        pool,
        NewRule {
            name: "Regression",
            kind: "regression",
            ..NewRule::default()
        },
    )
    .await;
    ingest(pool, "Cache miss storm", Level::Error, "backend", 2).await;
    assert!(evaluate_settled(pool).await.is_empty());

    sqlx::query("UPDATE error_groups SET resolved = true, resolved_at = now()")
        .execute(pool)
        .await
        .unwrap();
    assert!(
        evaluate_settled(pool).await.is_empty(),
        "resolving is not a regression"
    );

    ingest(pool, "Cache miss storm", Level::Error, "backend", 1).await;
    let firings = evaluate_settled(pool).await;
    assert_eq!(firings.len(), 1);
    assert_eq!(firings[0].count, 1);
    assert!(
        evaluate_settled(pool).await.is_empty(),
        "fires once per regression"
    );
}

#[tokio::test]
async fn a_disabled_rule_is_not_evaluated() {
    let db = setup().await;
    let pool = &db.pool;
    let rule = create_rule(pool, NewRule::default()).await;
    sqlx::query("UPDATE alert_rules SET enabled = false WHERE id = $1")
        .bind(rule)
        .execute(pool)
        .await
        .unwrap();
    ingest(pool, "boom", Level::Error, "backend", 50).await;
    assert!(evaluate(pool, Utc::now()).await.unwrap().is_empty());
}
