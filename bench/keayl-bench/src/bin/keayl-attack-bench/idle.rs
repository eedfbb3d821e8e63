//! The `idle` attack: TCP connections that never send a byte, `/health`
//! probed meanwhile; how many the server closed at checkpoints.

use anyhow::Result;
use clap::Args;
use keayl_bench::procfs;
use serde::Serialize;

use crate::cli::{Ctx, pick};
use crate::demo::Demo;
use crate::fleet::{Checkpoint, Fleet, FleetSummary, Script, checkpoints, checkpoints_line};
use crate::report::{Report, Rss};
use crate::util::note;
use crate::watchers::{ProbeStats, Prober, Sampler};

#[derive(Debug, Clone, Default, Args)]
pub(crate) struct IdleArgs {
    /// Idle connections [default: 19900; --quick: 2000].
    #[arg(long)]
    sockets: Option<usize>,
    /// Seconds to hold them while probing /health [default: 30; --quick: 15].
    #[arg(long)]
    hold: Option<u64>,
}

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

/// Run the `idle` attack against a fresh demo.
pub(crate) async fn run(ctx: &Ctx, a: &IdleArgs) -> Result<Report> {
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
