//! `--stack`: the whole pipeline for one run, owned by the bench. Drops and recreates its own
//! database, uses its own queue and Redis prefix, starts the release `ingest` and `worker` on free
//! ports, creates a key, runs the load and the drain, reads their peak RSS, stops them (SIGTERM,
//! then SIGKILL after 15 s) and deletes its queues. PostgreSQL, RabbitMQ and Redis must already
//! run (`make services`).

use crate::{Args, report::StackInfo, sysstat};
use anyhow::Context;
use sqlx::migrate::MigrateDatabase;
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{
    process::{Child, Command},
    time::Instant,
};

const PROJECT: &str = "bench";
const STOP_GRACE: Duration = Duration::from_secs(15);
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A service started by the bench; stopped on drop if `stop` was not reached.
struct Service {
    name: &'static str,
    child: Child,
}

impl Service {
    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
            if tokio::time::timeout(STOP_GRACE, self.child.wait())
                .await
                .is_err()
            {
                eprintln!("loadgen: {} did not stop on SIGTERM; killing it", self.name);
                let _ = self.child.kill().await;
            }
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// `admin` with its database replaced by `name`; its parameters (`?sslmode=disable`) are kept.
fn database_url(admin: &str, name: &str) -> String {
    let (path, query) = admin
        .split_once('?')
        .map_or((admin, None), |(p, q)| (p, Some(q)));
    let base = path.rsplit_once('/').map(|(b, _)| b).unwrap_or(path);
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// A command for one of the binaries, with the bench's environment and logs.
fn command(bin_dir: &Path, name: &str, env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(bin_dir.join(name));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.kill_on_drop(true);
    cmd
}

async fn spawn(
    bin_dir: &Path,
    name: &'static str,
    env: &[(&str, String)],
    log_dir: &Path,
) -> anyhow::Result<Service> {
    let log = std::fs::File::create(log_dir.join(format!("{name}.log")))?;
    let child = command(bin_dir, name, env)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin_dir.join(name).display()))?;
    Ok(Service { name, child })
}

/// Waits until `GET /health` on `port` answers 200.
async fn wait_healthy(service: &mut Service, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = service.child.try_wait()? {
            anyhow::bail!(
                "{} exited during start-up ({status}); see its log",
                service.name
            );
        }
        if health_ok(port).await {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} did not become healthy within {:?}",
            service.name,
            START_TIMEOUT
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn health_ok(port: u16) -> bool {
    use http_body_util::{BodyExt, Empty};
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = hyper::Request::get("/health")
            .header(hyper::header::HOST, "127.0.0.1")
            .body(Empty::<bytes::Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let ok = resp.status().is_success();
        let _ = resp.into_body().collect().await;
        anyhow::Ok(ok)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Ok(true))
    )
}

/// How often the RSS of ingest and worker is sampled, to see whether it stays flat.
const RSS_EVERY: Duration = Duration::from_secs(5);

/// Appends `[seconds, ingest KiB, worker KiB]` every `RSS_EVERY` until aborted.
async fn sample_rss(ingest: Option<u32>, worker: Option<u32>, into: Arc<Mutex<Vec<[u64; 3]>>>) {
    let start = Instant::now();
    let rss = |pid: Option<u32>| pid.and_then(sysstat::memory).map_or(0, |m| m.rss_kib);
    loop {
        if let Ok(mut t) = into.lock() {
            t.push([start.elapsed().as_secs(), rss(ingest), rss(worker)]);
        }
        tokio::time::sleep(RSS_EVERY).await;
    }
}

/// Series of `/metrics` that say where the time went (means come from `_sum` / `_count`).
const METRICS: &[&str] = &[
    "worker_transaction_seconds_sum",
    "worker_transaction_seconds_count",
    "worker_batch_events_sum",
    "worker_batch_events_count",
    "worker_events_processed_total",
    "worker_duplicates_skipped_total",
    "worker_batch_failures_total",
    "ingest_publish_batch_events_sum",
    "ingest_publish_batch_events_count",
    "ingest_publish_confirm_seconds_sum",
    "ingest_publish_confirm_seconds_count",
    "ingest_publish_wait_seconds_sum",
    "ingest_publish_wait_seconds_count",
    "ingest_body_budget_waits_total",
    "ingest_body_budget_slow_bodies_total",
    "worker_statement_seconds_sum",
    "worker_statement_seconds_count",
    "http_request_duration_seconds_bucket",
    "ingest_publish_confirm_seconds_bucket",
    "ingest_publish_wait_seconds_bucket",
];

/// Series of `METRICS` kept per label set instead of summed (e.g. one per SQL statement, one
/// per histogram bucket).
const BY_LABEL: &[&str] = &[
    "worker_statement_seconds_sum",
    "worker_statement_seconds_count",
    "http_request_duration_seconds_bucket",
    "ingest_publish_confirm_seconds_bucket",
    "ingest_publish_wait_seconds_bucket",
];

/// The `METRICS` series a service's `/metrics` exposes, summed over their labels.
async fn scrape(port: u16) -> BTreeMap<String, f64> {
    use http_body_util::{BodyExt, Empty};
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = hyper::Request::get("/metrics")
            .header(hyper::header::HOST, "127.0.0.1")
            .body(Empty::<bytes::Bytes>::new())?;
        let body = sender
            .send_request(req)
            .await?
            .into_body()
            .collect()
            .await?;
        anyhow::Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
    };
    let mut out = BTreeMap::new();
    let Ok(Ok(text)) = tokio::time::timeout(Duration::from_secs(5), attempt).await else {
        return out;
    };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or("");
        if METRICS.contains(&name)
            && let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok())
        {
            let key = if BY_LABEL.contains(&name) {
                line.rsplit_once(' ').map_or(name, |(series, _)| series)
            } else {
                name
            };
            *out.entry(key.to_string()).or_default() += value;
        }
    }
    out
}

/// Stores `groups` groups in a project of their own (`history`), as the worker would have left
/// them after 30 days: one per-minute row, one search row and one activity row each, spread over
/// the month. The bench project's drain query stays cheap; the tables and their indexes are as
/// large as with a long history.
async fn seed_history(db_url: &str, groups: u64) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let pool = sqlx::PgPool::connect(db_url).await?;
    let project = faultline_shared::db::ensure_project(&pool, "history").await?;
    let groups = i64::try_from(groups)?;
    // In slices, so no single statement holds a million rows' worth of WAL and locks.
    let slice = 100_000i64;
    let mut from = 1i64;
    while from <= groups {
        let to = (from + slice - 1).min(groups);
        sqlx::query(
            "WITH g AS (
                 INSERT INTO error_groups (id, project_id, fingerprint, grouping_version,
                     normalized_message, level, message, stack_trace, context, source, environment,
                     count, first_seen, last_seen)
                 SELECT md5('history' || g)::uuid, $1, md5('history' || g), 1,
                        'history failure <int> in module ' || (g % 997),
                        (ARRAY['error','warning','info','debug'])[1 + g % 4],
                        'history failure ' || g || ' in module ' || (g % 997),
                        'Traceback (most recent call last): File app.py, line ' || (g % 500) || ', in handler',
                        jsonb_build_object('user_id', g, 'path', '/api/items/' || g),
                        (ARRAY['backend','frontend','api','worker','mobile'])[1 + g % 5],
                        (ARRAY['production','staging','development'])[1 + g % 3],
                        1 + g % 50,
                        now() - interval '30 days' + (g % 43200) * interval '1 minute',
                        now() - (g % 43200) * interval '1 minute'
                 FROM generate_series($2::bigint, $3::bigint) AS g
                 RETURNING id, project_id, message, level, environment, count, last_seen),
             s AS (
                 INSERT INTO error_group_search (group_id, project_id, message)
                 SELECT id, project_id, message FROM g),
             a AS (
                 INSERT INTO error_group_activity (group_id, project_id, count, last_seen)
                 SELECT id, project_id, count, last_seen FROM g)
             INSERT INTO error_counts_minute (project_id, minute, group_id, level, environment, count)
             SELECT project_id, date_trunc('minute', last_seen), id, level, environment, count FROM g",
        )
        .bind(project)
        .bind(from)
        .bind(to)
        .execute(&pool)
        .await
        .context("seeding groups")?;
        from = to + 1;
    }
    sqlx::query(
        "VACUUM ANALYZE error_groups, error_counts_minute, error_group_search, error_group_activity",
    )
    .execute(&pool)
    .await?;
    // The seeding wrote gigabytes of WAL; without a checkpoint now, the checkpoints it requested
    // can fall into the load. A month of history was checkpointed long ago, so the load should
    // meet it settled (what this changes in the figures is not established: benches/RESULTS.md,
    // 2026-12-07). Needs a superuser or pg_checkpoint; without either the run goes on and says so.
    if let Err(e) = sqlx::query("CHECKPOINT").execute(&pool).await {
        eprintln!(
            "loadgen: no CHECKPOINT after seeding ({e}); the load meets the seeding's checkpoints"
        );
    }
    pool.close().await;
    eprintln!(
        "loadgen: seeded {groups} groups of history in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs a binary to completion and returns its stdout, failing with its stderr.
async fn run_once(
    bin_dir: &Path,
    name: &str,
    args: &[&str],
    env: &[(&str, String)],
) -> anyhow::Result<String> {
    let out = command(bin_dir, name, env)
        .args(args)
        .output()
        .await
        .with_context(|| format!("running {name} {}", args.join(" ")))?;
    anyhow::ensure!(
        out.status.success(),
        "{name} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub async fn run(args: &Args) -> anyhow::Result<crate::report::RunResult> {
    let bin_dir = PathBuf::from(&args.bin_dir);
    for bin in ["ingest", "worker"] {
        anyhow::ensure!(
            bin_dir.join(bin).is_file(),
            "{} not found: build it first (cargo build --release --bin ingest --bin worker)",
            bin_dir.join(bin).display()
        );
    }
    let log_dir = PathBuf::from(&args.log_dir);
    std::fs::create_dir_all(&log_dir)?;
    anyhow::ensure!(
        args.bench_database
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "--bench-database must be letters, digits and underscores"
    );

    let db_url = database_url(&args.admin_database_url, &args.bench_database);
    sqlx::Postgres::force_drop_database(&db_url)
        .await
        .context("dropping the bench database (is Postgres running? `make services`)")?;
    sqlx::Postgres::create_database(&db_url).await?;
    let prefix = format!(
        "faultline_bench_{}",
        faultline_shared::testkit::unique_tag()
    );
    let ingest_port = free_port()?;
    let worker_port = free_port()?;
    let env = vec![
        ("DATABASE_URL", db_url.clone()),
        ("QUEUE_PREFIX", prefix.clone()),
        ("REDIS_PREFIX", prefix.clone()),
        // Keep the rate-limit step (one Redis call per request) in the measurement, with a
        // budget the load generator cannot exhaust; `RATE_LIMIT_INGEST=0` in the environment
        // (no limit, no Redis call) measures ingest without it.
        (
            "RATE_LIMIT_INGEST",
            std::env::var("RATE_LIMIT_INGEST").unwrap_or_else(|_| "1000000000".to_string()),
        ),
        ("PORT", ingest_port.to_string()),
        ("WORKER_PORT", worker_port.to_string()),
        (
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_string()),
        ),
    ];
    run_once(&bin_dir, "ingest", &["migrate"], &env).await?;
    let out = run_once(
        &bin_dir,
        "ingest",
        &[
            "create-key",
            "--name",
            "bench",
            "--permissions",
            "ingest,read,write,admin",
            "--project",
            PROJECT,
        ],
        &env,
    )
    .await?;
    let key = out
        .lines()
        .last()
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .context("create-key printed no key")?
        .to_string();

    if args.seed_groups > 0 {
        seed_history(&db_url, args.seed_groups).await?;
    }

    // The worker runs as `make run` and compose run it: one glibc malloc arena, and large blocks
    // given back when freed (less RSS; README, "How events are processed").
    let mut worker_env = env.clone();
    for (name, default) in [
        ("MALLOC_ARENA_MAX", "1"),
        ("MALLOC_MMAP_THRESHOLD_", "131072"),
    ] {
        worker_env.push((
            name,
            std::env::var(name).unwrap_or_else(|_| default.to_string()),
        ));
    }
    let mut worker = spawn(&bin_dir, "worker", &worker_env, &log_dir).await?;
    wait_healthy(&mut worker, worker_port).await?;
    let mut ingest = spawn(&bin_dir, "ingest", &env, &log_dir).await?;
    wait_healthy(&mut ingest, ingest_port).await?;
    eprintln!(
        "loadgen: stack up: ingest :{ingest_port} (pid {:?}), worker :{worker_port} (pid {:?}), database {}, queue prefix {prefix}, logs in {}",
        ingest.pid(),
        worker.pid(),
        args.bench_database,
        log_dir.display()
    );

    let mut run_args = args.clone();
    run_args.url = format!("http://127.0.0.1:{ingest_port}");
    run_args.key = key;
    run_args.database_url = Some(db_url);
    run_args.project = Some(PROJECT.to_string());
    let timeline = Arc::new(Mutex::new(Vec::new()));
    let sampler = tokio::spawn(sample_rss(ingest.pid(), worker.pid(), timeline.clone()));
    let result = crate::report::run_against(&run_args, None).await;
    sampler.abort();

    let info = StackInfo {
        database: args.bench_database.clone(),
        queue_prefix: prefix.clone(),
        ingest: ingest.pid().and_then(sysstat::memory),
        worker: worker.pid().and_then(sysstat::memory),
        rss_timeline: timeline.lock().map(|t| t.clone()).unwrap_or_default(),
        ingest_metrics: scrape(ingest_port).await,
        worker_metrics: scrape(worker_port).await,
    };
    ingest.stop().await;
    worker.stop().await;
    faultline_shared::testkit::delete_topology(&prefix).await;
    let mut result = result?;
    result.stack = Some(info);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn the_bench_database_keeps_the_admin_urls_parameters() {
        assert_eq!(
            database_url("postgres://u:p@127.0.0.1:5432/postgres", "bench"),
            "postgres://u:p@127.0.0.1:5432/bench"
        );
        assert_eq!(
            database_url("postgres://u@h/postgres?sslmode=disable", "bench"),
            "postgres://u@h/bench?sslmode=disable"
        );
    }
}
