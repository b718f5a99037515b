//! `GET /api/monitoring/services`, `/metrics` and `/uptime`: each dependency probed and timed now,
//! worker and alerter liveness from their heartbeats, OS figures from `/proc` (Linux), request
//! figures from this process, uptime from the recorded health checks.

use super::params::{Params, RawQuery};
use crate::{
    AppState,
    auth::Caller,
    cache::{self, ttl},
    checks::{self, Probe},
    error::ApiError,
    queries::reads,
};
use axum::{extract::State, http::HeaderMap, response::Response};
use chrono::{Duration as ChronoDuration, Utc};
use faultline_shared::domain::Permission;
use serde_json::{Value, json};
use std::time::Duration;

fn display_name(component: &str) -> &'static str {
    match component {
        "postgres" => "Database",
        "redis" => "Cache Service",
        "rabbitmq" => "Message Queue",
        "worker" => "Worker",
        "alerter" => "Alerter",
        _ => "API",
    }
}

/// `GET /api/monitoring/services`: Postgres, Redis, RabbitMQ, worker and alerter, each probed now
/// (`response_time_ms` measured), with `uptime_percent` over the last 24 hours of recorded
/// checks. The worker's details carry the consumer lag (messages waiting) and the delay from
/// ingest to visible of its last batch. `overall_health` is `unhealthy` when events cannot be
/// taken or processed (Postgres, RabbitMQ or every worker down), `degraded` when something else
/// is down, else `healthy`.
#[utoipa::path(get, path = "/api/monitoring/services", tag = "monitoring",
    summary = "Postgres, Redis, RabbitMQ, worker and alerter: status, measured response time, 24 h uptime, details",
    responses((status = 200, description = "`{services: [...], overall_health}`; cached 30 s"), (status = 401, description = "Missing or invalid key", body = super::openapi::ErrorBody), (status = 403, description = "The key lacks the permission", body = super::openapi::ErrorBody)),
    security(("api_key" = [])))]
pub async fn services(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(Permission::Read)?;
    cache::cached(
        &state,
        &headers,
        caller.project_id,
        "services",
        "",
        ttl::SERVICE_HEALTH,
        || async {
            let (pg, rd, mq, mut worker, alerter) = tokio::join!(
                checks::postgres(&state, true),
                checks::redis(&state, true),
                checks::rabbitmq(&state, true),
                checks::heartbeat(&state, "worker"),
                checks::heartbeat(&state, "alerter"),
            );
            let delays: Vec<f64> = worker.details["instances"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["details"]["ingest_to_visible_ms"].as_f64())
                .collect();
            worker.details["consumer_lag_messages"] = mq.details["queue_depth"].clone();
            worker.details["ingest_to_visible_ms"] = delays
                .iter()
                .copied()
                .reduce(f64::max)
                .map_or(Value::Null, |d| json!(d));
            let critical_down = !pg.healthy() || !mq.healthy() || !worker.healthy();
            let any_down = [&pg, &rd, &mq, &worker, &alerter]
                .iter()
                .any(|p| p.status == "unhealthy");
            let since = Utc::now() - ChronoDuration::hours(24);
            let mut services = Vec::new();
            for p in [&pg, &rd, &mq, &worker, &alerter] {
                services.push(service_json(&state, p, since).await?);
            }
            Ok(json!({
                "services": services,
                "overall_health": if critical_down {
                    "unhealthy"
                } else if any_down {
                    "degraded"
                } else {
                    "healthy"
                },
            }))
        },
    )
    .await
}

async fn service_json(
    state: &AppState,
    p: &Probe,
    since: chrono::DateTime<Utc>,
) -> Result<Value, ApiError> {
    let uptime = reads::availability(&state.pool, p.component, since).await?;
    let mut v = json!({
        "name": display_name(p.component),
        "component": p.component,
        "status": p.status,
        "uptime_percent": uptime.map(|u| (u * 100.0).round() / 100.0),
        "response_time_ms": (p.response_time_ms * 100.0).round() / 100.0,
        "last_checked": Utc::now(),
        "details": p.details,
    });
    if let Some(e) = &p.error {
        v["error"] = Value::String(e.clone());
    }
    Ok(v)
}

/// `GET /api/monitoring/metrics?timeframe=1h|6h|24h|7d|30d` (default 1h): CPU, memory, disk and
/// network of the host from the OS, established connections to this API, and this instance's
/// requests per minute averaged over the time frame (or since start, if shorter).
#[utoipa::path(get, path = "/api/monitoring/metrics", tag = "monitoring",
    summary = "Host CPU, memory, disk and network; connections; requests per minute",
    params(("timeframe" = Option<String>, Query, description = "1h (default), 6h, 24h, 7d or 30d")),
    responses((status = 200, description = "Cached 30 s"), (status = 400, description = "A bad parameter, named in `details`", body = super::openapi::ErrorBody), (status = 401, description = "Missing or invalid key", body = super::openapi::ErrorBody), (status = 403, description = "The key lacks the permission", body = super::openapi::ErrorBody)),
    security(("api_key" = [])))]
pub async fn metrics(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    raw: RawQuery,
) -> Result<Response, ApiError> {
    caller.require(Permission::Read)?;
    let mut p = Params::new(raw)?;
    let timeframe = p.one_of("timeframe", &["1h", "6h", "24h", "7d", "30d"], "1h");
    p.finish()?;
    let span = match timeframe {
        "1h" => Duration::from_secs(3600),
        "6h" => Duration::from_secs(6 * 3600),
        "24h" => Duration::from_secs(24 * 3600),
        "7d" => Duration::from_secs(7 * 24 * 3600),
        _ => Duration::from_secs(30 * 24 * 3600),
    };
    cache::cached(
        &state,
        &headers,
        caller.project_id,
        "system_metrics",
        timeframe,
        ttl::SYSTEM_METRICS,
        || async {
            let cpu = os::cpu_percent().await;
            let (bytes_in, bytes_out) = os::network_bytes().unwrap_or((0, 0));
            let w = state.requests.window(span);
            Ok(json!({
                "timeframe": timeframe,
                "cpu_usage_percent": cpu.map(|c| (c * 10.0).round() / 10.0),
                "memory_usage_percent": os::memory_percent().map(|m| (m * 10.0).round() / 10.0),
                "disk_usage_percent": os::disk_percent().await.map(|d| (d * 10.0).round() / 10.0),
                "network_io": { "bytes_in": bytes_in, "bytes_out": bytes_out },
                "active_connections": os::established_connections(state.local_port),
                "in_flight_requests": state.requests.in_flight(),
                "requests_per_minute": (w.per_minute() * 100.0).round() / 100.0,
                "requests": w.requests,
                "load_average": os::load_average(),
                "instance": state.instance,
            }))
        },
    )
    .await
}

/// `GET /api/monitoring/uptime`: from the "api" health checks recorded by every ingest instance.
/// `current_uptime_hours` runs from the first healthy check after the last unhealthy one (this
/// process's own uptime when nothing was recorded yet); an incident is a healthy check followed by
/// an unhealthy one.
#[utoipa::path(get, path = "/api/monitoring/uptime", tag = "monitoring",
    summary = "Uptime from the recorded health checks",
    responses((status = 200, description = "current_uptime_hours, uptime_percent_24h/7d/30d, incidents_count, last_downtime; cached 5 min"), (status = 401, description = "Missing or invalid key", body = super::openapi::ErrorBody), (status = 403, description = "The key lacks the permission", body = super::openapi::ErrorBody)),
    security(("api_key" = [])))]
pub async fn uptime(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(Permission::Read)?;
    cache::cached(
        &state,
        &headers,
        caller.project_id,
        "uptime",
        "",
        ttl::UPTIME,
        || async {
            let now = Utc::now();
            let r = reads::uptime(&state.pool, now).await?;
            let currently_down = r.last_down.is_some() && r.last_up_since.is_none();
            let up_since = if currently_down {
                None
            } else {
                Some(r.last_up_since.unwrap_or(state.started_at))
            };
            let hours = |since: chrono::DateTime<Utc>| {
                ((now - since).num_milliseconds() as f64 / 3_600_000.0 * 100.0).round() / 100.0
            };
            let round = |v: Option<f64>| v.map(|x| (x * 1000.0).round() / 1000.0);
            Ok(json!({
                "current_uptime_hours": up_since.map_or(0.0, hours),
                "process_uptime_hours": hours(state.started_at),
                "uptime_percent_24h": round(r.pct_24h),
                "uptime_percent_7d": round(r.pct_7d),
                "uptime_percent_30d": round(r.pct_30d),
                "incidents_count": r.incidents_30d,
                "last_downtime": r.last_down,
                "recorded_since": r.first_check,
            }))
        },
    )
    .await
}

/// Host figures from `/proc` and `df`; `None` where the OS does not provide them.
mod os {
    use std::time::Duration;

    fn cpu_times() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        let v: Vec<u64> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal
        let idle = v.get(3)? + v.get(4).unwrap_or(&0);
        let total: u64 = v.iter().take(8).sum();
        Some((idle, total))
    }

    /// Busy share of all CPUs over a 200 ms sample.
    pub async fn cpu_percent() -> Option<f64> {
        let (idle0, total0) = cpu_times()?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (idle1, total1) = cpu_times()?;
        let total = total1.saturating_sub(total0);
        if total == 0 {
            return None;
        }
        Some(100.0 * (total - idle1.saturating_sub(idle0).min(total)) as f64 / total as f64)
    }

    pub fn memory_percent() -> Option<f64> {
        let info = std::fs::read_to_string("/proc/meminfo").ok()?;
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        };
        let total = field("MemTotal:")?;
        let available = field("MemAvailable:")?;
        (total > 0.0).then(|| 100.0 * (total - available) / total)
    }

    /// Used share of the file system holding the working directory (`df -Pk .`).
    pub async fn disk_percent() -> Option<f64> {
        let out = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::process::Command::new("df")
                .args(["-Pk", "."])
                .output(),
        )
        .await
        .ok()?
        .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        let cols: Vec<&str> = text.lines().nth(1)?.split_whitespace().collect();
        let used: f64 = cols.get(2)?.parse().ok()?;
        let available: f64 = cols.get(3)?.parse().ok()?;
        (used + available > 0.0).then(|| 100.0 * used / (used + available))
    }

    /// Bytes received and sent by every non-loopback interface since boot.
    pub fn network_bytes() -> Option<(u64, u64)> {
        let dev = std::fs::read_to_string("/proc/net/dev").ok()?;
        let mut rx = 0;
        let mut tx = 0;
        for line in dev.lines().skip(2) {
            let Some((name, rest)) = line.split_once(':') else {
                continue;
            };
            if name.trim() == "lo" {
                continue;
            }
            let v: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            rx += v.first().copied().unwrap_or(0);
            tx += v.get(8).copied().unwrap_or(0);
        }
        Some((rx, tx))
    }

    /// Established TCP connections whose local port is `port` (IPv4 and IPv6).
    pub fn established_connections(port: u16) -> Option<u64> {
        let mut n = 0;
        let mut any = false;
        for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let Ok(text) = std::fs::read_to_string(file) else {
                continue;
            };
            any = true;
            for line in text.lines().skip(1) {
                let cols: Vec<&str> = line.split_whitespace().collect();
                let local_port = cols
                    .get(1)
                    .and_then(|a| a.rsplit_once(':'))
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
                if local_port == Some(port) && cols.get(3) == Some(&"01") {
                    n += 1;
                }
            }
        }
        any.then_some(n)
    }

    pub fn load_average() -> Option<[f64; 3]> {
        let text = std::fs::read_to_string("/proc/loadavg").ok()?;
        let v: Vec<f64> = text
            .split_whitespace()
            .take(3)
            .filter_map(|x| x.parse().ok())
            .collect();
        Some([*v.first()?, *v.get(1)?, *v.get(2)?])
    }
}
