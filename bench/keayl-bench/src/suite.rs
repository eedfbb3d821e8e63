//! The standard suite: start Keayl's demo server and the baseline as child
//! processes (each its own process, so RSS and CPU are per server), measure
//! both with the same load, and report Keayl's figures next to the
//! baseline's and as a ratio to them, against the targets.

mod report;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::process::{Child, Command};

use crate::client::{self, Target};
use crate::load::{self, BroadcastSettings, EchoSettings, Fanout, Feed, Rig, StepResult};
use report::{medians, ratio_keys, targets};

pub use report::{SuiteReport, Verdict};

/// A server under test, running as a child process.
#[derive(Debug)]
pub struct ServerProcess {
    /// `keayl` or `baseline`.
    pub name: &'static str,
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
}

impl ServerProcess {
    /// Start `program args… --addr <addr>` on a free loopback port and wait
    /// until it accepts connections.
    pub async fn spawn(name: &'static str, program: &Path, args: &[&str]) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let child = Command::new(program)
            .args(args)
            .arg("--addr")
            .arg(addr.to_string())
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let mut server = ServerProcess { name, addr, child };
        if let Err(e) = client::wait_listening(addr, Duration::from_secs(15)).await {
            server.stop().await;
            return Err(e);
        }
        Ok(server)
    }

    /// The process id (for `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Fail if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} server exited: {status}", self.name);
        }
        Ok(())
    }

    /// Kill it and reap it.
    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// What the suite runs; [`SuiteConfig::standard`] and
/// [`SuiteConfig::quick`] are the presets.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteConfig {
    /// The keayl-demo binary.
    pub server_bin: PathBuf,
    /// Repetitions; medians are reported.
    pub runs: usize,
    /// Whether this is the CI smoke preset (targets are not judged).
    pub quick: bool,
    /// Clients of the connect/memory/idle measurement.
    pub connect_clients: usize,
    /// Seconds of idle CPU measurement.
    pub idle_secs: u64,
    /// Receiver counts of the broadcast series.
    pub steps: Vec<usize>,
    /// Broadcast senders.
    pub senders: usize,
    /// Broadcasts per step.
    pub samples: u64,
    /// Pause between a sender's broadcasts, ms.
    pub pause_ms: u64,
    /// How long a sender waits for all deliveries, ms.
    pub wait_ms: u64,
    /// The p95 limit of the series, ms.
    pub limit_p95_ms: f64,
    /// Echo clients.
    pub echo_clients: usize,
    /// Echoes per client.
    pub echo_messages: u64,
    /// Pause between a client's echoes, ms.
    pub echo_interval_ms: u64,
    /// SSE subscribers.
    pub sse_clients: usize,
    /// How SSE broadcasts are published.
    pub sse_feed: Feed,
    /// Handshakes in flight at once.
    pub concurrency: usize,
}

impl SuiteConfig {
    /// The standard suite, sized for the targets.
    pub fn standard(server_bin: PathBuf) -> Self {
        SuiteConfig {
            server_bin,
            runs: 3,
            quick: false,
            connect_clients: 10_000,
            idle_secs: 10,
            steps: vec![1_000, 2_000, 5_000, 10_000, 14_000, 18_000],
            senders: 1,
            samples: 40,
            pause_ms: 20,
            wait_ms: 5_000,
            limit_p95_ms: 500.0,
            echo_clients: 1_000,
            echo_messages: 20,
            echo_interval_ms: 100,
            sse_clients: 10_000,
            sse_feed: Feed::Ws,
            concurrency: 64,
        }
    }

    /// The CI smoke preset: small counts, about 30 s in all.
    pub fn quick(server_bin: PathBuf) -> Self {
        SuiteConfig {
            runs: 1,
            quick: true,
            connect_clients: 500,
            idle_secs: 2,
            steps: vec![200, 500],
            samples: 10,
            echo_clients: 100,
            echo_messages: 5,
            sse_clients: 300,
            ..Self::standard(server_bin)
        }
    }
}

/// Flat figures of one server in one run (`name → value`).
pub type Metrics = BTreeMap<String, f64>;

fn settings(cfg: &SuiteConfig) -> BroadcastSettings {
    BroadcastSettings {
        samples: cfg.samples,
        pause: Duration::from_millis(cfg.pause_ms),
        wait: Duration::from_millis(cfg.wait_ms),
    }
}

/// The load against `server`, as `cfg` says.
fn rig(cfg: &SuiteConfig, server: &ServerProcess) -> Rig {
    Rig {
        concurrency: cfg.concurrency,
        server_pid: server.pid(),
        ..Rig::new(Target::new(server.addr))
    }
}

/// `cfg`'s senders publishing through `feed`.
fn fanout(cfg: &SuiteConfig, feed: Feed) -> Fanout {
    Fanout {
        senders: cfg.senders,
        feed,
        settings: settings(cfg),
    }
}

fn put_round(m: &mut Metrics, prefix: &str, s: &StepResult) {
    let r = &s.round;
    m.insert(format!("{prefix}_p50_ms"), r.latency.p50_ms);
    m.insert(format!("{prefix}_p95_ms"), r.latency.p95_ms);
    m.insert(format!("{prefix}_p99_ms"), r.latency.p99_ms);
    m.insert(format!("{prefix}_max_ms"), r.latency.max_ms);
    m.insert(format!("{prefix}_last_p50_ms"), r.last_delivery_p50_ms);
    m.insert(format!("{prefix}_lost"), r.lost as f64);
    m.insert(format!("{prefix}_deliveries_per_s"), r.deliveries_per_sec);
    if let Some(c) = r.server_cpu_pct {
        m.insert(format!("{prefix}_server_cpu_pct"), c);
    }
    if let Some(c) = r.client_cpu_pct {
        m.insert(format!("{prefix}_client_cpu_pct"), c);
    }
    if let Some(c) = r.server_us_per_delivery {
        m.insert(format!("{prefix}_server_us_per_delivery"), c);
    }
    if let Some(c) = r.client_us_per_delivery {
        m.insert(format!("{prefix}_client_us_per_delivery"), c);
    }
    if s.connect_failed > 0 {
        m.insert(format!("{prefix}_connect_failed"), s.connect_failed as f64);
    }
    if let Some(c) = r.others_cpu_pct {
        m.insert(format!("{prefix}_noise_cpu_pct"), c);
    }
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[keayl-bench] {}", msg.as_ref());
}

async fn phase_connect(
    cfg: &SuiteConfig,
    server: &mut ServerProcess,
    m: &mut Metrics,
) -> Result<()> {
    let r = load::measure_connect(
        &rig(cfg, server),
        cfg.connect_clients,
        Duration::from_secs(cfg.idle_secs),
    )
    .await?;
    log(format!(
        "{:<8} connect {}: {:.3} s, {} failed, {:.2} KiB/conn, idle cpu {:.2} %{}",
        server.name,
        r.clients,
        r.secs,
        r.failed,
        r.rss_per_conn_kib.unwrap_or(f64::NAN),
        r.idle_cpu_pct.unwrap_or(f64::NAN),
        r.first_error
            .as_deref()
            .map(|e| format!(" (first error: {e})"))
            .unwrap_or_default()
    ));
    m.insert("connect_secs".into(), r.secs);
    m.insert("connect_failed".into(), r.failed as f64);
    if let Some(v) = r.rss_per_conn_kib {
        m.insert("rss_per_conn_kib".into(), v);
    }
    if let Some(v) = r.idle_cpu_pct {
        m.insert("idle_cpu_pct".into(), v);
    }
    if let Some(v) = r.idle_machine_cpu_pct {
        m.insert("idle_machine_cpu_pct".into(), v);
    }
    m.insert("idle_dropped".into(), r.dropped as f64);
    server.check_alive()
}

fn log_step(name: &str, s: &StepResult) {
    log(format!(
        "{:<8} broadcast {:>6}: p50 {:.2} p95 {:.2} p99 {:.2} max {:.2} ms, last {:.2} ms, lost {}, server {:.1} µs/delivery, cpu % server {:.0} client {:.0} others {:.0}{}",
        name,
        s.n,
        s.round.latency.p50_ms,
        s.round.latency.p95_ms,
        s.round.latency.p99_ms,
        s.round.latency.max_ms,
        s.round.last_delivery_p50_ms,
        s.round.lost,
        s.round.server_us_per_delivery.unwrap_or(f64::NAN),
        s.round.server_cpu_pct.unwrap_or(f64::NAN),
        s.round.client_cpu_pct.unwrap_or(f64::NAN),
        s.round.others_cpu_pct.unwrap_or(f64::NAN),
        if s.connect_failed > 0 {
            format!(
                ", {} failed to connect (first error: {})",
                s.connect_failed,
                s.first_error.as_deref().unwrap_or("?")
            )
        } else {
            String::new()
        },
    ))
}

/// The broadcast series on both servers, interleaved step by step (each
/// measurement from a fresh pool), so that both see the same machine noise
/// as far as possible. A server leaves the series after its first step over
/// the p95 limit, with a failed connection, or with a lost delivery.
async fn phase_broadcast(
    cfg: &SuiteConfig,
    servers: [(&mut ServerProcess, &mut Metrics); 2],
) -> Result<()> {
    let mut servers = servers;
    let mut done = [false, false];
    let mut steps: [Vec<StepResult>; 2] = [Vec::new(), Vec::new()];
    for &n in &cfg.steps {
        for (i, (server, _)) in servers.iter_mut().enumerate() {
            if done[i] {
                continue;
            }
            let s =
                load::measure_broadcast_once(&rig(cfg, server), &fanout(cfg, Feed::Ws), n).await?;
            log_step(server.name, &s);
            done[i] = s.round.latency.p95_ms > cfg.limit_p95_ms
                || s.connect_failed > 0
                || s.round.lost > 0;
            steps[i].push(s);
            server.check_alive()?;
        }
    }
    for (i, (_, m)) in servers.iter_mut().enumerate() {
        let mut lost = 0.0;
        for s in &steps[i] {
            put_round(m, &format!("bcast_{}", s.n), s);
            lost += s.round.lost as f64;
        }
        m.insert("bcast_lost_total".into(), lost);
        m.insert(
            "bcast_largest_n_within_limit".into(),
            load::largest_within(&steps[i], cfg.limit_p95_ms).unwrap_or(0) as f64,
        );
    }
    Ok(())
}

async fn phase_echo(cfg: &SuiteConfig, server: &mut ServerProcess, m: &mut Metrics) -> Result<()> {
    let echo = EchoSettings {
        clients: cfg.echo_clients,
        messages: cfg.echo_messages,
        interval: Duration::from_millis(cfg.echo_interval_ms),
    };
    let r = load::measure_echo(&rig(cfg, server), &echo).await?;
    log(format!(
        "{:<8} echo {} clients: p50 {:.2} p95 {:.2} p99 {:.2} ms, {:.0}/s, {} timeouts",
        server.name,
        r.clients,
        r.latency.p50_ms,
        r.latency.p95_ms,
        r.latency.p99_ms,
        r.per_sec,
        r.timeouts
    ));
    m.insert("echo_p50_ms".into(), r.latency.p50_ms);
    m.insert("echo_p95_ms".into(), r.latency.p95_ms);
    m.insert("echo_p99_ms".into(), r.latency.p99_ms);
    m.insert("echo_timeouts".into(), r.timeouts as f64);
    server.check_alive()
}

async fn phase_sse(
    cfg: &SuiteConfig,
    server: &mut ServerProcess,
    m: &mut Metrics,
    notes: &mut Vec<String>,
) -> Result<()> {
    let r = load::measure_sse(
        &rig(cfg, server),
        &fanout(cfg, cfg.sse_feed),
        cfg.sse_clients,
    )
    .await;
    match r {
        Ok(s) => {
            log(format!(
                "{:<8} sse {}: p50 {:.2} p95 {:.2} p99 {:.2} ms, lost {}",
                server.name,
                s.round.receivers,
                s.round.latency.p50_ms,
                s.round.latency.p95_ms,
                s.round.latency.p99_ms,
                s.round.lost
            ));
            put_round(m, "sse", &s);
            let ws_key = format!("bcast_{}_p95_ms", cfg.sse_clients);
            if let Some(ws) = m.get(&ws_key).copied()
                && ws > 0.0
            {
                m.insert("sse_to_ws_p95_ratio".into(), s.round.latency.p95_ms / ws);
            }
        }
        Err(e) => {
            let note = format!("{}: SSE not measured: {e:#}", server.name);
            log(&note);
            notes.push(note);
        }
    }
    server.check_alive()
}

/// One run: fresh server processes, every phase against both (alternating
/// which goes first by run, to even out drift).
async fn run_once(
    cfg: &SuiteConfig,
    run: usize,
    notes: &mut Vec<String>,
) -> Result<(Metrics, Metrics)> {
    let me = std::env::current_exe().context("locating keayl-bench itself")?;
    let mut keayl = ServerProcess::spawn("keayl", &cfg.server_bin, &[]).await?;
    let mut base = ServerProcess::spawn("baseline", &me, &["baseline-server"]).await?;
    log(format!(
        "run {}: keayl-demo pid {:?} on {}, baseline pid {:?} on {}",
        run + 1,
        keayl.pid(),
        keayl.addr,
        base.pid(),
        base.addr
    ));
    let (mut mk, mut mb) = (Metrics::new(), Metrics::new());
    let result: Result<()> = async {
        let keayl_first = run.is_multiple_of(2);
        macro_rules! both {
            ($phase:ident $(, $extra:expr)*) => {
                if keayl_first {
                    $phase(cfg, &mut keayl, &mut mk $(, $extra)*).await?;
                    $phase(cfg, &mut base, &mut mb $(, $extra)*).await?;
                } else {
                    $phase(cfg, &mut base, &mut mb $(, $extra)*).await?;
                    $phase(cfg, &mut keayl, &mut mk $(, $extra)*).await?;
                }
            };
        }
        both!(phase_connect);
        if keayl_first {
            phase_broadcast(cfg, [(&mut keayl, &mut mk), (&mut base, &mut mb)]).await?;
        } else {
            phase_broadcast(cfg, [(&mut base, &mut mb), (&mut keayl, &mut mk)]).await?;
        }
        both!(phase_echo);
        both!(phase_sse, notes);
        Ok(())
    }
    .await;
    keayl.stop().await;
    base.stop().await;
    result?;
    Ok((mk, mb))
}

/// Run the suite `cfg.runs` times and report medians.
pub async fn run(cfg: SuiteConfig) -> Result<SuiteReport> {
    if !cfg.server_bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p keayl-demo`, or pass --server-bin",
            cfg.server_bin.display()
        );
    }
    let biggest = cfg
        .steps
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max(cfg.connect_clients)
        .max(cfg.sse_clients);
    crate::procfs::check_fd_budget(biggest + cfg.senders)?;
    let mut notes = Vec::new();
    let mut runs = Vec::new();
    for i in 0..cfg.runs.max(1) {
        runs.push(run_once(&cfg, i, &mut notes).await?);
    }
    let keayl_runs: Vec<Metrics> = runs.iter().map(|(k, _)| k.clone()).collect();
    let base_runs: Vec<Metrics> = runs.iter().map(|(_, b)| b.clone()).collect();
    let per_run_ratios: Vec<Metrics> = runs
        .iter()
        .map(|(k, b)| {
            ratio_keys(k)
                .into_iter()
                .filter_map(|key| {
                    let (kv, bv) = (k.get(&key)?, b.get(&key)?);
                    (*bv > 0.0).then(|| (key, kv / bv))
                })
                .collect()
        })
        .collect();
    let keayl = medians(&keayl_runs);
    let baseline = medians(&base_runs);
    let ratio = medians(&per_run_ratios);
    let targets = if cfg.quick {
        Vec::new()
    } else {
        targets(&keayl, &ratio, &keayl_runs)
    };
    notes.dedup();
    Ok(SuiteReport {
        config: cfg,
        keayl,
        baseline,
        ratio,
        targets,
        runs,
        notes,
    })
}
