//! `loadgen`: Faultline's load generator. Drives ingest over HTTP/1.1 keep-alive, open loop at a
//! fixed arrival rate or closed loop at maximum throughput, then waits for the worker to catch up
//! in Postgres, so the end-to-end rate is measured and not only the front door.
//!
//! # Layout
//! - `payload`: the request bodies (templates per fingerprint, padding, batches), built up front.
//! - `load`: one task per connection, the arrival schedule, latency histograms.
//! - `wire`: the HTTP/1.1 client those tasks speak: prepared requests, `Content-Length` answers.
//! - `drain`: polls the project's Postgres count until it equals what ingest accepted.
//! - `stack`: `--stack` runs its own ingest and worker on a fresh database and queue prefix.
//! - `sysstat`: CPU time per process family and peak RSS, read from `/proc`.
//! - `disk`: the disk's own sync latency beside the load (`--disk-check` measures it alone).
//! - `report`: the JSON line and the human summary.

mod disk;
mod drain;
mod load;
mod payload;
mod report;
mod stack;
mod sysstat;
mod wire;

use anyhow::Context;
use clap::Parser;
use std::time::Duration;

/// Command line of `loadgen`; every option also reads a `LOADGEN_*` variable.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "loadgen",
    about = "Load generator for Faultline ingest",
    args_override_self = true
)]
pub struct Args {
    /// Base URL of ingest (ignored with --stack, which starts its own).
    #[arg(long, env = "LOADGEN_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key with the `ingest` permission (ignored with --stack, which creates one).
    #[arg(long, env = "LOADGEN_KEY", default_value = "test-api-key")]
    pub key: String,
    /// Keep-alive connections, each driven by its own task.
    #[arg(long, env = "LOADGEN_CONNECTIONS", default_value_t = 32)]
    pub connections: usize,
    /// Offered events per second (open loop). Absent: maximum throughput (closed loop).
    #[arg(long, env = "LOADGEN_RATE")]
    pub rate: Option<f64>,
    /// Seconds of load.
    #[arg(long, env = "LOADGEN_DURATION", default_value_t = 10.0)]
    pub duration: f64,
    /// Distinct message templates, hence distinct error groups.
    #[arg(long, env = "LOADGEN_FINGERPRINTS", default_value_t = 1000)]
    pub fingerprints: usize,
    /// Approximate size of one event's JSON, padded with a `context` field.
    #[arg(long, env = "LOADGEN_PAYLOAD_BYTES", default_value_t = 1024)]
    pub payload_bytes: usize,
    /// Share (0..1) of requests that are `POST /api/errors/batch`.
    #[arg(long, env = "LOADGEN_BATCH_SHARE", default_value_t = 0.0)]
    pub batch_share: f64,
    /// Events per batch request.
    #[arg(long, env = "LOADGEN_BATCH_SIZE", default_value_t = 100)]
    pub batch_size: usize,
    /// Postgres of the worker; with --project, enables the drain measurement.
    #[arg(long, env = "LOADGEN_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Name of the project the key belongs to (for the drain measurement).
    #[arg(long, env = "LOADGEN_PROJECT")]
    pub project: Option<String>,
    /// Longest wait, in seconds, for Postgres to catch up before giving up.
    #[arg(long, env = "LOADGEN_DRAIN_TIMEOUT", default_value_t = 120.0)]
    pub drain_timeout: f64,
    /// Seconds one request may take before it counts as a timeout (and the connection is renewed).
    #[arg(long, env = "LOADGEN_REQUEST_TIMEOUT", default_value_t = 30.0)]
    pub request_timeout: f64,
    /// Start ingest and worker from --bin-dir on a fresh database and queue prefix, run, stop.
    #[arg(long)]
    pub stack: bool,
    /// Where the release binaries `ingest` and `worker` are (with --stack).
    #[arg(long, env = "LOADGEN_BIN_DIR", default_value = "target/release")]
    pub bin_dir: String,
    /// Maintenance database URL used to drop and create the bench database (with --stack).
    #[arg(
        long,
        env = "LOADGEN_ADMIN_DATABASE_URL",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/postgres"
    )]
    pub admin_database_url: String,
    /// Name of the database --stack drops and recreates.
    #[arg(
        long,
        env = "LOADGEN_BENCH_DATABASE",
        default_value = "faultline_bench"
    )]
    pub bench_database: String,
    /// Directory for the logs of the services started by --stack.
    #[arg(long, env = "LOADGEN_LOG_DIR", default_value = "target/bench-logs")]
    pub log_dir: String,
    /// With --stack: groups stored before the run (in a second project, `history`, with their
    /// per-minute rows), to show whether the cost of a batch grows with what is already stored.
    #[arg(long, env = "LOADGEN_SEED_GROUPS", default_value_t = 0)]
    pub seed_groups: u64,
    /// Directory whose filesystem the disk probe syncs on. Default with --stack and for
    /// --disk-check: --log-dir; without them the probe runs only when this is given (the broker
    /// of a remote ingest is on another machine's disk). Point it at the broker's data directory
    /// (e.g. /var/lib/rabbitmq) when that is another disk.
    #[arg(long, env = "LOADGEN_DISK_PROBE_DIR")]
    pub disk_probe_dir: Option<String>,
    /// Milliseconds between the disk probe's syncs during the load; 0 turns the probe off.
    #[arg(long, env = "LOADGEN_DISK_PROBE_INTERVAL_MS", default_value_t = 10)]
    pub disk_probe_interval_ms: u64,
    /// Measure only the disk, for this many seconds, and print its report (no load, no services).
    #[arg(long, env = "LOADGEN_DISK_CHECK")]
    pub disk_check: Option<f64>,
}

impl Args {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.connections > 0, "--connections must be at least 1");
        anyhow::ensure!(self.duration > 0.0, "--duration must be positive");
        anyhow::ensure!(self.fingerprints > 0, "--fingerprints must be at least 1");
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.batch_share),
            "--batch-share must be within 0..1"
        );
        anyhow::ensure!(self.batch_size > 0, "--batch-size must be at least 1");
        if let Some(rate) = self.rate {
            anyhow::ensure!(rate > 0.0, "--rate must be positive");
        }
        if let Some(secs) = self.disk_check {
            anyhow::ensure!(secs > 0.0, "--disk-check must be positive");
            anyhow::ensure!(
                self.disk_probe_interval_ms > 0,
                "--disk-check needs --disk-probe-interval-ms above 0"
            );
        }
        Ok(())
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.drain_timeout)
    }

    /// Where and how often the disk probe syncs beside a load, if it runs there.
    pub fn disk_probe(&self) -> Option<(std::path::PathBuf, Duration)> {
        let dir = match &self.disk_probe_dir {
            Some(dir) => dir,
            None if self.stack || self.disk_check.is_some() => &self.log_dir,
            None => return None,
        };
        (self.disk_probe_interval_ms > 0).then(|| {
            (
                dir.into(),
                Duration::from_millis(self.disk_probe_interval_ms),
            )
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.validate()?;
    if let Some(secs) = args.disk_check {
        let (dir, interval) = args.disk_probe().context("the disk probe is off")?;
        let probe = disk::Probe::start(&dir, interval)?;
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        let report = probe.finish()?;
        println!("{}", serde_json::to_string(&report)?);
        eprintln!("{}", report.summary());
        return Ok(());
    }
    let result = if args.stack {
        stack::run(&args).await?
    } else {
        report::run_against(&args, None).await?
    };
    println!("{}", serde_json::to_string(&result)?);
    eprintln!("{}", report::human(&result));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_dir(argv: &[&str]) -> Option<String> {
        let args = Args::try_parse_from(std::iter::once("loadgen").chain(argv.iter().copied()))
            .expect("arguments parse");
        args.disk_probe().map(|(dir, _)| dir.display().to_string())
    }

    #[test]
    fn the_disk_probe_runs_where_the_broker_is_local_or_a_directory_is_named() {
        assert_eq!(
            probe_dir(&[]),
            None,
            "a remote ingest's broker is not on this disk"
        );
        assert_eq!(
            probe_dir(&["--stack", "--log-dir", "/l"]).as_deref(),
            Some("/l")
        );
        assert_eq!(
            probe_dir(&["--disk-check", "5", "--log-dir", "/l"]).as_deref(),
            Some("/l")
        );
        assert_eq!(
            probe_dir(&["--disk-probe-dir", "/var/lib/rabbitmq"]).as_deref(),
            Some("/var/lib/rabbitmq")
        );
        assert_eq!(
            probe_dir(&["--stack", "--disk-probe-interval-ms", "0"]),
            None
        );
    }
}
