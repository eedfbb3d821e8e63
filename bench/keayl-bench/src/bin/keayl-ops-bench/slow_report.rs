//! The figures and the report of `slow`: a table of the reading clients'
//! probe latency per phase, what happened to the stalled clients, the
//! server's memory and the kernel's, then one JSON line.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use keayl_bench::stats::Summary;
use serde_json::{Value, json};

use crate::fleet::{A_PROBE, B_ALL, B_FILL, B_PROBE, B2_PROBE, ClientReport, Fleet, SERIES};
use crate::machine::{KernelTcp, cpu_line, delta_line};
use crate::report::{mib, num, secs, yes_no};
use crate::sampler::{max_in, max_tcp_mem_mib};
use crate::server::Snapshot;
use crate::slow::{End, PhaseA, PhaseB, SlowArgs};

/// What a `slow` run measured.
#[derive(Debug)]
pub(crate) struct Measured {
    pub(crate) fleet: Arc<Fleet>,
    /// Reading clients subscribed.
    pub(crate) readers: usize,
    pub(crate) connect_took: Duration,
    pub(crate) n_stalled: usize,
    /// The server with everyone subscribed.
    pub(crate) base: Snapshot,
    pub(crate) a: PhaseA,
    pub(crate) b: PhaseB,
    pub(crate) end: End,
}

/// Print the table, then the JSON line.
pub(crate) fn print(args: &SlowArgs, m: &Measured) {
    let f = Figures::new(args, m);
    print_phases(args, m, &f);
    print_clients(args, m, &f);
    print_server(m, &f);
    print_machine(m, &f);
    for (e, n) in f.errors.iter().take(10) {
        println!("  client note ×{n}: {e}");
    }
    println!("{}", json(args, m, &f));
}

/// The figures derived from the clients' reports, the histograms and the
/// samples.
#[derive(Debug)]
struct Figures {
    /// Broadcasts sent per series.
    sent: [u64; SERIES],
    /// Deliveries lost per series, reading clients only.
    lost: [u64; SERIES],
    lost_total: u64,
    gaps: u64,
    reordered: u64,
    readers_dropped: usize,
    readers_got_fill: u64,
    /// Stalled clients connected.
    stalled: usize,
    too_slow_seen: usize,
    stalled_closed: usize,
    stalled_open: usize,
    /// Bytes buffered for a stalled client on average.
    drained_avg: f64,
    slow_delta: Option<f64>,
    stalled_gone_after: Option<Duration>,
    a: Summary,
    b: Summary,
    b1: Summary,
    b2: Summary,
    rise: f64,
    rise2: f64,
    b1_secs: f64,
    rss_a: Option<u64>,
    q_a: Option<f64>,
    rss_b: Option<u64>,
    q_b: Option<f64>,
    fill_mib_per_stalled: f64,
    worst_a: Vec<(u64, f64)>,
    worst_b: Vec<(u64, f64)>,
    mem_a: Option<f64>,
    mem_b: Option<f64>,
    limits: Option<(f64, f64)>,
    errors: BTreeMap<String, u64>,
}

impl Figures {
    fn new(args: &SlowArgs, m: &Measured) -> Figures {
        let mut sent = [0u64; SERIES];
        sent[A_PROBE] = m.a.sent;
        [sent[B_PROBE], sent[B2_PROBE]] = m.b.probes;
        sent[B_FILL] = m.b.fill;
        let readers_reports: Vec<&ClientReport> = m
            .end
            .reports
            .iter()
            .filter(|r| r.connected && !r.stalled)
            .collect();
        let stalled_reports: Vec<&ClientReport> = m
            .end
            .reports
            .iter()
            .filter(|r| r.connected && r.stalled)
            .collect();
        let lost: [u64; SERIES] = std::array::from_fn(|k| {
            readers_reports
                .iter()
                .map(|r| sent[k].saturating_sub(r.received[k]))
                .sum()
        });
        let drained_avg = if stalled_reports.is_empty() {
            0.0
        } else {
            stalled_reports.iter().map(|r| r.drained_bytes).sum::<u64>() as f64
                / stalled_reports.len() as f64
        };
        let slow_delta = match (m.b.slow_before, m.b.after.slow_disconnects) {
            (Some(b), Some(a)) => Some(a - b),
            _ => None,
        };
        let fleet = &m.fleet;
        let (a, b, b1, b2) = (
            fleet.hist[A_PROBE].summary(),
            fleet.hist[B_ALL].summary(),
            fleet.hist[B_PROBE].summary(),
            fleet.hist[B2_PROBE].summary(),
        );
        let samples = &m.end.samples;
        let (rss_a, q_a) = max_in(samples, 0);
        let (rss_b, q_b) = max_in(samples, 1);
        Figures {
            sent,
            lost,
            lost_total: lost[A_PROBE] + lost[B_PROBE] + lost[B2_PROBE],
            gaps: readers_reports.iter().map(|r| r.gaps).sum(),
            reordered: readers_reports.iter().map(|r| r.reordered).sum(),
            readers_dropped: readers_reports.iter().filter(|r| r.ended_early).count(),
            readers_got_fill: readers_reports.iter().map(|r| r.received[B_FILL]).sum(),
            stalled: stalled_reports.len(),
            too_slow_seen: stalled_reports.iter().filter(|r| r.saw_too_slow).count(),
            stalled_closed: stalled_reports
                .iter()
                .filter(|r| r.closed_by_server)
                .count(),
            stalled_open: stalled_reports.iter().filter(|r| r.still_open).count(),
            drained_avg,
            slow_delta,
            stalled_gone_after: m.b.timeline.all_dropped,
            a,
            b,
            b1,
            b2,
            rise: b.p99_ms - a.p99_ms,
            rise2: b2.p99_ms - a.p99_ms,
            b1_secs: m
                .b
                .timeline
                .queues_filling
                .map_or(m.b.secs, |d| d.as_secs_f64()),
            rss_a,
            q_a,
            rss_b,
            q_b,
            fill_mib_per_stalled: sent[B_FILL] as f64 * args.fill_payload_bytes as f64
                / (1024.0 * 1024.0),
            worst_a: fleet.worst_per_second(A_PROBE, m.a.start_ns),
            worst_b: worst_of_b(fleet, m.b.start_ns),
            mem_a: max_tcp_mem_mib(samples, 0),
            mem_b: max_tcp_mem_mib(samples, 1),
            limits: KernelTcp::limits_mib(),
            errors: fleet
                .errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// The worst probe latency per second of phase B, B1 and B2 together.
fn worst_of_b(fleet: &Fleet, start_ns: u64) -> Vec<(u64, f64)> {
    let mut worst_b = fleet.worst_per_second(B_PROBE, start_ns);
    worst_b.extend(fleet.worst_per_second(B2_PROBE, start_ns));
    worst_b.sort_by_key(|w| w.0);
    worst_b.dedup_by(|later, earlier| {
        if later.0 == earlier.0 {
            earlier.1 = earlier.1.max(later.1);
            true
        } else {
            false
        }
    });
    worst_b
}

fn per_second_line(v: &[(u64, f64)]) -> String {
    v.iter()
        .map(|(s, ms)| format!("{s}s:{ms:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The heading and the table of the probes per phase, with the targets.
fn print_phases(args: &SlowArgs, m: &Measured, f: &Figures) {
    println!();
    println!(
        "== slow clients: {} subscribed ({} reading, {} stalled in B), connected in {:.1} s ==",
        m.fleet.ready.load(Ordering::Relaxed),
        m.readers,
        f.stalled,
        m.connect_took.as_secs_f64()
    );
    println!(
        "{:<34} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6}",
        "phase (reading clients' probes)",
        "sent",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "mean ms",
        "lost",
        "secs"
    );
    let row = |label: &str, ks: &[usize], sm: &Summary, secs: f64| {
        println!(
            "{:<34} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>6.1}",
            label,
            ks.iter().map(|&k| f.sent[k]).sum::<u64>(),
            sm.p50_ms,
            sm.p95_ms,
            sm.p99_ms,
            sm.max_ms,
            sm.mean_ms,
            ks.iter().map(|&k| f.lost[k]).sum::<u64>(),
            secs
        )
    };
    row("A control (nobody stalled)", &[A_PROBE], &f.a, m.a.secs);
    row(
        &format!("B {} % stalled (all of B)", args.stalled_percent),
        &[B_PROBE, B2_PROBE],
        &f.b,
        m.b.secs,
    );
    row(
        " B1 filling their kernel buffers",
        &[B_PROBE],
        &f.b1,
        f.b1_secs,
    );
    row(
        " B2 blocked → overflow → dropped",
        &[B2_PROBE],
        &f.b2,
        m.b.secs - f.b1_secs,
    );
    let (rise, rise2) = (f.rise, f.rise2);
    println!(
        "p99 rise B vs A: {rise:+.2} ms (target ≤ 5 ms: {});  B2 (stalled clients blocked and being dropped, no more filler writes) vs A: {rise2:+.2} ms ({})",
        yes_no(rise <= 5.0),
        yes_no(rise2 <= 5.0)
    );
}

/// Lost deliveries among the readers, the filler, the stalled clients and
/// the timeline of phase B.
fn print_clients(args: &SlowArgs, m: &Measured, f: &Figures) {
    let (lost_total, gaps, reordered) = (f.lost_total, f.gaps, f.reordered);
    let (readers_dropped, readers_got_fill) = (f.readers_dropped, f.readers_got_fill);
    let (a_drained, b_drained) = (m.a.drained, m.b.drained);
    println!(
        "lost deliveries among reading clients: {lost_total} (target 0: {}); sequence gaps {gaps}, reordered {reordered}; readers disconnected {readers_dropped}; filler seen by readers {readers_got_fill} (must be 0); all delivered within 15 s: A {a_drained}, B {b_drained}",
        yes_no(lost_total == 0 && readers_dropped == 0)
    );
    let fill_mib_per_stalled = f.fill_mib_per_stalled;
    println!(
        "filler: {} broadcasts of {} B on `allstalled` = {fill_mib_per_stalled:.1} MiB per stalled client",
        f.sent[B_FILL], args.fill_payload_bytes
    );
    println!(
        "stalled clients: {} — all dropped by the server after {}; keayl_slow_disconnects_total +{} during B; on resuming: {} closed by the server ({} got the too_slow message first), {} still open; {:.0} KiB were buffered for each on average (kernel socket buffers: sent before the server queue started to fill)",
        f.stalled,
        f.stalled_gone_after
            .map_or("NOT within the timeout".into(), |d| format!(
                "{:.1} s",
                d.as_secs_f64()
            )),
        num(f.slow_delta),
        f.stalled_closed,
        f.too_slow_seen,
        f.stalled_open,
        f.drained_avg / 1024.0
    );
    let timeline = &m.b.timeline;
    println!(
        "B timeline: server queues ≥ 256 KiB per stalled client at {}; first slow disconnect counted at {}; counter +{} (one per stalled client) at {}; all stalled connections closed at {}",
        secs(timeline.queues_filling),
        secs(timeline.first_slow),
        m.n_stalled,
        secs(timeline.slow_reached_n),
        secs(timeline.all_dropped)
    );
}

/// The server's RSS and queues, CPU, and the worst probe latency per
/// second.
fn print_server(m: &Measured, f: &Figures) {
    println!(
        "server RSS: {} with everyone subscribed; max {} in A, {} in B; {} after",
        mib(m.base.rss_kib),
        mib(f.rss_a),
        mib(f.rss_b),
        mib(m.end.after.rss_kib)
    );
    println!(
        "outbound queue bytes (sum over connections; broadcast frames are shared): max {} in A, {} in B; {} after",
        num(f.q_a),
        num(f.q_b),
        num(m.end.after.queue_bytes)
    );
    println!("{}", cpu_line("A", m.a.cpu));
    println!("{}", cpu_line("B", m.b.cpu));
    println!(
        "worst probe latency per second of A (ms): {}",
        per_second_line(&f.worst_a)
    );
    println!(
        "worst probe latency per second of B (ms): {}",
        per_second_line(&f.worst_b)
    );
}

/// The kernel's TCP memory and counters.
fn print_machine(m: &Measured, f: &Figures) {
    let limits = f.limits;
    println!(
        "kernel TCP memory (all sockets on the machine): max {} in A, {} in B; tcp_mem pressure threshold {}, max {}",
        f.mem_a.map_or("n/a".into(), |m| format!("{m:.0} MiB")),
        f.mem_b.map_or("n/a".into(), |m| format!("{m:.0} MiB")),
        limits.map_or("n/a".into(), |l| format!("{:.0} MiB", l.0)),
        limits.map_or("n/a".into(), |l| format!("{:.0} MiB", l.1)),
    );
    println!("kernel TCP counters during A: {}", delta_line(&m.a.kernel));
    println!("kernel TCP counters during B: {}", delta_line(&m.b.kernel));
}

/// The JSON line.
fn json(args: &SlowArgs, m: &Measured, f: &Figures) -> Value {
    let (sent, limits) = (&f.sent, f.limits);
    let (cpu_a, cpu_b) = (m.a.cpu, m.b.cpu);
    let (lost_total, readers_dropped) = (f.lost_total, f.readers_dropped);
    json!({
        "bench": "slow",
        "clients": args.clients,
        "readers": m.readers,
        "stalled": f.stalled,
        "settings": {
            "broadcasts": args.broadcasts, "interval_ms": args.interval_ms,
            "payload_bytes": args.payload_bytes, "fill_payload_bytes": args.fill_payload_bytes,
            "fill_rate": args.fill_rate,
        },
        "sent": {"a_probes": sent[A_PROBE], "b1_probes": sent[B_PROBE], "b2_probes": sent[B2_PROBE], "b_fill": sent[B_FILL]},
        "latency_ms": {"a": f.a, "b": f.b, "b1": f.b1, "b2": f.b2},
        "p99_rise_ms": f.rise,
        "p99_rise_b2_ms": f.rise2,
        "lost_deliveries": lost_total,
        "gaps": f.gaps,
        "reordered": f.reordered,
        "readers_disconnected": readers_dropped,
        "stalled_dropped_secs": f.stalled_gone_after.map(|d| d.as_secs_f64()),
        "b_timeline_secs": m.b.timeline.json(),
        "slow_disconnects_delta": f.slow_delta,
        "stalled_closed_by_server": f.stalled_closed,
        "stalled_saw_too_slow": f.too_slow_seen,
        "stalled_still_open": f.stalled_open,
        "stalled_buffered_kib_avg": f.drained_avg / 1024.0,
        "rss_kib": {"subscribed": m.base.rss_kib, "max_a": f.rss_a, "max_b": f.rss_b, "after": m.end.after.rss_kib},
        "outbound_queue_bytes": {"max_a": f.q_a, "max_b": f.q_b, "after": m.end.after.queue_bytes},
        "seconds": {"a": m.a.secs, "b": m.b.secs},
        "server_cpu_pct": {"a": cpu_a.0, "b": cpu_b.0},
        "machine_busy_pct": {"a": cpu_a.1, "b": cpu_b.1},
        "worst_ms_per_second": {"a": f.worst_a, "b": f.worst_b},
        "kernel_tcp_mem_mib": {"max_a": f.mem_a, "max_b": f.mem_b,
                               "pressure_threshold": limits.map(|l| l.0), "max": limits.map(|l| l.1)},
        "kernel_tcp_counters": {"a": m.a.kernel, "b": m.b.kernel},
        "targets": {"p99_rise_le_5ms": f.rise <= 5.0, "p99_rise_b2_le_5ms": f.rise2 <= 5.0,
                    "no_lost": lost_total == 0 && readers_dropped == 0,
                    "stalled_dropped": f.stalled_gone_after.is_some()},
    })
}
