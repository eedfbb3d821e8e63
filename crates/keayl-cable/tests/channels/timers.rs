//! Periodic timers.

use std::time::Duration;

use keayl_cable::channel::{Channel, ChannelContext, ChannelError};
use keayl_cable::connection::CommandError;
use serde_json::json;
use tokio::time::Instant;

use crate::common::*;
use crate::support::*;

// ---------------------------------------------------------------------------------------
// Periodic timers

/// `tick` every second from `PERIODICALLY`, `beat` every 2 s from `ctx.periodically`, and
/// a zero-interval timer that must be ignored. Each transmits its own count.
#[derive(Default)]
struct TimerChannel {
    ticks: u32,
    beats: u32,
}

impl Channel for TimerChannel {
    const NAME: &'static str = "TimerChannel";
    type Action = EchoAction;
    const PERIODICALLY: &'static [(&'static str, Duration)] =
        &[("tick", Duration::from_secs(1)), ("never", Duration::ZERO)];

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        if ctx.param_str("beat").is_some() {
            ctx.periodically("beat", Duration::from_secs(2));
        }
        ctx.periodically("zero", Duration::ZERO);
        Ok(())
    }

    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        _: EchoAction,
    ) -> Result<(), ChannelError> {
        ctx.transmit(json!({"unexpected": "echo"}));
        Ok(())
    }

    async fn periodic(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        timer: &'static str,
    ) -> Result<(), ChannelError> {
        match timer {
            "tick" => {
                self.ticks += 1;
                ctx.transmit(json!({"tick": self.ticks}));
            }
            "beat" => {
                self.beats += 1;
                ctx.transmit(json!({"beat": self.beats}));
            }
            other => ctx.transmit(json!({"unexpected": other})),
        }
        Ok(())
    }
}

const TIMER_ID: &str = r#"{"channel":"TimerChannel"}"#;

#[tokio::test(start_paused = true)]
async fn periodically_timers_fire_every_interval_first_after_one_interval() {
    let (cable, _) = cable_with(&Log::new(), |b| b.channel::<TimerChannel>());
    let (mut conn, sink) = open(&cable).await;
    assert_eq!(conn.next_timer_due(), None);
    let t0 = Instant::now();
    send(&mut conn, &subscribe(TIMER_ID)).await.unwrap();
    assert_eq!(sink.take(), vec![confirm(TIMER_ID)]);
    assert_eq!(conn.next_timer_due(), Some(t0 + Duration::from_secs(1)));

    // Not due yet.
    assert_eq!(conn.run_periodic_timers(Instant::now()).await, 0);
    tokio::time::advance(Duration::from_millis(999)).await;
    assert_eq!(conn.run_periodic_timers(Instant::now()).await, 0);
    assert!(sink.take().is_empty());

    for n in 1..=3 {
        tokio::time::advance(Duration::from_millis(if n == 1 { 1 } else { 1000 })).await;
        assert_eq!(conn.run_periodic_timers(Instant::now()).await, 1);
        assert_eq!(
            sink.take(),
            vec![data(TIMER_ID, &format!(r#"{{"tick":{n}}}"#))]
        );
        assert_eq!(conn.next_timer_due(), Some(t0 + Duration::from_secs(n + 1)));
    }
    // A timer's name is not a client-callable action.
    let err = send(&mut conn, &message(TIMER_ID, &json!({"action": "tick"})))
        .await
        .unwrap_err();
    assert!(matches!(err, CommandError::InvalidAction { .. }), "{err:?}");
    assert!(sink.take().is_empty());

    // Unsubscribe stops the timers.
    send(&mut conn, &unsubscribe(TIMER_ID)).await.unwrap();
    assert_eq!(conn.next_timer_due(), None);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(conn.run_periodic_timers(Instant::now()).await, 0);
    assert!(sink.take().is_empty());
}

#[tokio::test(start_paused = true)]
async fn ctx_periodically_registers_a_timer_and_zero_intervals_are_ignored() {
    let (cable, _) = cable_with(&Log::new(), |b| b.channel::<TimerChannel>());
    let (mut conn, sink) = open(&cable).await;
    let id = r#"{"channel":"TimerChannel","beat":"yes"}"#;
    send(&mut conn, &subscribe(id)).await.unwrap();
    sink.take();
    let t0 = Instant::now();
    let mut got = Vec::new();
    for _ in 0..4 {
        tokio::time::advance(Duration::from_secs(1)).await;
        let fired = conn.run_periodic_timers(Instant::now()).await;
        let mut frames = sink.take();
        assert_eq!(fired, frames.len());
        // Timers due at the same instant may fire in any order.
        frames.sort();
        got.push(frames);
    }
    assert_eq!(
        got,
        vec![
            vec![data(id, r#"{"tick":1}"#)],
            vec![data(id, r#"{"beat":1}"#), data(id, r#"{"tick":2}"#)],
            vec![data(id, r#"{"tick":3}"#)],
            vec![data(id, r#"{"beat":2}"#), data(id, r#"{"tick":4}"#)],
        ]
    );
    assert_eq!(conn.next_timer_due(), Some(t0 + Duration::from_secs(5)));
    // Disconnect stops them too.
    conn.disconnect().await;
    assert_eq!(conn.next_timer_due(), None);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(conn.run_periodic_timers(Instant::now()).await, 0);
}

#[tokio::test(start_paused = true)]
async fn a_late_timer_run_fires_once_not_a_burst() {
    let (cable, _) = cable_with(&Log::new(), |b| b.channel::<TimerChannel>());
    let (mut conn, sink) = open(&cable).await;
    send(&mut conn, &subscribe(TIMER_ID)).await.unwrap();
    sink.take();
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(conn.run_periodic_timers(Instant::now()).await, 1);
    assert_eq!(sink.take(), vec![data(TIMER_ID, r#"{"tick":1}"#)]);
    let due = conn.next_timer_due().unwrap();
    assert!(due > Instant::now(), "next run is in the future");
}

#[tokio::test(start_paused = true)]
async fn timers_of_several_subscriptions_are_independent() {
    let (cable, _) = cable_with(&Log::new(), |b| b.channel::<TimerChannel>());
    let (mut conn, sink) = open(&cable).await;
    let other = r#"{"channel":"TimerChannel","n":2}"#;
    send(&mut conn, &subscribe(TIMER_ID)).await.unwrap();
    tokio::time::advance(Duration::from_millis(500)).await;
    send(&mut conn, &subscribe(other)).await.unwrap();
    sink.take();
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(conn.run_periodic_timers(Instant::now()).await, 1);
    assert_eq!(sink.take(), vec![data(TIMER_ID, r#"{"tick":1}"#)]);
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(conn.run_periodic_timers(Instant::now()).await, 1);
    assert_eq!(sink.take(), vec![data(other, r#"{"tick":1}"#)]);
    send(&mut conn, &unsubscribe(TIMER_ID)).await.unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(conn.run_periodic_timers(Instant::now()).await, 1);
    assert_eq!(sink.take(), vec![data(other, r#"{"tick":2}"#)]);
}
