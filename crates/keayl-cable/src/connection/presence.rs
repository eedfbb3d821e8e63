//! Presence and whispers of a connection's subscriptions (extended
//! protocol): `join`, `leave`, `presence` and `whisper` commands, leaving
//! on unsubscribe and disconnect, and the process's task that keeps its
//! live sessions from expiring and reports the ones that did.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;

use super::{CommandError, ConnShared, Connection};
use crate::channel::{PresenceSlot, SubState};
use crate::naming;
use crate::protocol::{self, PresenceRequest};
use crate::pubsub::{PresenceError, PresenceLimits};
use crate::registry::Registry;

/// The presence sessions of a process's live connections, by stream.
#[derive(Debug, Default)]
pub(crate) struct PresenceTracker {
    live: Mutex<HashMap<String, HashSet<String>>>,
    started: AtomicBool,
}

impl PresenceTracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, stream: &str, session: &str) {
        self.lock()
            .entry(stream.to_owned())
            .or_default()
            .insert(session.to_owned());
    }

    fn remove(&self, stream: &str, session: &str) {
        let mut live = self.lock();
        if let Some(sessions) = live.get_mut(stream) {
            sessions.remove(session);
            if sessions.is_empty() {
                live.remove(stream);
            }
        }
    }

    /// Live sessions held, over every stream.
    pub(crate) fn sessions(&self) -> usize {
        self.lock().values().map(HashSet::len).sum()
    }
}

/// Start the process's presence task once: every third of the presence
/// TTL it touches the live sessions; several times a TTL it reaps the
/// expired ones of every process and tells the streams' subscribers who
/// left. It ends with the cable.
pub(crate) fn start_presence(registry: &Arc<Registry>) {
    if registry.presence.started.swap(true, Ordering::AcqRel) {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        registry.presence.started.store(false, Ordering::Release);
        return;
    };
    let ttl = registry.config().presence_ttl;
    let weak = Arc::downgrade(registry);
    runtime.spawn(presence_task(weak, ttl));
}

async fn presence_task(registry: Weak<Registry>, ttl: Duration) {
    let reap_every = (ttl / 5).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let touch_every = (ttl / 3).max(reap_every);
    let mut tick = tokio::time::interval(reap_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_touch = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let Some(registry) = registry.upgrade() else {
            return;
        };
        let pubsub = registry.pubsub().clone();
        if last_touch.elapsed() >= touch_every {
            last_touch = tokio::time::Instant::now();
            let live: Vec<(String, Vec<String>)> = registry
                .presence
                .lock()
                .iter()
                .map(|(s, set)| (s.clone(), set.iter().cloned().collect()))
                .collect();
            for (stream, sessions) in live {
                if let Err(e) = pubsub.presence_touch(&stream, sessions, ttl).await
                    && registry.log_allowed()
                {
                    tracing::warn!(error = %e, %stream, "could not keep presence sessions alive");
                }
            }
        }
        match pubsub.presence_reap().await {
            Ok(left) => {
                for l in left {
                    announce(&*pubsub, &l.stream, protocol::presence_leave_event(&l.id)).await;
                }
            }
            Err(PresenceError::Unsupported) => return,
            Err(e) => {
                if registry.log_allowed() {
                    tracing::warn!(error = %e, "could not reap expired presence sessions");
                }
            }
        }
    }
}

/// Broadcast a presence event to the subscribers of `stream`'s presence set.
async fn announce(pubsub: &dyn crate::pubsub::PubSub, stream: &str, event: Bytes) {
    if let Err(e) = pubsub
        .broadcast(&naming::presence_events_stream(stream), event)
        .await
    {
        tracing::warn!(error = %e, %stream, "could not announce a presence change");
    }
}

/// 64 random bits telling this process's whisper senders and presence
/// sessions from other processes'.
fn process_nonce() -> u64 {
    static NONCE: OnceLock<u64> = OnceLock::new();
    *NONCE.get_or_init(|| {
        let mut bytes = [0u8; 8];
        if getrandom::fill(&mut bytes).is_err() {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or_default();
            return t ^ u64::from(std::process::id()).rotate_left(32);
        }
        u64::from_le_bytes(bytes)
    })
}

/// Who sent a whisper: the connection, unique across processes.
pub(crate) fn whisper_tag(conn: &ConnShared) -> String {
    format!("{:016x}-{:x}", process_nonce(), conn.socket)
}

/// A whisper on its stream: `<sender tag>\n<data JSON>`.
fn whisper_message(tag: &str, data: &str) -> Bytes {
    let mut out = Vec::with_capacity(tag.len() + 1 + data.len());
    out.extend_from_slice(tag.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(data.as_bytes());
    Bytes::from(out)
}

/// The sender tag and the data of a whisper message.
pub(crate) fn split_whisper(message: &[u8]) -> Option<(&[u8], &str)> {
    let at = message.iter().position(|&b| b == b'\n')?;
    let data = std::str::from_utf8(&message[at + 1..]).ok()?;
    Some((&message[..at], data))
}

/// A new presence session key, unique across processes.
fn new_session() -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    format!(
        "{:016x}-{:x}",
        process_nonce(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn limits(shared: &ConnShared) -> PresenceLimits {
    let config = shared.registry.config();
    PresenceLimits {
        ttl: config.presence_ttl,
        max_members: config.max_presence_members,
    }
}

fn send_error(shared: &ConnShared, state: &SubState) {
    shared.sink.send(protocol::presence_frame(
        &state.encoded,
        protocol::PRESENCE_ERROR,
    ));
}

/// How a subscription's presence session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leave {
    /// At once (`leave`, `unsubscribe`).
    Now,
    /// After the presence TTL (the connection closed: it may come back).
    AfterTtl,
}

impl Connection {
    /// `join`: the subscription's presence session joins its presence
    /// stream; a new id is announced to every subscriber of it.
    pub(crate) async fn join_presence(
        &mut self,
        identifier: &str,
        request: PresenceRequest,
    ) -> Result<(), CommandError> {
        let Some(index) = self.position(identifier) else {
            return Err(CommandError::UnknownSubscription(identifier.to_owned()));
        };
        let shared = &self.shared;
        let state = &mut self.subscriptions[index].1.state;
        join(shared, state, request, true).await
    }

    /// `leave`: the subscription's presence session leaves at once.
    pub(crate) async fn leave_presence(&mut self, identifier: &str) -> Result<(), CommandError> {
        let Some(index) = self.position(identifier) else {
            return Err(CommandError::UnknownSubscription(identifier.to_owned()));
        };
        let shared = &self.shared;
        let state = &mut self.subscriptions[index].1.state;
        match state.presence.as_deref() {
            None => {
                send_error(shared, state);
                return Err(CommandError::Presence(
                    "the subscription has no presence stream".into(),
                ));
            }
            Some(slot) if slot.by_server => {
                send_error(shared, state);
                return Err(CommandError::Presence(
                    "the channel joined this subscription's presence itself".into(),
                ));
            }
            Some(_) => {}
        }
        end_presence(shared, state, Leave::Now).await;
        Ok(())
    }

    /// `presence`: the subscription's presence set, to this client.
    pub(crate) async fn presence_info(
        &mut self,
        identifier: &str,
        return_records: bool,
    ) -> Result<(), CommandError> {
        let Some(index) = self.position(identifier) else {
            return Err(CommandError::UnknownSubscription(identifier.to_owned()));
        };
        let shared = &self.shared;
        let state = &self.subscriptions[index].1.state;
        let Some(slot) = &state.presence else {
            send_error(shared, state);
            return Err(CommandError::Presence(
                "the subscription has no presence stream".into(),
            ));
        };
        // Nothing of the subscription is held across the wait (its state is
        // not `Sync`).
        let read = shared.registry.pubsub().presence_info(&slot.stream);
        let encoded = state.encoded.clone();
        let send_error = |shared: &ConnShared| {
            shared
                .sink
                .send(protocol::presence_frame(&encoded, protocol::PRESENCE_ERROR))
        };
        match read.await {
            Ok(set) => {
                let records = return_records.then(|| {
                    set.members.iter().map(|m| {
                        (
                            m.id.as_str(),
                            std::str::from_utf8(&m.info).unwrap_or("null"),
                        )
                    })
                });
                let message = protocol::presence_info_message(set.total, records);
                shared
                    .sink
                    .send(protocol::presence_frame(&encoded, &message));
                Ok(())
            }
            Err(e) => {
                send_error(shared);
                Err(CommandError::Presence(e.to_string()))
            }
        }
    }

    /// `whisper`: `data` to every other subscriber of the subscription's
    /// whisper stream; ignored without one.
    pub(crate) async fn whisper(
        &mut self,
        identifier: &str,
        data: &str,
    ) -> Result<(), CommandError> {
        let Some(index) = self.position(identifier) else {
            return Err(CommandError::UnknownSubscription(identifier.to_owned()));
        };
        let limit = self.shared.registry.config().max_whispers_per_second;
        let now = tokio::time::Instant::now();
        match self.whispers {
            (n, Some(start)) if now.duration_since(start) < Duration::from_secs(1) => {
                if n >= limit {
                    return Err(CommandError::TooManyWhispers(limit));
                }
                self.whispers.0 = n + 1;
            }
            _ if limit == 0 => return Err(CommandError::TooManyWhispers(limit)),
            _ => self.whispers = (1, Some(now)),
        }
        let shared = &self.shared;
        let Some(stream) = &self.subscriptions[index].1.state.whisper else {
            tracing::debug!(identifier, "whisper without a whisper stream; ignored");
            return Ok(());
        };
        let message = whisper_message(&whisper_tag(shared), data);
        shared
            .registry
            .pubsub()
            .broadcast(&naming::whisper_stream(stream), message)
            .await?;
        Ok(())
    }
}

/// Join `state`'s presence stream with `request`; `report`: tell the
/// client when it fails (a join it asked for).
pub(crate) async fn join(
    shared: &ConnShared,
    state: &mut SubState,
    request: PresenceRequest,
    report: bool,
) -> Result<(), CommandError> {
    let send_error = |shared: &ConnShared, state: &SubState| {
        if report {
            send_error(shared, state)
        }
    };
    let Some(slot) = state.presence.as_deref_mut() else {
        send_error(shared, state);
        return Err(CommandError::Presence(
            "the subscription has no presence stream".into(),
        ));
    };
    if report && slot.by_server {
        send_error(shared, state);
        return Err(CommandError::Presence(
            "the channel joined this subscription's presence itself".into(),
        ));
    }
    let max = shared.registry.config().max_presence_info_bytes;
    if report && request.info.len() > max {
        send_error(shared, state);
        return Err(CommandError::Presence(format!(
            "info of {} bytes is over the limit of {max}",
            request.info.len()
        )));
    }
    let PresenceSlot {
        stream,
        joined,
        by_server,
    } = slot;
    let session = joined.as_ref().map_or_else(new_session, |(s, _)| s.clone());
    let pubsub = shared.registry.pubsub().clone();
    let info = Bytes::from(request.info.clone());
    match pubsub
        .presence_join(stream, &session, &request.id, info, limits(shared))
        .await
    {
        Ok(outcome) => {
            shared.registry.presence.add(stream, &session);
            *joined = Some((session, request.id.clone()));
            *by_server |= !report;
            if let Some(left) = &outcome.left {
                announce(&*pubsub, stream, protocol::presence_leave_event(left)).await;
            }
            if outcome.joined {
                announce(
                    &*pubsub,
                    stream,
                    protocol::presence_join_event(&request.id, &request.info),
                )
                .await;
            }
            Ok(())
        }
        Err(e) => {
            send_error(shared, state);
            Err(CommandError::Presence(e.to_string()))
        }
    }
}

/// End `state`'s presence session, if it joined.
pub(super) async fn end_presence(shared: &ConnShared, state: &mut SubState, how: Leave) {
    let Some(slot) = state.presence.as_deref_mut() else {
        return;
    };
    let Some((session, _)) = slot.joined.take() else {
        return;
    };
    shared.registry.presence.remove(&slot.stream, &session);
    let pubsub = shared.registry.pubsub().clone();
    match how {
        Leave::Now => match pubsub.presence_leave(&slot.stream, &session).await {
            Ok(Some(id)) => {
                announce(&*pubsub, &slot.stream, protocol::presence_leave_event(&id)).await
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not leave a presence set"),
        },
        // The reaper announces the leave once the TTL passed (unless the
        // id came back meanwhile).
        Leave::AfterTtl => {
            let ttl = shared.registry.config().presence_ttl;
            if let Err(e) = pubsub
                .presence_touch(&slot.stream, vec![session], ttl)
                .await
            {
                tracing::warn!(error = %e, "could not schedule a presence leave");
            }
        }
    }
}
