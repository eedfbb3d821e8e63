//! `soak`: N clients subscribed, periodic broadcasts for a while; lost
//! deliveries and sequence gaps per client, the server's RSS over time,
//! latency.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use keayl_bench::client::HttpBroadcaster;
use serde_json::json;

use crate::fleet::{ClientReport, Fleet, STOP, connect_fleet};
use crate::machine::{CpuWatch, cpu_line};
use crate::publish::{body, pad_for};
use crate::report::{mib, num, pct_change, short_error, yes_no};
use crate::server::{Server, ServerOpts, check_fds, target_for};

#[derive(Debug, Clone, Args)]
pub(crate) struct SoakArgs {
    /// Subscribed clients.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Duration of the broadcasting, minutes (fractions allowed: 0.5).
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Broadcasts per second.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Size of a broadcast's data, bytes.
    #[arg(long, default_value_t = 256)]
    payload_bytes: usize,
    /// Interval between RSS samples, s.
    #[arg(long, default_value_t = 10.0)]
    sample_secs: f64,
    /// Connection attempts in flight at once while connecting.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    #[command(flatten)]
    server: ServerOpts,
}

/// Run `soak`.
pub(crate) async fn run(args: SoakArgs) -> Result<()> {
    check_fds(args.clients + 64)?;
    let server = Server::start(&args.server).await?;
    let target = Arc::new(target_for(server.addr));
    let fleet = Fleet::new();
    eprintln!(
        "soak: {} clients, {} broadcast(s)/s of {} B for {} min against {}",
        args.clients, args.rate, args.payload_bytes, args.minutes, server.addr
    );
    let (tasks, connect_took) = connect_fleet(
        args.clients,
        |_| false,
        &target,
        &fleet,
        args.connect_concurrency,
    )
    .await?;
    let readers = fleet.readers_alive.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base = server.snapshot().await?;
    let pad = pad_for(args.payload_bytes);
    let duration = Duration::from_secs_f64((args.minutes * 60.0).max(0.0));
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(0.001));
    let sample_every = Duration::from_secs_f64(args.sample_secs.max(0.5));

    let cpu = CpuWatch::start(&server);
    let start = Instant::now();
    let mut http = HttpBroadcaster::connect(&target).await?;
    let mut tick = tokio::time::interval(interval);
    let mut sample_tick = tokio::time::interval(sample_every);
    let mut rss: Vec<(f64, Option<u64>)> = Vec::new();
    let mut sent = 0u64;
    let mut send_errors = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if start.elapsed() >= duration {
                    break;
                }
                match http.post(&body("all", 0, sent, &pad)).await {
                    Ok(()) => sent += 1,
                    Err(e) => {
                        send_errors += 1;
                        eprintln!("  broadcast failed: {}", short_error(&e));
                        http = HttpBroadcaster::connect(&target).await?;
                    }
                }
            }
            _ = sample_tick.tick() => {
                let at = start.elapsed().as_secs_f64();
                let r = server.rss_kib();
                let conns = server.metrics().await.ok().and_then(|m| m.get("keayl_connections"));
                eprintln!(
                    "  {at:>6.0} s  RSS {}  connections {}  sent {sent}  delivered {}",
                    mib(r),
                    num(conns),
                    fleet.delivered[0].load(Ordering::Relaxed)
                );
                rss.push((at, r));
            }
        }
    }
    let drained = fleet.wait_delivered(0, sent, Duration::from_secs(10)).await;
    let secs = start.elapsed().as_secs_f64();
    let cpu_use = cpu.read(&server);
    rss.push((secs, server.rss_kib()));
    let after = server.snapshot().await?;
    fleet.ctl.send_replace(STOP);
    let mut reports = Vec::with_capacity(tasks.len());
    for t in tasks {
        reports.push(t.await?);
    }
    let connected: Vec<&ClientReport> = reports.iter().filter(|r| r.connected).collect();
    let lost: u64 = connected
        .iter()
        .map(|r| sent.saturating_sub(r.received[0]))
        .sum();
    let gaps: u64 = connected.iter().map(|r| r.gaps).sum();
    let reordered: u64 = connected.iter().map(|r| r.reordered).sum();
    let dropped = connected.iter().filter(|r| r.ended_early).count();
    let lat = fleet.hist[0].summary();
    let values: Vec<u64> = rss.iter().filter_map(|(_, r)| *r).collect();
    let (first, last) = (values.first().copied(), values.last().copied());
    let (min, max) = (values.iter().min().copied(), values.iter().max().copied());
    let drift = pct_change(first, last);
    let spread = match (min, max) {
        (Some(lo), Some(hi)) if lo > 0 => Some(100.0 * (hi - lo) as f64 / lo as f64),
        _ => None,
    };
    // The first broadcasts allocate the server's write buffers: the same
    // figures from 20 s on (or the second half of a short run).
    let settle = (secs / 2.0).min(20.0);
    let settled: Vec<u64> = rss
        .iter()
        .filter(|(t, _)| *t >= settle)
        .filter_map(|(_, r)| *r)
        .collect();
    let (settled_min, settled_max) = (settled.iter().min().copied(), settled.iter().max().copied());
    let settled_spread = match (settled_min, settled_max) {
        (Some(lo), Some(hi)) if lo > 0 => Some(100.0 * (hi - lo) as f64 / lo as f64),
        _ => None,
    };

    println!();
    println!(
        "== soak: {} clients ({} subscribed in {:.1} s), {} broadcasts of {} B over {:.1} s ==",
        args.clients,
        readers,
        connect_took.as_secs_f64(),
        sent,
        args.payload_bytes,
        secs
    );
    println!(
        "deliveries          {} of {} expected; lost {lost} (target 0: {}); gaps {gaps}, reordered {reordered}; clients disconnected {dropped}; broadcast errors {send_errors}; all delivered in time: {drained}",
        fleet.delivered[0].load(Ordering::Relaxed),
        sent * readers as u64,
        yes_no(lost == 0 && dropped == 0)
    );
    println!(
        "latency             p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        lat.p50_ms, lat.p95_ms, lat.p99_ms, lat.max_ms, lat.count
    );
    println!(
        "server RSS          before {}; first {}, last {}, min {}, max {} over {} samples; last vs first {}, max vs min {}",
        mib(base.rss_kib),
        mib(first),
        mib(last),
        mib(min),
        mib(max),
        values.len(),
        drift.map_or("n/a".into(), |p| format!("{p:+.1} %")),
        spread.map_or("n/a".into(), |p| format!("{p:.1} %"))
    );
    println!(
        "server RSS from {settle:.0} s on: min {}, max {} over {} samples; max vs min {}",
        mib(settled_min),
        mib(settled_max),
        settled.len(),
        settled_spread.map_or("n/a".into(), |p| format!("{p:.1} %"))
    );
    println!(
        "server              alive tasks {} → {}, subscriptions {} → {}, outbound queue {} B at the end",
        num(base.tasks),
        num(after.tasks),
        num(base.subscriptions),
        num(after.subscriptions),
        num(after.queue_bytes)
    );
    println!("{}", cpu_line("during the soak", cpu_use));
    let errors = fleet
        .errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for (e, n) in errors.iter().take(10) {
        println!("  client note ×{n}: {e}");
    }
    let out = json!({
        "bench": "soak",
        "clients": args.clients,
        "subscribed": readers,
        "minutes": args.minutes,
        "rate": args.rate,
        "payload_bytes": args.payload_bytes,
        "sent": sent,
        "delivered": fleet.delivered[0].load(Ordering::Relaxed),
        "lost_deliveries": lost,
        "gaps": gaps,
        "reordered": reordered,
        "clients_disconnected": dropped,
        "broadcast_errors": send_errors,
        "latency_ms": lat,
        "rss_kib": {"before": base.rss_kib, "first": first, "last": last, "min": min, "max": max,
                    "samples": rss.iter().map(|(t, r)| json!([t, r])).collect::<Vec<_>>()},
        "rss_drift_pct": drift,
        "rss_spread_pct": spread,
        "rss_settled": {"from_secs": settle, "min": settled_min, "max": settled_max, "spread_pct": settled_spread},
        "before": base.json(),
        "after": after.json(),
        "server_cpu_pct": cpu_use.0,
        "machine_busy_pct": cpu_use.1,
        "targets": {"no_lost": lost == 0 && dropped == 0},
    });
    println!("{out}");
    Ok(())
}
