//! The recording pub/sub a [`TestCable`](super::TestCable) is built on.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::pubsub::{
    BoxFuture, Callback, PubSub, PubSubError, PubSubStats, Subscribed, SubscriptionId,
};

/// Forwards everything to a real backend and keeps a copy of every
/// broadcast, in publication order (not those of Keayl's own transient
/// streams: presence events and whispers, see
/// [`TRANSIENT_PREFIX`](crate::naming::TRANSIENT_PREFIX)).
pub(super) struct Recorder {
    inner: Arc<dyn PubSub>,
    published: Mutex<Vec<(String, Bytes)>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("broadcasts", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl Recorder {
    pub(super) fn new(inner: Arc<dyn PubSub>) -> Self {
        Recorder {
            inner,
            published: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, Bytes)>> {
        self.published.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The payloads published to `stream` and not taken, oldest first.
    pub(super) fn on(&self, stream: &str) -> Vec<Bytes> {
        self.lock()
            .iter()
            .filter(|(s, _)| s == stream)
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// [`on`](Self::on), forgetting them.
    pub(super) fn take(&self, stream: &str) -> Vec<Bytes> {
        let mut published = self.lock();
        let (taken, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut *published)
            .into_iter()
            .partition(|(s, _)| s == stream);
        *published = rest;
        taken.into_iter().map(|(_, m)| m).collect()
    }

    /// Every stream with a recorded payload, in order of first publication.
    pub(super) fn streams(&self) -> Vec<String> {
        let mut streams: Vec<String> = Vec::new();
        for (s, _) in self.lock().iter() {
            if !streams.contains(s) {
                streams.push(s.clone());
            }
        }
        streams
    }

    pub(super) fn clear(&self) {
        self.lock().clear();
    }
}

impl PubSub for Recorder {
    fn subscribe(&self, stream: &str, callback: Callback) -> Subscribed {
        self.inner.subscribe(stream, callback)
    }

    fn unsubscribe(&self, id: SubscriptionId) {
        self.inner.unsubscribe(id)
    }

    fn broadcast(
        &self,
        stream: &str,
        message: Bytes,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        if !stream.starts_with(crate::naming::TRANSIENT_PREFIX) {
            self.lock().push((stream.to_owned(), message.clone()));
        }
        self.inner.broadcast(stream, message)
    }

    fn subscriber_count(&self, stream: &str) -> BoxFuture<'static, Result<usize, PubSubError>> {
        self.inner.subscriber_count(stream)
    }

    crate::forward_pubsub_extras!(|s| s.inner);

    fn stats(&self) -> PubSubStats {
        self.inner.stats()
    }
}
