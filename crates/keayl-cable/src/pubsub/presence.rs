//! Presence: who is on a stream right now (extended protocol).
//!
//! A *presence set* belongs to a stream. Each joined subscription is a
//! *session* in it, under a *presence id* (a user id, say) with some *info*
//! (JSON). One id may have many sessions (tabs, devices): the id joins when
//! its first session does and leaves when its last one is gone. Sessions of
//! live connections are touched by their process; a session no longer
//! touched (its connection closed, or its process died) expires after the
//! presence TTL, so a page reload does not make its user flicker out and
//! back in.
//!
//! A backend keeps presence where its broadcasts travel (in process for
//! [`InMemory`](super::InMemory), in the broker for networked ones), so
//! every process sees the same set. [`PresenceStore`] is the in-process
//! store.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;

/// One member of a presence set: its id and the info it joined with (JSON
/// text; `null` when it gave none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceMember {
    /// The presence id (unique within the stream).
    pub id: String,
    /// The info of its latest join, as JSON text.
    pub info: Bytes,
}

/// A stream's presence set, as [`PubSub::presence_info`](super::PubSub::presence_info)
/// reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceSet {
    /// Distinct presence ids.
    pub total: usize,
    /// The members, in the order they joined.
    pub members: Vec<PresenceMember>,
}

/// What a join changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceJoined {
    /// The id had no session before: every subscriber of the presence
    /// stream is told it joined.
    pub joined: bool,
    /// The session was joined before under another id, which had no other
    /// session: that id left.
    pub left: Option<String>,
}

/// A presence id that left a stream because its last session expired
/// (see [`PubSub::presence_reap`](super::PubSub::presence_reap)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceLeft {
    /// The stream.
    pub stream: String,
    /// The id that left.
    pub id: String,
}

/// Bounds of a presence set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceLimits {
    /// How long a session lasts without being touched.
    pub ttl: Duration,
    /// Distinct ids one stream may hold; a join of a new id beyond it fails
    /// with [`PresenceError::Full`].
    pub max_members: usize,
}

/// Errors of presence operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PresenceError {
    /// The backend keeps no presence.
    #[error("this pub/sub backend keeps no presence")]
    Unsupported,
    /// The stream's presence set holds its maximum of distinct ids.
    #[error("the presence set is full ({0} members)")]
    Full(usize),
    /// The broker cannot be reached or refused the operation.
    #[error("presence unavailable: {0}")]
    Unavailable(String),
}

/// The sessions and members of one stream.
#[derive(Debug, Default)]
struct StreamPresence {
    /// Session → (its id, when it expires).
    sessions: HashMap<Box<str>, (Box<str>, Instant)>,
    /// Id → (sessions under it, latest info, join order).
    members: HashMap<Box<str>, (usize, Bytes, u64)>,
}

/// An in-process presence store (what [`InMemory`](super::InMemory)
/// keeps). Not synchronised: wrap it in a lock.
///
/// ```
/// use std::time::Duration;
/// use keayl_cable::pubsub::{PresenceLimits, PresenceStore};
///
/// let limits = PresenceLimits { ttl: Duration::from_secs(15), max_members: 100 };
/// let mut store = PresenceStore::default();
/// // Two tabs of user 42: one join.
/// assert!(store.join("room", "tab-1", "42", "{\"name\":\"Jack\"}".into(), limits).unwrap().joined);
/// assert!(!store.join("room", "tab-2", "42", "{\"name\":\"Jack\"}".into(), limits).unwrap().joined);
/// // The first tab closes: 42 is still there.
/// assert_eq!(store.leave("room", "tab-1"), None);
/// assert_eq!(store.info("room").total, 1);
/// // The last one goes: 42 left.
/// assert_eq!(store.leave("room", "tab-2").as_deref(), Some("42"));
/// ```
#[derive(Debug, Default)]
pub struct PresenceStore {
    streams: HashMap<Box<str>, StreamPresence>,
    joins: u64,
}

impl PresenceStore {
    /// Join `session` to `stream` as `id` with `info` (a session joined
    /// again updates its info, or moves to a new id).
    pub fn join(
        &mut self,
        stream: &str,
        session: &str,
        id: &str,
        info: Bytes,
        limits: PresenceLimits,
    ) -> Result<PresenceJoined, PresenceError> {
        let expires = Instant::now() + limits.ttl;
        let set = self.streams.entry(stream.into()).or_default();
        let previous = set.sessions.get(session).map(|(i, _)| i.clone());
        if previous.as_deref() != Some(id)
            && !set.members.contains_key(id)
            && set.members.len() >= limits.max_members
        {
            if set.sessions.is_empty() {
                self.streams.remove(stream);
            }
            return Err(PresenceError::Full(limits.max_members));
        }
        let mut outcome = PresenceJoined::default();
        if let Some(previous) = &previous
            && **previous != *id
        {
            set.sessions.remove(session);
            outcome.left = release(set, previous);
        }
        if previous.as_deref() == Some(id) {
            set.sessions.insert(session.into(), (id.into(), expires));
            if let Some(m) = set.members.get_mut(id) {
                m.1 = info;
            }
            return Ok(outcome);
        }
        set.sessions.insert(session.into(), (id.into(), expires));
        match set.members.get_mut(id) {
            Some(m) => {
                m.0 += 1;
                m.1 = info;
            }
            None => {
                self.joins += 1;
                set.members.insert(id.into(), (1, info, self.joins));
                outcome.joined = true;
            }
        }
        Ok(outcome)
    }

    /// Remove `session` from `stream`: the id it was under, if that was the
    /// id's last session (the id left).
    pub fn leave(&mut self, stream: &str, session: &str) -> Option<String> {
        let set = self.streams.get_mut(stream)?;
        let (id, _) = set.sessions.remove(session)?;
        let left = release(set, &id);
        if set.sessions.is_empty() {
            self.streams.remove(stream);
        }
        left
    }

    /// Keep `sessions` of `stream` for another `ttl`; returns those it does
    /// not have.
    pub fn touch<'s>(
        &mut self,
        stream: &str,
        sessions: impl IntoIterator<Item = &'s str>,
        ttl: Duration,
    ) -> Vec<String> {
        let Some(set) = self.streams.get_mut(stream) else {
            return sessions.into_iter().map(str::to_owned).collect();
        };
        let expires = Instant::now() + ttl;
        let mut missing = Vec::new();
        for session in sessions {
            match set.sessions.get_mut(session) {
                Some(s) => s.1 = expires,
                None => missing.push(session.to_owned()),
            }
        }
        missing
    }

    /// The presence set of `stream`.
    pub fn info(&self, stream: &str) -> PresenceSet {
        let Some(set) = self.streams.get(stream) else {
            return PresenceSet::default();
        };
        let mut members: Vec<_> = set.members.iter().collect();
        members.sort_by_key(|(_, (_, _, order))| *order);
        PresenceSet {
            total: members.len(),
            members: members
                .into_iter()
                .map(|(id, (_, info, _))| PresenceMember {
                    id: id.to_string(),
                    info: info.clone(),
                })
                .collect(),
        }
    }

    /// Remove the sessions expired at `now` (tokio's clock, which tests
    /// can pause): the ids that left with them.
    pub fn reap(&mut self, now: Instant) -> Vec<PresenceLeft> {
        let mut left = Vec::new();
        self.streams.retain(|stream, set| {
            let expired: Vec<Box<str>> = set
                .sessions
                .iter()
                .filter(|(_, (_, at))| *at <= now)
                .map(|(s, _)| s.clone())
                .collect();
            for session in expired {
                if let Some((id, _)) = set.sessions.remove(&session)
                    && let Some(id) = release(set, &id)
                {
                    left.push(PresenceLeft {
                        stream: stream.to_string(),
                        id,
                    });
                }
            }
            !set.sessions.is_empty()
        });
        left
    }

    /// Sessions held, over every stream.
    pub fn sessions(&self) -> usize {
        self.streams.values().map(|s| s.sessions.len()).sum()
    }
}

/// One session of `id` is gone: `Some(id)` when it was the last.
fn release(set: &mut StreamPresence, id: &str) -> Option<String> {
    let m = set.members.get_mut(id)?;
    m.0 -= 1;
    if m.0 == 0 {
        set.members.remove(id);
        Some(id.to_owned())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PresenceLimits = PresenceLimits {
        ttl: Duration::from_secs(15),
        max_members: 3,
    };

    #[test]
    fn a_session_rejoining_under_another_id_moves() {
        let mut s = PresenceStore::default();
        assert!(s.join("r", "a", "1", "null".into(), LIMITS).unwrap().joined);
        let moved = s.join("r", "a", "2", "null".into(), LIMITS).unwrap();
        assert_eq!(
            moved,
            PresenceJoined {
                joined: true,
                left: Some("1".into())
            }
        );
        assert_eq!(s.info("r").total, 1);
        assert_eq!(s.info("r").members[0].id, "2");
    }

    #[test]
    fn rejoining_updates_the_info_without_a_join() {
        let mut s = PresenceStore::default();
        s.join("r", "a", "1", "{\"v\":1}".into(), LIMITS).unwrap();
        let again = s.join("r", "a", "1", "{\"v\":2}".into(), LIMITS).unwrap();
        assert_eq!(again, PresenceJoined::default());
        assert_eq!(&s.info("r").members[0].info[..], b"{\"v\":2}");
        assert_eq!(s.sessions(), 1);
    }

    #[test]
    fn full_sets_refuse_new_ids_only() {
        let mut s = PresenceStore::default();
        for (i, id) in ["1", "2", "3"].iter().enumerate() {
            s.join("r", &format!("s{i}"), id, "null".into(), LIMITS)
                .unwrap();
        }
        assert_eq!(
            s.join("r", "s9", "4", "null".into(), LIMITS),
            Err(PresenceError::Full(3))
        );
        // Another session of a present id is fine.
        assert!(
            !s.join("r", "s8", "1", "null".into(), LIMITS)
                .unwrap()
                .joined
        );
        // Another stream is not affected.
        assert!(
            s.join("q", "s9", "4", "null".into(), LIMITS)
                .unwrap()
                .joined
        );
    }

    #[test]
    fn expired_sessions_leave_once_per_id_and_touch_keeps_them() {
        let mut s = PresenceStore::default();
        let short = PresenceLimits {
            ttl: Duration::from_millis(0),
            ..LIMITS
        };
        s.join("r", "a", "1", "null".into(), short).unwrap();
        s.join("r", "b", "1", "null".into(), short).unwrap();
        s.join("r", "c", "2", "null".into(), LIMITS).unwrap();
        assert!(s.touch("r", ["b"], Duration::from_secs(60)).is_empty());
        let later = Instant::now() + Duration::from_millis(1);
        assert_eq!(s.reap(later), vec![]);
        assert_eq!(s.info("r").total, 2);
        let much_later = Instant::now() + Duration::from_secs(61);
        let mut left = s.reap(much_later);
        left.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(left.len(), 2);
        assert_eq!((left[0].id.as_str(), left[1].id.as_str()), ("1", "2"));
        assert_eq!(s.info("r"), PresenceSet::default());
        assert_eq!(s.sessions(), 0);
    }

    #[test]
    fn unknown_sessions_and_streams_are_ignored() {
        let mut s = PresenceStore::default();
        assert_eq!(s.leave("r", "x"), None);
        assert_eq!(s.touch("r", ["x"], LIMITS.ttl), ["x"]);
        assert_eq!(s.info("r").total, 0);
    }
}
