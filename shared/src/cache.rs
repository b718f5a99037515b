//! Names of the Redis keys that more than one binary uses for the read cache. Ingest caches
//! dashboard answers under keys that include a per-project generation; whoever changes a
//! project's data (the worker after a commit, ingest after resolve/delete) increments it, and
//! every older cache entry of that project stops being read (it expires with its TTL).

use uuid::Uuid;

/// The generation counter of `project` (a Redis integer; absent means 0).
pub fn generation_key(prefix: &str, project: Uuid) -> String {
    format!("{prefix}:gen:{project}")
}

/// A cached answer of `endpoint` for `project` at `generation`; `params` is the normalised query.
pub fn entry_key(
    prefix: &str,
    project: Uuid,
    generation: u64,
    endpoint: &str,
    params: &str,
) -> String {
    format!("{prefix}:cache:{project}:{generation}:{endpoint}:{params}")
}
