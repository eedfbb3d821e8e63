//! The extended protocol's history requests (reliable streams).
//!
//! Streams keep no history yet, so no request can be covered: each one is
//! answered with `reject_history`, never with silence, and the client
//! knows it may have missed messages (the `@anycable/core` client then
//! carries on with live messages). Serving history from a bounded
//! per-stream store is the next step of this feature.

use super::{ConnShared, Connection};
use crate::protocol::{self, HistoryRequest};

impl Connection {
    /// Answer a history request of the subscription `identifier`.
    pub(super) fn serve_history(shared: &ConnShared, identifier: &str, request: &HistoryRequest) {
        tracing::debug!(
            identifier,
            since = ?request.since,
            streams = request.streams.len(),
            "history requested; none is kept: reject_history"
        );
        shared.registry.count_rejected_history();
        shared.sink.send(protocol::reject_history(identifier));
    }
}
