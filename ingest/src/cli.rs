//! The ingest command line: serve (default), `migrate`, and `create-key`, the way to make the first
//! key of a new installation.

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use faultline_shared::{
    db,
    domain::{ApiKey, Permissions},
};

#[derive(Debug, Parser)]
#[command(
    name = "ingest",
    about = "Faultline ingest: the HTTP API and event front door"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Create an API key and print it once (only its sha256 is stored).
    CreateKey {
        /// A name to recognise the key by.
        #[arg(long)]
        name: String,
        /// Comma-separated: ingest, read, write, admin.
        #[arg(long, value_delimiter = ',', default_value = "ingest")]
        permissions: Vec<String>,
        /// The project the key belongs to (created when missing).
        #[arg(long, default_value = "default")]
        project: String,
        /// Register this exact key instead of generating one (for development keys such as
        /// `test-api-key`). Registering the same key again changes nothing.
        #[arg(long, env = "FAULTLINE_CREATE_KEY")]
        key: Option<String>,
        /// Expiry, RFC 3339 (e.g. 2027-01-01T00:00:00Z).
        #[arg(long)]
        expires_at: Option<DateTime<Utc>>,
    },
}

/// Creates the key and returns it; the caller prints it.
pub async fn create_key(
    database_url: &str,
    name: &str,
    permissions: &[String],
    project: &str,
    raw: Option<&str>,
    expires_at: Option<DateTime<Utc>>,
) -> anyhow::Result<(ApiKey, uuid::Uuid)> {
    let permissions = Permissions::parse_list(permissions)?;
    let key = match raw {
        Some(raw) => {
            ApiKey::parse(raw).ok_or_else(|| anyhow::anyhow!("--key is not a usable key"))?
        }
        None => ApiKey::generate(),
    };
    let pool = db::connect_and_migrate(database_url, 2).await?;
    let project_id = db::ensure_project(&pool, project).await?;
    db::insert_key(&pool, project_id, name, &key, &permissions, expires_at).await?;
    pool.close().await;
    Ok((key, project_id))
}
