//! Presence sets kept in Redis: the keys, the five Lua scripts (join,
//! leave, touch, info, reap) and the decoding of what Redis answers. Every
//! operation is one script, so it is atomic whichever process runs it, and
//! every script reads Redis' own clock (`TIME`), so all processes share one
//! clock. See the crate docs ("Presence") for the design.

use bytes::Bytes;
use keayl_cable::pubsub::{
    PresenceError, PresenceJoined, PresenceLeft, PresenceLimits, PresenceMember, PresenceSet,
};
use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value};

use crate::RedisConfig;
use crate::history::{LuaScript, millis};

/// What every presence key starts with (after the channel prefix).
pub(crate) const PRESENCE_INFIX: &str = "keayl:presence:";
/// The index of streams with sessions, by earliest expiry (after the
/// channel prefix). It holds no `:` after the infix, where every
/// per-stream key does (`<stream>:<kind>`), so no stream's key is it.
pub(crate) const INDEX: &str = "keayl:presence:due";

/// The kinds of a stream's keys, `<prefix>:keayl:presence:<stream>:<kind>`
/// (none of them `hist`, `seq` or `epoch`, which end the history keys, so
/// no presence key is a history key whatever the stream name).
pub(crate) const KINDS: [&str; 6] = ["sess", "exp", "info", "count", "order", "joins"];

/// Streams the reap script takes from the index per run.
const REAP_STREAMS: u32 = 100;
/// Sessions the reap script removes per run, at most (more are left for
/// the next run).
const REAP_SESSIONS: u32 = 1000;
/// Runs of the reap script one [`presence_reap`] makes at most while the
/// script reports more due work.
///
/// [`presence_reap`]: keayl_cable::pubsub::PubSubClient::presence_reap
pub(crate) const REAP_ROUNDS: usize = 10;
/// Sessions one run of the touch script extends at most (longer lists are
/// split).
pub(crate) const TOUCH_BATCH: usize = 1000;

/// The keys of one stream's presence set, and the index, as the scripts
/// take them (`KEYS[1..=7]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keys {
    /// Session → its presence id (hash).
    pub sess: String,
    /// Session → when it expires, Unix ms by Redis' clock (sorted set).
    pub exp: String,
    /// Id → the info of its latest join (hash).
    pub info: String,
    /// Id → its sessions (hash).
    pub count: String,
    /// Id → its join number (sorted set: members in join order).
    pub order: String,
    /// The last join number given out (string, `INCR`).
    pub joins: String,
    /// The index: stream → its earliest session expiry (sorted set).
    pub due: String,
    /// The stream (its member in the index).
    pub stream: String,
}

impl Keys {
    /// The keys of `stream` under `config`'s channel prefix.
    pub(crate) fn of(config: &RedisConfig, stream: &str) -> Self {
        let base = base(config);
        let key = |kind: &str| format!("{base}{stream}:{kind}");
        Keys {
            sess: key(KINDS[0]),
            exp: key(KINDS[1]),
            info: key(KINDS[2]),
            count: key(KINDS[3]),
            order: key(KINDS[4]),
            joins: key(KINDS[5]),
            due: index(config),
            stream: stream.to_owned(),
        }
    }

    fn as_args(&self) -> [&[u8]; 7] {
        [
            self.sess.as_bytes(),
            self.exp.as_bytes(),
            self.info.as_bytes(),
            self.count.as_bytes(),
            self.order.as_bytes(),
            self.joins.as_bytes(),
            self.due.as_bytes(),
        ]
    }
}

/// What the keys of every stream start with: `<prefix>:keayl:presence:`.
pub(crate) fn base(config: &RedisConfig) -> String {
    config.prefixed(PRESENCE_INFIX)
}

/// The index key: `<prefix>:keayl:presence:due`.
pub(crate) fn index(config: &RedisConfig) -> String {
    config.prefixed(INDEX)
}

/// Functions every script shares. `k` is a table of a stream's keys
/// (`sess`, `exp`, `info`, `count`, `order`, `joins`); `due` the index.
macro_rules! prelude {
    () => {
        r#"
if redis.replicate_commands then
  -- Redis < 5: replicate effects, so TIME may precede writes (a no-op
  -- since 5, where it is the default).
  redis.replicate_commands()
end
local MARGIN = 60000
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function ms(n)
  return string.format('%d', n)
end
local function keys_of(base, stream)
  local p = base .. stream .. ':'
  return {sess = p .. 'sess', exp = p .. 'exp', info = p .. 'info',
    count = p .. 'count', order = p .. 'order', joins = p .. 'joins'}
end
local function given_keys()
  return {sess = KEYS[1], exp = KEYS[2], info = KEYS[3], count = KEYS[4],
    order = KEYS[5], joins = KEYS[6]}
end
-- One session of `id` is gone: `id` when it was the last one.
local function release(k, id)
  if redis.call('HINCRBY', k.count, id, -1) > 0 then
    return nil
  end
  redis.call('HDEL', k.count, id)
  redis.call('HDEL', k.info, id)
  redis.call('ZREM', k.order, id)
  return id
end
-- Remove `session`: the id that left with it, if any.
local function drop(k, session)
  redis.call('ZREM', k.exp, session)
  local id = redis.call('HGET', k.sess, session)
  if not id then
    return nil
  end
  redis.call('HDEL', k.sess, session)
  return release(k, id)
end
-- After a change: the stream's score in the index is its earliest expiry,
-- and its keys outlive its latest expiry by MARGIN (so they vanish even
-- when no process is left to reap); a stream without sessions is removed.
local function refresh(k, due, stream, now)
  local first = redis.call('ZRANGE', k.exp, 0, 0, 'WITHSCORES')
  if #first < 2 then
    redis.call('DEL', k.sess, k.exp, k.info, k.count, k.order, k.joins)
    redis.call('ZREM', due, stream)
    return
  end
  redis.call('ZADD', due, first[2], stream)
  local last = redis.call('ZRANGE', k.exp, -1, -1, 'WITHSCORES')
  local keep = math.max(tonumber(last[2]) - now, 0) + MARGIN
  local px = ms(keep)
  for _, key in ipairs({k.sess, k.exp, k.info, k.count, k.order, k.joins}) do
    redis.call('PEXPIRE', key, px)
  end
  if redis.call('PTTL', due) < keep then
    redis.call('PEXPIRE', due, px)
  end
end
"#
    };
}

/// Joins a session. KEYS: [`Keys`]. ARGV: stream, session, id, ttl (ms),
/// max members, info. Returns `{'full'}` when the id would be a new one
/// beyond the bound (nothing changed), else `{'ok', joined (0/1), left
/// (0/1), the id that left or ''}`.
pub(crate) static JOIN: LuaScript = LuaScript::new(concat!(
    prelude!(),
    r#"
local k, due = given_keys(), KEYS[7]
local stream, session, id = ARGV[1], ARGV[2], ARGV[3]
local ttl, max = tonumber(ARGV[4]), tonumber(ARGV[5])
local prev = redis.call('HGET', k.sess, session)
if prev ~= id and redis.call('HEXISTS', k.count, id) == 0
    and redis.call('HLEN', k.count) >= max then
  return {'full'}
end
local now = now_ms()
local left, has_left = '', 0
if prev and prev ~= id then
  local gone = release(k, prev)
  if gone then
    left, has_left = gone, 1
  end
end
redis.call('HSET', k.sess, session, id)
redis.call('ZADD', k.exp, ms(now + ttl), session)
redis.call('HSET', k.info, id, ARGV[6])
local joined = 0
if prev ~= id and redis.call('HINCRBY', k.count, id, 1) == 1 then
  redis.call('ZADD', k.order, redis.call('INCR', k.joins), id)
  joined = 1
end
refresh(k, due, stream, now)
return {'ok', joined, has_left, left}
"#
));

/// Removes a session. KEYS: [`Keys`]. ARGV: stream, session. Returns
/// `{id}` when it was its id's last session, else `{}`.
pub(crate) static LEAVE: LuaScript = LuaScript::new(concat!(
    prelude!(),
    r#"
local k, due = given_keys(), KEYS[7]
if not redis.call('HGET', k.sess, ARGV[2]) then
  return {}
end
local gone = drop(k, ARGV[2])
refresh(k, due, ARGV[1], now_ms())
if gone then
  return {gone}
end
return {}
"#
));

/// Extends sessions (unknown ones are ignored). KEYS: [`Keys`]. ARGV:
/// stream, ttl (ms), sessions…. Returns 0.
pub(crate) static TOUCH: LuaScript = LuaScript::new(concat!(
    prelude!(),
    r#"
local k, due = given_keys(), KEYS[7]
local missing = {}
if redis.call('EXISTS', k.exp) == 0 then
  for i = 3, #ARGV do
    missing[#missing + 1] = ARGV[i]
  end
  return missing
end
local now = now_ms()
local at = ms(now + tonumber(ARGV[2]))
for i = 3, #ARGV do
  if redis.call('ZSCORE', k.exp, ARGV[i]) and redis.call('HEXISTS', k.sess, ARGV[i]) == 1 then
    redis.call('ZADD', k.exp, 'XX', at, ARGV[i])
  else
    missing[#missing + 1] = ARGV[i]
  end
end
refresh(k, due, ARGV[1], now)
return missing
"#
));

/// Reads a presence set. KEYS: [`Keys`]. Returns `{id, info, …}`, in
/// join order.
pub(crate) static INFO: LuaScript = LuaScript::new(
    r#"
local ids = redis.call('ZRANGE', KEYS[5], 0, -1)
local out = {}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[3], id) or 'null'
end
return out
"#,
);

/// Removes expired sessions of the streams due in the index. KEYS: the
/// index. ARGV: the keys' base (`<prefix>:keayl:presence:`), streams per
/// run, sessions per run. Returns `{more (0/1), stream, id, stream, id,
/// …}`: the ids that left, and whether due work may be left for another
/// run.
pub(crate) static REAP: LuaScript = LuaScript::new(concat!(
    prelude!(),
    r#"
local due, base = KEYS[1], ARGV[1]
local limit, budget = tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local streams = redis.call('ZRANGEBYSCORE', due, '-inf', ms(now), 'LIMIT', 0, limit)
local out = {0}
for _, stream in ipairs(streams) do
  if budget <= 0 then
    break
  end
  local k = keys_of(base, stream)
  local expired = redis.call('ZRANGEBYSCORE', k.exp, '-inf', ms(now), 'LIMIT', 0, budget)
  budget = budget - #expired
  for _, session in ipairs(expired) do
    local gone = drop(k, session)
    if gone then
      out[#out + 1] = stream
      out[#out + 1] = gone
    end
  end
  refresh(k, due, stream, now)
end
if budget <= 0 or #streams >= limit then
  out[1] = 1
end
return out
"#
));

/// Every presence script, for `SCRIPT LOAD`.
pub(crate) static SCRIPTS: [&LuaScript; 5] = [&JOIN, &LEAVE, &TOUCH, &INFO, &REAP];

/// A count as a script argument, within Lua's exact integers.
fn count_arg(n: usize) -> String {
    (n as u64).min(1 << 53).to_string()
}

/// Run [`JOIN`].
pub(crate) async fn join(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    session: &str,
    id: &str,
    info: &[u8],
    limits: PresenceLimits,
) -> RedisResult<Value> {
    let ttl = millis(limits.ttl).to_string();
    let max = count_arg(limits.max_members);
    JOIN.run(
        conn,
        &keys.as_args(),
        &[
            keys.stream.as_bytes(),
            session.as_bytes(),
            id.as_bytes(),
            ttl.as_bytes(),
            max.as_bytes(),
            info,
        ],
    )
    .await
}

/// Run [`LEAVE`].
pub(crate) async fn leave(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    session: &str,
) -> RedisResult<Value> {
    LEAVE
        .run(
            conn,
            &keys.as_args(),
            &[keys.stream.as_bytes(), session.as_bytes()],
        )
        .await
}

/// Run [`TOUCH`] for `sessions` (at most [`TOUCH_BATCH`] of them).
pub(crate) async fn touch(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    sessions: &[String],
    ttl: std::time::Duration,
) -> RedisResult<Value> {
    let ttl = millis(ttl).to_string();
    let mut args: Vec<&[u8]> = Vec::with_capacity(sessions.len() + 2);
    args.push(keys.stream.as_bytes());
    args.push(ttl.as_bytes());
    args.extend(sessions.iter().map(|s| s.as_bytes()));
    TOUCH.run(conn, &keys.as_args(), &args).await
}

/// Run [`INFO`].
pub(crate) async fn info(conn: &mut MultiplexedConnection, keys: &Keys) -> RedisResult<Value> {
    INFO.run(conn, &keys.as_args(), &[]).await
}

/// Run [`REAP`] once with the index `index` and the keys' `base`.
pub(crate) async fn reap(
    conn: &mut MultiplexedConnection,
    index: &str,
    base: &str,
) -> RedisResult<Value> {
    let streams = REAP_STREAMS.to_string();
    let sessions = REAP_SESSIONS.to_string();
    REAP.run(
        conn,
        &[index.as_bytes()],
        &[base.as_bytes(), streams.as_bytes(), sessions.as_bytes()],
    )
    .await
}

/// The sessions a [`TOUCH`] did not find.
pub(crate) fn decode_missing(reply: Value) -> Result<Vec<String>, PresenceError> {
    let Value::Array(items) = reply else {
        return Err(malformed("touch: not an array"));
    };
    items
        .into_iter()
        .map(|v| match v {
            Value::BulkString(b) => String::from_utf8(b).map_err(|_| malformed("touch: not UTF-8")),
            Value::SimpleString(s) => Ok(s),
            _ => Err(malformed("touch: not a string")),
        })
        .collect()
}

fn malformed(what: &str) -> PresenceError {
    PresenceError::Unavailable(format!("malformed presence reply from Redis: {what}"))
}

fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn flag_of(v: &Value, what: &str) -> Result<bool, PresenceError> {
    match int_of(v) {
        Some(0) => Ok(false),
        Some(1) => Ok(true),
        _ => Err(malformed(what)),
    }
}

fn bytes_of(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

fn text_of(v: Value, what: &str) -> Result<String, PresenceError> {
    let bytes = bytes_of(v).ok_or_else(|| malformed(what))?;
    String::from_utf8(bytes).map_err(|_| malformed(what))
}

fn array_of(v: Value, what: &str) -> Result<Vec<Value>, PresenceError> {
    match v {
        Value::Array(items) => Ok(items),
        _ => Err(malformed(what)),
    }
}

/// What a join changed, from [`JOIN`]'s reply.
pub(crate) fn decode_join(
    reply: Value,
    max_members: usize,
) -> Result<PresenceJoined, PresenceError> {
    let mut parts = array_of(reply, "a join's reply is not an array")?.into_iter();
    let status = parts
        .next()
        .and_then(bytes_of)
        .ok_or_else(|| malformed("a join's reply has no status"))?;
    match &status[..] {
        b"full" => Err(PresenceError::Full(max_members)),
        b"ok" => {
            let (Some(joined), Some(has_left), Some(left)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(malformed("a join's reply is short"));
            };
            let joined = flag_of(&joined, "a join's `joined` is not 0 or 1")?;
            let left = if flag_of(&has_left, "a join's `left` is not 0 or 1")? {
                Some(text_of(left, "the id that left is not text")?)
            } else {
                None
            };
            Ok(PresenceJoined { joined, left })
        }
        _ => Err(malformed("a join's status is unknown")),
    }
}

/// The id that left, from [`LEAVE`]'s reply.
pub(crate) fn decode_leave(reply: Value) -> Result<Option<String>, PresenceError> {
    let parts = array_of(reply, "a leave's reply is not an array")?;
    if parts.len() > 1 {
        return Err(malformed("a leave's reply is long"));
    }
    parts
        .into_iter()
        .next()
        .map(|id| text_of(id, "the id that left is not text"))
        .transpose()
}

/// A presence set, from [`INFO`]'s reply.
pub(crate) fn decode_info(reply: Value) -> Result<PresenceSet, PresenceError> {
    let parts = array_of(reply, "an info reply is not an array")?;
    if parts.len() % 2 != 0 {
        return Err(malformed("an info reply is not pairs"));
    }
    let mut members = Vec::with_capacity(parts.len() / 2);
    let mut parts = parts.into_iter();
    while let (Some(id), Some(info)) = (parts.next(), parts.next()) {
        let id = text_of(id, "a member's id is not text")?;
        let info = bytes_of(info).ok_or_else(|| malformed("a member's info is not a string"))?;
        members.push(PresenceMember {
            id,
            info: Bytes::from(info),
        });
    }
    Ok(PresenceSet {
        total: members.len(),
        members,
    })
}

/// The ids that left and whether more may be due, from [`REAP`]'s reply.
pub(crate) fn decode_reap(reply: Value) -> Result<(bool, Vec<PresenceLeft>), PresenceError> {
    let mut parts = array_of(reply, "a reap's reply is not an array")?.into_iter();
    let more = parts
        .next()
        .ok_or_else(|| malformed("a reap's reply is empty"))?;
    let more = flag_of(&more, "a reap's `more` is not 0 or 1")?;
    let mut left = Vec::with_capacity(parts.len() / 2);
    loop {
        match (parts.next(), parts.next()) {
            (Some(stream), Some(id)) => left.push(PresenceLeft {
                stream: text_of(stream, "a reaped stream is not text")?,
                id: text_of(id, "a reaped id is not text")?,
            }),
            (None, _) => break,
            (Some(_), None) => return Err(malformed("a reap's reply is not pairs")),
        }
    }
    Ok((more, left))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn key_layout() {
        let plain = RedisConfig::new("redis://h");
        let k = Keys::of(&plain, "room:1");
        assert_eq!(k.sess, "keayl:presence:room:1:sess");
        assert_eq!(k.exp, "keayl:presence:room:1:exp");
        assert_eq!(k.info, "keayl:presence:room:1:info");
        assert_eq!(k.count, "keayl:presence:room:1:count");
        assert_eq!(k.order, "keayl:presence:room:1:order");
        assert_eq!(k.joins, "keayl:presence:room:1:joins");
        assert_eq!(k.due, "keayl:presence:due");
        assert_eq!(k.stream, "room:1");
        let app = RedisConfig::new("redis://h").with_channel_prefix("app");
        let k = Keys::of(&app, "room");
        assert_eq!(k.sess, "app:keayl:presence:room:sess");
        assert_eq!(k.due, "app:keayl:presence:due");
        // What the reap script builds from the base is the same key.
        assert_eq!(format!("{}room:sess", base(&app)), k.sess);
        assert_eq!(index(&app), k.due);
        // No kind ends a history key, so no stream name (whatever it ends
        // with) makes a presence key that is one.
        for kind in KINDS {
            assert!(!["hist", "seq", "epoch"].contains(&kind));
        }
        let odd = Keys::of(&app, "x:keayl:hist");
        assert!(!odd.as_args().iter().any(|k| k.ends_with(b":keayl:hist")));
    }

    #[test]
    fn counts_stay_exact_in_lua() {
        assert_eq!(count_arg(3), "3");
        assert_eq!(count_arg(usize::MAX), (1u64 << 53).to_string());
        assert_eq!(millis(Duration::from_millis(600)), 600);
    }

    #[test]
    fn join_replies() {
        let ok = |joined, has_left, left: &str| {
            Value::Array(vec![
                bulk("ok"),
                Value::Int(joined),
                Value::Int(has_left),
                bulk(left),
            ])
        };
        assert_eq!(
            decode_join(ok(1, 0, ""), 3),
            Ok(PresenceJoined {
                joined: true,
                left: None
            })
        );
        assert_eq!(
            decode_join(ok(0, 1, ""), 3),
            Ok(PresenceJoined {
                joined: false,
                left: Some(String::new())
            })
        );
        assert_eq!(
            decode_join(ok(1, 1, "7"), 3).map(|j| j.left),
            Ok(Some("7".into()))
        );
        assert_eq!(
            decode_join(Value::Array(vec![bulk("full")]), 3),
            Err(PresenceError::Full(3))
        );
    }

    #[test]
    fn other_replies() {
        assert_eq!(decode_leave(Value::Array(vec![])), Ok(None));
        assert_eq!(
            decode_leave(Value::Array(vec![bulk("42")])),
            Ok(Some("42".into()))
        );
        let set = decode_info(Value::Array(vec![
            bulk("42"),
            bulk("{\"n\":1}"),
            bulk("7"),
            bulk("null"),
        ]))
        .unwrap();
        assert_eq!(set.total, 2);
        assert_eq!(set.members[0].id, "42");
        assert_eq!(&set.members[0].info[..], b"{\"n\":1}");
        assert_eq!(set.members[1].id, "7");
        assert_eq!(
            decode_info(Value::Array(vec![])),
            Ok(PresenceSet::default())
        );
        let (more, left) = decode_reap(Value::Array(vec![
            Value::Int(1),
            bulk("r"),
            bulk("1"),
            bulk("q"),
            bulk("2"),
        ]))
        .unwrap();
        assert!(more);
        assert_eq!(left.len(), 2);
        assert_eq!((left[1].stream.as_str(), left[1].id.as_str()), ("q", "2"));
        assert_eq!(
            decode_reap(Value::Array(vec![Value::Int(0)])),
            Ok((false, vec![]))
        );
    }

    #[test]
    fn odd_replies_are_errors_not_panics() {
        let unavailable = |r: Result<(), PresenceError>| matches!(r, Err(PresenceError::Unavailable(m)) if m.contains("malformed"));
        let odd = [
            Value::Nil,
            Value::Int(1),
            Value::Okay,
            Value::Array(vec![]),
            Value::Array(vec![Value::Nil]),
            Value::Array(vec![bulk("ok")]),
            Value::Array(vec![bulk("ok"), Value::Int(1), Value::Int(0)]),
            Value::Array(vec![bulk("ok"), Value::Int(2), Value::Int(0), bulk("")]),
            Value::Array(vec![bulk("ok"), bulk("x"), Value::Int(0), bulk("")]),
            Value::Array(vec![bulk("ok"), Value::Int(1), Value::Int(1), Value::Nil]),
            Value::Array(vec![
                bulk("ok"),
                Value::Int(1),
                Value::Int(1),
                Value::BulkString(vec![0xff]),
            ]),
            Value::Array(vec![bulk("what")]),
        ];
        for reply in odd {
            assert!(
                unavailable(decode_join(reply.clone(), 3).map(drop)),
                "{reply:?}"
            );
        }
        for reply in [
            Value::Nil,
            Value::Int(0),
            Value::Array(vec![Value::Nil]),
            Value::Array(vec![bulk("a"), bulk("b")]),
            Value::Array(vec![Value::BulkString(vec![0xc3])]),
        ] {
            assert!(
                unavailable(decode_leave(reply.clone()).map(drop)),
                "{reply:?}"
            );
        }
        for reply in [
            Value::Nil,
            Value::Array(vec![bulk("42")]),
            Value::Array(vec![Value::Int(4), bulk("null")]),
            Value::Array(vec![bulk("42"), Value::Nil]),
        ] {
            assert!(
                unavailable(decode_info(reply.clone()).map(drop)),
                "{reply:?}"
            );
        }
        for reply in [
            Value::Nil,
            Value::Array(vec![]),
            Value::Array(vec![bulk("x")]),
            Value::Array(vec![Value::Int(0), bulk("r")]),
            Value::Array(vec![Value::Int(0), bulk("r"), Value::Nil]),
            Value::Array(vec![Value::Int(3)]),
        ] {
            assert!(
                unavailable(decode_reap(reply.clone()).map(drop)),
                "{reply:?}"
            );
        }
    }
}
