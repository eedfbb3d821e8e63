//! Pub/sub: how a broadcast on a stream reaches every subscriber.
//!
//! A backend is any [`PubSub`]: [`subscribe`](PubSub::subscribe) a callback to
//! a stream, [`unsubscribe`](PubSub::unsubscribe) it by id, and
//! [`broadcast`](PubSub::broadcast) a message to everyone on a stream.
//! [`InMemory`] is the embedded single-process default; [`External`] shares
//! broadcasts across processes through a networked [`PubSubClient`]
//! (Redis- or PostgreSQL-shaped).
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use keayl_cable::pubsub::{InMemory, PubSub};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let pubsub = InMemory::new();
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let s = seen.clone();
//! let sub = pubsub.subscribe("room:1", Arc::new(move |d: &keayl_cable::pubsub::Delivery| {
//!     s.lock().unwrap().push(d.message().clone());
//! }));
//! sub.ready.await.unwrap(); // live: broadcasts from now on reach the callback
//! pubsub.broadcast("room:1", "\"hi\"".into()).await.unwrap();
//! assert_eq!(seen.lock().unwrap().len(), 1);
//! pubsub.unsubscribe(sub.id);
//! # }
//! ```
//!
//! Contract for callbacks: they run on the broadcaster's task and must not
//! block (the cable's callbacks only push onto a connection's bounded
//! outbound queue), so one slow subscriber never holds up the rest.

#[cfg(feature = "conformance")]
pub mod conformance;
mod external;
mod history;
mod in_memory;
mod presence;
mod sessions;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

pub use external::{External, PubSubClient, RemoteCallback};
pub use history::{
    HistoryConfig, HistoryEntry, HistoryError, HistoryFrom, HistoryLimits, HistoryLog,
    HistoryStats, Position, unix_now,
};
pub use in_memory::{InMemory, MAX_SESSION_BYTES};
pub use presence::{
    PresenceError, PresenceJoined, PresenceLeft, PresenceLimits, PresenceMember, PresenceSet,
    PresenceStore,
};
pub use sessions::SessionStore;

use crate::protocol::EncodedIdentifier;

/// A boxed, `Send` future: what backends return for work that may need the
/// network.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A subscriber's callback, called once per message on its stream.
pub type Callback = Arc<dyn Fn(&Delivery) + Send + Sync>;

/// Identifies one subscription of a callback to a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(pub u64);

/// Errors from a pub/sub backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PubSubError {
    /// The broker cannot be reached right now; the message was not sent.
    #[error("pub/sub broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused the operation.
    #[error("pub/sub operation failed: {0}")]
    Failed(String),
    /// The backend has shut down.
    #[error("pub/sub backend closed")]
    Closed,
}

/// The result of [`PubSub::subscribe`]: the id to unsubscribe with, and a
/// future that completes once the subscription is live (broadcasts from then
/// on are delivered). A cable confirms a subscription only after this.
#[must_use = "await `ready` before relying on delivery"]
pub struct Subscribed {
    /// The subscription's id.
    pub id: SubscriptionId,
    /// Completes when the broker acknowledged the subscription.
    pub ready: BoxFuture<'static, Result<(), PubSubError>>,
}

impl std::fmt::Debug for Subscribed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscribed")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A pub/sub backend.
pub trait PubSub: Send + Sync + 'static {
    /// Subscribe `callback` to `stream`. Registration is immediate (an
    /// [`unsubscribe`](Self::unsubscribe) right after always wins); the
    /// returned [`Subscribed::ready`] completes once the subscription is live.
    fn subscribe(&self, stream: &str, callback: Callback) -> Subscribed;

    /// Remove a subscription. Unknown ids are ignored. After this returns the
    /// callback is not called again.
    fn unsubscribe(&self, id: SubscriptionId);

    /// Publish `message` (JSON text, as Rails' coder produces) to everyone
    /// subscribed to `stream`, in every process sharing the backend.
    fn broadcast(
        &self,
        stream: &str,
        message: Bytes,
    ) -> BoxFuture<'static, Result<(), PubSubError>>;

    /// How many subscribers `stream` has (for [`External`], across processes,
    /// as the broker counts them).
    fn subscriber_count(&self, stream: &str) -> BoxFuture<'static, Result<usize, PubSubError>>;

    /// The messages of `stream` after a position or since a time, oldest
    /// first, each with its [`Position`] (reliable streams: what a client
    /// that reconnects missed). A backend that keeps no history answers
    /// [`HistoryError::Unsupported`] (the default).
    fn history(
        &self,
        stream: &str,
        from: &HistoryFrom,
    ) -> BoxFuture<'static, Result<Vec<HistoryEntry>, HistoryError>> {
        let _ = (stream, from);
        no_history()
    }

    /// Keep a connection's session snapshot under `sid` for `ttl`
    /// (extended protocol session restore), where every process sharing
    /// the backend can [`take`](Self::take_session) it. A backend that
    /// keeps no sessions ignores it (the default): clients then get a new
    /// session when they reconnect.
    fn save_session(
        &self,
        sid: &str,
        snapshot: Bytes,
        ttl: std::time::Duration,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        let _ = (sid, snapshot, ttl);
        done()
    }

    /// The session snapshot saved under `sid`, if it has not expired;
    /// removed, so a session is restored once.
    fn take_session(&self, sid: &str) -> BoxFuture<'static, Result<Option<Bytes>, PubSubError>> {
        let _ = sid;
        no_session()
    }

    /// Forget the session saved under `sid` (the server ended it).
    fn remove_session(&self, sid: &str) -> BoxFuture<'static, Result<(), PubSubError>> {
        let _ = sid;
        done()
    }

    /// Join `session` (one subscription of one connection) to the presence
    /// set of `stream` as `id` with `info` (JSON text), for every process
    /// sharing the backend. The session lasts `limits.ttl` unless
    /// [touched](Self::presence_touch). Default: presence is not kept
    /// ([`PresenceError::Unsupported`]).
    fn presence_join(
        &self,
        stream: &str,
        session: &str,
        id: &str,
        info: Bytes,
        limits: PresenceLimits,
    ) -> BoxFuture<'static, Result<PresenceJoined, PresenceError>> {
        let _ = (stream, session, id, info, limits);
        no_presence()
    }

    /// Remove `session` from `stream`'s presence set: the id it was under
    /// when that was the id's last session.
    fn presence_leave(
        &self,
        stream: &str,
        session: &str,
    ) -> BoxFuture<'static, Result<Option<String>, PresenceError>> {
        let _ = (stream, session);
        no_presence()
    }

    /// Keep `sessions` of `stream` for another `ttl` (a process touches
    /// the sessions of its live connections). Returns the sessions it did
    /// not have (expired while the broker was out of reach, lost in a
    /// broker restart): the caller joins them again.
    fn presence_touch(
        &self,
        stream: &str,
        sessions: Vec<String>,
        ttl: std::time::Duration,
    ) -> BoxFuture<'static, Result<Vec<String>, PresenceError>> {
        let _ = (stream, sessions, ttl);
        no_presence()
    }

    /// The presence set of `stream`.
    fn presence_info(
        &self,
        stream: &str,
    ) -> BoxFuture<'static, Result<PresenceSet, PresenceError>> {
        let _ = stream;
        no_presence()
    }

    /// Remove the expired sessions of every stream: the ids that left with
    /// them, each reported to one caller only (whichever process reaps
    /// first tells the stream's subscribers).
    fn presence_reap(&self) -> BoxFuture<'static, Result<Vec<PresenceLeft>, PresenceError>> {
        no_presence()
    }

    /// Counters and broker health, for metrics and health checks.
    fn stats(&self) -> PubSubStats {
        PubSubStats::default()
    }
}

/// The defaults of a backend that keeps no history or sessions (shared by
/// [`PubSub`] and [`PubSubClient`]).
fn no_history() -> BoxFuture<'static, Result<Vec<HistoryEntry>, HistoryError>> {
    Box::pin(std::future::ready(Err(HistoryError::Unsupported)))
}

fn no_session() -> BoxFuture<'static, Result<Option<Bytes>, PubSubError>> {
    Box::pin(std::future::ready(Ok(None)))
}

fn done() -> BoxFuture<'static, Result<(), PubSubError>> {
    Box::pin(std::future::ready(Ok(())))
}

fn no_presence<T: Send + 'static>() -> BoxFuture<'static, Result<T, PresenceError>> {
    Box::pin(std::future::ready(Err(PresenceError::Unsupported)))
}

/// Counters and health of a backend (see [`PubSub::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubSubStats {
    /// Streams with at least one local subscriber.
    pub streams: usize,
    /// Local subscriptions.
    pub subscriptions: usize,
    /// Broadcasts dispatched to local subscribers.
    pub broadcasts: u64,
    /// Callbacks run for those broadcasts (deliveries to local subscribers).
    pub deliveries: u64,
    /// Whether the broker is reachable (always true in memory).
    pub healthy: bool,
    /// Times the backend reconnected to its broker.
    pub reconnects: u64,
    /// Broadcasts that could not be published (broker down).
    pub lost_broadcasts: u64,
    /// The stream history this process holds (zero when the history lives
    /// in the broker or is off).
    pub history: HistoryStats,
    /// Session snapshots this process holds (zero when they live in the
    /// broker).
    pub sessions: usize,
}

impl Default for PubSubStats {
    fn default() -> Self {
        PubSubStats {
            streams: 0,
            subscriptions: 0,
            broadcasts: 0,
            deliveries: 0,
            healthy: true,
            reconnects: 0,
            lost_broadcasts: 0,
            history: HistoryStats::default(),
            sessions: 0,
        }
    }
}

/// Health of a networked client (see [`PubSubClient::health`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHealth {
    /// Whether the broker is reachable now.
    pub healthy: bool,
    /// Reconnections since start.
    pub reconnects: u64,
    /// Publishes that failed or were dropped while the broker was down.
    pub lost_broadcasts: u64,
}

impl Default for ClientHealth {
    fn default() -> Self {
        ClientHealth {
            healthy: true,
            reconnects: 0,
            lost_broadcasts: 0,
        }
    }
}

/// Implements the optional [`PubSub`] methods (history, sessions,
/// presence) by calling the same methods on another backend or client:
/// for wrappers and adapters, so that none of them is forgotten (a
/// forgotten one silently falls back to "not supported"). `|s| expr`
/// names `self` as `s` in the expression of the delegate.
///
/// ```
/// use std::sync::Arc;
/// use keayl_cable::pubsub::{BoxFuture, Callback, PubSub, PubSubError, Subscribed, SubscriptionId};
///
/// /// Counts broadcasts, forwards everything.
/// struct Counting { inner: Arc<dyn PubSub>, n: std::sync::atomic::AtomicU64 }
///
/// impl PubSub for Counting {
///     fn subscribe(&self, stream: &str, callback: Callback) -> Subscribed {
///         self.inner.subscribe(stream, callback)
///     }
///     fn unsubscribe(&self, id: SubscriptionId) {
///         self.inner.unsubscribe(id)
///     }
///     fn broadcast(&self, stream: &str, message: bytes::Bytes) -> BoxFuture<'static, Result<(), PubSubError>> {
///         self.n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
///         self.inner.broadcast(stream, message)
///     }
///     fn subscriber_count(&self, stream: &str) -> BoxFuture<'static, Result<usize, PubSubError>> {
///         self.inner.subscriber_count(stream)
///     }
///     keayl_cable::forward_pubsub_extras!(|s| s.inner);
/// }
/// ```
#[macro_export]
macro_rules! forward_pubsub_extras {
    (|$s:ident| $to:expr) => {
        fn history(
            &self,
            stream: &str,
            from: &$crate::pubsub::HistoryFrom,
        ) -> $crate::pubsub::BoxFuture<
            'static,
            ::core::result::Result<
                ::std::vec::Vec<$crate::pubsub::HistoryEntry>,
                $crate::pubsub::HistoryError,
            >,
        > {
            let $s = self;
            $to.history(stream, from)
        }

        fn save_session(
            &self,
            sid: &str,
            snapshot: $crate::__bytes::Bytes,
            ttl: ::std::time::Duration,
        ) -> $crate::pubsub::BoxFuture<
            'static,
            ::core::result::Result<(), $crate::pubsub::PubSubError>,
        > {
            let $s = self;
            $to.save_session(sid, snapshot, ttl)
        }

        fn take_session(
            &self,
            sid: &str,
        ) -> $crate::pubsub::BoxFuture<
            'static,
            ::core::result::Result<
                ::core::option::Option<$crate::__bytes::Bytes>,
                $crate::pubsub::PubSubError,
            >,
        > {
            let $s = self;
            $to.take_session(sid)
        }

        fn remove_session(
            &self,
            sid: &str,
        ) -> $crate::pubsub::BoxFuture<
            'static,
            ::core::result::Result<(), $crate::pubsub::PubSubError>,
        > {
            let $s = self;
            $to.remove_session(sid)
        }

        fn presence_join(
            &self,
            stream: &str,
            session: &str,
            id: &str,
            info: $crate::__bytes::Bytes,
            limits: $crate::pubsub::PresenceLimits,
        ) -> $crate::pubsub::BoxFuture<
            'static,
            ::core::result::Result<$crate::pubsub::PresenceJoined, $crate::pubsub::PresenceError>,
        > {
            let $s = self;
            $to.presence_join(stream, session, id, info, limits)
        }

        fn presence_leave(
            &self,
            stream: &str,
            session: &str,
        ) -> $crate::pubsub::BoxFuture<
            'static,
            ::core::result::Result<
                ::core::option::Option<::std::string::String>,
                $crate::pubsub::PresenceError,
            >,
        > {
            let $s = self;
            $to.presence_leave(stream, session)
        }

        fn presence_touch(
            &self,
            stream: &str,
            sessions: ::std::vec::Vec<::std::string::String>,
            ttl: ::std::time::Duration,
        ) -> $crate::pubsub::BoxFuture<
            'static,
            ::core::result::Result<
                ::std::vec::Vec<::std::string::String>,
                $crate::pubsub::PresenceError,
            >,
        > {
            let $s = self;
            $to.presence_touch(stream, sessions, ttl)
        }

        fn presence_info(
            &self,
            stream: &str,
        ) -> $crate::pubsub::BoxFuture<
            'static,
            ::core::result::Result<$crate::pubsub::PresenceSet, $crate::pubsub::PresenceError>,
        > {
            let $s = self;
            $to.presence_info(stream)
        }

        fn presence_reap(
            &self,
        ) -> $crate::pubsub::BoxFuture<
            'static,
            ::core::result::Result<
                ::std::vec::Vec<$crate::pubsub::PresenceLeft>,
                $crate::pubsub::PresenceError,
            >,
        > {
            let $s = self;
            $to.presence_reap()
        }
    };
}

impl<P: PubSub + ?Sized> PubSub for Arc<P> {
    fn subscribe(&self, stream: &str, callback: Callback) -> Subscribed {
        (**self).subscribe(stream, callback)
    }
    fn unsubscribe(&self, id: SubscriptionId) {
        (**self).unsubscribe(id)
    }
    fn broadcast(
        &self,
        stream: &str,
        message: Bytes,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        (**self).broadcast(stream, message)
    }
    fn subscriber_count(&self, stream: &str) -> BoxFuture<'static, Result<usize, PubSubError>> {
        (**self).subscriber_count(stream)
    }
    crate::forward_pubsub_extras!(|s| (**s));
    fn stats(&self) -> PubSubStats {
        (**self).stats()
    }
}

/// The kinds of client frame made from one delivery (see
/// [`Delivery::cached`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameKind {
    /// `{"identifier":…,"message":…}`.
    Data,
    /// The same with the extended protocol's position fields.
    Positioned,
    /// `{"type":"presence","identifier":…,"message":<event>}`.
    Presence,
    /// A whisper's data as a data frame.
    Whisper,
}

/// One message being delivered to a stream's subscribers.
///
/// The same `Delivery` is handed to every callback of the stream, so work
/// that depends only on the message (validating it as JSON, encoding the
/// client frame for a subscription identifier) is done once per broadcast
/// and shared: see [`Delivery::frame_for`].
#[derive(Debug)]
pub struct Delivery {
    stream: Arc<str>,
    message: Bytes,
    position: Option<Position>,
    replayed: bool,
    is_json: std::sync::OnceLock<bool>,
    // Almost every broadcast meets one or two distinct identifiers, so a
    // short vector beats a map. The mutex is uncontended: a delivery is
    // dispatched by one task. The kind: which frame of the message.
    frames: std::sync::Mutex<Vec<(Arc<str>, FrameKind, Bytes)>>,
    memo: std::sync::Mutex<Vec<(&'static str, Bytes)>>,
}

impl Delivery {
    /// A delivery of `message` on `stream`, without a position (the stream
    /// keeps no history).
    pub fn new(stream: Arc<str>, message: Bytes) -> Self {
        Delivery {
            stream,
            message,
            position: None,
            replayed: false,
            is_json: std::sync::OnceLock::new(),
            frames: std::sync::Mutex::new(Vec::new()),
            memo: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A delivery of `message` at `position` of `stream`'s history.
    pub fn at(stream: Arc<str>, message: Bytes, position: Option<Position>) -> Self {
        Delivery {
            position,
            ..Delivery::new(stream, message)
        }
    }

    /// A message of the stream's history sent again to one subscriber that
    /// asked for what it missed (see [`PubSub::history`]).
    pub fn replayed(stream: Arc<str>, entry: HistoryEntry) -> Self {
        Delivery {
            replayed: true,
            ..Delivery::at(stream, entry.message, Some(entry.position))
        }
    }

    /// The message's position in its stream's history (`None` when the
    /// stream keeps none).
    pub fn position(&self) -> Option<&Position> {
        self.position.as_ref()
    }

    /// Whether this is a history message sent again (not a live broadcast).
    pub fn is_replayed(&self) -> bool {
        self.replayed
    }

    /// Any other encoding of the message, made once per broadcast by the
    /// first subscriber that asks for `key` and shared by the rest (an SSE
    /// frame, say).
    pub fn memo(&self, key: &'static str, make: impl FnOnce(&Bytes) -> Bytes) -> Bytes {
        let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, b)) = memo.iter().find(|(k, _)| *k == key) {
            return b.clone();
        }
        let made = make(&self.message);
        memo.push((key, made.clone()));
        made
    }

    /// The stream the message was broadcast on.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    pub(crate) fn stream_arc(&self) -> &Arc<str> {
        &self.stream
    }

    /// The message as published (JSON text for cable broadcasts).
    pub fn message(&self) -> &Bytes {
        &self.message
    }

    /// Whether the message is valid JSON (computed once per broadcast).
    pub fn is_json(&self) -> bool {
        *self
            .is_json
            .get_or_init(|| serde_json::from_slice::<serde::de::IgnoredAny>(&self.message).is_ok())
    }

    /// The client frame `{"identifier":…,"message":<message>}` for
    /// `identifier`, encoded once per (broadcast, identifier) and shared by
    /// every recipient. `None` when the message is not JSON (it cannot be
    /// spliced into a frame; Rails' default handler drops it too).
    pub fn frame_for(&self, identifier: &EncodedIdentifier) -> Option<Bytes> {
        self.cached_frame(identifier, false)
    }

    /// Like [`frame_for`](Self::frame_for), with the position fields of the
    /// extended protocol when the message has one:
    /// `{"identifier":…,"message":…,"stream_id":…,"epoch":…,"offset":…}`.
    pub fn positioned_frame_for(&self, identifier: &EncodedIdentifier) -> Option<Bytes> {
        self.cached_frame(identifier, self.position.is_some())
    }

    fn cached_frame(&self, identifier: &EncodedIdentifier, positioned: bool) -> Option<Bytes> {
        if !self.is_json() {
            return None;
        }
        let kind = if positioned {
            FrameKind::Positioned
        } else {
            FrameKind::Data
        };
        self.cached(identifier, kind, || {
            // The message is valid JSON, hence valid UTF-8.
            let text = std::str::from_utf8(&self.message).ok()?;
            Some(self.encode(identifier, text, positioned))
        })
    }

    /// The frame of `kind` for `identifier`, made by `make` once per
    /// (broadcast, kind, identifier) and shared by every recipient (`None`
    /// from `make`: no frame, asked again by the next recipient).
    pub(crate) fn cached(
        &self,
        identifier: &EncodedIdentifier,
        kind: FrameKind,
        make: impl FnOnce() -> Option<Bytes>,
    ) -> Option<Bytes> {
        let mut frames = self.frames.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, f)) = frames
            .iter()
            .find(|(id, k, _)| *k == kind && **id == *identifier.as_json())
        {
            return Some(f.clone());
        }
        let frame = make()?;
        frames.push((Arc::from(identifier.as_json()), kind, frame.clone()));
        Some(frame)
    }

    /// The frame for `identifier` around `message_json` (the message as a
    /// coder decoded it), with the position fields when `positioned` and
    /// the message has a position.
    pub fn encode(
        &self,
        identifier: &EncodedIdentifier,
        message_json: &str,
        positioned: bool,
    ) -> Bytes {
        match (&self.position, positioned) {
            (Some(p), true) => identifier.frame_at(message_json, &self.stream, p),
            _ => identifier.frame(message_json),
        }
    }
}
