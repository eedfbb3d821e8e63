//! The `sse-cycles` attack: open/read/close cycles of `GET /sse/<stream>`;
//! live tasks and subscriptions before and after (leaks).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use keayl_bench::client::Target;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::cli::{Ctx, pick};
use crate::demo::Demo;
use crate::report::{Report, Rss};
use crate::util::{first_of, lock, note, opt, r1, short};
use crate::watchers::Sampler;
use crate::wire::{Metrics, metrics, parse_status};

#[derive(Debug, Clone, Default, Args)]
pub(crate) struct SseArgs {
    /// Open/read/close cycles [default: 10000; --quick: 1000].
    #[arg(long)]
    cycles: Option<usize>,
    /// Cycles in flight at once [default: 50].
    #[arg(long)]
    concurrency: Option<usize>,
}

const SSE_STREAM: &str = "attack";

/// `GET /sse/<stream>`, read until `: subscribed`, close.
async fn sse_cycle(target: &Target) -> Result<()> {
    let mut s = target.tcp().await?;
    let req = format!(
        "GET /sse/{SSE_STREAM} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        target.addr
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let read = async {
        while !buf.windows(10).any(|w| w == b"subscribed") {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                bail!("closed before `: subscribed`");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        anyhow::Ok(())
    };
    timeout(Duration::from_secs(5), read)
        .await
        .context("no `: subscribed` within 5 s")??;
    match parse_status(&buf) {
        Some(200) => Ok(()),
        other => bail!("answered {other:?}"),
    }
}

#[derive(Debug, Default)]
struct CycleCount {
    ok: AtomicUsize,
    failed: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

/// `cycles` SSE cycles, `concurrency` at a time.
async fn run_sse_cycles(target: &Target, cycles: usize, concurrency: usize) -> Arc<CycleCount> {
    let count = Arc::new(CycleCount::default());
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (target, count, next) = (target.clone(), count.clone(), next.clone());
        set.spawn(async move {
            while next.fetch_add(1, Relaxed) < cycles {
                match sse_cycle(&target).await {
                    Ok(()) => count.ok.fetch_add(1, Relaxed),
                    Err(e) => {
                        lock(&count.first_error).get_or_insert_with(|| short(&e));
                        count.failed.fetch_add(1, Relaxed)
                    }
                };
            }
        });
    }
    set.join_all().await;
    count
}

#[derive(Debug, Serialize)]
struct SseResult {
    cycles: usize,
    concurrency: usize,
    ok: usize,
    failed: usize,
    first_error: Option<String>,
    secs: f64,
    alive_tasks_before: Option<f64>,
    alive_tasks_after: Option<f64>,
    subscriptions_before: Option<f64>,
    subscriptions_after: Option<f64>,
    rss: Rss,
    log_bytes: u64,
    demo_alive: bool,
}

/// Run the `sse-cycles` attack against a fresh demo.
pub(crate) async fn run(ctx: &Ctx, a: &SseArgs) -> Result<Report> {
    let cycles = pick(a.cycles, 10_000, 1_000, ctx.quick);
    let concurrency = a.concurrency.unwrap_or(50);
    let demo = Demo::start(ctx, &[]).await?;
    let target = demo.target();
    run_sse_cycles(&target, 50, 10).await; // warm-up
    tokio::time::sleep(Duration::from_secs(1)).await;
    let m0 = metrics(demo.addr).await?;
    let (before, sampler) = (demo.rss(), Sampler::rss(demo.pid));
    note(format!(
        "sse-cycles: {cycles} cycles of GET /sse/{SSE_STREAM}, {concurrency} in flight"
    ));
    let start = Instant::now();
    let count = run_sse_cycles(&target, cycles, concurrency).await;
    let secs = r1(start.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m1 = metrics(demo.addr).await?;
    let after = demo.rss();
    let peak = sampler.finish().await.rss_kib;
    let get = |m: &Metrics, k: &str| m.get(k).copied();
    let first_error = lock(&count.first_error).clone();
    let r = SseResult {
        cycles,
        concurrency,
        ok: count.ok.load(Relaxed),
        failed: count.failed.load(Relaxed),
        first_error,
        secs,
        alive_tasks_before: get(&m0, "keayl_runtime_alive_tasks"),
        alive_tasks_after: get(&m1, "keayl_runtime_alive_tasks"),
        subscriptions_before: get(&m0, "keayl_subscriptions"),
        subscriptions_after: get(&m1, "keayl_subscriptions"),
        rss: Rss::new(before, peak, after),
        log_bytes: demo.log_bytes(),
        demo_alive: demo.stop().await,
    };
    Ok(r.report())
}

impl SseResult {
    fn report(self) -> Report {
        let did = format!(
            "{} cycles of GET /sse/{SSE_STREAM} → read until `: subscribed` → close, {} in flight; \
             gauges 3 s later",
            self.cycles, self.concurrency
        );
        let back = |b: Option<f64>, a: Option<f64>| matches!((b, a), (Some(b), Some(a)) if a <= b);
        let resisted = self.demo_alive
            && back(self.alive_tasks_before, self.alive_tasks_after)
            && back(self.subscriptions_before, self.subscriptions_after);
        let rate = self.ok as f64 / self.secs.max(0.1);
        let mut r = Report::new("sse-cycles", did, &self);
        r.rows
            .add(
                "cycles",
                format!(
                    "{} ok, {} failed in {} s ({rate:.0}/s){}",
                    self.ok,
                    self.failed,
                    self.secs,
                    first_of(self.first_error.as_deref())
                ),
            )
            .add(
                "keayl_runtime_alive_tasks",
                format!(
                    "{} before → {} after",
                    opt(self.alive_tasks_before, ""),
                    opt(self.alive_tasks_after, "")
                ),
            )
            .add(
                "keayl_subscriptions",
                format!(
                    "{} before → {} after",
                    opt(self.subscriptions_before, ""),
                    opt(self.subscriptions_after, "")
                ),
            )
            .add("demo RSS", self.rss.line())
            .add("demo log", format!("{} bytes", self.log_bytes));
        r.judged(
            resisted,
            "live tasks and subscriptions back to (or below) their baseline 3 s after the cycles, demo alive",
        )
    }
}
