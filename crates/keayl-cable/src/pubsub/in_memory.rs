use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use super::{BoxFuture, Callback, Delivery, PubSub, PubSubError, Subscribed, SubscriptionId};

/// The embedded, single-process backend: tracks subscribers per stream and
/// fans each broadcast out to them.
///
/// Subscribers of a stream are kept in a copy-on-write list: a broadcast
/// takes a snapshot (one `Arc` clone under a read lock) and calls every
/// callback with no lock held, so subscribing and broadcasting from many
/// tasks at once is safe and a callback can itself subscribe or broadcast.
#[derive(Default)]
pub struct InMemory {
    inner: RwLock<Registry>,
    next_id: AtomicU64,
    broadcasts: AtomicU64,
    deliveries: AtomicU64,
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
    /// An empty in-memory backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// Deliver `message` to the local subscribers of `stream` right now;
    /// returns how many callbacks ran.
    pub fn dispatch(&self, stream: &str, message: Bytes) -> usize {
        self.broadcasts.fetch_add(1, Ordering::Relaxed);
        let snapshot = {
            let reg = self.inner.read().unwrap_or_else(|e| e.into_inner());
            match reg.streams.get_key_value(stream) {
                Some((name, subs)) => (name.clone(), subs.clone()),
                None => return 0,
            }
        };
        let (name, subs) = snapshot;
        let delivery = Delivery::new(name, message);
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
        self.dispatch(stream, message);
        Box::pin(std::future::ready(Ok(())))
    }

    fn subscriber_count(&self, stream: &str) -> BoxFuture<'static, Result<usize, PubSubError>> {
        Box::pin(std::future::ready(Ok(self.local_count(stream))))
    }

    fn stats(&self) -> super::PubSubStats {
        let reg = self.inner.read().unwrap_or_else(|e| e.into_inner());
        super::PubSubStats {
            streams: reg.streams.len(),
            subscriptions: reg.by_id.len(),
            broadcasts: self.broadcasts.load(Ordering::Relaxed),
            deliveries: self.deliveries.load(Ordering::Relaxed),
            ..super::PubSubStats::default()
        }
    }
}
