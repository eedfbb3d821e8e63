//! The subscribers of `slow` and `soak`: one task per client, subscribed
//! to `all` (and `allstalled` for the clients to stall), recording latency
//! per series, gaps and reordering, and stalling on command.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use keayl_bench::client::{self, Frames, Target};
use keayl_bench::stats::{Histogram, now_ns};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::report::short_error;

/// Series (the `k` of a payload): each has its own sequence and histogram.
pub(crate) const SERIES: usize = 4;
/// Messages per series whose worst latency is kept, for the per-second view.
const PER_SEQ: usize = 8192;

/// Probes of phase A (control), on `all`.
pub(crate) const A_PROBE: usize = 0;
/// Probes of phase B while the filler fills the stalled clients' kernel
/// buffers.
pub(crate) const B_PROBE: usize = 1;
/// Filler of phase B, on `allstalled` (the stalled clients only).
pub(crate) const B_FILL: usize = 2;
/// Probes of phase B once the stalled clients' writes block: their server
/// queues grow, overflow, and the server drops them.
pub(crate) const B2_PROBE: usize = 3;
/// The histogram of all probes of phase B (not a wire series).
pub(crate) const B_ALL: usize = SERIES;

// What the driver tells the subscribers through `Fleet::ctl`.
const RUN: u8 = 0;
pub(crate) const STALL: u8 = 1;
pub(crate) const RESUME: u8 = 2;
pub(crate) const STOP: u8 = 3;

/// State shared by the subscribers and the driver.
#[derive(Debug)]
pub(crate) struct Fleet {
    /// Latency per series, reading clients only (µs); the last one holds
    /// the probes of phase B together.
    pub(crate) hist: Vec<Histogram>,
    /// Per series and sequence number (below [`PER_SEQ`]): the worst
    /// latency (µs) and the send time (ns since the epoch).
    seq_worst: Vec<Vec<AtomicU64>>,
    seq_sent: Vec<Vec<AtomicU64>>,
    /// Deliveries per series, reading clients only.
    pub(crate) delivered: Vec<AtomicU64>,
    pub(crate) ctl: watch::Sender<u8>,
    pub(crate) ready: AtomicUsize,
    connect_failed: AtomicUsize,
    pub(crate) readers_alive: AtomicUsize,
    pub(crate) errors: Mutex<BTreeMap<String, u64>>,
}

impl Fleet {
    pub(crate) fn new() -> Arc<Self> {
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
    pub(crate) async fn wait_delivered(&self, series: usize, sent: u64, limit: Duration) -> bool {
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
pub(crate) struct ClientReport {
    pub(crate) stalled: bool,
    pub(crate) connected: bool,
    pub(crate) received: [u64; SERIES],
    /// Messages missing in a series' sequence.
    pub(crate) gaps: u64,
    /// Messages older than one already seen.
    pub(crate) reordered: u64,
    /// The connection ended before the run did.
    pub(crate) ended_early: bool,
    /// Stalled clients, after resuming: saw `too_slow`, saw the server's
    /// close (close frame, EOF or reset), still open, bytes read.
    pub(crate) saw_too_slow: bool,
    pub(crate) closed_by_server: bool,
    pub(crate) still_open: bool,
    pub(crate) drained_bytes: u64,
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
pub(crate) async fn connect_fleet(
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

impl Fleet {
    /// The worst latency of `series` per second since `start_ns` (ms):
    /// `(second, worst)`.
    pub(crate) fn worst_per_second(&self, series: usize, start_ns: u64) -> Vec<(u64, f64)> {
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
