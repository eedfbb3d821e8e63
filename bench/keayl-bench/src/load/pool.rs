//! The [`Pool`]: receivers and senders, the state they share, and one
//! broadcast round measured on them.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde::Serialize;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;

use super::CONNECT_TIMEOUT;
use super::clients::{sender, sse_receiver, ws_receiver};
use crate::client::{self, Frames, Target};
use crate::procfs::{self, CpuSample, SystemCpu};
use crate::stats::{Histogram, Summary, now_ns};

/// Per-broadcast bookkeeping.
#[derive(Debug, Default)]
struct Slot {
    count: AtomicU32,
    last_us: AtomicU64,
}

/// State shared by every client task of a pool.
#[derive(Debug)]
pub struct Shared {
    pub(super) confirmed: AtomicUsize,
    live: AtomicUsize,
    pub(super) failed: AtomicUsize,
    pub(super) dropped: AtomicUsize,
    pub(super) stopping: AtomicBool,
    pub(super) hist: Histogram,
    slots: Box<[Slot]>,
    expected: AtomicU32,
    pub(super) progress: Notify,
    strays: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    pub(super) fn new(max_broadcasts: usize) -> Self {
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

    pub(super) fn deliver(&self, t: u64, seq: u64) {
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

    pub(super) fn fail(&self, e: &anyhow::Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(format!("{e:#}"));
        }
    }

    pub(super) fn count(&self, seq: u64) -> u32 {
        self.slots
            .get(seq as usize)
            .map_or(0, |s| s.count.load(Ordering::Acquire))
    }

    pub(super) fn confirm(&self) -> LiveGuard<'_> {
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
pub(super) struct LiveGuard<'a>(&'a Shared);

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One round of broadcasts, handed to the senders.
#[derive(Debug)]
pub(super) struct Round {
    pub(super) next: AtomicU64,
    pub(super) end: u64,
    pub(super) expected: u32,
    pub(super) pause: Duration,
    pub(super) wait: Duration,
    pub(super) finished: AtomicUsize,
    pub(super) done: Notify,
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

impl Default for BroadcastSettings {
    /// `keayl-bench broadcast`'s defaults: 40 broadcasts, 20 ms pause,
    /// 5 s wait.
    fn default() -> Self {
        BroadcastSettings {
            samples: 40,
            pause: Duration::from_millis(20),
            wait: Duration::from_secs(5),
        }
    }
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
        self.add_receivers(n, |pool| {
            let task = ws_receiver(
                pool.target.clone(),
                pool.frames.clone(),
                pool.shared.clone(),
                pool.gate.clone(),
            );
            tokio::spawn(task)
        })
        .await
    }

    /// Add `n` SSE receivers of the target's SSE path and wait until each
    /// has its response head (or failed).
    pub async fn add_sse_receivers(&mut self, n: usize) -> Result<Growth> {
        self.add_receivers(n, |pool| {
            let task = sse_receiver(
                pool.target.clone(),
                pool.sse_request.clone(),
                pool.shared.clone(),
                pool.gate.clone(),
            );
            tokio::spawn(task)
        })
        .await
    }

    /// Spawn `n` receivers with `spawn` and wait until each settled.
    async fn add_receivers(
        &mut self,
        n: usize,
        spawn: impl Fn(&Self) -> tokio::task::JoinHandle<()>,
    ) -> Result<Growth> {
        procfs::check_fd_budget(n)?;
        let before_failed = self.shared.failed.load(Ordering::Relaxed);
        let goal = self.settled() + n;
        let start = Instant::now();
        for _ in 0..n {
            let receiver = spawn(self);
            self.receivers.push(receiver);
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
