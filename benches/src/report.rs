//! One run against a running ingest, and its report: a JSON line for scripts and a summary for
//! people. Figures are printed as measured, never rounded up.

use crate::{
    Args,
    disk::{self, DiskReport},
    drain::{Drain, Probe},
    load::{self, Plan},
    payload::Payloads,
    sysstat::{self, CpuSnapshot, CpuUse, Memory},
};
use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// How long after their due time requests were taken up by a connection (open loop only). When
/// every connection is busy with an earlier request, the next one waits in the generator (and on
/// a machine it shares with the stack, loadgen also waits for a core), and its latency measures
/// the generator as much as the server: with 64 connections and ~6 ms answers the pool tops out
/// near 10,000 requests/s, so a short stall of the server left the schedule behind for the rest
/// of the run (benches/RESULTS.md, 2026-12-07).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StartDelay {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Share of requests taken up more than [`LATE_MS`] after their due time.
    pub late_share: f64,
}

/// Lateness that counts as late: tokio's timer fires on whole milliseconds, so up to about one
/// millisecond late is the timer's own.
pub const LATE_MS: u64 = 2;

impl StartDelay {
    /// `None` when no request was scheduled (closed loop).
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let over = LATE_MS * 1000 + 1;
        let late = if h.max() >= over {
            h.count_between(over, h.max())
        } else {
            0
        };
        Some(StartDelay {
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
            late_share: late as f64 / h.len() as f64,
        })
    }

    /// The summary's line, and a note when more than 1 % of requests went out late.
    fn summary(&self) -> String {
        let mut s = format!(
            "start delay (due time to a connection taking the request) ms: p50 {:.3}  p99 {:.3}  max {:.3}; {:.2} % started over {LATE_MS} ms late",
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.late_share * 100.0
        );
        if self.late_share > 0.01 {
            let _ = write!(
                s,
                "\n  note: those requests went out late (every connection busy, or loadgen waiting for a core), so their latency includes the generator's own delay; if the connections were the queue, more --connections measure the server alone"
            );
        }
        s
    }
}

/// A Prometheus histogram's buckets as (upper bound in seconds, cumulative count), in order of
/// bound. `series` is the bucket series up to its `le` label (`name_bucket{route="/x",`).
fn cumulative_buckets(metrics: &BTreeMap<String, f64>, series: &str) -> Vec<(f64, f64)> {
    let mut buckets: Vec<(f64, f64)> = metrics
        .iter()
        .filter_map(|(key, count)| {
            let le = key.strip_prefix(series)?.strip_prefix("le=\"")?;
            let le = le.split('"').next()?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, *count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// The quantiles `qs` of a Prometheus histogram as the upper bounds (ms) of the buckets that hold
/// them: what a dashboard would read off the service's own `/metrics`. `None` when it has no
/// observations.
pub(crate) fn bucket_bounds_ms(
    metrics: &BTreeMap<String, f64>,
    series: &str,
    qs: &[f64],
) -> Option<Vec<f64>> {
    let buckets = cumulative_buckets(metrics, series);
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    Some(
        qs.iter()
            .map(|q| {
                buckets
                    .iter()
                    .find(|(_, cumulative)| *cumulative >= q * total)
                    .map_or(f64::INFINITY, |(bound, _)| (bound * 1e6).round() / 1000.0)
            })
            .collect(),
    )
}

/// The share (%) of a histogram's observations at or under `bound` seconds, which must be one of
/// its bucket bounds: exact where a quantile's bucket only brackets it. Issue 7's latency targets
/// (10 and 50 ms) are bucket bounds, so this says how far a run is from them. `None` when the
/// bound is not a bucket or nothing was observed.
pub(crate) fn share_within(
    metrics: &BTreeMap<String, f64>,
    series: &str,
    bound: f64,
) -> Option<f64> {
    let buckets = cumulative_buckets(metrics, series);
    let total = buckets.last()?.1;
    let (_, within) = buckets.iter().find(|(b, _)| (b - bound).abs() < 1e-9)?;
    (total > 0.0).then(|| within / total * 100.0)
}

/// The series of ingest's `/metrics` whose buckets the summary reads.
const INGEST_DURATION: &str = "http_request_duration_seconds_bucket{route=\"/api/errors\",";
const INGEST_CONFIRM: &str = "ingest_publish_confirm_seconds_bucket{";
const INGEST_WAIT: &str = "ingest_publish_wait_seconds_bucket{";

/// The services `--stack` started, as seen at the end of the run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct StackInfo {
    pub database: String,
    pub queue_prefix: String,
    pub ingest: Option<Memory>,
    pub worker: Option<Memory>,
    /// `[seconds since the load began, ingest RSS KiB, worker RSS KiB]` every 5 s through load
    /// and drain, to tell a plateau from a leak on long runs.
    pub rss_timeline: Vec<[u64; 3]>,
    /// Where the time went, from the services' `/metrics` at the end of the run.
    pub ingest_metrics: BTreeMap<String, f64>,
    pub worker_metrics: BTreeMap<String, f64>,
}

impl StackInfo {
    /// `name_sum / name_count` of one of the scraped histograms.
    fn mean(metrics: &BTreeMap<String, f64>, name: &str) -> Option<f64> {
        let sum = metrics.get(&format!("{name}_sum"))?;
        let count = metrics.get(&format!("{name}_count"))?;
        (*count > 0.0).then(|| sum / count)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub mode: &'static str,
    pub url: String,
    pub connections: usize,
    /// Offered events/s (open loop); `None` for maximum throughput.
    pub offered_events_per_sec: Option<f64>,
    pub duration_secs: f64,
    pub fingerprints: usize,
    pub payload_bytes: usize,
    /// Message templates actually sent (at most 65,536 distinct bodies are kept in memory).
    pub templates: usize,
    /// Mean size of one single-event body as sent, in bytes.
    pub event_bytes: usize,
    pub batch_share: f64,
    pub batch_size: usize,
    /// Groups stored before the run (`--seed-groups`).
    pub seed_groups: u64,
    pub requests: u64,
    pub events_sent: u64,
    pub events_accepted: u64,
    pub events_rejected: u64,
    /// Requests by HTTP status (`io_error` / `timeout` when there was no answer).
    pub statuses: BTreeMap<String, u64>,
    pub sample_errors: Vec<String>,
    /// From the first scheduled request to the last answer.
    pub load_secs: f64,
    pub accepted_events_per_sec: f64,
    pub latency: Latency,
    /// Largest latency (ms) of the requests due in each second of the load.
    pub max_latency_by_second_ms: Vec<f64>,
    /// Open loop: how late requests were taken up (`None` for maximum throughput).
    pub start_delay: Option<StartDelay>,
    /// The disk's sync latency during the load (`None` with the probe off).
    pub disk: Option<DiskReport>,
    pub drain: Option<Drain>,
    /// Accepted events over load time plus drain time: the rate Postgres actually kept up with.
    pub end_to_end_events_per_sec: Option<f64>,
    pub cpu_during_load: CpuUse,
    pub cpu_during_drain: Option<CpuUse>,
    pub machine: String,
    pub loadavg_before: String,
    pub loadavg_after: String,
    pub stack: Option<StackInfo>,
}

fn host_port(url: &str) -> anyhow::Result<(String, u16)> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("bad --url {url:?}"))?;
    anyhow::ensure!(
        uri.scheme_str().unwrap_or("http") == "http",
        "only http:// is supported"
    );
    let host = uri.host().context("--url has no host")?.to_string();
    Ok((host, uri.port_u16().unwrap_or(80)))
}

pub(crate) fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// Per-second maxima as whole milliseconds, space-separated: the requests' and the disk's lines
/// of the summary, printed alike so they can be read one above the other.
pub(crate) fn whole_ms(per_second: &[f64]) -> String {
    let whole: Vec<String> = per_second.iter().map(|m| format!("{m:.0}")).collect();
    whole.join(" ")
}

/// Runs the load described by `args` against `args.url` with `args.key`, then the drain if a
/// database and project are known.
pub async fn run_against(args: &Args, stack: Option<StackInfo>) -> anyhow::Result<RunResult> {
    let (host, port) = host_port(&args.url)?;
    let payloads = Payloads::build(
        args.fingerprints,
        args.payload_bytes,
        args.batch_share,
        args.batch_size,
    );
    let probe = match (&args.database_url, &args.project) {
        (Some(db), Some(project)) => Some(Probe::connect(db, project).await?),
        _ => None,
    };
    let (templates, event_bytes) = (payloads.templates, payloads.mean_single_bytes);
    let mean_events = 1.0 + args.batch_share * (args.batch_size as f64 - 1.0);
    let plan = Plan {
        host,
        port,
        key: args.key.clone(),
        connections: args.connections,
        interval: args.rate.map(|rate| mean_events / rate),
        duration: Duration::from_secs_f64(args.duration),
        batch_share: args.batch_share,
        batch_size: args.batch_size as u64,
        request_timeout: Duration::from_secs_f64(args.request_timeout),
        payloads,
    };
    let loadavg_before = sysstat::loadavg();
    let disk_probe = match args.disk_probe() {
        Some((dir, interval)) => Some(
            disk::Probe::start(&dir, interval)
                .with_context(|| format!("starting the disk probe in {}", dir.display()))?,
        ),
        None => None,
    };
    let cpu0 = CpuSnapshot::take();
    let out = load::run(plan).await;
    let cpu1 = CpuSnapshot::take();
    // A probe that failed (a full disk, say) costs its own figures, not the load's.
    let disk = disk_probe.and_then(|p| {
        p.finish()
            .inspect_err(|e| eprintln!("loadgen: the disk probe failed: {e}"))
            .ok()
    });
    let load_secs = out.elapsed.as_secs_f64();
    let drain = match &probe {
        Some(p) => Some(p.wait(out.events_accepted, args.drain_timeout()).await?),
        None => None,
    };
    let cpu_during_drain = drain.as_ref().map(|d| {
        let secs =
            d.ms.map(|m| m as f64 / 1000.0)
                .unwrap_or(args.drain_timeout);
        cpu1.until(&CpuSnapshot::take(), secs)
    });
    let h = &out.latency;
    let latency = Latency {
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
        mean_ms: (h.mean() / 10.0).round() / 100.0,
    };
    let end_to_end = drain.as_ref().and_then(|d| {
        d.ms.map(|m| out.events_accepted as f64 / (load_secs + m as f64 / 1000.0))
    });
    Ok(RunResult {
        mode: if args.rate.is_some() {
            "open_loop"
        } else {
            "max_throughput"
        },
        url: args.url.clone(),
        connections: args.connections,
        offered_events_per_sec: args.rate,
        duration_secs: args.duration,
        fingerprints: args.fingerprints,
        payload_bytes: args.payload_bytes,
        templates,
        event_bytes,
        batch_share: args.batch_share,
        batch_size: args.batch_size,
        seed_groups: args.seed_groups,
        requests: out.requests,
        events_sent: out.events_sent,
        events_accepted: out.events_accepted,
        events_rejected: out.events_rejected,
        statuses: out.statuses,
        sample_errors: out.sample_errors,
        load_secs: (load_secs * 1000.0).round() / 1000.0,
        accepted_events_per_sec: (out.events_accepted as f64 / load_secs).floor(),
        latency,
        max_latency_by_second_ms: out.per_second.iter().map(|&(_, m)| ms(m)).collect(),
        start_delay: StartDelay::of(&out.start_delay),
        disk,
        drain,
        end_to_end_events_per_sec: end_to_end.map(f64::floor),
        cpu_during_load: cpu0.until(&cpu1, load_secs),
        cpu_during_drain,
        machine: sysstat::machine(),
        loadavg_before,
        loadavg_after: sysstat::loadavg(),
        stack,
    })
}

/// Each process's CPU time over the load and the drain, in µs per accepted event: the figure to
/// compare between runs whose rates differ, and the one a target rate divides the cores by
/// (20,000 events/s on 2 cores leaves 100 µs per event for all processes together).
pub fn cpu_per_event(
    load: &CpuUse,
    drain: Option<&CpuUse>,
    events: u64,
) -> Option<BTreeMap<String, f64>> {
    if events == 0 {
        return None;
    }
    let mut core_secs: BTreeMap<String, f64> = BTreeMap::new();
    for c in std::iter::once(load).chain(drain) {
        *core_secs.entry("machine".to_string()).or_default() += c.machine_cores * c.seconds;
        for (process, cores) in &c.cores_by_process {
            *core_secs.entry(process.clone()).or_default() += cores * c.seconds;
        }
    }
    Some(
        core_secs
            .into_iter()
            .map(|(process, secs)| (process, secs * 1e6 / events as f64))
            .collect(),
    )
}

/// The summary printed for people (on stderr; stdout carries the JSON line).
pub fn human(r: &RunResult) -> String {
    let mut s = String::new();
    let offered = r
        .offered_events_per_sec
        .map(|x| format!("{x} events/s offered (open loop)"))
        .unwrap_or_else(|| "maximum throughput (closed loop)".to_string());
    let _ = writeln!(
        s,
        "loadgen: {offered}, {} connections, {} s, {} fingerprints, ~{} B events, batch share {} x {}",
        r.connections,
        r.duration_secs,
        r.fingerprints,
        r.payload_bytes,
        r.batch_share,
        r.batch_size
    );
    let _ = writeln!(
        s,
        "  requests {}  events sent {}  accepted {}  rejected in batches {}  statuses {:?}",
        r.requests, r.events_sent, r.events_accepted, r.events_rejected, r.statuses
    );
    for e in &r.sample_errors {
        let _ = writeln!(s, "  error sample: {e}");
    }
    let _ = writeln!(
        s,
        "  accepted {} events/s over {:.3} s",
        r.accepted_events_per_sec, r.load_secs
    );
    let l = &r.latency;
    let _ = writeln!(
        s,
        "  latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p999 {:.3}  max {:.3}  mean {:.3}",
        l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms
    );
    let _ = writeln!(
        s,
        "  max latency per second (ms): {}",
        whole_ms(&r.max_latency_by_second_ms)
    );
    if let Some(d) = &r.start_delay {
        let _ = writeln!(s, "  {}", d.summary());
    }
    if let Some(d) = &r.disk {
        let _ = writeln!(s, "  {}", d.summary());
        let (slow, explained) = d.slow_seconds_explained(&r.max_latency_by_second_ms);
        let _ = writeln!(
            s,
            "  seconds with a request over {} ms: {slow}, of which {explained} had a disk stall in that second or the one before",
            disk::STALL_MS
        );
    }
    match &r.drain {
        Some(d) => match d.ms {
            Some(ms) => {
                let _ = writeln!(
                    s,
                    "  drain: Postgres caught up {ms} ms after the load ({} events, {} groups); end to end {} events/s",
                    d.processed,
                    d.groups,
                    r.end_to_end_events_per_sec.unwrap_or(0.0)
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "  drain: NOT caught up within the limit: {} of {} events in Postgres ({} groups)",
                    d.processed, r.events_accepted, d.groups
                );
            }
        },
        None => {
            let _ = writeln!(
                s,
                "  drain: not measured (needs --database-url and --project)"
            );
        }
    }
    let cpu = |c: &CpuUse| {
        let by: Vec<String> = c
            .cores_by_process
            .iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect();
        format!(
            "machine {:.2} cores over {} s (cpu pressure {}%, io pressure {}%); {}",
            c.machine_cores,
            c.seconds,
            c.cpu_pressure_pct,
            c.io_pressure_pct,
            by.join(", ")
        )
    };
    let _ = writeln!(s, "  cpu during load: {}", cpu(&r.cpu_during_load));
    if let Some(c) = &r.cpu_during_drain {
        let _ = writeln!(s, "  cpu during drain: {}", cpu(c));
    }
    if let Some(per_event) = cpu_per_event(
        &r.cpu_during_load,
        r.cpu_during_drain.as_ref(),
        r.events_accepted,
    ) {
        let by: Vec<String> = per_event
            .iter()
            .map(|(k, v)| format!("{k} {v:.0}"))
            .collect();
        let _ = writeln!(
            s,
            "  µs of cpu per accepted event (load and drain): {}",
            by.join(", ")
        );
    }
    if let Some(st) = &r.stack {
        let mem = |m: &Option<Memory>| {
            m.map(|m| {
                format!(
                    "peak {:.1} MiB, now {:.1} MiB",
                    m.peak_rss_kib as f64 / 1024.0,
                    m.rss_kib as f64 / 1024.0
                )
            })
            .unwrap_or_else(|| "unknown".to_string())
        };
        let _ = writeln!(
            s,
            "  rss: ingest {}; worker {}",
            mem(&st.ingest),
            mem(&st.worker)
        );
        if let (Some(first), Some(last)) = (st.rss_timeline.first(), st.rss_timeline.last()) {
            let peak = |i: usize| st.rss_timeline.iter().map(|x| x[i]).max().unwrap_or(0);
            let _ = writeln!(
                s,
                "  rss over time (MiB, every 5 s): ingest {:.1} at {} s, max {:.1}, {:.1} at {} s; worker {:.1}, max {:.1}, {:.1}",
                first[1] as f64 / 1024.0,
                first[0],
                peak(1) as f64 / 1024.0,
                last[1] as f64 / 1024.0,
                last[0],
                first[2] as f64 / 1024.0,
                peak(2) as f64 / 1024.0,
                last[2] as f64 / 1024.0,
            );
        }
        let w = &st.worker_metrics;
        let i = &st.ingest_metrics;
        let _ = writeln!(
            s,
            "  worker: {} transactions, mean {:.1} events and {:.2} ms each; ingest: {} broker messages, mean {:.1} events and {:.2} ms to confirm each, after a mean {:.2} ms wait for a message to go out",
            w.get("worker_transaction_seconds_count")
                .copied()
                .unwrap_or(0.0),
            StackInfo::mean(w, "worker_batch_events").unwrap_or(0.0),
            StackInfo::mean(w, "worker_transaction_seconds").unwrap_or(0.0) * 1000.0,
            i.get("ingest_publish_batch_events_count")
                .copied()
                .unwrap_or(0.0),
            StackInfo::mean(i, "ingest_publish_batch_events").unwrap_or(0.0),
            StackInfo::mean(i, "ingest_publish_confirm_seconds").unwrap_or(0.0) * 1000.0,
            StackInfo::mean(i, "ingest_publish_wait_seconds").unwrap_or(0.0) * 1000.0,
        );
        const QUANTILES: [(&str, f64); 4] =
            [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)];
        let bounds = |series| {
            let qs = QUANTILES.map(|(_, q)| q);
            bucket_bounds_ms(i, series, &qs).map(|b| {
                let parts: Vec<String> = QUANTILES
                    .iter()
                    .zip(b)
                    .map(|((name, _), ms)| format!("{name} <= {ms}"))
                    .collect();
                parts.join("  ")
            })
        };
        if let Some(handled) = bounds(INGEST_DURATION) {
            let _ = writeln!(
                s,
                "  ingest's own view, ms (its /metrics buckets, whole run): POST /api/errors handled {handled}; broker confirms {}; a request's wait for its message to go out {}",
                bounds(INGEST_CONFIRM).unwrap_or_else(|| "none".to_string()),
                bounds(INGEST_WAIT).unwrap_or_else(|| "none".to_string())
            );
            let within = |bound| {
                share_within(i, INGEST_DURATION, bound)
                    .map_or_else(|| "?".to_string(), |p| format!("{p:.2} %"))
            };
            let _ = writeln!(
                s,
                "  ingest handled within 10 ms: {}, within 50 ms: {} (issue 7: p99 under 10 ms, p999 under 50 ms)",
                within(0.01),
                within(0.05)
            );
        }
        let statements: Vec<String> = w
            .iter()
            .filter_map(|(series, sum)| {
                let labels = series.strip_prefix("worker_statement_seconds_sum")?;
                let count = w.get(&format!("worker_statement_seconds_count{labels}"))?;
                let name = labels.split('"').nth(1).unwrap_or(labels);
                (*count > 0.0).then(|| format!("{name} {:.2}", sum / count * 1000.0))
            })
            .collect();
        if !statements.is_empty() {
            let _ = writeln!(
                s,
                "  worker statements, mean ms each: {}",
                statements.join(", ")
            );
        }
    }
    let _ = write!(
        s,
        "  machine: {}; load average before {} after {}",
        r.machine, r.loadavg_before, r.loadavg_after
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(seconds: f64, machine: f64, by: &[(&str, f64)]) -> CpuUse {
        CpuUse {
            seconds,
            machine_cores: machine,
            cores_by_process: by.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            cpu_pressure_pct: 0.0,
            io_pressure_pct: 0.0,
        }
    }

    #[test]
    fn start_delay_counts_the_requests_that_waited_for_a_connection() {
        let mut h = load::new_histogram();
        // 97 taken up on time (the timer's own lateness), one at the threshold, two waiting.
        for _ in 0..97 {
            h.record(300).unwrap();
        }
        h.record(LATE_MS * 1000).unwrap();
        h.record(5_000).unwrap();
        h.record(40_000).unwrap();
        let d = StartDelay::of(&h).unwrap();
        assert!((d.late_share - 0.02).abs() < 1e-12, "{d:?}");
        assert!((d.p50_ms - 0.3).abs() < 0.001, "{d:?}");
        assert!((d.p99_ms - 5.0).abs() < 0.01, "{d:?}");
        assert!((d.max_ms - 40.0).abs() < 0.05, "{d:?}");
        assert!(d.summary().contains("2.00 % started over 2 ms late"));
        assert!(d.summary().contains("note: those requests went out late"));

        let mut on_time = load::new_histogram();
        for _ in 0..1000 {
            on_time.record(900).unwrap();
        }
        let d = StartDelay::of(&on_time).unwrap();
        assert_eq!(d.late_share, 0.0);
        assert!(!d.summary().contains("note"));
        assert_eq!(StartDelay::of(&load::new_histogram()), None);
    }

    #[test]
    fn bucket_bounds_are_read_off_cumulative_counts() {
        let series = |le: &str| format!("{INGEST_DURATION}le=\"{le}\"}}");
        let mut m = BTreeMap::new();
        // 1,000 requests: 900 within 2.5 ms, 990 within 5 ms, 999 within 10 ms, one slower.
        for (le, count) in [
            ("0.001", 0.0),
            ("0.0025", 900.0),
            ("0.005", 990.0),
            ("0.01", 999.0),
        ] {
            m.insert(series(le), count);
        }
        m.insert(series("+Inf"), 1000.0);
        // Another route's buckets are not read.
        m.insert(
            "http_request_duration_seconds_bucket{route=\"/api/errors/batch\",le=\"0.001\"}"
                .to_string(),
            1000.0,
        );
        let got = bucket_bounds_ms(&m, INGEST_DURATION, &[0.5, 0.9, 0.99, 0.999, 1.0]).unwrap();
        assert_eq!(got, [2.5, 2.5, 5.0, 10.0, f64::INFINITY]);
        assert_eq!(bucket_bounds_ms(&m, INGEST_CONFIRM, &[0.5]), None);
        // 999 of 1,000 within 10 ms; 5 ms is 99 %; 7 ms is not a bucket; nothing confirmed.
        assert_eq!(share_within(&m, INGEST_DURATION, 0.01), Some(99.9));
        assert_eq!(share_within(&m, INGEST_DURATION, 0.005), Some(99.0));
        assert_eq!(share_within(&m, INGEST_DURATION, 0.007), None);
        assert_eq!(share_within(&m, INGEST_CONFIRM, 0.01), None);
    }

    #[test]
    fn cpu_per_event_adds_the_drain_to_the_load_and_divides_by_the_events() {
        let load = usage(20.0, 1.8, &[("ingest", 0.5), ("postgres", 0.4)]);
        let drain = usage(2.0, 0.6, &[("postgres", 0.5), ("worker", 0.1)]);
        let per_event = cpu_per_event(&load, Some(&drain), 100_000).unwrap();
        // ingest: 0.5 cores x 20 s = 10 core-s over 100,000 events = 100 µs each.
        assert!((per_event["ingest"] - 100.0).abs() < 1e-9);
        // postgres: 0.4 x 20 + 0.5 x 2 = 9 core-s: 90 µs.
        assert!((per_event["postgres"] - 90.0).abs() < 1e-9);
        // worker worked only in the drain: 0.2 core-s: 2 µs.
        assert!((per_event["worker"] - 2.0).abs() < 1e-9);
        // machine: 36 + 1.2 = 37.2 core-s: 372 µs.
        assert!((per_event["machine"] - 372.0).abs() < 1e-9);
        assert!(cpu_per_event(&load, None, 0).is_none());
    }
}
