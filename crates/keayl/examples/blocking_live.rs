//! A live response written from a blocking thread: CPU-bound work streamed
//! as it goes.
//!
//! `GET /primes` streams prime numbers, one per line, computed by plain
//! blocking code on a thread of Tokio's blocking pool
//! ([`Live::spawn_blocking`]), so the async workers stay free for other
//! requests. Each `write` blocks the thread while the client is slow to read
//! (backpressure: the computation never runs far ahead of the client), and
//! fails with [`LiveError::ClientDisconnected`] once the client has gone,
//! which is where the computation stops. `?count=N` stops after N primes;
//! without it the stream goes on until the client leaves.
//!
//! ```sh
//! cargo run -p keayl --example blocking_live -- --addr 127.0.0.1:3000
//! curl -N http://127.0.0.1:3000/primes            # Ctrl-C it: the server logs the stop
//! curl http://127.0.0.1:3000/primes?count=100
//! ```

use std::net::SocketAddr;

use axum::Router;
use axum::extract::Query;
use axum::http::{HeaderValue, header};
use axum::routing::get;
use clap::Parser;
use keayl::live::{Live, LiveError, LiveResponse};
use keayl::transport::listener::{self, Listener, ListenerConfig};
use serde::Deserialize;

/// Streams CPU-bound results from a blocking thread.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "ADDR", default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
}

#[derive(Deserialize)]
struct PrimesQuery {
    /// Stop after this many primes (default: when the client leaves).
    count: Option<u64>,
}

/// `GET /primes[?count=N]`.
async fn primes(Query(PrimesQuery { count }): Query<PrimesQuery>) -> LiveResponse {
    Live::new()
        .content_type("text/plain; charset=utf-8")
        // Browsers then show text/plain as it arrives instead of sniffing it.
        .header(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        )
        // The handler returns at once; this closure runs on its own thread.
        .spawn_blocking(move |stream| {
            let mut sent = 0u64;
            for n in 2u64.. {
                if count.is_some_and(|count| sent >= count) {
                    break;
                }
                if !is_prime(n) {
                    continue;
                }
                match stream.write(format!("{n}\n")) {
                    Ok(()) => sent += 1,
                    Err(LiveError::ClientDisconnected) => {
                        // Release whatever the work holds here; nothing
                        // reads what we would write next.
                        eprintln!("client disconnected after {sent} primes; stopping");
                        return Ok(());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(()) // returning closes the stream: the response ends
        })
}

/// Trial division: deliberately plain CPU work.
fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let app = Router::new().route("/primes", get(primes));

    let listener = Listener::new(listener::bind(args.addr)?, ListenerConfig::default())?;
    println!("listening on {}", listener.local_addr()?);
    // On Ctrl-C: stop accepting; streams still open get
    // `ListenerConfig::shutdown_grace` (5 s) and are then cut, which their
    // writers see as the client disconnecting.
    listener
        .serve_until(app, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
