//! The consumer loop against the real RabbitMQ and Postgres: poison messages are dead-lettered
//! without blocking the queue, and a worker killed with SIGKILL mid-stream loses nothing and
//! counts nothing twice.

#[path = "common.rs"]
mod common;

use common::*;
use faultline_shared::testkit::{self, TestDb};
use std::{process::Stdio, time::Duration};

fn prefix() -> String {
    format!("wtest_{}", testkit::unique_tag())
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_and_the_events_behind_it_are_processed() {
    let db = TestDb::new().await;
    let prefix = prefix();
    let good_before = vec![event("before the poison")];
    let good_after = vec![event("after the poison"), event("after the poison")];
    let mut mixed = serde_json::to_vec(&vec![
        serde_json::to_value(event("good neighbour")).unwrap(),
        serde_json::json!({"not": "an event"}),
    ])
    .unwrap();
    mixed.shrink_to_fit();
    publish_events(&prefix, std::slice::from_ref(&good_before)).await;
    publish_raw(&prefix, &[b"\x00\x01 definitely not json".to_vec(), mixed]).await;
    publish_events(&prefix, std::slice::from_ref(&good_after)).await;

    let worker = RunningWorker::start(settings(&db.url, &prefix)).await;
    until_counted(&db.pool, 4, 20).await;
    until_dead_letters(&prefix, 2, 20).await;
    assert_eq!(depth(&prefix, false).await, 0);
    worker.stop().await;
    testkit::delete_topology(&prefix).await;
}

/// Events that decode but that Postgres refuses (a time before the years it can store; an event of
/// a project deleted while it was queued) used to fail their batch on every retry and hold up the
/// queue. Now the batch is split, each refused event goes to the dead-letter queue alone, in the
/// queue's format, with the refusal in a header, and every other event, beside and behind them, is
/// stored and counted once: a number no jsonb could hold among them (`context` and `extra` are
/// json, kept as sent).
#[tokio::test]
async fn events_postgres_refuses_are_dead_lettered_and_the_rest_of_their_batch_is_stored() {
    let db = TestDb::new().await;
    let prefix = prefix();
    let mut beside: Vec<serde_json::Value> = (0..30)
        .map(|i| serde_json::to_value(event(&format!("fine {i}"))).unwrap())
        .collect();
    let mut too_old = event("a time Postgres cannot store");
    too_old.received_at =
        chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, -10000, 1, 1, 0, 0, 0).unwrap();
    let mut huge_number = event("a number no jsonb could hold");
    huge_number.extra = Some(serde_json::json!("PLACEHOLDER"));
    let mut orphan = event("a project deleted meanwhile");
    orphan.project_id = uuid::Uuid::now_v7();
    beside.insert(11, serde_json::to_value(&orphan).unwrap());
    beside.insert(20, serde_json::to_value(&too_old).unwrap());
    beside.insert(25, serde_json::to_value(&huge_number).unwrap());
    let body = serde_json::to_string(&beside)
        .unwrap()
        .replace(r#""PLACEHOLDER""#, r#"{"n": 1e200000}"#);
    publish_raw(&prefix, &[body.into_bytes()]).await;
    publish_events(&prefix, &[vec![event("behind"), event("behind")]]).await;

    let worker = RunningWorker::start(settings(&db.url, &prefix)).await;
    until_counted(&db.pool, 33, 30).await;
    until_dead_letters(&prefix, 2, 20).await;
    assert_eq!(depth(&prefix, false).await, 0);
    assert_eq!(stored_events(&db.pool).await, 33);
    assert_eq!(rollup_total(&db.pool).await, 33);
    let (extra,): (String,) = sqlx::query_as("SELECT extra::text FROM events WHERE id = $1")
        .bind(huge_number.event_id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(extra, r#"{"n": 1e200000}"#);
    assert_eq!(
        worker
            .metric(r#"worker_dead_lettered_total{kind="refused"}"#)
            .await,
        Some(2.0)
    );
    assert!(
        worker
            .metric(r#"worker_batch_failures_total{reason="refused"}"#)
            .await
            .is_some_and(|n| n >= 1.0)
    );
    worker.stop().await;

    let mut letters: Vec<(uuid::Uuid, String)> = dead_letters_at(&testkit::amqp_url(), &prefix)
        .await
        .iter()
        .map(|l| {
            assert_eq!((l.len, l.ids.len()), (1, 1), "one event per letter: {l:?}");
            (l.ids[0], l.reason.chars().take(14).collect())
        })
        .collect();
    letters.sort();
    let mut expected = vec![
        (too_old.event_id, "SQLSTATE 22008".to_string()),
        (orphan.event_id, "SQLSTATE 23503".to_string()),
    ];
    expected.sort();
    assert_eq!(letters, expected);
    // Nothing was counted for them.
    assert_eq!(counted(&db.pool).await, 33);
    testkit::delete_topology(&prefix).await;
}

/// The worker keeps `context` and `extra` as the JSON text of the message and lets Postgres parse
/// it: what is stored (the event, and the group's latest sample) is the same JSON that was sent,
/// nesting, escapes, non-ASCII and numbers included, and an absent or null one stays NULL.
#[tokio::test]
async fn context_and_extra_are_stored_as_the_json_that_was_sent() {
    let db = TestDb::new().await;
    let prefix = prefix();
    let context = serde_json::json!({
        "user": {"id": 42, "email": null, "roles": ["admin", "ops"]},
        "quote": "say \"hi\"\n\ttab \\ back",
        "unicode": "café ✓ \u{1F600}",
        "n": [1.5, -0.0, 1e21, 12345678901234567u64],
        "empty": {}
    });
    let extra = serde_json::json!([{"k": true}, "x", 3]);
    let mut with = event("context round trip");
    with.context = Some(context.clone());
    with.extra = Some(extra.clone());
    let mut without = event("context round trip");
    without.received_at -= chrono::TimeDelta::seconds(1);
    // A null sent explicitly is no context, as an absent one.
    let mut null_context = serde_json::to_value(&without).unwrap();
    null_context["context"] = serde_json::Value::Null;
    publish_raw(
        &prefix,
        &[serde_json::to_vec(&vec![serde_json::to_value(&with).unwrap(), null_context]).unwrap()],
    )
    .await;

    let worker = RunningWorker::start(settings(&db.url, &prefix)).await;
    until_counted(&db.pool, 2, 20).await;
    let stored: (serde_json::Value, serde_json::Value) =
        sqlx::query_as("SELECT context, extra FROM events WHERE id = $1")
            .bind(with.event_id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(stored, (context.clone(), extra));
    let nulls: (Option<serde_json::Value>, Option<serde_json::Value>) =
        sqlx::query_as("SELECT context, extra FROM events WHERE id = $1")
            .bind(without.event_id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(nulls, (None, None));
    // The group's sample is the newest event's: the one with the context.
    let sample: serde_json::Value = sqlx::query_scalar("SELECT context FROM error_groups")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(sample, context);
    worker.stop().await;
    testkit::delete_topology(&prefix).await;
}

#[tokio::test]
async fn a_worker_killed_mid_stream_loses_nothing_and_counts_nothing_twice() {
    let db = TestDb::new().await;
    let prefix = prefix();
    let messages: Vec<Vec<_>> = (0..150)
        .map(|m| {
            (0..100)
                .map(|i| event(&format!("job {} failed with code {}", m * 100 + i, i % 7)))
                .collect()
        })
        .collect();
    publish_events(&prefix, &messages).await;
    let total = 150 * 100;

    let spawn = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_worker"))
            .env("DATABASE_URL", &db.url)
            .env("AMQP_URL", testkit::amqp_url())
            .env("REDIS_URL", testkit::redis_url())
            .env("QUEUE_PREFIX", &prefix)
            .env("WORKER_PORT", "0")
            .env("WORKER_BATCH_SIZE", "300")
            .env("WORKER_PREFETCH", "8")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("worker binary starts")
    };

    // Several rounds: start a worker, let it commit some batches, SIGKILL it mid-stream.
    let mut killed_mid_stream = 0;
    for round in 0..3 {
        let mut child = spawn();
        let before = counted(&db.pool).await;
        let pool = db.pool.clone();
        eventually(60, "progress before the kill", || {
            let pool = pool.clone();
            async move { counted(&pool).await > before }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(20 * round)).await;
        child.start_kill().expect("SIGKILL");
        child.wait().await.unwrap();
        if counted(&db.pool).await < total {
            killed_mid_stream += 1;
        }
    }
    assert!(
        killed_mid_stream > 0,
        "the kills must land before the stream was drained"
    );

    // A fresh worker drains what is left, including redeliveries of unacked messages.
    let mut child = spawn();
    let pool = db.pool.clone();
    eventually(120, "every event counted", || {
        let pool = pool.clone();
        async move { counted(&pool).await >= total }
    })
    .await;
    let p = prefix.clone();
    eventually(30, "queue drained", || {
        let p = p.clone();
        async move { depth(&p, false).await == 0 }
    })
    .await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert_eq!(counted(&db.pool).await, total, "counted exactly once");
    assert_eq!(stored_events(&db.pool).await, total);
    assert_eq!(rollup_total(&db.pool).await, total);
    assert_eq!(depth(&prefix, true).await, 0);
    testkit::delete_topology(&prefix).await;
}

#[tokio::test]
async fn sigterm_finishes_the_batch_in_hand_and_exits_zero() {
    let db = TestDb::new().await;
    let prefix = prefix();
    let messages: Vec<Vec<_>> = (0..40)
        .map(|m| {
            (0..50)
                .map(|i| event(&format!("fault {} in shard {}", m, i)))
                .collect()
        })
        .collect();
    publish_events(&prefix, &messages).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_worker"))
        .env("DATABASE_URL", &db.url)
        .env("QUEUE_PREFIX", &prefix)
        .env("WORKER_PORT", "0")
        .env("WORKER_BATCH_SIZE", "100")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pool = db.pool.clone();
    eventually(60, "progress", || {
        let pool = pool.clone();
        async move { counted(&pool).await > 0 }
    })
    .await;
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits within the bound")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    // What was committed was acked, what was not is back in the queue: together, everything.
    let counted_now = counted(&db.pool).await;
    let left = i64::from(depth(&prefix, false).await);
    assert!(counted_now > 0);
    assert_eq!(left * 50 + counted_now, 2000);
    testkit::delete_topology(&prefix).await;
}

#[tokio::test]
async fn a_batch_closes_when_the_prefetch_is_in_hand_instead_of_waiting_for_more() {
    let db = TestDb::new().await;
    let prefix = prefix();
    // Eight small messages, prefetch four, and a batch wait far longer than the test may take:
    // the batches can only close because the prefetch window is full.
    let messages: Vec<Vec<_>> = (0..8)
        .map(|m| vec![event(&format!("small message {m}"))])
        .collect();
    publish_events(&prefix, &messages).await;
    let mut s = settings(&db.url, &prefix);
    s.prefetch = 4;
    s.batch_size = 1000;
    s.batch_wait = Duration::from_secs(600);
    let worker = RunningWorker::start(s).await;
    until_counted(&db.pool, 8, 60).await;
    worker.stop().await;
    testkit::delete_topology(&prefix).await;
}

/// Large messages (batch requests make messages of ~100 events) are held to the byte window, not
/// to `WORKER_PREFETCH` messages: with commits blocked, the broker hands the worker about
/// `WORKER_PREFETCH_BYTES` of them and keeps the rest; once commits go through, every event is
/// counted once.
#[tokio::test]
async fn large_messages_are_held_to_the_byte_window_while_commits_wait() {
    let db = TestDb::new().await;
    let prefix = prefix();
    let big = |m: usize| -> Vec<_> {
        (0..100)
            .map(|i| event(&format!("large message {m}/{i} {}", "x".repeat(1000))))
            .collect()
    };
    let mut s = settings(&db.url, &prefix);
    s.prefetch = 1024;
    s.prefetch_bytes = 1024 * 1024;
    s.batch_size = 200;
    let worker = RunningWorker::start(s).await;

    // First a few, processed: the worker learns what its messages weigh (~110 KB each).
    let first: Vec<Vec<_>> = (0..10).map(big).collect();
    publish_events(&prefix, &first).await;
    until_counted(&db.pool, 1000, 60).await;

    // Now commits wait on a lock while 60 more arrive.
    let mut blocker = db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let rest: Vec<Vec<_>> = (10..70).map(big).collect();
    publish_events(&prefix, &rest).await;
    eventually(30, "the worker took its window", || {
        let prefix = prefix.clone();
        async move { depth(&prefix, false).await <= 54 }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let unacked = 60 - depth(&prefix, false).await;
    // 1 MiB / ~110 KB: 9 messages, within the window's 25 % slack; a count of 1024 would be all 60.
    assert!(
        (6..=12).contains(&unacked),
        "{unacked} messages out to the worker"
    );
    assert_eq!(
        counted(&db.pool).await,
        1000,
        "nothing committed past the lock"
    );

    blocker.rollback().await.unwrap();
    let pool = db.pool.clone();
    eventually(120, "every event counted once", || {
        let pool = pool.clone();
        async move { counted(&pool).await == 7000 && stored_events(&pool).await == 7000 }
    })
    .await;
    assert_eq!(depth(&prefix, false).await, 0);
    worker.stop().await;
    testkit::delete_topology(&prefix).await;
}
