//! Where the machine's CPU went during a run, and how much memory the services held, read from
//! `/proc` (Linux only; elsewhere the figures are simply absent). CPU time is grouped by process
//! name, so the report can say whether Postgres, RabbitMQ, ingest or the worker was the busy one.

use serde::Serialize;
use std::collections::BTreeMap;

/// Process names reported on their own; `other` is the machine's busy time minus theirs.
const FAMILIES: &[&str] = &[
    "ingest",
    "worker",
    "postgres",
    "beam.smp",
    "redis-server",
    "loadgen",
];

/// Clock ticks per second of `/proc/*/stat` times (USER_HZ, 100 on every mainstream Linux).
const TICKS: f64 = 100.0;

/// CPU ticks so far: the whole machine (busy and total) and per process family.
#[derive(Debug, Clone, Default)]
pub struct CpuSnapshot {
    /// Microseconds in which some task waited for a CPU / for I/O (`/proc/pressure`, PSI).
    cpu_stall_us: u64,
    io_stall_us: u64,
    busy: u64,
    total: u64,
    families: BTreeMap<String, u64>,
}

/// CPU used between two snapshots, in cores (1.0 = one core fully busy).
#[derive(Debug, Clone, Serialize)]
pub struct CpuUse {
    pub seconds: f64,
    /// Whole machine, in cores, including processes that came and went in between.
    pub machine_cores: f64,
    pub cores_by_process: BTreeMap<String, f64>,
    /// Share of the time in which at least one runnable task waited for a CPU (PSI `some`):
    /// near 100 means the machine had more work than cores.
    pub cpu_pressure_pct: f64,
    /// Share of the time in which at least one task waited for I/O (PSI `some`).
    pub io_pressure_pct: f64,
}

/// The `some ... total=` microseconds of a `/proc/pressure` file.
fn stall_us(path: &str) -> u64 {
    read(path)
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("some"))
                .and_then(|l| l.rsplit("total=").next())
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Name and utime+stime of one `/proc/<pid>/stat` line (the name may contain spaces).
fn parse_stat(text: &str) -> Option<(String, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text[open + 1..close].to_string();
    let fields: Vec<&str> = text[close + 2..].split(' ').collect();
    // After the name: state is field 0, utime field 11, stime field 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

impl CpuSnapshot {
    pub fn take() -> Self {
        let mut snap = CpuSnapshot {
            cpu_stall_us: stall_us("/proc/pressure/cpu"),
            io_stall_us: stall_us("/proc/pressure/io"),
            ..CpuSnapshot::default()
        };
        if let Some(stat) = read("/proc/stat")
            && let Some(line) = stat.lines().next()
        {
            let v: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal ...
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            snap.total = v.iter().take(8).sum();
            snap.busy = snap.total.saturating_sub(idle);
        }
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return snap;
        };
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let Some((comm, ticks)) = read(&format!("/proc/{pid}/stat"))
                .as_deref()
                .and_then(parse_stat)
            else {
                continue;
            };
            if FAMILIES.contains(&comm.as_str()) {
                *snap.families.entry(comm).or_default() += ticks;
            }
        }
        snap
    }

    /// CPU used from `self` to `later`, over `seconds` of wall time.
    pub fn until(&self, later: &CpuSnapshot, seconds: f64) -> CpuUse {
        let cores = |ticks: u64| {
            if seconds > 0.0 {
                (ticks as f64 / TICKS / seconds * 100.0).round() / 100.0
            } else {
                0.0
            }
        };
        let pct = |us: u64| {
            if seconds > 0.0 {
                (us as f64 / 1e6 / seconds * 1000.0).round() / 10.0
            } else {
                0.0
            }
        };
        let mut by = BTreeMap::new();
        for name in FAMILIES {
            let before = self.families.get(*name).copied().unwrap_or(0);
            let after = later.families.get(*name).copied().unwrap_or(0);
            // A process that started in between counts from zero.
            by.insert(name.to_string(), cores(after.saturating_sub(before)));
        }
        // /proc/stat counts ticks of all CPUs; divide by the wall time only.
        let machine = cores(later.busy.saturating_sub(self.busy));
        // Everything else, including processes that came and went in between (compilers), which
        // per-process deltas would miss.
        let named: f64 = by.values().sum();
        by.insert(
            "other".to_string(),
            ((machine - named).max(0.0) * 100.0).round() / 100.0,
        );
        CpuUse {
            seconds: (seconds * 100.0).round() / 100.0,
            machine_cores: machine,
            cores_by_process: by,
            cpu_pressure_pct: pct(later.cpu_stall_us.saturating_sub(self.cpu_stall_us)),
            io_pressure_pct: pct(later.io_stall_us.saturating_sub(self.io_stall_us)),
        }
    }
}

/// The three load averages of `/proc/loadavg`.
pub fn loadavg() -> String {
    read("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Peak and current resident memory of a process, in KiB (`VmHWM`, `VmRSS`).
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Memory {
    pub peak_rss_kib: u64,
    pub rss_kib: u64,
}

pub fn memory(pid: u32) -> Option<Memory> {
    let status = read(&format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some(Memory {
        peak_rss_kib: field("VmHWM:")?,
        rss_kib: field("VmRSS:")?,
    })
}

/// Cores and total memory of the machine, for the record.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_kib: u64 = read("/proc/meminfo")
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    format!("{cores} cores, {:.1} GiB RAM", mem_kib as f64 / 1048576.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_with_spaces_in_the_name_parses() {
        let line = "42 (tokio runtime w) S 1 42 42 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 4 0";
        assert_eq!(parse_stat(line), Some(("tokio runtime w".to_string(), 280)));
    }
}
