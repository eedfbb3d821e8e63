//! Bounds of a connection's state: messages held back before a
//! confirmation, repeated timer registrations, a failed internal stream.

mod common;

use std::time::Duration;

use common::*;
use futures_util::FutureExt;
use keayl_cable::channel::{Channel, ChannelContext, ChannelError};
use keayl_cable::connection::{ConnectionState, Identifiers};
use keayl_cable::pubsub::{External, PubSubError};
use keayl_cable::{Cable, CableConfig};
use serde_json::json;

/// Streams `busy`, registers the `tick` timer twice with different periods.
#[derive(Default)]
struct Busy;

impl Channel for Busy {
    const NAME: &'static str = "Busy";
    type Action = keayl_cable::NoActions;
    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_from("busy");
        ctx.periodically("tick", Duration::from_secs(1));
        ctx.periodically("tick", Duration::from_secs(10));
        Ok(())
    }
    async fn periodic(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        _timer: &'static str,
    ) -> Result<(), ChannelError> {
        ctx.transmit("tock");
        Ok(())
    }
}

const BUSY: &str = r#"{"channel":"Busy"}"#;

#[tokio::test]
async fn messages_held_before_the_confirmation_are_bounded() {
    let broker = FakeBroker::manual();
    let cable = Cable::builder(External::from_arc(broker.clone()))
        .channel::<Busy>()
        .config(CableConfig {
            max_pending_bytes: 1024,
            ..CableConfig::default()
        })
        .build();
    let sink = RecordingSink::new();
    let mut conn = cable.connection(sink.sink(), Identifiers::new());
    assert_eq!(conn.open().await, ConnectionState::Open);
    sink.take();
    let frame = subscribe(BUSY);
    let mut fut = std::pin::pin!(conn.handle_frame(frame.as_bytes()));
    assert!(fut.as_mut().now_or_never().is_none(), "waits for the ack");
    broker.ack_all();
    // The broker delivers before the subscribe command resumes: 40 × 100
    // bytes is over the 1 KiB the subscription may hold back.
    let payload = json!("x".repeat(100));
    for _ in 0..40 {
        cable.broadcast("busy", &payload).await.unwrap();
    }
    let _ = fut.await;
    let events = sink.events();
    assert_eq!(
        events.first(),
        Some(&Event::Frame(
            r#"{"type":"disconnect","reason":"too_slow","reconnect":true}"#.into()
        )),
        "{events:?}"
    );
    assert!(events.contains(&Event::Close));
    // Nothing of the held messages was sent.
    assert!(!sink.frames().iter().any(|f| f.contains("xxxx")));
}

#[tokio::test(start_paused = true)]
async fn periodically_with_a_registered_name_replaces_the_timer() {
    let cable = Cable::builder(keayl_cable::InMemory::new())
        .channel::<Busy>()
        .build();
    let sink = RecordingSink::new();
    let mut conn = cable.connection(sink.sink(), Identifiers::new());
    conn.open().await;
    conn.handle_frame(subscribe(BUSY).as_bytes()).await.unwrap();
    sink.take();
    let start = tokio::time::Instant::now();
    // One timer, every 10 s (the second registration), not two.
    assert_eq!(conn.next_timer_due(), Some(start + Duration::from_secs(10)));
    assert_eq!(
        conn.run_periodic_timers(start + Duration::from_secs(10))
            .await,
        1
    );
    assert_eq!(sink.take().len(), 1);
}

#[tokio::test]
async fn a_failed_internal_stream_means_no_welcome() {
    let broker = FakeBroker::manual();
    let cable = Cable::builder(External::from_arc(broker.clone()))
        .connection_handler(Named)
        .build();
    let sink = RecordingSink::new();
    let mut conn = cable.connection(sink.sink(), Identifiers::new());
    {
        let mut fut = std::pin::pin!(conn.open());
        assert!(fut.as_mut().now_or_never().is_none());
        broker.fail(
            "action_cable/alice",
            PubSubError::Failed("broker said no".into()),
        );
        assert_eq!(fut.await, ConnectionState::Rejected);
    }
    assert_eq!(
        sink.events(),
        vec![
            Event::Frame(
                r#"{"type":"disconnect","reason":"server_error","reconnect":true}"#.into()
            ),
            Event::Close
        ]
    );
    conn.disconnect().await;
    assert_eq!(broker.total_subscriptions(), 0);
}

/// Accepts every subscription; streams nothing.
#[derive(Default)]
struct Quiet;

impl Channel for Quiet {
    const NAME: &'static str = "Quiet";
    type Action = keayl_cable::NoActions;
}

fn quiet_identifier(n: usize, pad: usize) -> String {
    json!({"channel": "Quiet", "n": n, "pad": "p".repeat(pad)}).to_string()
}

#[tokio::test]
async fn subscriptions_of_a_connection_and_of_the_process_stay_within_their_memory_budgets() {
    let cable = Cable::builder(keayl_cable::InMemory::new())
        .channel::<Quiet>()
        .config(CableConfig {
            max_subscription_bytes: 256 * 1024,
            max_total_subscription_bytes: 600 * 1024,
            ..CableConfig::default()
        })
        .build();
    let mut conns = Vec::new();
    let mut confirmed_per_conn = Vec::new();
    for c in 0..4 {
        let sink = RecordingSink::new();
        let mut conn = cable.connection(sink.sink(), Identifiers::new());
        conn.open().await;
        let mut refused = Vec::new();
        for n in 0..256 {
            let id = quiet_identifier(c * 1000 + n, 3900);
            if let Err(e) = conn.handle_frame(subscribe(&id).as_bytes()).await {
                refused.push(e.kind());
            }
        }
        let confirmed = sink
            .frames()
            .iter()
            .filter(|f| f.contains("confirm_subscription"))
            .count();
        assert!(refused.iter().all(|k| *k == "over_budget"), "{refused:?}");
        confirmed_per_conn.push(confirmed);
        conns.push(conn);
    }
    // ~25 KB each: about 10 per connection, then the process budget stops the
    // third and fourth connections early.
    assert!(
        (8..=11).contains(&confirmed_per_conn[0]),
        "{confirmed_per_conn:?}"
    );
    assert!(
        confirmed_per_conn[3] < confirmed_per_conn[0],
        "{confirmed_per_conn:?}"
    );
    assert!(cable.subscription_bytes() <= 600 * 1024);
    // Small identifiers still fit once others leave: the budgets are released.
    for mut conn in conns {
        conn.disconnect().await;
    }
    assert_eq!(cable.subscription_bytes(), 0);
    let sink = RecordingSink::new();
    let mut conn = cable.connection(sink.sink(), Identifiers::new());
    conn.open().await;
    for n in 0..100 {
        conn.handle_frame(subscribe(&quiet_identifier(n, 10)).as_bytes())
            .await
            .unwrap();
    }
    assert_eq!(
        sink.frames()
            .iter()
            .filter(|f| f.contains("confirm_subscription"))
            .count(),
        100
    );
    let held = cable.subscription_bytes();
    conn.remove_subscription(&quiet_identifier(0, 10))
        .await
        .unwrap();
    let one = held - cable.subscription_bytes();
    // Its own share, about 1.8 KB for a 50-byte identifier, is released.
    assert!((1024..4096).contains(&one), "{one} of {held}");
}

/// `subscribed` always fails.
#[derive(Default)]
struct Broken;

impl Channel for Broken {
    const NAME: &'static str = "Broken";
    type Action = keayl_cable::NoActions;
    async fn subscribed(&mut self, _ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        Err(ChannelError::msg("database down"))
    }
}

#[tokio::test]
async fn failures_a_client_triggers_in_a_loop_are_logged_rate_limited() {
    let cable = Cable::builder(keayl_cable::InMemory::new())
        .channel::<Broken>()
        .config(CableConfig {
            max_subscriptions: 10_000,
            log_lines_per_second: 20,
            ..CableConfig::default()
        })
        .build();
    let sink = RecordingSink::new();
    let mut conn = cable.connection(sink.sink(), Identifiers::new());
    conn.open().await;
    for n in 0..5_000 {
        let id = json!({"channel": "Broken", "n": n}).to_string();
        conn.handle_frame(subscribe(&id).as_bytes()).await.unwrap();
    }
    // Every one was rejected, and at most 20 a second were logged.
    assert_eq!(
        sink.frames()
            .iter()
            .filter(|f| f.contains("reject_subscription"))
            .count(),
        5_000
    );
    assert!(
        cable.suppressed_logs() >= 4_900,
        "{}",
        cable.suppressed_logs()
    );
}
