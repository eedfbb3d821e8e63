use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::Shared;

use super::{
    BoxFuture, Callback, HistoryEntry, HistoryError, HistoryFrom, InMemory, Position,
    PresenceError, PresenceJoined, PresenceLeft, PresenceLimits, PresenceSet, PubSub, PubSubError,
    Subscribed, SubscriptionId,
};

/// Callback a [`PubSubClient`] calls for every message on a subscribed
/// stream: `(stream, message, its position)` (the position when the broker
/// keeps the stream's history, see [`PubSubClient::history`]).
pub type RemoteCallback = Arc<dyn Fn(&str, Bytes, Option<Position>) + Send + Sync>;

/// A networked pub/sub client (Redis- or PostgreSQL-shaped), as
/// [`External`] needs it.
///
/// Implementations must not block in [`subscribe`](Self::subscribe) or
/// [`unsubscribe`](Self::unsubscribe): they register the intent and return,
/// and the returned [`Subscribed::ready`] completes once the broker
/// acknowledged the subscription.
pub trait PubSubClient: Send + Sync + 'static {
    /// Subscribe to `stream` on the broker; `callback` gets every message.
    fn subscribe(&self, stream: &str, callback: RemoteCallback) -> Subscribed;
    /// Drop a broker subscription.
    fn unsubscribe(&self, id: SubscriptionId);
    /// Publish `message` on `stream` through the broker.
    fn publish(&self, stream: &str, message: Bytes) -> BoxFuture<'static, Result<(), PubSubError>>;
    /// Subscribers of `stream` as the broker counts them (every process).
    fn subscriber_count(&self, stream: &str) -> BoxFuture<'static, Result<usize, PubSubError>>;

    /// Whether the broker is reachable, and outage counters.
    fn health(&self) -> super::ClientHealth {
        super::ClientHealth::default()
    }

    /// The history of `stream` kept in the broker (see
    /// [`PubSub::history`]); positions must be assigned by the broker, once
    /// per broadcast whichever process publishes it, and delivered with
    /// each message. Default: none kept.
    fn history(
        &self,
        stream: &str,
        from: &HistoryFrom,
    ) -> BoxFuture<'static, Result<Vec<HistoryEntry>, HistoryError>> {
        let _ = (stream, from);
        super::no_history()
    }

    /// See [`PubSub::save_session`]. Default: sessions are not kept.
    fn save_session(
        &self,
        sid: &str,
        snapshot: Bytes,
        ttl: std::time::Duration,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        let _ = (sid, snapshot, ttl);
        super::done()
    }

    /// See [`PubSub::take_session`].
    fn take_session(&self, sid: &str) -> BoxFuture<'static, Result<Option<Bytes>, PubSubError>> {
        let _ = sid;
        super::no_session()
    }

    /// See [`PubSub::remove_session`].
    fn remove_session(&self, sid: &str) -> BoxFuture<'static, Result<(), PubSubError>> {
        let _ = sid;
        super::done()
    }

    /// See [`PubSub::presence_join`]. Default: presence is not kept.
    fn presence_join(
        &self,
        stream: &str,
        session: &str,
        id: &str,
        info: Bytes,
        limits: PresenceLimits,
    ) -> BoxFuture<'static, Result<PresenceJoined, PresenceError>> {
        let _ = (stream, session, id, info, limits);
        super::no_presence()
    }

    /// See [`PubSub::presence_leave`].
    fn presence_leave(
        &self,
        stream: &str,
        session: &str,
    ) -> BoxFuture<'static, Result<Option<String>, PresenceError>> {
        let _ = (stream, session);
        super::no_presence()
    }

    /// See [`PubSub::presence_touch`].
    fn presence_touch(
        &self,
        stream: &str,
        sessions: Vec<String>,
        ttl: std::time::Duration,
    ) -> BoxFuture<'static, Result<Vec<String>, PresenceError>> {
        let _ = (stream, sessions, ttl);
        super::no_presence()
    }

    /// See [`PubSub::presence_info`].
    fn presence_info(
        &self,
        stream: &str,
    ) -> BoxFuture<'static, Result<PresenceSet, PresenceError>> {
        let _ = stream;
        super::no_presence()
    }

    /// See [`PubSub::presence_reap`]: atomic in the broker, so each left id
    /// is reported to one process.
    fn presence_reap(&self) -> BoxFuture<'static, Result<Vec<PresenceLeft>, PresenceError>> {
        super::no_presence()
    }
}

type Ready = Shared<BoxFuture<'static, Result<(), PubSubError>>>;

/// Shares broadcasts across processes by delegating to a networked
/// [`PubSubClient`].
///
/// Local subscribers of one stream share a single broker subscription: the
/// first local subscriber creates it, the last one to leave drops it, and
/// every local subscriber's readiness waits on the broker's acknowledgement.
/// A broadcast is published to the broker only; it comes back through the
/// subscription, in broker order, like every other process's broadcasts.
pub struct External {
    client: Arc<dyn PubSubClient>,
    local: Arc<InMemory>,
    // Held only for map updates and the client's non-blocking
    // subscribe/unsubscribe calls, so local and broker subscriptions change
    // together (a subscribe racing an unsubscribe cannot leak either).
    remote: Mutex<HashMap<Arc<str>, (SubscriptionId, Ready)>>,
}

impl std::fmt::Debug for External {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("External")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl External {
    /// A backend publishing and subscribing through `client`.
    pub fn new(client: impl PubSubClient) -> Self {
        Self::from_arc(Arc::new(client))
    }

    /// Like [`new`](Self::new), for a client already in an `Arc`.
    pub fn from_arc(client: Arc<dyn PubSubClient>) -> Self {
        External {
            client,
            local: Arc::new(InMemory::without_history()),
            remote: Mutex::new(HashMap::new()),
        }
    }

    /// Number of broker subscriptions this process holds (one per stream with
    /// local subscribers).
    pub fn remote_subscription_count(&self) -> usize {
        self.remote.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The local subscriber registry.
    pub fn local(&self) -> &InMemory {
        &self.local
    }
}

impl PubSub for External {
    fn subscribe(&self, stream: &str, callback: Callback) -> Subscribed {
        let mut remote = self.remote.lock().unwrap_or_else(|e| e.into_inner());
        let (id, first) = self.local.add(stream, callback);
        let ready = if first || !remote.contains_key(stream) {
            let local = Arc::downgrade(&self.local);
            let on_message: RemoteCallback = Arc::new(
                move |stream: &str, message: Bytes, position: Option<Position>| {
                    if let Some(local) = local.upgrade() {
                        local.dispatch_at(stream, message, position);
                    }
                },
            );
            let sub = self.client.subscribe(stream, on_message);
            let ready = sub.ready.shared();
            remote.insert(Arc::from(stream), (sub.id, ready.clone()));
            ready
        } else {
            remote[stream].1.clone()
        };
        Subscribed {
            id,
            ready: Box::pin(ready),
        }
    }

    fn unsubscribe(&self, id: SubscriptionId) {
        let mut remote = self.remote.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stream) = self.local.remove(id)
            && let Some((remote_id, _)) = remote.remove(&stream)
        {
            self.client.unsubscribe(remote_id);
        }
    }

    fn broadcast(
        &self,
        stream: &str,
        message: Bytes,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        self.client.publish(stream, message)
    }

    fn subscriber_count(&self, stream: &str) -> BoxFuture<'static, Result<usize, PubSubError>> {
        self.client.subscriber_count(stream)
    }

    crate::forward_pubsub_extras!(|s| s.client);

    fn stats(&self) -> super::PubSubStats {
        let health = self.client.health();
        super::PubSubStats {
            healthy: health.healthy,
            reconnects: health.reconnects,
            lost_broadcasts: health.lost_broadcasts,
            ..self.local.stats()
        }
    }
}
