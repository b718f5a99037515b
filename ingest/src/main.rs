//! The `ingest` binary: parses the command line and hands over to the library.

use clap::Parser;
use faultline_shared::{config::IngestSettings, db, telemetry};
use ingest::{
    Application,
    cli::{Cli, Command},
};

/// mimalloc instead of glibc's allocator: per-request allocations (bodies, JSON values, headers)
/// spent ~25 % of ingest's CPU in malloc/free under load (benches/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let cli = Cli::parse();
    let settings = IngestSettings::from_env()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            raise_file_limit();
            let app = Application::build(settings).await?;
            app.run_until(telemetry::shutdown_signal()).await
        }
        Command::Migrate => {
            let pool = db::connect_and_migrate(
                &settings.services.database_url,
                settings.services.db_max_connections,
            )
            .await?;
            pool.close().await;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::CreateKey {
            name,
            permissions,
            project,
            key,
            expires_at,
        } => {
            let (key, project_id) = ingest::cli::create_key(
                &settings.services.database_url,
                &name,
                &permissions,
                &project,
                key.as_deref(),
                expires_at,
            )
            .await?;
            eprintln!(
                "API key {name:?} for project {project:?} ({project_id}); it is shown only once:"
            );
            println!("{}", key.expose());
            // The key is also a DSN for Sentry SDKs; PUBLIC_URL is where SDKs reach ingest.
            let public_url = std::env::var("PUBLIC_URL")
                .unwrap_or_else(|_| format!("http://localhost:{}", settings.port));
            eprintln!(
                "Sentry SDK DSN: {}",
                ingest::sentry::auth::dsn(&public_url, key.expose(), project_id)
            );
            if !key
                .expose()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                eprintln!(
                    "Note: the JavaScript Sentry SDKs refuse DSN keys with characters other than letters, digits and _."
                );
            }
            Ok(())
        }
    }
}

/// Each open connection holds a file descriptor, and many systems start processes with a soft
/// limit of 1024 under a far higher hard limit: ingest would refuse connections (EMFILE) long
/// before it runs out of anything real. Raise the soft limit to the hard one, as far as allowed.
fn raise_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "Open-file limit."),
        Err(e) => tracing::warn!(error = %e, "Could not raise the open-file limit."),
    }
}
