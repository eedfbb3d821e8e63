//! The fault checks every networked backend passes, against a broker
//! process each test starts on its own port: the broker is killed and
//! restarted, frozen (a silent network cut), absent at start, or the backend
//! is dropped or shut down. The backend must report the outage (logs and
//! `Health`), fail broadcasts loudly while down, reconnect, subscribe every
//! live stream again, and deliver within 5 s of the broker's return.
//!
//! Included next to `broker.rs` by a backend's `tests/common/mod.rs`
//! (`#[path = "../../../keayl-cable/tests/support/faults.rs"] pub mod faults;`),
//! which implements [`TestBackend`] for its broker; its `tests/faults.rs`
//! then runs each check (and adds what is specific to its broker).

use std::future::Future;
use std::time::{Duration, Instant};

use keayl_broker::{BrokerClient, BrokerConfig, BrokerPubSub, LinkState};
use keayl_cable::pubsub::conformance::{Inbox, subscribe_live, unique_stream};
use keayl_cable::pubsub::{PubSub, PubSubError};

use super::support::{Logs, free_port};

const T: Duration = Duration::from_secs(5);

/// A broker server of the test's own.
pub trait PrivateBroker: Sized {
    /// Start one on `port` (waits until it accepts connections); `None`
    /// (after a loud skip, or a panic in CI) when its program is missing.
    fn start_on(port: u16) -> Option<Self>;
    /// Its port on 127.0.0.1.
    fn port(&self) -> u16;
    /// Kill it (SIGKILL: no goodbye to the clients).
    fn kill(&mut self);
    /// Start it again on the same port.
    fn restart(&mut self);
    /// Freeze it (SIGSTOP): connections stay open, nothing answers.
    fn freeze(&self);
    /// Thaw it (SIGCONT).
    fn thaw(&self);
    /// How many client connections it holds.
    fn connected_clients(&self) -> impl Future<Output = usize>;
}

/// A backend under the fault checks.
pub trait TestBackend {
    /// The backend's client.
    type Client: BrokerClient;
    /// Its private broker.
    type Broker: PrivateBroker;
    /// Broker connections one backend instance holds.
    const CONNECTIONS: usize;
    /// How long a broker that has just started may take before the backend
    /// is up (PostgreSQL needs longer than the others).
    const STARTUP: Duration = T;
    /// Its URL for a broker on 127.0.0.1:`port`.
    fn url(port: u16) -> String;
    /// A fast-reconnecting test configuration for `url`, then `tweak`.
    fn config(
        url: &str,
        tweak: &dyn Fn(&mut BrokerConfig),
    ) -> <Self::Client as BrokerClient>::Config;
}

type Backend<B> = BrokerPubSub<<B as TestBackend>::Client>;

/// The shared fast settings (`tweak` adjusts them further).
pub fn fast(config: &mut BrokerConfig) {
    config.reconnect_min = Duration::from_millis(50);
    config.reconnect_max = Duration::from_millis(400);
    config.command_timeout = Duration::from_secs(1);
    config.connect_timeout = Duration::from_secs(1);
}

fn start<B: TestBackend>() -> Option<B::Broker> {
    B::Broker::start_on(free_port())
}

async fn connected<B: TestBackend>(port: u16, tweak: &dyn Fn(&mut BrokerConfig)) -> Backend<B> {
    let b = BrokerPubSub::new(B::config(&B::url(port), tweak)).expect("backend starts");
    assert!(
        b.health().wait_up(T).await,
        "backend did not connect: {:?}",
        b.health()
    );
    b
}

/// Broadcast from `from` every 50 ms until `inbox` has `n` messages;
/// returns how long it took (panics after `limit`).
pub async fn until_delivered<C: BrokerClient>(
    from: &BrokerPubSub<C>,
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

/// The broker is killed: both processes notice, broadcasts fail and are
/// counted, a subscription made meanwhile waits; after the restart
/// everything flows again, the outage is in `Health` and in the logs.
pub async fn kill_and_restart<B: TestBackend>() {
    let Some(mut broker) = start::<B>() else {
        return;
    };
    let logs = Logs::capture();
    let tweak = |c: &mut BrokerConfig| c.subscribe_timeout = Duration::from_secs(10);
    let a = connected::<B>(broker.port(), &tweak).await;
    let b = connected::<B>(broker.port(), &tweak).await;
    let live = unique_stream("fault-live");
    let inbox = Inbox::new();
    let _id = subscribe_live(&a, &live, &inbox, T).await;
    b.broadcast(&live, "\"before\"".into()).await.unwrap();
    assert!(inbox.wait_for(1, T).await);

    broker.kill();
    for p in [&a, &b] {
        assert!(
            p.health().wait_for(|s| s == LinkState::Down, T).await,
            "outage not noticed"
        );
    }
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

    broker.restart();
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
    let port = format!("127.0.0.1:{}", broker.port());
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

/// A frozen broker (connections open, nothing answers) is noticed by the
/// health check; publishing fails in bounded time; delivery resumes after.
pub async fn frozen_broker<B: TestBackend>() {
    let Some(broker) = start::<B>() else { return };
    let tweak = |c: &mut BrokerConfig| {
        c.health_check_interval = Duration::from_millis(200);
        c.command_timeout = Duration::from_millis(300);
        c.connect_timeout = Duration::from_millis(300);
    };
    let a = connected::<B>(broker.port(), &tweak).await;
    let b = connected::<B>(broker.port(), &tweak).await;
    let stream = unique_stream("frozen");
    let inbox = Inbox::new();
    let _id = subscribe_live(&a, &stream, &inbox, T).await;

    broker.freeze();
    assert!(
        a.health().wait_for(|s| s == LinkState::Down, T).await,
        "a silent broker was not noticed: {:?}",
        a.health()
    );
    // Publishing to a frozen broker fails with an error, never hangs.
    let started = Instant::now();
    assert!(b.broadcast(&stream, "\"x\"".into()).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(2));

    broker.thaw();
    until_delivered(&b, &stream, &inbox, 1, T).await;
    assert!(a.health().reconnect_count() >= 1);
}

/// Started with no broker: down, broadcasts fail, subscriptions time out
/// (the cable then rejects them); once the broker appears, all works.
pub async fn starting_without_a_broker<B: TestBackend>() {
    let port = free_port();
    let a = BrokerPubSub::<B::Client>::new(B::config(&B::url(port), &|c| {
        c.subscribe_timeout = Duration::from_millis(300)
    }))
    .unwrap();
    assert!(a.health().wait_for(|s| s == LinkState::Down, T).await);
    assert_eq!(a.health().outage_count(), 1);
    assert!(a.broadcast("s", "1".into()).await.is_err());
    assert_eq!(a.health().lost_broadcast_count(), 1);
    let sub = a.subscribe("s", Inbox::new().callback());
    assert!(matches!(sub.ready.await, Err(PubSubError::Unavailable(_))));
    a.unsubscribe(sub.id);

    let Some(_broker) = B::Broker::start_on(port) else {
        return;
    };
    assert!(a.health().wait_up(B::STARTUP).await, "{:?}", a.health());
    let inbox = Inbox::new();
    let stream = unique_stream("late");
    let _id = subscribe_live(&a, &stream, &inbox, T).await;
    a.broadcast(&stream, "\"hi\"".into()).await.unwrap();
    assert!(inbox.wait_for(1, T).await);
}

/// Dropping the backend ends its supervisor and closes its connections.
pub async fn dropping_closes_connections<B: TestBackend>() {
    let Some(broker) = start::<B>() else { return };
    // The start-up probe's connection may still be listed for a moment.
    let baseline = settled_clients(&broker).await;
    let a = connected::<B>(broker.port(), &|_| {}).await;
    let health = a.health();
    let inbox = Inbox::new();
    let stream = unique_stream("drop");
    let _id = subscribe_live(&a, &stream, &inbox, T).await;
    assert_eq!(
        settled_clients(&broker).await,
        baseline + B::CONNECTIONS,
        "connections of one backend"
    );
    drop(a);
    assert!(
        health.wait_for(|s| s == LinkState::Closed, T).await,
        "supervisor still running"
    );
    let deadline = Instant::now() + T;
    while broker.connected_clients().await != baseline {
        assert!(
            Instant::now() < deadline,
            "connections left open after drop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The broker's client count once two reads 200 ms apart agree (a
/// connection just closed may be listed for a moment).
async fn settled_clients(broker: &impl PrivateBroker) -> usize {
    let deadline = Instant::now() + T;
    let mut last = broker.connected_clients().await;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = broker.connected_clients().await;
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// `shutdown` fails pending and later subscriptions with `Closed`, and
/// later broadcasts.
pub async fn shutdown_fails_subscriptions<B: TestBackend>() {
    let port = free_port(); // nothing listens: subscriptions stay pending
    let a = BrokerPubSub::<B::Client>::new(B::config(&B::url(port), &|c| {
        c.subscribe_timeout = Duration::from_secs(30)
    }))
    .unwrap();
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
