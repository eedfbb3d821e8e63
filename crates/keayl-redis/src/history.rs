//! Stream history and session snapshots kept in Redis: the keys, the two
//! Lua scripts (append + publish, read), the positioned frame on the pub/sub
//! channel, and the decoding of what Redis answers. See the crate docs
//! ("Reliable streams") for the design.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use keayl_cable::pubsub::{HistoryConfig, HistoryEntry, HistoryError, HistoryFrom, Position};
use redis::aio::MultiplexedConnection;
use redis::{ErrorKind, RedisResult, ServerErrorKind, Value};

/// Suffix of the Redis Stream holding a stream's last messages.
pub(crate) const HIST_SUFFIX: &str = ":keayl:hist";
/// Suffix of the counter of a stream's last offset.
pub(crate) const SEQ_SUFFIX: &str = ":keayl:seq";
/// Suffix of the key holding a stream's epoch.
pub(crate) const EPOCH_SUFFIX: &str = ":keayl:epoch";
/// What a session key starts with (after the channel prefix).
pub(crate) const SESSION_INFIX: &str = "keayl:session:";

/// The header of a positioned message on a pub/sub channel:
/// `\x1ekeayl1 <offset> <epoch>\x1e<message>`. A JSON text cannot start
/// with the record separator (only with whitespace, `{`, `[`, `"`, a digit,
/// `-`, `t`, `f` or `n`), so a raw message (a Rails process's broadcast)
/// is never taken for a frame.
pub(crate) const FRAME_MAGIC: &[u8] = b"\x1ekeayl1 ";
const FRAME_END: u8 = 0x1e;
/// Longest offset (`u64::MAX` has 20 digits) and epoch a header may hold.
const MAX_OFFSET_DIGITS: usize = 20;
const MAX_EPOCH_LEN: usize = 128;

/// Streams Keayl never keeps history for: Action Cable's internal channels
/// (`action_cable/<connection identifier>`, remote disconnects). Nobody
/// asks for their history, and keeping them raw keeps
/// `ActionCable.server.remote_connections` working between Rails and Keayl
/// in both directions.
const INTERNAL_PREFIX: &str = "action_cable/";

/// The history bounds of one stream as the scripts take them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    /// Messages kept (`MAXLEN`).
    pub limit: u64,
    /// How long a message is kept, in milliseconds (at least 1).
    pub ttl_ms: u64,
}

/// The bounds of `stream`, `None` when it keeps no history (then it is
/// published raw, as without history).
pub(crate) fn bounds(config: &HistoryConfig, stream: &str) -> Option<Bounds> {
    if stream.starts_with(INTERNAL_PREFIX) {
        return None;
    }
    let limits = config.limits_for(stream);
    if limits.limit == 0 || limits.ttl.is_zero() {
        return None;
    }
    Some(Bounds {
        limit: (limits.limit as u64).min(i64::MAX as u64),
        ttl_ms: millis(limits.ttl),
    })
}

/// `d` in whole milliseconds, rounded up, at least 1, at most ~100 years
/// (Redis refuses expiry times that overflow).
pub(crate) fn millis(d: Duration) -> u64 {
    const MAX: u64 = 100 * 365 * 24 * 3600 * 1000;
    let ms = d.as_micros().div_ceil(1000);
    (ms as u64).clamp(1, MAX)
}

/// The three keys of a stream's history, derived from its pub/sub channel
/// (the prefixed stream name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keys {
    pub hist: String,
    pub seq: String,
    pub epoch: String,
}

impl Keys {
    pub(crate) fn of(channel: &str) -> Self {
        Keys {
            hist: format!("{channel}{HIST_SUFFIX}"),
            seq: format!("{channel}{SEQ_SUFFIX}"),
            epoch: format!("{channel}{EPOCH_SUFFIX}"),
        }
    }

    fn as_args(&self) -> [&[u8]; 3] {
        [
            self.hist.as_bytes(),
            self.seq.as_bytes(),
            self.epoch.as_bytes(),
        ]
    }
}

/// Whether a session id could name a history key: the session key of `sid`
/// is `<prefix>:keayl:session:<sid>`, which is the history key of stream
/// `keayl:session:<x>` when `sid` is `<x>:keayl:hist` (or `seq`, `epoch`).
/// Keayl's own ids are hex; such an id can only come from a client, and is
/// never looked up.
pub(crate) fn is_reserved_sid(sid: &str) -> bool {
    [HIST_SUFFIX, SEQ_SUFFIX, EPOCH_SUFFIX]
        .iter()
        .any(|s| sid.ends_with(s))
}

/// A fresh epoch candidate: 64 random bits of this process (from the
/// standard library's OS-seeded hasher keys) and a counter, hex. The
/// broadcast script stores it only when the stream has no epoch.
pub(crate) fn new_epoch() -> String {
    use std::hash::{BuildHasher, Hasher};
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        h.write_u128(now);
        h.finish()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{seed:016x}{n:x}")
}

/// The message and its position when `payload` is a positioned frame;
/// otherwise (a raw message, a malformed frame) `payload` whole, without a
/// position.
pub(crate) fn unframe(payload: Bytes) -> (Bytes, Option<Position>) {
    match parse_header(&payload) {
        Some((offset, epoch, start)) => {
            let position = Position {
                offset,
                epoch: Arc::from(epoch),
            };
            (payload.slice(start..), Some(position))
        }
        None => (payload, None),
    }
}

/// `(offset, epoch, where the message starts)` of a frame's header.
fn parse_header(payload: &[u8]) -> Option<(u64, &str, usize)> {
    let rest = payload.strip_prefix(FRAME_MAGIC)?;
    let space = rest
        .iter()
        .take(MAX_OFFSET_DIGITS + 1)
        .position(|&b| b == b' ')?;
    let digits = &rest[..space];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let offset: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let rest = &rest[space + 1..];
    let end = rest
        .iter()
        .take(MAX_EPOCH_LEN + 1)
        .position(|&b| b == FRAME_END)?;
    let epoch = std::str::from_utf8(&rest[..end]).ok()?;
    if offset == 0 || epoch.is_empty() || epoch.contains(' ') {
        return None;
    }
    Some((offset, epoch, FRAME_MAGIC.len() + space + 1 + end + 1))
}

/// A Lua script run with `EVALSHA`, falling back to `EVAL` (which caches it
/// again in Redis) when Redis does not know it (`NOSCRIPT`: after a
/// restart or `SCRIPT FLUSH`) or before its hash is known. The hash is the
/// one Redis returned for `SCRIPT LOAD` on a fresh connection.
#[derive(Debug)]
pub(crate) struct LuaScript {
    code: &'static str,
    sha: OnceLock<String>,
}

impl LuaScript {
    pub(crate) const fn new(code: &'static str) -> Self {
        LuaScript {
            code,
            sha: OnceLock::new(),
        }
    }

    fn invocation(&self, head: &str, body: &str, keys: &[&[u8]], args: &[&[u8]]) -> redis::Cmd {
        let mut cmd = redis::cmd(head);
        cmd.arg(body).arg(keys.len());
        for k in keys {
            cmd.arg(*k);
        }
        for a in args {
            cmd.arg(*a);
        }
        cmd
    }

    /// Run it: one round trip (two after a `NOSCRIPT`).
    pub(crate) async fn run(
        &self,
        conn: &mut MultiplexedConnection,
        keys: &[&[u8]],
        args: &[&[u8]],
    ) -> RedisResult<Value> {
        if let Some(sha) = self.sha.get() {
            match self
                .invocation("EVALSHA", sha, keys, args)
                .query_async(conn)
                .await
            {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {}
                result => return result,
            }
        }
        self.invocation("EVAL", self.code, keys, args)
            .query_async(conn)
            .await
    }
}

/// Appends a broadcast to its stream's history and publishes it, framed
/// with its position, in one atomic step.
///
/// KEYS: history stream, offset counter, epoch. ARGV: epoch to create when
/// there is none (or no counter), limit, ttl (ms), message, pub/sub
/// channel. Returns the offset.
pub(crate) static PUBLISH: LuaScript = LuaScript::new(
    r#"
local epoch = redis.call('GET', KEYS[3])
if not epoch or redis.call('EXISTS', KEYS[2]) == 0 then
  -- A new history (none yet, expired, lost with a restart, or its counter
  -- evicted under maxmemory: offsets are never reused within an epoch).
  epoch = ARGV[1]
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('SET', KEYS[3], epoch)
end
local offset = redis.call('INCR', KEYS[2])
local ttl = tonumber(ARGV[3])
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local o = string.format('%d', offset)
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '*', 'o', o, 'm', ARGV[4])
redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d', math.max(now_ms - ttl, 0)))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], string.format('%d', 2 * ttl))
redis.call('PEXPIRE', KEYS[3], string.format('%d', 2 * ttl))
redis.call('PUBLISH', ARGV[5], '\30keayl1 ' .. o .. ' ' .. epoch .. '\30' .. ARGV[4])
return offset
"#,
);

/// Reads a stream's history: `{}` when it has no epoch, else
/// `{epoch, last offset, entries}`, the entries newer than the ttl (by the
/// server's clock): for `after`, the newest `last - offset` of them, newest
/// first (none when the epoch differs or the offset is not behind); for
/// `since`, those at or after that time (ms), oldest first.
///
/// KEYS: as [`PUBLISH`]. ARGV: `after` or `since`, offset or Unix time
/// (ms), ttl (ms), the client's epoch (for `after`).
pub(crate) static READ: LuaScript = LuaScript::new(
    r#"
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  return {}
end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local now = redis.call('TIME')
local min = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[3])
if min < 0 then
  min = 0
end
local entries = {}
if ARGV[1] == 'after' then
  local after = tonumber(ARGV[2])
  if ARGV[4] == epoch and after < last then
    entries = redis.call('XREVRANGE', KEYS[1], '+', string.format('%d', min),
      'COUNT', string.format('%d', last - after))
  end
else
  local since = tonumber(ARGV[2])
  if since > min then
    min = since
  end
  entries = redis.call('XRANGE', KEYS[1], string.format('%d', min), '+')
end
return {epoch, last, entries}
"#,
);

/// Load every script (history and presence) on a fresh connection (one
/// round trip), so broadcasts use `EVALSHA` from the first.
pub(crate) async fn load_scripts(conn: &mut MultiplexedConnection) -> RedisResult<()> {
    let scripts: Vec<&LuaScript> = [&PUBLISH, &READ]
        .into_iter()
        .chain(crate::presence::SCRIPTS)
        .collect();
    let mut pipe = redis::pipe();
    for script in &scripts {
        pipe.cmd("SCRIPT").arg("LOAD").arg(script.code);
    }
    let shas: Vec<String> = pipe.query_async(conn).await?;
    for (script, sha) in scripts.into_iter().zip(shas) {
        let _ = script.sha.set(sha);
    }
    Ok(())
}

/// Run [`PUBLISH`] for `message` on `channel`.
pub(crate) async fn publish(
    conn: &mut MultiplexedConnection,
    channel: &str,
    bounds: Bounds,
    message: &[u8],
) -> RedisResult<Value> {
    let keys = Keys::of(channel);
    let epoch = new_epoch();
    let limit = bounds.limit.to_string();
    let ttl = bounds.ttl_ms.to_string();
    PUBLISH
        .run(
            conn,
            &keys.as_args(),
            &[
                epoch.as_bytes(),
                limit.as_bytes(),
                ttl.as_bytes(),
                message,
                channel.as_bytes(),
            ],
        )
        .await
}

/// Run [`READ`] for `from` on `channel`.
pub(crate) async fn read(
    conn: &mut MultiplexedConnection,
    channel: &str,
    bounds: Bounds,
    from: &HistoryFrom,
) -> RedisResult<Value> {
    let keys = Keys::of(channel);
    let ttl = bounds.ttl_ms.to_string();
    let (mode, at, epoch) = match from {
        HistoryFrom::After { offset, epoch } => ("after", offset.to_string(), epoch.as_str()),
        // Within Lua's exact integers (a time that far ahead selects nothing).
        HistoryFrom::Since(secs) => (
            "since",
            secs.saturating_mul(1000).min(1 << 53).to_string(),
            "",
        ),
    };
    READ.run(
        conn,
        &keys.as_args(),
        &[
            mode.as_bytes(),
            at.as_bytes(),
            ttl.as_bytes(),
            epoch.as_bytes(),
        ],
    )
    .await
}

fn malformed(what: &str) -> HistoryError {
    HistoryError::Unavailable(format!("unexpected history reply from Redis: {what}"))
}

fn int_of(v: &Value) -> Option<u64> {
    match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// One stream entry, `[id, [field, value, …]]`: its offset and message.
fn entry_of(v: Value, epoch: &Arc<str>) -> Result<HistoryEntry, HistoryError> {
    let Value::Array(parts) = v else {
        return Err(malformed("an entry is not an array"));
    };
    let Some(Value::Array(fields)) = parts.into_iter().nth(1) else {
        return Err(malformed("an entry has no fields"));
    };
    let (mut offset, mut message) = (None, None);
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        match (name, value) {
            (Value::BulkString(n), v) if n == b"o" => offset = int_of(&v),
            (Value::BulkString(n), Value::BulkString(m)) if n == b"m" => {
                message = Some(Bytes::from(m));
            }
            _ => {}
        }
    }
    match (offset, message) {
        (Some(offset), Some(message)) => Ok(HistoryEntry {
            position: Position {
                offset,
                epoch: epoch.clone(),
            },
            message,
        }),
        _ => Err(malformed("an entry lacks its offset or message")),
    }
}

/// What a history request gets, from [`READ`]'s reply.
pub(crate) fn decode_read(
    reply: Value,
    from: &HistoryFrom,
) -> Result<Vec<HistoryEntry>, HistoryError> {
    let Value::Array(parts) = reply else {
        return Err(malformed("not an array"));
    };
    if parts.is_empty() {
        // No epoch: nothing was broadcast on the stream lately (or Redis
        // lost it, restarted without persistence).
        return match from {
            HistoryFrom::After { epoch, .. } => Err(HistoryError::UnknownEpoch(epoch.clone())),
            HistoryFrom::Since(_) => Ok(Vec::new()),
        };
    }
    let mut parts = parts.into_iter();
    let (Some(Value::BulkString(epoch)), Some(last), Some(Value::Array(entries))) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("not [epoch, offset, entries]"));
    };
    let epoch: Arc<str> =
        Arc::from(std::str::from_utf8(&epoch).map_err(|_| malformed("the epoch is not UTF-8"))?);
    let last = int_of(&last).ok_or_else(|| malformed("the offset is not a number"))?;
    match from {
        HistoryFrom::After {
            offset,
            epoch: wanted,
        } => {
            if **wanted != *epoch || *offset > last {
                return Err(HistoryError::UnknownEpoch(wanted.clone()));
            }
            let missed = last - offset;
            let mut got = entries
                .into_iter()
                .map(|e| entry_of(e, &epoch))
                .collect::<Result<Vec<_>, _>>()?;
            got.reverse();
            let complete = got.len() as u64 == missed
                && got.first().is_none_or(|e| e.position.offset == offset + 1);
            if !complete {
                return Err(HistoryError::Evicted(offset + 1));
            }
            Ok(got)
        }
        HistoryFrom::Since(_) => entries.into_iter().map(|e| entry_of(e, &epoch)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(id: &str, offset: u64, message: &str) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(vec![
                bulk("o"),
                bulk(&offset.to_string()),
                bulk("m"),
                bulk(message),
            ]),
        ])
    }

    fn after(offset: u64, epoch: &str) -> HistoryFrom {
        HistoryFrom::After {
            offset,
            epoch: epoch.into(),
        }
    }

    #[test]
    fn frames_round_trip_and_raw_messages_pass() {
        let (m, p) = unframe(Bytes::from_static(b"\x1ekeayl1 42 abc1\x1e{\"a\":1}"));
        assert_eq!(&m[..], b"{\"a\":1}");
        let p = p.unwrap();
        assert_eq!((p.offset, &*p.epoch), (42, "abc1"));
        // The message after the header is opaque, separators included.
        let (m, p) = unframe(Bytes::from_static(b"\x1ekeayl1 1 e\x1e\x1ekeayl1 2 f\x1e"));
        assert_eq!(&m[..], b"\x1ekeayl1 2 f\x1e");
        assert_eq!(p.unwrap().offset, 1);
        let (m, p) = unframe(Bytes::from_static(b"\x1ekeayl1 7 e\x1e"));
        assert!(m.is_empty());
        assert_eq!(p.unwrap().offset, 7);
        for raw in [
            &b"{\"from\":\"rails\"}"[..],
            b"",
            b"\x1e",
            b"\x1ekeayl1 ",
            b"\x1ekeayl1 x e\x1emsg",
            b"\x1ekeayl1 +1 e\x1emsg",
            b"\x1ekeayl1 0 e\x1emsg",
            b"\x1ekeayl1 1  \x1emsg",
            b"\x1ekeayl1 1 \x1emsg",
            b"\x1ekeayl1 1 e",
            b"\x1ekeayl1 99999999999999999999999 e\x1emsg",
            b"\x1ekeayl1 1 \xff\x1emsg",
            b"\x1ekeayl2 1 e\x1emsg",
        ] {
            let (m, p) = unframe(Bytes::copy_from_slice(raw));
            assert_eq!(&m[..], raw, "{raw:?}");
            assert_eq!(p, None, "{raw:?}");
        }
        let long = [FRAME_MAGIC, b"1 ", &[b'e'; 200], b"\x1emsg"].concat();
        assert_eq!(unframe(Bytes::from(long)).1, None);
    }

    #[test]
    fn epochs_differ() {
        let a = new_epoch();
        let b = new_epoch();
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
    }

    #[test]
    fn keys_and_bounds() {
        let k = Keys::of("app:room:1");
        assert_eq!(k.hist, "app:room:1:keayl:hist");
        assert_eq!(k.seq, "app:room:1:keayl:seq");
        assert_eq!(k.epoch, "app:room:1:keayl:epoch");
        let config =
            HistoryConfig::default().with_stream_override("none:", 0, Duration::from_secs(1));
        assert_eq!(
            bounds(&config, "room"),
            Some(Bounds {
                limit: 100,
                ttl_ms: 300_000
            })
        );
        assert_eq!(bounds(&config, "none:x"), None);
        assert_eq!(bounds(&config, "action_cable/alice"), None);
        assert_eq!(bounds(&HistoryConfig::off(), "room"), None);
        let zero_ttl = HistoryConfig {
            ttl: Duration::ZERO,
            ..HistoryConfig::default()
        };
        assert_eq!(bounds(&zero_ttl, "room"), None);
        assert_eq!(millis(Duration::from_micros(1)), 1);
        assert_eq!(millis(Duration::from_micros(1500)), 2);
        assert!(millis(Duration::MAX) < i64::MAX as u64 / 2);
        assert!(is_reserved_sid("x:keayl:epoch"));
        assert!(!is_reserved_sid("0123abcd"));
    }

    #[test]
    fn reads_after_a_position() {
        let reply = |entries: Vec<Value>| {
            Value::Array(vec![bulk("ep"), Value::Int(5), Value::Array(entries)])
        };
        // Newest first, as XREVRANGE answers.
        let full = reply(vec![entry("3-0", 5, "e"), entry("2-0", 4, "d")]);
        let got = decode_read(full, &after(3, "ep")).unwrap();
        let offsets: Vec<u64> = got.iter().map(|e| e.position.offset).collect();
        assert_eq!(offsets, [4, 5]);
        assert_eq!(&got[0].message[..], b"d");
        assert_eq!(&*got[1].position.epoch, "ep");
        // One is gone (trimmed or older than the ttl).
        let short = reply(vec![entry("3-0", 5, "e")]);
        assert_eq!(
            decode_read(short, &after(3, "ep")),
            Err(HistoryError::Evicted(4))
        );
        assert_eq!(decode_read(reply(vec![]), &after(5, "ep")), Ok(vec![]));
        assert_eq!(
            decode_read(reply(vec![]), &after(4, "ep")),
            Err(HistoryError::Evicted(5))
        );
        assert!(matches!(
            decode_read(reply(vec![]), &after(6, "ep")),
            Err(HistoryError::UnknownEpoch(_))
        ));
        assert!(matches!(
            decode_read(reply(vec![]), &after(1, "other")),
            Err(HistoryError::UnknownEpoch(_))
        ));
        assert!(matches!(
            decode_read(Value::Array(vec![]), &after(1, "ep")),
            Err(HistoryError::UnknownEpoch(_))
        ));
        assert_eq!(
            decode_read(Value::Array(vec![]), &HistoryFrom::Since(0)),
            Ok(vec![])
        );
        let since = reply(vec![entry("2-0", 4, "d"), entry("3-0", 5, "e")]);
        assert_eq!(decode_read(since, &HistoryFrom::Since(0)).unwrap().len(), 2);
    }

    #[test]
    fn odd_replies_are_errors_not_panics() {
        for reply in [
            Value::Nil,
            Value::Int(1),
            Value::Array(vec![bulk("ep")]),
            Value::Array(vec![bulk("ep"), bulk("x"), Value::Array(vec![])]),
            Value::Array(vec![
                bulk("ep"),
                Value::Int(2),
                Value::Array(vec![Value::Nil]),
            ]),
            Value::Array(vec![
                bulk("ep"),
                Value::Int(2),
                Value::Array(vec![Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("o")]),
                ])]),
            ]),
        ] {
            assert!(
                matches!(
                    decode_read(reply.clone(), &after(1, "ep")),
                    Err(HistoryError::Unavailable(_))
                ),
                "{reply:?}"
            );
        }
    }
}
