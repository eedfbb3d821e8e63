//! Stream history: every broadcast on a stream gets a [`Position`] (the
//! stream's epoch and an offset increasing by one per broadcast), and the
//! last messages of each stream are kept, bounded, so a client that
//! reconnects can get what it missed ([`PubSub::history`]).
//!
//! [`HistoryLog`] is the in-process store [`InMemory`] keeps; networked
//! backends keep theirs in the broker, so positions are assigned once per
//! broadcast whichever process publishes it.
//!
//! Bounds (see [`HistoryConfig`]): per stream the last
//! [`limit`](HistoryConfig::limit) messages (100) kept for
//! [`ttl`](HistoryConfig::ttl) (300 s); per process
//! [`max_bytes`](HistoryConfig::max_bytes) of messages (64 MiB), beyond
//! which the entries closest to expiry go first. An offset that was evicted
//! cannot be served: the request fails with [`HistoryError::Evicted`] and
//! the client learns it may have missed messages (`reject_history`).
//!
//! [`PubSub::history`]: super::PubSub::history
//! [`InMemory`]: super::InMemory

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// Where a broadcast sits in its stream: the history's epoch (it changes
/// when the history is lost, so old offsets cannot be mistaken for new
/// ones) and its offset (1 for the first broadcast of an epoch, then one
/// more per broadcast).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// The offset of the message in its stream.
    pub offset: u64,
    /// The epoch of the stream's history.
    pub epoch: Arc<str>,
}

/// What a history request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryFrom {
    /// The messages after `offset` of `epoch` (a position the client saw).
    After {
        /// The last offset the client saw.
        offset: u64,
        /// The epoch that offset belongs to.
        epoch: String,
    },
    /// The messages broadcast at or after this Unix time, in seconds.
    Since(u64),
}

/// A message of a stream's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Its position.
    pub position: Position,
    /// The message as broadcast.
    pub message: Bytes,
}

/// Why a history request cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// The backend keeps no history (or none for this stream).
    #[error("this pub/sub backend keeps no stream history")]
    Unsupported,
    /// The epoch is not the stream's current one: the history it belonged
    /// to is gone (expired, evicted, or lost with a broker restart).
    #[error("unknown epoch {0:?}")]
    UnknownEpoch(String),
    /// Messages after the given position were already evicted.
    #[error("the history no longer holds offset {0}")]
    Evicted(u64),
    /// The broker could not be asked.
    #[error("history unavailable: {0}")]
    Unavailable(String),
}

/// How much history a stream keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Messages kept per stream (0: no history, no positions).
    pub limit: usize,
    /// How long a message is kept.
    pub ttl: Duration,
}

/// History settings of a backend: defaults for every stream, overrides for
/// streams by name prefix, and a process-wide memory bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Messages kept per stream. Default 100 (AnyCable's default).
    pub limit: usize,
    /// How long a message is kept. Default 300 s.
    pub ttl: Duration,
    /// Bytes of messages (payloads plus 96 bytes of bookkeeping each) the
    /// whole history of a process may hold; over it, the entries closest to
    /// expiry are evicted first. Default 64 MiB.
    pub max_bytes: usize,
    /// Per-stream overrides: the first whose prefix starts the stream name
    /// wins.
    pub overrides: Vec<(String, HistoryLimits)>,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            limit: 100,
            ttl: Duration::from_secs(300),
            max_bytes: 64 * 1024 * 1024,
            overrides: Vec::new(),
        }
    }
}

impl HistoryConfig {
    /// No history at all: broadcasts carry no positions.
    pub fn off() -> Self {
        HistoryConfig {
            limit: 0,
            ..HistoryConfig::default()
        }
    }

    /// Streams whose name starts with `prefix` keep `limit` messages for
    /// `ttl` instead of the defaults (`limit` 0: no history for them).
    ///
    /// ```
    /// use std::time::Duration;
    /// use keayl_cable::pubsub::HistoryConfig;
    /// let config = HistoryConfig::default().with_stream_override("ticker:", 10, Duration::from_secs(5));
    /// assert_eq!(config.limits_for("ticker:eur").limit, 10);
    /// assert_eq!(config.limits_for("room:1").limit, 100);
    /// ```
    pub fn with_stream_override(
        mut self,
        prefix: impl Into<String>,
        limit: usize,
        ttl: Duration,
    ) -> Self {
        self.overrides
            .push((prefix.into(), HistoryLimits { limit, ttl }));
        self
    }

    /// The limits that apply to `stream` (none for Keayl's own transient
    /// streams, those of presence events and whispers:
    /// [`TRANSIENT_PREFIX`](crate::naming::TRANSIENT_PREFIX)).
    pub fn limits_for(&self, stream: &str) -> HistoryLimits {
        if stream.starts_with(crate::naming::TRANSIENT_PREFIX) {
            return HistoryLimits {
                limit: 0,
                ttl: Duration::ZERO,
            };
        }
        self.overrides
            .iter()
            .find(|(prefix, _)| stream.starts_with(prefix.as_str()))
            .map(|(_, l)| *l)
            .unwrap_or(HistoryLimits {
                limit: self.limit,
                ttl: self.ttl,
            })
    }

    /// Whether any stream keeps history.
    pub fn is_on(&self) -> bool {
        (self.limit > 0 && !self.ttl.is_zero())
            || self
                .overrides
                .iter()
                .any(|(_, l)| l.limit > 0 && !l.ttl.is_zero())
    }
}

/// Counters of a history store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryStats {
    /// Streams with a history (entries, or an epoch still remembered).
    pub streams: usize,
    /// Messages held.
    pub entries: usize,
    /// Bytes held (as counted against [`HistoryConfig::max_bytes`]).
    pub bytes: usize,
    /// Messages evicted before their time (over the per-stream limit or
    /// the process budget).
    pub evicted: u64,
}

/// Bookkeeping bytes counted per entry besides its payload.
const ENTRY_OVERHEAD: usize = 96;

/// The current Unix time in seconds (what `since` in history requests counts).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct Entry {
    offset: u64,
    unix: u64,
    expires: Instant,
    message: Bytes,
}

struct StreamLog {
    id: u64,
    epoch: Arc<str>,
    /// The offset the next broadcast gets.
    next: u64,
    ttl: Duration,
    limit: usize,
    entries: VecDeque<Entry>,
    /// When an empty log is forgotten (its epoch with it).
    forget_at: Instant,
    /// The key this log has in [`HistoryLog::due`].
    due: Instant,
}

impl StreamLog {
    fn next_due(&self) -> Instant {
        self.entries.front().map_or(self.forget_at, |e| e.expires)
    }
}

/// An in-process, bounded store of stream histories (what [`InMemory`]
/// keeps; a building block for other backends). Not synchronised: wrap it
/// in a lock.
///
/// ```
/// use bytes::Bytes;
/// use keayl_cable::pubsub::{HistoryConfig, HistoryFrom, HistoryLog};
///
/// let mut log = HistoryLog::new(HistoryConfig::default());
/// let first = log.append("room", Bytes::from_static(b"1")).unwrap();
/// log.append("room", Bytes::from_static(b"2"));
/// let missed = log.read("room", &HistoryFrom::After { offset: first.offset, epoch: first.epoch.to_string() }).unwrap();
/// assert_eq!(missed.len(), 1);
/// assert_eq!(missed[0].message, "2");
/// ```
///
/// [`InMemory`]: super::InMemory
pub struct HistoryLog {
    config: HistoryConfig,
    logs: HashMap<Arc<str>, StreamLog>,
    /// (next expiry or forget time, log id) → stream name.
    due: BTreeSet<(Instant, u64)>,
    names: HashMap<u64, Arc<str>>,
    bytes: usize,
    entries: usize,
    evicted: u64,
    next_id: u64,
    epoch_prefix: String,
}

/// Makes every process's epochs distinct.
fn epoch_prefix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut bytes = [0u8; 4];
    if getrandom::fill(&mut bytes).is_err() {
        // Distinct enough within the process; across processes the time
        // differs.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        bytes = nanos.to_le_bytes();
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}{n:x}", hex::encode(bytes))
}

impl std::fmt::Debug for HistoryLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryLog")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl HistoryLog {
    /// An empty store.
    pub fn new(config: HistoryConfig) -> Self {
        HistoryLog {
            config,
            logs: HashMap::new(),
            due: BTreeSet::new(),
            names: HashMap::new(),
            bytes: 0,
            entries: 0,
            evicted: 0,
            next_id: 0,
            epoch_prefix: epoch_prefix(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &HistoryConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> HistoryStats {
        HistoryStats {
            streams: self.logs.len(),
            entries: self.entries,
            bytes: self.bytes,
            evicted: self.evicted,
        }
    }

    /// Record a broadcast on `stream`: its position, or `None` when the
    /// stream keeps no history.
    pub fn append(&mut self, stream: &str, message: Bytes) -> Option<Position> {
        let now = Instant::now();
        self.expire(now);
        let limits = self.config.limits_for(stream);
        if limits.limit == 0 || limits.ttl.is_zero() {
            return None;
        }
        if !self.logs.contains_key(stream) {
            let id = self.next_id;
            self.next_id += 1;
            let name: Arc<str> = Arc::from(stream);
            let log = StreamLog {
                id,
                epoch: Arc::from(format!("{}-{id:x}", self.epoch_prefix)),
                next: 1,
                ttl: limits.ttl,
                limit: limits.limit,
                entries: VecDeque::new(),
                forget_at: now,
                due: now,
            };
            self.names.insert(id, name.clone());
            self.logs.insert(name, log);
        }
        let log = self.logs.get_mut(stream).expect("inserted above");
        let position = Position {
            offset: log.next,
            epoch: log.epoch.clone(),
        };
        log.next += 1;
        let size = message.len() + ENTRY_OVERHEAD;
        log.entries.push_back(Entry {
            offset: position.offset,
            unix: unix_now(),
            expires: now + log.ttl,
            message,
        });
        // An empty log is remembered one more TTL after its last message
        // expires, so a client that saw it can still be told "nothing new".
        log.forget_at = now + log.ttl * 2;
        self.bytes += size;
        self.entries += 1;
        let mut over = 0;
        while log.entries.len() > log.limit {
            let e = log.entries.pop_front().expect("over the limit");
            self.bytes -= e.message.len() + ENTRY_OVERHEAD;
            self.entries -= 1;
            over += 1;
        }
        self.evicted += over;
        let (id, old_due, new_due) = (log.id, log.due, log.next_due());
        log.due = new_due;
        self.due.remove(&(old_due, id));
        self.due.insert((new_due, id));
        self.enforce_budget();
        Some(position)
    }

    /// The messages of `stream` after a position or since a time, oldest
    /// first.
    pub fn read(
        &mut self,
        stream: &str,
        from: &HistoryFrom,
    ) -> Result<Vec<HistoryEntry>, HistoryError> {
        self.expire(Instant::now());
        let limits = self.config.limits_for(stream);
        let Some(log) = self.logs.get(stream) else {
            return match from {
                HistoryFrom::After { epoch, .. } => Err(HistoryError::UnknownEpoch(epoch.clone())),
                // Nothing was broadcast on it lately (or it keeps none).
                HistoryFrom::Since(_) if limits.limit > 0 => Ok(Vec::new()),
                HistoryFrom::Since(_) => Err(HistoryError::Unsupported),
            };
        };
        let entry = |e: &Entry| HistoryEntry {
            position: Position {
                offset: e.offset,
                epoch: log.epoch.clone(),
            },
            message: e.message.clone(),
        };
        match from {
            HistoryFrom::After { offset, epoch } => {
                if **epoch != *log.epoch || *offset >= log.next {
                    return Err(HistoryError::UnknownEpoch(epoch.clone()));
                }
                let first = log.entries.front().map_or(log.next, |e| e.offset);
                if offset + 1 < first {
                    return Err(HistoryError::Evicted(offset + 1));
                }
                let skip = (offset + 1 - first) as usize;
                Ok(log.entries.iter().skip(skip).map(entry).collect())
            }
            HistoryFrom::Since(since) => {
                let start = log.entries.partition_point(|e| e.unix < *since);
                Ok(log.entries.iter().skip(start).map(entry).collect())
            }
        }
    }

    /// Drop expired entries and forget logs empty for long enough.
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.due.first() {
            if at > now {
                break;
            }
            self.due.pop_first();
            let Some(name) = self.names.get(&id).cloned() else {
                continue;
            };
            let log = self.logs.get_mut(&name).expect("named logs exist");
            while log.entries.front().is_some_and(|e| e.expires <= now) {
                let e = log.entries.pop_front().expect("checked");
                self.bytes -= e.message.len() + ENTRY_OVERHEAD;
                self.entries -= 1;
            }
            if log.entries.is_empty() && log.forget_at <= now {
                self.logs.remove(&name);
                self.names.remove(&id);
                continue;
            }
            log.due = log.next_due();
            self.due.insert((log.due, id));
        }
    }

    /// Over the process budget: evict the entries closest to expiry.
    fn enforce_budget(&mut self) {
        let mut cursor = None;
        while self.bytes > self.config.max_bytes {
            let next = match cursor {
                None => self.due.first().copied(),
                Some(k) => self
                    .due
                    .range((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded))
                    .next()
                    .copied(),
            };
            let Some((at, id)) = next else { break };
            let name = self.names[&id].clone();
            let log = self.logs.get_mut(&name).expect("named logs exist");
            let Some(e) = log.entries.pop_front() else {
                // An empty, remembered log: nothing to free here.
                cursor = Some((at, id));
                continue;
            };
            self.bytes -= e.message.len() + ENTRY_OVERHEAD;
            self.entries -= 1;
            self.evicted += 1;
            self.due.remove(&(at, id));
            log.due = log.next_due();
            self.due.insert((log.due, id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(p: &Position) -> HistoryFrom {
        HistoryFrom::After {
            offset: p.offset,
            epoch: p.epoch.to_string(),
        }
    }

    fn messages(entries: &[HistoryEntry]) -> Vec<&[u8]> {
        entries.iter().map(|e| &e.message[..]).collect()
    }

    #[test]
    fn offsets_count_up_per_stream() {
        let mut log = HistoryLog::new(HistoryConfig::default());
        let a1 = log.append("a", "1".into()).unwrap();
        let b1 = log.append("b", "x".into()).unwrap();
        let a2 = log.append("a", "2".into()).unwrap();
        assert_eq!((a1.offset, a2.offset, b1.offset), (1, 2, 1));
        assert_eq!(a1.epoch, a2.epoch);
        assert_ne!(a1.epoch, b1.epoch, "epochs are per stream log");
        assert_eq!(messages(&log.read("a", &after(&a1)).unwrap()), [b"2"]);
        assert!(log.read("a", &after(&a2)).unwrap().is_empty());
        assert_eq!(log.stats().entries, 3);
    }

    #[test]
    fn wrong_epochs_and_future_offsets_are_refused() {
        let mut log = HistoryLog::new(HistoryConfig::default());
        let p = log.append("a", "1".into()).unwrap();
        let wrong = HistoryFrom::After {
            offset: 1,
            epoch: "nope".into(),
        };
        assert!(matches!(
            log.read("a", &wrong),
            Err(HistoryError::UnknownEpoch(_))
        ));
        let future = HistoryFrom::After {
            offset: 5,
            epoch: p.epoch.to_string(),
        };
        assert!(matches!(
            log.read("a", &future),
            Err(HistoryError::UnknownEpoch(_))
        ));
        assert!(matches!(
            log.read("unknown", &after(&p)),
            Err(HistoryError::UnknownEpoch(_))
        ));
        assert_eq!(log.read("unknown", &HistoryFrom::Since(0)), Ok(Vec::new()));
    }

    #[test]
    fn the_limit_evicts_the_oldest_and_evicted_offsets_are_refused() {
        let mut log = HistoryLog::new(HistoryConfig {
            limit: 3,
            ..HistoryConfig::default()
        });
        let first = log.append("a", "1".into()).unwrap();
        let second = log.append("a", "2".into()).unwrap();
        for m in ["3", "4", "5"] {
            log.append("a", m.into());
        }
        assert_eq!(log.stats().entries, 3);
        assert_eq!(log.stats().evicted, 2);
        // After offset 1, offset 2 is needed: gone.
        assert_eq!(log.read("a", &after(&first)), Err(HistoryError::Evicted(2)));
        // After offset 2, offsets 3.. are all there.
        assert_eq!(
            messages(&log.read("a", &after(&second)).unwrap()),
            [b"3", b"4", b"5"]
        );
    }

    #[test]
    fn since_selects_by_time() {
        let mut log = HistoryLog::new(HistoryConfig::default());
        log.append("a", "1".into());
        log.append("a", "2".into());
        assert_eq!(log.read("a", &HistoryFrom::Since(0)).unwrap().len(), 2);
        let later = unix_now() + 10;
        assert!(
            log.read("a", &HistoryFrom::Since(later))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn entries_expire_then_the_epoch_is_forgotten() {
        let ttl = Duration::from_millis(40);
        let mut log = HistoryLog::new(HistoryConfig {
            ttl,
            ..HistoryConfig::default()
        });
        let p = log.append("a", "1".into()).unwrap();
        std::thread::sleep(ttl + Duration::from_millis(10));
        // Expired, but the epoch is remembered: nothing missed.
        assert_eq!(log.read("a", &after(&p)), Ok(Vec::new()));
        assert_eq!(log.stats().entries, 0);
        assert_eq!(log.stats().bytes, 0);
        std::thread::sleep(ttl * 2);
        assert!(matches!(
            log.read("a", &after(&p)),
            Err(HistoryError::UnknownEpoch(_))
        ));
        assert_eq!(log.stats().streams, 0);
        // A new log, a new epoch: the old offsets cannot be confused.
        let q = log.append("a", "2".into()).unwrap();
        assert_eq!(q.offset, 1);
        assert_ne!(q.epoch, p.epoch);
    }

    #[test]
    fn the_process_budget_evicts_across_streams() {
        let mut log = HistoryLog::new(HistoryConfig {
            max_bytes: 10 * (ENTRY_OVERHEAD + 100),
            ..HistoryConfig::default()
        });
        let payload = Bytes::from(vec![b'x'; 100]);
        for i in 0..50 {
            log.append(&format!("s{}", i % 5), payload.clone());
        }
        let stats = log.stats();
        assert!(stats.bytes <= 10 * (ENTRY_OVERHEAD + 100), "{stats:?}");
        assert_eq!(stats.entries, 10);
        assert_eq!(stats.evicted, 40);
    }

    #[test]
    fn overrides_by_prefix() {
        let mut log = HistoryLog::new(
            HistoryConfig::default()
                .with_stream_override("none:", 0, Duration::from_secs(1))
                .with_stream_override("short:", 1, Duration::from_secs(60)),
        );
        assert_eq!(log.append("none:1", "1".into()), None);
        assert_eq!(
            log.read("none:1", &HistoryFrom::Since(0)),
            Err(HistoryError::Unsupported)
        );
        log.append("short:1", "1".into());
        log.append("short:1", "2".into());
        assert_eq!(
            messages(&log.read("short:1", &HistoryFrom::Since(0)).unwrap()),
            [b"2"]
        );
        assert!(!HistoryConfig::off().is_on());
        assert!(HistoryConfig::default().is_on());
    }
}
