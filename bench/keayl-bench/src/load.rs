//! The load itself: a [`Pool`] of client connections (one task each) and
//! the measurements run on it — connect, broadcast fan-out, echo, SSE
//! fan-out.
//!
//! Broadcast rounds are closed-loop, as in anycable/websocket-bench: a
//! sender publishes one broadcast carrying its send time and sequence
//! number, waits until every receiver has it (or a timeout), pauses, and
//! sends the next. Every receiver records `arrival - send time` for every
//! delivery; per broadcast the pool also keeps how many receivers got it
//! and when the last one did.
//!
//! Every measurement takes a [`Rig`] (the server, the frames, the
//! handshake concurrency, the server's pid); the broadcast and SSE ones
//! also a [`Fanout`] (senders, feed, round settings).

mod clients;
mod echo;
mod measure;
mod pool;

use std::time::Duration;

use crate::client::{Frames, Target};

pub use echo::{EchoResult, EchoSettings, measure_echo};
pub use measure::{
    ConnectResult, StepResult, largest_within, measure_broadcast_once, measure_broadcast_series,
    measure_connect, measure_sse, wait_quiet,
};
pub use pool::{BroadcastSettings, Feed, Growth, Pool, RoundResult, Shared};

/// How long one client may take to connect and be confirmed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// What every measurement needs: the server under load and how to reach
/// it.
#[derive(Debug, Clone)]
pub struct Rig {
    /// Where the clients connect.
    pub target: Target,
    /// The frames the clients send (the BenchmarkChannel identifier).
    pub frames: Frames,
    /// Handshakes in flight at once (keep it under the server's listen
    /// backlog).
    pub concurrency: usize,
    /// The server's pid, for its RSS and CPU from `/proc` (those figures
    /// are `None` without it).
    pub server_pid: Option<u32>,
}

impl Rig {
    /// `target` with the default frames (no `id` param), 64 handshakes at
    /// once and no pid.
    pub fn new(target: Target) -> Self {
        Rig {
            target,
            frames: Frames::new(None),
            concurrency: 64,
            server_pid: None,
        }
    }

    /// An empty pool on this rig that can track `max_broadcasts`.
    fn pool(&self, max_broadcasts: usize) -> Pool {
        Pool::new(
            self.target.clone(),
            self.frames.clone(),
            self.concurrency,
            max_broadcasts,
        )
    }
}

/// Who publishes the broadcasts of a measurement, and how.
#[derive(Debug, Clone)]
pub struct Fanout {
    /// Sender connections (each subscribed too, but not a receiver).
    pub senders: usize,
    /// How they publish.
    pub feed: Feed,
    /// The rounds: broadcasts per round, pause, wait.
    pub settings: BroadcastSettings,
}

impl Default for Fanout {
    /// One sender publishing over WebSocket, with the default
    /// [`BroadcastSettings`].
    fn default() -> Self {
        Fanout {
            senders: 1,
            feed: Feed::Ws,
            settings: BroadcastSettings::default(),
        }
    }
}
