//! The extended protocol's history requests (reliable streams).
//!
//! A request names, per stream of the subscription, the last position the
//! client saw (or a time, `since`, for the streams it has none for). The
//! missed messages are read from the pub/sub backend's history and sent as
//! ordinary data frames with their positions, oldest first, then
//! `confirm_history`. When any stream's history cannot cover the request
//! (an unknown epoch, an evicted offset, a backend without history, a
//! backend slower than [`CableConfig::history_timeout`]) the client gets
//! `reject_history` and nothing else from history: a gap is never silent.
//!
//! Live messages that arrive meanwhile are held by the subscription's gate
//! and sent after the trailer, minus those the history already carried, so
//! the client sees each position once and in order.
//!
//! [`CableConfig::history_timeout`]: crate::CableConfig::history_timeout

use std::sync::Arc;

use super::{ConnShared, Connection};
use crate::channel::{Gate, SubState};
use crate::protocol::{self, HistoryRequest};
use crate::pubsub::{Callback, Delivery, HistoryEntry, HistoryError, HistoryFrom};

/// What one stream's part of a request asks for.
struct Target {
    stream: Arc<str>,
    callback: Callback,
    from: HistoryFrom,
}

fn targets(state: &SubState, request: &HistoryRequest) -> Vec<Target> {
    let mut targets: Vec<Target> = state
        .streams
        .iter()
        // Presence events and whispers keep no history.
        .filter(|(stream, _)| !stream.starts_with(crate::naming::TRANSIENT_PREFIX))
        .filter_map(|(stream, (_, callback))| {
            let from = match (request.streams.get(stream), request.since) {
                (Some(p), _) => HistoryFrom::After {
                    offset: p.offset,
                    epoch: p.epoch.clone(),
                },
                (None, Some(since)) => HistoryFrom::Since(since),
                (None, None) => return None,
            };
            Some(Target {
                stream: Arc::from(stream.as_str()),
                callback: callback.clone(),
                from,
            })
        })
        .collect();
    // A stable order, whatever the map's.
    targets.sort_by(|a, b| a.stream.cmp(&b.stream));
    targets
}

/// A history request ready to run, detached from the subscription's state
/// (which cannot be held across an await).
pub(super) struct Replay {
    targets: Vec<Target>,
    gate: Arc<Gate>,
    identifier: String,
}

impl Replay {
    /// A request of a confirmed subscription whose gate is replaying (it
    /// holds live messages until the trailer is sent).
    pub(super) fn new(state: &SubState, request: &HistoryRequest) -> Self {
        Replay {
            targets: targets(state, request),
            gate: state.gate.clone(),
            identifier: state.identifier.clone(),
        }
    }
}

impl Connection {
    /// Serve a history request: the backlog, then the trailer.
    pub(super) async fn replay_history(shared: &ConnShared, replay: Replay) {
        let Replay {
            targets,
            gate,
            identifier,
        } = replay;
        let timeout = shared.registry.config().history_timeout;
        let pubsub = shared.registry.pubsub().clone();
        let mut backlog: Vec<(Target, Vec<HistoryEntry>)> = Vec::with_capacity(targets.len());
        let mut failure: Option<(Arc<str>, HistoryError)> = None;
        for target in targets {
            let read = pubsub.history(&target.stream, &target.from);
            match tokio::time::timeout(timeout, read).await {
                Ok(Ok(entries)) => backlog.push((target, entries)),
                Ok(Err(e)) => {
                    failure = Some((target.stream, e));
                    break;
                }
                Err(_) => {
                    failure = Some((
                        target.stream,
                        HistoryError::Unavailable(format!("no answer within {timeout:?}")),
                    ));
                    break;
                }
            }
        }
        if let Some((stream, error)) = failure {
            if shared.registry.log_allowed() {
                tracing::info!(identifier, %stream, %error, "history cannot cover the request: reject_history");
            }
            shared.registry.count_rejected_history();
            gate.end_replay(&shared.sink, protocol::reject_history(&identifier));
            return;
        }
        for (target, entries) in backlog {
            for entry in entries {
                (target.callback)(&Delivery::replayed(target.stream.clone(), entry));
            }
        }
        shared.registry.count_served_history();
        gate.end_replay(&shared.sink, protocol::confirm_history(&identifier));
    }

    /// Serve the `history` command for the subscription at `index`: right
    /// away when it is confirmed, after its confirmation otherwise.
    pub(super) async fn serve_history(&mut self, index: usize, request: HistoryRequest) {
        let sub = &mut self.subscriptions[index].1;
        if !sub.state.confirmed {
            sub.history = Some(request);
            return;
        }
        // A restored subscription's held messages wait for this replay.
        sub.state.restored = false;
        if !sub.state.gate.begin_replay() {
            return;
        }
        let replay = Replay::new(&sub.state, &request);
        Self::replay_history(&self.shared, replay).await;
    }
}
