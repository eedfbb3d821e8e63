//! `keayl-bench-live`: figures for keayl-live, measured in-process over
//! loopback TCP.
//!
//! 1. **Throughput**: two plain hyper http1 servers stream `--total-mib` of
//!    payload in chunks of 1 KiB and 64 KiB, one through a keayl [`Live`]
//!    writer (default 256 KiB buffer), one through a bare hyper streaming body
//!    (`StreamBody` over a bounded `tokio::sync::mpsc` channel holding about
//!    the same number of bytes). A raw TCP client reads each response to the
//!    end; rounds alternate the two variants and the medians are compared.
//! 2. **SSE fan-out**: an axum endpoint built on [`Sse`] relays events from a
//!    `tokio::sync::broadcast` channel to `--connections` raw TCP clients; the
//!    publisher stamps each event with its send time, the clients record the
//!    delivery latency.
//!
//! It prints a table, then one line of JSON with every figure. It is a
//! benchmark, not a test: run it in release mode, e.g.
//! `ulimit -n 20000 && cargo run --release -p keayl-bench --bin keayl-bench-live`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::routing::get;
use axum::serve::ListenerExt;
use bytes::Bytes;
use clap::Parser;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http_body::Frame;
use http_body_util::StreamBody;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use keayl_live::{Live, LiveConfig, Sse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, broadcast, mpsc};

/// Benchmark keayl-live: streaming throughput against a bare hyper body, and
/// SSE fan-out latency.
#[derive(Debug, Parser)]
#[command(name = "keayl-bench-live")]
struct Args {
    /// Rounds per measurement; medians are reported [default: 5, quick: 2].
    #[arg(long)]
    rounds: Option<usize>,
    /// Payload per throughput response, in MiB [default: 256, quick: 8].
    #[arg(long)]
    total_mib: Option<usize>,
    /// SSE client connections [default: 1000, quick: 50].
    #[arg(long)]
    connections: Option<usize>,
    /// SSE events published per run [default: 200, quick: 20].
    #[arg(long)]
    events: Option<usize>,
    /// Milliseconds between published SSE events [default: 10, quick: 5].
    #[arg(long)]
    interval_ms: Option<u64>,
    /// Tiny sizes for a CI smoke run (a few seconds); explicit flags still win.
    #[arg(long)]
    quick: bool,
}

/// The settings a run uses, after `--quick` and the defaults are applied.
#[derive(Debug, Clone, Copy)]
struct Settings {
    rounds: usize,
    total_bytes: usize,
    connections: usize,
    events: usize,
    interval: Duration,
    quick: bool,
}

impl Settings {
    fn from_args(a: &Args) -> Self {
        let q = a.quick;
        Settings {
            rounds: a.rounds.unwrap_or(if q { 2 } else { 5 }).max(1),
            total_bytes: a.total_mib.unwrap_or(if q { 8 } else { 256 }).max(1) << 20,
            connections: a.connections.unwrap_or(if q { 50 } else { 1000 }).max(1),
            events: a.events.unwrap_or(if q { 20 } else { 200 }).max(1),
            interval: Duration::from_millis(a.interval_ms.unwrap_or(if q { 5 } else { 10 })),
            quick: q,
        }
    }
}

/// Buffer between writer and socket, for both throughput variants.
const BUFFER_BYTES: usize = LiveConfig::DEFAULT_BUFFER_BYTES;
/// The largest chunk a throughput request may ask for.
const MAX_CHUNK: usize = 1 << 20;
/// The chunk sizes measured.
const CHUNK_SIZES: [(usize, &str); 2] = [(1024, "1k"), (64 * 1024, "64k")];

fn main() -> Result<()> {
    let args = Args::parse();
    let settings = Settings::from_args(&args);
    check_fd_limit(settings.connections)?;
    let _ = epoch();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the Tokio runtime")?;
    // Everything runs on the runtime's workers (one per core): the main
    // thread only waits.
    runtime.block_on(async move { tokio::spawn(run(settings)).await? })
}

async fn run(s: Settings) -> Result<()> {
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    eprintln!(
        "keayl-bench-live: {} worker threads, rounds={}, total={} MiB, connections={}, events={}, interval={} ms{}",
        workers,
        s.rounds,
        s.total_bytes >> 20,
        s.connections,
        s.events,
        s.interval.as_millis(),
        if s.quick { " (quick)" } else { "" }
    );

    // ---- 1. throughput -------------------------------------------------
    let payload = Bytes::from(vec![b'x'; MAX_CHUNK]);
    let keayl_addr = {
        let payload = payload.clone();
        start_stream_server(move |p| keayl_response(p, payload.clone())).await?
    };
    let baseline_addr = {
        let payload = payload.clone();
        start_stream_server(move |p| baseline_response(p, payload.clone())).await?
    };
    let mut client = ThroughputClient::new();
    let mut throughput = Vec::new();
    for (chunk, label) in CHUNK_SIZES {
        // One untimed warm-up run per variant.
        let warm = s.total_bytes.min(32 << 20);
        client.fetch(keayl_addr, chunk, warm).await?;
        client.fetch(baseline_addr, chunk, warm).await?;
        let (mut live, mut base) = (Vec::new(), Vec::new());
        for round in 0..s.rounds {
            // Alternate which variant goes first, so neither always runs on a
            // warmer (or more fragmented) machine.
            let order = if round % 2 == 0 {
                [(keayl_addr, true), (baseline_addr, false)]
            } else {
                [(baseline_addr, false), (keayl_addr, true)]
            };
            for (addr, is_live) in order {
                let mbps = client.fetch(addr, chunk, s.total_bytes).await?;
                if is_live { &mut live } else { &mut base }.push(mbps);
            }
            eprintln!(
                "  throughput {label:>3} round {}: keayl {:8.1} MB/s  baseline {:8.1} MB/s",
                round + 1,
                live[round],
                base[round]
            );
        }
        // Within a round the two variants run back to back, so the per-round
        // ratio cancels slow drifts of the (shared, virtualised) machine.
        let paired: Vec<f64> = live.iter().zip(&base).map(|(l, b)| l / b).collect();
        let (l, b) = (median(&live), median(&base));
        throughput.push(ThroughputRow {
            label,
            chunk,
            live: l,
            base: b,
            ratio: l / b,
            paired: median(&paired),
        });
    }

    // ---- 2. SSE fan-out ------------------------------------------------
    let mut sse_runs = Vec::new();
    for round in 0..s.rounds {
        let r = sse_run(&s).await?;
        eprintln!(
            "  sse round {}: {:.0} events/s delivered ({} of {}), p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            round + 1,
            r.events_per_s,
            r.delivered,
            r.expected,
            r.p50_ms,
            r.p99_ms,
            r.max_ms
        );
        sse_runs.push(r);
    }
    let sse_eps = median(&sse_runs.iter().map(|r| r.events_per_s).collect::<Vec<_>>());
    let sse_p50 = median(&sse_runs.iter().map(|r| r.p50_ms).collect::<Vec<_>>());
    let sse_p99 = median(&sse_runs.iter().map(|r| r.p99_ms).collect::<Vec<_>>());
    let sse_max = sse_runs.iter().map(|r| r.max_ms).fold(0.0, f64::max);
    let delivered: usize = sse_runs.iter().map(|r| r.delivered).sum();
    let expected: usize = sse_runs.iter().map(|r| r.expected).sum();
    let lagged: u64 = sse_runs.iter().map(|r| r.lagged).sum();

    // ---- report --------------------------------------------------------
    println!();
    println!(
        "Throughput: {} MiB per response, medians of {} rounds (MB/s = 10^6 payload bytes/s)",
        s.total_bytes >> 20,
        s.rounds
    );
    println!(
        "  {:<8} {:>12} {:>14} {:>16} {:>22}",
        "chunk", "keayl MB/s", "baseline MB/s", "keayl/baseline", "median per-round ratio"
    );
    for r in &throughput {
        let flag = if r.ratio >= 0.8 {
            ""
        } else {
            "  (below 0.8 goal)"
        };
        println!(
            "  {:<8} {:>12.1} {:>14.1} {:>16.3} {:>22.3}{flag}",
            format!("{} B", r.chunk),
            r.live,
            r.base,
            r.ratio,
            r.paired,
        );
    }
    if s.quick {
        println!("  (--quick: responses this small are a smoke test; the ratios are noise)");
    }
    println!();
    println!(
        "SSE fan-out: {} connections, {} events every {} ms, medians of {} runs",
        s.connections,
        s.events,
        s.interval.as_millis(),
        s.rounds
    );
    println!("  {:<28} {:>12.0}", "delivered events/s", sse_eps);
    println!("  {:<28} {:>12.3}", "latency p50 (ms)", sse_p50);
    println!("  {:<28} {:>12.3}", "latency p99 (ms)", sse_p99);
    println!("  {:<28} {:>12.3}", "latency max, all runs (ms)", sse_max);
    println!(
        "  {:<28} {:>12}",
        "delivered / expected",
        format!("{delivered}/{expected}")
    );
    if lagged > 0 {
        println!("  {:<28} {:>12}", "events lost to lag", lagged);
    }
    println!();

    let mut json = serde_json::Map::new();
    for r in &throughput {
        let label = r.label;
        json.insert(format!("live_{label}_mbps"), round2(r.live).into());
        json.insert(format!("baseline_{label}_mbps"), round2(r.base).into());
        json.insert(format!("ratio_{label}"), round3(r.ratio).into());
        json.insert(format!("ratio_{label}_paired"), round3(r.paired).into());
    }
    json.insert("sse_events_per_s".into(), round2(sse_eps).into());
    json.insert("sse_p50_ms".into(), round3(sse_p50).into());
    json.insert("sse_p99_ms".into(), round3(sse_p99).into());
    json.insert("sse_max_ms".into(), round3(sse_max).into());
    json.insert("sse_delivered".into(), delivered.into());
    json.insert("sse_expected".into(), expected.into());
    json.insert("sse_lagged".into(), lagged.into());
    json.insert("rounds".into(), s.rounds.into());
    json.insert("total_mib".into(), (s.total_bytes >> 20).into());
    json.insert("connections".into(), s.connections.into());
    json.insert("events".into(), s.events.into());
    json.insert("interval_ms".into(), (s.interval.as_millis() as u64).into());
    json.insert("quick".into(), s.quick.into());
    json.insert("workers".into(), workers.into());
    println!("{}", serde_json::Value::Object(json));

    if delivered < expected {
        bail!("SSE: only {delivered} of {expected} events were delivered");
    }
    Ok(())
}

// ===================================================================
// Throughput
// ===================================================================

/// The throughput figures for one chunk size.
#[derive(Debug)]
struct ThroughputRow {
    label: &'static str,
    chunk: usize,
    /// Median keayl MB/s.
    live: f64,
    /// Median baseline MB/s.
    base: f64,
    /// `live / base`.
    ratio: f64,
    /// Median of the per-round keayl/baseline ratios.
    paired: f64,
}

/// What a throughput request asks for: `GET /?c=<chunk>&t=<total>`.
#[derive(Debug, Clone, Copy)]
struct StreamParams {
    chunk: usize,
    total: usize,
}

impl StreamParams {
    fn from_uri(uri: &http::Uri) -> Self {
        let mut p = StreamParams {
            chunk: 1024,
            total: 1 << 20,
        };
        for kv in uri.query().unwrap_or("").split('&') {
            match kv.split_once('=') {
                Some(("c", v)) => p.chunk = v.parse().unwrap_or(p.chunk),
                Some(("t", v)) => p.total = v.parse().unwrap_or(p.total),
                _ => {}
            }
        }
        p.chunk = p.chunk.clamp(1, MAX_CHUNK);
        p
    }
}

/// A plain hyper http1 server on 127.0.0.1:0, one task per connection.
async fn start_stream_server<B, F>(make: F) -> Result<SocketAddr>
where
    F: Fn(StreamParams) -> http::Response<B> + Clone + Send + Sync + 'static,
    B: http_body::Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    eprintln!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let make = make.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let response = make(StreamParams::from_uri(req.uri()));
                    async move { Ok::<_, Infallible>(response) }
                });
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await
                {
                    eprintln!("throughput connection error: {e}");
                }
            });
        }
    });
    Ok(addr)
}

/// The keayl variant: a live writer pushing clones of one pre-built chunk.
fn keayl_response(p: StreamParams, payload: Bytes) -> http::Response<keayl_live::LiveBody> {
    let chunk = payload.slice(..p.chunk);
    Live::new()
        .buffer_bytes(BUFFER_BYTES)
        .spawn(move |stream| async move {
            let mut left = p.total;
            while left >= chunk.len() {
                stream.write(chunk.clone()).await?;
                left -= chunk.len();
            }
            if left > 0 {
                stream.write(chunk.slice(..left)).await?;
            }
            Ok(())
        })
        .into_http()
}

/// The baseline: the simplest correct bare-hyper streaming body, a
/// `StreamBody` over a bounded mpsc channel fed by a spawned task, holding
/// about as many bytes as the keayl buffer.
fn baseline_response(
    p: StreamParams,
    payload: Bytes,
) -> http::Response<
    StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static>,
> {
    let chunk = payload.slice(..p.chunk);
    let capacity = (BUFFER_BYTES / p.chunk).max(1);
    let (tx, mut rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(capacity);
    tokio::spawn(async move {
        let mut left = p.total;
        while left >= chunk.len() {
            if tx.send(Ok(Frame::data(chunk.clone()))).await.is_err() {
                return;
            }
            left -= chunk.len();
        }
        if left > 0 {
            let _ = tx.send(Ok(Frame::data(chunk.slice(..left)))).await;
        }
    });
    let body = StreamBody::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    // The same headers as a keayl live response, so both put the same bytes
    // on the wire.
    let mut response = http::Response::new(body);
    let h = response.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// A raw TCP client with one reusable 256 KiB read buffer.
struct ThroughputClient {
    buf: Vec<u8>,
}

impl ThroughputClient {
    fn new() -> Self {
        ThroughputClient {
            buf: vec![0; 256 * 1024],
        }
    }

    /// GET one response with `Connection: close` and read until the server
    /// closes; returns payload MB/s (10^6 bytes per second).
    async fn fetch(&mut self, addr: SocketAddr, chunk: usize, total: usize) -> Result<f64> {
        let start = Instant::now();
        let mut tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let request = format!(
            "GET /?c={chunk}&t={total} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await?;
        let mut wire: usize = 0;
        let mut tail = [0u8; 5];
        loop {
            let n = tcp.read(&mut self.buf).await?;
            if n == 0 {
                break;
            }
            wire += n;
            const T: usize = 5;
            if n >= T {
                tail.copy_from_slice(&self.buf[n - T..n]);
            } else {
                tail.copy_within(n.., 0);
                tail[T - n..].copy_from_slice(&self.buf[..n]);
            }
        }
        let elapsed = start.elapsed();
        if wire < total || &tail != b"0\r\n\r\n" {
            bail!(
                "throughput response from {addr} incomplete: {wire} wire bytes for {total} payload bytes, ends with {:?}",
                String::from_utf8_lossy(&tail)
            );
        }
        Ok(total as f64 / elapsed.as_secs_f64() / 1e6)
    }
}

// ===================================================================
// SSE fan-out
// ===================================================================

/// The instant SSE timestamps count from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`].
fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

#[derive(Debug)]
struct SseRun {
    events_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    delivered: usize,
    expected: usize,
    lagged: u64,
}

/// One fan-out run: a fresh server and broadcast channel, `connections`
/// clients, `events` events.
async fn sse_run(s: &Settings) -> Result<SseRun> {
    let (tx, _) = broadcast::channel::<Arc<str>>(s.events + 64);
    let lagged = Arc::new(AtomicU64::new(0));
    let server = start_sse_server(tx.downgrade(), lagged.clone()).await?;

    // Connect every client first (sequentially: the listen backlog stays
    // small), then let each read on its own task.
    let ready = Arc::new(Ready {
        count: AtomicUsize::new(0),
        target: s.connections,
        all: Notify::new(),
    });
    let deadline =
        tokio::time::Instant::now() + s.interval * s.events as u32 + Duration::from_secs(60);
    let mut clients = Vec::with_capacity(s.connections);
    for i in 0..s.connections {
        let tcp = TcpStream::connect(server.addr)
            .await
            .with_context(|| format!("SSE client {i} could not connect"))?;
        clients.push(tokio::spawn(sse_client(
            tcp,
            server.addr,
            s.events,
            ready.clone(),
            deadline,
        )));
    }
    tokio::time::timeout(Duration::from_secs(60), ready.all.notified())
        .await
        .with_context(|| {
            format!(
                "only {} of {} SSE clients got their stream within 60 s",
                ready.count.load(Ordering::Relaxed),
                s.connections
            )
        })?;
    if tx.receiver_count() < s.connections {
        bail!(
            "{} subscribers for {} clients",
            tx.receiver_count(),
            s.connections
        );
    }

    // Publish at a fixed rate.
    let mut ticker = tokio::time::interval(s.interval);
    let first_publish = now_ns();
    for seq in 0..s.events {
        ticker.tick().await;
        let payload: Arc<str> = format!("{seq} {}", now_ns()).into();
        let _ = tx.send(payload);
    }

    let mut latencies: Vec<u64> = Vec::with_capacity(s.connections * s.events);
    let mut last_delivery = first_publish;
    let mut delivered = 0;
    for c in clients {
        let r = c.await??;
        delivered += r.latencies_ns.len();
        last_delivery = last_delivery.max(r.last_at_ns);
        latencies.extend_from_slice(&r.latencies_ns);
    }
    // Dropping the only sender ends every writer (their `recv` fails).
    drop(tx);
    server.task.abort();

    let secs = (last_delivery.saturating_sub(first_publish)) as f64 / 1e9;
    latencies.sort_unstable();
    let pct = |q: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies[i] as f64 / 1e6
    };
    Ok(SseRun {
        events_per_s: if secs > 0.0 {
            delivered as f64 / secs
        } else {
            0.0
        },
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
        delivered,
        expected: s.connections * s.events,
        lagged: lagged.load(Ordering::Relaxed),
    })
}

struct SseServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

/// An axum server with `GET /sse`: each request subscribes to the broadcast
/// channel, writes a `: ready` comment, then relays every event.
///
/// The router holds only a weak sender, so dropping the benchmark's sender
/// closes the channel and ends every writer.
async fn start_sse_server(
    tx: broadcast::WeakSender<Arc<str>>,
    lagged: Arc<AtomicU64>,
) -> Result<SseServer> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = Router::new().route(
        "/sse",
        get(move || {
            // Subscribe before answering: a client that saw `: ready` is
            // sure to receive every later event.
            let rx = tx.upgrade().map(|tx| tx.subscribe());
            let lagged = lagged.clone();
            async move {
                Sse::new()
                    .spawn(move |sse| async move {
                        let Some(mut rx) = rx else { return Ok(()) };
                        sse.comment("ready").await?;
                        loop {
                            match rx.recv().await {
                                Ok(payload) => sse.write(&*payload).await?,
                                Err(broadcast::error::RecvError::Lagged(n)) => {
                                    lagged.fetch_add(n, Ordering::Relaxed);
                                }
                                Err(broadcast::error::RecvError::Closed) => return Ok(()),
                            }
                        }
                    })
                    .into_http()
            }
        }),
    );
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("SSE server failed: {e}");
        }
    });
    Ok(SseServer { addr, task })
}

/// Counts clients whose stream has started.
struct Ready {
    count: AtomicUsize,
    target: usize,
    all: Notify,
}

struct ClientResult {
    latencies_ns: Vec<u64>,
    last_at_ns: u64,
}

/// One SSE client: one task, one 8 KiB buffer. It scans for complete lines,
/// signals on the `: ready` comment and takes the timestamp from each
/// `data: <seq> <nanos>` line (chunk-size lines of the chunked encoding are
/// lines of their own and are ignored).
async fn sse_client(
    mut tcp: TcpStream,
    addr: SocketAddr,
    events: usize,
    ready: Arc<Ready>,
    deadline: tokio::time::Instant,
) -> Result<ClientResult> {
    let request = format!("GET /sse HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    tcp.write_all(request.as_bytes()).await?;
    let mut latencies_ns = Vec::with_capacity(events);
    let mut last_at_ns = 0;
    let mut buf = vec![0u8; 8192];
    let mut filled = 0;
    let mut seen_ready = false;
    let timeout = tokio::time::sleep_until(deadline);
    tokio::pin!(timeout);
    while latencies_ns.len() < events {
        if filled == buf.len() {
            bail!("SSE client: a line longer than {} bytes", buf.len());
        }
        let n = tokio::select! {
            biased;
            r = tcp.read(&mut buf[filled..]) => r?,
            _ = &mut timeout => break,
        };
        if n == 0 {
            break;
        }
        let now = now_ns();
        filled += n;
        let mut start = 0;
        while let Some(pos) = buf[start..filled].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + pos];
            start += pos + 1;
            if let Some(rest) = line.strip_prefix(b"data: ") {
                let sent = rest
                    .rsplit(|&b| b == b' ')
                    .next()
                    .and_then(|t| std::str::from_utf8(t).ok())
                    .and_then(|t| t.trim_end_matches('\r').parse::<u64>().ok())
                    .context("SSE client: malformed data line")?;
                latencies_ns.push(now.saturating_sub(sent));
                last_at_ns = now;
            } else if !seen_ready && line.starts_with(b": ready") {
                seen_ready = true;
                if ready.count.fetch_add(1, Ordering::AcqRel) + 1 == ready.target {
                    ready.all.notify_one();
                }
            }
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
    }
    Ok(ClientResult {
        latencies_ns,
        last_at_ns,
    })
}

// ===================================================================
// Helpers
// ===================================================================

/// Fail early, with a clear message, when the soft open-file limit is too low
/// for the SSE clients (two descriptors per connection: client and server
/// side live in this one process).
fn check_fd_limit(connections: usize) -> Result<()> {
    let needed = connections * 2 + 128;
    let Some((soft, hard)) = nofile_limits() else {
        return Ok(());
    };
    if soft < needed as u64 {
        eprintln!(
            "keayl-bench-live: {connections} SSE connections need about {needed} open files \
             (two per connection, both ends run in this process), but the soft \
             RLIMIT_NOFILE is {soft} (hard limit {hard}).\n\
             Raise it in the shell that runs the benchmark, e.g.\n    \
             ulimit -n 20000 && cargo run --release -p keayl-bench --bin keayl-bench-live\n\
             or pass a smaller --connections."
        );
        std::process::exit(2);
    }
    Ok(())
}

/// The soft and hard `RLIMIT_NOFILE`, read from `/proc/self/limits` (Linux;
/// `None` elsewhere or when unlimited).
fn nofile_limits() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut fields = line["Max open files".len()..].split_whitespace();
    let soft = fields.next()?.parse().ok()?;
    let hard = fields.next()?.parse().ok()?;
    Some((soft, hard))
}

fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
