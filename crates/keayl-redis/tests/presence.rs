//! Presence on Redis, beyond the conformance suite: the keys a presence set
//! uses and their own expiry (nothing is left behind when every process is
//! gone), concurrent reapers reporting each left id once, a process that
//! dies without leaving, reaps larger than one script run, stream names
//! that look like other keys, and channel prefixes keeping instances apart.
//!
//! Each test uses a channel prefix of its own: a reap takes every due
//! stream under its prefix, so tests sharing one would take each other's
//! expired sessions.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use keayl_broker::BrokerClient;
use keayl_cable::pubsub::conformance::{self, Options, unique_stream};
use keayl_cable::pubsub::{
    External, PresenceError, PresenceLeft, PresenceLimits, PubSub, PubSubClient,
};
use keayl_redis::{RedisClient, RedisConfig, RedisPubSub};

const T: Duration = Duration::from_secs(5);
const KINDS: [&str; 6] = ["sess", "exp", "info", "count", "order", "joins"];

fn redis_up() -> bool {
    require_service("Redis", &host_port(&redis_url()))
}

fn config(prefix: &str) -> RedisConfig {
    let mut c = keayl_redis::config_from_url(&redis_url()).unwrap();
    c.channel_prefix = Some(prefix.to_owned());
    c
}

/// An instance under `prefix`.
async fn instance(prefix: &str) -> RedisPubSub {
    connected(config(prefix)).await
}

fn limits(ttl: Duration) -> PresenceLimits {
    PresenceLimits {
        ttl,
        max_members: 10_000,
    }
}

fn null() -> Bytes {
    Bytes::from_static(b"null")
}

async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn pttl(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(conn).await.unwrap()
}

/// Every key under `prefix` (a unique prefix: few keys).
async fn keys_under(conn: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(conn)
        .await
        .unwrap();
    keys.sort();
    keys
}

/// Reap with `p` every few milliseconds until `until`.
async fn reap_until(p: Arc<RedisPubSub>, until: Instant) -> Vec<PresenceLeft> {
    let mut left = Vec::new();
    while Instant::now() < until {
        left.extend(p.client().presence_reap().await.expect("reap"));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    left
}

/// A joined stream's keys all carry an expiry (the latest session's plus a
/// margin), as does the index, so they vanish even when no process is left
/// to reap; touching extends them; the last leave deletes them.
#[tokio::test]
async fn keys_expire_on_their_own() {
    if !redis_up() {
        return;
    }
    let prefix = unique_stream("presence-keys");
    let p = instance(&prefix).await;
    let stream = "room:1";
    let short = limits(Duration::from_secs(1));
    assert!(
        p.client()
            .presence_join(stream, "s1", "42", null(), short)
            .await
            .unwrap()
            .joined
    );
    p.client()
        .presence_join(stream, "s2", "7", null(), short)
        .await
        .unwrap();
    let mut conn = raw().await;
    let index = format!("{prefix}:keayl:presence:due");
    let mut expected: Vec<String> = KINDS
        .iter()
        .map(|kind| format!("{prefix}:keayl:presence:{stream}:{kind}"))
        .chain([index.clone()])
        .collect();
    expected.sort();
    assert_eq!(keys_under(&mut conn, &prefix).await, expected);
    for key in &expected {
        let left = pttl(&mut conn, key).await;
        // 1 s of session, 60 s of margin.
        assert!(
            (55_000..=61_000).contains(&left),
            "{key}: PTTL {left} without any reap"
        );
    }
    let due: Option<f64> = redis::cmd("ZSCORE")
        .arg(&index)
        .arg(stream)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(due.is_some(), "the stream is in the index");

    p.client()
        .presence_touch(stream, vec!["s1".into()], Duration::from_secs(30))
        .await
        .unwrap();
    for key in &expected {
        let left = pttl(&mut conn, key).await;
        assert!((85_000..=90_000).contains(&left), "{key}: PTTL {left}");
    }

    assert_eq!(
        p.client().presence_leave(stream, "s1").await.unwrap(),
        Some("42".into())
    );
    assert_eq!(
        p.client().presence_leave(stream, "s2").await.unwrap(),
        Some("7".into())
    );
    assert_eq!(
        keys_under(&mut conn, &prefix).await,
        Vec::<String>::new(),
        "the last leave removes every key, the index entry too"
    );
}

/// Two processes reaping in a loop while 50 sessions of distinct ids expire
/// report each id exactly once between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reapers_report_each_id_once() {
    if !redis_up() {
        return;
    }
    let prefix = unique_stream("presence-reapers");
    let a = Arc::new(instance(&prefix).await);
    let b = Arc::new(instance(&prefix).await);
    let ttl = limits(Duration::from_millis(300));
    let mut wanted = HashSet::new();
    for n in 0..50 {
        let stream = format!("room:{}", n % 5);
        let id = format!("user-{n}");
        let joiner = if n % 2 == 0 { &a } else { &b };
        assert!(
            joiner
                .client()
                .presence_join(&stream, &format!("s{n}"), &id, null(), ttl)
                .await
                .unwrap()
                .joined
        );
        wanted.insert((stream, id));
    }
    let until = Instant::now() + Duration::from_millis(1500);
    let (ra, rb) = tokio::join!(
        tokio::spawn(reap_until(a.clone(), until)),
        tokio::spawn(reap_until(b.clone(), until))
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let all: Vec<(String, String)> = ra
        .iter()
        .chain(&rb)
        .map(|l| (l.stream.clone(), l.id.clone()))
        .collect();
    assert_eq!(
        all.len(),
        50,
        "each id once: a {}, b {}",
        ra.len(),
        rb.len()
    );
    let got: HashSet<_> = all.into_iter().collect();
    assert_eq!(got, wanted);
    for n in 0..5 {
        assert_eq!(
            a.client()
                .presence_info(&format!("room:{n}"))
                .await
                .unwrap()
                .total,
            0
        );
    }
    assert!(keys_under(&mut raw().await, &prefix).await.is_empty());
}

/// A process that dies without leaving: its sessions stay until their ttl,
/// then another process's reap reports the leave.
#[tokio::test]
async fn a_dead_process_is_reaped_by_another() {
    if !redis_up() {
        return;
    }
    let prefix = unique_stream("presence-dead");
    let a = instance(&prefix).await;
    let b = instance(&prefix).await;
    let stream = "lobby";
    let ttl = limits(Duration::from_millis(500));
    a.client()
        .presence_join(
            stream,
            "tab",
            "alice",
            Bytes::from_static(b"{\"n\":1}"),
            ttl,
        )
        .await
        .unwrap();
    a.shutdown();
    drop(a);
    let set = b.client().presence_info(stream).await.unwrap();
    assert_eq!(set.total, 1);
    assert_eq!(set.members[0].id, "alice");
    assert_eq!(&set.members[0].info[..], b"{\"n\":1}");
    assert_eq!(
        b.client().presence_reap().await.unwrap(),
        vec![],
        "not expired yet"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        b.client().presence_reap().await.unwrap(),
        vec![PresenceLeft {
            stream: stream.into(),
            id: "alice".into()
        }]
    );
    assert_eq!(
        b.client().presence_reap().await.unwrap(),
        vec![],
        "reported once"
    );
    assert_eq!(b.client().presence_info(stream).await.unwrap().total, 0);
}

/// One reap takes more than one script run's worth of expired sessions
/// (a run removes at most 1000).
#[tokio::test]
async fn a_reap_takes_every_expired_session() {
    if !redis_up() {
        return;
    }
    let prefix = unique_stream("presence-many");
    let p = instance(&prefix).await;
    let ttl = limits(Duration::from_millis(300));
    let joins = (0..1500).map(|n| {
        let stream = if n % 3 == 0 { "big" } else { "bigger" };
        let (session, id) = (format!("s{n}"), format!("u{n}"));
        let p = &p;
        async move {
            p.client()
                .presence_join(stream, &session, &id, null(), ttl)
                .await
        }
    });
    for joined in futures_util::future::join_all(joins).await {
        assert!(joined.unwrap().joined);
    }
    assert_eq!(
        p.client().presence_info("bigger").await.unwrap().total,
        1000
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let left = p.client().presence_reap().await.unwrap();
    assert_eq!(left.len(), 1500);
    let distinct: HashSet<_> = left.iter().map(|l| &l.id).collect();
    assert_eq!(distinct.len(), 1500);
    assert!(keys_under(&mut raw().await, &prefix).await.is_empty());
}

/// Stream names are opaque: ones that look like history or session keys,
/// or hold the key separator, make presence keys of their own, each ending
/// with its kind (never a history key's suffix).
#[tokio::test]
async fn odd_stream_names_stay_apart() {
    if !redis_up() {
        return;
    }
    let prefix = unique_stream("presence-names");
    let p = instance(&prefix).await;
    let ttl = limits(Duration::from_secs(30));
    let streams = [
        "x:keayl:hist",
        "x:keayl:seq",
        "keayl:session:abc",
        "due",
        "",
        "a:sess",
        "é 🦀\n",
    ];
    for (n, stream) in streams.iter().enumerate() {
        assert!(
            p.client()
                .presence_join(stream, "s", &n.to_string(), null(), ttl)
                .await
                .unwrap()
                .joined
        );
    }
    for (n, stream) in streams.iter().enumerate() {
        let set = p.client().presence_info(stream).await.unwrap();
        assert_eq!(set.total, 1, "{stream:?}");
        assert_eq!(set.members[0].id, n.to_string(), "{stream:?}");
    }
    let mut conn = raw().await;
    let keys = keys_under(&mut conn, &prefix).await;
    assert_eq!(keys.len(), streams.len() * KINDS.len() + 1);
    for key in &keys {
        assert!(
            key == &format!("{prefix}:keayl:presence:due")
                || KINDS.iter().any(|k| key.ends_with(&format!(":{k}"))),
            "{key:?}"
        );
    }
    for (n, stream) in streams.iter().enumerate() {
        assert_eq!(
            p.client().presence_leave(stream, "s").await.unwrap(),
            Some(n.to_string())
        );
    }
    assert!(keys_under(&mut conn, &prefix).await.is_empty());
}

/// Instances under different channel prefixes keep separate presence sets
/// and reap only their own.
#[tokio::test]
async fn prefixes_keep_presence_apart() {
    if !redis_up() {
        return;
    }
    let one = instance(&unique_stream("presence-one")).await;
    let two = instance(&unique_stream("presence-two")).await;
    let short = PresenceLimits {
        ttl: Duration::from_millis(200),
        max_members: 1,
    };
    one.client()
        .presence_join("room", "s1", "a", null(), short)
        .await
        .unwrap();
    // The bound is per set: `two`'s set of the same stream is empty.
    assert!(
        two.client()
            .presence_join("room", "s1", "b", null(), short)
            .await
            .unwrap()
            .joined
    );
    assert_eq!(
        two.client()
            .presence_join("room", "s2", "c", null(), short)
            .await,
        Err(PresenceError::Full(1))
    );
    assert_eq!(
        one.client().presence_info("room").await.unwrap().members[0].id,
        "a"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let reaped = one.client().presence_reap().await.unwrap();
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].id, "a");
    assert_eq!(two.client().presence_reap().await.unwrap()[0].id, "b");
}

/// The client alone ([`External`] over [`RedisClient`], as
/// `keayl_broker::BrokerPubSub` wraps it) passes the conformance check.
/// (The other tests call the client too, through
/// [`RedisPubSub::client`].)
#[tokio::test]
async fn the_client_passes_the_presence_check() {
    if !redis_up() {
        return;
    }
    let prefix = unique_stream("presence-conformance");
    let factory = move || {
        let config = config(&prefix);
        async move {
            let client = RedisClient::start(config).expect("client starts");
            assert!(client.link().wait_up(T).await, "client did not connect");
            Arc::new(External::new(client)) as Arc<dyn PubSub>
        }
    };
    let options = Options {
        presence: true,
        ..Options::networked()
    };
    conformance::presence_is_shared(&factory, &options).await;
}

/// Presence needs no history: with history off (scripts then go by `EVAL`
/// until Redis caches them) it works the same.
#[tokio::test]
async fn presence_without_history() {
    if !redis_up() {
        return;
    }
    let mut c = config(&unique_stream("presence-nohist"));
    c.history = keayl_cable::pubsub::HistoryConfig::off();
    let p = connected(c).await;
    let ttl = limits(Duration::from_secs(30));
    assert!(
        p.client()
            .presence_join("r", "s", "1", null(), ttl)
            .await
            .unwrap()
            .joined
    );
    assert_eq!(p.client().presence_info("r").await.unwrap().total, 1);
    assert_eq!(
        p.client().presence_leave("r", "s").await.unwrap(),
        Some("1".into())
    );
}
