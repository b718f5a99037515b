//! What more than one Faultline binary needs: the event model, fingerprinting, configuration,
//! the database pool and migrations, queue topology and telemetry. Nothing binary-specific.
//!
//! ```text
//! SDK --POST /api/errors--> ingest --(publisher confirm)--> RabbitMQ --> worker --> Postgres
//!                             |                                          (groups, events,
//!                             +-- Redis (key cache, rate limits)          minute rollups)
//! dashboard --GET /api/...--> ingest --> Redis cache --> Postgres
//! alerter (cron) --> rollups/rules --> incidents + outbox --> email | Slack | webhook
//! ```
//!
//! # Layout
//! - [`cache`]: Redis key names of the read cache (entries, per-project generations).
//! - [`config`]: the typed settings tree read from the environment.
//! - [`domain`]: types that cross a boundary and parse on the way in (`Level`, `ApiKey`,
//!   `Permission`, `ErrorEvent`, the wire contract on the queue).
//! - [`fingerprint`]: message normalisation, stack-frame parsing and the versioned grouping rules.
//! - [`db`]: pool, the one `MIGRATOR`, and the key queries ingest and the CLI share.
//! - [`queue`]: exchange/queue names and their declaration, shared by publisher and consumer.
//! - [`telemetry`]: tracing and Prometheus set-up, `/health` building blocks.
//! - [`testkit`]: throwaway databases and queue names for the integration tests of every crate,
//!   a TCP proxy to cut, and Postgres, RabbitMQ and Redis servers of a test's own to stop.

pub mod cache;
pub mod config;
pub mod db;
pub mod domain;
pub mod fingerprint;
pub mod queue;
pub mod telemetry;
pub mod testkit;
