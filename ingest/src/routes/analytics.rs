//! `GET /api/stats`, `GET /api/analytics/trends` and `GET /api/analytics/performance`: figures
//! computed from the minute rollups, the groups, the recorded resolutions and health checks, and
//! this process's own request metrics. Nothing is estimated or invented.

use super::params::{Params, RawQuery};
use crate::{
    AppState,
    auth::Caller,
    cache::{self, ttl},
    error::ApiError,
    queries::reads,
};
use axum::{extract::State, http::HeaderMap, response::Response};
use chrono::{DateTime, Datelike, Duration as ChronoDuration, NaiveTime, TimeZone, Utc};
use faultline_shared::domain::Permission;
use serde_json::json;
use std::time::Duration;

fn round_to(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// "45s", "12m", "2h 15m", "3d 4h".
pub fn human_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as i64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

/// The start of the UTC day, ISO week (Monday) and month holding `now`.
fn calendar_bounds(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>) {
    let day = now.date_naive();
    let at_midnight = |d: chrono::NaiveDate| Utc.from_utc_datetime(&d.and_time(NaiveTime::MIN));
    let today = at_midnight(day);
    let week =
        at_midnight(day - ChronoDuration::days(i64::from(day.weekday().num_days_from_monday())));
    let month = at_midnight(day.with_day(1).unwrap_or(day));
    (today, week, month)
}

/// `GET /api/stats`. `total_errors`/`resolved_errors` count groups (the contract's errors);
/// `errors_today`/`_this_week`/`_this_month` count occurrences since the start of the UTC day,
/// ISO week and month; `error_rate_24h` is occurrences per hour over the last 24 hours;
/// `resolution_rate` is the percentage of groups resolved; `avg_resolution_time` averages every
/// recorded resolution (from the group's first sighting, regression or reopening to its
/// resolution), `null` before the first one.
#[utoipa::path(get, path = "/api/stats", tag = "analytics", summary = "Error statistics",
    responses((status = 200, description = "Cached 5 min", body = super::openapi::Stats), (status = 304, description = "If-None-Match matched"), (status = 401, description = "Missing or invalid key", body = super::openapi::ErrorBody), (status = 403, description = "The key lacks the permission", body = super::openapi::ErrorBody)),
    security(("api_key" = [])))]
pub async fn stats(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(Permission::Read)?;
    let now = Utc::now();
    let (today, week, month) = calendar_bounds(now);
    // The day is part of the key: a new day starts a new "today" even without writes.
    let params = today.date_naive().to_string();
    cache::cached(
        &state,
        &headers,
        caller.project_id,
        "stats",
        &params,
        ttl::STATS,
        || async {
            let r = reads::stats(
                &state.pool,
                caller.project_id,
                today,
                week,
                month,
                now - ChronoDuration::hours(24),
            )
            .await?;
            let resolution_rate = if r.total_groups == 0 {
                0.0
            } else {
                round_to(100.0 * r.resolved_groups as f64 / r.total_groups as f64, 1)
            };
            Ok(json!({
                "total_errors": r.total_groups,
                "resolved_errors": r.resolved_groups,
                "unresolved_errors": r.total_groups - r.resolved_groups,
                "errors_today": r.events_today,
                "errors_this_week": r.events_week,
                "errors_this_month": r.events_month,
                "events_24h": r.events_24h,
                "error_rate_24h": round_to(r.events_24h as f64 / 24.0, 2),
                "resolution_rate": resolution_rate,
                "avg_resolution_time": r.avg_resolution_secs.map(human_duration),
                "avg_resolution_seconds": r.avg_resolution_secs.map(|s| round_to(s, 1)),
                "resolutions": r.resolutions,
            }))
        },
    )
    .await
}

/// `GET /api/analytics/trends?period=day|week|month|year&group_by=hour|day|week|month`
/// (defaults week and day): one data point per UTC bucket from the bucket holding `now - period`
/// to the current one, empty buckets included.
#[utoipa::path(get, path = "/api/analytics/trends", tag = "analytics", summary = "Counts per UTC bucket, empty buckets included",
    params(("period" = Option<String>, Query, description = "day, week (default), month or year"),
           ("group_by" = Option<String>, Query, description = "hour, day (default), week or month")),
    responses((status = 200, description = "Cached 5 min", body = super::openapi::Trends), (status = 400, description = "A bad parameter, named in `details`", body = super::openapi::ErrorBody), (status = 401, description = "Missing or invalid key", body = super::openapi::ErrorBody), (status = 403, description = "The key lacks the permission", body = super::openapi::ErrorBody)),
    security(("api_key" = [])))]
pub async fn trends(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    raw: RawQuery,
) -> Result<Response, ApiError> {
    caller.require(Permission::Read)?;
    let mut p = Params::new(raw)?;
    let period = p.one_of("period", &["day", "week", "month", "year"], "week");
    let group_by = p.one_of("group_by", &["hour", "day", "week", "month"], "day");
    p.finish()?;
    let span = match period {
        "day" => ChronoDuration::days(1),
        "week" => ChronoDuration::days(7),
        "month" => ChronoDuration::days(30),
        _ => ChronoDuration::days(365),
    };
    let now = Utc::now();
    let from = now - span;
    // The current hour is part of the key so a new bucket appears even without writes.
    let params = format!("{period}:{group_by}:{}", now.format("%Y%m%d%H"));
    cache::cached(
        &state,
        &headers,
        caller.project_id,
        "trends",
        &params,
        ttl::TRENDS,
        || async {
            let rows = reads::trends(&state.pool, caller.project_id, group_by, from, now).await?;
            let points: Vec<_> = rows
                .iter()
                .map(|r| {
                    json!({
                        "timestamp": r.bucket,
                        "error_count": r.error_count,
                        "resolved_count": r.resolved_count,
                        "critical_count": r.critical_count,
                    })
                })
                .collect();
            Ok(json!({
                "period": period,
                "group_by": group_by,
                "from": from,
                "to": now,
                "data_points": points,
            }))
        },
    )
    .await
}

/// `GET /api/analytics/performance`: this ingest instance's requests over the last hour (average
/// and p95/p99 latency, throughput, share of 5xx answers), availability from the health checks
/// of the last 24 hours, and `performance_score` (0–10) =
/// 10 × availability × (1 − 5xx share) × min(1, 200 ms / average latency).
#[utoipa::path(get, path = "/api/analytics/performance", tag = "analytics",
    summary = "This instance's latency, throughput and 5xx rate over the last hour; availability from health checks",
    responses((status = 200, description = "avg_response_time (ms), p95/p99, error_rate_percent, throughput_rpm, availability_percent, performance_score; cached 1 min"), (status = 401, description = "Missing or invalid key", body = super::openapi::ErrorBody), (status = 403, description = "The key lacks the permission", body = super::openapi::ErrorBody)),
    security(("api_key" = [])))]
pub async fn performance(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(Permission::Read)?;
    cache::cached(
        &state,
        &headers,
        caller.project_id,
        "performance",
        "",
        ttl::PERFORMANCE,
        || async {
            let w = state.requests.window(Duration::from_secs(3600));
            let availability =
                reads::availability(&state.pool, "api", Utc::now() - ChronoDuration::hours(24))
                    .await?;
            let avg = w.avg_ms();
            let latency_factor = if avg <= 200.0 { 1.0 } else { 200.0 / avg };
            let score = 10.0 * availability.unwrap_or(100.0) / 100.0
                * (1.0 - w.error_percent() / 100.0)
                * latency_factor;
            Ok(json!({
                "avg_response_time": round_to(avg, 2),
                "p95_response_time_ms": w.quantile_ms(0.95),
                "p99_response_time_ms": w.quantile_ms(0.99),
                "error_rate_percent": round_to(w.error_percent(), 2),
                "throughput_rpm": round_to(w.per_minute(), 2),
                "requests": w.requests,
                "window_minutes": w.minutes,
                "availability_percent": availability.map(|a| round_to(a, 3)),
                "performance_score": round_to(score, 1),
                "instance": state.instance,
            }))
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_the_contract() {
        assert_eq!(human_duration(42.0), "42s");
        assert_eq!(human_duration(8100.0), "2h 15m");
        assert_eq!(human_duration(90000.0), "1d 1h");
    }

    #[test]
    fn calendar_bounds_start_on_midnight_monday_and_the_first() {
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 15, 4, 5).unwrap();
        let (d, w, m) = calendar_bounds(now);
        assert_eq!(d, Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap());
        assert_eq!(w, Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap());
        assert_eq!(m, Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap());
    }
}
