//! Confirmation waits for pub/sub readiness, proven with the `External` backend over a
//! fake broker whose acknowledgements the test releases by hand.

mod common;

use std::sync::Arc;

use common::*;
use futures_util::FutureExt;
use keayl_cable::Cable;
use keayl_cable::channel::{Channel, ChannelContext, ChannelError};
use keayl_cable::connection::{CommandError, Connection, ConnectionState, Identifiers};
use keayl_cable::pubsub::{External, PubSubError};
use serde_json::json;

const ROOM1: &str = r#"{"channel":"ChatChannel","room":"1"}"#;
const ROOM1_CONFIRM: &str = r#"{"identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}","type":"confirm_subscription"}"#;

/// Streams `a` and `b`; with `{"drop":"a"}` it stops `a` again before returning.
#[derive(Clone, Default)]
struct TwoStreamChannel {
    log: Log,
}

impl Channel for TwoStreamChannel {
    const NAME: &'static str = "TwoStreamChannel";
    type Action = keayl_cable::NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_from("a");
        ctx.stream_from("b");
        if let Some(drop) = ctx.param_str("drop").map(str::to_owned) {
            ctx.stop_stream_from(&drop);
        }
        Ok(())
    }

    async fn unsubscribed(&mut self, _ctx: &mut ChannelContext<'_>) {
        self.log.push("unsubscribed");
    }
}

/// Transmits, streams `secret`, rejects.
#[derive(Default)]
struct RejectingChannel;

impl Channel for RejectingChannel {
    const NAME: &'static str = "RejectingChannel";
    type Action = keayl_cable::NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.transmit("no");
        ctx.stream_from("secret");
        ctx.reject();
        Ok(())
    }
}

struct Setup {
    broker: Arc<FakeBroker>,
    external: Arc<External>,
    cable: Cable,
    log: Log,
}

fn setup() -> Setup {
    let broker = FakeBroker::manual();
    let external = Arc::new(External::from_arc(broker.clone()));
    let log = Log::new();
    let chat_log = log.clone();
    let two_log = log.clone();
    let cable = Cable::builder_shared(external.clone())
        .channel::<EchoChannel>()
        .channel::<RejectingChannel>()
        .channel_with(move || ChatChannel {
            log: chat_log.clone(),
        })
        .channel_with(move || TwoStreamChannel {
            log: two_log.clone(),
        })
        .build();
    Setup {
        broker,
        external,
        cable,
        log,
    }
}

async fn open(cable: &Cable) -> (Connection, RecordingSink) {
    let sink = RecordingSink::new();
    let mut conn = cable.connection(sink.sink(), Identifiers::new());
    assert_eq!(conn.open().await, ConnectionState::Open);
    assert_eq!(sink.take(), vec![WELCOME]);
    (conn, sink)
}

#[tokio::test]
async fn confirmation_waits_for_the_broker_acknowledgement() {
    let s = setup();
    let (mut conn, sink) = open(&s.cable).await;
    let frame = subscribe(ROOM1);
    {
        let mut fut = std::pin::pin!(conn.handle_frame(frame.as_bytes()));
        for _ in 0..5 {
            assert!(
                fut.as_mut().now_or_never().is_none(),
                "must wait for the ack"
            );
            tokio::task::yield_now().await;
        }
        assert!(sink.frames().is_empty(), "no confirmation before the ack");
        assert_eq!(s.broker.pending_acks(), 1);
        assert_eq!(s.broker.ack("room:1"), 1);
        fut.await.unwrap();
    }
    assert_eq!(sink.take(), vec![ROOM1_CONFIRM]);
    // Once confirmed, a broadcast through the broker is delivered.
    s.cable.broadcast("room:1", &json!("hi")).await.unwrap();
    assert_eq!(sink.take(), vec![data(ROOM1, r#""hi""#)]);
}

#[tokio::test]
async fn a_broadcast_between_ack_and_confirmation_arrives_after_the_confirmation() {
    let s = setup();
    let (mut conn, sink) = open(&s.cable).await;
    let frame = subscribe(ROOM1);
    {
        let mut fut = std::pin::pin!(conn.handle_frame(frame.as_bytes()));
        assert!(fut.as_mut().now_or_never().is_none());
        // Published before the broker subscription is live: lost, as with Redis.
        s.cable
            .broadcast("room:1", &json!("too early"))
            .await
            .unwrap();
        s.broker.ack_all();
        // The broker subscription is live now but the subscribe command has not resumed:
        // this broadcast reaches the connection before its confirmation is sent.
        s.cable.broadcast("room:1", &json!("early")).await.unwrap();
        s.cable.broadcast("room:1", &json!({"n": 2})).await.unwrap();
        assert!(
            sink.frames().is_empty(),
            "never a stream message before the confirmation"
        );
        fut.await.unwrap();
    }
    assert_eq!(
        sink.take(),
        vec![
            ROOM1_CONFIRM.to_owned(),
            data(ROOM1, r#""early""#),
            data(ROOM1, r#"{"n":2}"#)
        ]
    );
    s.cable.broadcast("room:1", &json!("late")).await.unwrap();
    assert_eq!(sink.take(), vec![data(ROOM1, r#""late""#)]);
}

#[tokio::test]
async fn confirmation_waits_for_every_stream_of_subscribed() {
    let s = setup();
    let (mut conn, sink) = open(&s.cable).await;
    let id = r#"{"channel":"TwoStreamChannel"}"#;
    let frame = subscribe(id);
    {
        let mut fut = std::pin::pin!(conn.handle_frame(frame.as_bytes()));
        assert!(fut.as_mut().now_or_never().is_none());
        s.broker.ack("a");
        assert!(
            fut.as_mut().now_or_never().is_none(),
            "b is not acknowledged yet"
        );
        s.cable.broadcast("a", &json!("from a")).await.unwrap();
        assert!(sink.frames().is_empty());
        s.broker.ack("b");
        fut.await.unwrap();
    }
    assert_eq!(sink.take(), vec![confirm(id), data(id, r#""from a""#)]);
}

#[tokio::test]
async fn a_stream_stopped_inside_subscribed_is_not_waited_for() {
    let s = setup();
    let (mut conn, sink) = open(&s.cable).await;
    let id = r#"{"channel":"TwoStreamChannel","drop":"a"}"#;
    let frame = subscribe(id);
    {
        let mut fut = std::pin::pin!(conn.handle_frame(frame.as_bytes()));
        // It waits for `b`, the stream still wanted, and only for it.
        assert!(
            fut.as_mut().now_or_never().is_none(),
            "waits for b's acknowledgement"
        );
        assert!(sink.frames().is_empty(), "no confirmation before b's ack");
        assert_eq!(
            s.broker.remote_subscriptions("a"),
            0,
            "a was dropped at the broker"
        );
        assert_eq!(s.broker.ack("b"), 1);
        fut.await.unwrap();
    }
    assert_eq!(sink.take(), vec![confirm(id)], "confirmed once b is live");
    assert!(
        s.log.entries().is_empty(),
        "not rejected, so unsubscribed did not run"
    );
}

#[tokio::test]
async fn a_failed_broker_subscription_rejects_the_subscription() {
    let s = setup();
    let (mut conn, sink) = open(&s.cable).await;
    let id = r#"{"channel":"TwoStreamChannel"}"#;
    let frame = subscribe(id);
    {
        let mut fut = std::pin::pin!(conn.handle_frame(frame.as_bytes()));
        assert!(fut.as_mut().now_or_never().is_none());
        s.broker
            .fail("a", PubSubError::Unavailable("redis down".into()));
        s.broker.ack("b");
        fut.await.unwrap();
    }
    assert_eq!(sink.take(), vec![reject(id)]);
    assert_eq!(s.log.entries(), vec!["unsubscribed"]);
    assert_eq!(
        s.broker.total_subscriptions(),
        0,
        "every broker subscription dropped"
    );
    assert_eq!(s.external.remote_subscription_count(), 0);
    let err = conn
        .handle_frame(message(id, &json!({"action": "x"})).as_bytes())
        .await
        .unwrap_err();
    assert!(
        matches!(err, CommandError::UnknownSubscription(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_rejection_does_not_wait_for_acknowledgements() {
    let s = setup();
    let (mut conn, sink) = open(&s.cable).await;
    let id = r#"{"channel":"RejectingChannel"}"#;
    // Completes without any ack being released.
    conn.handle_frame(subscribe(id).as_bytes())
        .now_or_never()
        .expect("a rejection must not wait for the broker")
        .unwrap();
    assert_eq!(sink.take(), vec![data(id, r#""no""#), reject(id)]);
    assert_eq!(s.broker.remote_subscriptions("secret"), 0);
    s.broker.ack_all();
    s.cable.broadcast("secret", &json!("x")).await.unwrap();
    assert!(sink.take().is_empty());
}

#[tokio::test]
async fn a_stream_started_by_an_action_is_live_before_the_command_completes() {
    let s = setup();
    s.broker.set_auto_ack(true);
    let (mut conn, sink) = open(&s.cable).await;
    conn.handle_frame(subscribe(ROOM1).as_bytes())
        .await
        .unwrap();
    assert_eq!(sink.take(), vec![ROOM1_CONFIRM]);
    s.broker.set_auto_ack(false);
    let frame = message(ROOM1, &json!({"action": "follow", "stream": "news"}));
    {
        let mut fut = std::pin::pin!(conn.handle_frame(frame.as_bytes()));
        assert!(
            fut.as_mut().now_or_never().is_none(),
            "waits for the broker"
        );
        s.broker.ack("news");
        fut.await.unwrap();
    }
    s.cable.broadcast("news", &json!("breaking")).await.unwrap();
    assert_eq!(
        sink.take(),
        vec![data(ROOM1, r#""breaking""#)],
        "no second confirmation"
    );
}

#[tokio::test]
async fn a_failed_broker_subscription_does_not_poison_the_stream() {
    let s = setup();
    s.broker.set_auto_ack(true);
    let (mut a, a_sink) = open(&s.cable).await;
    a.handle_frame(subscribe(ROOM1).as_bytes()).await.unwrap();
    a_sink.take();
    s.broker.set_auto_ack(false);
    let frame = message(ROOM1, &json!({"action": "follow", "stream": "room:2"}));
    {
        let mut fut = std::pin::pin!(a.handle_frame(frame.as_bytes()));
        assert!(fut.as_mut().now_or_never().is_none());
        s.broker
            .fail("room:2", PubSubError::Unavailable("blip".into()));
        let _ = fut.await;
    }
    // The broker is healthy again. Another client subscribes to room 2.
    s.broker.set_auto_ack(true);
    let (mut b, b_sink) = open(&s.cable).await;
    let room2 = r#"{"channel":"ChatChannel","room":"2"}"#;
    b.handle_frame(subscribe(room2).as_bytes()).await.unwrap();
    assert_eq!(
        b_sink.take(),
        vec![confirm(room2)],
        "not poisoned by the earlier failure"
    );
    s.cable.broadcast("room:2", &json!("hi")).await.unwrap();
    assert_eq!(b_sink.take(), vec![data(room2, r#""hi""#)]);
    // And the failed stream is not left half-registered on the first connection.
    a.handle_frame(message(ROOM1, &json!({"action": "streams"})).as_bytes())
        .await
        .unwrap();
    let listed = a_sink.take();
    assert!(
        listed == vec![data(ROOM1, r#"["room:1"]"#)]
            || listed
                == vec![
                    data(ROOM1, r#""hi""#),
                    data(ROOM1, r#"["room:1","room:2"]"#)
                ],
        "either dropped, or re-established and delivering: {listed:?}"
    );
}

#[tokio::test]
async fn many_connections_on_one_stream_share_one_broker_subscription() {
    let s = setup();
    s.broker.set_auto_ack(true);
    let mut conns = Vec::new();
    for _ in 0..5 {
        let (mut conn, sink) = open(&s.cable).await;
        conn.handle_frame(subscribe(ROOM1).as_bytes())
            .await
            .unwrap();
        assert_eq!(sink.take(), vec![ROOM1_CONFIRM]);
        conns.push((conn, sink));
    }
    assert_eq!(s.broker.remote_subscriptions("room:1"), 1);
    assert_eq!(s.broker.subscribe_calls(), 1);
    assert_eq!(s.external.local().local_count("room:1"), 5);
    s.cable.broadcast("room:1", &json!("all")).await.unwrap();
    for (_, sink) in &conns {
        assert_eq!(sink.take(), vec![data(ROOM1, r#""all""#)]);
    }
    // The broker holds its subscription until the last local subscriber leaves.
    let last = conns.len() - 1;
    for (i, (conn, _)) in conns.iter_mut().enumerate() {
        conn.disconnect().await;
        let expected = if i == last { 0 } else { 1 };
        assert_eq!(
            s.broker.remote_subscriptions("room:1"),
            expected,
            "after {i}"
        );
    }
    assert_eq!(s.broker.unsubscribe_calls(), 1);
    assert_eq!(s.external.remote_subscription_count(), 0);
}

#[tokio::test]
async fn a_late_subscriber_of_a_live_stream_is_confirmed_without_a_new_ack() {
    let s = setup();
    s.broker.set_auto_ack(true);
    let (mut a, _a_sink) = open(&s.cable).await;
    a.handle_frame(subscribe(ROOM1).as_bytes()).await.unwrap();
    s.broker.set_auto_ack(false);
    let (mut b, b_sink) = open(&s.cable).await;
    b.handle_frame(subscribe(ROOM1).as_bytes())
        .now_or_never()
        .expect("the broker already acknowledged room:1")
        .unwrap();
    assert_eq!(b_sink.take(), vec![ROOM1_CONFIRM]);
    assert_eq!(s.broker.subscribe_calls(), 1);
}

#[tokio::test]
async fn concurrent_subscribers_waiting_on_one_ack_are_all_confirmed() {
    let s = setup();
    let (mut a, a_sink) = open(&s.cable).await;
    let (mut b, b_sink) = open(&s.cable).await;
    let fa = subscribe(ROOM1);
    let fb = subscribe(ROOM1);
    let mut fut_a = std::pin::pin!(a.handle_frame(fa.as_bytes()));
    let mut fut_b = std::pin::pin!(b.handle_frame(fb.as_bytes()));
    assert!(fut_a.as_mut().now_or_never().is_none());
    assert!(fut_b.as_mut().now_or_never().is_none());
    assert_eq!(
        s.broker.subscribe_calls(),
        1,
        "one broker subscription for both"
    );
    s.broker.ack_all();
    fut_a.await.unwrap();
    fut_b.await.unwrap();
    assert_eq!(a_sink.take(), vec![ROOM1_CONFIRM]);
    assert_eq!(b_sink.take(), vec![ROOM1_CONFIRM]);
}

#[tokio::test]
async fn welcome_waits_for_the_internal_stream_so_a_remote_disconnect_is_never_missed() {
    let broker = FakeBroker::manual();
    let cable = Cable::builder(External::from_arc(broker.clone()))
        .connection_handler(Named)
        .build();
    let sink = RecordingSink::new();
    let mut conn = cable.connection(sink.sink(), Identifiers::new());
    {
        let mut fut = std::pin::pin!(conn.open());
        assert!(
            fut.as_mut().now_or_never().is_none(),
            "waits for action_cable/alice"
        );
        assert!(
            sink.frames().is_empty(),
            "no welcome before the internal stream is live"
        );
        assert_eq!(broker.ack("action_cable/alice"), 1);
        assert_eq!(fut.await, ConnectionState::Open);
    }
    assert_eq!(sink.take(), vec![WELCOME]);
    // A remote disconnect right after the welcome is delivered.
    cable
        .remote_connections()
        .where_(&[("current_user", &"alice")])
        .unwrap()
        .disconnect(true)
        .await
        .unwrap();
    assert_eq!(
        sink.events(),
        vec![
            Event::Frame(r#"{"type":"disconnect","reason":"remote","reconnect":true}"#.into()),
            Event::Close
        ]
    );
    // Broadcasts go through the broker.
    assert_eq!(broker.published().len(), 1);
    assert_eq!(broker.published()[0].0, "action_cable/alice");
    conn.disconnect().await;
    assert_eq!(broker.total_subscriptions(), 0);
}

#[tokio::test]
async fn subscriber_count_is_the_brokers() {
    let s = setup();
    s.broker.set_auto_ack(true);
    let (mut a, _sa) = open(&s.cable).await;
    let (mut b, _sb) = open(&s.cable).await;
    a.handle_frame(subscribe(ROOM1).as_bytes()).await.unwrap();
    b.handle_frame(subscribe(ROOM1).as_bytes()).await.unwrap();
    // One process, one broker subscription.
    assert_eq!(
        s.cable.pubsub().subscriber_count("room:1").await.unwrap(),
        1
    );
}
