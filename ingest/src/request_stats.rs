//! This process's own request figures, per minute, kept for 30 days: what
//! `/api/analytics/performance` and `/api/monitoring/metrics` report (measured, never invented).
//! Prometheus has the same data for scraping; this copy lets the API answer over a time frame
//! without a Prometheus server. Figures are per ingest instance.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

/// Upper bounds (ms) of the latency buckets; the last bucket is everything slower.
const BOUNDS_MS: [f64; 12] = [
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
];
const KEEP_MINUTES: i64 = 30 * 24 * 60;

#[derive(Debug, Clone, Default)]
struct Minute {
    minute: i64,
    requests: u64,
    server_errors: u64,
    total_ms: f64,
    buckets: [u64; BOUNDS_MS.len() + 1],
}

/// Totals over a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    pub requests: u64,
    pub server_errors: u64,
    pub total_ms: f64,
    /// Minutes the window covers while this process was up (at least 1).
    pub minutes: f64,
    buckets: [u64; BOUNDS_MS.len() + 1],
}

impl Window {
    pub fn avg_ms(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.total_ms / self.requests as f64
        }
    }

    pub fn per_minute(&self) -> f64 {
        self.requests as f64 / self.minutes.max(1.0)
    }

    pub fn error_percent(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            100.0 * self.server_errors as f64 / self.requests as f64
        }
    }

    /// The upper bound of the bucket holding the `q` quantile (0..1), in ms; `None` without data.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(BOUNDS_MS.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        None
    }
}

#[derive(Clone)]
pub struct RequestStats {
    minutes: Arc<Mutex<VecDeque<Minute>>>,
    started_minute: i64,
    in_flight: Arc<AtomicI64>,
}

impl Default for RequestStats {
    fn default() -> Self {
        Self::new()
    }
}

fn now_minute() -> i64 {
    chrono::Utc::now().timestamp().div_euclid(60)
}

impl RequestStats {
    pub fn new() -> Self {
        Self {
            minutes: Arc::default(),
            started_minute: now_minute(),
            in_flight: Arc::default(),
        }
    }

    pub fn started(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.in_flight.clone())
    }

    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn record(&self, elapsed: Duration, server_error: bool) {
        let ms = elapsed.as_secs_f64() * 1000.0;
        let minute = now_minute();
        let mut minutes = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        if minutes.back().is_none_or(|m| m.minute != minute) {
            minutes.push_back(Minute {
                minute,
                ..Default::default()
            });
            while minutes
                .front()
                .is_some_and(|m| m.minute < minute - KEEP_MINUTES)
            {
                minutes.pop_front();
            }
        }
        if let Some(m) = minutes.back_mut() {
            m.requests += 1;
            m.server_errors += u64::from(server_error);
            m.total_ms += ms;
            let i = BOUNDS_MS
                .iter()
                .position(|b| ms <= *b)
                .unwrap_or(BOUNDS_MS.len());
            m.buckets[i] += 1;
        }
    }

    /// Totals over the last `span` (the current minute included).
    pub fn window(&self, span: Duration) -> Window {
        let now = now_minute();
        let span_minutes = (span.as_secs() / 60).max(1) as i64;
        let from = now - span_minutes + 1;
        let mut w = Window {
            // Do not average over minutes before this process existed.
            minutes: (now - from.max(self.started_minute) + 1) as f64,
            ..Default::default()
        };
        let minutes = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        for m in minutes.iter().rev().take_while(|m| m.minute >= from) {
            w.requests += m.requests;
            w.server_errors += m.server_errors;
            w.total_ms += m.total_ms;
            for (acc, n) in w.buckets.iter_mut().zip(m.buckets.iter()) {
                *acc += n;
            }
        }
        w
    }
}

/// Decrements the in-flight count when the request ends (even if its future is dropped).
pub struct InFlight(Arc<AtomicI64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_sums_requests_errors_and_latency_buckets() {
        let s = RequestStats::new();
        s.record(Duration::from_millis(3), false);
        s.record(Duration::from_millis(40), true);
        s.record(Duration::from_millis(40), false);
        s.record(Duration::from_millis(700), false);
        let w = s.window(Duration::from_secs(3600));
        assert_eq!(w.requests, 4);
        assert_eq!(w.server_errors, 1);
        assert!((w.avg_ms() - 195.75).abs() < 1.0, "{}", w.avg_ms());
        assert_eq!(w.error_percent(), 25.0);
        assert_eq!(w.quantile_ms(0.5), Some(50.0));
        assert_eq!(w.quantile_ms(0.99), Some(1000.0));
        assert_eq!(w.minutes, 1.0);
        assert_eq!(w.per_minute(), 4.0);
    }
}
