//! What the kernel says about the processes under test: CPU time from /proc/<pid>/stat,
//! machine busy time from /proc/stat, memory from /proc/<pid>/status and context switches
//! from each thread's status.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Clock ticks per second of /proc times (USER_HZ; 100 on every Linux this runs on).
const TICKS_PER_SEC: u64 = 100;

/// The RabbitMQ node: a `beam.smp` process whose command line mentions rabbit.
pub fn find_broker_pid() -> Option<u32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "beam.smp" {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("rabbit") {
            return Some(pid);
        }
    }
    None
}

/// utime + stime of a process, in microseconds.
pub fn cpu_us(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 1_000_000 / TICKS_PER_SEC)
}

/// Context switches (voluntary and not) of all of a process's threads so far. A thread that
/// ended between two readings takes its count with it: the bridge's threads live as long as
/// it does.
pub fn context_switches(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut sum = 0;
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        sum += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Some(sum)
}

/// (busy, total) jiffies of the whole machine.
fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// A `kB` line of /proc/<pid>/status (`VmRSS:`, `VmHWM:`), in KiB.
pub fn read_status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

pub struct ProcWatch {
    pub bridge: u32,
    pub broker: Option<u32>,
}

impl ProcWatch {
    pub fn new(bridge: u32, broker: Option<u32>) -> Self {
        Self { bridge, broker }
    }

    /// Sample the bridge's VmRSS every 50 ms until stopped; the maximum seen.
    pub fn start_rss_sampler(&mut self) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(0));
        let (pid, s, m) = (self.bridge, Arc::clone(&stop), Arc::clone(&max));
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if let Some(kib) = read_status_kib(pid, "VmRSS:") {
                    m.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        RssSampler { stop, max, task }
    }
}

pub struct RssSampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    /// Peak VmRSS in KiB.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.max.load(Ordering::Relaxed)
    }
}

pub struct CpuSnapshot {
    bridge: Option<u64>,
    bridge_switches: Option<u64>,
    broker: Option<u64>,
    this: u64,
    machine: (u64, u64),
}

/// CPU spent during a phase, in microseconds, and the machine's busy fraction.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuDelta {
    pub bridge_us: Option<u64>,
    /// The bridge's context switches, all threads.
    pub bridge_switches: Option<u64>,
    pub broker_us: Option<u64>,
    pub self_us: u64,
    pub machine_busy: f64,
    phases: u32,
}

impl CpuDelta {
    /// Accumulate another phase (busy fraction averaged over phases).
    pub fn add(&mut self, o: CpuDelta) {
        let add = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.bridge_us = add(self.bridge_us, o.bridge_us);
        self.bridge_switches = add(self.bridge_switches, o.bridge_switches);
        self.broker_us = add(self.broker_us, o.broker_us);
        self.self_us += o.self_us;
        self.phases += 1;
        self.machine_busy += (o.machine_busy - self.machine_busy) / self.phases as f64;
    }
}

impl CpuSnapshot {
    pub fn take(w: &ProcWatch) -> Self {
        Self {
            bridge: cpu_us(&w.bridge.to_string()),
            bridge_switches: context_switches(w.bridge),
            broker: w.broker.and_then(|p| cpu_us(&p.to_string())),
            this: cpu_us("self").unwrap_or(0),
            machine: machine_jiffies().unwrap_or((0, 0)),
        }
    }

    pub fn since(&self, w: &ProcWatch) -> CpuDelta {
        let now = Self::take(w);
        let sub = |a: Option<u64>, b: Option<u64>| Some(a?.saturating_sub(b?));
        let busy = now.machine.0.saturating_sub(self.machine.0) as f64;
        let total = now.machine.1.saturating_sub(self.machine.1) as f64;
        CpuDelta {
            bridge_us: sub(now.bridge, self.bridge),
            bridge_switches: sub(now.bridge_switches, self.bridge_switches),
            broker_us: sub(now.broker, self.broker),
            self_us: now.this.saturating_sub(self.this),
            machine_busy: if total > 0.0 { busy / total } else { 0.0 },
            phases: 1,
        }
    }
}
