//! The measurements, each on a fresh [`Pool`](super::Pool): connect
//! (memory and idle CPU per connection), broadcast fan-out (a series of N,
//! or one N), SSE fan-out; and waiting until the server is quiet again.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde::Serialize;

use super::pool::RoundResult;
use super::{Fanout, Rig};
use crate::client;
use crate::procfs::{self, CpuSample, SystemCpu};

/// Figures of a connect measurement.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectResult {
    /// Connections asked for.
    pub clients: usize,
    /// Seconds until all were confirmed (or failed).
    pub secs: f64,
    /// Connections that failed.
    pub failed: usize,
    /// The first failure's message.
    pub first_error: Option<String>,
    /// Server RSS before connecting, KiB.
    pub rss_before_kib: Option<u64>,
    /// Server RSS with every client connected and subscribed, KiB.
    pub rss_after_kib: Option<u64>,
    /// `(after - before) / clients`, KiB.
    pub rss_per_conn_kib: Option<f64>,
    /// This load generator's own RSS per connection, KiB.
    pub client_rss_per_conn_kib: Option<f64>,
    /// Server CPU (% of one core) while the clients sat idle (pings only).
    pub idle_cpu_pct: Option<f64>,
    /// CPU used by the whole machine (% of one core) over the same
    /// interval (the server, this process and any noise).
    pub idle_machine_cpu_pct: Option<f64>,
    /// Seconds the idle CPU was measured over.
    pub idle_secs: f64,
    /// Connections lost while idle.
    pub dropped: usize,
}

/// Connect `clients` subscribed WebSocket clients, time it, measure the
/// server's memory per connection and its idle CPU over `idle`, then close
/// them.
pub async fn measure_connect(rig: &Rig, clients: usize, idle: Duration) -> Result<ConnectResult> {
    let server_pid = rig.server_pid;
    let rss_before = server_pid.and_then(procfs::rss_kib);
    let me = std::process::id();
    let self_before = procfs::rss_kib(me);
    let mut pool = rig.pool(1);
    let growth = pool.add_ws_receivers(clients).await?;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let rss_after = server_pid.and_then(procfs::rss_kib);
    let self_after = procfs::rss_kib(me);
    let mut idle_cpu = None;
    let mut others = None;
    if !idle.is_zero()
        && let Some(pid) = server_pid
        && let Some(s) = CpuSample::take(pid)
    {
        let all = SystemCpu::take();
        tokio::time::sleep(idle).await;
        idle_cpu = s.percent_since(pid);
        others = all.and_then(|a| a.busy_since()).map(|(b, _)| b);
    }
    let dropped = pool.dropped();
    let first_error = pool.shared().first_error();
    pool.close().await;
    if let Some(pid) = server_pid {
        wait_quiet(pid, Duration::from_secs(10)).await;
    }
    let ok = clients - growth.failed;
    Ok(ConnectResult {
        clients,
        secs: growth.secs,
        failed: growth.failed,
        first_error,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        rss_per_conn_kib: match (rss_before, rss_after) {
            (Some(b), Some(a)) if ok > 0 => Some((a as f64 - b as f64) / ok as f64),
            _ => None,
        },
        client_rss_per_conn_kib: match (self_before, self_after) {
            (Some(b), Some(a)) if ok > 0 => Some((a as f64 - b as f64) / ok as f64),
            _ => None,
        },
        idle_cpu_pct: idle_cpu,
        idle_machine_cpu_pct: others,
        idle_secs: idle.as_secs_f64(),
        dropped,
    })
}

/// One step of a broadcast series.
#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    /// The step's N: subscribed connections, senders included (each
    /// sender is subscribed too; the others record every delivery).
    pub n: usize,
    /// Seconds it took to add this step's new receivers.
    pub connect_secs: f64,
    /// Receivers that failed to connect at this step.
    pub connect_failed: usize,
    /// The first connection error of the pool so far.
    pub first_error: Option<String>,
    /// The round's figures.
    #[serde(flatten)]
    pub round: RoundResult,
}

/// Broadcast fan-out at each N of `steps` (ascending), adding receivers
/// between steps. N counts every subscribed connection: `fanout.senders`
/// of them publish, the other `N - senders` record each delivery. Stops
/// after the first step whose p95 exceeds `limit_p95_ms` or where a
/// connection failed.
pub async fn measure_broadcast_series(
    rig: &Rig,
    fanout: &Fanout,
    steps: &[usize],
    limit_p95_ms: f64,
    mut on_step: impl FnMut(&StepResult),
) -> Result<Vec<StepResult>> {
    let Fanout {
        senders,
        feed,
        ref settings,
    } = *fanout;
    let server_pid = rig.server_pid;
    let max = steps.len() * settings.samples as usize + 1;
    let mut pool = rig.pool(max);
    pool.add_senders(senders, feed).await?;
    let mut out = Vec::new();
    for &n in steps {
        let add = n.saturating_sub(senders).saturating_sub(pool.spawned());
        let growth = pool.add_ws_receivers(add).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let round = pool.broadcast_round(settings, server_pid).await?;
        let step = StepResult {
            n,
            connect_secs: growth.secs,
            connect_failed: growth.failed,
            first_error: pool.shared().first_error(),
            round,
        };
        on_step(&step);
        let stop =
            step.round.latency.p95_ms > limit_p95_ms || growth.failed > 0 || step.round.lost > 0;
        out.push(step);
        if stop {
            break;
        }
    }
    pool.close().await;
    Ok(out)
}

/// One broadcast measurement at N from scratch: connect `fanout.senders`
/// and `n - senders` receivers, run one round, close everything and wait
/// until the server is quiet again.
pub async fn measure_broadcast_once(rig: &Rig, fanout: &Fanout, n: usize) -> Result<StepResult> {
    let Fanout {
        senders,
        feed,
        ref settings,
    } = *fanout;
    let server_pid = rig.server_pid;
    let mut pool = rig.pool(settings.samples as usize + 1);
    pool.add_senders(senders, feed).await?;
    let growth = pool.add_ws_receivers(n.saturating_sub(senders)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let round = pool.broadcast_round(settings, server_pid).await;
    let first_error = pool.shared().first_error();
    pool.close().await;
    if let Some(pid) = server_pid {
        wait_quiet(pid, Duration::from_secs(10)).await;
    }
    Ok(StepResult {
        n,
        connect_secs: growth.secs,
        connect_failed: growth.failed,
        first_error,
        round: round?,
    })
}

/// Wait (up to `limit`) until `pid` uses under 5 % of a core over 200 ms:
/// the server has finished closing connections.
pub async fn wait_quiet(pid: u32, limit: Duration) {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        let Some(s) = CpuSample::take(pid) else {
            return;
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        match s.percent_since(pid) {
            Some(p) if p < 5.0 => return,
            None => return,
            _ => {}
        }
    }
}

/// The largest N of `steps` whose p95 stayed within `limit` with every
/// connection accepted and nothing lost.
pub fn largest_within(steps: &[StepResult], limit_p95_ms: f64) -> Option<usize> {
    steps
        .iter()
        .filter(|s| {
            s.round.latency.p95_ms <= limit_p95_ms && s.connect_failed == 0 && s.round.lost == 0
        })
        .map(|s| s.n)
        .max()
}

/// SSE fan-out: `clients` SSE subscribers of the target's SSE path, fed by
/// `fanout.senders` publishing on stream `all` through `fanout.feed`.
pub async fn measure_sse(rig: &Rig, fanout: &Fanout, clients: usize) -> Result<StepResult> {
    let Fanout {
        senders,
        feed,
        ref settings,
    } = *fanout;
    let (target, server_pid) = (&rig.target, rig.server_pid);
    let mut pool = rig.pool(settings.samples as usize + 1);
    let probe = client::open_sse(target, &client::sse_request(target)).await;
    if let Err(e) = probe {
        bail!("SSE endpoint {} unusable: {e:#}", target.sse_path);
    }
    pool.add_senders(senders, feed).await?;
    let growth = pool.add_sse_receivers(clients).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let round = pool.broadcast_round(settings, server_pid).await;
    let first_error = pool.shared().first_error();
    pool.close().await;
    if let Some(pid) = server_pid {
        wait_quiet(pid, Duration::from_secs(10)).await;
    }
    Ok(StepResult {
        n: clients,
        connect_secs: growth.secs,
        connect_failed: growth.failed,
        first_error,
        round: round?,
    })
}
