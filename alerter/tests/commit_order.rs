//! Rules against worker transactions that are still open while a rule is evaluated: a group created
//! or regressed by a transaction that began before an evaluation and committed after it is alerted
//! by the next evaluation, once (RELIABILITY.md). The transactions are the worker's own code
//! (`worker::process::write_batch`), held open by the test.

mod support;

use alerter::evaluate;
use chrono::Utc;
use faultline_shared::domain::Level;
use rand::Rng;
use std::time::Duration;
use support::*;

fn new_error_rule() -> NewRule {
    NewRule {
        name: "New error",
        kind: "new_error",
        cooldown_secs: 0,
        ..NewRule::default()
    }
}

/// The message of the error the latest notification names.
async fn latest_top_error(pool: &sqlx::PgPool) -> serde_json::Value {
    let (payload,): (serde_json::Value,) = sqlx::query_as(
        "SELECT payload FROM notifications ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    payload["top_error"]["message"].clone()
}

async fn notification_count(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM notifications")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_group_committed_after_an_evaluation_began_is_alerted_once_by_the_next_one() {
    let db = setup().await;
    let pool = &db.pool;
    create_rule(pool, new_error_rule()).await;
    assert!(evaluate_settled(pool).await.is_empty());

    // The worker's transaction creates the group (created_at: its start) and is still open
    // when the next evaluation runs.
    let in_flight = begin_ingest(pool, "Ledger write timed out", Level::Error, "billing", 1).await;
    unseen_until_committed_then_alerted_once(pool, in_flight).await;
    assert_eq!(latest_top_error(pool).await, "Ledger write timed out");
}

/// The worker transaction `in_flight` is still open: an evaluation now does not see its group;
/// once it commits, the next evaluation alerts it, once, and the one after that finds nothing.
async fn unseen_until_committed_then_alerted_once(
    pool: &sqlx::PgPool,
    in_flight: sqlx::Transaction<'static, sqlx::Postgres>,
) {
    assert!(
        evaluate(pool, Utc::now()).await.unwrap().is_empty(),
        "not committed yet"
    );
    in_flight.commit().await.unwrap();
    let firings = evaluate_settled(pool).await;
    assert_eq!(firings.len(), 1, "alerted by the next evaluation");
    assert_eq!(firings[0].count, 1);
    assert!(evaluate_settled(pool).await.is_empty(), "and only once");
    assert_eq!(notification_count(pool).await, 1);
}

#[tokio::test]
async fn a_group_in_flight_at_a_rules_first_evaluation_is_alerted_once_by_the_next_one() {
    let db = setup().await;
    let pool = &db.pool;
    // The rule's first evaluation goes by time (since its creation, an hour ago in the helper):
    // it counts the committed group, and the one in flight is left to the next evaluation.
    create_rule(pool, new_error_rule()).await;
    ingest(pool, "Committed before", Level::Error, "backend", 1).await;
    settle(pool).await;
    let in_flight = begin_ingest(pool, "Still in flight", Level::Error, "backend", 1).await;
    let first = evaluate(pool, Utc::now()).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].count, 1);
    assert_eq!(latest_top_error(pool).await, "Committed before");
    in_flight.commit().await.unwrap();

    let second = evaluate_settled(pool).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].count, 1);
    assert_eq!(latest_top_error(pool).await, "Still in flight");
    assert!(evaluate_settled(pool).await.is_empty());
    assert_eq!(notification_count(pool).await, 2);
}

#[tokio::test]
async fn a_regression_committed_after_an_evaluation_began_is_alerted_once_by_the_next_one() {
    let db = setup().await;
    let pool = &db.pool;
    create_rule(
        pool,
        NewRule {
            name: "Regression",
            kind: "regression",
            cooldown_secs: 0,
            ..NewRule::default()
        },
    )
    .await;
    ingest(pool, "Cache miss storm", Level::Error, "backend", 2).await;
    sqlx::query("UPDATE error_groups SET resolved = true, resolved_at = now()")
        .execute(pool)
        .await
        .unwrap();
    assert!(evaluate_settled(pool).await.is_empty());

    // The worker's transaction reopens the group (regressed_at: its start) and is still open
    // when the next evaluation runs.
    let in_flight = begin_ingest(pool, "Cache miss storm", Level::Error, "backend", 1).await;
    unseen_until_committed_then_alerted_once(pool, in_flight).await;
}

/// Letters only (g..z), so the fingerprint, which ignores numbers and hex, tells them apart.
fn letters(mut n: usize) -> String {
    let mut s = String::new();
    loop {
        s.push((b'g' + (n % 20) as u8) as char);
        n /= 20;
        if n == 0 {
            return s;
        }
    }
}

#[tokio::test]
async fn evaluations_racing_slow_worker_transactions_count_every_new_group_exactly_once() {
    let db = setup().await;
    let pool = &db.pool;
    create_rule(pool, new_error_rule()).await;
    assert!(evaluate_settled(pool).await.is_empty());

    // Four workers, each creating groups one at a time in transactions held open 0-150 ms (a
    // loaded worker's take ~300 ms), while two alerter replicas evaluate the rule every 10 ms.
    let (writers, per_writer) = (4, 12);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                let message = format!("Failure {} in worker {}", letters(i), letters(w));
                let tx = begin_ingest(&pool, &message, Level::Error, "backend", 1).await;
                let hold = rand::rng().random_range(0..150);
                tokio::time::sleep(Duration::from_millis(hold)).await;
                tx.commit().await.unwrap();
            }
        }));
    }
    let (done, _) = tokio::sync::watch::channel(false);
    let replicas: Vec<_> = (0..2)
        .map(|_| {
            let pool = pool.clone();
            let mut done = done.subscribe();
            tokio::spawn(async move {
                let (mut counted, mut firings) = (0, 0);
                while !*done.borrow() {
                    for f in evaluate(&pool, Utc::now()).await.unwrap() {
                        counted += f.count;
                        firings += 1;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                        _ = done.changed() => {}
                    }
                }
                (counted, firings)
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    done.send(true).unwrap();
    let (mut counted, mut firings) = (0, 0);
    for r in replicas {
        let (c, f) = r.await.unwrap();
        counted += c;
        firings += f;
    }
    for f in evaluate_settled(pool).await {
        counted += f.count;
        firings += 1;
    }

    let groups: i64 = sqlx::query_scalar("SELECT count(*) FROM error_groups")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(groups, (writers * per_writer) as i64);
    assert_eq!(
        counted, groups,
        "every new group counted once over {firings} firings"
    );
    assert_eq!(notification_count(pool).await, firings);
    assert!(evaluate_settled(pool).await.is_empty());
}

#[tokio::test]
async fn a_threshold_count_committed_after_an_evaluation_is_counted_by_the_next_one() {
    let db = setup().await;
    let pool = &db.pool;
    create_rule(pool, NewRule::default()).await;
    ingest(pool, "boom", Level::Error, "backend", 6).await;
    // Five more in a transaction still open at the first evaluation: 6 are not more than 10.
    let in_flight = begin_ingest(pool, "boom", Level::Error, "backend", 5).await;
    assert!(evaluate(pool, Utc::now()).await.unwrap().is_empty());
    in_flight.commit().await.unwrap();
    // The window (5 minutes, rounded out to whole minutes) still covers them at the next tick.
    let firings = evaluate(pool, Utc::now()).await.unwrap();
    assert_eq!(firings.len(), 1);
    assert_eq!(firings[0].count, 11);
}

/// A worker far behind (a backlog after a storm, or back after an outage) writes events received
/// 20 minutes ago, long after every evaluation whose 5-minute window covered their minute. The next
/// evaluation finds that minute written since the previous one and judges the windows holding it:
/// 11 events are more than 10, so the rule fires, once, naming that window; the evaluation after
/// that does not judge the same burst again. (Before, no window ever covered them again and nobody
/// was paged.)
#[tokio::test]
async fn a_burst_written_long_after_its_window_passed_fires_the_rule_once() {
    let db = setup().await;
    let pool = &db.pool;
    create_rule(
        pool,
        NewRule {
            cooldown_secs: 0,
            ..NewRule::default()
        },
    )
    .await;
    // Already judged: 4 events 30 minutes ago, and the first evaluation (which sets the bound).
    ingest_at(
        pool,
        "boom",
        Level::Error,
        "backend",
        "production",
        Utc::now() - chrono::TimeDelta::minutes(30),
        4,
    )
    .await;
    assert!(evaluate(pool, Utc::now()).await.unwrap().is_empty());
    let received = Utc::now() - chrono::TimeDelta::minutes(20);
    let in_flight = begin_ingest_at(pool, "boom", Level::Error, "backend", received, 11).await;
    assert!(evaluate(pool, Utc::now()).await.unwrap().is_empty());
    in_flight.commit().await.unwrap();

    let firings = evaluate(pool, Utc::now()).await.unwrap();
    assert_eq!(firings.len(), 1, "the late burst is judged");
    assert_eq!(firings[0].count, 11);
    let (payload,): (serde_json::Value,) = sqlx::query_as(
        "SELECT payload FROM notifications ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let start: chrono::DateTime<Utc> =
        serde_json::from_value(payload["window"]["start"].clone()).unwrap();
    assert!(
        start <= received && received < start + chrono::TimeDelta::minutes(6),
        "the window reported holds the burst: {start} for {received}"
    );
    assert!(
        evaluate(pool, Utc::now()).await.unwrap().is_empty(),
        "nothing written since: the burst is not judged again"
    );
}
