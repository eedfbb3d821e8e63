//! The `subscriptions` attack: many subscribes with 4 KiB identifiers on
//! many WebSocket connections; confirmed, rejected, ignored, RSS growth.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use keayl_bench::client::{Target, Ws, is_confirm, is_reject};
use keayl_bench::procfs;
use serde::Serialize;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::cli::{Ctx, pick};
use crate::demo::Demo;
use crate::report::{Report, Rss};
use crate::util::{first_of, note, opt, short};
use crate::watchers::Sampler;
use crate::wire::{await_welcome, metrics};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum SubChannel {
    /// `ChatChannel` with the parameter as `room`.
    #[default]
    Chat,
    /// `BenchmarkChannel` with the parameter as `id`.
    Benchmark,
}

#[derive(Debug, Clone, Default, Args)]
pub(crate) struct SubsArgs {
    /// WebSocket connections [default: 100; --quick: 20].
    #[arg(long)]
    conns: Option<usize>,
    /// Subscribes per connection [default: 256; --quick: 64].
    #[arg(long)]
    subs: Option<usize>,
    /// Bytes of the big parameter in each identifier [default: 4096].
    #[arg(long)]
    param_bytes: Option<usize>,
    /// Which channel to subscribe to.
    #[arg(long, value_enum, default_value_t)]
    channel: SubChannel,
}

/// The subscribe frames of one connection: distinct identifiers (`n`), each
/// with a `param_bytes` parameter.
fn subscribe_frames(channel: SubChannel, subs: usize, param_bytes: usize) -> Arc<[Utf8Bytes]> {
    let big = "x".repeat(param_bytes);
    (0..subs)
        .map(|n| {
            let identifier = match channel {
                SubChannel::Chat => json!({"channel": "ChatChannel", "room": big, "n": n}),
                SubChannel::Benchmark => json!({"channel": "BenchmarkChannel", "id": big, "n": n}),
            };
            let frame = json!({"command": "subscribe", "identifier": identifier.to_string()});
            Utf8Bytes::from(frame.to_string())
        })
        .collect()
}

#[derive(Debug, Clone, Default)]
struct ConnOutcome {
    welcomed: bool,
    confirmed: usize,
    rejected: usize,
    closed_by_server: bool,
    error: Option<String>,
}

/// Count confirmations and rejections until all `expected` came, the
/// server went quiet for `quiet`, or it closed.
async fn count_answers(ws: &mut Ws, expected: usize, quiet: Duration, out: &mut ConnOutcome) {
    while out.confirmed + out.rejected < expected {
        match timeout(quiet, ws.next()).await {
            Err(_) => return,
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => {
                out.closed_by_server = true;
                return;
            }
            Ok(Some(Ok(Message::Text(t)))) => {
                out.confirmed += usize::from(is_confirm(t.as_bytes()));
                out.rejected += usize::from(is_reject(t.as_bytes()));
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

async fn flood_one(
    target: Target,
    frames: Arc<[Utf8Bytes]>,
    gate: Arc<Semaphore>,
    quiet: Duration,
) -> (Option<Ws>, ConnOutcome) {
    let mut out = ConnOutcome::default();
    let permit = gate.acquire_owned().await.expect("never closed");
    let mut ws = match timeout(Duration::from_secs(10), target.websocket()).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            out.error = Some(short(&e));
            return (None, out);
        }
        Err(_) => {
            out.error = Some("handshake timed out".into());
            return (None, out);
        }
    };
    drop(permit);
    out.welcomed = timeout(Duration::from_secs(10), await_welcome(&mut ws)).await == Ok(true);
    if !out.welcomed {
        return (None, out);
    }
    for frame in frames.iter() {
        if ws.feed(Message::Text(frame.clone())).await.is_err() {
            out.closed_by_server = true;
            return (None, out);
        }
    }
    if ws.flush().await.is_err() {
        out.closed_by_server = true;
        return (None, out);
    }
    count_answers(&mut ws, frames.len(), quiet, &mut out).await;
    let keep = !out.closed_by_server;
    (keep.then_some(ws), out)
}

#[derive(Debug, Serialize)]
struct SubsResult {
    channel: SubChannel,
    conns: usize,
    subs_per_conn: usize,
    param_bytes: usize,
    frame_bytes: usize,
    welcomed: usize,
    confirmed: usize,
    rejected: usize,
    ignored: usize,
    closed_by_server: usize,
    max_confirmed_per_conn: usize,
    first_error: Option<String>,
    keayl_subscriptions: Option<f64>,
    rss: Rss,
    log_bytes: u64,
    demo_alive: bool,
}

/// Run the `subscriptions` attack against a fresh demo.
pub(crate) async fn run(ctx: &Ctx, a: &SubsArgs) -> Result<Report> {
    let conns = pick(a.conns, 100, 20, ctx.quick);
    let subs = pick(a.subs, 256, 64, ctx.quick);
    let param_bytes = a.param_bytes.unwrap_or(4096);
    let quiet = Duration::from_secs(if ctx.quick { 2 } else { 3 });
    procfs::check_fd_budget(conns)?;
    let demo = Demo::start(ctx, &[]).await?;
    let (before, sampler) = (demo.rss(), Sampler::rss(demo.pid));
    let frames = subscribe_frames(a.channel, subs, param_bytes);
    let frame_bytes = frames.first().map_or(0, |f| f.len());
    note(format!(
        "subscriptions: {conns} connections × {subs} subscribes of {frame_bytes} bytes"
    ));
    let gate = Arc::new(Semaphore::new(50));
    let mut set = JoinSet::new();
    for _ in 0..conns {
        set.spawn(flood_one(
            demo.target(),
            frames.clone(),
            gate.clone(),
            quiet,
        ));
    }
    let (held, outcomes): (Vec<_>, Vec<_>) = set.join_all().await.into_iter().unzip();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = demo.rss();
    let keayl_subscriptions = metrics(demo.addr)
        .await
        .ok()
        .and_then(|m| m.get("keayl_subscriptions").copied());
    let peak = sampler.finish().await.rss_kib;
    drop(held);
    let mut r = SubsResult {
        channel: a.channel,
        conns,
        subs_per_conn: subs,
        param_bytes,
        frame_bytes,
        welcomed: 0,
        confirmed: 0,
        rejected: 0,
        ignored: 0,
        closed_by_server: 0,
        max_confirmed_per_conn: 0,
        first_error: None,
        keayl_subscriptions,
        rss: Rss::new(before, peak, after),
        log_bytes: demo.log_bytes(),
        demo_alive: false,
    };
    r.add_outcomes(&outcomes);
    r.demo_alive = demo.stop().await;
    Ok(r.report())
}

impl SubsResult {
    fn add_outcomes(&mut self, outcomes: &[ConnOutcome]) {
        for o in outcomes {
            self.welcomed += usize::from(o.welcomed);
            self.confirmed += o.confirmed;
            self.rejected += o.rejected;
            if o.welcomed {
                self.ignored += self.subs_per_conn.saturating_sub(o.confirmed + o.rejected);
            }
            self.closed_by_server += usize::from(o.closed_by_server);
            self.max_confirmed_per_conn = self.max_confirmed_per_conn.max(o.confirmed);
            if self.first_error.is_none() {
                self.first_error.clone_from(&o.error);
            }
        }
    }

    fn report(self) -> Report {
        let channel = match self.channel {
            SubChannel::Chat => "ChatChannel room",
            SubChannel::Benchmark => "BenchmarkChannel id",
        };
        let did = format!(
            "{} WebSocket connections × {} subscribes, each identifier with a {channel} of {} bytes \
             (frames of {} bytes)",
            self.conns, self.subs_per_conn, self.param_bytes, self.frame_bytes
        );
        let budget_mib = self.conns as f64;
        let resisted = self.demo_alive && self.rss.peak_growth_mib.is_some_and(|g| g <= budget_mib);
        let mut r = Report::new("subscriptions", did, &self);
        r.rows
            .add(
                "welcomed",
                format!(
                    "{} of {}{}",
                    self.welcomed,
                    self.conns,
                    first_of(self.first_error.as_deref())
                ),
            )
            .add(
                "confirmed",
                format!(
                    "{} (at most {} on one connection)",
                    self.confirmed, self.max_confirmed_per_conn
                ),
            )
            .add("rejected", self.rejected)
            .add("ignored (no answer)", self.ignored)
            .add("closed by the server", self.closed_by_server)
            .add("keayl_subscriptions", opt(self.keayl_subscriptions, ""))
            .add("demo RSS", self.rss.line())
            .add("demo log", format!("{} bytes", self.log_bytes));
        r.judged(
            resisted,
            format!(
                "peak RSS growth ≤ 1 MiB per connection ({budget_mib} MiB: the cable's default \
                 per-connection subscription budget), demo alive"
            ),
        )
    }
}
