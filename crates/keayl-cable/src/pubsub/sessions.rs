//! Session snapshots for the extended protocol's session restore: what a
//! connection was (its identifiers and subscriptions), kept for a while
//! after it closed so a client that reconnects with its session id gets
//! it back without authenticating again.
//!
//! A backend keeps them where its broadcasts travel (in process for
//! [`InMemory`](super::InMemory), in the broker for networked ones), so a
//! client may reconnect to another process. [`SessionStore`] is the
//! in-process store.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Bookkeeping bytes counted per session besides its id and snapshot.
const SESSION_OVERHEAD: usize = 96;

/// An in-process, bounded store of session snapshots: each expires after
/// the time it was saved with, and past [`max_bytes`](Self::new) the
/// oldest go first. Not synchronised: wrap it in a lock.
///
/// ```
/// use std::time::Duration;
/// use keayl_cable::pubsub::SessionStore;
///
/// let mut store = SessionStore::new(1 << 20);
/// store.save("sid-1", "snapshot".into(), Duration::from_secs(300));
/// assert_eq!(store.take("sid-1").as_deref(), Some(&b"snapshot"[..]));
/// assert_eq!(store.take("sid-1"), None); // restored once
/// ```
#[derive(Debug)]
pub struct SessionStore {
    sessions: HashMap<Box<str>, (Instant, Bytes)>,
    /// Saves in order, (expiry, sid): the front expires first
    /// when every save uses the same TTL; an entry whose session was saved
    /// again or taken since is stale and skipped.
    order: VecDeque<(Instant, Box<str>)>,
    bytes: usize,
    max_bytes: usize,
}

impl SessionStore {
    /// An empty store holding at most `max_bytes` of snapshots.
    pub fn new(max_bytes: usize) -> Self {
        SessionStore {
            sessions: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Keep `snapshot` under `sid` for `ttl` (replacing an earlier one).
    pub fn save(&mut self, sid: &str, snapshot: Bytes, ttl: Duration) {
        let now = Instant::now();
        self.expire(now);
        let expires = now + ttl;
        let size = sid.len() + snapshot.len() + SESSION_OVERHEAD;
        if let Some((_, old)) = self.sessions.insert(sid.into(), (expires, snapshot)) {
            self.bytes -= sid.len() + old.len() + SESSION_OVERHEAD;
        }
        self.bytes += size;
        self.order.push_back((expires, sid.into()));
        while self.bytes > self.max_bytes {
            let Some((at, sid)) = self.order.pop_front() else {
                break;
            };
            self.remove_if(&sid, at);
        }
        // Stale order entries (sessions saved again) are bounded by the
        // live ones: compact when they outnumber them.
        if self.order.len() > 2 * self.sessions.len() + 64 {
            let sessions = &self.sessions;
            self.order
                .retain(|(at, sid)| sessions.get(sid).is_some_and(|(e, _)| e == at));
        }
    }

    /// The snapshot saved under `sid`, removed (a session is restored once).
    pub fn take(&mut self, sid: &str) -> Option<Bytes> {
        let now = Instant::now();
        self.expire(now);
        let (expires, snapshot) = self.sessions.remove(sid)?;
        self.bytes -= sid.len() + snapshot.len() + SESSION_OVERHEAD;
        (expires > now).then_some(snapshot)
    }

    /// Forget `sid`.
    pub fn remove(&mut self, sid: &str) {
        if let Some((_, snapshot)) = self.sessions.remove(sid) {
            self.bytes -= sid.len() + snapshot.len() + SESSION_OVERHEAD;
        }
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Bytes held (as counted against the bound).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn remove_if(&mut self, sid: &str, at: Instant) {
        if self.sessions.get(sid).is_some_and(|(e, _)| *e == at) {
            self.remove(sid);
        }
    }

    fn expire(&mut self, now: Instant) {
        while self.order.front().is_some_and(|(at, _)| *at <= now) {
            let (at, sid) = self.order.pop_front().expect("checked");
            self.remove_if(&sid, at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire() {
        let mut store = SessionStore::new(1 << 20);
        store.save("a", "1".into(), Duration::from_millis(30));
        store.save("b", "2".into(), Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(store.take("a"), None);
        assert_eq!(store.take("b").as_deref(), Some(&b"2"[..]));
        assert_eq!((store.len(), store.bytes()), (0, 0));
    }

    #[test]
    fn saving_again_replaces_and_the_bound_drops_the_oldest() {
        let mut store = SessionStore::new(3 * (SESSION_OVERHEAD + 2 + 10));
        let ttl = Duration::from_secs(60);
        for i in 0..1000 {
            store.save("s0", format!("{i:010}").into(), ttl);
        }
        assert_eq!(store.len(), 1);
        assert!(store.order.len() < 200, "stale entries are compacted");
        for i in 1..5 {
            store.save(&format!("s{i}"), "0123456789".into(), ttl);
        }
        assert_eq!(store.len(), 3);
        assert_eq!(store.take("s0"), None);
        assert_eq!(store.take("s1"), None);
        assert!(store.take("s4").is_some());
        assert!(store.bytes() <= 3 * (SESSION_OVERHEAD + 2 + 10));
    }
}
