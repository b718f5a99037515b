//! The worker against a Postgres of the test's own, which the test really stops, restarts and
//! turns read-only (the shared server is never touched): batches stay unacked and are retried
//! with backoff, `/health` and `/metrics` say what is wrong, and once Postgres is back every
//! event is stored and counted exactly once.

#[path = "common.rs"]
mod common;

use common::*;
use faultline_shared::{
    db,
    testkit::{self, OwnPostgres, OwnRabbit, TestDb},
};
use sqlx::{Connection, PgPool};

/// `n` messages of 50 events each, from five templates, tagged with `round` so every call
/// publishes new event ids.
async fn publish_rounds(prefix: &str, rounds: std::ops::Range<usize>) {
    let batch = |m: usize| -> Vec<_> {
        (0..50)
            .map(|i| event(&format!("shard {} lost in round {}", i % 5, m)))
            .collect()
    };
    publish_events(prefix, &rounds.map(batch).collect::<Vec<_>>()).await;
}

async fn wait_counted(pool: &PgPool, expected: i64, what: &str) {
    eventually(60, what, || {
        let pool = pool.clone();
        async move { counted(&pool).await == expected }
    })
    .await;
}

/// Polls `/health` until Postgres has `pg_status` there; returns the HTTP status then.
async fn wait_health(worker: &RunningWorker, pg_status: &str) -> u16 {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, body) = worker.health().await;
        if body["checks"]["postgres"]["status"] == pg_status {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "health never reported postgres {pg_status}: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Polls `/metrics` until `series` reaches at least `min`.
async fn wait_metric(worker: &RunningWorker, series: &str, min: f64) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let v = worker.metric(series).await;
        if v.is_some_and(|v| v >= min) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never reached {min} (last {v:?})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_postgres_stopped_the_worker_holds_its_batches_says_so_and_resumes_without_loss() {
    let mut pg = OwnPostgres::new().await;
    let pool = db::connect_and_migrate(&pg.url(), 5).await.unwrap();
    let prefix = format!("wown_{}", testkit::unique_tag());
    publish_rounds(&prefix, 0..20).await;
    let mut s = settings(&pg.url(), &prefix);
    s.batch_size = 100;
    let worker = RunningWorker::start(s).await;
    wait_counted(&pool, 1000, "the first 1,000 events").await;
    assert_eq!(wait_health(&worker, "healthy").await, 200);

    pg.stop().await;
    publish_rounds(&prefix, 20..40).await;
    assert_eq!(
        wait_health(&worker, "unhealthy").await,
        503,
        "health must fail while Postgres is down"
    );
    // The worker tried, failed and tried again (with backoff) — and acked nothing meanwhile, so
    // the broker still holds what it has not handed out.
    wait_metric(
        &worker,
        r#"worker_batch_failures_total{reason="unavailable"}"#,
        2.0,
    )
    .await;
    assert!(
        depth(&prefix, false).await > 0,
        "unacked work stays with the broker"
    );

    pg.start().await;
    wait_counted(&pool, 2000, "every event counted after Postgres returned").await;
    assert_eq!(wait_health(&worker, "healthy").await, 200);
    worker.stop().await;
    assert_stored_once_and_drained(pool, &prefix, 2000).await;
}

/// Turns the whole server read-only (or back) as an operator would, with `ALTER SYSTEM` and a
/// reload: sessions already open, the worker's pool among them, follow at their next transaction.
async fn set_server_read_only(pg: &OwnPostgres, on: bool) {
    let mut admin = sqlx::PgConnection::connect(&pg.url()).await.unwrap();
    // This session itself would start read-only once the server is; ALTER SYSTEM does not care,
    // but keep the admin session writable for clarity.
    sqlx::query("SET default_transaction_read_only = off")
        .execute(&mut admin)
        .await
        .unwrap();
    let sql = if on {
        "ALTER SYSTEM SET default_transaction_read_only = on"
    } else {
        "ALTER SYSTEM RESET default_transaction_read_only"
    };
    sqlx::query(sql).execute(&mut admin).await.unwrap();
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_postgres_read_only_the_worker_reports_it_acks_nothing_and_resumes_once_writable()
{
    let pg = OwnPostgres::new().await;
    let pool = db::connect_and_migrate(&pg.url(), 5).await.unwrap();
    let prefix = format!("wro_{}", testkit::unique_tag());
    publish_rounds(&prefix, 0..10).await;
    let mut s = settings(&pg.url(), &prefix);
    s.batch_size = 100;
    let worker = RunningWorker::start(s).await;
    wait_counted(&pool, 500, "the first 500 events").await;
    assert_eq!(wait_health(&worker, "healthy").await, 200);

    set_server_read_only(&pg, true).await;
    assert_eq!(
        wait_health(&worker, "read_only").await,
        503,
        "a read-only Postgres is not healthy for a worker"
    );
    publish_rounds(&prefix, 10..30).await;
    wait_metric(
        &worker,
        r#"worker_batch_failures_total{reason="read_only"}"#,
        2.0,
    )
    .await;
    assert_eq!(worker.metric("worker_postgres_read_only").await, Some(1.0));
    assert_eq!(counted(&pool).await, 500, "nothing written while read-only");
    assert!(
        depth(&prefix, false).await > 0,
        "unacked work stays with the broker"
    );

    set_server_read_only(&pg, false).await;
    wait_counted(&pool, 1500, "every event counted once writes were allowed").await;
    assert_eq!(wait_health(&worker, "healthy").await, 200);
    assert_eq!(worker.metric("worker_postgres_read_only").await, Some(0.0));
    worker.stop().await;
    assert_stored_once_and_drained(pool, &prefix, 1500).await;
}

/// Messages of 50 events carrying 1.5 KB of text each: under the TOAST threshold, so they land
/// in the events table itself and a batch of them needs new pages (which a full disk refuses).
async fn publish_big_rounds(prefix: &str, rounds: std::ops::Range<usize>) {
    let padding = "payload ".repeat(190);
    let batch = |m: usize| -> Vec<_> {
        (0..50)
            .map(|i| {
                event(&format!(
                    "disk filled by job {} in round {m}: {padding}",
                    i % 5
                ))
            })
            .collect()
    };
    publish_events(prefix, &rounds.map(batch).collect::<Vec<_>>()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_postgres_out_of_disk_the_worker_reports_it_acks_nothing_and_resumes_once_freed() {
    let pg = OwnPostgres::new_on_tmpfs(128).await;
    let pool = db::connect_and_migrate(&pg.url(), 5).await.unwrap();
    let prefix = format!("wdf_{}", testkit::unique_tag());
    publish_big_rounds(&prefix, 0..10).await;
    let mut s = settings(&pg.url(), &prefix);
    s.batch_size = 100;
    let worker = RunningWorker::start(s).await;
    wait_counted(&pool, 500, "the first 500 events").await;
    assert_eq!(wait_health(&worker, "healthy").await, 200);

    assert!(pg.fill_disk() > 0, "the tmpfs had room to fill");
    publish_big_rounds(&prefix, 10..30).await;
    wait_metric(
        &worker,
        r#"worker_batch_failures_total{reason="disk_full"}"#,
        2.0,
    )
    .await;
    assert_eq!(
        wait_health(&worker, "disk_full").await,
        503,
        "a worker that cannot write is not healthy"
    );
    assert_eq!(worker.metric("worker_postgres_disk_full").await, Some(1.0));
    assert!(
        counted(&pool).await < 1500,
        "the full disk stopped the writes"
    );
    assert!(
        depth(&prefix, false).await > 0,
        "unacked work stays with the broker"
    );

    pg.free_disk();
    wait_counted(&pool, 1500, "every event counted once the disk had room").await;
    assert_eq!(wait_health(&worker, "healthy").await, 200);
    assert_eq!(worker.metric("worker_postgres_disk_full").await, Some(0.0));
    worker.stop().await;
    assert_stored_once_and_drained(pool, &prefix, 1500).await;
}

/// The end state every outage must reach once the worker stopped: each of the `n` published
/// events counted, stored and rolled up exactly once, the queue empty and nothing dead-lettered.
/// Closes the pool and deletes the test's queues.
async fn assert_stored_once_and_drained(pool: PgPool, prefix: &str, n: i64) {
    assert_eq!(counted(&pool).await, n, "nothing counted twice");
    assert_eq!(stored_events(&pool).await, n, "nothing stored twice");
    assert_eq!(rollup_total(&pool).await, n, "every event rolled up once");
    assert_eq!(depth(prefix, false).await, 0, "the queue drained");
    assert_eq!(depth(prefix, true).await, 0, "nothing dead-lettered");
    pool.close().await;
    testkit::delete_topology(prefix).await;
}

/// A RabbitMQ memory alarm blocks every connection that publishes, and a blocked connection's
/// socket is not read: were dead letters published on the consuming connection, its acks would
/// wait behind them and the worker could not drain the queue, the very backlog an alarm is often
/// about. Here the queue holds fine events, an event of a deleted project (refused by Postgres)
/// and an undecodable element, and the alarm is raised before the worker starts: every fine event
/// is stored, the two messages carrying the bad ones are rejected and dead-lettered whole by the
/// broker, and everything is acked while the alarm lasts. Once it lifts, a refused event is
/// dead-lettered alone again, with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_broker_in_a_memory_alarm_the_worker_dead_letters_through_the_broker_and_drains() {
    let rabbit = OwnRabbit::new().await;
    let url = rabbit.url();
    let db = TestDb::new().await;
    let prefix = format!("walarm_{}", testkit::unique_tag());
    let fine = |n: usize, what: &str| -> Vec<serde_json::Value> {
        (0..n)
            .map(|i| serde_json::to_value(event(&format!("{what} {i}"))).unwrap())
            .collect()
    };
    let mut orphan = event("a project deleted meanwhile");
    orphan.project_id = uuid::Uuid::now_v7();
    let mut with_orphan = fine(4, "beside the orphan");
    with_orphan.insert(2, serde_json::to_value(&orphan).unwrap());
    let mut with_poison = fine(1, "beside the poison");
    with_poison.push(serde_json::json!({"not": "an event"}));
    let bodies: Vec<Vec<u8>> = [
        fine(5, "before"),
        with_orphan,
        with_poison,
        fine(5, "after"),
    ]
    .iter()
    .map(|m| serde_json::to_vec(m).unwrap())
    .collect();
    publish_raw_at(&url, &prefix, &bodies).await;

    rabbit
        .ctl(&["set_vm_memory_high_watermark", "0.000001"])
        .await;
    let mut s = settings(&db.url, &prefix);
    s.services.amqp_url = url.clone();
    let worker = RunningWorker::start(s).await;
    until_counted(&db.pool, 15, 90).await;
    eventually(
        90,
        "the two messages rejected into the dead-letter queue",
        || {
            let url = url.clone();
            let prefix = prefix.clone();
            async move { depth_at(&url, &prefix, true).await >= 2 }
        },
    )
    .await;
    assert_eq!(
        worker
            .metric(r#"worker_dead_lettered_total{kind="message"}"#)
            .await,
        Some(2.0)
    );
    // Stopping hands back whatever is unacked: nothing is, the alarm still on.
    worker.stop().await;
    assert_eq!(depth_at(&url, &prefix, false).await, 0, "everything acked");

    rabbit.ctl(&["set_vm_memory_high_watermark", "0.4"]).await;
    let mut late_orphan = event("another orphan, after the alarm");
    late_orphan.project_id = uuid::Uuid::now_v7();
    let after = vec![
        serde_json::to_value(event("after the alarm")).unwrap(),
        serde_json::to_value(&late_orphan).unwrap(),
    ];
    publish_raw_at(&url, &prefix, &[serde_json::to_vec(&after).unwrap()]).await;
    let mut s = settings(&db.url, &prefix);
    s.services.amqp_url = url.clone();
    let worker = RunningWorker::start(s).await;
    until_counted(&db.pool, 16, 60).await;
    eventually(60, "the late orphan dead-lettered alone", || {
        let url = url.clone();
        let prefix = prefix.clone();
        async move {
            dead_letters_at(&url, &prefix)
                .await
                .iter()
                .any(|l| l.ids == [late_orphan.event_id])
        }
    })
    .await;
    worker.stop().await;

    let letters = dead_letters_at(&url, &prefix).await;
    let ids = |m: &[serde_json::Value]| -> Vec<uuid::Uuid> {
        m.iter()
            .filter_map(|e| e["event_id"].as_str()?.parse().ok())
            .collect()
    };
    let rejected: Vec<&DeadLetter> = letters.iter().filter(|l| l.rejected).collect();
    assert_eq!(rejected.len(), 2, "two whole messages: {letters:?}");
    assert!(
        rejected
            .iter()
            .any(|l| l.ids == ids(&bodies_json(&bodies[1])))
    );
    assert!(
        rejected
            .iter()
            .any(|l| l.ids == ids(&bodies_json(&bodies[2])) && l.len == 2)
    );
    // Besides them: the late orphan alone with its reason, and at most the copies of the letters
    // written to the blocked connection before the worker gave up on them, delivered after.
    for l in letters.iter().filter(|l| !l.rejected) {
        assert!(
            l.ids == [late_orphan.event_id] && l.reason.starts_with("SQLSTATE 23503")
                || l.ids == [orphan.event_id] && l.reason.starts_with("SQLSTATE 23503")
                || l.ids.is_empty() && l.len == 1,
            "unexpected dead letter {l:?}"
        );
    }
    assert_eq!(stored_events(&db.pool).await, 16, "nothing stored twice");
}

fn bodies_json(body: &[u8]) -> Vec<serde_json::Value> {
    serde_json::from_slice(body).unwrap()
}
