//! Faults, against a `redis-server` each test starts on its own port: the
//! broker is killed and restarted, frozen (a silent network cut), or absent
//! at start. The backend must report the outage (logs and `Health`), fail
//! broadcasts loudly while down, reconnect, re-subscribe every live stream,
//! and deliver again within 5 s of the broker's return.

mod common;

use std::time::{Duration, Instant};

use common::*;
use keayl_cable::pubsub::conformance::{Inbox, subscribe_live, unique_stream};
use keayl_cable::pubsub::{PubSub, PubSubError};
use keayl_redis::{LinkState, RedisPubSub};

const T: Duration = Duration::from_secs(5);

fn private_redis() -> Option<PrivateRedis> {
    require_program("redis-server").then(PrivateRedis::start)
}

/// Broadcast `message` from `from` every 50 ms until `inbox` has `n`
/// messages; returns how long it took (panics after `limit`).
async fn until_delivered(
    from: &RedisPubSub,
    stream: &str,
    inbox: &Inbox,
    n: usize,
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let _ = from.broadcast(stream, "\"probe\"".into()).await;
        if inbox.wait_for(n, Duration::from_millis(50)).await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "no delivery within {limit:?}: {:?}",
            from.health()
        );
    }
}

#[tokio::test]
async fn kill_and_restart_resubscribes_and_reports_the_outage() {
    let Some(mut redis) = private_redis() else {
        return;
    };
    let logs = Logs::capture();
    let mut config = fast_config(&redis.url());
    config.subscribe_timeout = Duration::from_secs(10);
    let a = connected(config.clone()).await;
    let b = connected(config).await;
    let live = unique_stream("fault-live");
    let inbox = Inbox::new();
    let _id = subscribe_live(&a, &live, &inbox, T).await;
    b.broadcast(&live, "\"before\"".into()).await.unwrap();
    assert!(inbox.wait_for(1, T).await);

    redis.kill();
    assert!(
        a.health().wait_for(|s| s == LinkState::Down, T).await,
        "outage not noticed"
    );
    assert!(
        b.health().wait_for(|s| s == LinkState::Down, T).await,
        "outage not noticed"
    );

    // Broadcasts while down fail and are counted.
    // The cable's metrics/health hook sees the outage.
    assert!(!a.stats().healthy && !b.stats().healthy);
    let err = b.broadcast(&live, "\"during\"".into()).await.unwrap_err();
    assert!(matches!(err, PubSubError::Unavailable(_)), "{err:?}");
    assert!(b.health().lost_broadcast_count() >= 1);
    // A subscription made while down is not live before the broker is back.
    let pending_stream = unique_stream("fault-pending");
    let pending_inbox = Inbox::new();
    let pending = a.subscribe(&pending_stream, pending_inbox.callback());
    let mut ready = pending.ready;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut ready)
            .await
            .is_err(),
        "a subscription went live while the broker was down"
    );

    redis.restart();
    let took = until_delivered(&b, &live, &inbox, 2, T).await;
    assert!(took < T, "broadcasts flowed again only after {took:?}");
    tokio::time::timeout(T, ready)
        .await
        .expect("pending subscription")
        .expect("pending subscription goes live");
    b.broadcast(&pending_stream, "\"now\"".into())
        .await
        .unwrap();
    assert!(pending_inbox.wait_for(1, T).await);

    let stats = a.stats();
    assert!(stats.healthy && stats.reconnects >= 1, "{stats:?}");
    assert!(b.stats().lost_broadcasts >= 1);
    for h in [a.health(), b.health()] {
        let s = h.status();
        assert_eq!(s.state, LinkState::Up);
        assert!(s.outages >= 1 && s.reconnects >= 1, "{s}");
    }
    assert!(b.health().status().lost_broadcasts >= 1);
    let port = format!("127.0.0.1:{}", redis.port);
    for what in [
        "connection lost",
        "connection restored",
        "broadcast not published",
    ] {
        assert!(
            logs.has_line(&[what, &port]),
            "{what:?} not logged for {port}:\n{}",
            logs.text()
        );
    }
}

#[tokio::test]
async fn a_frozen_broker_is_detected_by_the_health_check() {
    let Some(redis) = private_redis() else { return };
    let mut config = fast_config(&redis.url());
    config.health_check_interval = Duration::from_millis(200);
    config.command_timeout = Duration::from_millis(300);
    config.connect_timeout = Duration::from_millis(300);
    let a = connected(config.clone()).await;
    let b = connected(config).await;
    let stream = unique_stream("frozen");
    let inbox = Inbox::new();
    let _id = subscribe_live(&a, &stream, &inbox, T).await;

    redis.freeze();
    assert!(
        a.health().wait_for(|s| s == LinkState::Down, T).await,
        "a silent broker was not noticed: {:?}",
        a.health()
    );
    // Publishing to a frozen broker times out with an error, never hangs.
    let started = Instant::now();
    assert!(b.broadcast(&stream, "\"x\"".into()).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(2));

    redis.thaw();
    until_delivered(&b, &stream, &inbox, 1, T).await;
    assert!(a.health().reconnect_count() >= 1);
}

#[tokio::test]
async fn starting_without_a_broker_then_it_appears() {
    if !require_program("redis-server") {
        return;
    }
    let port = free_port();
    let mut config = fast_config(&format!("redis://127.0.0.1:{port}"));
    config.subscribe_timeout = Duration::from_millis(300);
    let a = RedisPubSub::new(config).unwrap();
    assert!(a.health().wait_for(|s| s == LinkState::Down, T).await);
    assert_eq!(a.health().outage_count(), 1);

    // While down: broadcasts fail, subscriptions time out (the cable then
    // rejects them instead of holding the client).
    assert!(a.broadcast("s", "1".into()).await.is_err());
    assert_eq!(a.health().lost_broadcast_count(), 1);
    let sub = a.subscribe("s", Inbox::new().callback());
    assert!(matches!(sub.ready.await, Err(PubSubError::Unavailable(_))));
    a.unsubscribe(sub.id);

    let _redis = PrivateRedis::start_on(port);
    assert!(a.health().wait_up(T).await, "{:?}", a.health());
    let inbox = Inbox::new();
    let stream = unique_stream("late");
    let _id = subscribe_live(&a, &stream, &inbox, T).await;
    a.broadcast(&stream, "\"hi\"".into()).await.unwrap();
    assert!(inbox.wait_for(1, T).await);
}

async fn connected_clients(url: &str) -> usize {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn dropping_the_backend_ends_its_task_and_connections() {
    let Some(redis) = private_redis() else { return };
    let baseline = connected_clients(&redis.url()).await; // includes the probe itself
    let a = connected(fast_config(&redis.url())).await;
    let health = a.health();
    let inbox = Inbox::new();
    let stream = unique_stream("drop");
    let _id = subscribe_live(&a, &stream, &inbox, T).await;
    assert_eq!(
        connected_clients(&redis.url()).await,
        baseline + 2,
        "one subscriber + one publisher connection"
    );
    drop(a);
    assert!(
        health.wait_for(|s| s == LinkState::Closed, T).await,
        "supervisor still running"
    );
    let deadline = Instant::now() + T;
    while connected_clients(&redis.url()).await != baseline {
        assert!(
            Instant::now() < deadline,
            "connections left open after drop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn shutdown_fails_pending_and_later_subscriptions() {
    let port = free_port(); // nothing listens: subscriptions stay pending
    let mut config = fast_config(&format!("redis://127.0.0.1:{port}"));
    config.subscribe_timeout = Duration::from_secs(30);
    let a = RedisPubSub::new(config).unwrap();
    let pending = a.subscribe("x", Inbox::new().callback());
    a.shutdown();
    assert_eq!(
        tokio::time::timeout(T, pending.ready).await.unwrap(),
        Err(PubSubError::Closed)
    );
    assert!(a.health().wait_for(|s| s == LinkState::Closed, T).await);
    let later = a.subscribe("y", Inbox::new().callback());
    assert_eq!(later.ready.await, Err(PubSubError::Closed));
    assert!(a.broadcast("y", "1".into()).await.is_err());
}
