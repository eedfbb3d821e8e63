//! The `partial-headers` attack: ~380 KB of header lines per connection,
//! sent as fast as the server reads, never the final CRLF.

use std::time::Duration;

use anyhow::Result;
use clap::Args;
use keayl_bench::procfs;
use serde::Serialize;

use crate::cli::{Ctx, pick};
use crate::demo::Demo;
use crate::fleet::{Fleet, FleetSummary, Script};
use crate::report::{Report, Rss};
use crate::util::{note, opt, r1};
use crate::watchers::{ProbeStats, Prober, Sampler};

#[derive(Debug, Clone, Default, Args)]
pub(crate) struct PartialArgs {
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

/// Run the `partial-headers` attack against a fresh demo.
pub(crate) async fn run(ctx: &Ctx, a: &PartialArgs) -> Result<Report> {
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
