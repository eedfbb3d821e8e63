//! `keayl-attack-bench`: how `keayl-demo` withstands attacks at its HTTP
//! edge, over loopback only. It prints figures, not pass/fail tests: a
//! table per attack (unless `--json`) and one JSON line per attack, each
//! with a verdict (`resisted` / `vulnerable`) against a stated criterion.
//!
//! ```text
//! cargo build --release -p keayl-demo
//! cargo build --release -p keayl-bench --bin keayl-attack-bench
//! ulimit -n 20000       # in the same shell: the idle attack holds 19,900 sockets
//! target/release/keayl-attack-bench all --quick                  # every attack, small (~1 min)
//! target/release/keayl-attack-bench idle --sockets 19900 --hold 30
//! target/release/keayl-attack-bench slowloris --sockets 500
//! target/release/keayl-attack-bench partial-headers --sockets 2000
//! target/release/keayl-attack-bench broadcast-body --sockets 400
//! target/release/keayl-attack-bench subscriptions --conns 100 --subs 256 [--channel benchmark]
//! target/release/keayl-attack-bench sse-cycles --cycles 10000
//! target/release/keayl-attack-bench storm --limit 2000
//! ```
//!
//! Every attack starts a fresh `keayl-demo` (`--demo`, default
//! `target/release/keayl-demo`, relative to the current directory) on a free
//! port of 127.0.0.1 with `RUST_LOG=warn` and `NO_COLOR=1`, counts the
//! bytes it logs (stdout and stderr), reads its RSS from `/proc/<pid>/status` (sampled
//! every 200 ms for the peak) and its gauges from `GET /metrics`, and kills
//! it at the end. Client sockets come from 127.0.0.2–127.0.0.9 in turn.
//!
//! - **idle**: N TCP connections that never send a byte; `GET /health` on a
//!   new connection every second for `--hold` s; how many the server has
//!   closed 5, 12 and 20 s after all were open.
//! - **slowloris**: N connections send `GET /cable HTTP/1.1` and a `Host`
//!   line, then one header byte (`X-a: b\r\n`, in turn) every `--every` s;
//!   N more send a complete WebSocket upgrade request for `/cable` without
//!   its final CRLF, then trickle the same way. Sockets still open at two
//!   checkpoints.
//! - **partial-headers**: N connections each send ~380 KB of header lines
//!   (`X-Pad-i: <1000 bytes>\r\n`) as fast as the server reads, never the
//!   final CRLF: the server's peak RSS growth, its answers (431…), the time
//!   until it closed each.
//! - **broadcast-body**: the demo runs with `--broadcast-secret s3cret`; N
//!   connections `POST /_broadcast` with a wrong secret and
//!   `Content-Length: 2000000` and never send the body, N more without
//!   `Authorization` trickle the body one byte a second: time until each is
//!   answered, RSS; then 4 keep-alive clients hammer with a wrong secret
//!   and the demo's log volume per second is measured.
//! - **subscriptions**: C WebSocket connections each send S subscribes
//!   whose identifier carries a 4 KiB parameter (`ChatChannel` `room`, or
//!   `BenchmarkChannel` `id` with `--channel benchmark`) and a distinct
//!   `n`: confirmed, rejected and ignored subscribes, RSS growth.
//! - **sse-cycles**: N cycles of `GET /sse/attack`, read until `: subscribed`,
//!   close (50 in flight); `keayl_runtime_alive_tasks` and
//!   `keayl_subscriptions` before and 3 s after.
//! - **storm**: the demo runs with `--max-connections L`; 2×L WebSocket
//!   clients connect at once: welcomed, refused with HTTP 503, the peak of
//!   `keayl_connections` (and `keayl_http_connections` if exported),
//!   `/health` meanwhile. Skipped when the demo has no such flag.
//! - **all**: every attack in turn, with its defaults (or `--quick` values).
//!
//! At start the open-file soft limit is raised to the hard limit (with
//! `prlimit`, when installed); each attack checks that the sockets it needs
//! fit and says to run `ulimit -n 20000` when they do not. The demo inherits
//! the limit (20,000 per process on the reference machine).

mod broadcast_body;
mod cli;
mod demo;
mod fleet;
mod idle;
mod partial_headers;
mod report;
mod slowloris;
mod sse_cycles;
mod storm;
mod subscriptions;
mod util;
mod watchers;
mod wire;

use std::time::Instant;

use anyhow::{Result, bail};
use clap::Parser;

use crate::cli::{Attack, Cli, Ctx, every_attack, run_one};
use crate::report::Verdict;
use crate::util::raise_nofile;

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    raise_nofile();
    let ctx = Ctx {
        demo: cli.demo.clone(),
        quick: cli.quick,
    };
    let attacks = match &cli.attack {
        Attack::All => every_attack(),
        one => vec![one.clone()],
    };
    let start = Instant::now();
    let mut summary = Vec::new();
    let mut failures = 0;
    let mut vulnerable = Vec::new();
    for attack in &attacks {
        let t = Instant::now();
        match run_one(&ctx, attack).await {
            Ok(report) => {
                report.print(cli.json);
                if report.verdict == Verdict::Vulnerable {
                    vulnerable.push(report.attack.to_string());
                }
                summary.push(format!(
                    "{:<16} {:<10} {:>5.1} s",
                    report.attack,
                    format!("{:?}", report.verdict).to_lowercase(),
                    t.elapsed().as_secs_f64()
                ));
            }
            Err(e) => {
                failures += 1;
                eprintln!("error: {e:#}");
                summary.push(format!(
                    "{:<16} error      {:>5.1} s",
                    attack.name(),
                    t.elapsed().as_secs_f64()
                ));
            }
        }
    }
    if attacks.len() > 1 && !cli.json {
        println!("\n== summary ({:.0} s)", start.elapsed().as_secs_f64());
        for line in &summary {
            println!("   {line}");
        }
    }
    if failures > 0 {
        bail!("{failures} attack(s) could not run");
    }
    if cli.strict && !vulnerable.is_empty() {
        bail!("vulnerable to: {}", vulnerable.join(", "));
    }
    Ok(())
}
