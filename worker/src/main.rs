//! The `worker` binary.

use faultline_shared::{config::WorkerSettings, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let settings = WorkerSettings::from_env()?;
    worker::run(settings, telemetry::shutdown_signal()).await
}
