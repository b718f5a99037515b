//! Redis as every binary opens it ([`client`]), and the names of the keys that more than one
//! binary uses for the read cache. Ingest caches dashboard answers under keys that include a
//! per-project generation; whoever changes a project's data (the worker after a commit, ingest
//! after resolve/delete) increments it, and every older cache entry of that project stops being
//! read (it expires with its TTL).

use redis::IntoConnectionInfo;
use uuid::Uuid;

/// A client for `url` whose connections send each command at once (TCP_NODELAY). redis-rs leaves
/// Nagle's algorithm on by default, and ingest multiplexes every request's commands (rate limits,
/// key cache, read cache) over one connection: a command written while an earlier one is still
/// unacknowledged would be held back until that reply (or the peer's delayed ACK) came in. Every
/// binary opens its Redis clients here.
pub fn client(url: &str) -> redis::RedisResult<redis::Client> {
    let info = url.into_connection_info()?;
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    redis::Client::open(info.set_tcp_settings(tcp))
}

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
