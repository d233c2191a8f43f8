//! Where a load phase's CPU went: the machine's busy time (`/proc/stat`) and the share of each
//! process that takes part (`/proc/<pid>/stat`), and inside the bench process, of the trivial
//! handler's threads and the load generator's (`/proc/self/task/*/stat`). Linux only; elsewhere
//! every figure is zero.
//!
//! This is the benchmark's own profile of a phase: divided by the phase's requests/s, it says how
//! many microseconds of CPU one request costs in each part, and whether the cores were saturated.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The parts CPU is attributed to, in report order.
pub const PARTS: [&str; 6] =
    ["sso server", "load generator", "trivial handler", "redis-server", "postgres", "redis-benchmark / pgbench"];

/// The name of the trivial handler's threads (so their CPU is told from the load generator's).
pub const TRIVIAL_THREAD: &str = "trivial-srv";

/// Clock ticks per second of `/proc`'s CPU times (`USER_HZ`, 100 on Linux).
const TICKS: f64 = 100.0;

/// Counters read at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    at: Instant,
    busy: u64,
    parts: BTreeMap<&'static str, u64>,
}

/// CPU used between two snapshots, or summed over several phases.
#[derive(Debug, Clone, Default)]
pub struct Use {
    /// Wall-clock time.
    pub wall: Duration,
    /// CPU-seconds the whole machine was busy (user, system, interrupts, steal).
    pub busy_s: f64,
    /// CPU-seconds per part (see [`PARTS`]).
    pub parts: BTreeMap<&'static str, f64>,
}

/// User + system ticks from a `stat` line (fields 14 and 15; 12 and 13 after the name), and
/// the waited-for children's (16 and 17).
fn ticks(stat: &str) -> Option<(String, u64, u64)> {
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_owned();
    let f: Vec<u64> = rest.split_whitespace().skip(11).take(4).filter_map(|v| v.parse().ok()).collect();
    match f.as_slice() {
        [u, s, cu, cs] => Some((name, u + s, cu + cs)),
        _ => None,
    }
}

fn machine_busy() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else { return 0 };
    // cpu user nice system idle iowait irq softirq steal …
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    [0usize, 1, 2, 5, 6, 7].iter().filter_map(|i| v.get(*i)).sum()
}

impl Snapshot {
    /// Reads the counters now.
    pub fn take() -> Snapshot {
        let mut parts: BTreeMap<&'static str, u64> = BTreeMap::new();
        let me = std::process::id();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            if pid == me {
                continue;
            }
            let Some((name, t, _)) = std::fs::read_to_string(entry.path().join("stat")).ok().as_deref().and_then(ticks)
            else {
                continue;
            };
            let part = match name.as_str() {
                "sso" => "sso server",
                "redis-server" => "redis-server",
                "postgres" => "postgres",
                _ => continue,
            };
            *parts.entry(part).or_default() += t;
        }
        for entry in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
            let Some((name, t, _)) = std::fs::read_to_string(entry.path().join("stat")).ok().as_deref().and_then(ticks)
            else {
                continue;
            };
            let part = if name.starts_with(TRIVIAL_THREAD) { "trivial handler" } else { "load generator" };
            *parts.entry(part).or_default() += t;
        }
        if let Some((_, _, children)) = std::fs::read_to_string("/proc/self/stat").ok().as_deref().and_then(ticks) {
            *parts.entry("redis-benchmark / pgbench").or_default() += children;
        }
        Snapshot { at: Instant::now(), busy: machine_busy(), parts }
    }

    /// What was used since `self`. A process that started or ended in between counts only for
    /// the time it was seen (an ended one's CPU stays in the machine's busy time, as "other").
    pub fn since(&self) -> Use {
        let now = Snapshot::take();
        let parts = PARTS
            .iter()
            .map(|p| {
                let a = self.parts.get(p).copied().unwrap_or(0);
                let b = now.parts.get(p).copied().unwrap_or(0);
                (*p, b.saturating_sub(a) as f64 / TICKS)
            })
            .collect();
        Use { wall: now.at - self.at, busy_s: now.busy.saturating_sub(self.busy) as f64 / TICKS, parts }
    }
}

impl Use {
    /// Adds another phase's use (for a row measured in several slices).
    pub fn add(&mut self, other: &Use) {
        self.wall += other.wall;
        self.busy_s += other.busy_s;
        for (p, s) in &other.parts {
            *self.parts.entry(p).or_default() += s;
        }
    }

    /// Cores busy on average.
    pub fn cores_busy(&self) -> f64 {
        self.busy_s / self.wall.as_secs_f64().max(1e-9)
    }

    /// Microseconds of CPU per operation of a phase that ran at `ops_per_s`, for `part` (or,
    /// with `None`, for everything the machine did).
    pub fn us_per_op(&self, part: Option<&str>, ops_per_s: f64) -> f64 {
        let s = match part {
            Some(p) => self.parts.get(p).copied().unwrap_or(0.0),
            None => self.busy_s,
        };
        self.per_op(s, ops_per_s)
    }

    /// As [`Use::us_per_op`], for the busy time no part accounts for (the kernel's own
    /// threads, ended processes, the rest).
    pub fn other_us_per_op(&self, ops_per_s: f64) -> f64 {
        self.per_op((self.busy_s - self.parts.values().sum::<f64>()).max(0.0), ops_per_s)
    }

    /// `cpu_s` CPU-seconds over this phase's wall time, per operation at `ops_per_s`, in µs.
    fn per_op(&self, cpu_s: f64, ops_per_s: f64) -> f64 {
        cpu_s / self.wall.as_secs_f64().max(1e-9) / ops_per_s.max(1e-9) * 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_with_spaces_in_the_name() {
        let line = "42 (tokio runtime) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 20 0 1 0";
        assert_eq!(ticks(line), Some(("tokio runtime".to_owned(), 23, 27)));
    }

    #[test]
    fn per_op_figures_divide_by_wall_time_and_rate() {
        let mut u = Use { wall: Duration::from_secs(2), busy_s: 4.0, parts: BTreeMap::new() };
        u.parts.insert("sso server", 2.0);
        // 1 core of sso for 1000 ops/s: 1000 µs per op.
        assert!((u.us_per_op(Some("sso server"), 1000.0) - 1000.0).abs() < 1e-6);
        assert!((u.cores_busy() - 2.0).abs() < 1e-9);
        assert!((u.other_us_per_op(1000.0) - 1000.0).abs() < 1e-6);
    }
}
