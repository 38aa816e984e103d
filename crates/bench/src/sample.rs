//! Resident memory and CPU time of processes, read from /proc.

use std::{collections::HashMap, time::Duration};

use nix::unistd::{SysconfVar, sysconf};
use tokio::{sync::watch, task::JoinHandle, time::Instant};

/// How often memory is looked at while a phase runs.
const EVERY: Duration = Duration::from_millis(200);

/// One look at a process.
#[derive(Debug, Clone, Copy)]
struct Reading {
    rss_kib: u64,
    /// User plus system time, in clock ticks.
    cpu_ticks: u64,
}

fn read(pid: u32) -> Option<Reading> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces, hence the
    // last ')'): state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Reading {
        rss_kib,
        cpu_ticks: utime + stime,
    })
}

fn ticks_per_second() -> f64 {
    sysconf(SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |ticks| ticks as f64)
}

/// Busy and total CPU ticks of the whole machine, from /proc/stat.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = cpu
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    let total: u64 = ticks.iter().sum();
    // idle and iowait are the 4th and 5th.
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The key under which the whole machine's CPU use is reported, as a
/// percentage of all its cores.
pub const MACHINE: &str = "machine";

/// What one process used during a phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub rss_max_mib: f64,
    pub rss_end_mib: f64,
    /// Percent of one core, averaged over the phase.
    pub cpu_percent: f64,
}

/// Samples named processes until stopped.
pub struct Sampler {
    stop: watch::Sender<bool>,
    task: JoinHandle<HashMap<String, Usage>>,
}

impl Sampler {
    pub fn start(processes: Vec<(String, u32)>) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let began = Instant::now();
        let first: Vec<Option<Reading>> = processes.iter().map(|(_, pid)| read(*pid)).collect();
        let machine_first = machine_ticks();
        let task = tokio::spawn(async move {
            let mut rss_max: Vec<u64> = first.iter().map(|r| r.map_or(0, |r| r.rss_kib)).collect();
            let mut ticks = tokio::time::interval(EVERY);
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = ticks.tick() => {}
                }
                for (i, (_, pid)) in processes.iter().enumerate() {
                    if let Some(now) = read(*pid) {
                        rss_max[i] = rss_max[i].max(now.rss_kib);
                    }
                }
            }
            let seconds = began.elapsed().as_secs_f64().max(f64::EPSILON);
            let per_second = ticks_per_second();
            let machine = match (machine_first, machine_ticks()) {
                (Some((busy_a, total_a)), Some((busy_b, total_b))) if total_b > total_a => Usage {
                    cpu_percent: (busy_b - busy_a) as f64 / (total_b - total_a) as f64 * 100.0,
                    ..Usage::default()
                },
                _ => Usage::default(),
            };
            let mut usage: HashMap<String, Usage> = processes
                .iter()
                .enumerate()
                .map(|(i, (name, pid))| {
                    let last = read(*pid);
                    let cpu_ticks = match (first[i], last) {
                        (Some(a), Some(b)) => b.cpu_ticks.saturating_sub(a.cpu_ticks),
                        _ => 0,
                    };
                    let end = last.map_or(0, |r| r.rss_kib);
                    let usage = Usage {
                        rss_max_mib: rss_max[i].max(end) as f64 / 1024.0,
                        rss_end_mib: end as f64 / 1024.0,
                        cpu_percent: cpu_ticks as f64 / per_second / seconds * 100.0,
                    };
                    (name.clone(), usage)
                })
                .collect();
            usage.insert(MACHINE.to_owned(), machine);
            usage
        });
        Self { stop, task }
    }

    pub async fn finish(self) -> HashMap<String, Usage> {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn this_process_has_memory_and_spends_cpu() {
        let me = std::process::id();
        let sampler = Sampler::start(vec![("me".to_owned(), me)]);
        // Burn some CPU so the counter moves.
        let began = std::time::Instant::now();
        let mut x = 0u64;
        while began.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let usage = sampler.finish().await;
        let me = usage.get("me").expect("sampled");
        assert!(me.rss_max_mib > 1.0, "{me:?}");
        assert!(me.cpu_percent > 10.0, "{me:?}");
    }
}
