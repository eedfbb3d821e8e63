//! Background watchers of the demo while an attack runs: `/health` probes
//! every second, and peaks of its RSS (and of gauges of `/metrics`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use keayl_bench::procfs;
use keayl_bench::stats::median;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::util::{first_of, ms, opt, r1, short};
use crate::wire::{health_once, metrics};

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ProbeStats {
    probes: usize,
    ok: usize,
    failed: usize,
    median_ms: Option<f64>,
    max_ms: Option<f64>,
    /// The first few failures, with the time since probing started.
    failures: Vec<String>,
}

impl ProbeStats {
    pub(crate) fn all_ok(&self) -> bool {
        self.probes > 0 && self.failed == 0
    }

    pub(crate) fn line(&self) -> String {
        format!(
            "{}/{} answered, median {}, max {}{}",
            self.ok,
            self.probes,
            opt(self.median_ms, " ms"),
            opt(self.max_ms, " ms"),
            first_of(self.failures.first().map(String::as_str))
        )
    }
}

/// `GET /health` on a new connection every second.
#[derive(Debug)]
pub(crate) struct Prober {
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<(f64, Result<f64, String>)>>,
}

impl Prober {
    pub(crate) fn start(addr: SocketAddr) -> Prober {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut probes = JoinSet::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                let at = r1(start.elapsed().as_secs_f64());
                probes.spawn(async move {
                    (at, health_once(addr).await.map(ms).map_err(|e| short(&e)))
                });
            }
            let mut results = probes.join_all().await;
            results.sort_by(|a, b| a.0.total_cmp(&b.0));
            results
        });
        Prober { stop, task }
    }

    pub(crate) async fn finish(self) -> ProbeStats {
        let _ = self.stop.send(true);
        let results = self.task.await.unwrap_or_default();
        let lat: Vec<f64> = results
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok().copied())
            .collect();
        let failures: Vec<String> = results
            .iter()
            .filter_map(|(at, r)| r.as_ref().err().map(|e| format!("at {at} s: {e}")))
            .collect();
        ProbeStats {
            probes: results.len(),
            ok: lat.len(),
            failed: failures.len(),
            median_ms: median(&lat).map(r1),
            max_ms: lat.iter().copied().reduce(f64::max),
            failures: failures.into_iter().take(5).collect(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Peaks {
    pub(crate) rss_kib: Option<u64>,
    pub(crate) gauges: BTreeMap<String, f64>,
    pub(crate) metric_failures: usize,
}

/// Samples the demo's RSS (and, optionally, gauges of /metrics) for peaks.
#[derive(Debug)]
pub(crate) struct Sampler {
    stop: watch::Sender<bool>,
    task: JoinHandle<Peaks>,
}

impl Sampler {
    pub(crate) fn rss(pid: u32) -> Sampler {
        Sampler::start(pid, None, &[])
    }

    pub(crate) fn start(
        pid: u32,
        addr: Option<SocketAddr>,
        gauges: &'static [&'static str],
    ) -> Sampler {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut peaks = Peaks::default();
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                peaks.rss_kib = peaks.rss_kib.max(procfs::rss_kib(pid));
                let Some(addr) = addr else { continue };
                match metrics(addr).await {
                    Ok(m) => {
                        for (name, v) in m.iter().filter(|(k, _)| gauges.contains(&k.as_str())) {
                            let peak = peaks.gauges.entry(name.clone()).or_insert(*v);
                            *peak = peak.max(*v);
                        }
                    }
                    Err(_) => peaks.metric_failures += 1,
                }
            }
            peaks
        });
        Sampler { stop, task }
    }

    pub(crate) async fn finish(self) -> Peaks {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}
