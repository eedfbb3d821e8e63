//! The `slowloris` attack: request heads (a plain `GET` and a WebSocket
//! upgrade) trickled one header byte at a time, never finished.

use std::net::SocketAddr;
use std::time::Duration;

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
pub(crate) struct SlowlorisArgs {
    /// Connections per variant (plain GET, WebSocket upgrade) [default: 500].
    #[arg(long)]
    sockets: Option<usize>,
    /// Seconds between two trickled header bytes [default: 10; --quick: 3].
    #[arg(long)]
    every: Option<u64>,
}

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

/// Run the `slowloris` attack against a fresh demo.
pub(crate) async fn run(ctx: &Ctx, a: &SlowlorisArgs) -> Result<Report> {
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
