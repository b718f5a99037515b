//! The worker through a Postgres outage: the connection to the real Postgres goes through a TCP
//! proxy the test cuts and restores (the shared server itself is never stopped).

#[path = "common.rs"]
mod common;

use common::*;
use faultline_shared::testkit::{self, TcpProxy, TestDb};
use std::time::Duration;

#[tokio::test]
async fn with_postgres_gone_the_worker_holds_its_batch_and_resumes_without_loss_or_doubles() {
    let db = TestDb::new().await;
    let prefix = format!("wtest_{}", testkit::unique_tag());
    let mut proxy = TcpProxy::start("127.0.0.1:5432").await;
    let proxied_url = db
        .url
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port));
    assert_ne!(
        proxied_url, db.url,
        "the test database must be on 127.0.0.1:5432"
    );

    let batch = |m: usize| -> Vec<_> {
        (0..50)
            .map(|i| event(&format!("shard {} lost in round {}", i % 5, m)))
            .collect()
    };
    publish_events(&prefix, &(0..20).map(batch).collect::<Vec<_>>()).await;

    let mut settings = settings(&proxied_url, &prefix);
    settings.batch_size = 100;
    let worker = RunningWorker::start(settings).await;
    until_counted(&db.pool, 1000, 30).await;

    proxy.cut();
    publish_events(&prefix, &(20..40).map(batch).collect::<Vec<_>>()).await;
    // Nothing can be committed meanwhile, so nothing may be acked: the queue keeps it all.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(counted(&db.pool).await, 1000);
    let waiting = depth(&prefix, false).await;
    assert!(waiting > 0, "unacked work must stay with the broker");

    proxy.restore().await;
    let pool = db.pool.clone();
    eventually(60, "every event counted after Postgres returned", || {
        let pool = pool.clone();
        async move { counted(&pool).await >= 2000 }
    })
    .await;
    worker.stop().await;
    assert_eq!(counted(&db.pool).await, 2000, "nothing counted twice");
    assert_eq!(stored_events(&db.pool).await, 2000);
    assert_eq!(depth(&prefix, false).await, 0);
    testkit::delete_topology(&prefix).await;
}
