//! Presence and whispers of a connection's subscriptions (extended
//! protocol): `join`, `leave`, `presence` and `whisper` commands, leaving
//! on unsubscribe and disconnect, and the process's task that keeps its
//! live sessions from expiring and reports the ones that did.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;

use super::{CommandError, ConnShared, Connection};
use crate::channel::SubState;
use crate::naming;
use crate::protocol::{self, PresenceRequest};
use crate::pubsub::{PresenceError, PresenceLimits};
use crate::registry::Registry;

/// What a live session joined as: its id and info (to join it again when
/// the broker lost it).
type Member = (String, Bytes);

/// The presence sessions of a process's live connections, by stream.
#[derive(Debug, Default)]
pub(crate) struct PresenceTracker {
    live: Mutex<HashMap<String, HashMap<String, Member>>>,
    started: AtomicBool,
}

impl PresenceTracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, Member>>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, stream: &str, session: &str, member: Member) {
        self.lock()
            .entry(stream.to_owned())
            .or_default()
            .insert(session.to_owned(), member);
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

    fn member(&self, stream: &str, session: &str) -> Option<Member> {
        self.lock().get(stream)?.get(session).cloned()
    }

    /// Live sessions held, over every stream.
    pub(crate) fn sessions(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
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

/// Streams whose sessions are touched at once.
const TOUCHES_AT_ONCE: usize = 16;

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
                .map(|(s, set)| (s.clone(), set.keys().cloned().collect()))
                .collect();
            // Several streams at a time: one slow round trip must not make
            // the others expire.
            use futures_util::StreamExt;
            futures_util::stream::iter(live)
                .for_each_concurrent(TOUCHES_AT_ONCE, |(stream, sessions)| {
                    let pubsub = pubsub.clone();
                    let registry = registry.clone();
                    async move {
                        match pubsub.presence_touch(&stream, sessions, ttl).await {
                            Ok(missing) => rejoin(&registry, &stream, missing).await,
                            Err(e) => {
                                if registry.log_allowed() {
                                    tracing::warn!(error = %e, %stream, "could not keep presence sessions alive");
                                }
                            }
                        }
                    }
                })
                .await;
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

/// Join again the live sessions of `stream` the backend lost (they
/// expired while the broker was out of reach, or it restarted): their ids
/// come back, announced as joins.
async fn rejoin(registry: &Arc<Registry>, stream: &str, missing: Vec<String>) {
    let pubsub = registry.pubsub();
    let config = registry.config();
    let limits = PresenceLimits {
        ttl: config.presence_ttl,
        max_members: config.max_presence_members,
    };
    for session in missing {
        // Gone meanwhile (its subscription ended): nothing to restore.
        let Some((id, info)) = registry.presence.member(stream, &session) else {
            continue;
        };
        match pubsub
            .presence_join(stream, &session, &id, info.clone(), limits)
            .await
        {
            Ok(outcome) => {
                tracing::info!(%stream, "a live presence session was lost by the backend; joined again");
                if outcome.joined {
                    let info = std::str::from_utf8(&info).unwrap_or("null");
                    announce(&**pubsub, stream, protocol::presence_join_event(&id, info)).await;
                }
            }
            Err(e) => {
                if registry.log_allowed() {
                    tracing::warn!(error = %e, %stream, "could not join a lost presence session again");
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

/// A subscription's joined presence session. While it exists the process
/// keeps the session alive (touches it); dropped, however the subscription
/// ends (a connection task aborted before its teardown too), it is no
/// longer touched and expires after the presence TTL.
pub(crate) struct Joined {
    registry: Arc<Registry>,
    stream: String,
    session: String,
    id: String,
}

impl std::fmt::Debug for Joined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Joined")
            .field("stream", &self.stream)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Joined {
    fn new(
        registry: &Arc<Registry>,
        stream: &str,
        session: String,
        id: String,
        info: Bytes,
    ) -> Self {
        registry.presence.add(stream, &session, (id.clone(), info));
        Joined {
            registry: registry.clone(),
            stream: stream.to_owned(),
            session,
            id,
        }
    }
}

impl Drop for Joined {
    fn drop(&mut self) {
        self.registry.presence.remove(&self.stream, &self.session);
    }
}

/// Leave `joined` now, from a task of its own (for code that cannot wait).
pub(crate) fn leave_detached(registry: &Arc<Registry>, stream: String, joined: Joined) {
    let pubsub = registry.pubsub().clone();
    let session = joined.session.clone();
    drop(joined);
    let leave = async move {
        match pubsub.presence_leave(&stream, &session).await {
            Ok(Some(id)) => announce(&*pubsub, &stream, protocol::presence_leave_event(&id)).await,
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not leave a presence set"),
        }
    };
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(leave);
    }
}

/// How a subscription's presence session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leave {
    /// At once (`leave`, `unsubscribe`, a rejection).
    Now,
    /// After the presence TTL (the connection closed: it may come back).
    AfterTtl,
}

/// One second windows of extended-protocol commands, counted from a
/// process-wide start (8 bytes per connection).
fn window_now() -> u32 {
    static START: OnceLock<tokio::time::Instant> = OnceLock::new();
    let start = *START.get_or_init(tokio::time::Instant::now);
    u32::try_from(start.elapsed().as_secs()).unwrap_or(u32::MAX)
}

impl Connection {
    /// Count a presence or whisper command against
    /// [`CableConfig::max_presence_commands_per_second`](crate::CableConfig::max_presence_commands_per_second).
    fn spend(&mut self, command: &'static str) -> Result<(), CommandError> {
        let limit = self
            .shared
            .registry
            .config()
            .max_presence_commands_per_second;
        let now = window_now();
        let (count, window) = &mut self.presence_budget;
        if *window != now {
            *window = now;
            *count = 0;
        }
        if *count >= limit {
            return Err(CommandError::RateLimited {
                command,
                per_second: limit,
            });
        }
        *count += 1;
        Ok(())
    }

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
        self.spend("join")?;
        let shared = &self.shared;
        let state = &mut self.subscriptions[index].1.state;
        join(shared, state, request, true).await
    }

    /// `leave`: the subscription's presence session leaves at once.
    pub(crate) async fn leave_presence(&mut self, identifier: &str) -> Result<(), CommandError> {
        let Some(index) = self.position(identifier) else {
            return Err(CommandError::UnknownSubscription(identifier.to_owned()));
        };
        self.spend("leave")?;
        let shared = &self.shared;
        let state = &mut self.subscriptions[index].1.state;
        match state.presence() {
            None => {
                return Err(CommandError::Presence(
                    "the subscription has no presence stream".into(),
                ));
            }
            Some(slot) if slot.by_server => {
                return Err(CommandError::Presence(
                    "the channel joined this subscription's presence itself".into(),
                ));
            }
            Some(_) => {}
        }
        end_presence(shared, state, Leave::Now).await;
        Ok(())
    }

    /// `presence`: the subscription's presence set, to this client (or
    /// `{"type":"error"}` when it cannot be read).
    pub(crate) async fn presence_info(
        &mut self,
        identifier: &str,
        return_records: bool,
    ) -> Result<(), CommandError> {
        let Some(index) = self.position(identifier) else {
            return Err(CommandError::UnknownSubscription(identifier.to_owned()));
        };
        if let Err(e) = self.spend("presence") {
            send_error(&self.shared, &self.subscriptions[index].1.state);
            return Err(e);
        }
        let shared = &self.shared;
        let state = &self.subscriptions[index].1.state;
        let Some(slot) = state.presence() else {
            send_error(shared, state);
            return Err(CommandError::Presence(
                "the subscription has no presence stream".into(),
            ));
        };
        // Nothing of the subscription is held across the wait (its state is
        // not `Sync`).
        let read = shared.registry.pubsub().presence_info(&slot.stream);
        let encoded = state.encoded.clone();
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
                shared
                    .sink
                    .send(protocol::presence_frame(&encoded, protocol::PRESENCE_ERROR));
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
        self.spend("whisper")?;
        let shared = &self.shared;
        let Some(stream) = self.subscriptions[index].1.state.whisper() else {
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

/// Join `state`'s presence stream with `request`: `client`, a join the
/// client asked for (refused when the channel joined itself, and bounded
/// by [`CableConfig::max_presence_info_bytes`](crate::CableConfig::max_presence_info_bytes));
/// otherwise the channel's own. Failures are the caller's to log: no frame
/// (the `@anycable/core` client would take an error frame for the answer
/// to a pending `presence` request).
pub(crate) async fn join(
    shared: &ConnShared,
    state: &mut SubState,
    request: PresenceRequest,
    client: bool,
) -> Result<(), CommandError> {
    let confirmed = state.confirmed;
    let Some(slot) = state.presence_mut() else {
        return Err(CommandError::Presence(
            "the subscription has no presence stream".into(),
        ));
    };
    if client && slot.by_server {
        return Err(CommandError::Presence(
            "the channel joined this subscription's presence itself".into(),
        ));
    }
    let max = shared.registry.config().max_presence_info_bytes;
    if client && request.info.len() > max {
        return Err(CommandError::Presence(format!(
            "info of {} bytes is over the limit of {max}",
            request.info.len()
        )));
    }
    let session = slot
        .joined
        .as_ref()
        .map_or_else(new_session, |j| j.session.clone());
    let pubsub = shared.registry.pubsub().clone();
    let info = Bytes::from(request.info.clone());
    let outcome = pubsub
        .presence_join(&slot.stream, &session, &request.id, info, limits(shared))
        .await
        .map_err(|e| CommandError::Presence(e.to_string()))?;
    let info = Bytes::from(request.info.clone());
    match slot.joined.as_mut() {
        // The same session, perhaps under another id or info now.
        Some(joined) => {
            joined.id = request.id.clone();
            shared
                .registry
                .presence
                .add(&slot.stream, &joined.session, (request.id.clone(), info));
        }
        None => {
            slot.joined = Some(Joined::new(
                &shared.registry,
                &slot.stream,
                session,
                request.id.clone(),
                info,
            ))
        }
    }
    slot.by_server |= !client;
    let mut events = Vec::new();
    if let Some(left) = &outcome.left {
        events.push(protocol::presence_leave_event(left));
    }
    if outcome.joined {
        events.push(protocol::presence_join_event(&request.id, &request.info));
    }
    if confirmed {
        for event in events {
            announce(&*pubsub, &slot.stream, event).await;
        }
    } else {
        slot.held.extend(events);
    }
    Ok(())
}

/// Announce the presence events of a join made before the confirmation.
pub(crate) async fn announce_held(shared: &ConnShared, state: &mut SubState) {
    let Some(slot) = state.presence_mut() else {
        return;
    };
    let held = std::mem::take(&mut slot.held);
    for event in held {
        announce(&**shared.registry.pubsub(), &slot.stream, event).await;
    }
}

/// End `state`'s presence session, if it joined. A session whose join was
/// never announced (the subscription was not confirmed) leaves at once and
/// silently.
pub(super) async fn end_presence(shared: &ConnShared, state: &mut SubState, how: Leave) {
    let Some(slot) = state.presence_mut() else {
        return;
    };
    let Some(joined) = slot.joined.take() else {
        return;
    };
    let announced = slot.held.is_empty();
    slot.held.clear();
    let session = joined.session.clone();
    drop(joined);
    let pubsub = shared.registry.pubsub().clone();
    let how = if announced { how } else { Leave::Now };
    match how {
        Leave::Now => match pubsub.presence_leave(&slot.stream, &session).await {
            Ok(Some(id)) if announced => {
                announce(&*pubsub, &slot.stream, protocol::presence_leave_event(&id)).await
            }
            Ok(_) => {}
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
