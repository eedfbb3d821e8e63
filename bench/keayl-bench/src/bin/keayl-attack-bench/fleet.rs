//! A fleet of raw TCP sockets, each playing a [`Script`] and recording
//! what the server does to it (answers, closes), with checkpoints.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keayl_bench::client::Target;
use keayl_bench::stats::median;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::util::{lock, ms, opt, r1, short};
use crate::wire::parse_status;

/// What a socket sends: `initial` at once (as fast as the server reads),
/// then, if `every` is set, one byte of `trickle` (in turn) each period.
#[derive(Debug, Clone)]
pub(crate) struct Script {
    initial: Arc<[u8]>,
    every: Option<Duration>,
    trickle: &'static [u8],
}

impl Script {
    pub(crate) fn idle() -> Script {
        Script::once(Vec::new())
    }

    pub(crate) fn once(initial: Vec<u8>) -> Script {
        Script {
            initial: initial.into(),
            every: None,
            trickle: b"",
        }
    }

    pub(crate) fn trickled(initial: Vec<u8>, every: Duration, trickle: &'static [u8]) -> Script {
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
pub(crate) struct Fleet {
    tally: Arc<Tally>,
    tasks: JoinSet<()>,
    sockets: usize,
    /// When every connection attempt had finished.
    pub(crate) opened_at: Instant,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct FleetSummary {
    pub(crate) sockets: usize,
    pub(crate) connected: usize,
    connect_failed: usize,
    first_connect_error: Option<String>,
    answered: usize,
    pub(crate) statuses: BTreeMap<u16, usize>,
    answer_ms_median: Option<f64>,
    pub(crate) answer_ms_max: Option<f64>,
    pub(crate) closed: usize,
    closed_eof: usize,
    closed_reset: usize,
    write_failed: usize,
    close_s_median: Option<f64>,
    pub(crate) close_s_max: Option<f64>,
    pub(crate) sent_mib: f64,
}

impl Fleet {
    pub(crate) async fn open(target: &Target, sockets: usize, script: &Script) -> Fleet {
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

    pub(crate) fn all_closed(&self) -> bool {
        lock(&self.tally.closes).len() >= self.connected()
    }

    pub(crate) fn all_answered_or_closed(&self) -> bool {
        let answers = lock(&self.tally.answers).len();
        answers >= self.connected() || self.all_closed()
    }

    pub(crate) fn summary(&self) -> FleetSummary {
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
    pub(crate) async fn wait_until(&self, deadline: Instant, cond: impl Fn(&Fleet) -> bool) {
        while Instant::now() < deadline && !cond(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(left.min(Duration::from_millis(100))).await;
        }
    }

    /// Close every socket (abort the tasks).
    pub(crate) async fn close(mut self) {
        self.tasks.shutdown().await;
    }
}

impl FleetSummary {
    pub(crate) fn connect_line(&self) -> String {
        let mut s = format!("{} of {}", self.connected, self.sockets);
        if let Some(e) = &self.first_connect_error {
            s += &format!(" ({} failed: {e})", self.connect_failed);
        }
        s
    }

    pub(crate) fn answers_line(&self) -> String {
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

    pub(crate) fn closes_line(&self) -> String {
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
pub(crate) struct Checkpoint {
    pub(crate) at_s: u64,
    pub(crate) closed: usize,
    open: usize,
}

/// Closed sockets `marks` seconds after the fleet opened. With
/// `early_exit`, stops waiting once every socket is closed.
pub(crate) async fn checkpoints(fleet: &Fleet, marks: &[u64], early_exit: bool) -> Vec<Checkpoint> {
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

pub(crate) fn checkpoints_line(points: &[Checkpoint]) -> String {
    let parts: Vec<String> = points
        .iter()
        .map(|p| format!("{} s: {} closed / {} open", p.at_s, p.closed, p.open))
        .collect();
    parts.join("; ")
}
