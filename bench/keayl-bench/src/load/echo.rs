//! The echo measurement: round trips of `echo` actions, one at a time per
//! client.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;

use super::pool::Shared;
use super::{CONNECT_TIMEOUT, Rig, wait_quiet};
use crate::client;
use crate::procfs::{self, CpuSample};
use crate::stats::{Summary, now_ns};

/// Figures of an echo measurement.
#[derive(Debug, Clone, Serialize)]
pub struct EchoResult {
    /// Clients.
    pub clients: usize,
    /// Round-trip latency of every echo.
    pub latency: Summary,
    /// Echoes without an answer within the timeout.
    pub timeouts: u64,
    /// Echoes per second over the run.
    pub per_sec: f64,
    /// The server's CPU use during the run (% of one core).
    pub server_cpu_pct: Option<f64>,
}

/// What an echo measurement runs.
#[derive(Debug, Clone, Copy)]
pub struct EchoSettings {
    /// Clients.
    pub clients: usize,
    /// Echoes per client, one at a time.
    pub messages: u64,
    /// Pause between a client's echoes.
    pub interval: Duration,
}

impl Default for EchoSettings {
    /// `keayl-bench echo`'s defaults: 1,000 clients × 20 echoes, 100 ms
    /// apart.
    fn default() -> Self {
        EchoSettings {
            clients: 1_000,
            messages: 20,
            interval: Duration::from_millis(100),
        }
    }
}

/// `echo.clients` subscribed clients each send `echo.messages` echoes, one
/// at a time, `echo.interval` apart (start times spread over one
/// interval); the round trip of each is recorded.
pub async fn measure_echo(rig: &Rig, echo: &EchoSettings) -> Result<EchoResult> {
    let EchoSettings {
        clients,
        messages,
        interval,
    } = *echo;
    let server_pid = rig.server_pid;
    procfs::check_fd_budget(clients)?;
    let shared = Arc::new(Shared::new(0));
    let gate = Arc::new(Semaphore::new(rig.concurrency.max(1)));
    let (go_tx, go_rx) = watch::channel(false);
    let timeouts = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let frames = Arc::new(rig.frames.clone());
    let target = Arc::new(rig.target.clone());
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let offset = interval.mul_f64(i as f64 / clients as f64);
        let (target, frames, shared, gate) =
            (target.clone(), frames.clone(), shared.clone(), gate.clone());
        let (mut go, timeouts, finished) = (go_rx.clone(), timeouts.clone(), finished.clone());
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire().await;
            let ws =
                tokio::time::timeout(CONNECT_TIMEOUT, client::open_subscribed(&target, &frames))
                    .await;
            drop(permit);
            let mut ws = match ws {
                Ok(Ok(ws)) => ws,
                Ok(Err(e)) => {
                    shared.fail(&e);
                    finished.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(_) => {
                    shared.fail(&anyhow::anyhow!("connect timed out"));
                    finished.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            let _live = shared.confirm();
            let _ = go.wait_for(|g| *g).await;
            tokio::time::sleep(offset).await;
            'outer: for seq in 0..messages {
                let t = now_ns();
                if ws.send(frames.echo(t, seq)).await.is_err() {
                    break;
                }
                let answer = tokio::time::timeout(Duration::from_secs(5), async {
                    while let Some(msg) = ws.next().await {
                        match msg {
                            Ok(Message::Text(text)) => {
                                if let Some((t0, s)) = client::scan_payload(text.as_bytes())
                                    && s == seq
                                {
                                    return Some(t0);
                                }
                            }
                            Ok(_) => {}
                            Err(_) => return None,
                        }
                    }
                    None
                })
                .await;
                match answer {
                    Ok(Some(t0)) => shared.hist.record(now_ns().saturating_sub(t0) / 1000),
                    Ok(None) => break 'outer,
                    Err(_) => {
                        timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(interval).await;
            }
            finished.fetch_add(1, Ordering::Relaxed);
            // Stay connected until everyone is done.
            while ws.next().await.is_some() {}
        }));
    }
    let deadline = Instant::now() + CONNECT_TIMEOUT + Duration::from_secs(5);
    while shared.confirmed.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) < clients
    {
        if Instant::now() > deadline {
            bail!("echo clients did not connect in time");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu = server_pid.and_then(CpuSample::take);
    let started = Instant::now();
    let _ = go_tx.send(true);
    let limit = started + (interval + Duration::from_secs(5)) * (messages as u32 + 2);
    while finished.load(Ordering::Relaxed) < clients && Instant::now() < limit {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    let server_cpu_pct = match (cpu, server_pid) {
        (Some(c), Some(pid)) => c.percent_since(pid),
        _ => None,
    };
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    if let Some(pid) = server_pid {
        wait_quiet(pid, Duration::from_secs(10)).await;
    }
    let latency = shared.hist.summary();
    Ok(EchoResult {
        clients,
        latency,
        timeouts: timeouts.load(Ordering::Relaxed),
        per_sec: latency.count as f64 / elapsed.as_secs_f64(),
        server_cpu_pct,
    })
}
