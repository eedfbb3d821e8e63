//! Samples of the server's RSS and outbound queue bytes and of the
//! kernel's TCP memory every 250 ms, labelled with the phase running; their
//! maxima per phase.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use crate::machine::{KernelTcp, MIB};
use crate::server::Server;

/// Server RSS and outbound queue bytes, sampled every 250 ms and labelled
/// with the phase running.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Sample {
    phase: u8,
    tcp_mem_pages: Option<u64>,
    rss_kib: Option<u64>,
    queue_bytes: Option<f64>,
}

pub(crate) fn start_sampler(
    server: &Server,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Sample>> {
    let probe = server.probe();
    tokio::spawn(async move {
        let mut out = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let m = probe.metrics().await.ok();
            out.push(Sample {
                phase: phase.load(Ordering::Relaxed),
                rss_kib: probe.rss_kib(),
                queue_bytes: m.and_then(|m| m.get("keayl_outbound_queue_bytes")),
                tcp_mem_pages: KernelTcp::read().mem_pages,
            });
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        out
    })
}

pub(crate) fn max_tcp_mem_mib(samples: &[Sample], phase: u8) -> Option<f64> {
    samples
        .iter()
        .filter(|s| s.phase == phase)
        .filter_map(|s| s.tcp_mem_pages)
        .max()
        .map(|p| p as f64 * 4096.0 / MIB)
}

pub(crate) fn max_in(samples: &[Sample], phase: u8) -> (Option<u64>, Option<f64>) {
    let s = samples.iter().filter(|s| s.phase == phase);
    let rss = s.clone().filter_map(|s| s.rss_kib).max();
    let q = s.filter_map(|s| s.queue_bytes).reduce(f64::max);
    (rss, q)
}
