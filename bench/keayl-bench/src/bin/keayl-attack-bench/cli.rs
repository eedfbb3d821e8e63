//! The command line: the global flags, one subcommand per attack (each
//! attack's own flags live in its module), and running a subcommand.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

use crate::broadcast_body::{self, BodyArgs};
use crate::idle::{self, IdleArgs};
use crate::partial_headers::{self, PartialArgs};
use crate::report::Report;
use crate::slowloris::{self, SlowlorisArgs};
use crate::sse_cycles::{self, SseArgs};
use crate::storm::{self, StormArgs};
use crate::subscriptions::{self, SubsArgs};

/// HTTP-edge attacks on keayl-demo, over loopback: figures and verdicts.
#[derive(Debug, Parser)]
#[command(name = "keayl-attack-bench", version, about)]
pub(crate) struct Cli {
    /// The demo server binary, started afresh for every attack.
    #[arg(long, global = true, default_value = "target/release/keayl-demo")]
    pub(crate) demo: PathBuf,
    /// Small counts and short durations (`all --quick` takes about a minute).
    #[arg(long, global = true)]
    pub(crate) quick: bool,
    /// Print only the JSON lines (one per attack), no tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Exit with an error when any attack is judged vulnerable (CI).
    #[arg(long, global = true)]
    pub(crate) strict: bool,
    #[command(subcommand)]
    pub(crate) attack: Attack,
}

#[derive(Debug, Clone, Subcommand)]
pub(crate) enum Attack {
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

/// `given`, or the default of the full or the quick run.
pub(crate) fn pick<T>(given: Option<T>, full: T, quick: T, q: bool) -> T {
    given.unwrap_or(if q { quick } else { full })
}

/// What every attack needs from the command line.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub(crate) demo: PathBuf,
    pub(crate) quick: bool,
}

impl Attack {
    pub(crate) fn name(&self) -> &'static str {
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

/// Run one attack (not `all`).
pub(crate) async fn run_one(ctx: &Ctx, attack: &Attack) -> Result<Report> {
    match attack {
        Attack::Idle(a) => idle::run(ctx, a).await,
        Attack::Slowloris(a) => slowloris::run(ctx, a).await,
        Attack::PartialHeaders(a) => partial_headers::run(ctx, a).await,
        Attack::BroadcastBody(a) => broadcast_body::run(ctx, a).await,
        Attack::Subscriptions(a) => subscriptions::run(ctx, a).await,
        Attack::SseCycles(a) => sse_cycles::run(ctx, a).await,
        Attack::Storm(a) => storm::run(ctx, a).await,
        Attack::All => bail!("`all` runs the others"),
    }
}

/// Every attack, with its defaults: what `all` runs.
pub(crate) fn every_attack() -> Vec<Attack> {
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
