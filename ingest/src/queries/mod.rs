//! Ingest's SQL, one submodule per area, each function taking a pool and the caller's project.

pub mod access;
pub mod alerts;
pub mod reads;
