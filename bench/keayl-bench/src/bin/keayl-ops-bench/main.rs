//! `keayl-ops-bench`: operational benchmarks of a Keayl server that print
//! figures (not tests): connection churn, slow clients, soak.
//!
//! ```text
//! keayl-ops-bench churn --cycles 100000 --concurrency 200
//! keayl-ops-bench slow  --clients 5000 --stalled-percent 10 --broadcasts 200 --interval-ms 20 --payload-bytes 256
//! keayl-ops-bench soak  --clients 10000 --minutes 10 --rate 1   # --minutes 0.5 for a smoke run
//! ```
//!
//! Build with `cargo build --release -p keayl-bench -p keayl-demo`. Runs
//! with thousands of clients need `ulimit -n 20000` first (the soft limit
//! is checked). The load generator shares the machine with the server:
//! latencies include its own work.
//!
//! Each subcommand starts `keayl-demo` (next to this binary, or
//! `--server-bin`) on a free port and stops it at the end, unless `--url`
//! (and `--pid`, for the server's RSS) point at a running server. Figures
//! come from the server's `GET /metrics` and `/proc/<pid>/status`; every
//! subcommand prints a table, then one JSON line.
//!
//! - **churn**: N cycles of connect → subscribe `BenchmarkChannel` → confirm
//!   → clean close, with a given concurrency, after a warm-up; compares the
//!   server's RSS, live Tokio tasks and subscriptions before and after
//!   (targets: RSS within 5 %, tasks and subscriptions back to baseline).
//!   Client sockets are spread over 127.0.0.2–127.0.0.30 so that 100k
//!   cycles do not run out of ephemeral ports.
//! - **slow**: every client subscribes to `BenchmarkChannel` (stream
//!   `all`); the clients to stall also subscribe with `id: "stalled"`
//!   (stream `allstalled`). Phase A (control): probe broadcasts on `all` at
//!   a fixed interval, everyone reads. Phase B: the stalled clients stop
//!   polling their sockets (kept open) while the same probes continue on
//!   `all`, and large filler broadcasts on `allstalled` (only the stalled
//!   clients get them) fill their kernel buffers and then their server
//!   queues, until the server has disconnected them all. The reading
//!   clients get exactly the same traffic in A and B, so the difference in
//!   their latency is what the stalled clients cost them. B is split at the
//!   moment the stalled clients' writes block (their server queues start to
//!   grow): B1 is the filler being copied into their kernel buffers (a
//!   cost of the accelerated test), B2 is the server holding, overflowing
//!   and dropping them. A per-second view of the worst probe latency, the
//!   kernel's TCP memory and its pressure counters go with it. Reports p50/p99 of
//!   the reading clients per phase, lost deliveries, disconnected stalled
//!   clients (metric, and what each one saw on resuming), server RSS and
//!   outbound queue bytes.
//! - **soak**: N clients subscribed, `--rate` broadcasts per second for
//!   `--minutes`; counts deliveries and sequence gaps per client; samples
//!   the server's RSS every `--sample-secs`.
//!
//! Payloads carry `{"k":<series>,"t":<ns since the epoch>,"seq":<n>,"pad":"…"}`,
//! published with `POST /_broadcast` (on `all`, or `allstalled`); receivers find the
//! numbers by substring search. Each series has its own sequence, so gaps
//! and reordering are checked per series.

mod churn;
mod fleet;
mod machine;
mod publish;
mod report;
mod sampler;
mod server;
mod slow;
mod slow_report;
mod soak;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::churn::ChurnArgs;
use crate::slow::SlowArgs;
use crate::soak::SoakArgs;

/// Operational benchmarks of a Keayl server: churn, slow clients, soak.
#[derive(Debug, Parser)]
#[command(name = "keayl-ops-bench", version, about)]
struct Cli {
    /// Worker threads of the load generator's runtime.
    #[arg(long, global = true, default_value_t = 2)]
    client_threads: usize,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Connect → subscribe → confirm → close, N times; leaks of memory,
    /// tasks and subscriptions.
    Churn(ChurnArgs),
    /// Stalled clients among reading ones: latency of the others, lost
    /// deliveries, slow-client disconnects, memory.
    Slow(SlowArgs),
    /// N subscribers, periodic broadcasts for a while: lost deliveries, RSS
    /// over time, latency.
    Soak(SoakArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.client_threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Cmd::Churn(a) => churn::run(a).await,
            Cmd::Slow(a) => slow::run(a).await,
            Cmd::Soak(a) => soak::run(a).await,
        }
    })
}
