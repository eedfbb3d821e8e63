//! `slow`: stalled clients among reading ones. Phase A (control): probes on
//! `all`, everyone reads. Phase B: the stalled clients stop reading while
//! the same probes continue and filler on `allstalled` fills their buffers
//! until the server has dropped them. Then the stalled clients resume, to
//! see what they got. The run is set up, then each phase is a step; the
//! figures and the report are in [`crate::slow_report`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use keayl_bench::client::Target;
use keayl_bench::stats::now_ns;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::fleet::{
    A_PROBE, B_FILL, B_PROBE, B2_PROBE, ClientReport, Fleet, RESUME, STALL, STOP, connect_fleet,
};
use crate::machine::{CpuUse, CpuWatch, KernelTcp};
use crate::publish::{Series, pad_for};
use crate::report::{mib, num};
use crate::sampler::{Sample, start_sampler};
use crate::server::{Server, ServerOpts, Snapshot, check_fds, target_for};
use crate::slow_report::{self, Measured};

#[derive(Debug, Clone, Args)]
pub(crate) struct SlowArgs {
    /// Subscribed clients.
    #[arg(long, default_value_t = 5_000)]
    pub(crate) clients: usize,
    /// Share of the clients that stop reading in phase B, %.
    #[arg(long, default_value_t = 10)]
    pub(crate) stalled_percent: u64,
    /// Probe broadcasts in phase A, and at least in phase B (which lasts
    /// until the stalled clients are gone).
    #[arg(long, default_value_t = 200)]
    pub(crate) broadcasts: u64,
    /// Interval between probe broadcasts, ms.
    #[arg(long, default_value_t = 20)]
    pub(crate) interval_ms: u64,
    /// Size of a probe broadcast's data, bytes.
    #[arg(long, default_value_t = 256)]
    pub(crate) payload_bytes: usize,
    /// Size of a filler broadcast's data (phase B, stalled clients only),
    /// bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    pub(crate) fill_payload_bytes: usize,
    /// Filler broadcasts per second (0: back to back).
    #[arg(long, default_value_t = 50.0)]
    pub(crate) fill_rate: f64,
    /// Give up waiting for the stalled clients' disconnection after this
    /// long, s.
    #[arg(long, default_value_t = 120)]
    pub(crate) fill_timeout_secs: u64,
    /// Connection attempts in flight at once while connecting.
    #[arg(long, default_value_t = 200)]
    pub(crate) connect_concurrency: usize,
    #[command(flatten)]
    pub(crate) server: ServerOpts,
}

/// When things happened in phase B (from its start).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Timeline {
    /// Server queues held 256 KiB per stalled client on average (the
    /// kernel buffers are full).
    pub(crate) queues_filling: Option<Duration>,
    /// `keayl_slow_disconnects_total` rose first.
    pub(crate) first_slow: Option<Duration>,
    /// … rose by the number of stalled clients.
    pub(crate) slow_reached_n: Option<Duration>,
    /// `keayl_connections` fell to the number of reading clients.
    pub(crate) all_dropped: Option<Duration>,
}

impl Timeline {
    pub(crate) fn json(&self) -> Value {
        let s = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        json!({
            "queues_256k_each": s(self.queues_filling),
            "first_slow_disconnect": s(self.first_slow),
            "slow_disconnects_reach_stalled": s(self.slow_reached_n),
            "all_dropped": s(self.all_dropped),
        })
    }
}

/// Run `slow`: set up, phase A, phase B, resume the stalled clients,
/// report.
pub(crate) async fn run(args: SlowArgs) -> Result<()> {
    let (rig, tasks) = set_up(&args).await?;
    let a = phase_a(&args, &rig).await?;
    let b = phase_b(&args, &rig).await?;
    let end = resume(&rig, tasks).await?;
    let measured = Measured {
        fleet: rig.fleet.clone(),
        readers: rig.readers,
        connect_took: rig.connect_took,
        n_stalled: rig.n_stalled,
        base: rig.base,
        a,
        b,
        end,
    };
    slow_report::print(&args, &measured);
    // The server (started here) stops once the report is out.
    drop(rig);
    Ok(())
}

/// Whether client `i` is one of the `pct` % to stall in phase B.
fn stalls(pct: usize, i: usize) -> bool {
    i * pct / 100 != (i + 1) * pct / 100
}

/// The server, the subscribed fleet and what both phases share.
#[derive(Debug)]
struct Rig {
    server: Server,
    target: Arc<Target>,
    fleet: Arc<Fleet>,
    /// The share of the clients to stall, %.
    pct: usize,
    n_stalled: usize,
    /// Reading clients subscribed.
    readers: usize,
    connect_took: Duration,
    /// The server with everyone subscribed.
    base: Snapshot,
    /// The phase running, for the sampler: 0 (A), 1 (B), 2 (after).
    phase: Arc<AtomicU8>,
    /// Between two probe broadcasts.
    interval: Duration,
    probe_pad: String,
}

/// The tasks that run until the end: the subscribers and the sampler.
#[derive(Debug)]
struct Tasks {
    clients: Vec<JoinHandle<ClientReport>>,
    sampler: JoinHandle<Vec<Sample>>,
    sampler_stop: Arc<AtomicBool>,
}

/// Start the server (unless --url), connect and subscribe the fleet, read
/// the baseline and start sampling.
async fn set_up(args: &SlowArgs) -> Result<(Rig, Tasks)> {
    check_fds(args.clients + 64)?;
    let server = Server::start(&args.server).await?;
    let target = Arc::new(target_for(server.addr));
    let fleet = Fleet::new();
    let pct = args.stalled_percent.min(100) as usize;
    let n_stalled = (0..args.clients).filter(|&i| stalls(pct, i)).count();
    eprintln!(
        "slow: {} clients ({} to stall) against {}",
        args.clients, n_stalled, server.addr
    );
    let (clients, connect_took) = connect_fleet(
        args.clients,
        |i| stalls(pct, i),
        &target,
        &fleet,
        args.connect_concurrency,
    )
    .await?;
    let readers = fleet.readers_alive.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base = server.snapshot().await?;
    let phase = Arc::new(AtomicU8::new(0));
    let sampler_stop = Arc::new(AtomicBool::new(false));
    let sampler = start_sampler(&server, phase.clone(), sampler_stop.clone());
    let rig = Rig {
        server,
        target,
        fleet,
        pct,
        n_stalled,
        readers,
        connect_took,
        base,
        phase,
        interval: Duration::from_millis(args.interval_ms.max(1)),
        probe_pad: pad_for(args.payload_bytes),
    };
    let tasks = Tasks {
        clients,
        sampler,
        sampler_stop,
    };
    Ok((rig, tasks))
}

/// Phase A (control): the probes, everyone reading.
#[derive(Debug)]
pub(crate) struct PhaseA {
    /// Probes sent.
    pub(crate) sent: u64,
    /// Every reader got every probe within 15 s.
    pub(crate) drained: bool,
    pub(crate) secs: f64,
    pub(crate) cpu: CpuUse,
    pub(crate) kernel: BTreeMap<String, u64>,
    /// When it started, ns since the epoch.
    pub(crate) start_ns: u64,
}

async fn phase_a(args: &SlowArgs, rig: &Rig) -> Result<PhaseA> {
    eprintln!(
        "phase A: {} probes of {} B every {} ms, everyone reading",
        args.broadcasts, args.payload_bytes, args.interval_ms
    );
    let cpu = CpuWatch::start(&rig.server);
    let kernel = KernelTcp::read();
    let start_ns = now_ns();
    let t = Instant::now();
    let probes = Series {
        stream: "all",
        series: A_PROBE,
        min: args.broadcasts,
        interval: rig.interval,
        pad: &rig.probe_pad,
        ..Series::default()
    };
    let [sent, _] = probes.send(&rig.target).await?;
    let drained = rig
        .fleet
        .wait_delivered(A_PROBE, sent, Duration::from_secs(15))
        .await;
    Ok(PhaseA {
        sent,
        drained,
        secs: t.elapsed().as_secs_f64(),
        cpu: cpu.read(&rig.server),
        kernel: kernel.delta(&KernelTcp::read()),
        start_ns,
    })
}

/// Phase B: the stalled clients stop reading; the same probes, plus
/// filler for the stalled clients until the server has dropped them.
#[derive(Debug)]
pub(crate) struct PhaseB {
    /// Probes sent before (B1) and after (B2) the stalled clients' writes
    /// blocked.
    pub(crate) probes: [u64; 2],
    /// Filler broadcasts sent.
    pub(crate) fill: u64,
    /// `keayl_slow_disconnects_total` before the stall.
    pub(crate) slow_before: Option<f64>,
    /// Every reader got every probe within 15 s (each of B1 and B2).
    pub(crate) drained: bool,
    pub(crate) secs: f64,
    pub(crate) cpu: CpuUse,
    pub(crate) kernel: BTreeMap<String, u64>,
    /// When it started, ns since the epoch.
    pub(crate) start_ns: u64,
    pub(crate) timeline: Timeline,
    /// The server at its end.
    pub(crate) after: Snapshot,
}

async fn phase_b(args: &SlowArgs, rig: &Rig) -> Result<PhaseB> {
    rig.phase.store(1, Ordering::Relaxed);
    let slow_before = rig
        .server
        .metrics()
        .await?
        .get("keayl_slow_disconnects_total");
    rig.fleet.ctl.send_replace(STALL);
    tokio::time::sleep(Duration::from_millis(300)).await;
    eprintln!(
        "phase B: {} clients stalled; probes as in A on `all`, plus {} B filler on `allstalled` ({}) until the server has dropped them",
        rig.n_stalled,
        args.fill_payload_bytes,
        if args.fill_rate > 0.0 {
            format!("{}/s", args.fill_rate)
        } else {
            "back to back".into()
        }
    );
    let cpu = CpuWatch::start(&rig.server);
    let kernel = KernelTcp::read();
    let start_ns = now_ns();
    let t = Instant::now();
    let fill_done = Arc::new(AtomicBool::new(false));
    let blocked = Arc::new(AtomicBool::new(false));
    let fill = spawn_filler(args, rig, &fill_done);
    let watcher = tokio::spawn(
        PhaseBWatch {
            probe: rig.server.probe(),
            fleet: rig.fleet.clone(),
            fill_done: fill_done.clone(),
            blocked: blocked.clone(),
            limit: Duration::from_secs(args.fill_timeout_secs),
            slow0: slow_before.unwrap_or(0.0),
            n: rig.n_stalled as f64,
        }
        .run(),
    );
    let probes = Series {
        stream: "all",
        series: B_PROBE,
        switch: Some((&blocked, B2_PROBE)),
        min: args.broadcasts,
        until: Some(&fill_done),
        interval: rig.interval,
        pad: &rig.probe_pad,
    };
    let probes = probes.send(&rig.target).await;
    fill_done.store(true, Ordering::Relaxed);
    let timeline = watcher.await.unwrap_or_default();
    let probes = probes?;
    let fill = fill.await??;
    let drained = rig
        .fleet
        .wait_delivered(B_PROBE, probes[0], Duration::from_secs(15))
        .await
        && rig
            .fleet
            .wait_delivered(B2_PROBE, probes[1], Duration::from_secs(15))
            .await;
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu.read(&rig.server);
    let kernel = kernel.delta(&KernelTcp::read());
    Ok(PhaseB {
        probes,
        fill,
        slow_before,
        drained,
        secs,
        cpu,
        kernel,
        start_ns,
        timeline,
        after: rig.server.snapshot().await?,
    })
}

/// The filler on `allstalled` (only the stalled clients get it) until
/// `fill_done` is set: how many were sent.
fn spawn_filler(
    args: &SlowArgs,
    rig: &Rig,
    fill_done: &Arc<AtomicBool>,
) -> JoinHandle<Result<u64>> {
    let (target, fill_done) = (rig.target.clone(), fill_done.clone());
    let fill_pad = pad_for(args.fill_payload_bytes);
    let interval = if args.fill_rate > 0.0 {
        Duration::from_secs_f64(1.0 / args.fill_rate)
    } else {
        Duration::ZERO
    };
    tokio::spawn(async move {
        let fill = Series {
            stream: "allstalled",
            series: B_FILL,
            min: 0,
            until: Some(&fill_done),
            interval,
            pad: &fill_pad,
            ..Series::default()
        };
        let [sent, _] = fill.send(&target).await?;
        Ok(sent)
    })
}

/// Watches phase B through `/metrics` every 100 ms: when the stalled
/// clients' queues fill (then sets `blocked`: the probes move to B2), the
/// slow disconnects, and when they are all gone or time is up (then sets
/// `fill_done`).
#[derive(Debug)]
struct PhaseBWatch {
    probe: Server,
    fleet: Arc<Fleet>,
    fill_done: Arc<AtomicBool>,
    blocked: Arc<AtomicBool>,
    /// Give up after this long.
    limit: Duration,
    /// `keayl_slow_disconnects_total` before the stall.
    slow0: f64,
    /// Stalled clients.
    n: f64,
}

impl PhaseBWatch {
    async fn run(self) -> Timeline {
        let PhaseBWatch {
            probe,
            fleet,
            fill_done,
            blocked,
            limit,
            slow0,
            n,
        } = self;
        let start = Instant::now();
        let mut last = Instant::now();
        let mut times = Timeline::default();
        loop {
            let m = probe.metrics().await.ok();
            let conns = m.as_ref().and_then(|m| m.get("keayl_connections"));
            let slow = m
                .as_ref()
                .and_then(|m| m.get("keayl_slow_disconnects_total"))
                .map(|v| v - slow0);
            let queued = m.as_ref().and_then(|m| m.get("keayl_outbound_queue_bytes"));
            let readers = fleet.readers_alive.load(Ordering::Relaxed) as f64;
            let now = start.elapsed();
            if queued.is_some_and(|q| q >= n * 256.0 * 1024.0) {
                times.queues_filling.get_or_insert(now);
                blocked.store(true, Ordering::Relaxed);
            }
            if slow.is_some_and(|s| s >= 1.0) {
                times.first_slow.get_or_insert(now);
            }
            if slow.is_some_and(|s| s >= n) {
                times.slow_reached_n.get_or_insert(now);
            }
            if conns.is_some_and(|c| c <= readers) {
                times.all_dropped = Some(now);
                fill_done.store(true, Ordering::Relaxed);
                return times;
            }
            if now > limit || fill_done.load(Ordering::Relaxed) {
                fill_done.store(true, Ordering::Relaxed);
                return times;
            }
            if last.elapsed() > Duration::from_secs(3) {
                eprintln!(
                    "  B: {:.0} s, connections {} (readers {readers}), queued {} B, slow disconnects +{}, RSS {}",
                    now.as_secs_f64(),
                    num(conns),
                    num(queued),
                    num(slow),
                    mib(probe.rss_kib())
                );
                last = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// After phase B: the server settled, every sample, and what each client
/// saw (the stalled ones after resuming).
#[derive(Debug)]
pub(crate) struct End {
    /// The server 2 s after phase B.
    pub(crate) after: Snapshot,
    pub(crate) samples: Vec<Sample>,
    pub(crate) reports: Vec<ClientReport>,
}

/// Settle, stop sampling, then resume the stalled clients to see what they
/// got, and stop everyone.
async fn resume(rig: &Rig, tasks: Tasks) -> Result<End> {
    rig.phase.store(2, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rig.server.snapshot().await?;
    tasks.sampler_stop.store(true, Ordering::Relaxed);
    let samples = tasks.sampler.await.unwrap_or_default();
    rig.fleet.ctl.send_replace(RESUME);
    // Stalled clients drain for up to 15 s; readers keep reading meanwhile.
    let mut reports = Vec::with_capacity(tasks.clients.len());
    let (stalled_tasks, reader_tasks): (Vec<_>, Vec<_>) = tasks
        .clients
        .into_iter()
        .enumerate()
        .partition(|(i, _)| stalls(rig.pct, *i));
    for (_, t) in stalled_tasks {
        reports.push(t.await?);
    }
    rig.fleet.ctl.send_replace(STOP);
    for (_, t) in reader_tasks {
        reports.push(t.await?);
    }
    Ok(End {
        after,
        samples,
        reports,
    })
}
