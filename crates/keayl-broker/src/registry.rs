//! The process's broker subscriptions: which channels should be subscribed
//! (the source of truth the supervisor reconciles the connection with), who
//! gets each channel's messages, and who waits for a channel to go live;
//! and the supervisor's reconnect [`Backoff`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use keayl_cable::pubsub::{
    BoxFuture, Position, PubSubError, RemoteCallback, Subscribed, SubscriptionId,
};
use tokio::sync::{Notify, oneshot};

type Waiter = oneshot::Sender<Result<(), PubSubError>>;

#[derive(Default)]
struct Channel {
    subs: Vec<(SubscriptionId, Arc<str>, RemoteCallback)>,
    live: bool,
    waiters: Vec<Waiter>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    by_id: HashMap<SubscriptionId, String>,
    channels: HashMap<String, Channel>,
    // Channels whose wanted state changed since the supervisor last looked.
    dirty: HashSet<String>,
    closed: bool,
}

/// The wanted broker channels, shared between the client (subscribe and
/// unsubscribe from any task) and the supervisor task, which reconciles the
/// broker connection with it: [`changed`](Self::changed) wakes it,
/// [`take_changes`](Self::take_changes) says what to (un)subscribe,
/// [`mark_live`](Self::mark_live) releases the waiting subscribers, and
/// [`dispatch`](Self::dispatch) delivers what the broker sends.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
    wake: Notify,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("Registry")
            .field("channels", &inner.channels.len())
            .field("subscriptions", &inner.by_id.len())
            .field("closed", &inner.closed)
            .finish()
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register a subscriber of `stream` (broker channel `channel`). The
    /// returned future completes once the channel is live on the broker, or
    /// fails after `timeout`.
    pub fn add(
        &self,
        channel: String,
        stream: &str,
        callback: RemoteCallback,
        timeout: Duration,
    ) -> (SubscriptionId, BoxFuture<'static, Result<(), PubSubError>>) {
        let mut inner = self.lock();
        let id = SubscriptionId(inner.next_id);
        inner.next_id += 1;
        if inner.closed {
            return (id, Box::pin(std::future::ready(Err(PubSubError::Closed))));
        }
        inner.by_id.insert(id, channel.clone());
        let is_new = !inner.channels.contains_key(&channel);
        let entry = inner.channels.entry(channel.clone()).or_default();
        entry.subs.push((id, Arc::from(stream), callback));
        if entry.live {
            return (id, Box::pin(std::future::ready(Ok(()))));
        }
        let (tx, rx) = oneshot::channel();
        entry.waiters.retain(|w| !w.is_closed());
        entry.waiters.push(tx);
        if is_new {
            inner.dirty.insert(channel);
            drop(inner);
            self.wake.notify_one();
        }
        let ready = async move {
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(PubSubError::Closed),
                Err(_) => Err(PubSubError::Unavailable(format!(
                    "the broker did not acknowledge the subscription within {timeout:?}"
                ))),
            }
        };
        (id, Box::pin(ready))
    }

    /// A fresh id for a subscription refused before it reached the registry.
    pub fn allocate_id(&self) -> SubscriptionId {
        let mut inner = self.lock();
        let id = SubscriptionId(inner.next_id);
        inner.next_id += 1;
        id
    }

    /// Register a subscriber of `stream` on broker channel `channel`, as
    /// [`PubSubClient::subscribe`](keayl_cable::pubsub::PubSubClient::subscribe)
    /// returns it (see [`add`](Self::add)).
    pub fn subscribe(
        &self,
        channel: String,
        stream: &str,
        callback: RemoteCallback,
        timeout: Duration,
    ) -> Subscribed {
        let (id, ready) = self.add(channel, stream, callback, timeout);
        Subscribed { id, ready }
    }

    /// A subscription refused before it reached the registry: a fresh id and
    /// a readiness that fails with `error`.
    pub fn refuse(&self, error: PubSubError) -> Subscribed {
        Subscribed {
            id: self.allocate_id(),
            ready: Box::pin(std::future::ready(Err(error))),
        }
    }

    /// Remove a subscriber. Unknown ids are ignored.
    pub fn remove(&self, id: SubscriptionId) {
        let mut inner = self.lock();
        let Some(channel) = inner.by_id.remove(&id) else {
            return;
        };
        let now_empty = match inner.channels.get_mut(&channel) {
            Some(c) => {
                c.subs.retain(|(i, _, _)| *i != id);
                c.subs.is_empty()
            }
            None => false,
        };
        if now_empty {
            inner.channels.remove(&channel);
            inner.dirty.insert(channel);
            drop(inner);
            self.wake.notify_one();
        }
    }

    /// Wait until something changed (a permit is stored, so a change made
    /// before this is called is not missed).
    pub async fn changed(&self) {
        self.wake.notified().await
    }

    /// Channels that changed since the last call, split into those wanted and
    /// not in `actual` (to subscribe) and those in `actual` no longer wanted
    /// (to unsubscribe).
    pub fn take_changes(&self, actual: &HashSet<String>) -> (Vec<String>, Vec<String>) {
        let mut inner = self.lock();
        let dirty = std::mem::take(&mut inner.dirty);
        let mut sub = Vec::new();
        let mut unsub = Vec::new();
        for ch in dirty {
            let wanted = inner.channels.contains_key(&ch);
            let have = actual.contains(&ch);
            if wanted && !have {
                sub.push(ch);
            } else if !wanted && have {
                unsub.push(ch);
            } else if wanted && let Some(c) = inner.channels.get_mut(&ch) {
                // Dropped and wanted again before the broker saw either:
                // still subscribed there, so live at once.
                c.live = true;
                for w in c.waiters.drain(..) {
                    let _ = w.send(Ok(()));
                }
            }
        }
        (sub, unsub)
    }

    /// Wake the supervisor (something besides the channels needs attention).
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    /// Whether changes are pending.
    pub fn has_changes(&self) -> bool {
        !self.lock().dirty.is_empty()
    }

    /// Every wanted channel (after a reconnect: all of them must be
    /// subscribed again). Clears the pending changes.
    pub fn take_all(&self) -> Vec<String> {
        let mut inner = self.lock();
        inner.dirty.clear();
        inner.channels.keys().cloned().collect()
    }

    /// The broker acknowledged `channels`: they are live, their waiters are
    /// released.
    pub fn mark_live(&self, channels: &[String]) {
        let mut inner = self.lock();
        for ch in channels {
            if let Some(c) = inner.channels.get_mut(ch) {
                c.live = true;
                for w in c.waiters.drain(..) {
                    let _ = w.send(Ok(()));
                }
            }
        }
    }

    /// The broker acknowledged subscribing `sub` and unsubscribing `unsub`:
    /// `actual` (the channels subscribed on the current connection) follows,
    /// and `sub` is [live](Self::mark_live).
    pub fn applied(&self, actual: &mut HashSet<String>, sub: &[String], unsub: &[String]) {
        actual.extend(sub.iter().cloned());
        for ch in unsub {
            actual.remove(ch);
        }
        self.mark_live(sub);
    }

    /// The broker refused `channels`: their current waiters fail (the
    /// channels stay wanted and are retried after the next reconnect).
    pub fn fail(&self, channels: &[String], error: &PubSubError) {
        let mut inner = self.lock();
        for ch in channels {
            if let Some(c) = inner.channels.get_mut(ch) {
                for w in c.waiters.drain(..) {
                    let _ = w.send(Err(error.clone()));
                }
            }
        }
    }

    /// The connection is gone: no channel is live until re-subscribed.
    pub fn mark_all_down(&self) {
        let mut inner = self.lock();
        for c in inner.channels.values_mut() {
            c.live = false;
        }
    }

    /// The backend is shutting down: every waiter fails, new subscriptions
    /// fail at once.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        for c in inner.channels.values_mut() {
            for w in c.waiters.drain(..) {
                let _ = w.send(Err(PubSubError::Closed));
            }
        }
    }

    /// Deliver `message` received on `channel` to its subscribers (callbacks
    /// run with no lock held). Returns how many ran.
    pub fn dispatch(&self, channel: &str, message: Bytes) -> usize {
        self.dispatch_at(channel, message, None)
    }

    /// [`dispatch`](Self::dispatch) of a message at `position` of its
    /// stream's history (kept in the broker).
    pub fn dispatch_at(&self, channel: &str, message: Bytes, position: Option<Position>) -> usize {
        let targets: Vec<(Arc<str>, RemoteCallback)> = {
            let inner = self.lock();
            match inner.channels.get(channel) {
                Some(c) => c
                    .subs
                    .iter()
                    .map(|(_, s, cb)| (s.clone(), cb.clone()))
                    .collect(),
                None => return 0,
            }
        };
        for (stream, callback) in &targets {
            callback(stream, message.clone(), position.clone());
        }
        targets.len()
    }

    /// Number of wanted channels.
    pub fn channel_count(&self) -> usize {
        self.lock().channels.len()
    }
}

/// Exponential backoff with jitter: `min`, doubling, capped at `max`.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
    seed: u64,
}

impl Backoff {
    /// Start at `min` (`max` is raised to `min` if lower).
    pub fn new(min: Duration, max: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
            seed: seed | 1,
        }
    }

    /// Back to `min` (after a successful connection).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Attempts since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = self
            .min
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift: ±20 % jitter so processes do not reconnect in lockstep.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let factor = 0.8 + (self.seed % 1000) as f64 / 2500.0;
        base.mul_f64(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(80) && first <= Duration::from_millis(120));
        for _ in 0..40 {
            assert!(b.next_delay() <= Duration::from_secs(2));
        }
        assert!(b.next_delay() >= Duration::from_millis(1600));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }

    #[tokio::test]
    async fn registry_tracks_wanted_channels() {
        let r = Registry::default();
        let cb: RemoteCallback = Arc::new(|_, _, _| {});
        let (a, ready_a) = r.add("ch".into(), "s", cb.clone(), Duration::from_secs(5));
        let (b, ready_b) = r.add("ch".into(), "s", cb.clone(), Duration::from_secs(5));
        let (sub, unsub) = r.take_changes(&HashSet::new());
        assert_eq!(sub, vec!["ch".to_owned()]);
        assert!(unsub.is_empty());
        r.mark_live(&sub);
        ready_a.await.unwrap();
        ready_b.await.unwrap();
        r.remove(a);
        assert!(!r.has_changes());
        r.remove(b);
        let actual: HashSet<String> = ["ch".to_owned()].into();
        let (sub, unsub) = r.take_changes(&actual);
        assert!(sub.is_empty());
        assert_eq!(unsub, vec!["ch".to_owned()]);
    }

    #[tokio::test]
    async fn ready_times_out_and_close_fails_waiters() {
        let r = Registry::default();
        let cb: RemoteCallback = Arc::new(|_, _, _| {});
        let (_, ready) = r.add("x".into(), "x", cb.clone(), Duration::from_millis(20));
        assert!(matches!(ready.await, Err(PubSubError::Unavailable(_))));
        let (_, ready) = r.add("y".into(), "y", cb.clone(), Duration::from_secs(5));
        r.close();
        assert_eq!(ready.await, Err(PubSubError::Closed));
        let (_, ready) = r.add("z".into(), "z", cb, Duration::from_secs(5));
        assert_eq!(ready.await, Err(PubSubError::Closed));
    }
}
