//! The `alerter` binary.

use faultline_shared::{config::AlerterSettings, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let settings = AlerterSettings::from_env()?;
    alerter::run(settings, telemetry::shutdown_signal()).await
}
