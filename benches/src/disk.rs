//! The disk's own sync latency, measured beside the load. Ingest answers an event only once the
//! broker has it on disk (publisher confirms wait for RabbitMQ's fsync), and the worker commits
//! to Postgres the same way, so while the disk takes 200 ms to complete one sync every request in
//! flight waits as long: no software above it can answer faster and keep its promise. Without
//! this figure beside the requests' latency, a tail set by the disk reads like one set by ingest.
//!
//! The probe is one thread that writes 4 KiB and `fdatasync`s it every `interval` (10 ms by
//! default: a light load, 400 KiB/s), in a file preallocated on the filesystem under test so that
//! each sync flushes data only, as a database's or broker's log does. It reports the syncs'
//! latency and their maximum in each second since the probe started (aligned with the load's own
//! per-second maxima, which start with it).

use crate::{
    load::new_histogram,
    report::{ms, whole_ms},
};
use serde::Serialize;
use std::{
    fs::{File, OpenOptions},
    io::Write,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Size of each write: one filesystem block.
const BLOCK: usize = 4096;
/// The file is this many blocks, written in turn, so syncs never extend it.
const BLOCKS: u64 = 256;
/// A second whose slowest sync exceeds this is counted as a stall (five times the 10 ms target
/// p99 of issue 7: a request in flight then cannot meet it).
pub const STALL_MS: f64 = 50.0;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DiskReport {
    /// The directory the probe file was in.
    pub dir: String,
    pub interval_ms: u64,
    pub syncs: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Slowest sync (write + `fdatasync`) begun in each second since the probe started.
    pub max_by_second_ms: Vec<f64>,
    /// Seconds whose slowest sync took longer than [`STALL_MS`].
    pub stalled_seconds: usize,
}

impl DiskReport {
    /// The report of syncs given as `(second since start, microseconds)`.
    pub fn from_samples(dir: &str, interval: Duration, samples: &[(usize, u64)]) -> Self {
        let mut histogram = new_histogram();
        let mut by_second: Vec<u64> = Vec::new();
        for &(second, micros) in samples {
            histogram.saturating_record(micros.max(1));
            if by_second.len() <= second {
                by_second.resize(second + 1, 0);
            }
            by_second[second] = by_second[second].max(micros);
        }
        let (p50, p99, max) = if samples.is_empty() {
            (0.0, 0.0, 0.0)
        } else {
            (
                ms(histogram.value_at_quantile(0.50)),
                ms(histogram.value_at_quantile(0.99)),
                ms(histogram.max()),
            )
        };
        let max_by_second_ms: Vec<f64> = by_second.into_iter().map(ms).collect();
        Self {
            dir: dir.to_string(),
            interval_ms: interval.as_millis() as u64,
            syncs: samples.len() as u64,
            p50_ms: p50,
            p99_ms: p99,
            max_ms: max,
            stalled_seconds: max_by_second_ms.iter().filter(|&&m| m > STALL_MS).count(),
            max_by_second_ms,
        }
    }

    /// Of the seconds of the load whose slowest request took over [`STALL_MS`] (`request_max_ms`,
    /// per second), how many had a disk stall in the same or the previous second (a sync stuck
    /// late in one second holds the requests due early in the next): `(slow, with a stall)`.
    pub fn slow_seconds_explained(&self, request_max_ms: &[f64]) -> (usize, usize) {
        let stalled = |second: usize| {
            self.max_by_second_ms
                .get(second)
                .is_some_and(|&m| m > STALL_MS)
        };
        let slow = request_max_ms
            .iter()
            .enumerate()
            .filter(|&(_, &m)| m > STALL_MS);
        slow.fold((0, 0), |(n, explained), (s, _)| {
            let stall = stalled(s) || (s > 0 && stalled(s - 1));
            (n + 1, explained + usize::from(stall))
        })
    }

    /// One line for the human summary.
    pub fn summary(&self) -> String {
        format!(
            "disk: {} syncs of 4 KiB (fdatasync, every {} ms, in {}): p50 {:.3} ms  p99 {:.3}  max {:.3}; \
             seconds with a sync over {STALL_MS} ms: {} of {}\n  slowest sync per second (ms): {}",
            self.syncs,
            self.interval_ms,
            self.dir,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.stalled_seconds,
            self.max_by_second_ms.len(),
            whole_ms(&self.max_by_second_ms)
        )
    }
}

/// A running probe; [`Probe::finish`] stops it and returns the report.
pub struct Probe {
    dir: String,
    path: PathBuf,
    interval: Duration,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<std::io::Result<Vec<(usize, u64)>>>,
}

impl Probe {
    /// Preallocates the probe file in `dir` (synced, so the probe's syncs flush data only) and
    /// starts syncing every `interval`.
    pub fn start(dir: &Path, interval: Duration) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!(".loadgen-disk-probe-{}", std::process::id()));
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        file.write_all(&vec![0u8; BLOCK * BLOCKS as usize])?;
        file.sync_all()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("disk-probe".into())
                .spawn(move || sync_loop(&file, interval, &stop))?
        };
        Ok(Self {
            dir: dir.display().to_string(),
            path,
            interval,
            stop,
            thread,
        })
    }

    /// Stops the probe, removes its file and reports; an I/O error of the probe is returned as such.
    pub fn finish(self) -> std::io::Result<DiskReport> {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self
            .thread
            .join()
            .map_err(|_| std::io::Error::other("the disk probe thread panicked"))?;
        let _ = std::fs::remove_file(&self.path);
        Ok(DiskReport::from_samples(
            &self.dir,
            self.interval,
            &samples?,
        ))
    }
}

/// Writes one block and syncs it every `interval` (measured from each sync's start, so a slow
/// sync is followed at once by the next) until `stop`.
fn sync_loop(
    file: &File,
    interval: Duration,
    stop: &AtomicBool,
) -> std::io::Result<Vec<(usize, u64)>> {
    let block = [0x5au8; BLOCK];
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let began = Instant::now();
        file.write_all_at(&block, (n % BLOCKS) * BLOCK as u64)?;
        file.sync_data()?;
        let took = began.elapsed();
        samples.push((
            began.duration_since(start).as_secs() as usize,
            took.as_micros() as u64,
        ));
        n += 1;
        if let Some(rest) = interval.checked_sub(took) {
            std::thread::sleep(rest);
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_takes_quantiles_and_the_slowest_sync_of_each_second() {
        let samples = [(0, 500), (0, 1_500), (1, 80_000), (1, 400), (3, 2_000)];
        let r = DiskReport::from_samples("/d", Duration::from_millis(10), &samples);
        assert_eq!(r.syncs, 5);
        assert_eq!(r.max_by_second_ms, vec![1.5, 80.0, 0.0, 2.0]);
        assert_eq!(r.stalled_seconds, 1, "only second 1 has a sync over 50 ms");
        assert!((r.max_ms - 80.0).abs() < 0.1, "{}", r.max_ms);
        assert!((r.p50_ms - 1.5).abs() < 0.01, "{}", r.p50_ms);
        assert!(
            r.summary()
                .contains("seconds with a sync over 50 ms: 1 of 4")
        );
    }

    #[test]
    fn slow_seconds_are_matched_with_stalls_in_the_same_or_previous_second() {
        let samples = [(0, 1_000), (1, 90_000), (2, 1_000), (3, 1_000), (4, 1_000)];
        let r = DiskReport::from_samples("/d", Duration::from_millis(10), &samples);
        // Slow: 1 (stall there), 2 (stall the second before), 4 (none).
        let requests = [10.0, 300.0, 120.0, 20.0, 80.0];
        assert_eq!(r.slow_seconds_explained(&requests), (3, 2));
        assert_eq!(r.slow_seconds_explained(&[]), (0, 0));
    }

    #[test]
    fn no_samples_report_zeros_not_garbage() {
        let r = DiskReport::from_samples("/d", Duration::from_millis(10), &[]);
        assert_eq!((r.syncs, r.p99_ms, r.max_ms), (0, 0.0, 0.0));
        assert!(r.max_by_second_ms.is_empty());
    }

    #[test]
    fn the_probe_syncs_a_real_file_and_removes_it() {
        let dir = std::env::temp_dir().join(format!("loadgen-probe-test-{}", std::process::id()));
        let probe = Probe::start(&dir, Duration::from_millis(5)).unwrap();
        let file = probe.path.clone();
        assert!(file.exists());
        std::thread::sleep(Duration::from_millis(200));
        let r = probe.finish().unwrap();
        assert!(r.syncs >= 2, "{} syncs in 200 ms", r.syncs);
        assert!(r.max_ms > 0.0 && r.p50_ms <= r.max_ms);
        assert_eq!(r.max_by_second_ms.len(), 1);
        assert!(!file.exists(), "the probe file is removed");
        let _ = std::fs::remove_dir(&dir);
    }
}
