//! `keayl-attack-bench`: how `keayl-demo` withstands attacks at its HTTP
//! edge, over loopback only. It prints figures, not pass/fail tests: a
//! table per attack (unless `--json`) and one JSON line per attack, each
//! with a verdict (`resisted` / `vulnerable`) against a stated criterion.
//!
//! ```text
//! cargo build --release -p keayl-demo
//! cargo build --release -p keayl-bench --bin keayl-attack-bench
//! ulimit -n 20000       # in the same shell: the idle attack holds 19,900 sockets
//! target/release/keayl-attack-bench all --quick                  # every attack, small (~1 min)
//! target/release/keayl-attack-bench idle --sockets 19900 --hold 30
//! target/release/keayl-attack-bench slowloris --sockets 500
//! target/release/keayl-attack-bench partial-headers --sockets 2000
//! target/release/keayl-attack-bench broadcast-body --sockets 400
//! target/release/keayl-attack-bench subscriptions --conns 100 --subs 256 [--channel benchmark]
//! target/release/keayl-attack-bench sse-cycles --cycles 10000
//! target/release/keayl-attack-bench storm --limit 2000
//! ```
//!
//! Every attack starts a fresh `keayl-demo` (`--demo`, default
//! `target/release/keayl-demo`, relative to the current directory) on a free
//! port of 127.0.0.1 with `RUST_LOG=warn` and `NO_COLOR=1`, counts the
//! bytes it logs (stdout and stderr), reads its RSS from `/proc/<pid>/status` (sampled
//! every 200 ms for the peak) and its gauges from `GET /metrics`, and kills
//! it at the end. Client sockets come from 127.0.0.2–127.0.0.9 in turn.
//!
//! - **idle**: N TCP connections that never send a byte; `GET /health` on a
//!   new connection every second for `--hold` s; how many the server has
//!   closed 5, 12 and 20 s after all were open.
//! - **slowloris**: N connections send `GET /cable HTTP/1.1` and a `Host`
//!   line, then one header byte (`X-a: b\r\n`, in turn) every `--every` s;
//!   N more send a complete WebSocket upgrade request for `/cable` without
//!   its final CRLF, then trickle the same way. Sockets still open at two
//!   checkpoints.
//! - **partial-headers**: N connections each send ~380 KB of header lines
//!   (`X-Pad-i: <1000 bytes>\r\n`) as fast as the server reads, never the
//!   final CRLF: the server's peak RSS growth, its answers (431…), the time
//!   until it closed each.
//! - **broadcast-body**: the demo runs with `--broadcast-secret s3cret`; N
//!   connections `POST /_broadcast` with a wrong secret and
//!   `Content-Length: 2000000` and never send the body, N more without
//!   `Authorization` trickle the body one byte a second: time until each is
//!   answered, RSS; then 4 keep-alive clients hammer with a wrong secret
//!   and the demo's log volume per second is measured.
//! - **subscriptions**: C WebSocket connections each send S subscribes
//!   whose identifier carries a 4 KiB parameter (`ChatChannel` `room`, or
//!   `BenchmarkChannel` `id` with `--channel benchmark`) and a distinct
//!   `n`: confirmed, rejected and ignored subscribes, RSS growth.
//! - **sse-cycles**: N cycles of `GET /sse/attack`, read until `: subscribed`,
//!   close (50 in flight); `keayl_runtime_alive_tasks` and
//!   `keayl_subscriptions` before and 3 s after.
//! - **storm**: the demo runs with `--max-connections L`; 2×L WebSocket
//!   clients connect at once: welcomed, refused with HTTP 503, the peak of
//!   `keayl_connections` (and `keayl_http_connections` if exported),
//!   `/health` meanwhile. Skipped when the demo has no such flag.
//! - **all**: every attack in turn, with its defaults (or `--quick` values).
//!
//! At start the open-file soft limit is raised to the hard limit (with
//! `prlimit`, when installed); each attack checks that the sockets it needs
//! fit and says to run `ulimit -n 20000` when they do not. The demo inherits
//! the limit (20,000 per process on the reference machine).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use keayl_bench::client::{Target, Ws, is_confirm, is_ping, is_reject, is_welcome};
use keayl_bench::procfs;
use keayl_bench::stats::median;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

// ---------------------------------------------------------------------------
// Command line.

/// HTTP-edge attacks on keayl-demo, over loopback: figures and verdicts.
#[derive(Debug, Parser)]
#[command(name = "keayl-attack-bench", version, about)]
struct Cli {
    /// The demo server binary, started afresh for every attack.
    #[arg(long, global = true, default_value = "target/release/keayl-demo")]
    demo: PathBuf,
    /// Small counts and short durations (`all --quick` takes about a minute).
    #[arg(long, global = true)]
    quick: bool,
    /// Print only the JSON lines (one per attack), no tables.
    #[arg(long, global = true)]
    json: bool,
    /// Exit with an error when any attack is judged vulnerable (CI).
    #[arg(long, global = true)]
    strict: bool,
    #[command(subcommand)]
    attack: Attack,
}

#[derive(Debug, Clone, Subcommand)]
enum Attack {
    /// TCP connections that never send a byte; /health probed meanwhile.
    Idle(IdleArgs),
    /// Request heads trickled one byte at a time (plain GET and WebSocket upgrade).
    Slowloris(SlowlorisArgs),
    /// ~380 KB of header lines per connection, never finished.
    PartialHeaders(PartialArgs),
    /// Unauthenticated POST /_broadcast with a 2 MB body announced, sent slowly or never.
    BroadcastBody(BodyArgs),
    /// Many subscribes with 4 KiB identifiers on many WebSocket connections.
    Subscriptions(SubsArgs),
    /// Open/close cycles of `GET /sse/<stream>`: leaked tasks and subscriptions.
    SseCycles(SseArgs),
    /// 2×L WebSocket clients at once against --max-connections L.
    Storm(StormArgs),
    /// Every attack in turn, with its defaults (or --quick values).
    All,
}

#[derive(Debug, Clone, Default, Args)]
struct IdleArgs {
    /// Idle connections [default: 19900; --quick: 2000].
    #[arg(long)]
    sockets: Option<usize>,
    /// Seconds to hold them while probing /health [default: 30; --quick: 15].
    #[arg(long)]
    hold: Option<u64>,
}

#[derive(Debug, Clone, Default, Args)]
struct SlowlorisArgs {
    /// Connections per variant (plain GET, WebSocket upgrade) [default: 500].
    #[arg(long)]
    sockets: Option<usize>,
    /// Seconds between two trickled header bytes [default: 10; --quick: 3].
    #[arg(long)]
    every: Option<u64>,
}

#[derive(Debug, Clone, Default, Args)]
struct PartialArgs {
    /// Connections [default: 2000; --quick: 300].
    #[arg(long)]
    sockets: Option<usize>,
    /// Header lines of 1,000 bytes each connection sends [default: 380].
    #[arg(long)]
    lines: Option<usize>,
    /// Seconds to wait for the server to close them all [default: 30; --quick: 13].
    #[arg(long)]
    hold: Option<u64>,
}

#[derive(Debug, Clone, Default, Args)]
struct BodyArgs {
    /// Connections per variant (wrong secret + no body, no secret + slow
    /// body) [default: 400; --quick: 100].
    #[arg(long)]
    sockets: Option<usize>,
    /// Seconds to wait for their answers [default: 10; --quick: 4].
    #[arg(long)]
    wait: Option<u64>,
    /// Seconds of wrong-secret hammering for the log volume [default: 5; --quick: 3].
    #[arg(long)]
    hammer: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum SubChannel {
    /// `ChatChannel` with the parameter as `room`.
    #[default]
    Chat,
    /// `BenchmarkChannel` with the parameter as `id`.
    Benchmark,
}

#[derive(Debug, Clone, Default, Args)]
struct SubsArgs {
    /// WebSocket connections [default: 100; --quick: 20].
    #[arg(long)]
    conns: Option<usize>,
    /// Subscribes per connection [default: 256; --quick: 64].
    #[arg(long)]
    subs: Option<usize>,
    /// Bytes of the big parameter in each identifier [default: 4096].
    #[arg(long)]
    param_bytes: Option<usize>,
    /// Which channel to subscribe to.
    #[arg(long, value_enum, default_value_t)]
    channel: SubChannel,
}

#[derive(Debug, Clone, Default, Args)]
struct SseArgs {
    /// Open/read/close cycles [default: 10000; --quick: 1000].
    #[arg(long)]
    cycles: Option<usize>,
    /// Cycles in flight at once [default: 50].
    #[arg(long)]
    concurrency: Option<usize>,
}

#[derive(Debug, Clone, Default, Args)]
struct StormArgs {
    /// The demo's --max-connections; 2× as many clients connect [default: 2000; --quick: 500].
    #[arg(long)]
    limit: Option<usize>,
}

/// `given`, or the default of the full or the quick run.
fn pick<T>(given: Option<T>, full: T, quick: T, q: bool) -> T {
    given.unwrap_or(if q { quick } else { full })
}

#[derive(Debug, Clone)]
struct Ctx {
    demo: PathBuf,
    quick: bool,
}

// ---------------------------------------------------------------------------
// Small helpers.

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn ms(d: Duration) -> f64 {
    r1(d.as_secs_f64() * 1e3)
}

/// Rounded to one decimal.
fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn growth_mib(before: Option<u64>, after: Option<u64>) -> Option<f64> {
    Some(r1((after? as f64 - before? as f64) / 1024.0))
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or("n/a".into(), |v| format!("{v}{unit}"))
}

fn short(e: &anyhow::Error) -> String {
    let s = format!("{e:#}");
    match s.char_indices().nth(160) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// ` (first failure: …)`, or nothing.
fn first_of(error: Option<&str>) -> String {
    error.map_or(String::new(), |e| format!(" (first failure: {e})"))
}

fn note(msg: impl AsRef<str>) {
    eprintln!("[attack-bench] {}", msg.as_ref());
}

/// `Max open files` soft and hard limits of this process.
fn nofile_limits() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut it = line["Max open files".len()..].split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Raise the soft open-file limit to the hard one (`prlimit` on this
/// process: no libc here, and unsafe code is forbidden).
fn raise_nofile() {
    let Some((soft, hard)) = nofile_limits() else {
        return;
    };
    if soft < hard {
        let _ = std::process::Command::new("prlimit")
            .arg(format!("--pid={}", std::process::id()))
            .arg(format!("--nofile={hard}:{hard}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    if let Some((soft, hard)) = nofile_limits() {
        note(format!("open-file limit: soft {soft}, hard {hard}"));
    }
}

// ---------------------------------------------------------------------------
// HTTP on a fresh connection.

fn parse_status(head: &[u8]) -> Option<u16> {
    if head.len() < 12 || !head.starts_with(b"HTTP/1.") {
        return None;
    }
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// `GET path` with `Connection: close`: status and body.
async fn http_get(addr: SocketAddr, path: &str, limit: Duration) -> Result<(u16, String)> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.context("connect")?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::with_capacity(8 * 1024);
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let buf = timeout(limit, exchange)
        .await
        .with_context(|| format!("GET {path}: no answer within {limit:?}"))??;
    let status = parse_status(&buf).with_context(|| format!("GET {path}: no HTTP status"))?;
    let text = String::from_utf8_lossy(&buf);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_owned()))
}

/// `GET /health` answered 200: the latency.
async fn health_once(addr: SocketAddr) -> Result<Duration> {
    let start = Instant::now();
    let (status, _) = http_get(addr, "/health", Duration::from_secs(5)).await?;
    if status != 200 {
        bail!("/health answered {status}");
    }
    Ok(start.elapsed())
}

type Metrics = BTreeMap<String, f64>;

/// The unlabelled samples of `GET /metrics`.
async fn metrics(addr: SocketAddr) -> Result<Metrics> {
    let (status, body) = http_get(addr, "/metrics", Duration::from_secs(5)).await?;
    if status != 200 {
        bail!("/metrics answered {status}");
    }
    let mut m = Metrics::new();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        if let Some((name, value)) = line.rsplit_once(' ')
            && let Ok(v) = value.trim().parse::<f64>()
        {
            m.insert(name.trim().to_owned(), v);
        }
    }
    Ok(m)
}

// ---------------------------------------------------------------------------
// The demo process.

/// What the demo wrote to stdout and stderr.
#[derive(Debug, Default)]
struct LogCount {
    bytes: AtomicU64,
    lines: AtomicU64,
    head: Mutex<String>,
}

impl LogCount {
    fn add(&self, chunk: &[u8]) {
        self.bytes.fetch_add(chunk.len() as u64, Relaxed);
        let newlines = chunk.iter().filter(|&&b| b == b'\n').count();
        self.lines.fetch_add(newlines as u64, Relaxed);
        let mut head = lock(&self.head);
        let room = 4096usize.saturating_sub(head.len());
        head.push_str(&String::from_utf8_lossy(&chunk[..chunk.len().min(room)]));
    }

    fn first_line(&self) -> Option<String> {
        let head = lock(&self.head);
        let line = head.lines().find(|l| !l.trim().is_empty())?;
        Some(strip_ansi(line).chars().take(200).collect())
    }
}

/// `text` without ANSI colour sequences (`ESC [ … m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out
}

fn count_log(pipe: Option<impl AsyncRead + Unpin + Send + 'static>, log: &Arc<LogCount>) {
    let Some(mut pipe) = pipe else { return };
    let log = log.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = pipe.read(&mut buf).await {
            if n == 0 {
                break;
            }
            log.add(&buf[..n]);
        }
    });
}

/// A `keayl-demo` child process (killed on drop).
#[derive(Debug)]
struct Demo {
    addr: SocketAddr,
    pid: u32,
    child: Child,
    log: Arc<LogCount>,
}

impl Demo {
    /// Start the demo on a free loopback port with `extra` arguments; wait
    /// until `/health` answers 200. The error carries what the demo printed
    /// if it exited.
    async fn start(ctx: &Ctx, extra: &[&str]) -> Result<Demo> {
        if !ctx.demo.exists() {
            bail!(
                "{} not found: run `cargo build --release -p keayl-demo` or pass --demo",
                ctx.demo.display()
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut child = Command::new(&ctx.demo)
            .arg("--addr")
            .arg(addr.to_string())
            .args(extra)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .env_remove("KEAYL_BROADCAST_SECRET")
            .env_remove("KEAYL_ADDR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", ctx.demo.display()))?;
        let log = Arc::new(LogCount::default());
        count_log(child.stdout.take(), &log);
        count_log(child.stderr.take(), &log);
        let pid = child.id().context("the demo exited at once")?;
        let mut demo = Demo {
            addr,
            pid,
            child,
            log,
        };
        demo.wait_healthy().await?;
        note(format!("demo pid {pid} on {addr} {}", extra.join(" ")));
        Ok(demo)
    }

    async fn wait_healthy(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait()? {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let said = lock(&self.log.head).trim().to_owned();
                bail!("the demo exited ({status}): {said}");
            }
            match health_once(self.addr).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context("the demo never answered /health"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    fn target(&self) -> Target {
        Target::new(self.addr)
    }

    fn rss(&self) -> Option<u64> {
        procfs::rss_kib(self.pid)
    }

    fn log_bytes(&self) -> u64 {
        self.log.bytes.load(Relaxed)
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kill and reap it; whether it was still running.
    async fn stop(mut self) -> bool {
        let alive = self.alive();
        if let Some(line) = self.log.first_line() {
            let (bytes, lines) = (self.log_bytes(), self.log.lines.load(Relaxed));
            note(format!(
                "demo logged {bytes} bytes, {lines} lines; first: {line}"
            ));
        }
        let _ = self.child.kill().await;
        alive
    }
}

// ---------------------------------------------------------------------------
// Background watchers: /health probes, RSS and gauge peaks.

#[derive(Debug, Clone, Default, Serialize)]
struct ProbeStats {
    probes: usize,
    ok: usize,
    failed: usize,
    median_ms: Option<f64>,
    max_ms: Option<f64>,
    /// The first few failures, with the time since probing started.
    failures: Vec<String>,
}

impl ProbeStats {
    fn all_ok(&self) -> bool {
        self.probes > 0 && self.failed == 0
    }

    fn line(&self) -> String {
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
struct Prober {
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<(f64, Result<f64, String>)>>,
}

impl Prober {
    fn start(addr: SocketAddr) -> Prober {
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

    async fn finish(self) -> ProbeStats {
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
struct Peaks {
    rss_kib: Option<u64>,
    gauges: BTreeMap<String, f64>,
    metric_failures: usize,
}

/// Samples the demo's RSS (and, optionally, gauges of /metrics) for peaks.
#[derive(Debug)]
struct Sampler {
    stop: watch::Sender<bool>,
    task: JoinHandle<Peaks>,
}

impl Sampler {
    fn rss(pid: u32) -> Sampler {
        Sampler::start(pid, None, &[])
    }

    fn start(pid: u32, addr: Option<SocketAddr>, gauges: &'static [&'static str]) -> Sampler {
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

    async fn finish(self) -> Peaks {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------
// A fleet of raw TCP sockets, each playing a script and recording what the
// server does to it.

/// What a socket sends: `initial` at once (as fast as the server reads),
/// then, if `every` is set, one byte of `trickle` (in turn) each period.
#[derive(Debug, Clone)]
struct Script {
    initial: Arc<[u8]>,
    every: Option<Duration>,
    trickle: &'static [u8],
}

impl Script {
    fn idle() -> Script {
        Script::once(Vec::new())
    }

    fn once(initial: Vec<u8>) -> Script {
        Script {
            initial: initial.into(),
            every: None,
            trickle: b"",
        }
    }

    fn trickled(initial: Vec<u8>, every: Duration, trickle: &'static [u8]) -> Script {
        Script {
            initial: initial.into(),
            every: Some(every),
            trickle,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The server closed (read returned 0).
    Eof,
    /// The connection was reset (read failed).
    Reset,
    /// A write failed and no close was read within 1 s after.
    WriteFailed,
}

/// When something happened to a socket: the instant, and the time since
/// that socket connected.
#[derive(Debug, Clone, Copy)]
struct Mark {
    at: Instant,
    after: Duration,
}

impl Mark {
    fn since(t0: Instant) -> Mark {
        let at = Instant::now();
        Mark { at, after: at - t0 }
    }
}

#[derive(Debug, Default)]
struct Tally {
    connected: AtomicUsize,
    failed: AtomicUsize,
    sent: AtomicU64,
    first_error: Mutex<Option<String>>,
    answers: Mutex<Vec<(Mark, u16)>>,
    closes: Mutex<Vec<(Mark, Ending)>>,
}

impl Tally {
    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Relaxed);
        lock(&self.first_error).get_or_insert(why);
    }

    fn closed_by(&self, t: Instant) -> usize {
        lock(&self.closes).iter().filter(|(m, _)| m.at <= t).count()
    }
}

/// Read until the server closes; the first bytes are recorded as its answer
/// (status 0 if not HTTP).
async fn read_until_closed<R: AsyncRead + Unpin>(rd: &mut R, tally: &Tally, t0: Instant) -> Ending {
    let mut buf = [0u8; 512];
    let mut head = Vec::new();
    let mut answered = false;
    loop {
        match rd.read(&mut buf).await {
            Ok(0) => return Ending::Eof,
            Err(_) => return Ending::Reset,
            Ok(n) if !answered => {
                head.extend_from_slice(&buf[..n.min(64)]);
                if head.len() >= 12 {
                    let status = parse_status(&head).unwrap_or(0);
                    lock(&tally.answers).push((Mark::since(t0), status));
                    answered = true;
                }
            }
            Ok(_) => {}
        }
    }
}

/// Play `script`; returns only when a write fails.
async fn write_script<W: AsyncWrite + Unpin>(
    wr: &mut W,
    script: &Script,
    tally: &Tally,
) -> std::io::Error {
    for chunk in script.initial.chunks(16 * 1024) {
        if let Err(e) = wr.write_all(chunk).await {
            return e;
        }
        tally.sent.fetch_add(chunk.len() as u64, Relaxed);
    }
    let Some(every) = script.every else {
        return std::future::pending().await;
    };
    for byte in script.trickle.iter().cycle() {
        tokio::time::sleep(every).await;
        if let Err(e) = wr.write_all(std::slice::from_ref(byte)).await {
            return e;
        }
        tally.sent.fetch_add(1, Relaxed);
    }
    std::future::pending().await
}

async fn hold(mut stream: TcpStream, script: &Script, tally: &Tally) {
    let t0 = Instant::now();
    let (mut rd, mut wr) = stream.split();
    let reader = read_until_closed(&mut rd, tally, t0);
    tokio::pin!(reader);
    let ending = tokio::select! {
        ending = &mut reader => ending,
        _ = write_script(&mut wr, script, tally) => {
            timeout(Duration::from_secs(1), &mut reader).await.unwrap_or(Ending::WriteFailed)
        }
    };
    lock(&tally.closes).push((Mark::since(t0), ending));
}

/// Connection attempts in flight at once while a fleet opens.
const CONNECT_CONCURRENCY: usize = 256;

#[derive(Debug)]
struct Fleet {
    tally: Arc<Tally>,
    tasks: JoinSet<()>,
    sockets: usize,
    /// When every connection attempt had finished.
    opened_at: Instant,
}

#[derive(Debug, Clone, Serialize)]
struct FleetSummary {
    sockets: usize,
    connected: usize,
    connect_failed: usize,
    first_connect_error: Option<String>,
    answered: usize,
    statuses: BTreeMap<u16, usize>,
    answer_ms_median: Option<f64>,
    answer_ms_max: Option<f64>,
    closed: usize,
    closed_eof: usize,
    closed_reset: usize,
    write_failed: usize,
    close_s_median: Option<f64>,
    close_s_max: Option<f64>,
    sent_mib: f64,
}

impl Fleet {
    async fn open(target: &Target, sockets: usize, script: &Script) -> Fleet {
        let tally = Arc::new(Tally::default());
        let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
        let mut tasks = JoinSet::new();
        for _ in 0..sockets {
            let permit = gate.clone().acquire_owned().await.expect("never closed");
            let (target, script, tally) = (target.clone(), script.clone(), tally.clone());
            tasks.spawn(async move {
                let conn = timeout(Duration::from_secs(10), target.tcp()).await;
                drop(permit);
                match conn {
                    Ok(Ok(stream)) => {
                        tally.connected.fetch_add(1, Relaxed);
                        hold(stream, &script, &tally).await;
                    }
                    Ok(Err(e)) => tally.fail(short(&e)),
                    Err(_) => tally.fail("connect timed out (10 s)".into()),
                }
            });
        }
        // Every permit back: every connection attempt has finished.
        let _all = gate.acquire_many(CONNECT_CONCURRENCY as u32).await;
        Fleet {
            tally,
            tasks,
            sockets,
            opened_at: Instant::now(),
        }
    }

    fn connected(&self) -> usize {
        self.tally.connected.load(Relaxed)
    }

    fn all_closed(&self) -> bool {
        lock(&self.tally.closes).len() >= self.connected()
    }

    fn all_answered_or_closed(&self) -> bool {
        let answers = lock(&self.tally.answers).len();
        answers >= self.connected() || self.all_closed()
    }

    fn summary(&self) -> FleetSummary {
        let t = &self.tally;
        let answers = lock(&t.answers);
        let closes = lock(&t.closes);
        let answer_ms: Vec<f64> = answers.iter().map(|(m, _)| ms(m.after)).collect();
        let close_s: Vec<f64> = closes.iter().map(|(m, _)| m.after.as_secs_f64()).collect();
        let mut statuses = BTreeMap::new();
        for (_, s) in answers.iter() {
            *statuses.entry(*s).or_insert(0) += 1;
        }
        let ended = |e: Ending| closes.iter().filter(|(_, x)| *x == e).count();
        FleetSummary {
            sockets: self.sockets,
            connected: self.connected(),
            connect_failed: t.failed.load(Relaxed),
            first_connect_error: lock(&t.first_error).clone(),
            answered: answers.len(),
            statuses,
            answer_ms_median: median(&answer_ms).map(r1),
            answer_ms_max: answer_ms.iter().copied().reduce(f64::max),
            closed: closes.len(),
            closed_eof: ended(Ending::Eof),
            closed_reset: ended(Ending::Reset),
            write_failed: ended(Ending::WriteFailed),
            close_s_median: median(&close_s).map(|s| (s * 100.0).round() / 100.0),
            close_s_max: close_s
                .iter()
                .copied()
                .reduce(f64::max)
                .map(|s| (s * 100.0).round() / 100.0),
            sent_mib: r1(t.sent.load(Relaxed) as f64 / (1024.0 * 1024.0)),
        }
    }

    /// Wait until `cond` holds or `deadline` passes.
    async fn wait_until(&self, deadline: Instant, cond: impl Fn(&Fleet) -> bool) {
        while Instant::now() < deadline && !cond(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(left.min(Duration::from_millis(100))).await;
        }
    }

    /// Close every socket (abort the tasks).
    async fn close(mut self) {
        self.tasks.shutdown().await;
    }
}

impl FleetSummary {
    fn connect_line(&self) -> String {
        let mut s = format!("{} of {}", self.connected, self.sockets);
        if let Some(e) = &self.first_connect_error {
            s += &format!(" ({} failed: {e})", self.connect_failed);
        }
        s
    }

    fn answers_line(&self) -> String {
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{n}× {s}"))
            .collect();
        format!(
            "{} answered [{}], after median {}, max {}",
            self.answered,
            statuses.join(", "),
            opt(self.answer_ms_median, " ms"),
            opt(self.answer_ms_max, " ms"),
        )
    }

    fn closes_line(&self) -> String {
        format!(
            "{} of {} (eof {}, reset {}, write failed {}), after median {}, max {}",
            self.closed,
            self.connected,
            self.closed_eof,
            self.closed_reset,
            self.write_failed,
            opt(self.close_s_median, " s"),
            opt(self.close_s_max, " s"),
        )
    }
}

#[derive(Debug, Clone, Serialize)]
struct Checkpoint {
    at_s: u64,
    closed: usize,
    open: usize,
}

/// Closed sockets `marks` seconds after the fleet opened. With
/// `early_exit`, stops waiting once every socket is closed.
async fn checkpoints(fleet: &Fleet, marks: &[u64], early_exit: bool) -> Vec<Checkpoint> {
    let mut out = Vec::new();
    for &m in marks {
        let when = fleet.opened_at + Duration::from_secs(m);
        fleet
            .wait_until(when, |f| early_exit && f.all_closed())
            .await;
        let closed = fleet.tally.closed_by(when);
        out.push(Checkpoint {
            at_s: m,
            closed,
            open: fleet.connected().saturating_sub(closed),
        });
    }
    out
}

fn checkpoints_line(points: &[Checkpoint]) -> String {
    let parts: Vec<String> = points
        .iter()
        .map(|p| format!("{} s: {} closed / {} open", p.at_s, p.closed, p.open))
        .collect();
    parts.join("; ")
}

// ---------------------------------------------------------------------------
// Reports.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Verdict {
    Resisted,
    Vulnerable,
    Skipped,
}

impl Verdict {
    fn of(resisted: bool) -> Verdict {
        if resisted {
            Verdict::Resisted
        } else {
            Verdict::Vulnerable
        }
    }
}

#[derive(Debug, Default)]
struct Rows(Vec<(String, String)>);

impl Rows {
    fn add(&mut self, label: &str, value: impl Display) -> &mut Rows {
        self.0.push((label.to_owned(), value.to_string()));
        self
    }
}

#[derive(Debug)]
struct Report {
    attack: &'static str,
    did: String,
    rows: Rows,
    verdict: Verdict,
    criterion: String,
    figures: Value,
}

impl Report {
    fn new(attack: &'static str, did: String, figures: &impl Serialize) -> Report {
        Report {
            attack,
            did,
            rows: Rows::default(),
            verdict: Verdict::Skipped,
            criterion: String::new(),
            figures: serde_json::to_value(figures).unwrap_or(Value::Null),
        }
    }

    fn judged(mut self, resisted: bool, criterion: impl Into<String>) -> Report {
        self.verdict = Verdict::of(resisted);
        self.criterion = criterion.into();
        self
    }

    fn json(&self) -> Value {
        json!({
            "attack": self.attack,
            "verdict": self.verdict,
            "criterion": self.criterion,
            "did": self.did,
            "figures": self.figures,
        })
    }

    fn print(&self, json_only: bool) {
        if !json_only {
            println!("\n== {}: {}", self.attack, self.did);
            let width = self
                .rows
                .0
                .iter()
                .map(|(k, _)| k.chars().count())
                .max()
                .unwrap_or(0);
            for (k, v) in &self.rows.0 {
                println!("   {k:<width$}  {v}");
            }
            let word = serde_json::to_value(self.verdict).unwrap_or(Value::Null);
            println!(
                "   verdict: {} ({})",
                word.as_str().unwrap_or("?").to_uppercase(),
                self.criterion
            );
        }
        println!("{}", self.json());
    }
}

/// RSS figures shared by the reports.
#[derive(Debug, Clone, Copy, Serialize)]
struct Rss {
    before_kib: Option<u64>,
    peak_kib: Option<u64>,
    after_kib: Option<u64>,
    peak_growth_mib: Option<f64>,
}

impl Rss {
    fn new(before: Option<u64>, peak: Option<u64>, after: Option<u64>) -> Rss {
        let peak = peak.max(after);
        Rss {
            before_kib: before,
            peak_kib: peak,
            after_kib: after,
            peak_growth_mib: growth_mib(before, peak),
        }
    }

    fn line(&self) -> String {
        format!(
            "{} before, {} peak, {} after (peak growth {})",
            mib(self.before_kib),
            mib(self.peak_kib),
            mib(self.after_kib),
            opt(self.peak_growth_mib, " MiB")
        )
    }
}

// ---------------------------------------------------------------------------
// 1. idle

#[derive(Debug, Serialize)]
struct IdleResult {
    hold_s: u64,
    fleet: FleetSummary,
    checkpoints: Vec<Checkpoint>,
    probe: ProbeStats,
    rss: Rss,
    log_bytes: u64,
    demo_alive: bool,
}

async fn idle(ctx: &Ctx, a: &IdleArgs) -> Result<Report> {
    let sockets = pick(a.sockets, 19_900, 2_000, ctx.quick);
    let hold = pick(a.hold, 30, 15, ctx.quick);
    procfs::check_fd_budget(sockets)?;
    let demo = Demo::start(ctx, &[]).await?;
    let before = demo.rss();
    let sampler = Sampler::rss(demo.pid);
    note(format!("idle: opening {sockets} silent connections"));
    let fleet = Fleet::open(&demo.target(), sockets, &Script::idle()).await;
    let prober = Prober::start(demo.addr);
    let mut marks: Vec<u64> = [5, 12, 20].into_iter().filter(|&m| m < hold).collect();
    marks.push(hold);
    let points = checkpoints(&fleet, &marks, false).await;
    let probe = prober.finish().await;
    let after = demo.rss();
    let peak = sampler.finish().await.rss_kib;
    let summary = fleet.summary();
    fleet.close().await;
    let log_bytes = demo.log_bytes();
    let r = IdleResult {
        hold_s: hold,
        fleet: summary,
        checkpoints: points,
        probe,
        rss: Rss::new(before, peak, after),
        log_bytes,
        demo_alive: demo.stop().await,
    };
    Ok(r.report())
}

impl IdleResult {
    fn report(self) -> Report {
        let did = format!(
            "{} TCP connections that send nothing, GET /health every 1 s for {} s",
            self.fleet.sockets, self.hold_s
        );
        let last = self
            .checkpoints
            .iter()
            .rfind(|p| p.at_s <= 20)
            .map_or(0, |p| p.closed);
        let resisted = self.demo_alive
            && self.fleet.connected > 0
            && last as f64 >= 0.99 * self.fleet.connected as f64
            && self.probe.all_ok();
        let mut r = Report::new("idle", did, &self);
        r.rows
            .add("connected", self.fleet.connect_line())
            .add("closed by the server", checkpoints_line(&self.checkpoints))
            .add("answers", self.fleet.answers_line())
            .add("closed, all told", self.fleet.closes_line())
            .add("/health probes", self.probe.line())
            .add("demo RSS", self.rss.line())
            .add("demo log", format!("{} bytes", self.log_bytes))
            .add("demo alive", self.demo_alive);
        r.judged(
            resisted,
            "≥ 99 % of the idle sockets closed by the server by the last checkpoint ≤ 20 s, \
             every /health probe answered 200, demo alive",
        )
    }
}

// ---------------------------------------------------------------------------
// 2. slowloris

fn slow_get_head() -> Vec<u8> {
    b"GET /cable HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_vec()
}

fn slow_upgrade_head(addr: SocketAddr) -> Vec<u8> {
    format!(
        "GET /cable HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: actioncable-v1-json\r\nOrigin: http://{addr}\r\n"
    )
    .into_bytes()
}

/// One header line, trickled a byte at a time.
const TRICKLE: &[u8] = b"X-a: b\r\n";

#[derive(Debug, Serialize)]
struct SlowVariant {
    variant: &'static str,
    fleet: FleetSummary,
    checkpoints: Vec<Checkpoint>,
}

#[derive(Debug, Serialize)]
struct SlowlorisResult {
    every_s: u64,
    variants: Vec<SlowVariant>,
    probe: ProbeStats,
    rss: Rss,
    log_bytes: u64,
    demo_alive: bool,
}

async fn slowloris(ctx: &Ctx, a: &SlowlorisArgs) -> Result<Report> {
    let sockets = pick(a.sockets, 500, 500, ctx.quick);
    let every = pick(a.every, 10, 3, ctx.quick);
    let marks: &[u64] = if ctx.quick { &[12, 20] } else { &[15, 40] };
    procfs::check_fd_budget(2 * sockets)?;
    let demo = Demo::start(ctx, &[]).await?;
    let (before, sampler) = (demo.rss(), Sampler::rss(demo.pid));
    let period = Duration::from_secs(every);
    note(format!(
        "slowloris: {sockets} plain + {sockets} upgrade heads, a byte every {every} s"
    ));
    let target = demo.target();
    let plain = Script::trickled(slow_get_head(), period, TRICKLE);
    let upgrade = Script::trickled(slow_upgrade_head(demo.addr), period, TRICKLE);
    let (plain, upgrade) = tokio::join!(
        Fleet::open(&target, sockets, &plain),
        Fleet::open(&target, sockets, &upgrade)
    );
    let prober = Prober::start(demo.addr);
    let (p1, p2) = tokio::join!(
        checkpoints(&plain, marks, true),
        checkpoints(&upgrade, marks, true)
    );
    let probe = prober.finish().await;
    let after = demo.rss();
    let peak = sampler.finish().await.rss_kib;
    let variants = vec![
        SlowVariant {
            variant: "GET head",
            fleet: plain.summary(),
            checkpoints: p1,
        },
        SlowVariant {
            variant: "upgrade head",
            fleet: upgrade.summary(),
            checkpoints: p2,
        },
    ];
    tokio::join!(plain.close(), upgrade.close());
    let log_bytes = demo.log_bytes();
    let r = SlowlorisResult {
        every_s: every,
        variants,
        probe,
        rss: Rss::new(before, peak, after),
        log_bytes,
        demo_alive: demo.stop().await,
    };
    Ok(r.report())
}

impl SlowlorisResult {
    fn report(self) -> Report {
        let n = self.variants.first().map_or(0, |v| v.fleet.sockets);
        let did = format!(
            "{n} connections trickle a GET head and {n} a WebSocket upgrade head for /cable, \
             one header byte every {} s, never finishing",
            self.every_s
        );
        let closed_ok = self.variants.iter().all(|v| {
            let last = v.checkpoints.last().map_or(0, |p| p.closed);
            v.fleet.connected > 0 && last as f64 >= 0.99 * v.fleet.connected as f64
        });
        let resisted = closed_ok && self.probe.all_ok() && self.demo_alive;
        let mut r = Report::new("slowloris", did, &self);
        for v in &self.variants {
            r.rows
                .add(&format!("{}: connected", v.variant), v.fleet.connect_line())
                .add(
                    &format!("{}: closed", v.variant),
                    checkpoints_line(&v.checkpoints),
                )
                .add(&format!("{}: answers", v.variant), v.fleet.answers_line())
                .add(&format!("{}: closes", v.variant), v.fleet.closes_line());
        }
        r.rows
            .add("/health probes", self.probe.line())
            .add("demo RSS", self.rss.line())
            .add("demo log", format!("{} bytes", self.log_bytes));
        r.judged(
            resisted,
            "≥ 99 % of the sockets of each variant closed by the last checkpoint, \
             every /health probe answered 200, demo alive",
        )
    }
}

// ---------------------------------------------------------------------------
// 3. partial-headers

fn padded_head(lines: usize) -> Vec<u8> {
    let pad = "x".repeat(1000);
    let mut head = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_vec();
    for i in 0..lines {
        head.extend_from_slice(format!("X-Pad-{i}: {pad}\r\n").as_bytes());
    }
    head
}

#[derive(Debug, Serialize)]
struct PartialResult {
    head_bytes: usize,
    hold_s: u64,
    fleet: FleetSummary,
    probe: ProbeStats,
    rss: Rss,
    growth_kib_per_socket: Option<f64>,
    log_bytes: u64,
    demo_alive: bool,
}

async fn partial_headers(ctx: &Ctx, a: &PartialArgs) -> Result<Report> {
    let sockets = pick(a.sockets, 2_000, 300, ctx.quick);
    let lines = a.lines.unwrap_or(380);
    let hold = pick(a.hold, 30, 13, ctx.quick);
    procfs::check_fd_budget(sockets)?;
    let demo = Demo::start(ctx, &[]).await?;
    let (before, sampler) = (demo.rss(), Sampler::rss(demo.pid));
    let head = padded_head(lines);
    let head_bytes = head.len();
    note(format!(
        "partial-headers: {sockets} connections × {} KB of headers",
        head_bytes / 1000
    ));
    let fleet = Fleet::open(&demo.target(), sockets, &Script::once(head)).await;
    let prober = Prober::start(demo.addr);
    let deadline = fleet.opened_at + Duration::from_secs(hold);
    fleet.wait_until(deadline, Fleet::all_closed).await;
    let probe = prober.finish().await;
    let after = demo.rss();
    let peak = sampler.finish().await.rss_kib;
    let summary = fleet.summary();
    fleet.close().await;
    let rss = Rss::new(before, peak, after);
    let per_socket = rss
        .peak_growth_mib
        .filter(|_| summary.connected > 0)
        .map(|g| r1(g * 1024.0 / summary.connected as f64));
    let log_bytes = demo.log_bytes();
    let r = PartialResult {
        head_bytes,
        hold_s: hold,
        fleet: summary,
        probe,
        rss,
        growth_kib_per_socket: per_socket,
        log_bytes,
        demo_alive: demo.stop().await,
    };
    Ok(r.report())
}

impl PartialResult {
    fn report(self) -> Report {
        let did = format!(
            "{} connections each send {} bytes of header lines (X-Pad-i: 1000 bytes) \
             without the final CRLF; waited up to {} s for the server to close them",
            self.fleet.sockets, self.head_bytes, self.hold_s
        );
        let resisted = self.demo_alive
            && self.fleet.connected > 0
            && self.fleet.closed >= self.fleet.connected
            && self.fleet.close_s_max.is_some_and(|s| s <= 15.0)
            && self.growth_kib_per_socket.is_some_and(|k| k < 64.0);
        let mut r = Report::new("partial-headers", did, &self);
        r.rows
            .add("connected", self.fleet.connect_line())
            .add("answers", self.fleet.answers_line())
            .add("closed", self.fleet.closes_line())
            .add("sent (all sockets)", format!("{} MiB", self.fleet.sent_mib))
            .add("demo RSS", self.rss.line())
            .add("growth per socket", opt(self.growth_kib_per_socket, " KiB"))
            .add("/health probes", self.probe.line())
            .add("demo log", format!("{} bytes", self.log_bytes));
        r.judged(
            resisted,
            "every socket closed by the server within 15 s of connecting, \
             peak RSS growth < 64 KiB per socket, demo alive",
        )
    }
}

// ---------------------------------------------------------------------------
// 4. broadcast-body

const SECRET: &str = "s3cret";

fn post_head(addr: SocketAddr, auth: Option<&str>, length: usize, body: &str) -> Vec<u8> {
    let auth = auth.map_or(String::new(), |s| format!("Authorization: Bearer {s}\r\n"));
    format!(
        "POST /_broadcast HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         {auth}Content-Length: {length}\r\n\r\n{body}"
    )
    .into_bytes()
}

/// A keep-alive HTTP/1.1 client connection.
#[derive(Debug)]
struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl HttpConn {
    /// Send `req`, read the answer: its status and whether the connection
    /// stays open.
    async fn request(&mut self, req: &[u8]) -> Result<(u16, bool)> {
        self.stream.write_all(req).await?;
        self.buf.clear();
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if self.read_more().await? == 0 {
                bail!("closed before the answer");
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        let status = parse_status(&self.buf).context("no HTTP status")?;
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while self.buf.len() < head_end + length {
            if self.read_more().await? == 0 {
                bail!("closed in the answer's body");
            }
        }
        Ok((status, !head.contains("connection: close")))
    }

    async fn read_more(&mut self) -> Result<usize> {
        let mut chunk = [0u8; 4096];
        let n = timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
            .await
            .context("no answer within 5 s")??;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
struct Hammer {
    secs: f64,
    clients: usize,
    requests: u64,
    statuses: BTreeMap<u16, u64>,
    connections: u64,
    errors: u64,
    log_bytes: u64,
    log_bytes_per_s: f64,
}

async fn hammer_one(target: Target, until: Instant) -> Hammer {
    let req = post_head(target.addr, Some("wrong"), 2, "{}");
    let mut h = Hammer::default();
    let mut conn: Option<HttpConn> = None;
    while Instant::now() < until {
        let mut c = match conn.take() {
            Some(c) => c,
            None => match target.tcp().await {
                Ok(stream) => {
                    h.connections += 1;
                    HttpConn {
                        stream,
                        buf: Vec::new(),
                    }
                }
                Err(_) => {
                    h.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        match c.request(&req).await {
            Ok((status, keep)) => {
                h.requests += 1;
                *h.statuses.entry(status).or_insert(0) += 1;
                conn = keep.then_some(c);
            }
            Err(_) => h.errors += 1,
        }
    }
    h
}

/// `clients` keep-alive clients POST with a wrong secret for `secs`; the
/// demo's log volume meanwhile.
async fn hammer(demo: &Demo, clients: usize, secs: u64) -> Hammer {
    let log0 = demo.log_bytes();
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let mut set = JoinSet::new();
    for _ in 0..clients {
        set.spawn(hammer_one(demo.target(), until));
    }
    let mut total = Hammer {
        clients,
        ..Hammer::default()
    };
    for h in set.join_all().await {
        total.requests += h.requests;
        total.connections += h.connections;
        total.errors += h.errors;
        for (s, n) in h.statuses {
            *total.statuses.entry(s).or_insert(0) += n;
        }
    }
    // Let the log pipe drain.
    tokio::time::sleep(Duration::from_millis(300)).await;
    total.secs = r1(start.elapsed().as_secs_f64());
    total.log_bytes = demo.log_bytes() - log0;
    total.log_bytes_per_s = r1(total.log_bytes as f64 / secs.max(1) as f64);
    total
}

#[derive(Debug, Serialize)]
struct BodyResult {
    wrong_secret_no_body: FleetSummary,
    no_secret_slow_body: FleetSummary,
    rss: Rss,
    log_bytes_attack: u64,
    hammer: Hammer,
    demo_alive: bool,
}

async fn broadcast_body(ctx: &Ctx, a: &BodyArgs) -> Result<Report> {
    let sockets = pick(a.sockets, 400, 100, ctx.quick);
    let wait = pick(a.wait, 10, 4, ctx.quick);
    let secs = pick(a.hammer, 5, 3, ctx.quick);
    procfs::check_fd_budget(2 * sockets)?;
    let demo = Demo::start(ctx, &["--broadcast-secret", SECRET]).await?;
    let (before, sampler) = (demo.rss(), Sampler::rss(demo.pid));
    note(format!(
        "broadcast-body: 2 × {sockets} unauthenticated POSTs announcing 2 MB"
    ));
    let target = demo.target();
    let never = Script::once(post_head(demo.addr, Some("wrong"), 2_000_000, ""));
    let slow = Script::trickled(
        post_head(demo.addr, None, 2_000_000, ""),
        Duration::from_secs(1),
        b"x",
    );
    let (never, slow) = tokio::join!(
        Fleet::open(&target, sockets, &never),
        Fleet::open(&target, sockets, &slow)
    );
    let deadline = never.opened_at.max(slow.opened_at) + Duration::from_secs(wait);
    never
        .wait_until(deadline, Fleet::all_answered_or_closed)
        .await;
    slow.wait_until(deadline, Fleet::all_answered_or_closed)
        .await;
    let after = demo.rss();
    let peak = sampler.finish().await.rss_kib;
    let (s_never, s_slow) = (never.summary(), slow.summary());
    tokio::join!(never.close(), slow.close());
    let log_bytes_attack = demo.log_bytes();
    note(format!(
        "broadcast-body: 4 clients hammer with a wrong secret for {secs} s"
    ));
    let hammer = hammer(&demo, 4, secs).await;
    let r = BodyResult {
        wrong_secret_no_body: s_never,
        no_secret_slow_body: s_slow,
        rss: Rss::new(before, peak, after),
        log_bytes_attack,
        hammer,
        demo_alive: demo.stop().await,
    };
    Ok(r.report())
}

impl BodyResult {
    fn report(self) -> Report {
        let n = self.wrong_secret_no_body.sockets;
        let did = format!(
            "{n} POST /_broadcast with a wrong secret and Content-Length 2000000, body never \
             sent; {n} without Authorization, body trickled 1 byte/s; then 4 clients hammer \
             with a wrong secret"
        );
        let prompt = |f: &FleetSummary| {
            f.connected > 0
                && f.statuses.get(&401) == Some(&f.connected)
                && f.answer_ms_max.is_some_and(|m| m <= 1000.0)
        };
        let resisted = prompt(&self.wrong_secret_no_body)
            && prompt(&self.no_secret_slow_body)
            && self.rss.peak_growth_mib.is_some_and(|g| g < 32.0)
            && self.hammer.log_bytes_per_s < 10_240.0
            && self.demo_alive;
        let statuses: Vec<String> = self
            .hammer
            .statuses
            .iter()
            .map(|(s, n)| format!("{n}× {s}"))
            .collect();
        let rate = self.hammer.requests as f64 / self.hammer.secs.max(0.1);
        let mut r = Report::new("broadcast-body", did, &self);
        for (name, f) in [
            ("wrong secret, no body", &self.wrong_secret_no_body),
            ("no secret, slow body", &self.no_secret_slow_body),
        ] {
            r.rows
                .add(&format!("{name}: connected"), f.connect_line())
                .add(&format!("{name}: answers"), f.answers_line())
                .add(&format!("{name}: closed"), f.closes_line());
        }
        r.rows
            .add("demo RSS", self.rss.line())
            .add(
                "demo log during the above",
                format!("{} bytes", self.log_bytes_attack),
            )
            .add(
                "hammer",
                format!(
                    "{} requests in {} s ({rate:.0}/s) [{}], {} connections, {} errors",
                    self.hammer.requests,
                    self.hammer.secs,
                    statuses.join(", "),
                    self.hammer.connections,
                    self.hammer.errors
                ),
            )
            .add(
                "demo log while hammered",
                format!(
                    "{} bytes ({} bytes/s)",
                    self.hammer.log_bytes, self.hammer.log_bytes_per_s
                ),
            );
        r.judged(
            resisted,
            "every POST answered 401 within 1 s, peak RSS growth < 32 MiB, \
             log < 10 KiB/s while hammered, demo alive",
        )
    }
}

// ---------------------------------------------------------------------------
// 5. subscriptions

/// The subscribe frames of one connection: distinct identifiers (`n`), each
/// with a `param_bytes` parameter.
fn subscribe_frames(channel: SubChannel, subs: usize, param_bytes: usize) -> Arc<[Utf8Bytes]> {
    let big = "x".repeat(param_bytes);
    (0..subs)
        .map(|n| {
            let identifier = match channel {
                SubChannel::Chat => json!({"channel": "ChatChannel", "room": big, "n": n}),
                SubChannel::Benchmark => json!({"channel": "BenchmarkChannel", "id": big, "n": n}),
            };
            let frame = json!({"command": "subscribe", "identifier": identifier.to_string()});
            Utf8Bytes::from(frame.to_string())
        })
        .collect()
}

#[derive(Debug, Clone, Default)]
struct ConnOutcome {
    welcomed: bool,
    confirmed: usize,
    rejected: usize,
    closed_by_server: bool,
    error: Option<String>,
}

/// Wait for `welcome`: false if the connection ended or sent something else.
async fn await_welcome(ws: &mut Ws) -> bool {
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Text(t) = msg {
            let b = t.as_bytes();
            if is_welcome(b) {
                return true;
            }
            if !is_ping(b) {
                return false;
            }
        }
    }
    false
}

/// Count confirmations and rejections until all `expected` came, the
/// server went quiet for `quiet`, or it closed.
async fn count_answers(ws: &mut Ws, expected: usize, quiet: Duration, out: &mut ConnOutcome) {
    while out.confirmed + out.rejected < expected {
        match timeout(quiet, ws.next()).await {
            Err(_) => return,
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => {
                out.closed_by_server = true;
                return;
            }
            Ok(Some(Ok(Message::Text(t)))) => {
                out.confirmed += usize::from(is_confirm(t.as_bytes()));
                out.rejected += usize::from(is_reject(t.as_bytes()));
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

async fn flood_one(
    target: Target,
    frames: Arc<[Utf8Bytes]>,
    gate: Arc<Semaphore>,
    quiet: Duration,
) -> (Option<Ws>, ConnOutcome) {
    let mut out = ConnOutcome::default();
    let permit = gate.acquire_owned().await.expect("never closed");
    let mut ws = match timeout(Duration::from_secs(10), target.websocket()).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            out.error = Some(short(&e));
            return (None, out);
        }
        Err(_) => {
            out.error = Some("handshake timed out".into());
            return (None, out);
        }
    };
    drop(permit);
    out.welcomed = timeout(Duration::from_secs(10), await_welcome(&mut ws)).await == Ok(true);
    if !out.welcomed {
        return (None, out);
    }
    for frame in frames.iter() {
        if ws.feed(Message::Text(frame.clone())).await.is_err() {
            out.closed_by_server = true;
            return (None, out);
        }
    }
    if ws.flush().await.is_err() {
        out.closed_by_server = true;
        return (None, out);
    }
    count_answers(&mut ws, frames.len(), quiet, &mut out).await;
    let keep = !out.closed_by_server;
    (keep.then_some(ws), out)
}

#[derive(Debug, Serialize)]
struct SubsResult {
    channel: SubChannel,
    conns: usize,
    subs_per_conn: usize,
    param_bytes: usize,
    frame_bytes: usize,
    welcomed: usize,
    confirmed: usize,
    rejected: usize,
    ignored: usize,
    closed_by_server: usize,
    max_confirmed_per_conn: usize,
    first_error: Option<String>,
    keayl_subscriptions: Option<f64>,
    rss: Rss,
    log_bytes: u64,
    demo_alive: bool,
}

async fn subscriptions(ctx: &Ctx, a: &SubsArgs) -> Result<Report> {
    let conns = pick(a.conns, 100, 20, ctx.quick);
    let subs = pick(a.subs, 256, 64, ctx.quick);
    let param_bytes = a.param_bytes.unwrap_or(4096);
    let quiet = Duration::from_secs(if ctx.quick { 2 } else { 3 });
    procfs::check_fd_budget(conns)?;
    let demo = Demo::start(ctx, &[]).await?;
    let (before, sampler) = (demo.rss(), Sampler::rss(demo.pid));
    let frames = subscribe_frames(a.channel, subs, param_bytes);
    let frame_bytes = frames.first().map_or(0, |f| f.len());
    note(format!(
        "subscriptions: {conns} connections × {subs} subscribes of {frame_bytes} bytes"
    ));
    let gate = Arc::new(Semaphore::new(50));
    let mut set = JoinSet::new();
    for _ in 0..conns {
        set.spawn(flood_one(
            demo.target(),
            frames.clone(),
            gate.clone(),
            quiet,
        ));
    }
    let (held, outcomes): (Vec<_>, Vec<_>) = set.join_all().await.into_iter().unzip();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = demo.rss();
    let keayl_subscriptions = metrics(demo.addr)
        .await
        .ok()
        .and_then(|m| m.get("keayl_subscriptions").copied());
    let peak = sampler.finish().await.rss_kib;
    drop(held);
    let mut r = SubsResult {
        channel: a.channel,
        conns,
        subs_per_conn: subs,
        param_bytes,
        frame_bytes,
        welcomed: 0,
        confirmed: 0,
        rejected: 0,
        ignored: 0,
        closed_by_server: 0,
        max_confirmed_per_conn: 0,
        first_error: None,
        keayl_subscriptions,
        rss: Rss::new(before, peak, after),
        log_bytes: demo.log_bytes(),
        demo_alive: false,
    };
    r.add_outcomes(&outcomes);
    r.demo_alive = demo.stop().await;
    Ok(r.report())
}

impl SubsResult {
    fn add_outcomes(&mut self, outcomes: &[ConnOutcome]) {
        for o in outcomes {
            self.welcomed += usize::from(o.welcomed);
            self.confirmed += o.confirmed;
            self.rejected += o.rejected;
            if o.welcomed {
                self.ignored += self.subs_per_conn.saturating_sub(o.confirmed + o.rejected);
            }
            self.closed_by_server += usize::from(o.closed_by_server);
            self.max_confirmed_per_conn = self.max_confirmed_per_conn.max(o.confirmed);
            if self.first_error.is_none() {
                self.first_error.clone_from(&o.error);
            }
        }
    }

    fn report(self) -> Report {
        let channel = match self.channel {
            SubChannel::Chat => "ChatChannel room",
            SubChannel::Benchmark => "BenchmarkChannel id",
        };
        let did = format!(
            "{} WebSocket connections × {} subscribes, each identifier with a {channel} of {} bytes \
             (frames of {} bytes)",
            self.conns, self.subs_per_conn, self.param_bytes, self.frame_bytes
        );
        let budget_mib = self.conns as f64;
        let resisted = self.demo_alive && self.rss.peak_growth_mib.is_some_and(|g| g <= budget_mib);
        let mut r = Report::new("subscriptions", did, &self);
        r.rows
            .add(
                "welcomed",
                format!(
                    "{} of {}{}",
                    self.welcomed,
                    self.conns,
                    first_of(self.first_error.as_deref())
                ),
            )
            .add(
                "confirmed",
                format!(
                    "{} (at most {} on one connection)",
                    self.confirmed, self.max_confirmed_per_conn
                ),
            )
            .add("rejected", self.rejected)
            .add("ignored (no answer)", self.ignored)
            .add("closed by the server", self.closed_by_server)
            .add("keayl_subscriptions", opt(self.keayl_subscriptions, ""))
            .add("demo RSS", self.rss.line())
            .add("demo log", format!("{} bytes", self.log_bytes));
        r.judged(
            resisted,
            format!(
                "peak RSS growth ≤ 1 MiB per connection ({budget_mib} MiB: the cable's default \
                 per-connection subscription budget), demo alive"
            ),
        )
    }
}

// ---------------------------------------------------------------------------
// 6. sse-cycles

const SSE_STREAM: &str = "attack";

/// `GET /sse/<stream>`, read until `: subscribed`, close.
async fn sse_cycle(target: &Target) -> Result<()> {
    let mut s = target.tcp().await?;
    let req = format!(
        "GET /sse/{SSE_STREAM} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        target.addr
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let read = async {
        while !buf.windows(10).any(|w| w == b"subscribed") {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                bail!("closed before `: subscribed`");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        anyhow::Ok(())
    };
    timeout(Duration::from_secs(5), read)
        .await
        .context("no `: subscribed` within 5 s")??;
    match parse_status(&buf) {
        Some(200) => Ok(()),
        other => bail!("answered {other:?}"),
    }
}

#[derive(Debug, Default)]
struct CycleCount {
    ok: AtomicUsize,
    failed: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

/// `cycles` SSE cycles, `concurrency` at a time.
async fn run_sse_cycles(target: &Target, cycles: usize, concurrency: usize) -> Arc<CycleCount> {
    let count = Arc::new(CycleCount::default());
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (target, count, next) = (target.clone(), count.clone(), next.clone());
        set.spawn(async move {
            while next.fetch_add(1, Relaxed) < cycles {
                match sse_cycle(&target).await {
                    Ok(()) => count.ok.fetch_add(1, Relaxed),
                    Err(e) => {
                        lock(&count.first_error).get_or_insert_with(|| short(&e));
                        count.failed.fetch_add(1, Relaxed)
                    }
                };
            }
        });
    }
    set.join_all().await;
    count
}

#[derive(Debug, Serialize)]
struct SseResult {
    cycles: usize,
    concurrency: usize,
    ok: usize,
    failed: usize,
    first_error: Option<String>,
    secs: f64,
    alive_tasks_before: Option<f64>,
    alive_tasks_after: Option<f64>,
    subscriptions_before: Option<f64>,
    subscriptions_after: Option<f64>,
    rss: Rss,
    log_bytes: u64,
    demo_alive: bool,
}

async fn sse_cycles(ctx: &Ctx, a: &SseArgs) -> Result<Report> {
    let cycles = pick(a.cycles, 10_000, 1_000, ctx.quick);
    let concurrency = a.concurrency.unwrap_or(50);
    let demo = Demo::start(ctx, &[]).await?;
    let target = demo.target();
    run_sse_cycles(&target, 50, 10).await; // warm-up
    tokio::time::sleep(Duration::from_secs(1)).await;
    let m0 = metrics(demo.addr).await?;
    let (before, sampler) = (demo.rss(), Sampler::rss(demo.pid));
    note(format!(
        "sse-cycles: {cycles} cycles of GET /sse/{SSE_STREAM}, {concurrency} in flight"
    ));
    let start = Instant::now();
    let count = run_sse_cycles(&target, cycles, concurrency).await;
    let secs = r1(start.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m1 = metrics(demo.addr).await?;
    let after = demo.rss();
    let peak = sampler.finish().await.rss_kib;
    let get = |m: &Metrics, k: &str| m.get(k).copied();
    let first_error = lock(&count.first_error).clone();
    let r = SseResult {
        cycles,
        concurrency,
        ok: count.ok.load(Relaxed),
        failed: count.failed.load(Relaxed),
        first_error,
        secs,
        alive_tasks_before: get(&m0, "keayl_runtime_alive_tasks"),
        alive_tasks_after: get(&m1, "keayl_runtime_alive_tasks"),
        subscriptions_before: get(&m0, "keayl_subscriptions"),
        subscriptions_after: get(&m1, "keayl_subscriptions"),
        rss: Rss::new(before, peak, after),
        log_bytes: demo.log_bytes(),
        demo_alive: demo.stop().await,
    };
    Ok(r.report())
}

impl SseResult {
    fn report(self) -> Report {
        let did = format!(
            "{} cycles of GET /sse/{SSE_STREAM} → read until `: subscribed` → close, {} in flight; \
             gauges 3 s later",
            self.cycles, self.concurrency
        );
        let back = |b: Option<f64>, a: Option<f64>| matches!((b, a), (Some(b), Some(a)) if a <= b);
        let resisted = self.demo_alive
            && back(self.alive_tasks_before, self.alive_tasks_after)
            && back(self.subscriptions_before, self.subscriptions_after);
        let rate = self.ok as f64 / self.secs.max(0.1);
        let mut r = Report::new("sse-cycles", did, &self);
        r.rows
            .add(
                "cycles",
                format!(
                    "{} ok, {} failed in {} s ({rate:.0}/s){}",
                    self.ok,
                    self.failed,
                    self.secs,
                    first_of(self.first_error.as_deref())
                ),
            )
            .add(
                "keayl_runtime_alive_tasks",
                format!(
                    "{} before → {} after",
                    opt(self.alive_tasks_before, ""),
                    opt(self.alive_tasks_after, "")
                ),
            )
            .add(
                "keayl_subscriptions",
                format!(
                    "{} before → {} after",
                    opt(self.subscriptions_before, ""),
                    opt(self.subscriptions_after, "")
                ),
            )
            .add("demo RSS", self.rss.line())
            .add("demo log", format!("{} bytes", self.log_bytes));
        r.judged(
            resisted,
            "live tasks and subscriptions back to (or below) their baseline 3 s after the cycles, demo alive",
        )
    }
}

// ---------------------------------------------------------------------------
// 7. storm

#[derive(Debug, Clone, PartialEq, Eq)]
enum StormOutcome {
    Welcomed,
    Http(u16),
    /// The server closed the connection without an HTTP answer.
    NoAnswer,
    ClosedBeforeWelcome,
    Failed(String),
}

fn classify(e: &anyhow::Error) -> StormOutcome {
    use tungstenite::error::ProtocolError;
    let outcome = e
        .chain()
        .find_map(|c| match c.downcast_ref::<tungstenite::Error>()? {
            tungstenite::Error::Http(resp) => Some(StormOutcome::Http(resp.status().as_u16())),
            tungstenite::Error::Protocol(ProtocolError::HandshakeIncomplete) => {
                Some(StormOutcome::NoAnswer)
            }
            _ => None,
        });
    outcome.unwrap_or_else(|| StormOutcome::Failed(short(e)))
}

/// Connect; report the outcome; a welcomed client then stays connected
/// (reading pings) until `stop`, counting a close by the server.
async fn storm_one(
    target: Target,
    tx: mpsc::UnboundedSender<StormOutcome>,
    mut stop: watch::Receiver<bool>,
    dropped: Arc<AtomicUsize>,
) {
    let mut ws = match timeout(Duration::from_secs(20), target.websocket()).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            let _ = tx.send(classify(&e));
            return;
        }
        Err(_) => {
            let _ = tx.send(StormOutcome::Failed("handshake timed out".into()));
            return;
        }
    };
    let welcomed = timeout(Duration::from_secs(10), await_welcome(&mut ws)).await == Ok(true);
    let _ = tx.send(if welcomed {
        StormOutcome::Welcomed
    } else {
        StormOutcome::ClosedBeforeWelcome
    });
    if !welcomed {
        return;
    }
    loop {
        tokio::select! {
            msg = ws.next() => {
                if !matches!(msg, Some(Ok(_))) {
                    dropped.fetch_add(1, Relaxed);
                    return;
                }
            }
            _ = stop.changed() => return,
        }
    }
}

#[derive(Debug, Default, Serialize)]
struct StormResult {
    limit: usize,
    clients: usize,
    welcomed: usize,
    http_503: usize,
    other_http: BTreeMap<u16, usize>,
    no_answer: usize,
    closed_before_welcome: usize,
    failed: usize,
    first_failure: Option<String>,
    welcomed_then_dropped: usize,
    rss_peak_kib: Option<u64>,
    /// Gauges of /metrics (every 200 ms) once every client had its outcome.
    full: Peaks,
    probe_full: ProbeStats,
    log_bytes: u64,
    demo_alive: bool,
    skipped: Option<String>,
}

const STORM_GAUGES: &[&str] = &["keayl_connections", "keayl_http_connections"];

async fn storm(ctx: &Ctx, a: &StormArgs) -> Result<Report> {
    let limit = pick(a.limit, 2_000, 500, ctx.quick);
    let mut r = StormResult {
        limit,
        clients: 2 * limit,
        ..StormResult::default()
    };
    procfs::check_fd_budget(2 * limit)?;
    let demo = match Demo::start(ctx, &["--max-connections", &limit.to_string()]).await {
        Ok(d) => d,
        Err(e) if format!("{e:#}").contains("max-connections") => {
            r.skipped = Some("demo has no --max-connections".into());
            return Ok(r.report());
        }
        Err(e) => return Err(e),
    };
    // No probe while the clients connect: a probe connection would take a
    // place of the budget and make `welcomed` fall short of the limit.
    let sampler = Sampler::rss(demo.pid);
    note(format!(
        "storm: {} WebSocket clients at once against --max-connections {limit}",
        r.clients
    ));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let dropped = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..r.clients {
        set.spawn(storm_one(
            demo.target(),
            tx.clone(),
            stop_rx.clone(),
            dropped.clone(),
        ));
    }
    drop(tx);
    for _ in 0..r.clients {
        let Some(outcome) = rx.recv().await else {
            break;
        };
        r.count(outcome);
    }
    // The welcomed clients stay connected: the budget is full now.
    let gauges = Sampler::start(demo.pid, Some(demo.addr), STORM_GAUGES);
    let prober = Prober::start(demo.addr);
    tokio::time::sleep(Duration::from_secs(3)).await;
    r.probe_full = prober.finish().await;
    r.full = gauges.finish().await;
    r.rss_peak_kib = sampler.finish().await.rss_kib.max(r.full.rss_kib);
    let _ = stop_tx.send(true);
    set.join_all().await;
    r.welcomed_then_dropped = dropped.load(Relaxed);
    r.log_bytes = demo.log_bytes();
    r.demo_alive = demo.stop().await;
    Ok(r.report())
}

impl StormResult {
    fn count(&mut self, outcome: StormOutcome) {
        match outcome {
            StormOutcome::Welcomed => self.welcomed += 1,
            StormOutcome::Http(503) => self.http_503 += 1,
            StormOutcome::Http(s) => *self.other_http.entry(s).or_insert(0) += 1,
            StormOutcome::NoAnswer => self.no_answer += 1,
            StormOutcome::ClosedBeforeWelcome => self.closed_before_welcome += 1,
            StormOutcome::Failed(e) => {
                self.failed += 1;
                self.first_failure.get_or_insert(e);
            }
        }
    }

    fn report(self) -> Report {
        let did = format!(
            "{} WebSocket clients connect to /cable at once, the demo started with \
             --max-connections {}; /metrics and /health read for 3 s once all had an outcome",
            self.clients, self.limit
        );
        let mut r = Report::new("storm", did, &self);
        if let Some(why) = &self.skipped {
            r.rows.add("skipped", why);
            r.criterion = format!("skipped: {why}");
            return r;
        }
        let resisted = self.welcomed == self.limit
            && self.welcomed_then_dropped == 0
            && self.probe_full.all_ok()
            && self.demo_alive;
        let gauge = |k: &str| opt(self.full.gauges.get(k).copied(), "");
        let other: Vec<String> = self
            .other_http
            .iter()
            .map(|(s, n)| format!("{n}× {s}"))
            .collect();
        r.rows
            .add(
                "welcomed",
                format!("{} (limit {})", self.welcomed, self.limit),
            )
            .add("HTTP 503", self.http_503)
            .add("other HTTP answers", other.join(", "))
            .add("closed without an answer", self.no_answer)
            .add("closed before welcome", self.closed_before_welcome)
            .add(
                "other failures",
                format!("{}{}", self.failed, first_of(self.first_failure.as_deref())),
            )
            .add("welcomed, then dropped", self.welcomed_then_dropped)
            .add("keayl_connections (max)", gauge("keayl_connections"))
            .add(
                "keayl_http_connections (max)",
                gauge("keayl_http_connections"),
            )
            .add("/metrics reads failed", self.full.metric_failures)
            .add("/health while full", self.probe_full.line())
            .add("demo RSS peak", mib(self.rss_peak_kib))
            .add("demo log", format!("{} bytes", self.log_bytes));
        r.judged(
            resisted,
            "welcomed == limit exactly and none dropped, every /health probe answered 200 \
             while the budget was full, demo alive",
        )
    }
}

// ---------------------------------------------------------------------------
// Running.

impl Attack {
    fn name(&self) -> &'static str {
        match self {
            Attack::Idle(_) => "idle",
            Attack::Slowloris(_) => "slowloris",
            Attack::PartialHeaders(_) => "partial-headers",
            Attack::BroadcastBody(_) => "broadcast-body",
            Attack::Subscriptions(_) => "subscriptions",
            Attack::SseCycles(_) => "sse-cycles",
            Attack::Storm(_) => "storm",
            Attack::All => "all",
        }
    }
}

async fn run_one(ctx: &Ctx, attack: &Attack) -> Result<Report> {
    match attack {
        Attack::Idle(a) => idle(ctx, a).await,
        Attack::Slowloris(a) => slowloris(ctx, a).await,
        Attack::PartialHeaders(a) => partial_headers(ctx, a).await,
        Attack::BroadcastBody(a) => broadcast_body(ctx, a).await,
        Attack::Subscriptions(a) => subscriptions(ctx, a).await,
        Attack::SseCycles(a) => sse_cycles(ctx, a).await,
        Attack::Storm(a) => storm(ctx, a).await,
        Attack::All => bail!("`all` runs the others"),
    }
}

fn every_attack() -> Vec<Attack> {
    vec![
        Attack::Idle(IdleArgs::default()),
        Attack::Slowloris(SlowlorisArgs::default()),
        Attack::PartialHeaders(PartialArgs::default()),
        Attack::BroadcastBody(BodyArgs::default()),
        Attack::Subscriptions(SubsArgs::default()),
        Attack::SseCycles(SseArgs::default()),
        Attack::Storm(StormArgs::default()),
    ]
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    raise_nofile();
    let ctx = Ctx {
        demo: cli.demo.clone(),
        quick: cli.quick,
    };
    let attacks = match &cli.attack {
        Attack::All => every_attack(),
        one => vec![one.clone()],
    };
    let start = Instant::now();
    let mut summary = Vec::new();
    let mut failures = 0;
    let mut vulnerable = Vec::new();
    for attack in &attacks {
        let t = Instant::now();
        match run_one(&ctx, attack).await {
            Ok(report) => {
                report.print(cli.json);
                if report.verdict == Verdict::Vulnerable {
                    vulnerable.push(report.attack.to_string());
                }
                summary.push(format!(
                    "{:<16} {:<10} {:>5.1} s",
                    report.attack,
                    format!("{:?}", report.verdict).to_lowercase(),
                    t.elapsed().as_secs_f64()
                ));
            }
            Err(e) => {
                failures += 1;
                eprintln!("error: {e:#}");
                summary.push(format!(
                    "{:<16} error      {:>5.1} s",
                    attack.name(),
                    t.elapsed().as_secs_f64()
                ));
            }
        }
    }
    if attacks.len() > 1 && !cli.json {
        println!("\n== summary ({:.0} s)", start.elapsed().as_secs_f64());
        for line in &summary {
            println!("   {line}");
        }
    }
    if failures > 0 {
        bail!("{failures} attack(s) could not run");
    }
    if cli.strict && !vulnerable.is_empty() {
        bail!("vulnerable to: {}", vulnerable.join(", "));
    }
    Ok(())
}
