//! `churn`: N cycles of connect → subscribe → confirm → close after a
//! warm-up; the server's RSS, live tasks and subscriptions before and
//! after.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use futures_util::StreamExt;
use keayl_bench::client::{self, Frames, Target};
use keayl_bench::stats::{Histogram, Summary};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

use crate::machine::{CpuWatch, KernelTcp, cpu_line, delta_line, time_wait};
use crate::report::{mib, num, pct_change, short_error, yes_no};
use crate::server::{Server, ServerOpts, check_fds, target_for};

#[derive(Debug, Clone, Args)]
pub(crate) struct ChurnArgs {
    /// Measured cycles.
    #[arg(long, default_value_t = 100_000)]
    cycles: u64,
    /// Cycles in flight at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Cycles before the baseline is read (allocator pools and caches
    /// reach their working size within ~20k cycles; later churn is flat).
    #[arg(long, default_value_t = 20_000)]
    warmup: u64,
    #[command(flatten)]
    server: ServerOpts,
}

#[derive(Debug, Default)]
struct CycleStats {
    ok: u64,
    failed: u64,
    /// Cycles whose server did not close the TCP connection within 2 s of
    /// the close handshake.
    no_tcp_close: u64,
    errors: BTreeMap<String, u64>,
    elapsed: Duration,
    latency: Summary,
}

/// connect → welcome → subscribe → confirm → close → the server's close
/// frame → the server's FIN. `Ok(true)` when the server closed TCP.
async fn churn_cycle(target: &Target, frames: &Frames) -> Result<bool> {
    let mut ws = client::open_subscribed(target, frames).await?;
    ws.close(None).await.context("sending close")?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => {}
            Some(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed)) => break,
            Some(Err(e)) => return Err(e).context("awaiting the close reply"),
        }
    }
    let mut buf = [0u8; 64];
    let tcp = ws.get_mut();
    Ok(
        match tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) | Err(_) => false,
        },
    )
}

async fn run_cycles(
    target: Arc<Target>,
    frames: Arc<Frames>,
    cycles: u64,
    concurrency: usize,
    label: &'static str,
) -> CycleStats {
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(Histogram::new());
    let start = Instant::now();
    let progress = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                let d = done.load(Ordering::Relaxed);
                eprintln!(
                    "  {label}: {d}/{cycles} cycles, {:.0}/s",
                    d as f64 / start.elapsed().as_secs_f64()
                );
            }
        })
    };
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (target, frames, next, done, hist) = (
            target.clone(),
            frames.clone(),
            next.clone(),
            done.clone(),
            hist.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut st = CycleStats::default();
            while next.fetch_add(1, Ordering::Relaxed) < cycles {
                let t0 = Instant::now();
                match tokio::time::timeout(Duration::from_secs(15), churn_cycle(&target, &frames))
                    .await
                {
                    Ok(Ok(closed)) => {
                        st.ok += 1;
                        if !closed {
                            st.no_tcp_close += 1;
                        }
                        hist.record(t0.elapsed().as_micros() as u64);
                    }
                    Ok(Err(e)) => {
                        st.failed += 1;
                        *st.errors.entry(short_error(&e)).or_default() += 1;
                    }
                    Err(_) => {
                        st.failed += 1;
                        *st.errors
                            .entry("cycle timed out (15 s)".into())
                            .or_default() += 1;
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            st
        }));
    }
    let mut total = CycleStats::default();
    for w in workers {
        if let Ok(st) = w.await {
            total.ok += st.ok;
            total.failed += st.failed;
            total.no_tcp_close += st.no_tcp_close;
            for (k, v) in st.errors {
                *total.errors.entry(k).or_default() += v;
            }
        }
    }
    progress.abort();
    total.elapsed = start.elapsed();
    total.latency = hist.summary();
    total
}

/// Run `churn`.
pub(crate) async fn run(args: ChurnArgs) -> Result<()> {
    check_fds(args.concurrency * 2 + 64)?;
    let server = Server::start(&args.server).await?;
    let target = Arc::new(target_for(server.addr));
    let frames = Arc::new(Frames::new(None));
    eprintln!(
        "churn: warm-up {} cycles, then {} cycles at concurrency {} against {} (client sources {} addresses)",
        args.warmup,
        args.cycles,
        args.concurrency,
        server.addr,
        target.source_ips.len().max(1)
    );
    let warm = run_cycles(
        target.clone(),
        frames.clone(),
        args.warmup,
        args.concurrency,
        "warm-up",
    )
    .await;
    let warm_drain = server
        .wait_connections_at_most(0.0, Duration::from_secs(10))
        .await;
    let before = server.snapshot().await?;
    let cpu = CpuWatch::start(&server);
    let kernel = KernelTcp::read();
    let run = run_cycles(
        target.clone(),
        frames.clone(),
        args.cycles,
        args.concurrency,
        "churn",
    )
    .await;
    let cpu_use = cpu.read(&server);
    let kernel = kernel.delta(&KernelTcp::read());
    let drained = server
        .wait_connections_at_most(0.0, Duration::from_secs(10))
        .await;
    // Tasks end just after the connection gauge drops; give them a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server.snapshot().await?;
    let (tw_server, tw_client) = time_wait(server.addr.port());

    let rate = run.ok as f64 / run.elapsed.as_secs_f64();
    let rss_pct = pct_change(before.rss_kib, after.rss_kib);
    let rss_ok = rss_pct.is_some_and(|p| p.abs() <= 5.0);
    let tasks_ok = matches!((before.tasks, after.tasks), (Some(b), Some(a)) if a <= b);
    let subs_ok =
        matches!((before.subscriptions, after.subscriptions), (Some(b), Some(a)) if a <= b);
    let conns_ok = drained.is_some();

    println!();
    println!(
        "== churn: {} cycles (connect → subscribe → confirm → close), concurrency {} ==",
        args.cycles, args.concurrency
    );
    println!(
        "warm-up            {} cycles, {} failed, drained in {}",
        warm.ok + warm.failed,
        warm.failed,
        drained_text(warm_drain)
    );
    println!(
        "cycles             {} ok, {} failed in {:.1} s  →  {rate:.0} cycles/s",
        run.ok,
        run.failed,
        run.elapsed.as_secs_f64()
    );
    println!(
        "cycle time         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        run.latency.p50_ms, run.latency.p99_ms, run.latency.max_ms
    );
    println!(
        "server TCP close   {} cycles without the server's FIN within 2 s",
        run.no_tcp_close
    );
    for (e, n) in &run.errors {
        println!("  failure ×{n}: {e}");
    }
    println!("{:<18} {:>14} {:>14}   target", "", "before", "after");
    println!(
        "{:<18} {:>14} {:>14}   within 5 %: {} ({})",
        "server RSS",
        mib(before.rss_kib),
        mib(after.rss_kib),
        rss_pct.map_or("n/a".into(), |p| format!("{p:+.1} %")),
        yes_no(rss_ok)
    );
    println!(
        "{:<18} {:>14} {:>14}   back to baseline: {}",
        "alive tasks",
        num(before.tasks),
        num(after.tasks),
        yes_no(tasks_ok)
    );
    println!(
        "{:<18} {:>14} {:>14}   back to baseline: {}",
        "subscriptions",
        num(before.subscriptions),
        num(after.subscriptions),
        yes_no(subs_ok)
    );
    println!(
        "{:<18} {:>14} {:>14}   0 within 10 s: {} ({})",
        "connections",
        num(before.connections),
        num(after.connections),
        yes_no(conns_ok),
        drained_text(drained)
    );
    println!(
        "{:<18} {:>14} {:>14}",
        "streams",
        num(before.streams),
        num(after.streams)
    );
    println!("TIME_WAIT now      {tw_server} on the server side, {tw_client} on the client side");
    println!("{}", cpu_line("during the run", cpu_use));
    println!(
        "kernel TCP counters during the run (whole machine): {}",
        delta_line(&kernel)
    );
    let out = json!({
        "bench": "churn",
        "cycles": args.cycles,
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "ok": run.ok,
        "failures": run.failed,
        "errors": run.errors,
        "no_server_tcp_close": run.no_tcp_close,
        "seconds": run.elapsed.as_secs_f64(),
        "cycles_per_sec": rate,
        "cycle_ms": run.latency,
        "before": before.json(),
        "after": after.json(),
        "rss_change_pct": rss_pct,
        "drained_secs": drained.map(|d| d.as_secs_f64()),
        "time_wait": {"server_side": tw_server, "client_side": tw_client},
        "server_cpu_pct": cpu_use.0,
        "machine_busy_pct": cpu_use.1,
        "kernel_tcp_counters": kernel,
        "targets": {"rss_within_5pct": rss_ok, "tasks_back": tasks_ok, "subscriptions_back": subs_ok, "connections_zero": conns_ok},
    });
    println!("{out}");
    Ok(())
}

fn drained_text(d: Option<Duration>) -> String {
    d.map_or("not within 10 s".into(), |d| {
        format!("{:.1} s", d.as_secs_f64())
    })
}
