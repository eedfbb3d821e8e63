//! The load itself: a [`Pool`] of client connections (one task each) and
//! the measurements run on it — connect, broadcast fan-out, echo, SSE
//! fan-out.
//!
//! Broadcast rounds are closed-loop, as in anycable/websocket-bench: a
//! sender publishes one broadcast carrying its send time and sequence
//! number, waits until every receiver has it (or a timeout), pauses, and
//! sends the next. Every receiver records `arrival - send time` for every
//! delivery; per broadcast the pool also keeps how many receivers got it
//! and when the last one did.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Frames, HttpBroadcaster, Target, Ws};
use crate::procfs::{self, CpuSample, SystemCpu};
use crate::stats::{Histogram, Summary, now_ns};

/// How long one client may take to connect and be confirmed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Per-broadcast bookkeeping.
#[derive(Debug, Default)]
struct Slot {
    count: AtomicU32,
    last_us: AtomicU64,
}

/// State shared by every client task of a pool.
#[derive(Debug)]
pub struct Shared {
    confirmed: AtomicUsize,
    live: AtomicUsize,
    failed: AtomicUsize,
    dropped: AtomicUsize,
    stopping: AtomicBool,
    hist: Histogram,
    slots: Box<[Slot]>,
    expected: AtomicU32,
    progress: Notify,
    strays: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn new(max_broadcasts: usize) -> Self {
        Shared {
            confirmed: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            hist: Histogram::new(),
            slots: (0..max_broadcasts).map(|_| Slot::default()).collect(),
            expected: AtomicU32::new(u32::MAX),
            progress: Notify::new(),
            strays: AtomicU64::new(0),
            first_error: Mutex::new(None),
        }
    }

    fn deliver(&self, t: u64, seq: u64) {
        let lat_us = now_ns().saturating_sub(t) / 1000;
        self.hist.record(lat_us);
        match self.slots.get(seq as usize) {
            Some(slot) => {
                slot.last_us.fetch_max(lat_us, Ordering::Relaxed);
                let c = slot.count.fetch_add(1, Ordering::AcqRel) + 1;
                if c == self.expected.load(Ordering::Relaxed) {
                    self.progress.notify_waiters();
                }
            }
            None => {
                self.strays.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn fail(&self, e: &anyhow::Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(format!("{e:#}"));
        }
    }

    fn count(&self, seq: u64) -> u32 {
        self.slots
            .get(seq as usize)
            .map_or(0, |s| s.count.load(Ordering::Acquire))
    }

    fn confirm(&self) -> LiveGuard<'_> {
        self.confirmed.fetch_add(1, Ordering::Relaxed);
        self.live.fetch_add(1, Ordering::Relaxed);
        LiveGuard(self)
    }

    /// The first connection error seen, if any.
    pub fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Counts a receiver as live until its task ends (or is aborted).
struct LiveGuard<'a>(&'a Shared);

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One round of broadcasts, handed to the senders.
#[derive(Debug)]
struct Round {
    next: AtomicU64,
    end: u64,
    expected: u32,
    pause: Duration,
    wait: Duration,
    finished: AtomicUsize,
    done: Notify,
}

/// How broadcasts are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Feed {
    /// `perform("broadcast", …)` on a subscribed BenchmarkChannel socket.
    Ws,
    /// `POST /_broadcast {"stream":"all","data":…}` on a keep-alive HTTP
    /// connection.
    Http,
}

/// Settings of broadcast rounds.
#[derive(Debug, Clone)]
pub struct BroadcastSettings {
    /// Broadcasts per round.
    pub samples: u64,
    /// Pause after a broadcast completed, before the sender's next one.
    pub pause: Duration,
    /// How long a sender waits for every receiver before moving on.
    pub wait: Duration,
}

/// A set of connected clients and their senders.
#[derive(Debug)]
pub struct Pool {
    target: Arc<Target>,
    frames: Arc<Frames>,
    sse_request: Arc<[u8]>,
    shared: Arc<Shared>,
    gate: Arc<Semaphore>,
    receivers: Vec<JoinHandle<()>>,
    senders: Vec<JoinHandle<()>>,
    senders_ready: Arc<AtomicUsize>,
    rounds: watch::Sender<Option<Arc<Round>>>,
    next_seq: u64,
}

/// What growing a pool took.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Growth {
    /// Clients asked for.
    pub added: usize,
    /// Seconds until every new client was confirmed (or failed).
    pub secs: f64,
    /// Clients that failed to connect or subscribe.
    pub failed: usize,
}

impl Pool {
    /// An empty pool against `target`; `concurrency` handshakes at most run
    /// at once; up to `max_broadcasts` broadcasts can be tracked.
    pub fn new(target: Target, frames: Frames, concurrency: usize, max_broadcasts: usize) -> Self {
        Pool {
            sse_request: client::sse_request(&target).into(),
            target: Arc::new(target),
            frames: Arc::new(frames),
            shared: Arc::new(Shared::new(max_broadcasts)),
            gate: Arc::new(Semaphore::new(concurrency.max(1))),
            receivers: Vec::new(),
            senders: Vec::new(),
            senders_ready: Arc::new(AtomicUsize::new(0)),
            rounds: watch::channel(None).0,
            next_seq: 0,
        }
    }

    /// The shared counters.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Connected receivers (confirmed and still open).
    pub fn receivers(&self) -> usize {
        self.shared.live.load(Ordering::Relaxed)
    }

    /// Receivers started (connected, connecting or failed).
    pub fn spawned(&self) -> usize {
        self.receivers.len()
    }

    /// Connections lost after their confirmation.
    pub fn dropped(&self) -> usize {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    async fn wait_settled(&self, goal: usize) -> Result<()> {
        let deadline = Instant::now() + CONNECT_TIMEOUT + Duration::from_secs(5);
        loop {
            let settled = self.shared.confirmed.load(Ordering::Relaxed)
                + self.shared.failed.load(Ordering::Relaxed);
            if settled >= goal {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("only {settled} of {goal} connections settled in time");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn settled(&self) -> usize {
        self.shared.confirmed.load(Ordering::Relaxed) + self.shared.failed.load(Ordering::Relaxed)
    }

    /// Add `n` WebSocket receivers (subscribed to BenchmarkChannel) and
    /// wait until each is confirmed or failed.
    pub async fn add_ws_receivers(&mut self, n: usize) -> Result<Growth> {
        procfs::check_fd_budget(n)?;
        let before_failed = self.shared.failed.load(Ordering::Relaxed);
        let goal = self.settled() + n;
        let start = Instant::now();
        for _ in 0..n {
            let target = self.target.clone();
            let frames = self.frames.clone();
            let shared = self.shared.clone();
            let gate = self.gate.clone();
            self.receivers
                .push(tokio::spawn(ws_receiver(target, frames, shared, gate)));
        }
        self.wait_settled(goal).await?;
        Ok(Growth {
            added: n,
            secs: start.elapsed().as_secs_f64(),
            failed: self.shared.failed.load(Ordering::Relaxed) - before_failed,
        })
    }

    /// Add `n` SSE receivers of the target's SSE path and wait until each
    /// has its response head (or failed).
    pub async fn add_sse_receivers(&mut self, n: usize) -> Result<Growth> {
        procfs::check_fd_budget(n)?;
        let before_failed = self.shared.failed.load(Ordering::Relaxed);
        let goal = self.settled() + n;
        let start = Instant::now();
        for _ in 0..n {
            let target = self.target.clone();
            let request = self.sse_request.clone();
            let shared = self.shared.clone();
            let gate = self.gate.clone();
            self.receivers
                .push(tokio::spawn(sse_receiver(target, request, shared, gate)));
        }
        self.wait_settled(goal).await?;
        Ok(Growth {
            added: n,
            secs: start.elapsed().as_secs_f64(),
            failed: self.shared.failed.load(Ordering::Relaxed) - before_failed,
        })
    }

    /// Add `n` senders publishing through `feed` (senders do not record
    /// deliveries).
    pub async fn add_senders(&mut self, n: usize, feed: Feed) -> Result<()> {
        let want = self.senders_ready.load(Ordering::Relaxed) + n;
        for _ in 0..n {
            let target = self.target.clone();
            let frames = self.frames.clone();
            let shared = self.shared.clone();
            let rounds = self.rounds.subscribe();
            let ready = self.senders_ready.clone();
            self.senders.push(tokio::spawn(async move {
                if let Err(e) = sender(target, frames, shared.clone(), rounds, ready, feed).await {
                    shared.fail(&e);
                }
            }));
        }
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        while self.senders_ready.load(Ordering::Relaxed) < want {
            if Instant::now() > deadline {
                bail!(
                    "senders did not connect: {}",
                    self.shared.first_error().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Close the most recently added receivers until `n` are left.
    pub async fn shrink_to(&mut self, n: usize) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        let gone: Vec<_> = self
            .receivers
            .drain(n.min(self.receivers.len())..)
            .collect();
        for h in &gone {
            h.abort();
        }
        for h in gone {
            let _ = h.await;
        }
        self.shared.stopping.store(false, Ordering::Relaxed);
    }

    /// Close every connection.
    pub async fn close(mut self) {
        self.shrink_to(0).await;
        self.shared.stopping.store(true, Ordering::Relaxed);
        let _ = self.rounds.send(None);
        for h in &self.senders {
            h.abort();
        }
        for h in self.senders.drain(..) {
            let _ = h.await;
        }
    }

    /// Run one round of `settings.samples` broadcasts to the current
    /// receivers and measure the deliveries.
    pub async fn broadcast_round(
        &mut self,
        settings: &BroadcastSettings,
        server_pid: Option<u32>,
    ) -> Result<RoundResult> {
        if self.senders.is_empty() {
            bail!("no senders");
        }
        let receivers = self.receivers() as u32;
        let start_seq = self.next_seq;
        let end = (start_seq + settings.samples).min(self.shared.slots.len() as u64);
        if end <= start_seq {
            bail!("out of broadcast slots");
        }
        self.next_seq = end;
        self.shared.hist.reset();
        self.shared.expected.store(receivers, Ordering::Relaxed);
        let dropped_before = self.dropped();
        let round = Arc::new(Round {
            next: AtomicU64::new(start_seq),
            end,
            expected: receivers,
            pause: settings.pause,
            wait: settings.wait,
            finished: AtomicUsize::new(0),
            done: Notify::new(),
        });
        let senders = self.senders.len();
        let cpu_server = server_pid.and_then(CpuSample::take);
        let cpu_self = CpuSample::take(std::process::id());
        let cpu_all = SystemCpu::take();
        let started = Instant::now();
        let _ = self.rounds.send(Some(round.clone()));
        let budget = (settings.wait + settings.pause + Duration::from_secs(1))
            * (settings.samples as u32)
            + Duration::from_secs(10);
        let deadline = tokio::time::Instant::now() + budget;
        loop {
            let done = round.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if round.finished.load(Ordering::Acquire) >= senders {
                break;
            }
            tokio::select! {
                _ = done => {}
                _ = tokio::time::sleep_until(deadline) => bail!("broadcast round timed out"),
            }
        }
        let elapsed = started.elapsed();
        let machine = cpu_all.and_then(|c| c.busy_since());
        // Late deliveries: give stragglers a moment before counting losses.
        let drain_until = Instant::now() + Duration::from_millis(500);
        while (start_seq..end).any(|s| self.shared.count(s) < receivers)
            && Instant::now() < drain_until
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let server_now = server_pid.and_then(CpuSample::take);
        let client_now = CpuSample::take(std::process::id());
        let server_cpu_pct = cpu_server.zip(server_now).map(|(a, b)| a.percent_to(&b));
        let client_cpu_pct = cpu_self.zip(client_now).map(|(a, b)| a.percent_to(&b));
        let deliveries = self.shared.hist.count().max(1) as f64;
        let per_delivery =
            |a: CpuSample, b: CpuSample| a.cpu_between(&b).as_secs_f64() * 1e6 / deliveries;
        let server_us_per_delivery = cpu_server.zip(server_now).map(|(a, b)| per_delivery(a, b));
        let client_us_per_delivery = cpu_self.zip(client_now).map(|(a, b)| per_delivery(a, b));
        let others_cpu_pct = machine.map(|(busy, _)| {
            (busy - server_cpu_pct.unwrap_or(0.0) - client_cpu_pct.unwrap_or(0.0)).max(0.0)
        });
        let mut lost = 0u64;
        let mut extra = 0u64;
        let mut last: Vec<f64> = Vec::with_capacity((end - start_seq) as usize);
        for s in start_seq..end {
            let slot = &self.shared.slots[s as usize];
            let c = slot.count.load(Ordering::Acquire);
            lost += u64::from(receivers.saturating_sub(c));
            extra += u64::from(c.saturating_sub(receivers));
            last.push(slot.last_us.load(Ordering::Relaxed) as f64 / 1000.0);
        }
        let broadcasts = end - start_seq;
        let latency = self.shared.hist.summary();
        Ok(RoundResult {
            receivers: receivers as usize,
            broadcasts,
            latency,
            last_delivery_p50_ms: crate::stats::median(&last).unwrap_or(0.0),
            last_delivery_max_ms: last.iter().cloned().fold(0.0, f64::max),
            lost,
            duplicates: extra,
            dropped_connections: self.dropped() - dropped_before,
            deliveries_per_sec: latency.count as f64 / elapsed.as_secs_f64(),
            server_cpu_pct,
            client_cpu_pct,
            server_us_per_delivery,
            client_us_per_delivery,
            others_cpu_pct,
            steal_pct: machine.map(|(_, steal)| steal),
        })
    }
}

/// Figures of one broadcast round.
#[derive(Debug, Clone, Serialize)]
pub struct RoundResult {
    /// Receivers at the time.
    pub receivers: usize,
    /// Broadcasts sent.
    pub broadcasts: u64,
    /// Delivery latency over every (broadcast, receiver).
    pub latency: Summary,
    /// Median over broadcasts of the time until the last receiver had it.
    pub last_delivery_p50_ms: f64,
    /// Largest time until the last receiver had a broadcast.
    pub last_delivery_max_ms: f64,
    /// Deliveries that never arrived.
    pub lost: u64,
    /// Deliveries that arrived more than once.
    pub duplicates: u64,
    /// Receivers whose connection ended during the round.
    pub dropped_connections: usize,
    /// Deliveries per second over the round.
    pub deliveries_per_sec: f64,
    /// The server's CPU use during the round (% of one core).
    pub server_cpu_pct: Option<f64>,
    /// This process's CPU use during the round (% of one core).
    pub client_cpu_pct: Option<f64>,
    /// Server CPU time per delivery, µs (the least noise-sensitive cost
    /// figure: time only counts while the server runs).
    pub server_us_per_delivery: Option<f64>,
    /// This process's CPU time per delivery, µs.
    pub client_us_per_delivery: Option<f64>,
    /// CPU used by every other process on the machine during the round
    /// (% of one core): the noise of a shared machine.
    pub others_cpu_pct: Option<f64>,
    /// Hypervisor steal time during the round (% of one core).
    pub steal_pct: Option<f64>,
}

async fn ws_receiver(
    target: Arc<Target>,
    frames: Arc<Frames>,
    shared: Arc<Shared>,
    gate: Arc<Semaphore>,
) {
    let permit = gate.acquire().await;
    // Boxed: the handshake's state (~3 KiB) lives on the heap only while
    // connecting instead of inflating every connection's task for good.
    let ws = tokio::time::timeout(
        CONNECT_TIMEOUT,
        Box::pin(client::open_subscribed(&target, &frames)),
    )
    .await;
    drop(permit);
    let mut ws = match ws {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => return shared.fail(&e),
        Err(_) => return shared.fail(&anyhow::anyhow!("connect timed out")),
    };
    let _live = shared.confirm();
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(text)) => {
                if let Some((t, seq)) = client::scan_payload(text.as_bytes()) {
                    shared.deliver(t, seq);
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    if !shared.stopping.load(Ordering::Relaxed) {
        shared.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

async fn sse_receiver(
    target: Arc<Target>,
    request: Arc<[u8]>,
    shared: Arc<Shared>,
    gate: Arc<Semaphore>,
) {
    let permit = gate.acquire().await;
    let opened = tokio::time::timeout(
        CONNECT_TIMEOUT,
        Box::pin(client::open_sse(&target, &request)),
    )
    .await;
    drop(permit);
    let (mut stream, mut reader) = match opened {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return shared.fail(&e),
        Err(_) => return shared.fail(&anyhow::anyhow!("SSE connect timed out")),
    };
    let _live = shared.confirm();
    let mut buf = vec![0u8; 4096];
    let on_event = |event: &[u8]| {
        if let Some((t, seq)) = client::scan_payload(event) {
            shared.deliver(t, seq);
        }
    };
    // Body bytes that came with the head.
    let _ = reader.feed(&[], on_event);
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if reader.feed(&buf[..n], on_event).is_err() || reader.ended() {
                    break;
                }
            }
        }
    }
    if !shared.stopping.load(Ordering::Relaxed) {
        shared.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

enum Publisher {
    Ws(Box<Ws>),
    Http(HttpBroadcaster),
}

impl Publisher {
    /// Wait for the next incoming frame (forever for HTTP); `Err` when the
    /// socket ended.
    async fn idle(&mut self) -> Result<()> {
        match self {
            Publisher::Ws(ws) => match ws.next().await {
                Some(Ok(_)) => Ok(()),
                Some(Err(e)) => Err(e.into()),
                None => bail!("sender socket closed"),
            },
            Publisher::Http(_) => std::future::pending().await,
        }
    }

    async fn publish(&mut self, frames: &Frames, seq: u64) -> Result<()> {
        let t = now_ns();
        match self {
            Publisher::Ws(ws) => ws.send(frames.broadcast(t, seq)).await?,
            Publisher::Http(h) => h.post(&client::http_broadcast_body("all", t, seq)).await?,
        }
        Ok(())
    }
}

async fn sender(
    target: Arc<Target>,
    frames: Arc<Frames>,
    shared: Arc<Shared>,
    mut rounds: watch::Receiver<Option<Arc<Round>>>,
    ready: Arc<AtomicUsize>,
    feed: Feed,
) -> Result<()> {
    let mut publisher = match feed {
        Feed::Ws => Publisher::Ws(Box::new(client::open_subscribed(&target, &frames).await?)),
        Feed::Http => Publisher::Http(HttpBroadcaster::connect(&target).await?),
    };
    ready.fetch_add(1, Ordering::Relaxed);
    loop {
        tokio::select! {
            changed = rounds.changed() => if changed.is_err() { return Ok(()) },
            r = publisher.idle() => { r?; continue; }
        }
        let Some(round) = rounds.borrow_and_update().clone() else {
            continue;
        };
        loop {
            let seq = round.next.fetch_add(1, Ordering::AcqRel);
            if seq >= round.end {
                break;
            }
            publisher.publish(&frames, seq).await?;
            let deadline = tokio::time::Instant::now() + round.wait;
            loop {
                let progressed = shared.progress.notified();
                tokio::pin!(progressed);
                progressed.as_mut().enable();
                if shared.count(seq) >= round.expected || tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::select! {
                    _ = progressed => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                    r = publisher.idle() => r?,
                }
            }
            let pause = tokio::time::sleep(round.pause);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = &mut pause => break,
                    r = publisher.idle() => r?,
                }
            }
        }
        round.finished.fetch_add(1, Ordering::AcqRel);
        round.done.notify_waiters();
    }
}

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
pub async fn measure_connect(
    target: &Target,
    frames: &Frames,
    clients: usize,
    concurrency: usize,
    server_pid: Option<u32>,
    idle: Duration,
) -> Result<ConnectResult> {
    let rss_before = server_pid.and_then(procfs::rss_kib);
    let me = std::process::id();
    let self_before = procfs::rss_kib(me);
    let mut pool = Pool::new(target.clone(), frames.clone(), concurrency, 1);
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
/// between steps. N counts every subscribed connection: `senders` of them
/// publish, the other `N - senders` record each delivery. Stops after the
/// first step whose p95 exceeds `limit_p95_ms` or where a connection
/// failed.
#[allow(clippy::too_many_arguments)]
pub async fn measure_broadcast_series(
    target: &Target,
    frames: &Frames,
    steps: &[usize],
    senders: usize,
    feed: Feed,
    settings: &BroadcastSettings,
    concurrency: usize,
    server_pid: Option<u32>,
    limit_p95_ms: f64,
    mut on_step: impl FnMut(&StepResult),
) -> Result<Vec<StepResult>> {
    let max = steps.len() * settings.samples as usize + 1;
    let mut pool = Pool::new(target.clone(), frames.clone(), concurrency, max);
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

/// One broadcast measurement at N from scratch: connect `senders` and
/// `n - senders` receivers, run one round, close everything and wait until
/// the server is quiet again.
#[allow(clippy::too_many_arguments)]
pub async fn measure_broadcast_once(
    target: &Target,
    frames: &Frames,
    n: usize,
    senders: usize,
    feed: Feed,
    settings: &BroadcastSettings,
    concurrency: usize,
    server_pid: Option<u32>,
) -> Result<StepResult> {
    let mut pool = Pool::new(
        target.clone(),
        frames.clone(),
        concurrency,
        settings.samples as usize + 1,
    );
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
/// `senders` publishing on stream `all` through `feed`.
#[allow(clippy::too_many_arguments)]
pub async fn measure_sse(
    target: &Target,
    frames: &Frames,
    clients: usize,
    senders: usize,
    feed: Feed,
    settings: &BroadcastSettings,
    concurrency: usize,
    server_pid: Option<u32>,
) -> Result<StepResult> {
    let mut pool = Pool::new(
        target.clone(),
        frames.clone(),
        concurrency,
        settings.samples as usize + 1,
    );
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

/// `clients` subscribed clients each send `messages` echoes, one at a time,
/// `interval` apart (start times spread over one interval); the round trip
/// of each is recorded.
pub async fn measure_echo(
    target: &Target,
    frames: &Frames,
    clients: usize,
    messages: u64,
    interval: Duration,
    concurrency: usize,
    server_pid: Option<u32>,
) -> Result<EchoResult> {
    procfs::check_fd_budget(clients)?;
    let shared = Arc::new(Shared::new(0));
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let (go_tx, go_rx) = watch::channel(false);
    let timeouts = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let frames = Arc::new(frames.clone());
    let target = Arc::new(target.clone());
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
