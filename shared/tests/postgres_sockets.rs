//! The services' Postgres connections send each request at once (TCP_NODELAY).
//!
//! sqlx 0.9.0 left Nagle's algorithm on. A request written in more than one piece (over TLS,
//! every statement with more than one record's worth of parameters; Debian's Postgres has TLS on,
//! so `127.0.0.1` URLs get it) then held its last piece until the server's delayed ACK, ~40 ms:
//! the worker's group, activity and rollup upserts each took ~50 ms instead of ~10
//! (benches/RESULTS.md, nineteenth session). This reads the option off the pool's own sockets, so
//! it fails whichever dependency or setting turns it off again, without timing anything.

use faultline_shared::{db, testkit};
use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};
use std::net::{SocketAddr, TcpStream};

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
    let (host, port): (String, u16) = {
        let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        (options.get_host().to_owned(), options.get_port())
    };
    let peer: SocketAddr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .unwrap()
        .next()
        .unwrap();
    let sockets = sockets_to(peer);
    assert!(
        sockets.len() >= 3,
        "expected the pool's three connections to {peer}, found {}: is TEST_DATABASE_URL a TCP address?",
        sockets.len()
    );
    assert!(
        sockets.iter().all(|&nodelay| nodelay),
        "TCP_NODELAY off on {} of {} connections to Postgres",
        sockets.iter().filter(|&&n| !n).count(),
        sockets.len()
    );
    drop(held);
    pool.close().await;
}
