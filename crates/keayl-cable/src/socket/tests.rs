//! The driver over in-memory channels, with paused time.

use std::sync::Arc;
use std::time::Duration;

use futures_channel::mpsc;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::*;
use crate::channel::{Channel, ChannelContext, ChannelError};
use crate::pubsub::{InMemory, PubSub};
use crate::{Cable, Request};

#[derive(Default)]
struct Slow;
impl Channel for Slow {
    const NAME: &'static str = "Slow";
    type Action = SlowAction;
    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        let stream = ctx.param_str("stream").unwrap_or("s").to_owned();
        ctx.stream_from(stream);
        Ok(())
    }
    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        action: SlowAction,
    ) -> Result<(), ChannelError> {
        match action {
            SlowAction::Slow { ms } => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                ctx.transmit(json!({"slow": "done", "ms": ms}));
            }
            SlowAction::Echo { n } => ctx.transmit(json!({"echo": n})),
        }
        Ok(())
    }
}

#[derive(serde::Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum SlowAction {
    Slow { ms: u64 },
    Echo { n: Option<Value> },
}

/// The client's end of an in-memory connection.
struct Client {
    to_server: mpsc::UnboundedSender<Result<Incoming, ReadError>>,
    from_server: mpsc::Receiver<Outgoing>,
    server: tokio::task::JoinHandle<Finished>,
}

fn memory() -> Arc<dyn PubSub> {
    Arc::new(InMemory::new())
}

fn hub_with(pubsub: &Arc<dyn PubSub>, config: SocketConfig) -> Hub {
    let cable = Cable::builder_shared(pubsub.clone())
        .channel::<Slow>()
        .build();
    Hub::new(cable, config).unwrap()
}

/// `capacity` bounds what the transport buffers toward the client (a small
/// one models a socket that drains slowly).
fn connect(hub: &Hub, capacity: usize) -> Client {
    let (to_server, mut incoming) = mpsc::unbounded();
    let (to_client, from_server) = mpsc::channel(capacity);
    let hub = hub.clone();
    let slot = hub.reserve().unwrap();
    let server = tokio::spawn(async move {
        let mut outgoing = to_client.sink_map_err(|e| e.to_string());
        hub.serve(slot, &mut incoming, &mut outgoing, Request::default())
            .await
    });
    Client {
        to_server,
        from_server,
        server,
    }
}

impl Client {
    fn send(&self, frame: Value) {
        let text = frame.to_string();
        self.to_server
            .unbounded_send(Ok(Incoming::Text(text.into())))
            .unwrap();
    }

    fn subscribe(&self, stream: &str) -> String {
        let identifier = json!({"channel": "Slow", "stream": stream}).to_string();
        self.send(json!({"command": "subscribe", "identifier": identifier}));
        identifier
    }

    fn perform(&self, identifier: &str, data: Value) {
        self.send(
            json!({"command": "message", "identifier": identifier, "data": data.to_string()}),
        );
    }

    async fn next(&mut self) -> Option<Outgoing> {
        self.from_server.next().await
    }

    /// The next text frame that is not a ping, as JSON.
    async fn next_message(&mut self) -> Value {
        loop {
            match self.next().await.expect("connection open") {
                Outgoing::Text(t) => {
                    let v: Value = serde_json::from_slice(&t).unwrap();
                    if v["type"] != "ping" {
                        return v;
                    }
                }
                Outgoing::Ping => {}
                Outgoing::Close(code) => panic!("closed with {code}"),
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_action_blocks_neither_pings_nor_broadcasts_and_commands_stay_in_order() {
    let pubsub = memory();
    let hub = hub_with(&pubsub, SocketConfig::default());
    let mut c = connect(&hub, 64);
    assert_eq!(c.next_message().await["type"], "welcome");
    let id = c.subscribe("room");
    assert_eq!(c.next_message().await["type"], "confirm_subscription");

    let started = Instant::now();
    c.perform(&id, json!({"action": "slow", "ms": 7000}));
    c.perform(&id, json!({"action": "echo", "n": 1}));
    tokio::time::sleep(Duration::from_millis(10)).await;

    // While the action sleeps 7 s: pings every 3 s and a broadcast at once.
    let mut pings = Vec::new();
    let mut broadcast_at = None;
    pubsub
        .broadcast("room", br#"{"b":1}"#.to_vec().into())
        .await
        .unwrap();
    let published = Instant::now();
    let mut order = Vec::new();
    while order.len() < 2 {
        match c.next().await.unwrap() {
            Outgoing::Text(t) => {
                let v: Value = serde_json::from_slice(&t).unwrap();
                if v["type"] == "ping" {
                    pings.push(started.elapsed());
                } else if v["message"] == json!({"b": 1}) {
                    broadcast_at = Some(published.elapsed());
                } else {
                    order.push(v["message"].clone());
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        broadcast_at.unwrap() < Duration::from_millis(100),
        "{broadcast_at:?}"
    );
    assert!(pings.len() >= 2, "pings while the action ran: {pings:?}");
    assert!(
        pings
            .windows(2)
            .all(|w| w[1] - w[0] <= Duration::from_millis(3100))
    );
    // The command sent after the slow one ran after it.
    assert_eq!(
        order,
        vec![json!({"slow": "done", "ms": 7000}), json!({"echo": 1})]
    );
    assert!(started.elapsed() >= Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_broadcasts_never_stops_commands_or_unsubscribe() {
    let pubsub = memory();
    let hub = hub_with(&pubsub, SocketConfig::default());
    let mut c = connect(&hub, 16);
    assert_eq!(c.next_message().await["type"], "welcome");
    let id = c.subscribe("busy");
    assert_eq!(c.next_message().await["type"], "confirm_subscription");

    let p = pubsub.clone();
    let flood = tokio::spawn(async move {
        for i in 0..10_000u32 {
            p.broadcast("busy", format!("{{\"i\":{i}}}").into_bytes().into())
                .await
                .unwrap();
            if i % 100 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    // Echo every 100 ms while the flood goes on; each answer comes within 1 s.
    let mut answered = 0;
    for n in 0..10u64 {
        c.perform(&id, json!({"action": "echo", "n": n}));
        let sent = Instant::now();
        loop {
            let v = c.next_message().await;
            if v["message"] == json!({"echo": n}) {
                break;
            }
        }
        assert!(sent.elapsed() < Duration::from_secs(1));
        answered += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answered, 10);
    c.send(json!({"command": "unsubscribe", "identifier": id}));
    flood.await.unwrap();
    // The unsubscribe is honoured: the stream has no subscriber left.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pubsub.stats().subscriptions > 0 && Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(10), c.next()).await;
    }
    assert_eq!(pubsub.stats().subscriptions, 0);
    assert_eq!(hub.stats().slow_disconnects.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn invalid_utf8_closes_with_1007_and_oversize_with_1009() {
    let pubsub = memory();
    let hub = hub_with(&pubsub, SocketConfig::default());
    for (error, code, unread) in [
        (ReadError::InvalidUtf8, 1007, false),
        (ReadError::TooBig, 1009, true),
    ] {
        let mut c = connect(&hub, 16);
        assert_eq!(c.next_message().await["type"], "welcome");
        c.to_server.unbounded_send(Err(error)).unwrap();
        assert_eq!(c.next().await, Some(Outgoing::Close(code)));
        drop(c.to_server);
        let finished = c.server.await.unwrap();
        assert_eq!(finished.close_code, Some(code));
        assert_eq!(finished.unread_input, unread);
    }
    assert_eq!(hub.stats().invalid_utf8.load(Ordering::Relaxed), 1);
    assert_eq!(hub.stats().oversize.load(Ordering::Relaxed), 1);
    assert_eq!(hub.connection_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_client_flooding_commands_past_the_queue_is_disconnected() {
    let pubsub = memory();
    let config = SocketConfig {
        command_queue_len: 8,
        ..SocketConfig::default()
    };
    let hub = hub_with(&pubsub, config);
    let mut c = connect(&hub, 64);
    assert_eq!(c.next_message().await["type"], "welcome");
    let id = c.subscribe("x");
    assert_eq!(c.next_message().await["type"], "confirm_subscription");
    c.perform(&id, json!({"action": "slow", "ms": 5000}));
    tokio::time::sleep(Duration::from_millis(10)).await;
    for n in 0..20 {
        c.perform(&id, json!({"action": "echo", "n": n}));
    }
    let v = c.next_message().await;
    assert_eq!(
        v,
        json!({"type": "disconnect", "reason": "too_many_commands", "reconnect": true})
    );
    assert_eq!(c.next().await, Some(Outgoing::Close(1008)));
    assert_eq!(hub.stats().command_overflows.load(Ordering::Relaxed), 1);
    drop(c.to_server);
    // The running action finishes before the connection is torn down.
    let finished = c.server.await.unwrap();
    assert_eq!(finished.close_code, Some(1008));
}

#[tokio::test(start_paused = true)]
async fn commands_sent_during_a_slow_connect_run_after_welcome_and_pings_wait_for_it() {
    struct SlowConnect;
    impl crate::ConnectionHandler for SlowConnect {
        async fn connect(&self, _: &mut crate::Connection) -> Result<(), crate::ConnectError> {
            tokio::time::sleep(Duration::from_secs(4)).await;
            Ok(())
        }
    }
    let pubsub = memory();
    let cable = Cable::builder_shared(pubsub.clone())
        .connection_handler(SlowConnect)
        .channel::<Slow>()
        .build();
    let hub = Hub::new(cable, SocketConfig::default()).unwrap();
    // Another connection keeps the pinger ticking meanwhile.
    let mut other = connect(&hub, 64);
    let mut c = connect(&hub, 64);
    let id = c.subscribe("r");
    assert_eq!(c.next_message().await["type"], "welcome");
    assert_eq!(c.next_message().await["type"], "confirm_subscription");
    c.perform(&id, json!({"action": "echo", "n": 5}));
    assert_eq!(c.next_message().await["message"], json!({"echo": 5}));
    assert_eq!(other.next_message().await["type"], "welcome");
}

#[tokio::test(start_paused = true)]
async fn connect_over_the_handshake_timeout_is_closed() {
    struct Hang;
    impl crate::ConnectionHandler for Hang {
        async fn connect(&self, _: &mut crate::Connection) -> Result<(), crate::ConnectError> {
            std::future::pending::<()>().await;
            Ok(())
        }
    }
    let cable = Cable::builder(InMemory::new())
        .connection_handler(Hang)
        .build();
    let config = SocketConfig {
        handshake_timeout: Duration::from_secs(2),
        ..SocketConfig::default()
    };
    let hub = Hub::new(cable, config).unwrap();
    let mut c = connect(&hub, 8);
    let started = Instant::now();
    assert_eq!(c.next().await, Some(Outgoing::Close(1000)));
    assert!(started.elapsed() >= Duration::from_secs(2));
    drop(c.to_server);
    c.server.await.unwrap();
    assert_eq!(hub.stats().handshake_timeouts.load(Ordering::Relaxed), 1);
    assert_eq!(hub.connection_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_gets_a_websocket_ping_then_is_closed() {
    let config = SocketConfig {
        ping_interval: Duration::from_secs(1),
        liveness_timeout: Duration::from_secs(6),
        ..SocketConfig::default()
    };
    let hub = hub_with(&memory(), config);
    let mut c = connect(&hub, 64);
    let started = Instant::now();
    let mut ws_ping_at = None;
    loop {
        match c.next().await {
            Some(Outgoing::Ping) => ws_ping_at = Some(started.elapsed()),
            Some(Outgoing::Text(_)) => {}
            Some(Outgoing::Close(code)) => panic!("closed with {code}"),
            None => break,
        }
    }
    let ws_ping_at = ws_ping_at.expect("a WebSocket ping before closing");
    assert!(ws_ping_at >= Duration::from_secs(3), "{ws_ping_at:?}");
    assert!(started.elapsed() >= Duration::from_secs(6));
    assert!(started.elapsed() < Duration::from_secs(9));
    assert_eq!(hub.stats().liveness_timeouts.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn restart_and_shutdown_send_server_restart_and_close() {
    let hub = hub_with(&memory(), SocketConfig::default());
    let mut c = connect(&hub, 64);
    assert_eq!(c.next_message().await["type"], "welcome");
    hub.restart();
    assert_eq!(
        c.next_message().await,
        json!({"type": "disconnect", "reason": "server_restart", "reconnect": true})
    );
    assert_eq!(c.next().await, Some(Outgoing::Close(1000)));
    hub.shutdown();
    assert_eq!(hub.reserve().unwrap_err(), Refused::ShuttingDown);
}

#[tokio::test(start_paused = true)]
async fn reserve_never_overshoots_the_limit() {
    let config = SocketConfig {
        max_connections: 3,
        ..SocketConfig::default()
    };
    let hub = hub_with(&memory(), config);
    let slots: Vec<_> = (0..6).filter_map(|_| hub.reserve().ok()).collect();
    assert_eq!(slots.len(), 3);
    assert_eq!(hub.reserve().unwrap_err(), Refused::Full);
    drop(slots);
    assert_eq!(hub.connection_count(), 0);
    assert!(hub.reserve().is_ok());
}

#[test]
fn configs_that_cannot_work_are_refused() {
    let cable = Cable::builder(InMemory::new()).build();
    let zero_ping = SocketConfig {
        ping_interval: Duration::ZERO,
        ..SocketConfig::default()
    };
    assert_eq!(
        Hub::new(cable.clone(), zero_ping).unwrap_err().field,
        "ping_interval"
    );
    let liveness = SocketConfig {
        liveness_timeout: Duration::from_secs(1),
        ..SocketConfig::default()
    };
    assert_eq!(
        Hub::new(cable, liveness).unwrap_err().field,
        "liveness_timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn a_socket_that_stops_draining_is_cut_after_the_write_timeout() {
    let config = SocketConfig {
        write_timeout: Duration::from_secs(1),
        ..SocketConfig::default()
    };
    let pubsub = memory();
    let hub = hub_with(&pubsub, config);
    // Capacity 1 and nobody reading: the second write blocks.
    let mut c = connect(&hub, 1);
    assert_eq!(c.next_message().await["type"], "welcome");
    let id = c.subscribe("w");
    assert_eq!(c.next_message().await["type"], "confirm_subscription");
    for i in 0..4 {
        pubsub
            .broadcast("w", format!("{i}").into_bytes().into())
            .await
            .unwrap();
    }
    // Commands are still read and handled while the write is blocked.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(pubsub.stats().subscriptions, 1);
    c.send(json!({"command": "unsubscribe", "identifier": id}));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(pubsub.stats().subscriptions, 0);
    assert!(!c.server.is_finished());
    assert_eq!(hub.stats().slow_disconnects.load(Ordering::Relaxed), 0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(hub.stats().slow_disconnects.load(Ordering::Relaxed), 1);
    drop(c.to_server);
    c.server.await.unwrap();
    assert_eq!(hub.connection_count(), 0);
}

#[test]
fn command_queue_bounds_count_and_bytes() {
    let q = commands::CommandQueue::new(2, 10);
    assert!(q.push("12345".into()).is_ok());
    assert!(q.push("123456".into()).is_err()); // 11 bytes
    assert!(q.push("1".into()).is_ok());
    assert!(q.push("1".into()).is_err()); // 3 items
    assert_eq!(q.len(), 2);
}

/// In memory, but stream subscriptions go live only once released (a broker
/// that hangs, then comes back).
struct HungBroker {
    inner: InMemory,
    released: tokio::sync::watch::Sender<bool>,
}

impl PubSub for HungBroker {
    fn subscribe(
        &self,
        stream: &str,
        callback: crate::pubsub::Callback,
    ) -> crate::pubsub::Subscribed {
        let sub = self.inner.subscribe(stream, callback);
        let mut released = self.released.subscribe();
        let ready = sub.ready;
        crate::pubsub::Subscribed {
            id: sub.id,
            ready: Box::pin(async move {
                let _ = released.wait_for(|r| *r).await;
                ready.await
            }),
        }
    }
    fn unsubscribe(&self, id: crate::pubsub::SubscriptionId) {
        self.inner.unsubscribe(id)
    }
    fn broadcast(
        &self,
        stream: &str,
        message: bytes::Bytes,
    ) -> crate::pubsub::BoxFuture<'static, Result<(), crate::pubsub::PubSubError>> {
        self.inner.broadcast(stream, message)
    }
    fn subscriber_count(
        &self,
        stream: &str,
    ) -> crate::pubsub::BoxFuture<'static, Result<usize, crate::pubsub::PubSubError>> {
        self.inner.subscriber_count(stream)
    }
    fn stats(&self) -> crate::pubsub::PubSubStats {
        self.inner.stats()
    }
}

#[tokio::test(start_paused = true)]
async fn while_the_broker_hangs_a_subscribe_waits_without_blocking_later_commands() {
    let broker = Arc::new(HungBroker {
        inner: InMemory::new(),
        released: tokio::sync::watch::channel(false).0,
    });
    let pubsub: Arc<dyn PubSub> = broker.clone();
    let hub = hub_with(&pubsub, SocketConfig::default());
    let mut c = connect(&hub, 64);
    assert_eq!(c.next_message().await["type"], "welcome");
    let first = c.subscribe("one");
    // The first subscription is pending; a second one, and an action on the
    // first, are handled meanwhile.
    let second = json!({"channel": "Slow", "stream": "two"}).to_string();
    c.send(json!({"command": "subscribe", "identifier": second}));
    c.perform(&first, json!({"action": "echo", "n": 1}));
    assert_eq!(c.next_message().await["message"], json!({"echo": 1}));
    // 20 s of hung broker: no confirmation, no rejection, pings go on.
    let silent = tokio::time::timeout(Duration::from_secs(20), c.next_message()).await;
    assert!(
        silent.is_err(),
        "nothing but pings while the broker hangs: {silent:?}"
    );
    broker.released.send_replace(true);
    let mut confirmed = Vec::new();
    for _ in 0..2 {
        let v = c.next_message().await;
        assert_eq!(v["type"], "confirm_subscription");
        confirmed.push(v["identifier"].as_str().unwrap().to_owned());
    }
    confirmed.sort();
    let mut want = vec![first.clone(), second];
    want.sort();
    assert_eq!(confirmed, want);
    // Broadcasts flow once confirmed.
    pubsub
        .broadcast("one", br#"{"b":2}"#.to_vec().into())
        .await
        .unwrap();
    assert_eq!(c.next_message().await["message"], json!({"b": 2}));
}
