//! What the machine says: how busy the server and the whole machine were
//! over an interval, the kernel's TCP memory and counters, and TIME_WAIT
//! sockets.

use std::collections::BTreeMap;

use keayl_bench::procfs::{CpuSample, SystemCpu};

use crate::server::Server;

/// Server CPU (% of one core), the whole machine busy (% of one core ×
/// cores) and steal (%), over an interval.
pub(crate) type CpuUse = (Option<f64>, Option<f64>, Option<f64>);

/// How busy the machine and the server were over an interval (the machine
/// is shared: other load shows here).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuWatch {
    server: Option<CpuSample>,
    system: Option<SystemCpu>,
}

impl CpuWatch {
    pub(crate) fn start(server: &Server) -> Self {
        CpuWatch {
            server: server.cpu(),
            system: SystemCpu::take(),
        }
    }

    /// (server % of one core, machine busy % of one core × cores, steal %).
    pub(crate) fn read(&self, server: &Server) -> CpuUse {
        let srv = self
            .server
            .and_then(|s| server.pid.and_then(|p| s.percent_since(p)));
        let sys = self.system.and_then(|s| s.busy_since());
        (srv, sys.map(|s| s.0), sys.map(|s| s.1))
    }
}

pub(crate) fn cpu_line(label: &str, cpu: CpuUse) -> String {
    let f = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.0} %"));
    format!(
        "{label}: server CPU {} of one core; whole machine busy {} (of {} cores × 100 %), steal {}",
        f(cpu.0),
        f(cpu.1),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        f(cpu.2)
    )
}

/// TIME_WAIT sockets involving `port` on this machine (IPv4), from
/// `/proc/net/tcp`: (server side, client side).
pub(crate) fn time_wait(port: u16) -> (usize, usize) {
    let Ok(tcp) = std::fs::read_to_string("/proc/net/tcp") else {
        return (0, 0);
    };
    let port_hex = format!(":{port:04X}");
    let (mut server, mut client) = (0, 0);
    for line in tcp.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[3] != "06" {
            continue;
        }
        if f[1].ends_with(&port_hex) {
            server += 1;
        } else if f[2].ends_with(&port_hex) {
            client += 1;
        }
    }
    (server, client)
}

/// The kernel's TCP memory (all sockets, `/proc/net/sockstat`, pages) and
/// counters that show memory pressure and its effects
/// (`/proc/net/netstat`, `/proc/net/snmp`).
#[derive(Debug, Default, Clone)]
pub(crate) struct KernelTcp {
    pub(crate) mem_pages: Option<u64>,
    counters: BTreeMap<String, u64>,
}

const KERNEL_COUNTERS: &[&str] = &[
    "TCPMemoryPressures",
    "TCPRcvQDrop",
    "PruneCalled",
    "RcvPruned",
    "TCPRcvCollapsed",
    "TCPOFODrop",
    "RetransSegs",
    "TCPTimeouts",
    "ListenOverflows",
    "ListenDrops",
];

impl KernelTcp {
    pub(crate) fn read() -> Self {
        let mem_pages = std::fs::read_to_string("/proc/net/sockstat")
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("TCP:"))?;
                let mut it = line.split_whitespace();
                while let Some(w) = it.next() {
                    if w == "mem" {
                        return it.next()?.parse().ok();
                    }
                }
                None
            });
        let mut counters = BTreeMap::new();
        for file in ["/proc/net/netstat", "/proc/net/snmp"] {
            let Ok(text) = std::fs::read_to_string(file) else {
                continue;
            };
            let lines: Vec<&str> = text.lines().collect();
            for pair in lines.chunks(2) {
                let [head, values] = pair else { continue };
                for (k, v) in head
                    .split_whitespace()
                    .zip(values.split_whitespace())
                    .skip(1)
                {
                    if KERNEL_COUNTERS.contains(&k)
                        && let Ok(v) = v.parse()
                    {
                        counters.insert(k.to_owned(), v);
                    }
                }
            }
        }
        KernelTcp {
            mem_pages,
            counters,
        }
    }

    pub(crate) fn delta(&self, later: &KernelTcp) -> BTreeMap<String, u64> {
        later
            .counters
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.saturating_sub(self.counters.get(k).copied().unwrap_or(0)),
                )
            })
            .collect()
    }

    /// `tcp_mem` pressure and max thresholds, MiB.
    pub(crate) fn limits_mib() -> Option<(f64, f64)> {
        let s = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_mem").ok()?;
        let v: Vec<f64> = s
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        Some((*v.get(1)? * 4096.0 / MIB, *v.get(2)? * 4096.0 / MIB))
    }
}

pub(crate) const MIB: f64 = 1024.0 * 1024.0;

pub(crate) fn delta_line(d: &BTreeMap<String, u64>) -> String {
    d.iter()
        .map(|(k, v)| format!("{k} +{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
