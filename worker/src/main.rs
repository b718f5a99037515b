//! The `worker` binary.

use faultline_shared::{config::WorkerSettings, telemetry};

/// mimalloc instead of glibc's allocator: per-request allocations (bodies, JSON values, headers)
/// spent ~25 % of ingest's CPU in malloc/free under load (benches/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let settings = WorkerSettings::from_env()?;
    worker::run(settings, telemetry::shutdown_signal()).await
}
