//! Faults: a PostgreSQL server of the test's own is crash-stopped and
//! restarted, the listener's backend is frozen (a silent network cut) or
//! terminated by an administrator, or the database is absent at start. The
//! backend must report the outage (logs and `Health`), fail broadcasts
//! loudly while down, reconnect, re-LISTEN every live stream, and deliver
//! again within 5 s of the database's return.

mod common;

use std::time::{Duration, Instant};

use common::faults::until_delivered;
use common::*;
use keayl_cable::pubsub::conformance::{Inbox, subscribe_live, unique_stream};
use keayl_cable::pubsub::{PubSub, PubSubError};
use keayl_postgres::LinkState;

const T: Duration = Duration::from_secs(5);

/// The pids of the sessions named `app`.
async fn backend_pids(url: &str, app: &str) -> Vec<i32> {
    let client = raw_client(url).await;
    client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn crash_and_restart_relistens_and_reports_the_outage() {
    let Some(mut pg) = PrivatePostgres::start() else {
        return;
    };
    let logs = Logs::capture();
    let mut config = fast_config(&pg.url());
    config.subscribe_timeout = Duration::from_secs(15);
    let a = connected(config.clone()).await;
    let b = connected(config).await;
    let live = unique_stream("fault-live");
    let long_live = format!("{}:{}", unique_stream("fault-long"), "z".repeat(70)); // hashed name
    let inbox = Inbox::new();
    let long_inbox = Inbox::new();
    let _id = subscribe_live(&a, &live, &inbox, T).await;
    let _id2 = subscribe_live(&a, &long_live, &long_inbox, T).await;
    b.broadcast(&live, "\"before\"".into()).await.unwrap();
    assert!(inbox.wait_for(1, T).await);

    pg.kill();
    assert!(
        a.health().wait_for(|s| s == LinkState::Down, T).await,
        "outage not noticed"
    );
    assert!(
        b.health().wait_for(|s| s == LinkState::Down, T).await,
        "outage not noticed"
    );
    // The cable's metrics/health hook sees the outage.
    assert!(!a.stats().healthy && !b.stats().healthy);
    let err = b.broadcast(&live, "\"during\"".into()).await.unwrap_err();
    assert!(matches!(err, PubSubError::Unavailable(_)), "{err:?}");
    assert!(b.health().lost_broadcast_count() >= 1);
    let pending_stream = unique_stream("fault-pending");
    let pending_inbox = Inbox::new();
    let pending = a.subscribe(&pending_stream, pending_inbox.callback());
    let mut ready = pending.ready;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut ready)
            .await
            .is_err(),
        "a subscription went live while the database was down"
    );

    pg.restart();
    let took = until_delivered(&b, &live, &inbox, 2, T).await;
    assert!(took < T, "broadcasts flowed again only after {took:?}");
    until_delivered(&b, &long_live, &long_inbox, 1, T).await;
    tokio::time::timeout(T, ready)
        .await
        .expect("pending subscription")
        .expect("pending subscription goes live");
    b.broadcast(&pending_stream, "\"now\"".into())
        .await
        .unwrap();
    assert!(pending_inbox.wait_for(1, T).await);
    // A large payload after the restart (the spill table is recreated).
    let big = keayl_cable::pubsub::conformance::json_text_of_len(50_000);
    b.broadcast(&live, big.clone().into()).await.unwrap();
    assert!(
        eventually_contains(&inbox, &big).await,
        "spilled payload after restart"
    );

    let stats = a.stats();
    assert!(stats.healthy && stats.reconnects >= 1, "{stats:?}");
    assert!(b.stats().lost_broadcasts >= 1);
    for h in [a.health(), b.health()] {
        let s = h.status();
        assert_eq!(s.state, LinkState::Up);
        assert!(s.outages >= 1 && s.reconnects >= 1, "{s}");
    }
    let port = format!("127.0.0.1:{}", pg.port);
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

async fn eventually_contains(inbox: &Inbox, text: &str) -> bool {
    keayl_cable::pubsub::conformance::eventually(T, || inbox.texts().iter().any(|t| t == text))
        .await
}

#[tokio::test]
async fn a_frozen_backend_is_detected_by_the_health_check() {
    let Some(pg) = PrivatePostgres::start() else {
        return;
    };
    let app = unique_app_name("frozen");
    let mut config = fast_config(&with_app_name(&pg.url(), &app));
    config.health_check_interval = Duration::from_millis(200);
    config.command_timeout = Duration::from_millis(300);
    config.connect_timeout = Duration::from_millis(500);
    let a = connected(config).await;
    let b = connected(fast_config(&pg.url())).await;
    let stream = unique_stream("frozen");
    let inbox = Inbox::new();
    let _id = subscribe_live(&a, &stream, &inbox, T).await;
    let pids = backend_pids(&pg.url(), &app).await;
    assert_eq!(pids.len(), 1, "one connection per process");

    let frozen = Frozen::new(pids[0]);
    assert!(
        a.health().wait_for(|s| s == LinkState::Down, T).await,
        "a silent backend was not noticed: {:?}",
        a.health()
    );
    // Broadcasting through the frozen connection fails with an error in
    // bounded time, never hangs.
    let started = Instant::now();
    let _ = a.broadcast(&stream, "\"x\"".into()).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    // The backend reconnects on a fresh connection while the old one is frozen.
    until_delivered(&b, &stream, &inbox, 1, T).await;
    assert!(a.health().reconnect_count() >= 1);
    drop(frozen);
}

#[tokio::test]
async fn a_terminated_backend_reconnects() {
    if !require_pg() {
        return;
    }
    let app = unique_app_name("terminated");
    let a = connected(fast_config(&with_app_name(&pg_url(), &app))).await;
    let b = connected(fast_config(&pg_url())).await;
    let stream = unique_stream("terminated");
    let inbox = Inbox::new();
    let _id = subscribe_live(&a, &stream, &inbox, T).await;
    let admin = raw_client(&pg_url()).await;
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap();
    let took = until_delivered(&b, &stream, &inbox, 1, T).await;
    assert!(took < T);
    assert!(a.health().wait_up(T).await);
    assert!(
        a.health().outage_count() >= 1 && a.health().reconnect_count() >= 1,
        "{:?}",
        a.health()
    );
}

#[tokio::test]
async fn starting_without_a_database_then_it_appears() {
    faults::starting_without_a_broker::<Postgres>().await;
}

#[tokio::test]
async fn shutdown_fails_pending_and_later_subscriptions() {
    faults::shutdown_fails_subscriptions::<Postgres>().await;
}

/// One LISTEN connection per process, closed on drop (the shared check,
/// on a private server).
#[tokio::test]
async fn dropping_the_backend_closes_its_connection() {
    faults::dropping_closes_connections::<Postgres>().await;
}

#[tokio::test]
async fn dropping_the_backend_ends_its_task_and_connection() {
    if !require_pg() {
        return;
    }
    let app = unique_app_name("drop");
    let a = connected(fast_config(&with_app_name(&pg_url(), &app))).await;
    let health = a.health();
    let inbox = Inbox::new();
    let stream = unique_stream("drop");
    let _id = subscribe_live(&a, &stream, &inbox, T).await;
    assert_eq!(backend_pids(&pg_url(), &app).await.len(), 1);
    assert_eq!(a.subscriber_count(&stream).await.unwrap(), 1);
    drop(a);
    assert!(
        health.wait_for(|s| s == LinkState::Closed, T).await,
        "supervisor still running"
    );
    let deadline = Instant::now() + T;
    while !backend_pids(&pg_url(), &app).await.is_empty() {
        assert!(Instant::now() < deadline, "connection left open after drop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its registration no longer counts.
    let b = connected(fast_config(&pg_url())).await;
    assert_eq!(b.subscriber_count(&stream).await.unwrap(), 0);
}
