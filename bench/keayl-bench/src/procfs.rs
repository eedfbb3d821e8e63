//! What `/proc` says about a process: resident memory, CPU time, open-file
//! limit, ephemeral port range. Linux only; every reader returns `None`
//! where `/proc` is not available.

use std::time::{Duration, Instant};

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`;
/// 100 on every mainstream Linux configuration).
pub const CLK_TCK: f64 = 100.0;

/// Resident set size of `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// User plus system CPU time of `pid`, in clock ticks (fields 14 and 15 of
/// `/proc/<pid>/stat`).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it are
    // counted from the closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A CPU-time reading of a process, to compute utilisation over an
/// interval.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    ticks: u64,
    at: Instant,
}

impl CpuSample {
    /// Read `pid`'s CPU time now.
    pub fn take(pid: u32) -> Option<Self> {
        Some(CpuSample {
            ticks: cpu_ticks(pid)?,
            at: Instant::now(),
        })
    }

    /// Percent of one core used by `pid` between `self` and now.
    pub fn percent_since(&self, pid: u32) -> Option<f64> {
        let now = CpuSample::take(pid)?;
        Some(self.percent_to(&now))
    }

    /// Percent of one core used between `self` and `later`.
    pub fn percent_to(&self, later: &CpuSample) -> f64 {
        let secs = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let cpu = later.ticks.saturating_sub(self.ticks) as f64 / CLK_TCK;
        100.0 * cpu / secs
    }

    /// CPU seconds used between `self` and `later`.
    pub fn cpu_between(&self, later: &CpuSample) -> Duration {
        Duration::from_secs_f64(later.ticks.saturating_sub(self.ticks) as f64 / CLK_TCK)
    }
}

/// A reading of the whole machine's CPU time (first line of
/// `/proc/stat`), to tell how busy everything else was during a
/// measurement on a shared machine.
#[derive(Debug, Clone, Copy)]
pub struct SystemCpu {
    busy: u64,
    steal: u64,
    total: u64,
    cores: usize,
}

impl SystemCpu {
    /// Read `/proc/stat` now.
    pub fn take() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let first = stat.lines().next()?;
        let v: Vec<u64> = first
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal [guest guest_nice]
        let total: u64 = v.iter().take(8).sum();
        let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
        let steal = v.get(7).copied().unwrap_or(0);
        let cores = stat
            .lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count()
            .max(1);
        Some(SystemCpu {
            busy: total - idle - steal,
            steal,
            total,
            cores,
        })
    }

    /// CPU used by everything on the machine between `self` and now, in %
    /// of one core (so up to 100 × cores), and the hypervisor's steal time
    /// likewise.
    pub fn busy_since(&self) -> Option<(f64, f64)> {
        let now = SystemCpu::take()?;
        let total = now.total.saturating_sub(self.total).max(1) as f64;
        let scale = 100.0 * self.cores as f64 / total;
        Some((
            now.busy.saturating_sub(self.busy) as f64 * scale,
            now.steal.saturating_sub(self.steal) as f64 * scale,
        ))
    }
}

/// The soft limit on open files of this process (`Max open files` in
/// `/proc/self/limits`); `None` if unknown or unlimited.
pub fn open_files_soft_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Number of file descriptors this process has open now.
pub fn open_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

/// The kernel's ephemeral port range (`ip_local_port_range`).
pub fn ephemeral_ports() -> Option<(u16, u16)> {
    let s = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = s.split_whitespace().map(|p| p.parse().ok());
    Some((it.next()??, it.next()??))
}

/// Check that this process may open `sockets` more files; the error tells
/// the user what to run.
pub fn check_fd_budget(sockets: usize) -> anyhow::Result<()> {
    let Some(limit) = open_files_soft_limit() else {
        return Ok(());
    };
    let in_use = open_fds().unwrap_or(16) as u64;
    let need = sockets as u64 + in_use + 64;
    if need > limit {
        anyhow::bail!(
            "this run needs about {need} open files but the soft limit is {limit}: \
             run `ulimit -n 20000` in this shell first (the hard limit on this machine is \
             20,000 per process), or lower the client count"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(cpu_ticks(pid).is_some());
        assert!(open_files_soft_limit().unwrap() > 0);
        assert!(open_fds().unwrap() > 0);
        let s = CpuSample::take(pid).unwrap();
        assert!(s.percent_since(pid).unwrap() >= 0.0);
        let sys = SystemCpu::take().unwrap();
        let (busy, steal) = sys.busy_since().unwrap();
        assert!(busy >= 0.0 && steal >= 0.0);
    }
}
