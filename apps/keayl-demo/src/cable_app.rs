//! The demo's Action Cable application: a chat with rooms and presence, a
//! ticker (for the SSE transport's resume on the index page), and the
//! de-facto benchmark channel.
//!
//! The demo's [`ChatChannel`] is not the fixture's
//! ([`fixture::ChatChannel`](crate::fixture::ChatChannel)): that one is the
//! reference Rails app's, its frames a contract checked against Rails
//! transcripts (`room:<room>`, `{"message","from"}`, `echo`/`tick`/`slow`);
//! this one is a chat for people (`chat:<room>`, presence lists, trimmed and
//! capped text). They share the lenient field decoding (`lenient.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keayl_cable::connection::{ConnectError, Connection, ConnectionHandler};
use keayl_cable::{
    Broadcaster, Cable, Channel, ChannelContext, ChannelError, Data, NoActions, PubSub,
};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::lenient::str_or_empty;

/// Connections are identified by a display name from the `name` query
/// parameter (a generated guest name without one).
#[derive(Debug, Default)]
pub struct DemoConnection {
    guests: AtomicU64,
}

impl ConnectionHandler for DemoConnection {
    const IDENTIFIED_BY: &'static [&'static str] = &["current_user"];

    async fn connect(&self, conn: &mut Connection) -> Result<(), ConnectError> {
        let name = conn
            .request()
            .query("name")
            .map(|n| n.trim().chars().take(40).collect::<String>())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| {
                format!("guest-{}", self.guests.fetch_add(1, Ordering::Relaxed) + 1)
            });
        conn.set_identifier("current_user", name);
        Ok(())
    }
}

/// Who is in which room, for presence lists.
#[derive(Debug, Default, Clone)]
pub struct Presence {
    rooms: Arc<Mutex<HashMap<String, BTreeMap<String, usize>>>>,
}

impl Presence {
    fn join(&self, room: &str, user: &str) -> Vec<String> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let members = rooms.entry(room.to_owned()).or_default();
        *members.entry(user.to_owned()).or_default() += 1;
        members.keys().cloned().collect()
    }

    fn leave(&self, room: &str, user: &str) -> Vec<String> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let Some(members) = rooms.get_mut(room) else {
            return Vec::new();
        };
        if let Some(n) = members.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                members.remove(user);
            }
        }
        let list = members.keys().cloned().collect();
        if members.is_empty() {
            rooms.remove(room);
        }
        list
    }
}

/// The chat: param `room`; action `speak` (`{"text":…}`); presence updates on
/// join and leave.
#[derive(Debug, Default)]
pub struct ChatChannel {
    presence: Presence,
    joined: Option<(String, String)>,
}

fn current_user(ctx: &ChannelContext<'_>) -> String {
    ctx.identifiers()
        .get::<String>("current_user")
        .cloned()
        .unwrap_or_default()
}

fn room_of(ctx: &ChannelContext<'_>) -> Option<String> {
    let room = ctx.param_str("room")?.trim();
    (!room.is_empty() && room.len() <= 64).then(|| room.to_owned())
}

/// What clients may call on [`ChatChannel`].
#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ChatAction {
    /// Say `text` (its first 2000 characters) to the room; blank text is
    /// ignored.
    Speak {
        /// The text; `""` when missing or not a string.
        #[serde(default, deserialize_with = "str_or_empty")]
        text: String,
    },
}

impl Channel for ChatChannel {
    const NAME: &'static str = "ChatChannel";
    type Action = ChatAction;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        let Some(room) = room_of(ctx) else {
            ctx.reject();
            return Ok(());
        };
        let user = current_user(ctx);
        ctx.stream_from(format!("chat:{room}"));
        let members = self.presence.join(&room, &user);
        self.joined = Some((room.clone(), user));
        // Published after subscribing: everyone, this client included (once
        // confirmed), sees the new member list.
        ctx.broadcast_to(
            &format!("chat:{room}"),
            &json!({"type": "presence", "users": members}),
        )
        .await?;
        Ok(())
    }

    async fn unsubscribed(&mut self, ctx: &mut ChannelContext<'_>) {
        if let Some((room, user)) = self.joined.take() {
            let members = self.presence.leave(&room, &user);
            let _ = ctx
                .broadcast_to(
                    &format!("chat:{room}"),
                    &json!({"type": "presence", "users": members}),
                )
                .await;
        }
    }

    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        action: ChatAction,
    ) -> Result<(), ChannelError> {
        match action {
            ChatAction::Speak { text } => {
                let Some((room, user)) = &self.joined else {
                    return Ok(());
                };
                let text: String = text.chars().take(2000).collect();
                if text.trim().is_empty() {
                    return Ok(());
                }
                ctx.broadcast_to(
                    &format!("chat:{room}"),
                    &json!({"type": "message", "from": user, "text": text}),
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// The de-facto benchmark channel (anycable/websocket-bench,
/// hashrocket/websocket-shootout): streams `all` (or `all<id>` with an `id`
/// param); `echo` transmits the data back; `broadcast` broadcasts the data to
/// the stream and transmits it to the sender with action `broadcastResult`.
#[derive(Debug, Default)]
pub struct BenchmarkChannel;

fn bench_stream(ctx: &ChannelContext<'_>) -> String {
    match ctx.params().get("id") {
        Some(Value::String(s)) => format!("all{s}"),
        Some(Value::Number(n)) => format!("all{n}"),
        _ => "all".to_owned(),
    }
}

/// What clients may call on [`BenchmarkChannel`]. Both actions send the
/// data object on as it came (`action` included, keys in the client's
/// order, numbers untouched), so each holds it whole.
#[derive(Debug)]
pub enum BenchmarkAction {
    /// `echo`: transmit the data back.
    Echo(Data),
    /// `broadcast`: broadcast the data, then transmit it to the sender with
    /// action `broadcastResult`.
    Broadcast(Data),
}

impl<'de> Deserialize<'de> for BenchmarkAction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let data = Data::deserialize(d)?;
        match data.get("action").and_then(Value::as_str) {
            Some("echo") => Ok(BenchmarkAction::Echo(data)),
            Some("broadcast") => Ok(BenchmarkAction::Broadcast(data)),
            Some(other) => Err(serde::de::Error::unknown_variant(
                other,
                &["echo", "broadcast"],
            )),
            None => Err(serde::de::Error::missing_field("action")),
        }
    }
}

impl Channel for BenchmarkChannel {
    const NAME: &'static str = "BenchmarkChannel";
    type Action = BenchmarkAction;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        let stream = bench_stream(ctx);
        ctx.stream_from(stream);
        Ok(())
    }

    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        action: BenchmarkAction,
    ) -> Result<(), ChannelError> {
        match action {
            BenchmarkAction::Echo(data) => ctx.transmit(&data),
            BenchmarkAction::Broadcast(data) => {
                ctx.broadcast_to(&bench_stream(ctx), &data).await?;
                ctx.transmit(data.with_action("broadcastResult"));
            }
        }
        Ok(())
    }
}

/// The stream [`TickerChannel`] listens to: `{"n":…,"unix":…}` once a
/// second, with stream positions (so the SSE transport resumes it from
/// `Last-Event-ID`).
pub const TICKER_STREAM: &str = "demo:ticker";

/// Interval of the ticker.
pub const TICK_EVERY: Duration = Duration::from_secs(1);

/// How long the ticker goes on after its last listener left: a client
/// that comes back within it finds the ticks it missed in the stream's
/// history.
pub const TICKER_LINGER: Duration = Duration::from_secs(60);

/// One ticker per cable, started by the first [`TickerChannel`]
/// subscription and stopped [`TICKER_LINGER`] after the last one ended.
/// Its count `n` goes on across stops. (Each process of a multi-process
/// demo runs its own ticker on the shared stream.)
#[derive(Debug, Clone)]
pub struct Ticker {
    state: Arc<Mutex<TickerState>>,
    every: Duration,
    linger: Duration,
}

#[derive(Debug, Default)]
struct TickerState {
    listeners: usize,
    running: bool,
    idle_since: Option<Instant>,
    n: u64,
}

impl Ticker {
    fn new(every: Duration, linger: Duration) -> Self {
        Ticker {
            state: Arc::default(),
            every,
            linger,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TickerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One more listener; starts the ticking task if it is not running.
    fn join(&self, broadcaster: &Broadcaster) -> TickerListener {
        let mut st = self.lock();
        st.listeners += 1;
        st.idle_since = None;
        if !st.running {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    st.running = true;
                    runtime.spawn(self.clone().run(broadcaster.clone()));
                }
                Err(_) => tracing::warn!("no tokio runtime: the ticker cannot start"),
            }
        }
        TickerListener {
            ticker: self.clone(),
        }
    }

    fn leave(&self) {
        let mut st = self.lock();
        st.listeners = st.listeners.saturating_sub(1);
        if st.listeners == 0 {
            st.idle_since = Some(Instant::now());
        }
    }

    async fn run(self, broadcaster: Broadcaster) {
        let mut interval = tokio::time::interval_at(Instant::now() + self.every, self.every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            interval.tick().await;
            let n = {
                let mut st = self.lock();
                let idle = st.listeners == 0
                    && st
                        .idle_since
                        .is_some_and(|since| since.elapsed() >= self.linger);
                if idle {
                    st.running = false;
                    return;
                }
                st.n += 1;
                st.n
            };
            let unix = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            match broadcaster
                .broadcast(TICKER_STREAM, &json!({"n": n, "unix": unix}))
                .await
            {
                Ok(()) => failing = false,
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "ticker broadcast failed");
                    }
                    failing = true;
                }
            }
        }
    }
}

/// A [`TickerChannel`] subscription's place among the ticker's listeners,
/// given back when dropped (however the subscription ends).
#[derive(Debug)]
struct TickerListener {
    ticker: Ticker,
}

impl Drop for TickerListener {
    fn drop(&mut self) {
        self.ticker.leave();
    }
}

/// The ticker: streams [`TICKER_STREAM`], keeping the shared [`Ticker`]
/// running while subscribed. No actions. The index page reads it over the
/// SSE transport (`/cable/events?channel=TickerChannel`).
#[derive(Debug)]
pub struct TickerChannel {
    ticker: Ticker,
    broadcaster: Broadcaster,
    listener: Option<TickerListener>,
}

impl Channel for TickerChannel {
    const NAME: &'static str = "TickerChannel";
    type Action = NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_from(TICKER_STREAM);
        if self.listener.is_none() {
            self.listener = Some(self.ticker.join(&self.broadcaster));
        }
        Ok(())
    }

    async fn unsubscribed(&mut self, _ctx: &mut ChannelContext<'_>) {
        self.listener = None;
    }
}

/// The demo cable on `pubsub`.
pub fn demo_cable(pubsub: Arc<dyn PubSub>) -> Cable {
    demo_cable_with(pubsub, Ticker::new(TICK_EVERY, TICKER_LINGER))
}

fn demo_cable_with(pubsub: Arc<dyn PubSub>, ticker: Ticker) -> Cable {
    let presence = Presence::default();
    let broadcaster = Broadcaster::new(pubsub.clone());
    Cable::builder_shared(pubsub)
        .connection_handler(DemoConnection::default())
        .channel_with(move || ChatChannel {
            presence: presence.clone(),
            joined: None,
        })
        .channel_with(move || TickerChannel {
            ticker: ticker.clone(),
            broadcaster: broadcaster.clone(),
            listener: None,
        })
        .channel::<BenchmarkChannel>()
        .build()
}

#[cfg(test)]
mod tests {
    use keayl_cable::CommandError;
    use keayl_cable::connection::Identifiers;
    use keayl_cable::testing::{TestCable, TestConnection};
    use serde_json::json;

    use super::*;

    fn get(uri: &str) -> http::Request<()> {
        http::Request::get(uri).body(()).unwrap()
    }

    async fn as_user(cable: &TestCable, name: &str) -> TestConnection {
        cable
            .stub_connection(Identifiers::new().with("current_user", name.to_string()))
            .await
    }

    fn presence(users: &[&str]) -> Value {
        json!({"type": "presence", "users": users})
    }

    #[tokio::test]
    async fn connections_are_named_by_the_query_or_as_guests() {
        let cable = TestCable::from_fn(demo_cable);
        let alice = cable.connect(get("/cable?name=%20alice%20")).await;
        assert!(alice.is_open());
        assert_eq!(
            alice
                .identifier::<String>("current_user")
                .map(String::as_str),
            Some("alice")
        );
        let long = "x".repeat(50);
        let named = cable.connect(get(&format!("/cable?name={long}"))).await;
        assert_eq!(named.connection_identifier(), Some(&long[..40]));
        for guest in ["guest-1", "guest-2"] {
            let conn = cable.connect(get("/cable?name=%20")).await;
            assert_eq!(conn.connection_identifier(), Some(guest));
        }
    }

    #[tokio::test]
    async fn chat_streams_its_room_and_shares_presence_between_clients() {
        let cable = TestCable::from_fn(demo_cable);
        let alice = as_user(&cable, "alice").await;
        let a = alice
            .subscribe::<ChatChannel>(json!({"room": " lobby "}))
            .await
            .unwrap();
        assert!(a.is_confirmed());
        assert_eq!(a.streams(), ["chat:lobby"]);
        // The join is broadcast during `subscribed` and still reaches the
        // joiner, after its confirmation.
        assert_eq!(a.take_transmissions(), [presence(&["alice"])]);

        // Presence lives in the cable's channel factory, shared by clients.
        let bob = as_user(&cable, "bob").await;
        let b = bob
            .subscribe::<ChatChannel>(json!({"room": "lobby"}))
            .await
            .unwrap();
        assert_eq!(a.take_transmissions(), [presence(&["alice", "bob"])]);
        assert_eq!(b.take_transmissions(), [presence(&["alice", "bob"])]);

        b.perform("speak", json!({"text": "hi"})).await.unwrap();
        let said = json!({"type": "message", "from": "bob", "text": "hi"});
        assert_eq!(a.take_transmissions(), std::slice::from_ref(&said));
        assert_eq!(cable.broadcasts("chat:lobby").last(), Some(&said));

        b.unsubscribe().await.unwrap();
        assert_eq!(a.take_transmissions(), [presence(&["alice"])]);
        assert!(b.streams().is_empty());
    }

    #[tokio::test]
    async fn chat_ignores_blank_text_and_refuses_unknown_actions() {
        let cable = TestCable::from_fn(demo_cable);
        let alice = as_user(&cable, "alice").await;
        let chat = alice
            .subscribe::<ChatChannel>(json!({"room": "1"}))
            .await
            .unwrap();
        cable.clear_broadcasts();
        for data in [json!({"text": "   "}), json!({"text": 5}), json!({})] {
            chat.perform("speak", data).await.unwrap();
        }
        assert!(cable.broadcasts("chat:1").is_empty());
        let long = "y".repeat(2500);
        chat.perform("speak", json!({"text": long})).await.unwrap();
        assert_eq!(
            cable.broadcasts("chat:1")[0]["text"].as_str().map(str::len),
            Some(2000)
        );
        let err = chat.perform("shout", json!({"text": "hi"})).await;
        assert!(
            matches!(err, Err(CommandError::InvalidAction { .. })),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn chat_rejects_a_missing_blank_or_long_room() {
        let cable = TestCable::from_fn(demo_cable);
        let alice = as_user(&cable, "alice").await;
        for params in [
            json!({}),
            json!({"room": "  "}),
            json!({"room": "r".repeat(65)}),
        ] {
            let sub = alice.subscribe::<ChatChannel>(params).await.unwrap();
            assert!(sub.is_rejected() && sub.streams().is_empty());
        }
        assert!(cable.broadcast_streams().is_empty(), "no presence sent");
    }

    #[tokio::test]
    async fn benchmark_echoes_and_broadcasts_the_data_as_sent() {
        let cable = TestCable::from_fn(demo_cable);
        let conn = as_user(&cable, "bench").await;
        let bench = conn.subscribe::<BenchmarkChannel>(()).await.unwrap();
        assert!(bench.is_confirmed() && bench.has_stream("all"));

        // Keys in the client's order, at every depth; numbers re-encoded as Rails does.
        let payload =
            serde_json::value::RawValue::from_string(r#"{"z":1,"a":{"y":2,"n":1.50}}"#.to_owned())
                .unwrap();
        bench.perform("echo", &payload).await.unwrap();
        assert_eq!(
            bench.take_transmissions(),
            [json!({"z": 1, "a": {"y": 2, "n": 1.5}, "action": "echo"})]
        );
        let last = conn.raw_frames().pop().unwrap();
        assert!(
            last.ends_with(r#""message":{"z":1,"a":{"y":2,"n":1.5},"action":"echo"}}"#),
            "the client's key order: {last}"
        );

        bench.perform("broadcast", json!({"n": 7})).await.unwrap();
        assert_eq!(
            cable.broadcasts("all"),
            [json!({"n": 7, "action": "broadcast"})]
        );
        assert_eq!(
            bench.take_transmissions(),
            [
                json!({"n": 7, "action": "broadcast"}),
                json!({"n": 7, "action": "broadcastResult"}),
            ]
        );

        let err = bench.perform("stats", ()).await;
        assert!(
            matches!(err, Err(CommandError::InvalidAction { .. })),
            "{err:?}"
        );
        let err = bench.receive(json!({"n": 1})).await;
        assert!(
            matches!(err, Err(CommandError::UnknownAction { .. })),
            "{err:?}"
        );
    }

    fn ticks(cable: &TestCable) -> Vec<u64> {
        cable
            .broadcasts(TICKER_STREAM)
            .iter()
            .map(|t| t["n"].as_u64().unwrap())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn one_ticker_runs_while_anyone_listens_and_lingers_after() {
        let every = Duration::from_secs(1);
        let cable =
            TestCable::from_fn(|p| demo_cable_with(p, Ticker::new(every, Duration::from_secs(5))));
        let ann = as_user(&cable, "ann").await;
        let a = ann.subscribe::<TickerChannel>(()).await.unwrap();
        assert!(a.is_confirmed() && a.has_stream(TICKER_STREAM));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(ticks(&cable), [1, 2]);
        let tick = &cable.broadcasts(TICKER_STREAM)[0];
        assert!(tick["unix"].as_u64().unwrap() > 1_700_000_000, "{tick}");

        // A second listener shares the ticker: still one tick a second.
        let bob = as_user(&cable, "bob").await;
        let b = bob.subscribe::<TickerChannel>(()).await.unwrap();
        tokio::time::sleep(every * 2).await;
        assert_eq!(ticks(&cable), [1, 2, 3, 4]);
        assert!(!b.take_transmissions().is_empty(), "ticks reach listeners");

        // Nobody listens: it goes on for the linger, then stops.
        a.unsubscribe().await.unwrap();
        b.unsubscribe().await.unwrap();
        tokio::time::sleep(every * 3).await;
        assert_eq!(ticks(&cable), [1, 2, 3, 4, 5, 6, 7]);
        tokio::time::sleep(every * 10).await;
        let stopped = ticks(&cable);
        assert!(stopped.len() <= 10, "stopped after the linger: {stopped:?}");
        tokio::time::sleep(every * 10).await;
        assert_eq!(ticks(&cable), stopped);

        // The next listener starts it again; the count goes on.
        let c = ann.subscribe::<TickerChannel>(()).await.unwrap();
        assert!(c.is_confirmed());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let last = *stopped.last().unwrap();
        assert_eq!(ticks(&cable)[stopped.len()..], [last + 1]);
    }

    #[tokio::test]
    async fn benchmark_streams_per_id() {
        let cable = TestCable::from_fn(demo_cable);
        let conn = as_user(&cable, "bench").await;
        let by_number = conn
            .subscribe::<BenchmarkChannel>(json!({"id": 42}))
            .await
            .unwrap();
        let by_string = conn
            .subscribe::<BenchmarkChannel>(json!({"id": "x"}))
            .await
            .unwrap();
        assert_eq!(by_number.streams(), ["all42"]);
        assert_eq!(by_string.streams(), ["allx"]);
        by_number
            .perform("broadcast", json!({"n": 1}))
            .await
            .unwrap();
        assert_eq!(cable.broadcasts("all42").len(), 1);
        assert!(by_string.transmissions().is_empty());
    }
}
