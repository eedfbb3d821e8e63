//! `keayl-bench`: a load generator for any Action Cable server, speaking the
//! de-facto benchmark protocol (`BenchmarkChannel` with the actions `echo`
//! and `broadcast`, as in anycable/websocket-bench and
//! hashrocket/websocket-shootout), plus a baseline server to compare with.
//!
//! - [`client`]: connecting, the pre-encoded frames, the payload scan;
//! - [`load`]: the client pool and the measurements (connect, broadcast
//!   series, echo, SSE fan-out);
//! - [`baseline`]: the simplest correct fan-out on the same WebSocket stack;
//! - [`suite`]: the standard suite against `keayl-demo` and the baseline;
//! - [`stats`], [`procfs`]: histograms, and what `/proc` says about a
//!   server (RSS, CPU time) and about this process (open-file limit).
//!
//! Every latency is `arrival - send time`, with the send time (nanoseconds
//! since the Unix epoch) carried in the payload: `{"t":…,"seq":…}`.

pub mod baseline;
pub mod client;
pub mod load;
pub mod procfs;
pub mod stats;
pub mod suite;
