//! `keayl-ops-bench`: operational benchmarks of a Keayl server that print
//! figures (not tests): connection churn, slow clients, soak.
//!
//! ```text
//! keayl-ops-bench churn --cycles 100000 --concurrency 200
//! keayl-ops-bench slow  --clients 5000 --stalled-percent 10 --broadcasts 200 --interval-ms 20 --payload-bytes 256
//! keayl-ops-bench soak  --clients 10000 --minutes 10 --rate 1   # --minutes 0.5 for a smoke run
//! ```
//!
//! Build with `cargo build --release -p keayl-bench -p keayl-demo`. Runs
//! with thousands of clients need `ulimit -n 20000` first (the soft limit
//! is checked). The load generator shares the machine with the server:
//! latencies include its own work.
//!
//! Each subcommand starts `keayl-demo` (next to this binary, or
//! `--server-bin`) on a free port and stops it at the end, unless `--url`
//! (and `--pid`, for the server's RSS) point at a running server. Figures
//! come from the server's `GET /metrics` and `/proc/<pid>/status`; every
//! subcommand prints a table, then one JSON line.
//!
//! - **churn**: N cycles of connect → subscribe `BenchmarkChannel` → confirm
//!   → clean close, with a given concurrency, after a warm-up; compares the
//!   server's RSS, live Tokio tasks and subscriptions before and after
//!   (targets: RSS within 5 %, tasks and subscriptions back to baseline).
//!   Client sockets are spread over 127.0.0.2–127.0.0.30 so that 100k
//!   cycles do not run out of ephemeral ports.
//! - **slow**: every client subscribes to `BenchmarkChannel` (stream
//!   `all`); the clients to stall also subscribe with `id: "stalled"`
//!   (stream `allstalled`). Phase A (control): probe broadcasts on `all` at
//!   a fixed interval, everyone reads. Phase B: the stalled clients stop
//!   polling their sockets (kept open) while the same probes continue on
//!   `all`, and large filler broadcasts on `allstalled` (only the stalled
//!   clients get them) fill their kernel buffers and then their server
//!   queues, until the server has disconnected them all. The reading
//!   clients get exactly the same traffic in A and B, so the difference in
//!   their latency is what the stalled clients cost them. B is split at the
//!   moment the stalled clients' writes block (their server queues start to
//!   grow): B1 is the filler being copied into their kernel buffers (a
//!   cost of the accelerated test), B2 is the server holding, overflowing
//!   and dropping them. A per-second view of the worst probe latency, the
//!   kernel's TCP memory and its pressure counters go with it. Reports p50/p99 of
//!   the reading clients per phase, lost deliveries, disconnected stalled
//!   clients (metric, and what each one saw on resuming), server RSS and
//!   outbound queue bytes.
//! - **soak**: N clients subscribed, `--rate` broadcasts per second for
//!   `--minutes`; counts deliveries and sequence gaps per client; samples
//!   the server's RSS every `--sample-secs`.
//!
//! Payloads carry `{"k":<series>,"t":<ns since the epoch>,"seq":<n>,"pad":"…"}`,
//! published with `POST /_broadcast` (on `all`, or `allstalled`); receivers find the
//! numbers by substring search. Each series has its own sequence, so gaps
//! and reordering are checked per series.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use keayl_bench::client::{self, Frames, HttpBroadcaster, Target};
use keayl_bench::procfs::{self, CpuSample, SystemCpu};
use keayl_bench::stats::{Histogram, Summary, now_ns};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;

/// Operational benchmarks of a Keayl server: churn, slow clients, soak.
#[derive(Debug, Parser)]
#[command(name = "keayl-ops-bench", version, about)]
struct Cli {
    /// Worker threads of the load generator's runtime.
    #[arg(long, global = true, default_value_t = 2)]
    client_threads: usize,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Connect → subscribe → confirm → close, N times; leaks of memory,
    /// tasks and subscriptions.
    Churn(ChurnArgs),
    /// Stalled clients among reading ones: latency of the others, lost
    /// deliveries, slow-client disconnects, memory.
    Slow(SlowArgs),
    /// N subscribers, periodic broadcasts for a while: lost deliveries, RSS
    /// over time, latency.
    Soak(SoakArgs),
}

#[derive(Debug, Clone, Args)]
struct ServerOpts {
    /// A running server (`http://127.0.0.1:3000`); without it, keayl-demo is
    /// started on a free port and stopped at the end.
    #[arg(long)]
    url: Option<String>,
    /// PID of the server at --url, for its RSS (not reported without it).
    #[arg(long)]
    pid: Option<u32>,
    /// The server binary to start (default: keayl-demo next to this binary).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Where the started server's output goes (RUST_LOG=warn unless
    /// KEAYL_OPS_BENCH_SERVER_LOG says otherwise).
    #[arg(long, default_value = "/tmp/keayl-ops-bench-server.log")]
    server_log: PathBuf,
}

#[derive(Debug, Clone, Args)]
struct ChurnArgs {
    /// Measured cycles.
    #[arg(long, default_value_t = 100_000)]
    cycles: u64,
    /// Cycles in flight at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Cycles before the baseline is read (allocator pools and caches
    /// reach their working size within ~20k cycles; later churn is flat).
    #[arg(long, default_value_t = 20_000)]
    warmup: u64,
    #[command(flatten)]
    server: ServerOpts,
}

#[derive(Debug, Clone, Args)]
struct SlowArgs {
    /// Subscribed clients.
    #[arg(long, default_value_t = 5_000)]
    clients: usize,
    /// Share of the clients that stop reading in phase B, %.
    #[arg(long, default_value_t = 10)]
    stalled_percent: u64,
    /// Probe broadcasts in phase A, and at least in phase B (which lasts
    /// until the stalled clients are gone).
    #[arg(long, default_value_t = 200)]
    broadcasts: u64,
    /// Interval between probe broadcasts, ms.
    #[arg(long, default_value_t = 20)]
    interval_ms: u64,
    /// Size of a probe broadcast's data, bytes.
    #[arg(long, default_value_t = 256)]
    payload_bytes: usize,
    /// Size of a filler broadcast's data (phase B, stalled clients only),
    /// bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    fill_payload_bytes: usize,
    /// Filler broadcasts per second (0: back to back).
    #[arg(long, default_value_t = 50.0)]
    fill_rate: f64,
    /// Give up waiting for the stalled clients' disconnection after this
    /// long, s.
    #[arg(long, default_value_t = 120)]
    fill_timeout_secs: u64,
    /// Connection attempts in flight at once while connecting.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    #[command(flatten)]
    server: ServerOpts,
}

#[derive(Debug, Clone, Args)]
struct SoakArgs {
    /// Subscribed clients.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Duration of the broadcasting, minutes (fractions allowed: 0.5).
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Broadcasts per second.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Size of a broadcast's data, bytes.
    #[arg(long, default_value_t = 256)]
    payload_bytes: usize,
    /// Interval between RSS samples, s.
    #[arg(long, default_value_t = 10.0)]
    sample_secs: f64,
    /// Connection attempts in flight at once while connecting.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    #[command(flatten)]
    server: ServerOpts,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.client_threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Cmd::Churn(a) => churn(a).await,
            Cmd::Slow(a) => slow(a).await,
            Cmd::Soak(a) => soak(a).await,
        }
    })
}

// ---------------------------------------------------------------------------
// The server under test, its metrics and memory.

/// The server: started here (killed on drop) or given by --url.
#[derive(Debug)]
struct Server {
    addr: SocketAddr,
    pid: Option<u32>,
    child: Option<std::process::Child>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn parse_url(url: &str) -> Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or(rest);
    let hostport = match hostport.strip_prefix("localhost:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => hostport.to_owned(),
    };
    hostport
        .parse()
        .with_context(|| format!("--url {url}: expected http://IP:PORT"))
}

impl Server {
    async fn start(opts: &ServerOpts) -> Result<Server> {
        if let Some(url) = &opts.url {
            let server = Server {
                addr: parse_url(url)?,
                pid: opts.pid,
                child: None,
            };
            server.wait_healthy().await?;
            if server.pid.is_none() {
                eprintln!("note: no --pid, so the server's RSS is not reported");
            }
            return Ok(server);
        }
        let bin = match &opts.server_bin {
            Some(b) => b.clone(),
            None => std::env::current_exe()?.with_file_name("keayl-demo"),
        };
        if !bin.exists() {
            bail!(
                "{} not found: run `cargo build --release -p keayl-demo`, or pass --server-bin / --url",
                bin.display()
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = std::fs::File::create(&opts.server_log)
            .with_context(|| format!("creating {}", opts.server_log.display()))?;
        let child = std::process::Command::new(&bin)
            .arg("--addr")
            .arg(addr.to_string())
            .env(
                "RUST_LOG",
                std::env::var("KEAYL_OPS_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env_remove("KEAYL_BROADCAST_SECRET")
            .env_remove("KEAYL_ADDR")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let server = Server {
            addr,
            pid: Some(child.id()),
            child: Some(child),
        };
        server.wait_healthy().await?;
        eprintln!(
            "started {} on {addr} (pid {}, log {})",
            bin.display(),
            server.pid.unwrap_or(0),
            opts.server_log.display()
        );
        Ok(server)
    }

    async fn wait_healthy(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match http_get(self.addr, "/health").await {
                Ok((200, _)) => return Ok(()),
                Ok((status, body)) if Instant::now() > deadline => {
                    bail!("{}/health answered {status}: {body}", self.addr)
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context(format!("server at {} not reachable", self.addr)));
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// A handle for reading metrics from another task (stops nothing).
    fn probe(&self) -> Server {
        Server {
            addr: self.addr,
            pid: self.pid,
            child: None,
        }
    }

    fn rss_kib(&self) -> Option<u64> {
        procfs::rss_kib(self.pid?)
    }

    fn cpu(&self) -> Option<CpuSample> {
        CpuSample::take(self.pid?)
    }

    async fn metrics(&self) -> Result<Metrics> {
        let (status, body) = http_get(self.addr, "/metrics").await?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        let mut m = BTreeMap::new();
        for line in body.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some((name, value)) = line.rsplit_once(' ')
                && let Ok(v) = value.trim().parse::<f64>()
            {
                m.insert(name.trim().to_owned(), v);
            }
        }
        Ok(Metrics(m))
    }

    /// RSS and the figures of /metrics, now.
    async fn snapshot(&self) -> Result<Snapshot> {
        let m = self.metrics().await?;
        Ok(Snapshot {
            rss_kib: self.rss_kib(),
            tasks: m.get("keayl_runtime_alive_tasks"),
            connections: m.get("keayl_connections"),
            subscriptions: m.get("keayl_subscriptions"),
            streams: m.get("keayl_streams"),
            slow_disconnects: m.get("keayl_slow_disconnects_total"),
            queue_bytes: m.get("keayl_outbound_queue_bytes"),
        })
    }

    /// Wait until `keayl_connections` is at most `n` (`limit` at most);
    /// how long it took, `None` on timeout.
    async fn wait_connections_at_most(&self, n: f64, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        loop {
            if let Ok(m) = self.metrics().await
                && m.get("keayl_connections").is_some_and(|c| c <= n)
            {
                return Some(start.elapsed());
            }
            if start.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `GET path` on a fresh connection; status and body.
async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .context("connect timeout")??;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::with_capacity(8 * 1024);
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .context("response timeout")??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP head")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    Ok((status, body.to_owned()))
}

#[derive(Debug, Default, Clone)]
struct Metrics(BTreeMap<String, f64>);

impl Metrics {
    fn get(&self, name: &str) -> Option<f64> {
        self.0.get(name).copied()
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Snapshot {
    rss_kib: Option<u64>,
    tasks: Option<f64>,
    connections: Option<f64>,
    subscriptions: Option<f64>,
    streams: Option<f64>,
    slow_disconnects: Option<f64>,
    queue_bytes: Option<f64>,
}

impl Snapshot {
    fn json(&self) -> Value {
        json!({
            "rss_kib": self.rss_kib,
            "alive_tasks": self.tasks,
            "connections": self.connections,
            "subscriptions": self.subscriptions,
            "streams": self.streams,
            "slow_disconnects_total": self.slow_disconnects,
            "outbound_queue_bytes": self.queue_bytes,
        })
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn num(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v}"))
}

fn pct_change(before: Option<u64>, after: Option<u64>) -> Option<f64> {
    let (b, a) = (before? as f64, after? as f64);
    (b > 0.0).then(|| 100.0 * (a - b) / b)
}

fn yes_no(ok: bool) -> &'static str {
    if ok { "MET" } else { "NOT MET" }
}

/// Client sockets from 127.0.0.2–127.0.0.30 when the server is on loopback
/// (each source address has its own ephemeral ports).
fn target_for(addr: SocketAddr) -> Target {
    let mut target = Target::new(addr);
    if let IpAddr::V4(v4) = addr.ip()
        && v4.is_loopback()
    {
        target.source_ips = (2..=30u8).map(|i| IpAddr::from([127, 0, 0, i])).collect();
    }
    target
}

fn check_fds(sockets: usize) -> Result<()> {
    if let Err(e) = procfs::check_fd_budget(sockets) {
        eprintln!("error: {e}");
        return Err(e);
    }
    Ok(())
}

fn short_error(e: &anyhow::Error) -> String {
    let mut s = format!("{e:#}");
    if s.len() > 140 {
        let mut cut = 140;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// How busy the machine and the server were over an interval (the machine
/// is shared: other load shows here).
#[derive(Debug, Clone, Copy)]
struct CpuWatch {
    server: Option<CpuSample>,
    system: Option<SystemCpu>,
}

impl CpuWatch {
    fn start(server: &Server) -> Self {
        CpuWatch {
            server: server.cpu(),
            system: SystemCpu::take(),
        }
    }

    /// (server % of one core, machine busy % of one core × cores, steal %).
    fn read(&self, server: &Server) -> (Option<f64>, Option<f64>, Option<f64>) {
        let srv = self
            .server
            .and_then(|s| server.pid.and_then(|p| s.percent_since(p)));
        let sys = self.system.and_then(|s| s.busy_since());
        (srv, sys.map(|s| s.0), sys.map(|s| s.1))
    }
}

fn cpu_line(label: &str, cpu: (Option<f64>, Option<f64>, Option<f64>)) -> String {
    let f = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.0} %"));
    format!(
        "{label}: server CPU {} of one core; whole machine busy {} (of {} cores × 100 %), steal {}",
        f(cpu.0),
        f(cpu.1),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        f(cpu.2)
    )
}

// ---------------------------------------------------------------------------
// churn

#[derive(Debug, Default)]
struct CycleStats {
    ok: u64,
    failed: u64,
    /// Cycles whose server did not close the TCP connection within 2 s of
    /// the close handshake.
    no_tcp_close: u64,
    errors: BTreeMap<String, u64>,
    elapsed: Duration,
    latency: Summary,
}

/// connect → welcome → subscribe → confirm → close → the server's close
/// frame → the server's FIN. `Ok(true)` when the server closed TCP.
async fn churn_cycle(target: &Target, frames: &Frames) -> Result<bool> {
    let mut ws = client::open_subscribed(target, frames).await?;
    ws.close(None).await.context("sending close")?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => {}
            Some(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed)) => break,
            Some(Err(e)) => return Err(e).context("awaiting the close reply"),
        }
    }
    let mut buf = [0u8; 64];
    let tcp = ws.get_mut();
    Ok(
        match tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) | Err(_) => false,
        },
    )
}

async fn run_cycles(
    target: Arc<Target>,
    frames: Arc<Frames>,
    cycles: u64,
    concurrency: usize,
    label: &'static str,
) -> CycleStats {
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(Histogram::new());
    let start = Instant::now();
    let progress = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                let d = done.load(Ordering::Relaxed);
                eprintln!(
                    "  {label}: {d}/{cycles} cycles, {:.0}/s",
                    d as f64 / start.elapsed().as_secs_f64()
                );
            }
        })
    };
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (target, frames, next, done, hist) = (
            target.clone(),
            frames.clone(),
            next.clone(),
            done.clone(),
            hist.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut st = CycleStats::default();
            while next.fetch_add(1, Ordering::Relaxed) < cycles {
                let t0 = Instant::now();
                match tokio::time::timeout(Duration::from_secs(15), churn_cycle(&target, &frames))
                    .await
                {
                    Ok(Ok(closed)) => {
                        st.ok += 1;
                        if !closed {
                            st.no_tcp_close += 1;
                        }
                        hist.record(t0.elapsed().as_micros() as u64);
                    }
                    Ok(Err(e)) => {
                        st.failed += 1;
                        *st.errors.entry(short_error(&e)).or_default() += 1;
                    }
                    Err(_) => {
                        st.failed += 1;
                        *st.errors
                            .entry("cycle timed out (15 s)".into())
                            .or_default() += 1;
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            st
        }));
    }
    let mut total = CycleStats::default();
    for w in workers {
        if let Ok(st) = w.await {
            total.ok += st.ok;
            total.failed += st.failed;
            total.no_tcp_close += st.no_tcp_close;
            for (k, v) in st.errors {
                *total.errors.entry(k).or_default() += v;
            }
        }
    }
    progress.abort();
    total.elapsed = start.elapsed();
    total.latency = hist.summary();
    total
}

/// TIME_WAIT sockets involving `port` on this machine (IPv4), from
/// `/proc/net/tcp`: (server side, client side).
fn time_wait(port: u16) -> (usize, usize) {
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

async fn churn(args: ChurnArgs) -> Result<()> {
    check_fds(args.concurrency * 2 + 64)?;
    let server = Server::start(&args.server).await?;
    let target = Arc::new(target_for(server.addr));
    let frames = Arc::new(Frames::new(None));
    eprintln!(
        "churn: warm-up {} cycles, then {} cycles at concurrency {} against {} (client sources {} addresses)",
        args.warmup,
        args.cycles,
        args.concurrency,
        server.addr,
        target.source_ips.len().max(1)
    );
    let warm = run_cycles(
        target.clone(),
        frames.clone(),
        args.warmup,
        args.concurrency,
        "warm-up",
    )
    .await;
    let warm_drain = server
        .wait_connections_at_most(0.0, Duration::from_secs(10))
        .await;
    let before = server.snapshot().await?;
    let cpu = CpuWatch::start(&server);
    let kernel = KernelTcp::read();
    let run = run_cycles(
        target.clone(),
        frames.clone(),
        args.cycles,
        args.concurrency,
        "churn",
    )
    .await;
    let cpu_use = cpu.read(&server);
    let kernel = kernel.delta(&KernelTcp::read());
    let drained = server
        .wait_connections_at_most(0.0, Duration::from_secs(10))
        .await;
    // Tasks end just after the connection gauge drops; give them a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server.snapshot().await?;
    let (tw_server, tw_client) = time_wait(server.addr.port());

    let rate = run.ok as f64 / run.elapsed.as_secs_f64();
    let rss_pct = pct_change(before.rss_kib, after.rss_kib);
    let rss_ok = rss_pct.is_some_and(|p| p.abs() <= 5.0);
    let tasks_ok = matches!((before.tasks, after.tasks), (Some(b), Some(a)) if a <= b);
    let subs_ok =
        matches!((before.subscriptions, after.subscriptions), (Some(b), Some(a)) if a <= b);
    let conns_ok = drained.is_some();

    println!();
    println!(
        "== churn: {} cycles (connect → subscribe → confirm → close), concurrency {} ==",
        args.cycles, args.concurrency
    );
    println!(
        "warm-up            {} cycles, {} failed, drained in {}",
        warm.ok + warm.failed,
        warm.failed,
        drained_text(warm_drain)
    );
    println!(
        "cycles             {} ok, {} failed in {:.1} s  →  {rate:.0} cycles/s",
        run.ok,
        run.failed,
        run.elapsed.as_secs_f64()
    );
    println!(
        "cycle time         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        run.latency.p50_ms, run.latency.p99_ms, run.latency.max_ms
    );
    println!(
        "server TCP close   {} cycles without the server's FIN within 2 s",
        run.no_tcp_close
    );
    for (e, n) in &run.errors {
        println!("  failure ×{n}: {e}");
    }
    println!("{:<18} {:>14} {:>14}   target", "", "before", "after");
    println!(
        "{:<18} {:>14} {:>14}   within 5 %: {} ({})",
        "server RSS",
        mib(before.rss_kib),
        mib(after.rss_kib),
        rss_pct.map_or("n/a".into(), |p| format!("{p:+.1} %")),
        yes_no(rss_ok)
    );
    println!(
        "{:<18} {:>14} {:>14}   back to baseline: {}",
        "alive tasks",
        num(before.tasks),
        num(after.tasks),
        yes_no(tasks_ok)
    );
    println!(
        "{:<18} {:>14} {:>14}   back to baseline: {}",
        "subscriptions",
        num(before.subscriptions),
        num(after.subscriptions),
        yes_no(subs_ok)
    );
    println!(
        "{:<18} {:>14} {:>14}   0 within 10 s: {} ({})",
        "connections",
        num(before.connections),
        num(after.connections),
        yes_no(conns_ok),
        drained_text(drained)
    );
    println!(
        "{:<18} {:>14} {:>14}",
        "streams",
        num(before.streams),
        num(after.streams)
    );
    println!("TIME_WAIT now      {tw_server} on the server side, {tw_client} on the client side");
    println!("{}", cpu_line("during the run", cpu_use));
    println!(
        "kernel TCP counters during the run (whole machine): {}",
        delta_line(&kernel)
    );
    let out = json!({
        "bench": "churn",
        "cycles": args.cycles,
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "ok": run.ok,
        "failures": run.failed,
        "errors": run.errors,
        "no_server_tcp_close": run.no_tcp_close,
        "seconds": run.elapsed.as_secs_f64(),
        "cycles_per_sec": rate,
        "cycle_ms": run.latency,
        "before": before.json(),
        "after": after.json(),
        "rss_change_pct": rss_pct,
        "drained_secs": drained.map(|d| d.as_secs_f64()),
        "time_wait": {"server_side": tw_server, "client_side": tw_client},
        "server_cpu_pct": cpu_use.0,
        "machine_busy_pct": cpu_use.1,
        "kernel_tcp_counters": kernel,
        "targets": {"rss_within_5pct": rss_ok, "tasks_back": tasks_ok, "subscriptions_back": subs_ok, "connections_zero": conns_ok},
    });
    println!("{out}");
    Ok(())
}

fn drained_text(d: Option<Duration>) -> String {
    d.map_or("not within 10 s".into(), |d| {
        format!("{:.1} s", d.as_secs_f64())
    })
}

// ---------------------------------------------------------------------------
// Subscribers for slow and soak.

/// Series (the `k` of a payload): each has its own sequence and histogram.
const SERIES: usize = 4;
/// Messages per series whose worst latency is kept, for the per-second view.
const PER_SEQ: usize = 8192;

const RUN: u8 = 0;
const STALL: u8 = 1;
const RESUME: u8 = 2;
const STOP: u8 = 3;

/// State shared by the subscribers and the driver.
#[derive(Debug)]
struct Fleet {
    /// Latency per series, reading clients only (µs); the last one holds
    /// the probes of phase B together.
    hist: Vec<Histogram>,
    /// Per series and sequence number (below [`PER_SEQ`]): the worst
    /// latency (µs) and the send time (ns since the epoch).
    seq_worst: Vec<Vec<AtomicU64>>,
    seq_sent: Vec<Vec<AtomicU64>>,
    /// Deliveries per series, reading clients only.
    delivered: Vec<AtomicU64>,
    ctl: watch::Sender<u8>,
    ready: AtomicUsize,
    connect_failed: AtomicUsize,
    readers_alive: AtomicUsize,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Fleet {
    fn new() -> Arc<Self> {
        Arc::new(Fleet {
            hist: (0..=SERIES).map(|_| Histogram::new()).collect(),
            seq_worst: (0..SERIES)
                .map(|_| (0..PER_SEQ).map(|_| AtomicU64::new(0)).collect())
                .collect(),
            seq_sent: (0..SERIES)
                .map(|_| (0..PER_SEQ).map(|_| AtomicU64::new(0)).collect())
                .collect(),
            delivered: (0..SERIES).map(|_| AtomicU64::new(0)).collect(),
            ctl: watch::Sender::new(RUN),
            ready: AtomicUsize::new(0),
            connect_failed: AtomicUsize::new(0),
            readers_alive: AtomicUsize::new(0),
            errors: Mutex::new(BTreeMap::new()),
        })
    }

    fn error(&self, e: String) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(e)
            .or_default() += 1;
    }

    /// Wait until every reading client got `sent` messages of `series`;
    /// false on timeout.
    async fn wait_delivered(&self, series: usize, sent: u64, limit: Duration) -> bool {
        let start = Instant::now();
        loop {
            let want = sent * self.readers_alive.load(Ordering::Relaxed) as u64;
            if self.delivered[series].load(Ordering::Relaxed) >= want {
                return true;
            }
            if start.elapsed() > limit {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What one subscriber saw.
#[derive(Debug, Default, Clone)]
struct ClientReport {
    stalled: bool,
    connected: bool,
    received: [u64; SERIES],
    /// Messages missing in a series' sequence.
    gaps: u64,
    /// Messages older than one already seen.
    reordered: u64,
    /// The connection ended before the run did.
    ended_early: bool,
    /// Stalled clients, after resuming: saw `too_slow`, saw the server's
    /// close (close frame, EOF or reset), still open, bytes read.
    saw_too_slow: bool,
    closed_by_server: bool,
    still_open: bool,
    drained_bytes: u64,
}

/// `(series, t, seq)` of a benchmark payload, by substring search.
fn scan(msg: &str) -> Option<(usize, u64, u64)> {
    let at = msg.find("\"k\":")?;
    let rest = &msg[at..];
    let k = number_after(rest, "\"k\":")? as usize;
    let t = number_after(rest, "\"t\":")?;
    let seq = number_after(rest, "\"seq\":")?;
    (k < SERIES).then_some((k, t, seq))
}

fn number_after(s: &str, key: &str) -> Option<u64> {
    let i = s.find(key)? + key.len();
    let digits = s[i..].bytes().take_while(u8::is_ascii_digit).count();
    s[i..i + digits].parse().ok()
}

/// The frames of a subscriber: `all` for everyone, plus `allstalled` for
/// the clients to stall.
#[derive(Debug)]
struct FleetFrames {
    all: Frames,
    stalled: Frames,
}

/// Connect, subscribe to `all` (and `allstalled` when `stalled`).
async fn open_subscriber(
    target: &Target,
    frames: &FleetFrames,
    stalled: bool,
) -> Result<client::Ws> {
    let mut ws = client::open_subscribed(target, &frames.all).await?;
    if stalled {
        ws.send(Message::Text(frames.stalled.subscribe.clone()))
            .await?;
        loop {
            let msg = ws
                .next()
                .await
                .context("closed before the second confirmation")??;
            if let Message::Text(text) = msg {
                let b = text.as_bytes();
                if client::is_confirm(b) {
                    break;
                }
                if client::is_reject(b) {
                    bail!("second subscription rejected");
                }
            }
        }
    }
    Ok(ws)
}

async fn subscriber(
    stalled: bool,
    target: Arc<Target>,
    frames: Arc<FleetFrames>,
    fleet: Arc<Fleet>,
    connect_limit: Arc<Semaphore>,
) -> ClientReport {
    let mut rep = ClientReport {
        stalled,
        ..ClientReport::default()
    };
    let mut ctl = fleet.ctl.subscribe();
    let opened = {
        let _permit = connect_limit.acquire().await;
        tokio::time::timeout(
            Duration::from_secs(30),
            open_subscriber(&target, &frames, stalled),
        )
        .await
    };
    let mut ws = match opened {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            fleet.error(format!("connect: {}", short_error(&e)));
            fleet.connect_failed.fetch_add(1, Ordering::Relaxed);
            return rep;
        }
        Err(_) => {
            fleet.error("connect: timed out (30 s)".into());
            fleet.connect_failed.fetch_add(1, Ordering::Relaxed);
            return rep;
        }
    };
    rep.connected = true;
    if !stalled {
        fleet.readers_alive.fetch_add(1, Ordering::Relaxed);
    }
    fleet.ready.fetch_add(1, Ordering::Relaxed);
    let mut last: [Option<u64>; SERIES] = [None; SERIES];
    loop {
        let c = *ctl.borrow_and_update();
        if c == STOP {
            break;
        }
        if stalled && c >= STALL {
            // Stop polling the socket entirely (it stays open) until told
            // to resume.
            while *ctl.borrow_and_update() < RESUME {
                if ctl.changed().await.is_err() {
                    break;
                }
            }
            if *ctl.borrow() == RESUME {
                drain_stalled(&mut ws, &mut rep).await;
            }
            return rep;
        }
        tokio::select! {
            biased;
            changed = ctl.changed() => if changed.is_err() { break },
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let now = now_ns();
                    let s = text.as_str();
                    if let Some((k, t, seq)) = scan(s) {
                        rep.received[k] += 1;
                        match last[k] {
                            None if seq > 0 => rep.gaps += seq,
                            Some(l) if seq > l + 1 => rep.gaps += seq - l - 1,
                            Some(l) if seq <= l => rep.reordered += 1,
                            _ => {}
                        }
                        if last[k].is_none_or(|l| seq > l) {
                            last[k] = Some(seq);
                        }
                        if !stalled {
                            let us = now.saturating_sub(t) / 1000;
                            fleet.hist[k].record(us);
                            if k == B_PROBE || k == B2_PROBE {
                                fleet.hist[B_ALL].record(us);
                            }
                            if let Some(w) = fleet.seq_worst[k].get(seq as usize) {
                                w.fetch_max(us, Ordering::Relaxed);
                                fleet.seq_sent[k][seq as usize].store(t, Ordering::Relaxed);
                            }
                            fleet.delivered[k].fetch_add(1, Ordering::Relaxed);
                        }
                    } else if !client::is_ping(s.as_bytes()) && s.contains("\"disconnect\"") {
                        fleet.error(format!("server said {s}"));
                        if s.contains("too_slow") {
                            rep.saw_too_slow = true;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None => {
                    rep.closed_by_server = true;
                    rep.ended_early = true;
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    fleet.error(format!("read: {e}"));
                    rep.ended_early = true;
                    break;
                }
            }
        }
    }
    if !stalled {
        fleet.readers_alive.fetch_sub(1, Ordering::Relaxed);
    }
    rep
}

/// A stalled client reads again: what was buffered for it, then how the
/// server ended the connection (if it did within 15 s).
async fn drain_stalled(ws: &mut client::Ws, rep: &mut ClientReport) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => {
                rep.still_open = true;
                return;
            }
            Ok(Some(Ok(Message::Text(text)))) => {
                rep.drained_bytes += text.len() as u64;
                if text.len() < 256 && text.as_str().contains("too_slow") {
                    rep.saw_too_slow = true;
                }
            }
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {
                rep.closed_by_server = true;
                return;
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Start `n` subscribers (`stalled(i)` says which stall in phase B) and
/// wait until all are subscribed or failed.
async fn connect_fleet(
    n: usize,
    stalled: impl Fn(usize) -> bool,
    target: &Arc<Target>,
    fleet: &Arc<Fleet>,
    concurrency: usize,
) -> Result<(Vec<tokio::task::JoinHandle<ClientReport>>, Duration)> {
    let frames = Arc::new(FleetFrames {
        all: Frames::new(None),
        stalled: Frames::new(Some("stalled")),
    });
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn(subscriber(
                stalled(i),
                target.clone(),
                frames.clone(),
                fleet.clone(),
                limit.clone(),
            ))
        })
        .collect();
    let mut last_report = Instant::now();
    loop {
        let ready = fleet.ready.load(Ordering::Relaxed);
        let failed = fleet.connect_failed.load(Ordering::Relaxed);
        if ready + failed >= n {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("  connecting: {ready} subscribed, {failed} failed of {n}");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = start.elapsed();
    let failed = fleet.connect_failed.load(Ordering::Relaxed);
    eprintln!(
        "  {} subscribed, {failed} failed in {:.1} s",
        fleet.ready.load(Ordering::Relaxed),
        took.as_secs_f64()
    );
    if failed > 0 {
        for (e, k) in fleet
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            eprintln!("  ×{k}: {e}");
        }
    }
    if fleet.ready.load(Ordering::Relaxed) == 0 {
        bail!("no client could subscribe");
    }
    Ok((tasks, took))
}

/// The `POST /_broadcast` body of one payload of `series` on `stream`.
fn body(stream: &str, series: usize, seq: u64, pad: &str) -> String {
    format!(
        r#"{{"stream":"{stream}","data":"{{\"k\":{series},\"t\":{t},\"seq\":{seq},\"pad\":\"{pad}\"}}"}}"#,
        t = now_ns()
    )
}

fn pad_for(payload_bytes: usize) -> String {
    // `{"k":1,"t":1700000000000000000,"seq":123,"pad":""}` is about 52 bytes.
    "x".repeat(payload_bytes.saturating_sub(52))
}

/// Send `series` on `stream` every `interval` (back to back when zero): at
/// least `min` messages, and until `until` is set when given. Returns how
/// many were sent.
async fn send_series(
    target: &Target,
    stream: &str,
    series: usize,
    min: u64,
    interval: Duration,
    pad: &str,
    until: Option<&AtomicBool>,
) -> Result<u64> {
    let [n, _] = send_series_switching(
        target,
        stream,
        [series, series],
        None,
        min,
        interval,
        pad,
        until,
    )
    .await?;
    Ok(n)
}

/// [`send_series`], moving from `series[0]` to `series[1]` (a sequence of
/// its own) once `switch` is set. Returns how many went to each.
#[allow(clippy::too_many_arguments)]
async fn send_series_switching(
    target: &Target,
    stream: &str,
    series: [usize; 2],
    switch: Option<&AtomicBool>,
    min: u64,
    interval: Duration,
    pad: &str,
    until: Option<&AtomicBool>,
) -> Result<[u64; 2]> {
    let mut http = HttpBroadcaster::connect(target).await?;
    let mut tick = (!interval.is_zero()).then(|| {
        let mut t = tokio::time::interval(interval);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut seq = [0u64; 2];
    while seq[0] + seq[1] < min || until.is_some_and(|u| !u.load(Ordering::Relaxed)) {
        if let Some(t) = &mut tick {
            t.tick().await;
        }
        let i = usize::from(switch.is_some_and(|s| s.load(Ordering::Relaxed)));
        http.post(&body(stream, series[i], seq[i], pad))
            .await
            .with_context(|| format!("broadcast on {stream}"))?;
        seq[i] += 1;
    }
    Ok(seq)
}

/// Server RSS and outbound queue bytes, sampled every 250 ms and labelled
/// with the phase running.
#[derive(Debug, Default, Clone, Copy)]
struct Sample {
    phase: u8,
    tcp_mem_pages: Option<u64>,
    rss_kib: Option<u64>,
    queue_bytes: Option<f64>,
}

fn start_sampler(
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

fn max_tcp_mem_mib(samples: &[Sample], phase: u8) -> Option<f64> {
    samples
        .iter()
        .filter(|s| s.phase == phase)
        .filter_map(|s| s.tcp_mem_pages)
        .max()
        .map(|p| p as f64 * 4096.0 / MIB)
}

fn max_in(samples: &[Sample], phase: u8) -> (Option<u64>, Option<f64>) {
    let s = samples.iter().filter(|s| s.phase == phase);
    let rss = s.clone().filter_map(|s| s.rss_kib).max();
    let q = s.filter_map(|s| s.queue_bytes).reduce(f64::max);
    (rss, q)
}

// ---------------------------------------------------------------------------
// slow

impl Fleet {
    /// The worst latency of `series` per second since `start_ns` (ms):
    /// `(second, worst)`.
    fn worst_per_second(&self, series: usize, start_ns: u64) -> Vec<(u64, f64)> {
        let mut by_sec: BTreeMap<u64, u64> = BTreeMap::new();
        for (w, t) in self.seq_worst[series].iter().zip(&self.seq_sent[series]) {
            let t = t.load(Ordering::Relaxed);
            if t == 0 {
                continue;
            }
            let sec = t.saturating_sub(start_ns) / 1_000_000_000;
            let e = by_sec.entry(sec).or_default();
            *e = (*e).max(w.load(Ordering::Relaxed));
        }
        by_sec
            .into_iter()
            .map(|(s, us)| (s, us as f64 / 1000.0))
            .collect()
    }
}

fn per_second_line(v: &[(u64, f64)]) -> String {
    v.iter()
        .map(|(s, ms)| format!("{s}s:{ms:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The kernel's TCP memory (all sockets, `/proc/net/sockstat`, pages) and
/// counters that show memory pressure and its effects
/// (`/proc/net/netstat`, `/proc/net/snmp`).
#[derive(Debug, Default, Clone)]
struct KernelTcp {
    mem_pages: Option<u64>,
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
    fn read() -> Self {
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

    fn delta(&self, later: &KernelTcp) -> BTreeMap<String, u64> {
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
    fn limits_mib() -> Option<(f64, f64)> {
        let s = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_mem").ok()?;
        let v: Vec<f64> = s
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        Some((*v.get(1)? * 4096.0 / MIB, *v.get(2)? * 4096.0 / MIB))
    }
}

const MIB: f64 = 1024.0 * 1024.0;

fn delta_line(d: &BTreeMap<String, u64>) -> String {
    d.iter()
        .map(|(k, v)| format!("{k} +{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// When things happened in phase B (from its start).
#[derive(Debug, Default, Clone, Copy)]
struct Timeline {
    /// Server queues held 256 KiB per stalled client on average (the
    /// kernel buffers are full).
    queues_filling: Option<Duration>,
    /// `keayl_slow_disconnects_total` rose first.
    first_slow: Option<Duration>,
    /// … rose by the number of stalled clients.
    slow_reached_n: Option<Duration>,
    /// `keayl_connections` fell to the number of reading clients.
    all_dropped: Option<Duration>,
}

impl Timeline {
    fn json(&self) -> Value {
        let s = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        json!({
            "queues_256k_each": s(self.queues_filling),
            "first_slow_disconnect": s(self.first_slow),
            "slow_disconnects_reach_stalled": s(self.slow_reached_n),
            "all_dropped": s(self.all_dropped),
        })
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("—".into(), |d| format!("{:.1} s", d.as_secs_f64()))
}

const A_PROBE: usize = 0;
/// Probes of phase B while the filler fills the stalled clients' kernel
/// buffers.
const B_PROBE: usize = 1;
const B_FILL: usize = 2;
/// Probes of phase B once the stalled clients' writes block: their server
/// queues grow, overflow, and the server drops them.
const B2_PROBE: usize = 3;
/// The histogram of all probes of phase B (not a wire series).
const B_ALL: usize = SERIES;

async fn slow(args: SlowArgs) -> Result<()> {
    check_fds(args.clients + 64)?;
    let server = Server::start(&args.server).await?;
    let target = Arc::new(target_for(server.addr));
    let fleet = Fleet::new();
    let pct = args.stalled_percent.min(100) as usize;
    let is_stalled = move |i: usize| i * pct / 100 != (i + 1) * pct / 100;
    let n_stalled = (0..args.clients).filter(|&i| is_stalled(i)).count();
    eprintln!(
        "slow: {} clients ({} to stall) against {}",
        args.clients, n_stalled, server.addr
    );
    let (tasks, connect_took) = connect_fleet(
        args.clients,
        is_stalled,
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
    let interval = Duration::from_millis(args.interval_ms.max(1));
    let probe_pad = pad_for(args.payload_bytes);
    let fill_pad = pad_for(args.fill_payload_bytes);
    let mut sent = [0u64; SERIES];

    // Phase A: control.
    eprintln!(
        "phase A: {} probes of {} B every {} ms, everyone reading",
        args.broadcasts, args.payload_bytes, args.interval_ms
    );
    let cpu_a = CpuWatch::start(&server);
    let kernel_a = KernelTcp::read();
    let start_a_ns = now_ns();
    let t_a = Instant::now();
    sent[A_PROBE] = send_series(
        &target,
        "all",
        A_PROBE,
        args.broadcasts,
        interval,
        &probe_pad,
        None,
    )
    .await?;
    let a_drained = fleet
        .wait_delivered(A_PROBE, sent[A_PROBE], Duration::from_secs(15))
        .await;
    let a_secs = t_a.elapsed().as_secs_f64();
    let cpu_a = cpu_a.read(&server);
    let kernel_a = kernel_a.delta(&KernelTcp::read());

    // Phase B: stall; the same probes, plus filler for the stalled clients
    // until the server has dropped them.
    phase.store(1, Ordering::Relaxed);
    let slow_before = server.metrics().await?.get("keayl_slow_disconnects_total");
    fleet.ctl.send_replace(STALL);
    tokio::time::sleep(Duration::from_millis(300)).await;
    eprintln!(
        "phase B: {n_stalled} clients stalled; probes as in A on `all`, plus {} B filler on `allstalled` ({}) until the server has dropped them",
        args.fill_payload_bytes,
        if args.fill_rate > 0.0 {
            format!("{}/s", args.fill_rate)
        } else {
            "back to back".into()
        }
    );
    let cpu_b = CpuWatch::start(&server);
    let kernel_b = KernelTcp::read();
    let start_b_ns = now_ns();
    let t_b = Instant::now();
    let fill_done = Arc::new(AtomicBool::new(false));
    let blocked = Arc::new(AtomicBool::new(false));
    let fill = {
        let (target, fill_done) = (target.clone(), fill_done.clone());
        let interval = if args.fill_rate > 0.0 {
            Duration::from_secs_f64(1.0 / args.fill_rate)
        } else {
            Duration::ZERO
        };
        tokio::spawn(async move {
            send_series(
                &target,
                "allstalled",
                B_FILL,
                0,
                interval,
                &fill_pad,
                Some(&fill_done),
            )
            .await
        })
    };
    let watcher = {
        let probe = server.probe();
        let fleet = fleet.clone();
        let fill_done = fill_done.clone();
        let limit = Duration::from_secs(args.fill_timeout_secs);
        let slow0 = slow_before.unwrap_or(0.0);
        let n = n_stalled as f64;
        let blocked = blocked.clone();
        tokio::spawn(async move {
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
        })
    };
    let probes_b = send_series_switching(
        &target,
        "all",
        [B_PROBE, B2_PROBE],
        Some(&blocked),
        args.broadcasts,
        interval,
        &probe_pad,
        Some(&fill_done),
    )
    .await;
    fill_done.store(true, Ordering::Relaxed);
    let timeline = watcher.await.unwrap_or_default();
    let stalled_gone_after = timeline.all_dropped;
    [sent[B_PROBE], sent[B2_PROBE]] = probes_b?;
    sent[B_FILL] = fill.await??;
    let b_drained = fleet
        .wait_delivered(B_PROBE, sent[B_PROBE], Duration::from_secs(15))
        .await
        && fleet
            .wait_delivered(B2_PROBE, sent[B2_PROBE], Duration::from_secs(15))
            .await;
    let b_secs = t_b.elapsed().as_secs_f64();
    let cpu_b = cpu_b.read(&server);
    let kernel_b = kernel_b.delta(&KernelTcp::read());
    let after_b = server.snapshot().await?;

    // After: settle, then resume the stalled clients to see what they got.
    phase.store(2, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server.snapshot().await?;
    sampler_stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap_or_default();
    fleet.ctl.send_replace(RESUME);
    // Stalled clients drain for up to 15 s; readers keep reading meanwhile.
    let mut reports = Vec::with_capacity(tasks.len());
    let (stalled_tasks, reader_tasks): (Vec<_>, Vec<_>) = tasks
        .into_iter()
        .enumerate()
        .partition(|(i, _)| is_stalled(*i));
    for (_, t) in stalled_tasks {
        reports.push(t.await?);
    }
    fleet.ctl.send_replace(STOP);
    for (_, t) in reader_tasks {
        reports.push(t.await?);
    }

    // Figures.
    let readers_reports: Vec<&ClientReport> = reports
        .iter()
        .filter(|r| r.connected && !r.stalled)
        .collect();
    let stalled_reports: Vec<&ClientReport> = reports
        .iter()
        .filter(|r| r.connected && r.stalled)
        .collect();
    let lost_in = |k: usize| -> u64 {
        readers_reports
            .iter()
            .map(|r| sent[k].saturating_sub(r.received[k]))
            .sum()
    };
    let lost_total = lost_in(A_PROBE) + lost_in(B_PROBE) + lost_in(B2_PROBE);
    let gaps: u64 = readers_reports.iter().map(|r| r.gaps).sum();
    let reordered: u64 = readers_reports.iter().map(|r| r.reordered).sum();
    let readers_dropped = readers_reports.iter().filter(|r| r.ended_early).count();
    let readers_got_fill: u64 = readers_reports.iter().map(|r| r.received[B_FILL]).sum();
    let too_slow_seen = stalled_reports.iter().filter(|r| r.saw_too_slow).count();
    let stalled_closed = stalled_reports
        .iter()
        .filter(|r| r.closed_by_server)
        .count();
    let stalled_open = stalled_reports.iter().filter(|r| r.still_open).count();
    let drained_avg = if stalled_reports.is_empty() {
        0.0
    } else {
        stalled_reports.iter().map(|r| r.drained_bytes).sum::<u64>() as f64
            / stalled_reports.len() as f64
    };
    let slow_delta = match (slow_before, after_b.slow_disconnects) {
        (Some(b), Some(a)) => Some(a - b),
        _ => None,
    };
    let (a, b, b1, b2) = (
        fleet.hist[A_PROBE].summary(),
        fleet.hist[B_ALL].summary(),
        fleet.hist[B_PROBE].summary(),
        fleet.hist[B2_PROBE].summary(),
    );
    let rise = b.p99_ms - a.p99_ms;
    let rise2 = b2.p99_ms - a.p99_ms;
    let b1_secs = timeline.queues_filling.map_or(b_secs, |d| d.as_secs_f64());
    let (rss_a, q_a) = max_in(&samples, 0);
    let (rss_b, q_b) = max_in(&samples, 1);
    let fill_mib_per_stalled =
        sent[B_FILL] as f64 * args.fill_payload_bytes as f64 / (1024.0 * 1024.0);

    println!();
    println!(
        "== slow clients: {} subscribed ({} reading, {} stalled in B), connected in {:.1} s ==",
        fleet.ready.load(Ordering::Relaxed),
        readers,
        stalled_reports.len(),
        connect_took.as_secs_f64()
    );
    println!(
        "{:<34} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6}",
        "phase (reading clients' probes)",
        "sent",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "mean ms",
        "lost",
        "secs"
    );
    let row = |label: &str, ks: &[usize], sm: &Summary, secs: f64| {
        println!(
            "{:<34} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>6.1}",
            label,
            ks.iter().map(|&k| sent[k]).sum::<u64>(),
            sm.p50_ms,
            sm.p95_ms,
            sm.p99_ms,
            sm.max_ms,
            sm.mean_ms,
            ks.iter().map(|&k| lost_in(k)).sum::<u64>(),
            secs
        )
    };
    row("A control (nobody stalled)", &[A_PROBE], &a, a_secs);
    row(
        &format!("B {} % stalled (all of B)", args.stalled_percent),
        &[B_PROBE, B2_PROBE],
        &b,
        b_secs,
    );
    row(" B1 filling their kernel buffers", &[B_PROBE], &b1, b1_secs);
    row(
        " B2 blocked → overflow → dropped",
        &[B2_PROBE],
        &b2,
        b_secs - b1_secs,
    );
    println!(
        "p99 rise B vs A: {rise:+.2} ms (target ≤ 5 ms: {});  B2 (stalled clients blocked and being dropped, no more filler writes) vs A: {rise2:+.2} ms ({})",
        yes_no(rise <= 5.0),
        yes_no(rise2 <= 5.0)
    );
    println!(
        "lost deliveries among reading clients: {lost_total} (target 0: {}); sequence gaps {gaps}, reordered {reordered}; readers disconnected {readers_dropped}; filler seen by readers {readers_got_fill} (must be 0); all delivered within 15 s: A {a_drained}, B {b_drained}",
        yes_no(lost_total == 0 && readers_dropped == 0)
    );
    println!(
        "filler: {} broadcasts of {} B on `allstalled` = {fill_mib_per_stalled:.1} MiB per stalled client",
        sent[B_FILL], args.fill_payload_bytes
    );
    println!(
        "stalled clients: {} — all dropped by the server after {}; keayl_slow_disconnects_total +{} during B; on resuming: {} closed by the server ({} got the too_slow message first), {} still open; {:.0} KiB were buffered for each on average (kernel socket buffers: sent before the server queue started to fill)",
        stalled_reports.len(),
        stalled_gone_after.map_or("NOT within the timeout".into(), |d| format!(
            "{:.1} s",
            d.as_secs_f64()
        )),
        num(slow_delta),
        stalled_closed,
        too_slow_seen,
        stalled_open,
        drained_avg / 1024.0
    );
    println!(
        "B timeline: server queues ≥ 256 KiB per stalled client at {}; first slow disconnect counted at {}; counter +{} (one per stalled client) at {}; all stalled connections closed at {}",
        secs(timeline.queues_filling),
        secs(timeline.first_slow),
        n_stalled,
        secs(timeline.slow_reached_n),
        secs(timeline.all_dropped)
    );
    println!(
        "server RSS: {} with everyone subscribed; max {} in A, {} in B; {} after",
        mib(base.rss_kib),
        mib(rss_a),
        mib(rss_b),
        mib(after.rss_kib)
    );
    println!(
        "outbound queue bytes (sum over connections; broadcast frames are shared): max {} in A, {} in B; {} after",
        num(q_a),
        num(q_b),
        num(after.queue_bytes)
    );
    println!("{}", cpu_line("A", cpu_a));
    println!("{}", cpu_line("B", cpu_b));
    let worst_a = fleet.worst_per_second(A_PROBE, start_a_ns);
    let mut worst_b = fleet.worst_per_second(B_PROBE, start_b_ns);
    worst_b.extend(fleet.worst_per_second(B2_PROBE, start_b_ns));
    worst_b.sort_by_key(|w| w.0);
    worst_b.dedup_by(|later, earlier| {
        if later.0 == earlier.0 {
            earlier.1 = earlier.1.max(later.1);
            true
        } else {
            false
        }
    });
    println!(
        "worst probe latency per second of A (ms): {}",
        per_second_line(&worst_a)
    );
    println!(
        "worst probe latency per second of B (ms): {}",
        per_second_line(&worst_b)
    );
    let (mem_a, mem_b) = (max_tcp_mem_mib(&samples, 0), max_tcp_mem_mib(&samples, 1));
    let limits = KernelTcp::limits_mib();
    println!(
        "kernel TCP memory (all sockets on the machine): max {} in A, {} in B; tcp_mem pressure threshold {}, max {}",
        mem_a.map_or("n/a".into(), |m| format!("{m:.0} MiB")),
        mem_b.map_or("n/a".into(), |m| format!("{m:.0} MiB")),
        limits.map_or("n/a".into(), |l| format!("{:.0} MiB", l.0)),
        limits.map_or("n/a".into(), |l| format!("{:.0} MiB", l.1)),
    );
    println!("kernel TCP counters during A: {}", delta_line(&kernel_a));
    println!("kernel TCP counters during B: {}", delta_line(&kernel_b));
    let errors = fleet
        .errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for (e, n) in errors.iter().take(10) {
        println!("  client note ×{n}: {e}");
    }
    let out = json!({
        "bench": "slow",
        "clients": args.clients,
        "readers": readers,
        "stalled": stalled_reports.len(),
        "settings": {
            "broadcasts": args.broadcasts, "interval_ms": args.interval_ms,
            "payload_bytes": args.payload_bytes, "fill_payload_bytes": args.fill_payload_bytes,
            "fill_rate": args.fill_rate,
        },
        "sent": {"a_probes": sent[A_PROBE], "b1_probes": sent[B_PROBE], "b2_probes": sent[B2_PROBE], "b_fill": sent[B_FILL]},
        "latency_ms": {"a": a, "b": b, "b1": b1, "b2": b2},
        "p99_rise_ms": rise,
        "p99_rise_b2_ms": rise2,
        "lost_deliveries": lost_total,
        "gaps": gaps,
        "reordered": reordered,
        "readers_disconnected": readers_dropped,
        "stalled_dropped_secs": stalled_gone_after.map(|d| d.as_secs_f64()),
        "b_timeline_secs": timeline.json(),
        "slow_disconnects_delta": slow_delta,
        "stalled_closed_by_server": stalled_closed,
        "stalled_saw_too_slow": too_slow_seen,
        "stalled_still_open": stalled_open,
        "stalled_buffered_kib_avg": drained_avg / 1024.0,
        "rss_kib": {"subscribed": base.rss_kib, "max_a": rss_a, "max_b": rss_b, "after": after.rss_kib},
        "outbound_queue_bytes": {"max_a": q_a, "max_b": q_b, "after": after.queue_bytes},
        "seconds": {"a": a_secs, "b": b_secs},
        "server_cpu_pct": {"a": cpu_a.0, "b": cpu_b.0},
        "machine_busy_pct": {"a": cpu_a.1, "b": cpu_b.1},
        "worst_ms_per_second": {"a": worst_a, "b": worst_b},
        "kernel_tcp_mem_mib": {"max_a": mem_a, "max_b": mem_b,
                               "pressure_threshold": limits.map(|l| l.0), "max": limits.map(|l| l.1)},
        "kernel_tcp_counters": {"a": kernel_a, "b": kernel_b},
        "targets": {"p99_rise_le_5ms": rise <= 5.0, "p99_rise_b2_le_5ms": rise2 <= 5.0,
                    "no_lost": lost_total == 0 && readers_dropped == 0,
                    "stalled_dropped": stalled_gone_after.is_some()},
    });
    println!("{out}");
    Ok(())
}

// ---------------------------------------------------------------------------
// soak

async fn soak(args: SoakArgs) -> Result<()> {
    check_fds(args.clients + 64)?;
    let server = Server::start(&args.server).await?;
    let target = Arc::new(target_for(server.addr));
    let fleet = Fleet::new();
    eprintln!(
        "soak: {} clients, {} broadcast(s)/s of {} B for {} min against {}",
        args.clients, args.rate, args.payload_bytes, args.minutes, server.addr
    );
    let (tasks, connect_took) = connect_fleet(
        args.clients,
        |_| false,
        &target,
        &fleet,
        args.connect_concurrency,
    )
    .await?;
    let readers = fleet.readers_alive.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base = server.snapshot().await?;
    let pad = pad_for(args.payload_bytes);
    let duration = Duration::from_secs_f64((args.minutes * 60.0).max(0.0));
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(0.001));
    let sample_every = Duration::from_secs_f64(args.sample_secs.max(0.5));

    let cpu = CpuWatch::start(&server);
    let start = Instant::now();
    let mut http = HttpBroadcaster::connect(&target).await?;
    let mut tick = tokio::time::interval(interval);
    let mut sample_tick = tokio::time::interval(sample_every);
    let mut rss: Vec<(f64, Option<u64>)> = Vec::new();
    let mut sent = 0u64;
    let mut send_errors = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if start.elapsed() >= duration {
                    break;
                }
                match http.post(&body("all", 0, sent, &pad)).await {
                    Ok(()) => sent += 1,
                    Err(e) => {
                        send_errors += 1;
                        eprintln!("  broadcast failed: {}", short_error(&e));
                        http = HttpBroadcaster::connect(&target).await?;
                    }
                }
            }
            _ = sample_tick.tick() => {
                let at = start.elapsed().as_secs_f64();
                let r = server.rss_kib();
                let conns = server.metrics().await.ok().and_then(|m| m.get("keayl_connections"));
                eprintln!(
                    "  {at:>6.0} s  RSS {}  connections {}  sent {sent}  delivered {}",
                    mib(r),
                    num(conns),
                    fleet.delivered[0].load(Ordering::Relaxed)
                );
                rss.push((at, r));
            }
        }
    }
    let drained = fleet.wait_delivered(0, sent, Duration::from_secs(10)).await;
    let secs = start.elapsed().as_secs_f64();
    let cpu_use = cpu.read(&server);
    rss.push((secs, server.rss_kib()));
    let after = server.snapshot().await?;
    fleet.ctl.send_replace(STOP);
    let mut reports = Vec::with_capacity(tasks.len());
    for t in tasks {
        reports.push(t.await?);
    }
    let connected: Vec<&ClientReport> = reports.iter().filter(|r| r.connected).collect();
    let lost: u64 = connected
        .iter()
        .map(|r| sent.saturating_sub(r.received[0]))
        .sum();
    let gaps: u64 = connected.iter().map(|r| r.gaps).sum();
    let reordered: u64 = connected.iter().map(|r| r.reordered).sum();
    let dropped = connected.iter().filter(|r| r.ended_early).count();
    let lat = fleet.hist[0].summary();
    let values: Vec<u64> = rss.iter().filter_map(|(_, r)| *r).collect();
    let (first, last) = (values.first().copied(), values.last().copied());
    let (min, max) = (values.iter().min().copied(), values.iter().max().copied());
    let drift = pct_change(first, last);
    let spread = match (min, max) {
        (Some(lo), Some(hi)) if lo > 0 => Some(100.0 * (hi - lo) as f64 / lo as f64),
        _ => None,
    };
    // The first broadcasts allocate the server's write buffers: the same
    // figures from 20 s on (or the second half of a short run).
    let settle = (secs / 2.0).min(20.0);
    let settled: Vec<u64> = rss
        .iter()
        .filter(|(t, _)| *t >= settle)
        .filter_map(|(_, r)| *r)
        .collect();
    let (settled_min, settled_max) = (settled.iter().min().copied(), settled.iter().max().copied());
    let settled_spread = match (settled_min, settled_max) {
        (Some(lo), Some(hi)) if lo > 0 => Some(100.0 * (hi - lo) as f64 / lo as f64),
        _ => None,
    };

    println!();
    println!(
        "== soak: {} clients ({} subscribed in {:.1} s), {} broadcasts of {} B over {:.1} s ==",
        args.clients,
        readers,
        connect_took.as_secs_f64(),
        sent,
        args.payload_bytes,
        secs
    );
    println!(
        "deliveries          {} of {} expected; lost {lost} (target 0: {}); gaps {gaps}, reordered {reordered}; clients disconnected {dropped}; broadcast errors {send_errors}; all delivered in time: {drained}",
        fleet.delivered[0].load(Ordering::Relaxed),
        sent * readers as u64,
        yes_no(lost == 0 && dropped == 0)
    );
    println!(
        "latency             p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        lat.p50_ms, lat.p95_ms, lat.p99_ms, lat.max_ms, lat.count
    );
    println!(
        "server RSS          before {}; first {}, last {}, min {}, max {} over {} samples; last vs first {}, max vs min {}",
        mib(base.rss_kib),
        mib(first),
        mib(last),
        mib(min),
        mib(max),
        values.len(),
        drift.map_or("n/a".into(), |p| format!("{p:+.1} %")),
        spread.map_or("n/a".into(), |p| format!("{p:.1} %"))
    );
    println!(
        "server RSS from {settle:.0} s on: min {}, max {} over {} samples; max vs min {}",
        mib(settled_min),
        mib(settled_max),
        settled.len(),
        settled_spread.map_or("n/a".into(), |p| format!("{p:.1} %"))
    );
    println!(
        "server              alive tasks {} → {}, subscriptions {} → {}, outbound queue {} B at the end",
        num(base.tasks),
        num(after.tasks),
        num(base.subscriptions),
        num(after.subscriptions),
        num(after.queue_bytes)
    );
    println!("{}", cpu_line("during the soak", cpu_use));
    let errors = fleet
        .errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for (e, n) in errors.iter().take(10) {
        println!("  client note ×{n}: {e}");
    }
    let out = json!({
        "bench": "soak",
        "clients": args.clients,
        "subscribed": readers,
        "minutes": args.minutes,
        "rate": args.rate,
        "payload_bytes": args.payload_bytes,
        "sent": sent,
        "delivered": fleet.delivered[0].load(Ordering::Relaxed),
        "lost_deliveries": lost,
        "gaps": gaps,
        "reordered": reordered,
        "clients_disconnected": dropped,
        "broadcast_errors": send_errors,
        "latency_ms": lat,
        "rss_kib": {"before": base.rss_kib, "first": first, "last": last, "min": min, "max": max,
                    "samples": rss.iter().map(|(t, r)| json!([t, r])).collect::<Vec<_>>()},
        "rss_drift_pct": drift,
        "rss_spread_pct": spread,
        "rss_settled": {"from_secs": settle, "min": settled_min, "max": settled_max, "spread_pct": settled_spread},
        "before": base.json(),
        "after": after.json(),
        "server_cpu_pct": cpu_use.0,
        "machine_busy_pct": cpu_use.1,
        "targets": {"no_lost": lost == 0 && dropped == 0},
    });
    println!("{out}");
    Ok(())
}
