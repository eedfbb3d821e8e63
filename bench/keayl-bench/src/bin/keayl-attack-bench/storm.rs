//! The `storm` attack: 2×L WebSocket clients at once against the demo's
//! `--max-connections L`; welcomed, refused, the gauges, `/health`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use futures_util::StreamExt;
use keayl_bench::client::Target;
use keayl_bench::procfs;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite;

use crate::cli::{Ctx, pick};
use crate::demo::Demo;
use crate::report::Report;
use crate::util::{first_of, mib, note, opt, short};
use crate::watchers::{Peaks, ProbeStats, Prober, Sampler};
use crate::wire::await_welcome;

#[derive(Debug, Clone, Default, Args)]
pub(crate) struct StormArgs {
    /// The demo's --max-connections; 2× as many clients connect [default: 2000; --quick: 500].
    #[arg(long)]
    limit: Option<usize>,
}

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

/// Run the `storm` attack against a fresh demo (with `--max-connections`).
pub(crate) async fn run(ctx: &Ctx, a: &StormArgs) -> Result<Report> {
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
