//! The load itself. Each connection is one task owning one HTTP/1.1 connection ([`crate::wire`]),
//! so a slow server shows as queueing here rather than being hidden by a client pool. Requests are numbered
//! from one shared counter; in open-loop mode request `i` is due at `start + i * interval`, and its
//! latency is measured from that due time, so a stalled server is charged for the requests it kept
//! waiting (no coordinated omission).

use crate::{
    payload::{Payloads, is_batch},
    wire,
};
use bytes::Bytes;
use hdrhistogram::Histogram;
use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::time::Instant;

/// What one run asks of the connections.
pub struct Plan {
    pub host: String,
    pub port: u16,
    pub key: String,
    pub connections: usize,
    /// Seconds between two requests (open loop), or `None` for closed loop.
    pub interval: Option<f64>,
    pub duration: Duration,
    pub batch_share: f64,
    /// Events in one batch body.
    pub batch_size: u64,
    pub request_timeout: Duration,
    pub payloads: Payloads,
}

/// What the connections saw, merged.
pub struct Outcome {
    pub requests: u64,
    pub events_sent: u64,
    pub events_accepted: u64,
    /// Events ingest refused inside an accepted batch (per-item rejections).
    pub events_rejected: u64,
    /// Requests by HTTP status, and `io_error` / `timeout` for requests without an answer.
    pub statuses: BTreeMap<String, u64>,
    /// Latency of every answered request, in microseconds.
    pub latency: Histogram<u64>,
    /// Open loop: how long after its due time each request was taken up by a connection, in
    /// microseconds. A request waits here when every connection is busy with an earlier one (or
    /// loadgen waits for a core), so its latency then includes the generator's own delay, not
    /// only the server's answer.
    pub start_delay: Histogram<u64>,
    /// From the first due time to the last answer.
    pub elapsed: Duration,
    /// First few distinct error descriptions, to say why requests failed.
    pub sample_errors: Vec<String>,
    /// Per second of the schedule: answered requests and their largest latency (µs), so a
    /// periodic stall shows as a spike rather than only as a fat tail.
    pub per_second: Vec<(u64, u64)>,
}

impl Outcome {
    fn new() -> Self {
        Self {
            requests: 0,
            events_sent: 0,
            events_accepted: 0,
            events_rejected: 0,
            statuses: BTreeMap::new(),
            latency: new_histogram(),
            start_delay: new_histogram(),
            elapsed: Duration::ZERO,
            sample_errors: Vec::new(),
            per_second: Vec::new(),
        }
    }

    fn merge(&mut self, other: Outcome) {
        self.requests += other.requests;
        self.events_sent += other.events_sent;
        self.events_accepted += other.events_accepted;
        self.events_rejected += other.events_rejected;
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        // Both histograms have the same bounds and saturate, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.start_delay.add(&other.start_delay);
        if self.per_second.len() < other.per_second.len() {
            self.per_second.resize(other.per_second.len(), (0, 0));
        }
        for (mine, theirs) in self.per_second.iter_mut().zip(other.per_second) {
            mine.0 += theirs.0;
            mine.1 = mine.1.max(theirs.1);
        }
        for e in other.sample_errors {
            if self.sample_errors.len() < 5 && !self.sample_errors.contains(&e) {
                self.sample_errors.push(e);
            }
        }
    }

    fn error(&mut self, kind: &str, detail: String) {
        *self.statuses.entry(kind.to_string()).or_default() += 1;
        if self.sample_errors.len() < 5 && !self.sample_errors.contains(&detail) {
            self.sample_errors.push(detail);
        }
    }
}

/// Microseconds, for latencies: the requests' here, the disk probe's syncs in `disk`.
pub(crate) fn new_histogram() -> Histogram<u64> {
    // 1 µs to 10 min at 3 significant digits; values above saturate at the top.
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| Histogram::new(3).unwrap())
}

/// Every request of the run, head and body, ready to write.
struct Requests {
    singles: Vec<Bytes>,
    batches: Vec<Bytes>,
}

impl Requests {
    fn build(plan: &Plan) -> Self {
        let prepare = |path: &str, bodies: &[Bytes]| {
            bodies
                .iter()
                .map(|b| wire::request(&plan.host, path, &plan.key, b))
                .collect()
        };
        Self {
            singles: prepare("/api/errors", &plan.payloads.singles),
            batches: prepare("/api/errors/batch", &plan.payloads.batches),
        }
    }
}

/// Events an answered batch accepted and rejected, from `data.accepted` / `data.rejected`.
fn batch_counts(body: &[u8]) -> (u64, u64) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    (
        v["data"]["accepted"].as_u64().unwrap_or(0),
        v["data"]["rejected"].as_u64().unwrap_or(0),
    )
}

async fn connection(
    plan: Arc<Plan>,
    requests: Arc<Requests>,
    next: Arc<AtomicU64>,
    start: Instant,
) -> Outcome {
    let mut out = Outcome::new();
    let end = start + plan.duration;
    let mut conn: Option<wire::Connection> = None;
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let due = match plan.interval {
            Some(interval) => {
                let due = start + Duration::from_secs_f64(i as f64 * interval);
                if due >= end {
                    break;
                }
                tokio::time::sleep_until(due).await;
                let late = due.elapsed().as_micros().min(u64::MAX as u128) as u64;
                out.start_delay.saturating_record(late.max(1));
                due
            }
            None => {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                now
            }
        };
        let batch = is_batch(i, plan.batch_share);
        let (request, events) = if batch {
            let all = &requests.batches;
            (&all[i as usize % all.len()], plan.batch_size)
        } else {
            let all = &requests.singles;
            (&all[i as usize % all.len()], 1)
        };
        out.requests += 1;
        out.events_sent += events;
        let c = match conn.take() {
            Some(c) => Ok(c),
            None => wire::Connection::open(&plan.host, plan.port).await,
        };
        let mut c = match c {
            Ok(s) => s,
            Err(e) => {
                out.error("io_error", format!("{e:#}"));
                // Do not spin on a refused connection.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match tokio::time::timeout(plan.request_timeout, c.round_trip(request)).await {
            Ok(Ok(answer)) => {
                let micros = due.elapsed().as_micros().min(u64::MAX as u128) as u64;
                out.latency.saturating_record(micros.max(1));
                let second = (due - start).as_secs() as usize;
                if out.per_second.len() <= second {
                    out.per_second.resize(second + 1, (0, 0));
                }
                out.per_second[second].0 += 1;
                out.per_second[second].1 = out.per_second[second].1.max(micros);
                let status = answer.status;
                count_status(&mut out.statuses, status);
                let body = c.body();
                if status == 202 {
                    if batch {
                        let (a, r) = batch_counts(body);
                        out.events_accepted += a;
                        out.events_rejected += r;
                    } else {
                        out.events_accepted += 1;
                    }
                } else if out.sample_errors.len() < 5 {
                    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).to_string();
                    let detail = format!("{status}: {text}");
                    if !out.sample_errors.contains(&detail) {
                        out.sample_errors.push(detail);
                    }
                }
                if !answer.close {
                    conn = Some(c);
                }
            }
            Ok(Err(e)) => out.error("io_error", format!("{e:#}")),
            Err(_) => out.error("timeout", "request timed out".to_string()),
        }
    }
    out
}

/// Adds one answer with `status` to the counts, without building its key when it is there.
fn count_status(statuses: &mut BTreeMap<String, u64>, status: u16) {
    let digits = [
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ];
    let key = std::str::from_utf8(&digits).unwrap_or("???");
    match statuses.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            statuses.insert(key.to_string(), 1);
        }
    }
}

/// Runs the plan; returns when every connection has had its last answer.
pub async fn run(plan: Plan) -> Outcome {
    let requests = Arc::new(Requests::build(&plan));
    let plan = Arc::new(plan);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..plan.connections)
        .map(|_| {
            tokio::spawn(connection(
                plan.clone(),
                requests.clone(),
                next.clone(),
                start,
            ))
        })
        .collect();
    let mut total = Outcome::new();
    for t in tasks {
        match t.await {
            Ok(o) => total.merge(o),
            Err(e) => total.error("task_panic", e.to_string()),
        }
    }
    total.elapsed = start.elapsed();
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_counted_by_their_three_digits() {
        let mut s = BTreeMap::new();
        for code in [202, 202, 429, 503, 202] {
            count_status(&mut s, code);
        }
        let got: Vec<(&str, u64)> = s.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(got, [("202", 3), ("429", 1), ("503", 1)]);
    }
}
