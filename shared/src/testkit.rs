//! Isolation for integration tests: each test gets its own database and its own queue prefix on
//! the real local Postgres and RabbitMQ, and removes them afterwards, so tests run in parallel and
//! leave nothing behind. For outages: a [`TcpProxy`] to cut in front of a shared service, or a
//! server of the test's own ([`OwnPostgres`], [`OwnRabbit`], [`OwnRedis`]) to stop and restart.

use sqlx::PgPool;
use uuid::Uuid;

mod instances;
pub use instances::{OwnPostgres, OwnRabbit, OwnRedis, free_port};

/// Where tests create their databases: `TEST_DATABASE_URL` (a maintenance database URL).
pub fn admin_url() -> String {
    crate::config::var_or(
        "TEST_DATABASE_URL",
        "postgres://postgres:postgres@127.0.0.1:5432/postgres",
    )
}

pub fn amqp_url() -> String {
    crate::config::var_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
}

pub fn redis_url() -> String {
    crate::config::var_or("REDIS_URL", "redis://127.0.0.1:6379")
}

/// A unique, short, lowercase tag for naming per-test resources.
pub fn unique_tag() -> String {
    Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// A migrated database owned by one test; dropped (forcefully) when the value is dropped.
pub struct TestDb {
    pub url: String,
    pub name: String,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> Self {
        let name = format!("faultline_test_{}", unique_tag());
        let admin = admin_url();
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        let url = format!("{base}/{name}");
        let pool = crate::db::connect_and_migrate(&url, 10)
            .await
            .expect("test database: is Postgres running? (make test starts it)");
        TestDb { url, name, pool }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let url = self.url.clone();
        // Drop runs inside the test's runtime, which is blocked while we wait: use a thread with
        // its own runtime, and do not close the pool (its connections belong to the blocked
        // runtime); `DROP DATABASE ... WITH (FORCE)` ends them server-side.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                use sqlx::migrate::MigrateDatabase;
                let _ = sqlx::Postgres::force_drop_database(&url).await;
            });
        })
        .join();
    }
}

/// Deletes the exchanges and queues of a test's prefix.
pub async fn delete_topology(prefix: &str) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let Ok(conn) = crate::queue::connect(&amqp_url(), "faultline-test-cleanup").await else {
        return;
    };
    let Ok(ch) = conn.create_channel().await else {
        return;
    };
    let t = crate::queue::Topology::new(prefix);
    for q in [&t.queue, &t.dead_queue] {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for e in [&t.exchange, &t.dead_exchange] {
        let _ = ch
            .exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "done".into()).await;
}

/// A TCP proxy in front of a real service, which a test can cut and restore: the service's
/// outage as its clients see it, without stopping the shared service other tests use.
pub struct TcpProxy {
    pub port: u16,
    target: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TcpProxy {
    /// Starts forwarding a free local port to `target` (host:port).
    pub async fn start(target: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut proxy = TcpProxy {
            port,
            target: target.to_string(),
            task: None,
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let target = self.target.clone();
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                conns.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    /// Cuts every connection and refuses new ones (the port is closed).
    pub fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            // Aborting drops the listener and the JoinSet, which aborts every forwarding task.
            task.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn restore(&mut self) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => {
                    self.serve(listener);
                    return;
                }
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "proxy port not free yet");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot re-bind proxy port {}: {e}", self.port),
            }
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
    }
}
