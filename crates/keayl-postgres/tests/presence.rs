//! Presence in PostgreSQL under concurrency, against the machine's
//! database (`KEAYL_POSTGRES_URL`): concurrent reaps report each left id
//! once, concurrent joins of one id report one join, a bounded set admits
//! exactly its bound, and the sessions of a process that died are reaped
//! by another after their TTL. Every test uses a `channel_prefix` of its
//! own, so reaps of other tests (or other test runs sharing the database)
//! never take its sessions.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::future::join_all;
use keayl_broker::BrokerClient;
use keayl_cable::pubsub::conformance::{self, Options};
use keayl_cable::pubsub::{
    External, PresenceError, PresenceLeft, PresenceLimits, PubSub, PubSubClient,
};
use keayl_postgres::{PostgresClient, PostgresConfig};

const LONG: PresenceLimits = PresenceLimits {
    ttl: Duration::from_secs(60),
    max_members: 1000,
};

/// A prefix no other test (or process) uses.
fn unique_prefix(label: &str) -> String {
    unique_app_name(&format!("presence-{label}"))
}

/// A connected client with `prefix` (one process, as far as presence goes).
async fn client(prefix: &str) -> Arc<PostgresClient> {
    let mut config = PostgresConfig::from_url(&pg_url()).unwrap();
    config.channel_prefix = Some(prefix.to_owned());
    let c = PostgresClient::start(config).expect("client starts");
    assert!(
        c.link().wait_up(Duration::from_secs(10)).await,
        "client did not connect: {:?}",
        c.link()
    );
    Arc::new(c)
}

fn null() -> Bytes {
    Bytes::from_static(b"null")
}

/// The conformance check through the client itself (`External` over it),
/// with a prefix of its own.
#[tokio::test]
async fn the_client_passes_the_presence_check() {
    if !require_pg() {
        return;
    }
    let prefix = unique_prefix("check");
    let factory = {
        let prefix = prefix.clone();
        move || {
            let prefix = prefix.clone();
            async move {
                let c = client(&prefix).await;
                Arc::new(External::from_arc(c)) as Arc<dyn PubSub>
            }
        }
    };
    let options = Options {
        presence: true,
        ..Options::networked()
    };
    conformance::presence_is_shared(&factory, &options).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reaps_report_each_left_id_once() {
    if !require_pg() {
        return;
    }
    let prefix = unique_prefix("reap");
    let (a, b) = (client(&prefix).await, client(&prefix).await);
    let short = PresenceLimits {
        ttl: Duration::from_millis(300),
        ..LONG
    };
    // 50 ids over 5 streams, one short session each; plus, in the same
    // streams, ids with a live session (one of them also with a short
    // one): those never leave.
    let streams: Vec<String> = (0..5).map(|i| format!("room-{i}")).collect();
    let mut want = Vec::new();
    let mut joins = Vec::new();
    for n in 0..50 {
        let stream = streams[n % 5].clone();
        let id = format!("user-{n}");
        want.push((stream.clone(), id.clone()));
        let c = if n % 2 == 0 { a.clone() } else { b.clone() };
        joins.push(async move {
            c.presence_join(&stream, &format!("s-{n}"), &id, null(), short)
                .await
        });
    }
    let stays = streams.iter().enumerate().map(|(n, stream)| {
        let (a, b) = (a.clone(), b.clone());
        async move {
            let id = format!("stays-{n}");
            a.presence_join(stream, &format!("live-{n}"), &id, null(), LONG)
                .await?;
            b.presence_join(stream, &format!("short-{n}"), &id, null(), short)
                .await
        }
    });
    let (joined, stayed) = tokio::join!(join_all(joins), join_all(stays));
    for joined in joined.into_iter().chain(stayed) {
        joined.expect("join");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Four reaps at once, two per client.
    let reaps = join_all([
        a.presence_reap(),
        b.presence_reap(),
        a.presence_reap(),
        b.presence_reap(),
    ])
    .await;
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for reaped in reaps {
        for PresenceLeft { stream, id } in reaped.expect("reap") {
            *seen.entry((stream, id)).or_default() += 1;
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "reported more than once: {twice:?}");
    let mut got: Vec<_> = seen.into_keys().collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "each expired id once, no id with a live session");
    assert!(a.presence_reap().await.expect("reap").is_empty());
    for (n, stream) in streams.iter().enumerate() {
        let set = b.presence_info(stream).await.expect("info");
        assert_eq!(set.total, 1, "{stream}: {set:?}");
        assert_eq!(set.members[0].id, format!("stays-{n}"));
        assert_eq!(
            a.presence_leave(stream, &format!("live-{n}"))
                .await
                .expect("leave"),
            Some(format!("stays-{n}"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_joins_of_one_id_report_one_join() {
    if !require_pg() {
        return;
    }
    let prefix = unique_prefix("join");
    let (a, b) = (client(&prefix).await, client(&prefix).await);
    let stream = "room";
    let info = Bytes::from_static(b"{\"name\":\"Jack\"}");
    let joins = (0..20).map(|n| {
        let c = if n % 2 == 0 { a.clone() } else { b.clone() };
        let info = info.clone();
        async move {
            c.presence_join(stream, &format!("tab-{n}"), "42", info, LONG)
                .await
        }
    });
    let joined: Vec<_> = join_all(joins)
        .await
        .into_iter()
        .map(|j| j.expect("join"))
        .collect();
    assert_eq!(
        joined.iter().filter(|j| j.joined).count(),
        1,
        "one join: {joined:?}"
    );
    assert!(joined.iter().all(|j| j.left.is_none()));
    let set = a.presence_info(stream).await.expect("info");
    assert_eq!(set.total, 1, "{set:?}");
    assert_eq!(
        (set.members[0].id.as_str(), &set.members[0].info),
        ("42", &info)
    );
    // And the 20 sessions leaving at once: one leave.
    let leaves = (0..20).map(|n| {
        let c = if n % 2 == 0 { b.clone() } else { a.clone() };
        async move { c.presence_leave(stream, &format!("tab-{n}")).await }
    });
    let left: Vec<_> = join_all(leaves)
        .await
        .into_iter()
        .map(|l| l.expect("leave"))
        .collect();
    assert_eq!(
        left.iter().flatten().collect::<Vec<_>>(),
        ["42"],
        "one leave: {left:?}"
    );
    assert_eq!(b.presence_info(stream).await.expect("info").total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_joins_of_new_ids_respect_the_bound() {
    if !require_pg() {
        return;
    }
    let prefix = unique_prefix("bound");
    let (a, b) = (client(&prefix).await, client(&prefix).await);
    let limits = PresenceLimits {
        max_members: 3,
        ..LONG
    };
    let joins = (0..12).map(|n| {
        let c = if n % 2 == 0 { a.clone() } else { b.clone() };
        async move {
            c.presence_join(
                "room",
                &format!("s-{n}"),
                &format!("id-{n}"),
                null(),
                limits,
            )
            .await
        }
    });
    let results = join_all(joins).await;
    let admitted = results
        .iter()
        .filter(|r| matches!(r, Ok(j) if j.joined))
        .count();
    let refused = results
        .iter()
        .filter(|r| **r == Err(PresenceError::Full(3)))
        .count();
    assert_eq!((admitted, refused), (3, 9), "{results:?}");
    let set = a.presence_info("room").await.expect("info");
    assert_eq!(set.total, 3, "{set:?}");
    for n in 0..12 {
        let _ = b.presence_leave("room", &format!("s-{n}")).await;
    }
    assert_eq!(a.presence_info("room").await.expect("info").total, 0);
}

#[tokio::test]
async fn a_dead_process_is_reaped_by_another_after_the_ttl() {
    if !require_pg() {
        return;
    }
    let prefix = unique_prefix("dead");
    let survivor = client(&prefix).await;
    let limits = PresenceLimits {
        ttl: Duration::from_millis(1500),
        ..LONG
    };
    {
        let dead = client(&prefix).await;
        let joined = dead
            .presence_join("room", "tab-1", "42", null(), limits)
            .await
            .expect("join");
        assert!(joined.joined);
        dead.shutdown();
        // Dropped: its connection closes, nothing more touches the session.
    }
    let set = survivor.presence_info("room").await.expect("info");
    assert_eq!(set.total, 1, "still present within the TTL: {set:?}");
    assert_eq!(
        survivor.presence_reap().await.expect("reap"),
        Vec::new(),
        "not expired yet"
    );
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(
        survivor.presence_reap().await.expect("reap"),
        [PresenceLeft {
            stream: "room".into(),
            id: "42".into()
        }]
    );
    assert_eq!(
        survivor.presence_reap().await.expect("reap"),
        Vec::new(),
        "once"
    );
    assert_eq!(survivor.presence_info("room").await.expect("info").total, 0);
}

#[tokio::test]
async fn prefixes_keep_presence_apart() {
    if !require_pg() {
        return;
    }
    let (p, q) = (unique_prefix("p"), unique_prefix("q"));
    let (a, b) = (client(&p).await, client(&q).await);
    let short = PresenceLimits {
        ttl: Duration::from_millis(100),
        ..LONG
    };
    assert!(
        a.presence_join("room", "s", "1", null(), short)
            .await
            .expect("join")
            .joined
    );
    assert!(
        b.presence_join("room", "s", "2", null(), LONG)
            .await
            .expect("join")
            .joined,
        "another prefix is another set"
    );
    assert_eq!(
        b.presence_info("room").await.expect("info").members[0].id,
        "2"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        b.presence_reap().await.expect("reap"),
        Vec::new(),
        "not b's to reap"
    );
    assert_eq!(a.presence_reap().await.expect("reap").len(), 1);
    assert_eq!(
        b.presence_leave("room", "s")
            .await
            .expect("leave")
            .as_deref(),
        Some("2")
    );
}

#[tokio::test]
async fn odd_input_is_refused_or_ignored_without_panicking() {
    if !require_pg() {
        return;
    }
    let a = client(&unique_prefix("odd")).await;
    assert!(matches!(
        a.presence_join("ro\0om", "s", "1", null(), LONG).await,
        Err(PresenceError::Unavailable(_))
    ));
    assert_eq!(a.presence_leave("ro\0om", "s").await, Ok(None));
    assert_eq!(
        a.presence_touch("room", vec!["s\0".into()], LONG.ttl).await,
        Ok(vec!["s\0".to_owned()])
    );
    assert_eq!(a.presence_info("ro\0om").await.expect("info").total, 0);
    // Info that is not UTF-8, a zero bound, a zero and a huge TTL.
    let odd = Bytes::from_static(&[0xff, 0x00, 0xfe]);
    let huge = PresenceLimits {
        ttl: Duration::MAX,
        max_members: usize::MAX,
    };
    a.presence_join("room", "s", "é", odd.clone(), huge)
        .await
        .expect("join");
    assert_eq!(
        a.presence_info("room").await.expect("info").members[0].info,
        odd
    );
    let none = PresenceLimits {
        ttl: Duration::ZERO,
        max_members: 0,
    };
    assert_eq!(
        a.presence_join("room", "t", "other", null(), none).await,
        Err(PresenceError::Full(0))
    );
    assert_eq!(a.presence_leave("room", "s").await, Ok(Some("é".into())));
}
