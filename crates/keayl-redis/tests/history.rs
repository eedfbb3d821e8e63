//! Reliable streams on Redis, beyond the conformance suite: the keys the
//! history and sessions use, Rails' raw broadcasts next to positioned
//! frames, the bounds (limit, ttl), one sequence of offsets across
//! processes, what a lost epoch or a Redis restart does, and errors while
//! Redis is down.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use keayl_cable::pubsub::conformance::{Inbox, subscribe_live, unique_stream};
use keayl_cable::pubsub::{
    HistoryConfig, HistoryError, HistoryFrom, Position, PubSub, PubSubError,
};
use keayl_redis::{RedisConfig, RedisPubSub};

const T: Duration = Duration::from_secs(5);

fn redis_up() -> bool {
    require_service("Redis", &host_port(&redis_url()))
}

fn config(prefix: Option<&str>, history: HistoryConfig) -> RedisConfig {
    let mut c = keayl_redis::config_from_url(&redis_url()).unwrap();
    c.channel_prefix = prefix.map(str::to_owned);
    c.history = history;
    c
}

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn exists(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> bool {
    let n: i64 = redis::cmd("EXISTS")
        .arg(key)
        .query_async(conn)
        .await
        .unwrap();
    n == 1
}

async fn pttl(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(conn).await.unwrap()
}

fn after(p: &Position) -> HistoryFrom {
    HistoryFrom::After {
        offset: p.offset,
        epoch: p.epoch.to_string(),
    }
}

async fn broadcast(p: &RedisPubSub, stream: &str, message: &str) {
    p.broadcast(stream, Bytes::copy_from_slice(message.as_bytes()))
        .await
        .unwrap_or_else(|e| panic!("broadcast on {stream:?}: {e}"));
}

/// The positions `inbox` got, all present.
fn positions(inbox: &Inbox) -> Vec<Position> {
    inbox
        .positions()
        .into_iter()
        .map(|p| p.expect("a position"))
        .collect()
}

/// Whether the last message `inbox` gets is `text`, within the timeout.
async fn last_is(inbox: &Inbox, text: &str) -> bool {
    keayl_cable::pubsub::conformance::eventually(T, || {
        inbox.texts().last().is_some_and(|t| t == text)
    })
    .await
}

/// A Rails process publishing raw JSON on a stream that keeps history: the
/// message is delivered as is, without a position (and not recorded), and
/// Keayl's broadcasts around it keep their offsets.
#[tokio::test]
async fn a_raw_rails_publish_is_delivered_without_a_position() {
    if !redis_up() {
        return;
    }
    let keayl = connected(config(Some("railsapp"), HistoryConfig::default())).await;
    let stream = unique_stream("raw");
    let inbox = Inbox::new();
    let _id = subscribe_live(&keayl, &stream, &inbox, T).await;
    broadcast(&keayl, &stream, r#"{"n":1}"#).await;
    let mut conn = raw(&redis_url()).await;
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("railsapp:{stream}"))
        .arg(r#"{"from":"rails"}"#)
        .query_async(&mut conn)
        .await
        .unwrap();
    // Wait for the raw one before the next, so the order is known.
    assert!(inbox.wait_for(2, T).await);
    broadcast(&keayl, &stream, r#"{"n":2}"#).await;
    assert!(inbox.wait_for(3, T).await);
    assert_eq!(
        inbox.texts(),
        [r#"{"n":1}"#, r#"{"from":"rails"}"#, r#"{"n":2}"#]
    );
    let got = inbox.positions();
    assert_eq!(got[1], None, "the raw message has no position");
    let (first, second) = (got[0].clone().unwrap(), got[2].clone().unwrap());
    assert_eq!((first.offset, second.offset), (1, 2));
    assert_eq!(first.epoch, second.epoch);
    let history = keayl
        .history(&stream, &HistoryFrom::Since(0))
        .await
        .unwrap();
    let texts: Vec<&[u8]> = history.iter().map(|e| &e.message[..]).collect();
    assert_eq!(texts, [&br#"{"n":1}"#[..], br#"{"n":2}"#]);
}

/// Whatever a channel carries that merely looks like a frame is delivered
/// raw, without a position, and nothing breaks.
#[tokio::test]
async fn malformed_frames_are_delivered_raw() {
    if !redis_up() {
        return;
    }
    let keayl = connected(config(None, HistoryConfig::default())).await;
    let stream = unique_stream("malformed");
    let inbox = Inbox::new();
    let _id = subscribe_live(&keayl, &stream, &inbox, T).await;
    let mut conn = raw(&redis_url()).await;
    let bad: [&[u8]; 5] = [
        b"\x1ekeayl1 ",
        b"\x1ekeayl1 x e\x1e{}",
        b"\x1ekeayl1 1 e",
        b"\x1ekeayl1 0 e\x1e{}",
        b"\x1ekeayl1 1 \xff\x1e{}",
    ];
    for payload in bad {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&stream)
            .arg(payload)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    // A well-formed frame from elsewhere is taken for what it says.
    let _: i64 = redis::cmd("PUBLISH")
        .arg(&stream)
        .arg(&b"\x1ekeayl1 7 someepoch\x1e{\"ok\":1}"[..])
        .query_async(&mut conn)
        .await
        .unwrap();
    broadcast(&keayl, &stream, r#"{"after":1}"#).await;
    assert!(inbox.wait_for(bad.len() + 2, T).await);
    let messages = inbox.messages();
    for (got, want) in messages.iter().zip(bad) {
        assert_eq!(&got[..], want);
    }
    let positions = inbox.positions();
    assert!(positions[..bad.len()].iter().all(Option::is_none));
    assert_eq!(&messages[bad.len()][..], br#"{"ok":1}"#);
    let p = positions[bad.len()].clone().unwrap();
    assert_eq!((p.offset, &*p.epoch), (7, "someepoch"));
    assert_eq!(&messages[bad.len() + 1][..], br#"{"after":1}"#);
    assert_eq!(positions[bad.len() + 1].as_ref().map(|p| p.offset), Some(1));
}

/// A limit of 3 keeps the last 3 messages; a position before them is
/// evicted, one among them reads the rest.
#[tokio::test]
async fn the_limit_keeps_the_last_messages() {
    if !redis_up() {
        return;
    }
    let history = HistoryConfig {
        limit: 3,
        ..HistoryConfig::default()
    };
    let a = connected(config(None, history.clone())).await;
    let b = connected(config(None, history)).await;
    let stream = unique_stream("limit");
    let inbox = Inbox::new();
    let _id = subscribe_live(&b, &stream, &inbox, T).await;
    for i in 1..=5 {
        broadcast(&a, &stream, &format!("{i}")).await;
    }
    assert!(inbox.wait_for(5, T).await);
    let p = positions(&inbox);
    let offsets: Vec<u64> = p.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, [1, 2, 3, 4, 5]);
    let mut conn = raw(&redis_url()).await;
    let len: i64 = redis::cmd("XLEN")
        .arg(format!("{stream}:keayl:hist"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(len, 3, "MAXLEN trims to the limit");
    for reader in [&a, &b] {
        let all = reader
            .history(&stream, &HistoryFrom::Since(0))
            .await
            .unwrap();
        let got: Vec<(u64, &[u8])> = all
            .iter()
            .map(|e| (e.position.offset, &e.message[..]))
            .collect();
        assert_eq!(got, [(3, &b"3"[..]), (4, b"4"), (5, b"5")]);
        assert_eq!(
            reader.history(&stream, &after(&p[0])).await,
            Err(HistoryError::Evicted(2)),
            "offset 2 is gone"
        );
        let rest = reader.history(&stream, &after(&p[1])).await.unwrap();
        assert_eq!(
            rest.iter().map(|e| e.position.offset).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!(reader.history(&stream, &after(&p[4])).await, Ok(Vec::new()));
        let future = HistoryFrom::After {
            offset: 6,
            epoch: p[0].epoch.to_string(),
        };
        assert!(matches!(
            reader.history(&stream, &future).await,
            Err(HistoryError::UnknownEpoch(_))
        ));
    }
}

/// Streams without history (history off, a limit-0 override, Action
/// Cable's internal streams) write no key and publish the raw message.
#[tokio::test]
async fn streams_without_history_write_no_keys() {
    if !redis_up() {
        return;
    }
    let off = connected(config(Some("nohist"), HistoryConfig::off())).await;
    let partial = connected(config(
        Some("nohist"),
        HistoryConfig::default().with_stream_override("keayl-conformance:ticker", 0, T),
    ))
    .await;
    let mut conn = raw(&redis_url()).await;
    let streams = [
        (&off, unique_stream("off")),
        (&partial, unique_stream("ticker")),
        (
            &partial,
            keayl_cable::naming::internal_stream(&unique_stream("user")),
        ),
    ];
    for (p, stream) in &streams {
        let channel = format!("nohist:{stream}");
        let mut rails = redis::Client::open(redis_url())
            .unwrap()
            .get_async_pubsub()
            .await
            .unwrap();
        rails.subscribe(&channel).await.unwrap();
        let inbox = Inbox::new();
        let _id = subscribe_live(*p, stream, &inbox, T).await;
        broadcast(p, stream, r#"{"plain":true}"#).await;
        let msg = tokio::time::timeout(T, futures_util::StreamExt::next(&mut rails.on_message()))
            .await
            .expect("nothing published")
            .unwrap();
        assert_eq!(msg.get_payload_bytes(), br#"{"plain":true}"#, "{stream}");
        assert!(inbox.wait_for(1, T).await);
        assert_eq!(inbox.positions(), [None], "{stream}");
        assert_eq!(
            p.history(stream, &HistoryFrom::Since(0)).await,
            Err(HistoryError::Unsupported)
        );
        for suffix in ["hist", "seq", "epoch"] {
            let key = format!("{channel}:keayl:{suffix}");
            assert!(!exists(&mut conn, &key).await, "{key} was written");
        }
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{channel}*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(keys.is_empty(), "keys written for {stream}: {keys:?}");
    }
}

/// Broadcasts from two processes at once, on one stream: one epoch and one
/// sequence of offsets, delivered in offset order to a third process, and
/// the same history read from each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_sequence_of_offsets() {
    const EACH: usize = 40;
    if !redis_up() {
        return;
    }
    let a = Arc::new(connected(config(None, HistoryConfig::default())).await);
    let b = Arc::new(connected(config(None, HistoryConfig::default())).await);
    let watcher = connected(config(None, HistoryConfig::default())).await;
    let stream = unique_stream("shared-seq");
    let inbox = Inbox::new();
    let _id = subscribe_live(&watcher, &stream, &inbox, T).await;
    let mut tasks = Vec::new();
    for (name, p) in [("a", a.clone()), ("b", b.clone())] {
        let stream = stream.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                broadcast(&p, &stream, &format!("\"{name}{i}\"")).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(inbox.wait_for(2 * EACH, T).await);
    let p = positions(&inbox);
    let offsets: Vec<u64> = p.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, (1..=2 * EACH as u64).collect::<Vec<_>>());
    assert!(p.iter().all(|q| q.epoch == p[0].epoch), "one epoch");
    let texts = inbox.texts();
    for reader in [&a, &b] {
        let all = reader
            .history(&stream, &HistoryFrom::Since(0))
            .await
            .unwrap();
        let got: Vec<(u64, String)> = all
            .iter()
            .map(|e| {
                (
                    e.position.offset,
                    String::from_utf8_lossy(&e.message).into_owned(),
                )
            })
            .collect();
        let want: Vec<(u64, String)> = offsets.iter().copied().zip(texts.clone()).collect();
        assert_eq!(got, want, "the history is what was delivered");
    }
}

/// The keys a stream with history has, and their expiries (the history
/// `ttl`, the epoch and offset `2 × ttl`).
#[tokio::test]
async fn history_keys_and_their_expiry() {
    if !redis_up() {
        return;
    }
    let history = HistoryConfig::default().with_stream_override(
        "keayl-conformance:keys",
        10,
        Duration::from_secs(60),
    );
    let keayl = connected(config(Some("myapp"), history)).await;
    let stream = unique_stream("keys");
    broadcast(&keayl, &stream, "\"x\"").await;
    let mut conn = raw(&redis_url()).await;
    let base = format!("myapp:{stream}");
    let hist = pttl(&mut conn, &format!("{base}:keayl:hist")).await;
    assert!((59_000..=60_000).contains(&hist), "history PTTL {hist}");
    for key in ["seq", "epoch"] {
        let t = pttl(&mut conn, &format!("{base}:keayl:{key}")).await;
        assert!((119_000..=120_000).contains(&t), "{key} PTTL {t}");
    }
    let seq: String = redis::cmd("GET")
        .arg(format!("{base}:keayl:seq"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(seq, "1");
    let t: String = redis::cmd("TYPE")
        .arg(format!("{base}:keayl:hist"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(t, "stream");
}

/// With a short ttl: expired messages are never returned (a position
/// before them is evicted, the last one still reads "nothing missed");
/// after twice the ttl the epoch is gone, old positions are refused and the
/// next broadcast starts a new epoch at offset 1.
#[tokio::test]
async fn the_ttl_expires_messages_then_the_epoch() {
    if !redis_up() {
        return;
    }
    let ttl = Duration::from_millis(800);
    let history = HistoryConfig {
        ttl,
        ..HistoryConfig::default()
    };
    let keayl = connected(config(None, history)).await;
    let stream = unique_stream("ttl");
    let inbox = Inbox::new();
    let _id = subscribe_live(&keayl, &stream, &inbox, T).await;
    broadcast(&keayl, &stream, "1").await;
    broadcast(&keayl, &stream, "2").await;
    assert!(inbox.wait_for(2, T).await);
    let p = positions(&inbox);
    assert_eq!(
        keayl.history(&stream, &after(&p[0])).await.unwrap().len(),
        1
    );
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    assert_eq!(
        keayl.history(&stream, &after(&p[0])).await,
        Err(HistoryError::Evicted(2))
    );
    assert_eq!(keayl.history(&stream, &after(&p[1])).await, Ok(Vec::new()));
    assert_eq!(
        keayl.history(&stream, &HistoryFrom::Since(0)).await,
        Ok(Vec::new())
    );
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    assert!(matches!(
        keayl.history(&stream, &after(&p[1])).await,
        Err(HistoryError::UnknownEpoch(_))
    ));
    broadcast(&keayl, &stream, "3").await;
    assert!(inbox.wait_for(3, T).await);
    let q = positions(&inbox)[2].clone();
    assert_eq!(q.offset, 1, "a new history starts at 1");
    assert_ne!(q.epoch, p[0].epoch, "with a new epoch");
    assert!(matches!(
        keayl.history(&stream, &after(&p[1])).await,
        Err(HistoryError::UnknownEpoch(_))
    ));
}

/// `Since` selects by the time of the message.
#[tokio::test]
async fn since_selects_by_time() {
    if !redis_up() {
        return;
    }
    let keayl = connected(config(None, HistoryConfig::default())).await;
    let stream = unique_stream("since");
    broadcast(&keayl, &stream, "1").await;
    broadcast(&keayl, &stream, "2").await;
    let now = keayl_cable::pubsub::unix_now();
    let recent = keayl
        .history(&stream, &HistoryFrom::Since(now.saturating_sub(5)))
        .await
        .unwrap();
    assert_eq!(recent.len(), 2);
    let later = keayl
        .history(&stream, &HistoryFrom::Since(now + 10))
        .await
        .unwrap();
    assert!(later.is_empty());
    let far = keayl
        .history(&stream, &HistoryFrom::Since(u64::MAX))
        .await
        .unwrap();
    assert!(far.is_empty());
    // A stream nothing was broadcast on: nothing, not an error.
    assert_eq!(
        keayl
            .history(&unique_stream("never"), &HistoryFrom::Since(0))
            .await,
        Ok(Vec::new())
    );
}

/// Sessions live at `<prefix>:keayl:session:<sid>` with the ttl; a session
/// id that could name a history key is never looked up.
#[tokio::test]
async fn session_keys() {
    if !redis_up() {
        return;
    }
    let keayl = connected(config(Some("sessapp"), HistoryConfig::default())).await;
    let sid = "0123456789abcdef0123456789abcdef";
    let key = format!("sessapp:keayl:session:{sid}");
    keayl
        .save_session(sid, "snap".into(), Duration::from_secs(30))
        .await
        .unwrap();
    let mut conn = raw(&redis_url()).await;
    let t = pttl(&mut conn, &key).await;
    assert!((29_000..=30_000).contains(&t), "PTTL {t}");
    assert_eq!(
        keayl.take_session(sid).await.unwrap().as_deref(),
        Some(&b"snap"[..])
    );
    assert!(!exists(&mut conn, &key).await, "taken: removed");
    assert_eq!(keayl.take_session(sid).await.unwrap(), None);

    // The epoch of stream `keayl:session:x` is not a session.
    let stream = format!("keayl:session:{}", unique_stream("s"));
    broadcast(&keayl, &stream, "1").await;
    let crafted = format!("{}:keayl:epoch", &stream["keayl:session:".len()..]);
    assert_eq!(keayl.take_session(&crafted).await.unwrap(), None);
    keayl.remove_session(&crafted).await.unwrap();
    assert!(exists(&mut conn, &format!("sessapp:{stream}:keayl:epoch")).await);
    assert!(matches!(
        keayl
            .save_session(&crafted, "x".into(), Duration::from_secs(1))
            .await,
        Err(PubSubError::Failed(_))
    ));
}

/// Redis restarted without persistence (or the epoch lost otherwise): the
/// old positions are refused, the next broadcast starts a new epoch; Redis'
/// script cache is empty after the restart, and after `SCRIPT FLUSH`
/// broadcasts still work (`EVAL` fallback).
#[tokio::test]
async fn a_restart_without_persistence_starts_new_epochs() {
    let Some(mut redis) = PrivateRedis::start() else {
        return;
    };
    let mut c = fast_config(&redis.url());
    c.subscribe_timeout = Duration::from_secs(10);
    let keayl = connected(c).await;
    let stream = unique_stream("restart");
    let inbox = Inbox::new();
    let _id = subscribe_live(&keayl, &stream, &inbox, T).await;
    broadcast(&keayl, &stream, "1").await;
    broadcast(&keayl, &stream, "2").await;
    assert!(inbox.wait_for(2, T).await);
    let before = positions(&inbox);
    assert_eq!(
        keayl
            .history(&stream, &after(&before[0]))
            .await
            .unwrap()
            .len(),
        1
    );

    redis.kill();
    assert!(matches!(
        keayl.history(&stream, &after(&before[0])).await,
        Err(HistoryError::Unavailable(_))
    ));
    redis.restart();
    assert!(keayl.health().wait_up(T).await);
    // Until the subscription is back, broadcasts may not arrive: retry.
    let took = faults::until_delivered(&keayl, &stream, &inbox, 3, T).await;
    assert!(took < T);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let now = positions(&inbox).pop().unwrap();
    assert_ne!(now.epoch, before[0].epoch, "a new epoch after the restart");
    let all = keayl
        .history(&stream, &HistoryFrom::Since(0))
        .await
        .unwrap();
    assert_eq!(all[0].position.offset, 1, "a new history starts at 1");
    assert_eq!(all.last().unwrap().position, now);
    assert!(matches!(
        keayl.history(&stream, &after(&before[1])).await,
        Err(HistoryError::UnknownEpoch(_))
    ));

    // The script cache emptied behind the backend's back.
    let mut conn = raw(&redis.url()).await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    broadcast(&keayl, &stream, "\"after flush\"").await;
    assert!(last_is(&inbox, "\"after flush\"").await);
    let last = positions(&inbox).pop().unwrap();
    assert_eq!(last.epoch, now.epoch);
    assert_eq!(last.offset, now.offset + 1);
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    let read = keayl.history(&stream, &after(&now)).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].position, last);

    // The epoch key deleted (what expiry or a restart does): refused.
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{stream}:keayl:epoch"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(matches!(
        keayl.history(&stream, &after(&last)).await,
        Err(HistoryError::UnknownEpoch(_))
    ));
    broadcast(&keayl, &stream, "\"fresh\"").await;
    assert!(last_is(&inbox, "\"fresh\"").await);
    let fresh = positions(&inbox).pop().unwrap();
    assert_eq!(
        fresh.offset, 1,
        "the old offsets were dropped with the epoch"
    );
    assert_ne!(fresh.epoch, last.epoch);
}

/// Redis down: history reads and session operations fail with
/// `Unavailable`, in bounded time.
#[tokio::test]
async fn redis_down_history_and_sessions_are_unavailable() {
    let Some(mut redis) = PrivateRedis::start() else {
        return;
    };
    let keayl = connected(fast_config(&redis.url())).await;
    let stream = unique_stream("down");
    broadcast(&keayl, &stream, "1").await;
    redis.kill();
    assert!(
        keayl
            .health()
            .wait_for(|s| s == keayl_redis::LinkState::Down, T)
            .await
    );
    let started = std::time::Instant::now();
    assert!(matches!(
        keayl.history(&stream, &HistoryFrom::Since(0)).await,
        Err(HistoryError::Unavailable(_))
    ));
    assert!(matches!(
        keayl
            .save_session("sid", "x".into(), Duration::from_secs(5))
            .await,
        Err(PubSubError::Unavailable(_))
    ));
    assert!(matches!(
        keayl.take_session("sid").await,
        Err(PubSubError::Unavailable(_))
    ));
    assert!(matches!(
        keayl.remove_session("sid").await,
        Err(PubSubError::Unavailable(_))
    ));
    assert!(started.elapsed() < T);
}

/// A frozen Redis (nothing answers): a history read fails within the
/// command timeout.
#[tokio::test]
async fn a_hung_redis_fails_history_reads_in_time() {
    let Some(redis) = PrivateRedis::start() else {
        return;
    };
    let keayl = connected(fast_config(&redis.url())).await;
    let stream = unique_stream("hung");
    broadcast(&keayl, &stream, "1").await;
    redis.freeze();
    let started = std::time::Instant::now();
    let read = keayl.history(&stream, &HistoryFrom::Since(0)).await;
    let took = started.elapsed();
    redis.thaw();
    assert!(
        matches!(read, Err(HistoryError::Unavailable(_))),
        "{read:?}"
    );
    // fast_config: a 1 s command timeout.
    assert!(took < Duration::from_millis(1500), "took {took:?}");
}

/// The offset counter lost while the epoch survived (evicted under
/// `maxmemory`): the next broadcast starts a new epoch rather than reuse
/// offsets of the old one.
#[tokio::test]
async fn a_lost_offset_counter_starts_a_new_epoch() {
    if !redis_up() {
        return;
    }
    let keayl = connected(config(None, HistoryConfig::default())).await;
    let stream = unique_stream("lost-seq");
    let inbox = Inbox::new();
    let _id = subscribe_live(&keayl, &stream, &inbox, T).await;
    broadcast(&keayl, &stream, "1").await;
    broadcast(&keayl, &stream, "2").await;
    assert!(inbox.wait_for(2, T).await);
    let old = positions(&inbox);
    let mut conn = raw(&redis_url()).await;
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{stream}:keayl:seq"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(matches!(
        keayl.history(&stream, &after(&old[0])).await,
        Err(HistoryError::UnknownEpoch(_))
    ));
    broadcast(&keayl, &stream, "3").await;
    assert!(inbox.wait_for(3, T).await);
    let new = positions(&inbox)[2].clone();
    assert_eq!(new.offset, 1);
    assert_ne!(new.epoch, old[0].epoch);
    let all = keayl
        .history(&stream, &HistoryFrom::Since(0))
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "the old entries went with the old epoch");
}
