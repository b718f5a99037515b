//! The drain: how long after the load the worker needs until the project's counts in Postgres
//! add up to what ingest accepted. Counts are read relative to a baseline taken before the load,
//! so a project that already holds events can be measured again.

use anyhow::Context;
use serde::Serialize;
use sqlx::{PgPool, postgres::PgPoolOptions};
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

const POLL: Duration = Duration::from_millis(100);

/// The project being measured and its count before the load.
pub struct Probe {
    pool: PgPool,
    project_id: Uuid,
    baseline: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Drain {
    /// Milliseconds from the end of the load until the counts caught up; `None` if they did not.
    pub ms: Option<u64>,
    pub timed_out: bool,
    /// Events counted in Postgres since the baseline, at the last poll.
    pub processed: i64,
    /// Error groups of the project at the last poll.
    pub groups: i64,
}

/// The project's events counted so far, from its hourly totals: a few rows per project and hour,
/// written in the same transaction as the groups with the same counts. Polled every 100 ms during
/// a drain, summing the groups' rows instead (1,000 wide rows, each rewritten by every batch and not
/// yet vacuumed) was running in a fifth of the samples of Postgres's busy backends: CPU taken from
/// the worker being measured.
async fn sum(pool: &PgPool, project_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(sum(count), 0)::bigint FROM error_counts_hour WHERE project_id = $1",
    )
    .bind(project_id)
    .fetch_one(pool)
    .await
}

async fn groups(pool: &PgPool, project_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM error_groups WHERE project_id = $1")
        .bind(project_id)
        .fetch_one(pool)
        .await
}

impl Probe {
    pub async fn connect(database_url: &str, project: &str) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(database_url)
            .await
            .context("connecting to Postgres for the drain measurement")?;
        let project_id: Uuid = sqlx::query_scalar("SELECT id FROM projects WHERE name = $1")
            .bind(project)
            .fetch_optional(&pool)
            .await?
            .with_context(|| format!("no project named {project:?}"))?;
        let baseline = sum(&pool, project_id).await?;
        Ok(Self {
            pool,
            project_id,
            baseline,
        })
    }

    /// Polls every 100 ms until `accepted` events are counted or `limit` has passed.
    pub async fn wait(&self, accepted: u64, limit: Duration) -> anyhow::Result<Drain> {
        let start = Instant::now();
        loop {
            let processed = sum(&self.pool, self.project_id).await? - self.baseline;
            if processed >= accepted as i64 || start.elapsed() >= limit {
                let done = processed >= accepted as i64;
                return Ok(Drain {
                    ms: done.then(|| start.elapsed().as_millis() as u64),
                    timed_out: !done,
                    processed,
                    groups: groups(&self.pool, self.project_id).await?,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
