use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use super::{ChannelError, Params};
use crate::coder::{Coder, JsonCoder};
use crate::connection::{ConnShared, Identifiers, Request, Sink};
use crate::naming::{self, Streamable};
use crate::protocol::EncodedIdentifier;
use crate::pubsub::{
    BoxFuture, Callback, Delivery, FrameKind, Position, PubSubError, SubscriptionId,
};

/// What a channel callback can do: read its subscription and connection,
/// stream, transmit, broadcast, reject, schedule timers.
///
/// None of these are reachable from the wire.
pub struct ChannelContext<'a> {
    pub(crate) state: &'a mut SubState,
    pub(crate) conn: &'a ConnShared,
}

impl std::fmt::Debug for ChannelContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelContext")
            .field("identifier", &self.state.identifier)
            .finish_non_exhaustive()
    }
}

/// Per-subscription bookkeeping, owned by the connection.
pub(crate) struct SubState {
    pub(crate) identifier: String,
    pub(crate) encoded: EncodedIdentifier,
    pub(crate) channel_class: Arc<str>,
    pub(crate) channel_name: &'static str,
    pub(crate) coder: Arc<dyn Coder>,
    pub(crate) params: Params,
    pub(crate) gate: Arc<Gate>,
    /// Stream → its pub/sub subscription and the callback it delivers
    /// through (history is replayed through the same callback).
    pub(crate) streams: HashMap<String, (SubscriptionId, Callback)>,
    pub(crate) pending: Vec<PendingStream>,
    pub(crate) timers: Vec<Timer>,
    pub(crate) rejected: bool,
    pub(crate) confirmed: bool,
    /// Restored from a session: no confirmation or rejection frame, and
    /// live messages held until the client's history request.
    pub(crate) restored: bool,
    /// Presence and whispers (extended protocol), boxed: most
    /// subscriptions have neither.
    pub(crate) extras: Option<Box<Extras>>,
}

/// A subscription's presence stream and whisper stream.
#[derive(Debug, Default)]
pub(crate) struct Extras {
    pub(crate) presence: Option<PresenceSlot>,
    pub(crate) whisper: Option<Box<str>>,
}

/// A subscription's presence stream and its session in it.
#[derive(Debug)]
pub(crate) struct PresenceSlot {
    pub(crate) stream: String,
    /// Its session, once joined.
    pub(crate) joined: Option<crate::connection::Joined>,
    /// Joined by the channel ([`ChannelContext::join_presence`]): the
    /// client may not join under another id or leave.
    pub(crate) by_server: bool,
    /// Presence events of a join made before the confirmation (from
    /// `subscribed`), announced once the subscription is confirmed (its
    /// presence events stream is live then, so the joiner gets its own).
    pub(crate) held: Vec<Bytes>,
}

impl SubState {
    pub(crate) fn presence(&self) -> Option<&PresenceSlot> {
        self.extras.as_ref()?.presence.as_ref()
    }

    pub(crate) fn presence_mut(&mut self) -> Option<&mut PresenceSlot> {
        self.extras.as_mut()?.presence.as_mut()
    }

    pub(crate) fn whisper(&self) -> Option<&str> {
        self.extras.as_ref()?.whisper.as_deref()
    }

    fn extras_mut(&mut self) -> &mut Extras {
        self.extras.get_or_insert_default()
    }
}

/// A stream subscription of one subscription that is not known to be live yet.
pub(crate) struct PendingStream {
    pub(crate) stream: String,
    pub(crate) id: SubscriptionId,
    pub(crate) ready: BoxFuture<'static, Result<(), PubSubError>>,
}

/// A periodic timer of one subscription.
#[derive(Debug, Clone)]
pub(crate) struct Timer {
    pub(crate) name: &'static str,
    pub(crate) every: Duration,
    pub(crate) due: Instant,
}

impl SubState {
    pub(crate) fn new(
        identifier: &str,
        channel_class: Arc<str>,
        channel_name: &'static str,
        coder: Arc<dyn Coder>,
        params: Params,
        pending_limit: usize,
    ) -> Self {
        SubState {
            identifier: identifier.to_owned(),
            encoded: EncodedIdentifier::new(identifier),
            channel_class,
            channel_name,
            coder,
            params,
            gate: Arc::new(Gate::new(pending_limit)),
            streams: HashMap::new(),
            pending: Vec::new(),
            timers: Vec::new(),
            rejected: false,
            confirmed: false,
            restored: false,
            extras: None,
        }
    }
}

/// Holds a subscription's stream messages back until its confirmation is
/// sent, and while history is replayed, and stops them for good once it
/// ends.
///
/// The lock is held while handing a frame to the sink, which only enqueues;
/// that is what keeps "confirmation first, then stream messages, none after
/// the end" true when broadcasts arrive from other tasks. For the extended
/// protocol it also remembers the last position sent per stream, so a
/// message that comes both from history and live is sent once, in order.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    state: Mutex<GateInner>,
    /// Bytes held back; beyond them the client is disconnected as too slow
    /// (what its outbound queue would do).
    limit: usize,
}

/// A message's stream and position, when the client tracks positions.
pub(crate) type At<'a> = Option<(&'a Arc<str>, &'a Position)>;

/// A held message's stream and position.
type Owned = (Arc<str>, Position);

/// The last position sent on one stream.
#[derive(Debug)]
struct Last {
    stream: Arc<str>,
    epoch: Arc<str>,
    offset: u64,
}

#[derive(Debug, Default)]
struct GateInner {
    state: GateState,
    /// Frames held back (with their position, if any) and their length.
    held: Vec<(Bytes, Option<Owned>)>,
    held_bytes: usize,
    /// While positions are checked (from a replay until a live message
    /// passes the last replayed position: live messages of a stream come
    /// in offset order, so none after it can be a duplicate), the last
    /// position sent per stream; `None` otherwise, and then a delivery
    /// costs no more than without history.
    seen: Option<Vec<Last>>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum GateState {
    /// Before the confirmation: live messages are held.
    #[default]
    Pending,
    /// Confirmed, history being replayed: live messages are held, replayed
    /// ones pass.
    Replaying,
    Open,
    Closed,
}

impl GateInner {
    /// Send `frame` unless the client already got this position (or a
    /// later one of the same epoch).
    fn pass(&mut self, sink: &Sink, frame: Bytes, at: At<'_>) {
        let (Some(seen), Some((stream, position))) = (self.seen.as_mut(), at) else {
            sink.send(frame);
            return;
        };
        // Live (not replayed) and past the last position: caught up.
        let live = self.state == GateState::Open;
        let same = |a: &Arc<str>, b: &Arc<str>| Arc::ptr_eq(a, b) || **a == **b;
        let single = seen.len() <= 1;
        let empty = seen.is_empty();
        match seen.iter_mut().find(|l| same(&l.stream, stream)) {
            Some(last) => {
                if same(&last.epoch, &position.epoch) {
                    if position.offset <= last.offset {
                        return;
                    }
                } else {
                    last.epoch = position.epoch.clone();
                }
                last.offset = position.offset;
                if live && single {
                    self.seen = None;
                }
            }
            // Nothing was replayed on this stream: nothing to
            // de-duplicate against.
            None if live && empty => self.seen = None,
            None => seen.push(Last {
                stream: stream.clone(),
                epoch: position.epoch.clone(),
                offset: position.offset,
            }),
        }
        sink.send(frame);
    }

    fn drain(&mut self, sink: &Sink) {
        let held = std::mem::take(&mut self.held);
        self.held_bytes = 0;
        for (frame, at) in held {
            self.pass(sink, frame, at.as_ref().map(|(s, p)| (s, p)));
        }
    }
}

impl Gate {
    pub(crate) fn new(limit: usize) -> Self {
        Gate {
            state: Mutex::new(GateInner::default()),
            limit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateInner> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A stream message for the client: `at` is its stream and position
    /// when the client tracks positions (extended protocol), `replayed`
    /// whether it comes from history.
    pub(crate) fn deliver(&self, sink: &Sink, frame: Bytes, at: At<'_>, replayed: bool) {
        let mut g = self.lock();
        match g.state {
            GateState::Open => g.pass(sink, frame, at),
            GateState::Replaying if replayed => g.pass(sink, frame, at),
            // History is only replayed after the confirmation.
            GateState::Pending if replayed => {}
            GateState::Pending | GateState::Replaying => {
                if g.held_bytes + frame.len() > self.limit {
                    g.state = GateState::Closed;
                    g.held.clear();
                    tracing::warn!(
                        limit = self.limit,
                        "messages held for a subscription awaiting its confirmation or history went over the limit; disconnecting"
                    );
                    sink.send(crate::protocol::disconnect(
                        crate::protocol::DisconnectReason::TooSlow,
                        true,
                    ));
                    sink.close();
                    return;
                }
                g.held_bytes += frame.len();
                g.held
                    .push((frame, at.map(|(s, p)| (s.clone(), p.clone()))));
            }
            GateState::Closed => {}
        }
    }

    /// Send `confirmation`, then whatever arrived before it, and let later
    /// messages through — or, with `replay`, keep holding live messages
    /// until [`end_replay`](Self::end_replay).
    pub(crate) fn open(&self, sink: &Sink, confirmation: Option<Bytes>, replay: bool) {
        let mut g = self.lock();
        if g.state != GateState::Pending {
            return;
        }
        if let Some(confirmation) = confirmation {
            sink.send(confirmation);
        }
        if replay {
            g.state = GateState::Replaying;
            g.seen.get_or_insert_default();
        } else {
            g.state = GateState::Open;
            g.drain(sink);
        }
    }

    /// Hold live messages while history is replayed (a restored
    /// subscription's gate is still pending: what it held waits for the
    /// replay too). False when the subscription ended or is replaying.
    pub(crate) fn begin_replay(&self) -> bool {
        let mut g = self.lock();
        if !matches!(g.state, GateState::Open | GateState::Pending) {
            return false;
        }
        g.state = GateState::Replaying;
        g.seen.get_or_insert_default();
        true
    }

    /// Send `trailer` (`confirm_history` / `reject_history`), then the live
    /// messages held meanwhile that the history did not already cover.
    pub(crate) fn end_replay(&self, sink: &Sink, trailer: Bytes) {
        let mut g = self.lock();
        if g.state != GateState::Replaying {
            return;
        }
        sink.send(trailer);
        g.state = GateState::Open;
        g.drain(sink);
    }

    pub(crate) fn close(&self) {
        let mut g = self.lock();
        g.state = GateState::Closed;
        g.held = Vec::new();
        g.seen = None;
    }
}

/// A stream a subscription streams from (see
/// [`ChannelContext::stream_from`]), to make it the subscription's presence
/// or whisper stream.
pub struct StreamFrom<'c, 'a> {
    ctx: &'c mut ChannelContext<'a>,
    stream: String,
}

impl std::fmt::Debug for StreamFrom<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamFrom")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl StreamFrom<'_, '_> {
    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.stream
    }

    /// Make this the subscription's presence stream (extended protocol):
    /// the client may `join` it (also with its `subscribe`), `leave` it and
    /// ask for its presence set, and gets every `join` and `leave` of it.
    /// A subscription has one presence stream: the last one set wins.
    /// Needs a backend that keeps presence (in memory, Redis, PostgreSQL).
    pub fn with_presence(self) -> Self {
        let ctx = &mut *self.ctx;
        if naming::is_reserved(&self.stream) {
            return self;
        }
        let events = naming::presence_events_stream(&self.stream);
        let extended = ctx.conn.request.protocol().is_extended();
        let same = ctx
            .state
            .presence()
            .is_some_and(|p| p.stream == self.stream);
        if same && (!extended || ctx.state.streams.contains_key(&events)) {
            return self;
        }
        if !same {
            // Another presence stream before: its session leaves.
            let old = ctx.state.extras_mut().presence.take();
            if let Some(old) = old {
                ctx.drop_presence(old);
            }
            ctx.state.extras_mut().presence = Some(PresenceSlot {
                stream: self.stream.clone(),
                joined: None,
                by_server: false,
                held: Vec::new(),
            });
        }
        crate::connection::start_presence(&ctx.conn.registry);
        // `actioncable-v1-json` has no presence frames (Rails' client would
        // hand them to `received`): its subscriptions can be members (a
        // server-side join) but get no events.
        if !extended {
            return self;
        }
        let gate = ctx.state.gate.clone();
        let encoded = ctx.state.encoded.clone();
        let sink = ctx.conn.sink.clone();
        let callback: Callback = Arc::new(move |d: &Delivery| {
            let frame = d.cached(&encoded, FrameKind::Presence, || {
                let event = std::str::from_utf8(d.message()).ok()?;
                Some(crate::protocol::presence_frame(&encoded, event))
            });
            if let Some(frame) = frame {
                gate.deliver(&sink, frame, None, false);
            }
        });
        ctx.subscribe_internal(events, callback);
        self
    }

    /// Make this the subscription's whisper stream: the client's
    /// `whisper` commands go to every other subscription whisper-streaming
    /// it (in every process), never to the sender and never into history.
    /// A subscription has one whisper stream: the last one set wins.
    pub fn with_whispers(self) -> Self {
        let ctx = &mut *self.ctx;
        if naming::is_reserved(&self.stream) {
            return self;
        }
        if let Some(old) = ctx.state.whisper().map(str::to_owned)
            && old != self.stream
        {
            ctx.unsubscribe_internal(&naming::whisper_stream(&old));
        }
        ctx.state.extras_mut().whisper = Some(self.stream.as_str().into());
        let gate = ctx.state.gate.clone();
        let encoded = ctx.state.encoded.clone();
        let sink = ctx.conn.sink.clone();
        let own = crate::connection::whisper_tag(ctx.conn);
        let callback: Callback = Arc::new(move |d: &Delivery| {
            let Some((sender, data)) = crate::connection::split_whisper(d.message()) else {
                return;
            };
            if sender != own.as_bytes()
                && let Some(frame) =
                    d.cached(&encoded, FrameKind::Whisper, || Some(encoded.frame(data)))
            {
                gate.deliver(&sink, frame, None, false);
            }
        });
        ctx.subscribe_internal(naming::whisper_stream(&self.stream), callback);
        self
    }
}

impl<'a> ChannelContext<'a> {
    /// The subscription's identifier, exactly as the client sent it.
    pub fn identifier(&self) -> &str {
        &self.state.identifier
    }

    /// The channel class name (`ChatChannel`).
    pub fn channel_class(&self) -> &str {
        &self.state.channel_class
    }

    /// The decoded identifier (`channel` included), JSON types preserved.
    pub fn params(&self) -> &Params {
        &self.state.params
    }

    /// The identifier decoded as `T` (a struct deriving `Deserialize`;
    /// unknown keys such as `channel` are ignored unless `T` refuses them).
    /// A mismatch is [`ChannelError::invalid`]: from `subscribed` it rejects
    /// the subscription, from an action it is logged.
    ///
    /// ```
    /// # use keayl_cable::{ChannelContext, ChannelError};
    /// #[derive(serde::Deserialize)]
    /// struct Room { room: String }
    ///
    /// fn stream_of(ctx: &ChannelContext<'_>) -> Result<String, ChannelError> {
    ///     let Room { room } = ctx.params_as()?;
    ///     Ok(format!("room:{room}"))
    /// }
    /// ```
    pub fn params_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, ChannelError> {
        serde_json::from_value(Value::Object(self.state.params.clone()))
            .map_err(|e| ChannelError::invalid(format!("params: {e}")))
    }

    /// A parameter that is a JSON string.
    pub fn param_str(&self, key: &str) -> Option<&str> {
        self.state.params.get(key).and_then(Value::as_str)
    }

    /// The connection's identifiers (those given when it was created and
    /// those set in `connect`).
    pub fn identifiers(&self) -> &Identifiers {
        &self.conn.identifiers
    }

    /// The upgrade request the connection came from.
    pub fn request(&self) -> &Request {
        &self.conn.request
    }

    /// Stream `stream` to this client: every message broadcast on it is
    /// transmitted with this subscription's identifier. Repeating a stream
    /// already streamed is a no-op (one delivery per message).
    ///
    /// The returned [`StreamFrom`] makes the stream the subscription's
    /// presence stream or whisper stream (extended protocol):
    ///
    /// ```
    /// # use keayl_cable::{ChannelContext, ChannelError};
    /// fn subscribed(ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
    ///     ctx.stream_from("room:1").with_presence().with_whispers();
    ///     Ok(())
    /// }
    /// ```
    pub fn stream_from(&mut self, stream: impl Into<String>) -> StreamFrom<'_, 'a> {
        self.stream_from_with_coder(stream, Arc::new(JsonCoder))
    }

    /// [`stream_from`](Self::stream_from) decoding messages with `coder`.
    pub fn stream_from_with_coder(
        &mut self,
        stream: impl Into<String>,
        coder: Arc<dyn Coder>,
    ) -> StreamFrom<'_, 'a> {
        let stream = stream.into();
        if naming::is_reserved(&stream) {
            if self.conn.registry.log_allowed() {
                tracing::warn!(%stream, "refusing to stream a reserved stream name");
            }
        } else if !self.state.streams.contains_key(&stream) {
            let callback = self.delivery_callback(coder);
            self.subscribe_internal(stream.clone(), callback);
        }
        StreamFrom { ctx: self, stream }
    }

    /// Subscribe `callback` to `stream` for this subscription (torn down
    /// with its other streams).
    fn subscribe_internal(&mut self, stream: String, callback: Callback) {
        if self.state.streams.contains_key(&stream) {
            return;
        }
        let sub = self
            .conn
            .registry
            .pubsub()
            .subscribe(&stream, callback.clone());
        self.state.pending.push(PendingStream {
            stream: stream.clone(),
            id: sub.id,
            ready: sub.ready,
        });
        self.state.streams.insert(stream, (sub.id, callback));
    }

    fn delivery_callback(&self, coder: Arc<dyn Coder>) -> Callback {
        let gate = self.state.gate.clone();
        let encoded = self.state.encoded.clone();
        let sink = self.conn.sink.clone();
        // One bad broadcast reaches every subscriber: its log line is
        // rate-limited.
        let registry = self.conn.registry.clone();
        // The extended protocol's frames carry positions, and its clients
        // may replay history: the gate tracks what each stream sent.
        let extended = self.conn.request.protocol().is_extended();
        fn at(extended: bool, d: &Delivery) -> At<'_> {
            match (extended, d.position()) {
                (true, Some(p)) => Some((d.stream_arc(), p)),
                _ => None,
            }
        }
        if coder.is_json_passthrough() {
            Arc::new(move |d: &Delivery| {
                let frame = if extended {
                    d.positioned_frame_for(&encoded)
                } else {
                    d.frame_for(&encoded)
                };
                match frame {
                    Some(frame) => gate.deliver(&sink, frame, at(extended, d), d.is_replayed()),
                    None => {
                        if registry.log_allowed() {
                            tracing::warn!(
                                stream = d.stream(),
                                "dropped a broadcast that is not JSON"
                            )
                        }
                    }
                }
            })
        } else {
            Arc::new(move |d: &Delivery| match coder.decode(d.message()) {
                Ok(value) => gate.deliver(
                    &sink,
                    d.encode(&encoded, &value.to_string(), extended),
                    at(extended, d),
                    d.is_replayed(),
                ),
                Err(e) => {
                    if registry.log_allowed() {
                        tracing::warn!(stream = d.stream(), error = %e, "could not decode a broadcast")
                    }
                }
            })
        }
    }

    /// Stream the broadcasting of a model: [`broadcasting_for`] under this
    /// channel's name (`chat:Z2lkOi8v…`), decoded with the channel's
    /// [`coder`](super::Channel::coder).
    ///
    /// [`broadcasting_for`]: crate::naming::broadcasting_for
    pub fn stream_for(&mut self, target: &dyn Streamable) -> StreamFrom<'_, 'a> {
        let name = self.broadcasting_for(target);
        let coder = self.state.coder.clone();
        self.stream_from_with_coder(name, coder)
    }

    /// [`stream_for`](Self::stream_for) decoding messages with `coder`.
    pub fn stream_for_with_coder(
        &mut self,
        target: &dyn Streamable,
        coder: Arc<dyn Coder>,
    ) -> StreamFrom<'_, 'a> {
        let name = self.broadcasting_for(target);
        self.stream_from_with_coder(name, coder)
    }

    /// Stream what models broadcast about `model` (their
    /// [`Broadcastable`](crate::Broadcastable) and
    /// [`Broadcaster::broadcast_append_to`](crate::Broadcaster::broadcast_append_to)
    /// family address [`stream_name_from`](crate::naming::stream_name_from),
    /// Turbo's naming without a channel prefix). Pairs with model
    /// broadcasts as [`stream_for`](Self::stream_for) pairs with
    /// [`broadcast_for`](Self::broadcast_for).
    pub fn stream_from_model(&mut self, model: &dyn Streamable) -> StreamFrom<'_, 'a> {
        self.stream_from(naming::stream_name_from(&[model]))
    }

    /// Publish `data` to this channel's broadcasting for `target` (what
    /// [`stream_for`](Self::stream_for) streams), encoded with the channel's
    /// [`coder`](super::Channel::coder): Rails' `ChatChannel.broadcast_to`.
    pub fn broadcast_for(
        &self,
        target: &dyn Streamable,
        data: &impl Serialize,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        let name = self.broadcasting_for(target);
        crate::broadcasting::encode_and_publish(
            self.conn.registry.pubsub(),
            &self.state.coder,
            &name,
            data,
        )
    }

    /// This channel's broadcasting name for `target`.
    pub fn broadcasting_for(&self, target: &dyn Streamable) -> String {
        naming::broadcasting_for(self.state.channel_name, &[target])
    }

    /// Stop streaming `stream`; a no-op if not streaming it. When it is
    /// the presence stream, the subscription's presence session leaves at
    /// once; when it is the whisper stream, whispers stop too.
    pub fn stop_stream_from(&mut self, stream: &str) {
        if naming::is_reserved(stream) {
            return;
        }
        self.unsubscribe_internal(stream);
        if self.state.presence().is_some_and(|p| p.stream == stream) {
            self.unsubscribe_internal(&naming::presence_events_stream(stream));
            if let Some(slot) = self.state.extras_mut().presence.take() {
                self.drop_presence(slot);
            }
        }
        if self.state.whisper() == Some(stream) {
            self.unsubscribe_internal(&naming::whisper_stream(stream));
            self.state.extras_mut().whisper = None;
        }
    }

    fn unsubscribe_internal(&mut self, stream: &str) {
        if let Some((id, _)) = self.state.streams.remove(stream) {
            self.state.pending.retain(|p| p.id != id);
            self.conn.registry.pubsub().unsubscribe(id);
        }
    }

    /// A presence session ended outside the connection's own teardown (a
    /// channel stopping or replacing its presence stream): it leaves now,
    /// announced from a task of its own.
    fn drop_presence(&mut self, slot: PresenceSlot) {
        if let Some(joined) = slot.joined {
            crate::connection::leave_detached(&self.conn.registry, slot.stream, joined);
        }
    }

    /// Stop streaming a model's broadcasting.
    pub fn stop_stream_for(&mut self, target: &dyn Streamable) {
        let name = self.broadcasting_for(target);
        self.stop_stream_from(&name);
    }

    /// Stop every stream of this subscription (its presence session, if
    /// any, leaves at once).
    pub fn stop_all_streams(&mut self) {
        if let Some(slot) = self.state.extras.as_mut().and_then(|e| e.presence.take()) {
            self.drop_presence(slot);
        }
        self.drop_streams();
    }

    /// Unsubscribe every stream, presence events and whispers included;
    /// the presence session is left for the connection's teardown to end.
    pub(crate) fn drop_streams(&mut self) {
        self.state.pending.clear();
        if let Some(extras) = self.state.extras.as_mut() {
            extras.whisper = None;
        }
        for (_, (id, _)) in self.state.streams.drain() {
            self.conn.registry.pubsub().unsubscribe(id);
        }
    }

    /// The streams this subscription currently streams from.
    pub fn streams(&self) -> impl Iterator<Item = &str> {
        self.state
            .streams
            .keys()
            .map(String::as_str)
            .filter(|s| !naming::is_reserved(s))
    }

    /// Send `data` straight to this client, under this subscription's
    /// identifier.
    pub fn transmit(&self, data: impl Serialize) {
        match serde_json::to_string(&data) {
            Ok(json) => self.conn.sink.send(self.state.encoded.frame(&json)),
            Err(e) => tracing::error!(error = %e, "could not serialise a transmission"),
        }
    }

    /// Publish `data` (JSON-encoded) to `stream`, reaching every connection
    /// subscribed to it. Await the result to learn whether the backend took it.
    pub fn broadcast_to(
        &self,
        stream: &str,
        data: &impl Serialize,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        crate::Broadcaster::new(self.conn.registry.pubsub().clone()).broadcast(stream, data)
    }

    /// Join this subscription's presence stream (see
    /// [`StreamFrom::with_presence`]) as `id` with `info`, from the server:
    /// what a channel does when the id comes from the connection's
    /// identity rather than from the client. Called from `subscribed`, the
    /// `join` event reaches the client after its confirmation. The session
    /// leaves on unsubscribe, and after the presence TTL on disconnect.
    ///
    /// ```
    /// # use keayl_cable::{ChannelContext, ChannelError};
    /// async fn subscribed(ctx: &mut ChannelContext<'_>, user: &str) -> Result<(), ChannelError> {
    ///     ctx.stream_from("room:1").with_presence();
    ///     ctx.join_presence(user, &serde_json::json!({ "name": user })).await
    /// }
    /// ```
    pub async fn join_presence(
        &mut self,
        id: impl Into<String>,
        info: &impl Serialize,
    ) -> Result<(), ChannelError> {
        let info = serde_json::to_string(info)
            .map_err(|e| ChannelError::msg(format!("presence info: {e}")))?;
        let request = crate::protocol::PresenceRequest {
            id: id.into(),
            info,
        };
        crate::connection::join_presence(self.conn, self.state, request, false)
            .await
            .map_err(|e| ChannelError::msg(e.to_string()))
    }

    /// Refuse the subscription (call from `subscribed`): the client gets
    /// `reject_subscription`, streams set up so far are torn down and never
    /// deliver, and `unsubscribed` runs.
    pub fn reject(&mut self) {
        self.state.rejected = true;
    }

    /// Whether [`reject`](Self::reject) was called.
    pub fn is_rejected(&self) -> bool {
        self.state.rejected
    }

    /// Call [`periodic`](super::Channel::periodic) with `name` every `every`
    /// while the subscription lasts, first after one interval. A zero
    /// interval is ignored.
    pub fn periodically(&mut self, name: &'static str, every: Duration) {
        if every.is_zero() {
            tracing::warn!(
                timer = name,
                "ignoring a periodic timer with a zero interval"
            );
            return;
        }
        let timer = Timer {
            name,
            every,
            due: Instant::now() + every,
        };
        // One timer per name: registering it again replaces it.
        match self.state.timers.iter_mut().find(|t| t.name == name) {
            Some(existing) => *existing = timer,
            None => self.state.timers.push(timer),
        }
    }
}
