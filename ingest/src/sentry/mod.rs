//! Sentry protocol compatibility: any Sentry SDK becomes a Faultline SDK by changing its DSN.
//!
//! The routes (`POST /api/{project}/envelope/` and `/api/{project}/store/`) live in
//! `routes::sentry`; this module holds the protocol, free of HTTP plumbing so it is unit-tested:
//!
//! # Layout
//! - [`auth`]: DSNs, and the key in `X-Sentry-Auth`, `?sentry_key=` or the envelope's `dsn`.
//! - [`body`]: gzip/deflate/br bodies with a decoded-size limit (a zip bomb answers 413).
//! - [`envelope`]: the envelope format (header line, items with optional `length`).
//! - [`event`]: a Sentry event payload mapped to our [`ErrorEvent`](faultline_shared::domain::ErrorEvent).

pub mod auth;
pub mod body;
pub mod envelope;
pub mod event;
