//! Subscribing: the confirmation, duplicate and unknown subscriptions, unsubscribe, reject.

use std::sync::Arc;
use std::time::Duration;

use keayl_cable::CableConfig;
use keayl_cable::channel::{Channel, ChannelContext, ChannelError};
use keayl_cable::connection::{CommandError, Identifiers};
use keayl_cable::pubsub::InMemory;
use serde_json::json;
use tokio::time::Instant;

use crate::common::*;
use crate::support::*;

// ---------------------------------------------------------------------------------------
// Subscribe and confirm

#[tokio::test]
async fn subscribe_is_confirmed_with_the_exact_identifier() {
    let log = Log::new();
    let (cable, pubsub) = cable_with(&log, |b| b);
    let (mut conn, sink) = open(&cable).await;
    send(&mut conn, &subscribe(ROOM1)).await.unwrap();
    assert_eq!(sink.take(), vec![ROOM1_CONFIRM]);
    assert_eq!(log.entries(), vec![format!("subscribed:{ROOM1}")]);
    assert_eq!(
        pubsub.local_count("room:1"),
        1,
        "the stream is live once confirmed"
    );
    assert_eq!(
        conn.subscription_identifiers().collect::<Vec<_>>(),
        vec![ECHO_ID, ROOM1]
    );
}

#[tokio::test]
async fn identifiers_are_echoed_unchanged_and_keyed_by_the_raw_string() {
    let log = Log::new();
    let (cable, _) = cable_with(&log, |b| b);
    let (mut conn, sink) = open(&cable).await;
    let variants = [
        r#"{"channel":"ChatChannel","room":"1"}"#,
        r#"{"room":"1","channel":"ChatChannel"}"#,
        r#"{"channel": "ChatChannel", "room": "1"}"#,
        r#"{"channel":"ChatChannel","room":1}"#,
    ];
    for id in variants {
        send(&mut conn, &subscribe(id)).await.unwrap();
    }
    assert_eq!(sink.take(), variants.map(confirm).to_vec());
    let mut expected = vec![ECHO_ID];
    expected.extend(variants);
    assert_eq!(
        conn.subscription_identifiers().collect::<Vec<_>>(),
        expected,
        "four distinct subscriptions besides the probe's"
    );
    // All four stream room:1 (room 1 and room "1" both name it): one frame each, each
    // with its own identifier.
    cable
        .broadcast("room:1", &json!({"text": "hi"}))
        .await
        .unwrap();
    assert_eq!(
        sink.take(),
        variants.map(|id| data(id, r#"{"text":"hi"}"#)).to_vec()
    );
    // Identifiers with characters that need escaping are echoed byte for byte.
    let odd = r#"{"channel":"ChatChannel","room":"é \"q\" \\ <b>&"}"#;
    send(&mut conn, &subscribe(odd)).await.unwrap();
    assert_eq!(
        sink.take(),
        vec![
            r#"{"identifier":"{\"channel\":\"ChatChannel\",\"room\":\"é \\\"q\\\" \\\\ \u003cb\u003e\u0026\"}","type":"confirm_subscription"}"#
        ]
    );
}

/// Transmits "hello" and "world" from `subscribed`, and streams `greetings`.
#[derive(Default)]
struct GreeterChannel;

impl Channel for GreeterChannel {
    const NAME: &'static str = "GreeterChannel";
    type Action = keayl_cable::NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_from("greetings");
        ctx.transmit("hello");
        ctx.transmit("world");
        Ok(())
    }
}

#[tokio::test]
async fn transmits_in_subscribed_precede_the_confirmation() {
    let (cable, _) = cable_with(&Log::new(), |b| b.channel::<GreeterChannel>());
    let (mut conn, sink) = open(&cable).await;
    let id = r#"{"channel":"GreeterChannel"}"#;
    send(&mut conn, &subscribe(id)).await.unwrap();
    assert_eq!(
        sink.take(),
        vec![
            r#"{"identifier":"{\"channel\":\"GreeterChannel\"}","message":"hello"}"#.to_owned(),
            r#"{"identifier":"{\"channel\":\"GreeterChannel\"}","message":"world"}"#.to_owned(),
            r#"{"identifier":"{\"channel\":\"GreeterChannel\"}","type":"confirm_subscription"}"#
                .to_owned(),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Duplicate and unknown subscriptions

#[tokio::test]
async fn a_duplicate_subscribe_is_ignored() {
    let log = Log::new();
    let (cable, pubsub) = cable_with(&log, |b| b);
    let (mut conn, sink) = open(&cable).await;
    send(&mut conn, &subscribe(ROOM1)).await.unwrap();
    let err = send(&mut conn, &subscribe(ROOM1)).await.unwrap_err();
    assert!(
        matches!(&err, CommandError::AlreadySubscribed(id) if id == ROOM1),
        "{err:?}"
    );
    assert_eq!(sink.take(), vec![ROOM1_CONFIRM], "no second confirmation");
    assert_eq!(
        log.count(&format!("subscribed:{ROOM1}")),
        1,
        "subscribed ran once"
    );
    assert_eq!(pubsub.local_count("room:1"), 1);
    cable.broadcast("room:1", &json!("once")).await.unwrap();
    assert_eq!(sink.take(), vec![data(ROOM1, r#""once""#)]);
}

#[tokio::test]
async fn an_unknown_channel_is_refused_without_any_frame() {
    let (cable, _) = cable_with(&Log::new(), |b| b);
    let (mut conn, sink) = open(&cable).await;
    for channel in [
        "NopeChannel",
        "String",
        "Kernel",
        "chatchannel",
        "ActionCable::Channel::Base",
        "ApplicationCable::Channel",
        "",
    ] {
        let id = json!({"channel": channel}).to_string();
        let err = send(&mut conn, &subscribe(&id)).await.unwrap_err();
        assert!(
            matches!(&err, CommandError::UnknownChannel(c) if c == channel),
            "{channel}: {err:?}"
        );
        assert!(sink.take().is_empty(), "{channel}");
        assert_eq!(err.kind(), "unknown_channel");
    }
    assert_eq!(
        conn.subscription_identifiers().collect::<Vec<_>>(),
        vec![ECHO_ID]
    );
    assert_alive(&mut conn, &sink, "still").await;
}

#[tokio::test]
async fn a_message_or_unsubscribe_for_an_unknown_identifier_is_refused() {
    let (cable, _) = cable_with(&Log::new(), |b| b);
    let (mut conn, sink) = open(&cable).await;
    send(&mut conn, &subscribe(ROOM1)).await.unwrap();
    sink.take();
    // A different raw string is a different identifier.
    let spaced = r#"{"channel": "ChatChannel", "room": "1"}"#;
    for id in [r#"{"channel":"ChatChannel","room":"9"}"#, spaced] {
        let err = send(&mut conn, &message(id, &json!({"action": "echo"})))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CommandError::UnknownSubscription(i) if i == id),
            "{err:?}"
        );
        let err = send(&mut conn, &unsubscribe(id)).await.unwrap_err();
        assert!(
            matches!(&err, CommandError::UnknownSubscription(i) if i == id),
            "{err:?}"
        );
    }
    assert!(sink.take().is_empty());
    assert_alive(&mut conn, &sink, "alive").await;
}

#[tokio::test]
async fn the_subscription_limit_refuses_further_subscribes_without_a_frame() {
    let pubsub = Arc::new(InMemory::new());
    let cable = base(&pubsub, &Log::new())
        .config(CableConfig {
            max_subscriptions: 2,
            ..CableConfig::default()
        })
        .build();
    let (mut conn, sink) = open(&cable).await; // EchoChannel is #1
    send(&mut conn, &subscribe(ROOM1)).await.unwrap();
    let room2 = r#"{"channel":"ChatChannel","room":"2"}"#;
    let err = send(&mut conn, &subscribe(room2)).await.unwrap_err();
    assert!(
        matches!(err, CommandError::TooManySubscriptions(2)),
        "{err:?}"
    );
    assert_eq!(sink.take(), vec![ROOM1_CONFIRM]);
    assert_eq!(pubsub.local_count("room:2"), 0);
    // Freeing a slot allows it.
    send(&mut conn, &unsubscribe(ROOM1)).await.unwrap();
    send(&mut conn, &subscribe(room2)).await.unwrap();
    assert_eq!(sink.take(), vec![confirm(room2)]);
}

// ---------------------------------------------------------------------------------------
// Unsubscribe

#[tokio::test]
async fn unsubscribe_runs_unsubscribed_stops_streams_sends_nothing_and_allows_resubscribe() {
    let log = Log::new();
    let (cable, pubsub) = cable_with(&log, |b| b);
    let (mut conn, sink) = open(&cable).await;
    send(&mut conn, &subscribe(ROOM1)).await.unwrap();
    send(
        &mut conn,
        &message(ROOM1, &json!({"action": "follow", "stream": "news"})),
    )
    .await
    .unwrap();
    sink.take();
    log.take();

    send(&mut conn, &unsubscribe(ROOM1)).await.unwrap();
    assert!(sink.take().is_empty(), "no unsubscription frame");
    assert_eq!(
        log.take(),
        vec![format!("unsubscribed:{ROOM1} streams=news,room:1")],
        "unsubscribed ran, before its streams stopped"
    );
    assert_eq!(pubsub.local_count("room:1"), 0);
    assert_eq!(pubsub.local_count("news"), 0);
    cable.broadcast("room:1", &json!("gone")).await.unwrap();
    assert!(sink.take().is_empty());
    let err = send(&mut conn, &message(ROOM1, &json!({"action": "echo"})))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CommandError::UnknownSubscription(_)),
        "{err:?}"
    );
    let err = send(&mut conn, &unsubscribe(ROOM1)).await.unwrap_err();
    assert!(
        matches!(err, CommandError::UnknownSubscription(_)),
        "{err:?}"
    );

    // Re-subscribing is allowed and confirmed again.
    send(&mut conn, &subscribe(ROOM1)).await.unwrap();
    assert_eq!(sink.take(), vec![ROOM1_CONFIRM]);
    cable.broadcast("room:1", &json!("back")).await.unwrap();
    assert_eq!(sink.take(), vec![data(ROOM1, r#""back""#)]);
    assert_eq!(
        pubsub.local_count("news"),
        0,
        "the fresh subscription starts clean"
    );
}

// ---------------------------------------------------------------------------------------
// Reject

/// Transmits, streams `forbidden`, schedules a timer, then rejects.
#[derive(Clone)]
struct ForbiddenChannel {
    log: Log,
}

impl Channel for ForbiddenChannel {
    const NAME: &'static str = "ForbiddenChannel";
    type Action = EchoAction;
    const PERIODICALLY: &'static [(&'static str, Duration)] = &[("tick", Duration::from_secs(1))];

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        self.log.push("subscribed");
        ctx.transmit("before reject");
        ctx.stream_from("forbidden");
        ctx.periodically("dyn_tick", Duration::from_secs(1));
        // Logged, not asserted here: a panic in `subscribed` rejects too.
        self.log.push(format!("is_rejected:{}", ctx.is_rejected()));
        ctx.reject();
        self.log.push(format!("is_rejected:{}", ctx.is_rejected()));
        Ok(())
    }

    async fn unsubscribed(&mut self, ctx: &mut ChannelContext<'_>) {
        let streams: Vec<&str> = ctx.streams().collect();
        self.log
            .push(format!("unsubscribed streams={}", streams.join(",")));
    }

    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        _: EchoAction,
    ) -> Result<(), ChannelError> {
        self.log.push("perform:echo");
        ctx.transmit("should never happen");
        Ok(())
    }

    async fn periodic(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        timer: &'static str,
    ) -> Result<(), ChannelError> {
        self.log.push(format!("timer:{timer}"));
        ctx.transmit("should never happen");
        Ok(())
    }
}

#[tokio::test]
async fn reject_in_subscribed() {
    let log = Log::new();
    let l = log.clone();
    let (cable, pubsub) = cable_with(&Log::new(), |b| {
        b.channel_with(move || ForbiddenChannel { log: l.clone() })
    });
    let sink = RecordingSink::mirrored(&log);
    let mut conn = cable.connection(sink.sink(), Identifiers::new());
    conn.open().await;
    send(&mut conn, &subscribe(ECHO_ID)).await.unwrap();
    sink.take();
    log.take();
    let id = r#"{"channel":"ForbiddenChannel"}"#;

    send(&mut conn, &subscribe(id)).await.unwrap();
    let reject_frame =
        r#"{"identifier":"{\"channel\":\"ForbiddenChannel\"}","type":"reject_subscription"}"#;
    assert_eq!(
        sink.take(),
        vec![
            r#"{"identifier":"{\"channel\":\"ForbiddenChannel\"}","message":"before reject"}"#,
            reject_frame,
        ]
    );
    // unsubscribed ran (with the stream still listed), before the rejection was sent.
    assert_eq!(
        log.take(),
        vec![
            "subscribed".to_owned(),
            format!(
                "frame:{}",
                r#"{"identifier":"{\"channel\":\"ForbiddenChannel\"}","message":"before reject"}"#
            ),
            "is_rejected:false".to_owned(),
            "is_rejected:true".to_owned(),
            "unsubscribed streams=forbidden".to_owned(),
            format!("frame:{reject_frame}"),
        ]
    );
    // Its stream is gone and never delivers; no timers run.
    assert_eq!(pubsub.local_count("forbidden"), 0);
    cable
        .broadcast("forbidden", &json!("secret"))
        .await
        .unwrap();
    assert!(sink.take().is_empty());
    assert_eq!(conn.next_timer_due(), None);
    assert_eq!(
        conn.run_periodic_timers(Instant::now() + Duration::from_secs(60))
            .await,
        0
    );
    assert_eq!(
        conn.subscription_identifiers().collect::<Vec<_>>(),
        vec![ECHO_ID]
    );

    // A message to it is an unknown subscription.
    let err = send(&mut conn, &message(id, &json!({"action": "echo"})))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CommandError::UnknownSubscription(i) if i == id),
        "{err:?}"
    );
    assert!(sink.take().is_empty());

    // The same identifier can subscribe again (and is rejected again).
    log.take();
    send(&mut conn, &subscribe(id)).await.unwrap();
    assert_eq!(sink.take().last().unwrap(), reject_frame);
    assert_eq!(log.count("subscribed"), 1);
    assert_alive(&mut conn, &sink, "alive").await;
}

#[tokio::test]
async fn add_subscription_reports_the_rejection() {
    let log = Log::new();
    let (cable, _) = cable_with(&log, |b| b);
    let (mut conn, sink) = open(&cable).await;
    let outcome = conn
        .add_subscription(
            r#"{"channel":"ForbiddenChannel"}"#,
            ForbiddenChannel { log: log.clone() },
        )
        .await
        .unwrap();
    assert_eq!(outcome, keayl_cable::SubscribeOutcome::Rejected);
    assert_eq!(
        sink.take().last().unwrap(),
        r#"{"identifier":"{\"channel\":\"ForbiddenChannel\"}","type":"reject_subscription"}"#
    );
}

/// `subscribed` streams, then fails (`Err`) or panics, depending on `panic`.
#[derive(Clone)]
struct BrokenChannel {
    panic: bool,
    log: Log,
}

impl Channel for BrokenChannel {
    const NAME: &'static str = "BrokenChannel";
    type Action = EchoAction;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        self.log.push("subscribed");
        ctx.stream_from("broken");
        if self.panic {
            panic!("subscribed exploded");
        }
        Err(ChannelError::msg("database down"))
    }

    async fn unsubscribed(&mut self, _ctx: &mut ChannelContext<'_>) {
        self.log.push("unsubscribed");
    }
}

async fn broken_subscribed_is_rejected_and_forgotten(panic: bool) {
    let log = Log::new();
    let l = log.clone();
    let name = "BrokenChannel";
    let (cable, pubsub) = cable_with(&Log::new(), |b| {
        b.channel_with(move || BrokenChannel {
            panic,
            log: l.clone(),
        })
    });
    let (mut conn, sink) = open(&cable).await;
    let id = json!({"channel": name}).to_string();
    for round in 0..2 {
        send(&mut conn, &subscribe(&id)).await.unwrap();
        assert_eq!(sink.take(), vec![reject(&id)], "round {round}");
        assert_eq!(
            log.take(),
            vec!["subscribed", "unsubscribed"],
            "round {round}"
        );
        assert_eq!(pubsub.local_count("broken"), 0);
        let err = send(&mut conn, &message(&id, &json!({"action": "echo"})))
            .await
            .unwrap_err();
        assert!(
            matches!(err, CommandError::UnknownSubscription(_)),
            "{err:?}"
        );
    }
    cable.broadcast("broken", &json!("x")).await.unwrap();
    assert!(sink.take().is_empty());
    assert_alive(&mut conn, &sink, "alive").await;
}

#[tokio::test]
async fn subscribed_returning_err_rejects_and_forgets_the_subscription() {
    broken_subscribed_is_rejected_and_forgotten(false).await;
}

#[tokio::test]
async fn subscribed_panicking_rejects_and_forgets_the_subscription() {
    broken_subscribed_is_rejected_and_forgotten(true).await;
}

/// `unsubscribed` panics after logging.
#[derive(Clone)]
struct GrumpyChannel {
    log: Log,
}

impl Channel for GrumpyChannel {
    const NAME: &'static str = "GrumpyChannel";
    type Action = keayl_cable::NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_from("grumpy");
        Ok(())
    }

    async fn unsubscribed(&mut self, _ctx: &mut ChannelContext<'_>) {
        self.log.push("unsubscribed");
        panic!("unsubscribed exploded");
    }
}

#[tokio::test]
async fn a_panicking_unsubscribed_still_stops_the_streams_and_is_not_fatal() {
    let log = Log::new();
    let l = log.clone();
    let (cable, pubsub) = cable_with(&Log::new(), |b| {
        b.channel_with(move || GrumpyChannel { log: l.clone() })
    });
    let (mut conn, sink) = open(&cable).await;
    let id = r#"{"channel":"GrumpyChannel"}"#;
    send(&mut conn, &subscribe(id)).await.unwrap();
    sink.take();
    send(&mut conn, &unsubscribe(id)).await.unwrap();
    assert_eq!(log.take(), vec!["unsubscribed"]);
    assert_eq!(pubsub.local_count("grumpy"), 0);
    cable.broadcast("grumpy", &json!("x")).await.unwrap();
    assert!(sink.take().is_empty());
    assert_alive(&mut conn, &sink, "alive").await;
    // On disconnect too: the other subscriptions are still torn down.
    send(&mut conn, &subscribe(id)).await.unwrap();
    send(&mut conn, &subscribe(ROOM1)).await.unwrap();
    conn.disconnect().await;
    assert_eq!(log.take(), vec!["unsubscribed"]);
    assert_eq!(pubsub.local_count("grumpy"), 0);
    assert_eq!(pubsub.local_count("room:1"), 0);
}
