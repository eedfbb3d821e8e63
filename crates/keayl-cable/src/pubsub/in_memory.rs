use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;

use super::{
    BoxFuture, Callback, Delivery, HistoryConfig, HistoryEntry, HistoryError, HistoryFrom,
    HistoryLog, Position, PresenceError, PresenceJoined, PresenceLeft, PresenceLimits, PresenceSet,
    PresenceStore, PubSub, PubSubError, SessionStore, Subscribed, SubscriptionId,
};

/// The embedded, single-process backend: tracks subscribers per stream and
/// fans each broadcast out to them.
///
/// Subscribers of a stream are kept in a copy-on-write list: a broadcast
/// takes a snapshot (one `Arc` clone under a read lock) and calls every
/// callback with no lock held, so subscribing and broadcasting from many
/// tasks at once is safe and a callback can itself subscribe or broadcast.
///
/// It keeps stream history by default ([`HistoryConfig::default`]: the
/// last 100 messages of each stream for 300 s): every broadcast gets a
/// [`Position`], and [`history`](PubSub::history) serves what a client
/// missed. The broadcasts of one stream are then delivered in offset
/// order: a broadcast made while another task delivers on the same stream
/// is handed to that task, which delivers it next.
pub struct InMemory {
    inner: RwLock<Registry>,
    next_id: AtomicU64,
    broadcasts: AtomicU64,
    deliveries: AtomicU64,
    history: Option<Mutex<Ordered>>,
    sessions: Mutex<SessionStore>,
    presence: Mutex<PresenceStore>,
}

/// Bytes of session snapshots an [`InMemory`] keeps at most (the oldest go
/// first beyond it).
pub const MAX_SESSION_BYTES: usize = 64 * 1024 * 1024;

/// The history and, per stream being delivered right now, the broadcasts
/// waiting for the delivering task.
struct Ordered {
    log: HistoryLog,
    dispatching: HashMap<Arc<str>, VecDeque<(Position, Bytes)>>,
}

impl Default for InMemory {
    fn default() -> Self {
        Self::with_history(HistoryConfig::default())
    }
}

/// Ends a stream's delivery turn if a callback panics, so later
/// broadcasts on it are not queued forever.
struct Turn<'a> {
    history: &'a Mutex<Ordered>,
    stream: &'a str,
    done: bool,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
            h.dispatching.remove(self.stream);
        }
    }
}

/// A subscriber: its id, its callback, and whether it is still subscribed.
type Entry = (SubscriptionId, Callback, Arc<AtomicBool>);

#[derive(Default)]
struct Registry {
    streams: HashMap<Arc<str>, Arc<Vec<Entry>>>,
    by_id: HashMap<SubscriptionId, (Arc<str>, Arc<AtomicBool>)>,
}

impl std::fmt::Debug for InMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reg = self.inner.read().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("InMemory")
            .field("streams", &reg.streams.len())
            .field("subscriptions", &reg.by_id.len())
            .finish()
    }
}

impl InMemory {
    /// An empty in-memory backend keeping the default history.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty backend keeping history as `config` says
    /// ([`HistoryConfig::off`]: none, broadcasts carry no position).
    pub fn with_history(config: HistoryConfig) -> Self {
        InMemory {
            inner: RwLock::default(),
            next_id: AtomicU64::new(0),
            broadcasts: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            sessions: Mutex::new(SessionStore::new(MAX_SESSION_BYTES)),
            presence: Mutex::default(),
            history: config.is_on().then(|| {
                Mutex::new(Ordered {
                    log: HistoryLog::new(config),
                    dispatching: HashMap::new(),
                })
            }),
        }
    }

    /// An empty backend keeping no history.
    pub fn without_history() -> Self {
        Self::with_history(HistoryConfig::off())
    }

    /// Record `message` in `stream`'s history (when kept) and deliver it to
    /// the local subscribers, in offset order.
    fn publish(&self, stream: &str, message: Bytes) {
        let Some(history) = &self.history else {
            self.dispatch(stream, message);
            return;
        };
        let mut h = history.lock().unwrap_or_else(|e| e.into_inner());
        let Some(position) = h.log.append(stream, message.clone()) else {
            drop(h);
            self.dispatch(stream, message);
            return;
        };
        if let Some(waiting) = h.dispatching.get_mut(stream) {
            // Another task (or a callback up this task's stack) delivers
            // on this stream: it delivers this one next, in order.
            waiting.push_back((position, message));
            return;
        }
        h.dispatching.insert(Arc::from(stream), VecDeque::new());
        drop(h);
        let mut turn = Turn {
            history,
            stream,
            done: false,
        };
        let mut next = Some((position, message));
        while let Some((position, message)) = next {
            self.dispatch_at(stream, message, Some(position));
            let mut h = history.lock().unwrap_or_else(|e| e.into_inner());
            next = h.dispatching.get_mut(stream).and_then(VecDeque::pop_front);
            if next.is_none() {
                h.dispatching.remove(stream);
            }
        }
        turn.done = true;
    }

    /// Deliver `message` to the local subscribers of `stream` right now;
    /// returns how many callbacks ran.
    pub fn dispatch(&self, stream: &str, message: Bytes) -> usize {
        self.dispatch_at(stream, message, None)
    }

    /// [`dispatch`](Self::dispatch) of a message at `position` of the
    /// stream's history.
    pub fn dispatch_at(&self, stream: &str, message: Bytes, position: Option<Position>) -> usize {
        self.broadcasts.fetch_add(1, Ordering::Relaxed);
        let snapshot = {
            let reg = self.inner.read().unwrap_or_else(|e| e.into_inner());
            match reg.streams.get_key_value(stream) {
                Some((name, subs)) => (name.clone(), subs.clone()),
                None => return 0,
            }
        };
        let (name, subs) = snapshot;
        let delivery = Delivery::at(name, message, position);
        for (_, callback, alive) in subs.iter() {
            // Skip subscriptions removed since the snapshot (by an earlier callback).
            if alive.load(Ordering::Acquire) {
                callback(&delivery);
            }
        }
        self.deliveries
            .fetch_add(subs.len() as u64, Ordering::Relaxed);
        subs.len()
    }

    /// Number of local subscribers of `stream`.
    pub fn local_count(&self, stream: &str) -> usize {
        let reg = self.inner.read().unwrap_or_else(|e| e.into_inner());
        reg.streams.get(stream).map_or(0, |s| s.len())
    }

    /// Number of streams with at least one local subscriber.
    pub fn stream_count(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .streams
            .len()
    }

    /// Number of local subscriptions over all streams.
    pub fn subscription_count(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .len()
    }

    /// Register without the readiness future; returns the id and whether the
    /// stream had no subscriber before (used by [`External`](super::External)).
    pub(crate) fn add(&self, stream: &str, callback: Callback) -> (SubscriptionId, bool) {
        let id = SubscriptionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let mut reg = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let name: Arc<str> = match reg.streams.get_key_value(stream) {
            Some((k, _)) => k.clone(),
            None => Arc::from(stream),
        };
        let list = reg.streams.entry(name.clone()).or_default();
        let first = list.is_empty();
        // Mutates in place unless a broadcast holds the snapshot right now.
        let alive = Arc::new(AtomicBool::new(true));
        Arc::make_mut(list).push((id, callback, alive.clone()));
        reg.by_id.insert(id, (name, alive));
        (id, first)
    }

    /// Remove a subscription; returns its stream when it was the last one.
    pub(crate) fn remove(&self, id: SubscriptionId) -> Option<Arc<str>> {
        let mut reg = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let (name, alive) = reg.by_id.remove(&id)?;
        alive.store(false, Ordering::Release);
        let now_empty = match reg.streams.get_mut(&name) {
            Some(list) => {
                Arc::make_mut(list).retain(|(i, _, _)| *i != id);
                list.is_empty()
            }
            None => false,
        };
        if now_empty {
            reg.streams.remove(&name);
            Some(name)
        } else {
            None
        }
    }
}

impl InMemory {
    fn presence(&self) -> std::sync::MutexGuard<'_, PresenceStore> {
        self.presence.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PubSub for InMemory {
    fn subscribe(&self, stream: &str, callback: Callback) -> Subscribed {
        let (id, _) = self.add(stream, callback);
        Subscribed {
            id,
            ready: Box::pin(std::future::ready(Ok(()))),
        }
    }

    fn unsubscribe(&self, id: SubscriptionId) {
        self.remove(id);
    }

    fn broadcast(
        &self,
        stream: &str,
        message: Bytes,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        self.publish(stream, message);
        Box::pin(std::future::ready(Ok(())))
    }

    fn history(
        &self,
        stream: &str,
        from: &HistoryFrom,
    ) -> BoxFuture<'static, Result<Vec<HistoryEntry>, HistoryError>> {
        let result = match &self.history {
            None => Err(HistoryError::Unsupported),
            Some(h) => h
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .log
                .read(stream, from),
        };
        Box::pin(std::future::ready(result))
    }

    fn subscriber_count(&self, stream: &str) -> BoxFuture<'static, Result<usize, PubSubError>> {
        Box::pin(std::future::ready(Ok(self.local_count(stream))))
    }

    fn save_session(
        &self,
        sid: &str,
        snapshot: Bytes,
        ttl: std::time::Duration,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .save(sid, snapshot, ttl);
        Box::pin(std::future::ready(Ok(())))
    }

    fn take_session(&self, sid: &str) -> BoxFuture<'static, Result<Option<Bytes>, PubSubError>> {
        let taken = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(sid);
        Box::pin(std::future::ready(Ok(taken)))
    }

    fn remove_session(&self, sid: &str) -> BoxFuture<'static, Result<(), PubSubError>> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(sid);
        Box::pin(std::future::ready(Ok(())))
    }

    fn presence_join(
        &self,
        stream: &str,
        session: &str,
        id: &str,
        info: Bytes,
        limits: PresenceLimits,
    ) -> BoxFuture<'static, Result<PresenceJoined, PresenceError>> {
        let joined = self.presence().join(stream, session, id, info, limits);
        Box::pin(std::future::ready(joined))
    }

    fn presence_leave(
        &self,
        stream: &str,
        session: &str,
    ) -> BoxFuture<'static, Result<Option<String>, PresenceError>> {
        let left = self.presence().leave(stream, session);
        Box::pin(std::future::ready(Ok(left)))
    }

    fn presence_touch(
        &self,
        stream: &str,
        sessions: Vec<String>,
        ttl: std::time::Duration,
    ) -> BoxFuture<'static, Result<Vec<String>, PresenceError>> {
        let missing = self
            .presence()
            .touch(stream, sessions.iter().map(String::as_str), ttl);
        Box::pin(std::future::ready(Ok(missing)))
    }

    fn presence_info(
        &self,
        stream: &str,
    ) -> BoxFuture<'static, Result<PresenceSet, PresenceError>> {
        let set = self.presence().info(stream);
        Box::pin(std::future::ready(Ok(set)))
    }

    fn presence_reap(&self) -> BoxFuture<'static, Result<Vec<PresenceLeft>, PresenceError>> {
        let left = self.presence().reap(tokio::time::Instant::now());
        Box::pin(std::future::ready(Ok(left)))
    }

    fn stats(&self) -> super::PubSubStats {
        let reg = self.inner.read().unwrap_or_else(|e| e.into_inner());
        super::PubSubStats {
            streams: reg.streams.len(),
            subscriptions: reg.by_id.len(),
            broadcasts: self.broadcasts.load(Ordering::Relaxed),
            deliveries: self.deliveries.load(Ordering::Relaxed),
            history: self.history.as_ref().map_or_else(Default::default, |h| {
                h.lock().unwrap_or_else(|e| e.into_inner()).log.stats()
            }),
            sessions: self
                .sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len(),
            ..super::PubSubStats::default()
        }
    }
}
