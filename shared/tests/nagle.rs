//! The services' connections to Postgres, RabbitMQ and Redis send each request at once
//! (TCP_NODELAY), so no request waits for the peer's delayed ACK.
//!
//! sqlx 0.9.0 left Nagle's algorithm on. A request written in more than one piece (over TLS,
//! every statement with more than one record's worth of parameters; Debian's Postgres has TLS on,
//! so `127.0.0.1` URLs get it) then held its last piece until the server's delayed ACK, ~40 ms:
//! the worker's group, activity and rollup upserts each took ~50 ms instead of ~10
//! (benches/RESULTS.md, nineteenth session). redis-rs leaves it on unless told otherwise, which
//! `faultline_shared::cache::client` does. lapin turns it off itself. These tests read the option
//! off the process's own sockets, so they fail whichever dependency or setting turns it back on,
//! without timing anything.

use faultline_shared::{db, queue, testkit};
use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};
use std::net::{SocketAddr, TcpStream};

/// The first address `host:port` resolves to.
async fn address(host: &str, port: u16) -> SocketAddr {
    tokio::net::lookup_host((host, port))
        .await
        .unwrap()
        .next()
        .unwrap()
}

/// Asserts that this process has at least `expected` TCP connections to `peer` and that every one
/// has TCP_NODELAY set.
fn assert_nagle_off(peer: SocketAddr, expected: usize, what: &str) {
    let sockets = sockets_to(peer);
    assert!(
        sockets.len() >= expected,
        "expected {expected} connection(s) to {what} at {peer}, found {}",
        sockets.len()
    );
    assert!(
        sockets.iter().all(|&nodelay| nodelay),
        "TCP_NODELAY off on {} of {} connections to {what}",
        sockets.iter().filter(|&&n| !n).count(),
        sockets.len()
    );
}

/// This process's TCP sockets connected to `peer`, each as a duplicate of the descriptor (so
/// dropping it leaves the original open), with whether TCP_NODELAY is set on it.
fn sockets_to(peer: SocketAddr) -> Vec<bool> {
    let pidfd = pidfd_open(getpid(), PidfdFlags::empty()).expect("pidfd_open (Linux 5.6 or later)");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let Ok(fd) = entry.unwrap().file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // Descriptors closed since the listing was read, or not sockets, are skipped.
        let Ok(dup) = pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty()) else {
            continue;
        };
        let stream = TcpStream::from(dup);
        if stream.peer_addr().ok() == Some(peer) {
            found.push(stream.nodelay().unwrap());
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_postgres_connection_of_the_pool_has_nagle_off() {
    let url = testkit::admin_url();
    let pool = db::pool_options(3).connect(&url).await.unwrap();
    // Three connections held at once, so the pool opened all three, each after a query.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = pool.acquire().await.unwrap();
        sqlx::query("SELECT 1").execute(&mut *conn).await.unwrap();
        held.push(conn);
    }
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let peer = address(options.get_host(), options.get_port()).await;
    assert_nagle_off(peer, 3, "Postgres (is TEST_DATABASE_URL a TCP address?)");
    drop(held);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_connection_has_nagle_off() {
    let url = testkit::amqp_url();
    let conn = queue::connect(&url, "nagle-test").await.unwrap();
    // A channel opened and used, so the connection has carried frames both ways.
    let channel = conn.create_channel().await.unwrap();
    channel.close(200, "done".into()).await.unwrap();
    let uri: lapin::uri::AMQPUri = url.parse().unwrap();
    let peer = address(&uri.authority.host, uri.authority.port).await;
    assert_nagle_off(peer, 1, "RabbitMQ");
    conn.close(200, "done".into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_connection_has_nagle_off() {
    let client = faultline_shared::cache::client(&testkit::redis_url()).unwrap();
    let mut conn = redis::aio::ConnectionManager::new(client.clone())
        .await
        .unwrap();
    let _: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    let info = client.get_connection_info();
    let redis::ConnectionAddr::Tcp(host, port) = info.addr() else {
        panic!("REDIS_URL is not a TCP address: {:?}", info.addr());
    };
    let peer = address(host, *port).await;
    assert_nagle_off(peer, 1, "Redis");
}
