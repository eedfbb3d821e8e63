//! `keayl-history-bench`: what stream history costs a fan-out.
//!
//! One process, the in-memory backend, `--subscribers` extended-protocol
//! connections subscribed to one stream (each with a sink that queues
//! frames as the WebSocket transport's outbound queue does: a lock, a
//! deque, a byte count). Rounds alternate between a cable whose backend
//! keeps history (every broadcast gets a position, frames carry it, each
//! connection tracks the last position per stream) and one that keeps
//! none, in the same run; each round times `--broadcasts` broadcasts in
//! the thread's CPU time and reports CPU per delivery. The figure printed last
//! is the ratio of the medians (history on / off).
//!
//! No socket is written, so the fixed cost of a delivery is smaller than
//! in a server and the ratio is a pessimistic bound of what history adds.
//!
//! ```text
//! cargo run --release -p keayl-bench --bin keayl-history-bench
//! ```

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use clap::Parser;
use keayl_cable::connection::{Connection, Identifiers, Request, Sink};
use keayl_cable::protocol::Protocol;
use keayl_cable::pubsub::{HistoryConfig, InMemory};
use keayl_cable::{Broadcaster, Cable, Channel, ChannelContext, ChannelError, NoActions};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "CPU per delivery with stream history on and off, in one run"
)]
struct Args {
    /// Connections subscribed to the stream.
    #[arg(long, default_value_t = 10_000)]
    subscribers: usize,
    /// Broadcasts per round.
    #[arg(long, default_value_t = 200)]
    broadcasts: usize,
    /// Rounds per setting (alternating; medians reported).
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Bytes of each message.
    #[arg(long, default_value_t = 100)]
    message_bytes: usize,
}

/// Streams `bench`.
#[derive(Default)]
struct BenchStream;

impl Channel for BenchStream {
    const NAME: &'static str = "BenchStream";
    type Action = NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_from("bench");
        Ok(())
    }
}

/// What the socket transport's outbound queue does per frame.
#[derive(Default)]
struct Queue {
    frames: Mutex<(VecDeque<Bytes>, usize)>,
}

impl Queue {
    fn push(&self, frame: Bytes) {
        let mut q = self.frames.lock().unwrap_or_else(|e| e.into_inner());
        q.1 += frame.len();
        q.0.push_back(frame);
    }
    fn drain(&self) -> usize {
        let mut q = self.frames.lock().unwrap_or_else(|e| e.into_inner());
        let n = q.0.len();
        q.0.clear();
        q.1 = 0;
        n
    }
}

struct Setup {
    cable: Cable,
    _connections: Vec<Connection>,
    queues: Vec<Arc<Queue>>,
}

async fn setup(history: HistoryConfig, subscribers: usize) -> Setup {
    let cable = Cable::builder(InMemory::with_history(history))
        .channel::<BenchStream>()
        .build();
    let mut connections = Vec::with_capacity(subscribers);
    let mut queues = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let queue = Arc::new(Queue::default());
        let q = queue.clone();
        let request = Request::from(http::Request::get("/cable").body(()).expect("request"))
            .with_protocol(Protocol::V1ExtJson);
        let mut conn = cable
            .connection(Sink::new(move |f| q.push(f)), Identifiers::new())
            .with_request(request)
            .without_sessions();
        conn.open().await;
        // As @anycable/core subscribes: with a history request (`since`
        // its start), so the connection tracks positions from then on.
        let subscribe = serde_json::json!({
            "command": "subscribe",
            "identifier": "{\"channel\":\"BenchStream\"}",
            "history": {"since": keayl_cable::pubsub::unix_now()},
        });
        conn.handle_frame(subscribe.to_string().as_bytes())
            .await
            .expect("subscribe");
        queue.drain();
        connections.push(conn);
        queues.push(queue);
    }
    Setup {
        cable,
        _connections: connections,
        queues,
    }
}

/// CPU time of this thread (the runtime's only one), in nanoseconds, from
/// `/proc/thread-self/schedstat`.
fn cpu_time() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

/// CPU nanoseconds per delivery of one round.
async fn round(setup: &Setup, broadcasts: usize, message: &serde_json::Value) -> f64 {
    let broadcaster = Broadcaster::new(setup.cable.pubsub().clone());
    let before = cpu_time();
    for _ in 0..broadcasts {
        broadcaster
            .broadcast("bench", message)
            .await
            .expect("broadcast");
    }
    let spent = cpu_time() - before;
    let delivered: usize = setup.queues.iter().map(|q| q.drain()).sum();
    assert_eq!(
        delivered,
        broadcasts * setup.queues.len(),
        "every delivery made"
    );
    spent.as_nanos() as f64 / delivered as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args = Args::parse();
    // One thread: the CPU measured is the fan-out's, nothing else.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let on = setup(HistoryConfig::default(), args.subscribers).await;
        let off = setup(HistoryConfig::off(), args.subscribers).await;
        let message = serde_json::json!({"text": "x".repeat(args.message_bytes.saturating_sub(12))});
        // Warm both up (allocator, caches).
        round(&on, args.broadcasts / 4 + 1, &message).await;
        round(&off, args.broadcasts / 4 + 1, &message).await;
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for i in 0..args.rounds {
            // Alternate which goes first, so drift hits both alike.
            if i % 2 == 0 {
                with.push(round(&on, args.broadcasts, &message).await);
                without.push(round(&off, args.broadcasts, &message).await);
            } else {
                without.push(round(&off, args.broadcasts, &message).await);
                with.push(round(&on, args.broadcasts, &message).await);
            }
        }
        let (m_on, m_off) = (median(&mut with), median(&mut without));
        println!(
            "keayl-history-bench: {} extended-protocol subscribers, {} broadcasts x {} rounds, {} B messages",
            args.subscribers, args.broadcasts, args.rounds, args.message_bytes
        );
        println!("  history off: median {m_off:.0} ns CPU per delivery");
        println!("  history on:  median {m_on:.0} ns CPU per delivery");
        println!("  ratio on/off: {:.3}", m_on / m_off);
        anyhow::Ok(())
    })
}
