//! `keayl-bench`: drive an Action Cable server with the benchmark protocol.
//!
//! ```text
//! keayl-bench suite [--quick]                 # keayl-demo vs the baseline, table + JSON
//! keayl-bench connect   --addr 127.0.0.1:3000 --clients 10000 --pid <server pid>
//! keayl-bench broadcast --addr 127.0.0.1:3000 --steps 1000,5000,10000
//! keayl-bench echo      --addr 127.0.0.1:3000 --clients 1000
//! keayl-bench sse       --addr 127.0.0.1:3000 --clients 10000
//! keayl-bench baseline-server --addr 127.0.0.1:3100
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use keayl_bench::client::{Frames, Target};
use keayl_bench::load::{self, BroadcastSettings, EchoSettings, Fanout, Feed, Rig};
use keayl_bench::suite::{self, SuiteConfig};
use serde_json::json;

/// Load generator for Action Cable servers (BenchmarkChannel protocol).
#[derive(Debug, Parser)]
#[command(name = "keayl-bench", version, about)]
struct Cli {
    /// Worker threads of the load generator's runtime.
    #[arg(long, global = true, default_value_t = 2)]
    client_threads: usize,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Open N connections, subscribe each; time, failures, server RSS per
    /// connection and idle CPU.
    Connect {
        #[command(flatten)]
        target: TargetArgs,
        /// Connections.
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
        /// Seconds to measure the server's idle CPU with everyone connected
        /// (needs --pid).
        #[arg(long, default_value_t = 10)]
        idle_secs: u64,
    },
    /// Broadcast fan-out latency over a series of receiver counts.
    Broadcast {
        #[command(flatten)]
        target: TargetArgs,
        /// N per step, ascending: subscribed connections, senders included;
        /// the series stops after the first step over --limit-p95-ms.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "1000,2000,5000,10000,14000,18000"
        )]
        steps: Vec<usize>,
        #[command(flatten)]
        bcast: BroadcastArgs,
        /// The series' p95 limit, ms.
        #[arg(long, default_value_t = 500.0)]
        limit_p95_ms: f64,
    },
    /// Echo round-trip latency at N clients.
    Echo {
        #[command(flatten)]
        target: TargetArgs,
        /// Clients.
        #[arg(long, default_value_t = 1_000)]
        clients: usize,
        /// Echoes per client, one at a time.
        #[arg(long, default_value_t = 20)]
        messages: u64,
        /// Pause between a client's echoes, ms.
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
    },
    /// SSE fan-out latency: N subscribers of --sse-path, fed by broadcasts
    /// on stream `all`.
    Sse {
        #[command(flatten)]
        target: TargetArgs,
        /// SSE subscribers.
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
        #[command(flatten)]
        bcast: BroadcastArgs,
    },
    /// The standard suite: start keayl-demo and the baseline, measure both,
    /// print a table and a final JSON line.
    Suite {
        /// The keayl-demo binary.
        #[arg(long, default_value = "target/release/keayl-demo")]
        server_bin: PathBuf,
        /// CI smoke preset (small counts, ~30 s, targets not judged).
        #[arg(long)]
        quick: bool,
        /// Repetitions (medians are reported) [default: 3, quick: 1].
        #[arg(long)]
        runs: Option<usize>,
        /// Override the broadcast series' receiver counts.
        #[arg(long, value_delimiter = ',')]
        steps: Option<Vec<usize>>,
        /// Override the connect/idle client count.
        #[arg(long)]
        connect_clients: Option<usize>,
        /// Override the SSE subscriber count.
        #[arg(long)]
        sse_clients: Option<usize>,
        /// Override broadcasts per step.
        #[arg(long)]
        samples: Option<u64>,
        /// Override the number of broadcast senders.
        #[arg(long)]
        senders: Option<usize>,
        /// How SSE broadcasts are published.
        #[arg(long, value_enum)]
        sse_feed: Option<Feed>,
    },
    /// Run the baseline server (the simplest correct fan-out on the same
    /// WebSocket stack).
    BaselineServer {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:3100")]
        addr: SocketAddr,
        /// Experiment: tungstenite read buffer per connection, bytes
        /// (default mirrors Keayl: 8192).
        #[arg(long, default_value_t = 8 * 1024)]
        read_buffer_size: usize,
        /// Experiment: tungstenite write buffer target, bytes (default
        /// mirrors Keayl: 16384).
        #[arg(long, default_value_t = 16 * 1024)]
        write_buffer_size: usize,
        /// Experiment: one server-wide ping ticker fanning out one frame,
        /// instead of a timer per connection (as Keayl does today).
        #[arg(long)]
        global_ping: bool,
    },
}

#[derive(Debug, Args)]
struct TargetArgs {
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// The server's pid, for RSS and CPU from /proc.
    #[arg(long)]
    pid: Option<u32>,
    /// Cable endpoint path.
    #[arg(long, default_value = "/cable")]
    path: String,
    /// SSE endpoint path.
    #[arg(long, default_value = "/sse/all")]
    sse_path: String,
    /// Origin header [default: http://<addr>].
    #[arg(long)]
    origin: Option<String>,
    /// Let the kernel pick source addresses instead of spreading client
    /// sockets over 127.0.0.2-9.
    #[arg(long)]
    no_spread: bool,
    /// Handshakes in flight at once (keep it under the server's listen
    /// backlog: tokio's default is 128).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Count an SSE subscriber as subscribed at the response head instead
    /// of at its first event.
    #[arg(long)]
    sse_no_ready_event: bool,
    /// BenchmarkChannel `id` param (stream `all<id>`).
    #[arg(long)]
    stream_id: Option<String>,
}

impl TargetArgs {
    fn target(&self) -> Target {
        let mut t = Target::new(self.addr);
        t.cable_path = self.path.clone();
        t.sse_path = self.sse_path.clone();
        if let Some(o) = &self.origin {
            t.origin = o.clone();
        }
        if self.no_spread {
            t.source_ips.clear();
        }
        t.sse_ready_event = !self.sse_no_ready_event;
        t
    }

    fn frames(&self) -> Frames {
        Frames::new(self.stream_id.as_deref())
    }

    fn rig(&self) -> Rig {
        Rig {
            target: self.target(),
            frames: self.frames(),
            concurrency: self.concurrency,
            server_pid: self.pid,
        }
    }
}

#[derive(Debug, Args)]
struct BroadcastArgs {
    /// Senders (each an extra connection; they do not count as receivers).
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Broadcasts per step.
    #[arg(long, default_value_t = 40)]
    samples: u64,
    /// Pause after a broadcast was fully delivered, ms.
    #[arg(long, default_value_t = 20)]
    pause_ms: u64,
    /// How long a sender waits for every delivery, ms.
    #[arg(long, default_value_t = 5_000)]
    wait_ms: u64,
    /// How broadcasts are published.
    #[arg(long, value_enum, default_value_t = Feed::Ws)]
    feed: Feed,
}

impl BroadcastArgs {
    fn fanout(&self) -> Fanout {
        Fanout {
            senders: self.senders,
            feed: self.feed,
            settings: BroadcastSettings {
                samples: self.samples,
                pause: Duration::from_millis(self.pause_ms),
                wait: Duration::from_millis(self.wait_ms),
            },
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Cmd::BaselineServer {
        addr,
        read_buffer_size,
        write_buffer_size,
        global_ping,
    } = cli.command
    {
        let config = keayl_bench::baseline::BaselineConfig {
            read_buffer_size,
            write_buffer_size,
            global_ping,
        };
        // A runtime like keayl-demo's: one worker per core.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            eprintln!("baseline listening on {}", listener.local_addr()?);
            keayl_bench::baseline::serve_with(listener, config).await?;
            Ok(())
        });
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.client_threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(run(cli.command))
}

fn print_json(v: serde_json::Value) {
    println!("{v}");
}

async fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Connect {
            target,
            clients,
            idle_secs,
        } => {
            let r = load::measure_connect(
                &target.rig(),
                clients,
                Duration::from_secs(if target.pid.is_some() { idle_secs } else { 0 }),
            )
            .await?;
            println!(
                "connect {}: {:.3} s to all confirmed, {} failed{}",
                r.clients,
                r.secs,
                r.failed,
                r.first_error
                    .as_deref()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default()
            );
            if let Some(kib) = r.rss_per_conn_kib {
                println!(
                    "server RSS {} -> {} KiB: {kib:.2} KiB per connection",
                    r.rss_before_kib.unwrap_or(0),
                    r.rss_after_kib.unwrap_or(0)
                );
            }
            if let Some(c) = r.idle_cpu_pct {
                println!(
                    "server idle CPU over {} s: {c:.2} % of one core",
                    r.idle_secs
                );
            }
            print_json(json!({"connect": r}));
        }
        Cmd::Broadcast {
            target,
            steps,
            bcast,
            limit_p95_ms,
        } => {
            println!(
                "{:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>9} {:>9} {:>9} {:>9}",
                "N",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "max ms",
                "last ms",
                "lost",
                "srv cpu%",
                "cli cpu%",
                "noise%",
                "connect s"
            );
            let steps = load::measure_broadcast_series(
                &target.rig(),
                &bcast.fanout(),
                &steps,
                limit_p95_ms,
                |s| {
                    let r = &s.round;
                    println!(
                        "{:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>6} {:>9.0} {:>9.0} {:>9.0} {:>9.2}",
                        s.n,
                        r.latency.p50_ms,
                        r.latency.p95_ms,
                        r.latency.p99_ms,
                        r.latency.max_ms,
                        r.last_delivery_p50_ms,
                        r.lost,
                        r.server_cpu_pct.unwrap_or(f64::NAN),
                        r.client_cpu_pct.unwrap_or(f64::NAN),
                        r.others_cpu_pct.unwrap_or(f64::NAN),
                        s.connect_secs
                    )
                },
            )
            .await?;
            let largest = load::largest_within(&steps, limit_p95_ms);
            println!(
                "largest N with p95 <= {limit_p95_ms} ms: {}",
                largest.map_or("none".into(), |n| n.to_string())
            );
            print_json(json!({"broadcast": steps, "largest_n_within_limit": largest}));
        }
        Cmd::Echo {
            target,
            clients,
            messages,
            interval_ms,
        } => {
            let echo = EchoSettings {
                clients,
                messages,
                interval: Duration::from_millis(interval_ms),
            };
            let r = load::measure_echo(&target.rig(), &echo).await?;
            println!(
                "echo {} clients: p50 {:.2} p95 {:.2} p99 {:.2} max {:.2} ms, {:.0}/s, {} timeouts",
                r.clients,
                r.latency.p50_ms,
                r.latency.p95_ms,
                r.latency.p99_ms,
                r.latency.max_ms,
                r.per_sec,
                r.timeouts
            );
            print_json(json!({"echo": r}));
        }
        Cmd::Sse {
            target,
            clients,
            bcast,
        } => {
            let s = load::measure_sse(&target.rig(), &bcast.fanout(), clients).await?;
            let r = &s.round;
            println!(
                "sse {}: p50 {:.2} p95 {:.2} p99 {:.2} max {:.2} ms, last {:.2} ms, lost {}",
                r.receivers,
                r.latency.p50_ms,
                r.latency.p95_ms,
                r.latency.p99_ms,
                r.latency.max_ms,
                r.last_delivery_p50_ms,
                r.lost
            );
            print_json(json!({"sse": s}));
        }
        Cmd::Suite {
            server_bin,
            quick,
            runs,
            steps,
            connect_clients,
            sse_clients,
            samples,
            senders,
            sse_feed,
        } => {
            let mut cfg = if quick {
                SuiteConfig::quick(server_bin)
            } else {
                SuiteConfig::standard(server_bin)
            };
            if let Some(r) = runs {
                cfg.runs = r;
            }
            if let Some(s) = steps {
                cfg.steps = s;
            }
            if let Some(c) = connect_clients {
                cfg.connect_clients = c;
            }
            if let Some(c) = sse_clients {
                cfg.sse_clients = c;
            }
            if let Some(s) = samples {
                cfg.samples = s;
            }
            if let Some(s) = senders {
                cfg.senders = s;
            }
            if let Some(f) = sse_feed {
                cfg.sse_feed = f;
            }
            let quick = cfg.quick;
            let report = suite::run(cfg).await?;
            print!("{}", report.table());
            print_json(report.json());
            let failures = report.smoke_failures();
            if quick && !failures.is_empty() {
                anyhow::bail!("smoke run failed: {}", failures.join("; "));
            }
        }
        Cmd::BaselineServer { .. } => unreachable!("handled in main"),
    }
    Ok(())
}
