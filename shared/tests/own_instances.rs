//! The testkit's own server instances behave like the real thing across a stop and a start: same
//! port, same data (durable queues and persistent messages only, for RabbitMQ), and nothing left
//! behind once dropped.

use faultline_shared::{
    queue::{self, Topology},
    testkit::{OwnPostgres, OwnRabbit, OwnRedis},
};
use lapin::{
    BasicProperties,
    options::{BasicPublishOptions, ConfirmSelectOptions},
};
use sqlx::Connection;

async fn pg_connects(url: &str) -> bool {
    sqlx::PgConnection::connect(url).await.is_ok()
}

async fn port_open(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_postgres_keeps_its_data_across_a_restart_and_leaves_nothing_behind() {
    let mut pg = OwnPostgres::new().await;
    let url = pg.url();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    for sql in ["CREATE TABLE kept (v int)", "INSERT INTO kept VALUES (42)"] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();

    pg.stop().await;
    assert!(!pg_connects(&url).await, "stopped means unreachable");
    pg.start().await;
    assert_eq!(pg.url(), url, "same port after the restart");
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let (v,): (i32,) = sqlx::query_as("SELECT v FROM kept")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(v, 42);
    conn.close().await.unwrap();

    let (dir, port) = (pg.dir().to_path_buf(), pg.port());
    drop(pg);
    assert!(!dir.exists(), "{dir:?} removed");
    assert!(!port_open(port).await, "server gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_rabbit_keeps_durable_queues_and_persistent_messages_across_a_restart() {
    let mut rabbit = OwnRabbit::new().await;
    let t = Topology::new("kit");
    let conn = queue::connect(&rabbit.url(), "kit").await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    t.declare(&ch).await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    // One persistent message (as ingest publishes) and one transient one.
    for mode in [2, 1] {
        ch.basic_publish(
            t.exchange.as_str().into(),
            t.routing_key.as_str().into(),
            BasicPublishOptions::default(),
            b"[]",
            BasicProperties::default().with_delivery_mode(mode),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    assert_eq!(queue::queue_depth(&ch, &t.queue).await.unwrap().0, 2);
    let _ = conn.close(200, "".into()).await;

    rabbit.stop().await;
    assert!(!port_open(rabbit.port()).await, "stopped means unreachable");
    rabbit.start().await;
    let conn = queue::connect(&rabbit.url(), "kit").await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let (depth, _) = queue::queue_depth(&ch, &t.queue)
        .await
        .expect("the durable queue survived the restart");
    assert_eq!(depth, 1, "only the persistent message survives");
    let _ = conn.close(200, "".into()).await;

    let (dir, port) = (rabbit.dir().to_path_buf(), rabbit.port());
    drop(rabbit);
    assert!(!dir.exists(), "{dir:?} removed");
    assert!(!port_open(port).await, "node gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_redis_stops_and_starts_on_the_same_port() {
    let mut redis = OwnRedis::new().await;
    let port = redis.port();
    redis.stop().await;
    assert!(!port_open(port).await);
    redis.start().await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
    let dir = redis.dir().to_path_buf();
    drop(redis);
    assert!(!dir.exists());
    assert!(!port_open(port).await);
}
