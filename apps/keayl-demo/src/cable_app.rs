//! The demo's Action Cable application: a chat with rooms, presence and
//! typing notices, a ticker (for the SSE transport's resume on the index
//! page), the de-facto benchmark channel, and `$pubsub` for signed streams.
//!
//! The demo's [`ChatChannel`] is not the fixture's
//! ([`fixture::ChatChannel`](crate::fixture::ChatChannel)): that one is the
//! reference Rails app's, its frames a contract checked against Rails
//! transcripts (`room:<room>`, `{"message","from"}`, `echo`/`tick`/`slow`);
//! this one is a chat for people (`chat:<room>`, presence, whispers, trimmed
//! and capped text). They share the lenient field decoding (`lenient.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keayl_cable::connection::{ConnectError, Connection, ConnectionHandler};
use keayl_cable::pubsub_channel::PubSubChannel;
use keayl_cable::signing::StreamVerifier;
use keayl_cable::{
    Broadcaster, Cable, CableConfig, Channel, ChannelContext, ChannelError, Data, NoActions, PubSub,
};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::lenient::str_or_empty;

/// Connections are identified by a display name from the `name` query
/// parameter (trimmed, its first 40 characters), or a random guest name
/// (`guest-` and 6 hex digits) without one: random rather than counted, so
/// that demo processes sharing a pub/sub backend (and its presence sets)
/// never give two people the same name.
#[derive(Debug, Default)]
pub struct DemoConnection;

/// `guest-` and 24 random bits in hex.
fn guest_name() -> String {
    let mut bytes = [0u8; 3];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: the clock's nanoseconds, still unlikely to clash.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        bytes.copy_from_slice(&nanos.to_le_bytes()[..3]);
    }
    format!("guest-{:02x}{:02x}{:02x}", bytes[0], bytes[1], bytes[2])
}

impl ConnectionHandler for DemoConnection {
    const IDENTIFIED_BY: &'static [&'static str] = &["current_user"];

    async fn connect(&self, conn: &mut Connection) -> Result<(), ConnectError> {
        let name = conn
            .request()
            .query("name")
            .map(|n| n.trim().chars().take(40).collect::<String>())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(guest_name);
        conn.set_identifier("current_user", name);
        Ok(())
    }
}

/// The chat: param `room`; action `speak` (`{"text":…}`). `chat:<room>` is
/// the subscription's presence stream (the connection's `current_user`
/// joins it as its id, with info `{"name":…}`, in every process sharing
/// the pub/sub) and its whisper stream (typing notices go from client to
/// client, never through the channel).
#[derive(Debug, Default)]
pub struct ChatChannel {
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

/// Whether a failed presence join was already logged as a warning (a
/// backend without presence, NATS say, fails every join: warn once).
static PRESENCE_WARNED: AtomicBool = AtomicBool::new(false);

impl Channel for ChatChannel {
    const NAME: &'static str = "ChatChannel";
    type Action = ChatAction;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        let Some(room) = room_of(ctx) else {
            ctx.reject();
            return Ok(());
        };
        let user = current_user(ctx);
        let stream = format!("chat:{room}");
        ctx.stream_from(stream).with_presence().with_whispers();
        // The join reaches every subscriber of the room, this one included
        // (after its confirmation); the leave is the cable's: at once on
        // unsubscribe, after the presence TTL on disconnect (a reload does
        // not flicker), with the user's last tab.
        if let Err(e) = ctx.join_presence(&user, &json!({ "name": user })).await {
            // The chat still works without an online list.
            if !PRESENCE_WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "presence join failed; the chat goes on without it");
            } else {
                tracing::debug!(error = %e, "presence join failed");
            }
        }
        self.joined = Some((room, user));
        Ok(())
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

/// The environment variable with the key that signs stream names for
/// `$pubsub` (`cable.streamFromSigned(…)`, the `/signed` page): any string,
/// used as the raw HMAC-SHA256 key (as Turbo's
/// `signed_stream_verifier_key`). Processes sharing a pub/sub backend must
/// share it.
pub const STREAM_KEY_ENV: &str = "KEAYL_DEMO_STREAM_KEY";

/// The stream key without [`STREAM_KEY_ENV`]: a fixed development key,
/// public in this source, so anyone can sign any stream name with it. Set
/// [`STREAM_KEY_ENV`] wherever the demo is reachable by others.
pub const DEV_STREAM_KEY: &str = "keayl-demo-development-stream-key";

/// The stream the `/signed` page subscribes to by its signed name; publish
/// to it with `POST /_broadcast {"stream":"announcements","data":…}`.
pub const ANNOUNCEMENTS_STREAM: &str = "announcements";

/// [`STREAM_KEY_ENV`]'s value when set and not empty, else [`DEV_STREAM_KEY`].
pub fn default_stream_key() -> String {
    std::env::var(STREAM_KEY_ENV)
        .ok()
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| DEV_STREAM_KEY.to_owned())
}

/// Options of the demo cable.
#[derive(Debug, Clone)]
pub struct DemoCableOptions {
    /// How long a presence session outlives its connection
    /// ([`CableConfig::presence_ttl`]). Default 15 s.
    pub presence_ttl: Duration,
    /// Verifies the signed stream names of `$pubsub` subscriptions.
    /// Default: keyed with [`default_stream_key`].
    pub stream_verifier: StreamVerifier,
}

impl Default for DemoCableOptions {
    fn default() -> Self {
        DemoCableOptions {
            presence_ttl: CableConfig::default().presence_ttl,
            stream_verifier: StreamVerifier::new(default_stream_key()),
        }
    }
}

/// The demo cable on `pubsub`, with default options.
pub fn demo_cable(pubsub: Arc<dyn PubSub>) -> Cable {
    demo_cable_with_options(pubsub, &DemoCableOptions::default())
}

/// The demo cable on `pubsub`: `ChatChannel`, `TickerChannel`,
/// `BenchmarkChannel`, and `$pubsub` for signed stream names only.
pub fn demo_cable_with_options(pubsub: Arc<dyn PubSub>, options: &DemoCableOptions) -> Cable {
    demo_cable_with(pubsub, Ticker::new(TICK_EVERY, TICKER_LINGER), options)
}

fn demo_cable_with(pubsub: Arc<dyn PubSub>, ticker: Ticker, options: &DemoCableOptions) -> Cable {
    let broadcaster = Broadcaster::new(pubsub.clone());
    let signed = PubSubChannel::signed(options.stream_verifier.clone());
    Cable::builder_shared(pubsub)
        .connection_handler(DemoConnection)
        .channel::<ChatChannel>()
        .channel_with(move || TickerChannel {
            ticker: ticker.clone(),
            broadcaster: broadcaster.clone(),
            listener: None,
        })
        .channel::<BenchmarkChannel>()
        .channel_with(move || signed.clone())
        .config(CableConfig {
            presence_ttl: options.presence_ttl,
            ..CableConfig::default()
        })
        .build()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use keayl_cable::connection::{Identifiers, Request, Sink};
    use keayl_cable::protocol::Protocol;
    use keayl_cable::testing::{TestCable, TestConnection};
    use keayl_cable::{CommandError, InMemory};
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

    #[tokio::test]
    async fn connections_are_named_by_the_query_or_as_random_guests() {
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
        let mut guests = Vec::new();
        for _ in 0..2 {
            let conn = cable.connect(get("/cable?name=%20")).await;
            let name = conn.connection_identifier().unwrap().to_owned();
            let hex = name
                .strip_prefix("guest-")
                .unwrap_or_else(|| panic!("{name}"));
            assert!(
                hex.len() == 6 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
                "{name}"
            );
            guests.push(name);
        }
        // 1 in 16 million that this fails by chance.
        assert_ne!(guests[0], guests[1], "random, not counted");
    }

    /// A client of the demo cable over the extended protocol, driven frame
    /// by frame (the presence and whisper commands are the extended
    /// protocol's), with what it received.
    struct Client {
        conn: Connection,
        received: Arc<Mutex<Vec<Value>>>,
    }

    const LOBBY: &str = r#"{"channel":"ChatChannel","room":"lobby"}"#;

    impl Client {
        async fn open(cable: &Cable, name: &str) -> Client {
            let received: Arc<Mutex<Vec<Value>>> = Arc::default();
            let log = received.clone();
            let sink = Sink::new(move |frame: Bytes| {
                log.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&frame).unwrap());
            });
            let request = Request::from(get(&format!("/cable?name={name}")))
                .with_protocol(Protocol::V1ExtJson);
            let mut conn = cable
                .connection(sink, Identifiers::new())
                .with_request(request);
            conn.open().await;
            let client = Client { conn, received };
            assert_eq!(client.take()[0]["type"], "welcome");
            client
        }

        async fn send(&mut self, command: Value) {
            self.conn
                .handle_frame(command.to_string().as_bytes())
                .await
                .unwrap();
        }

        async fn subscribe(&mut self, identifier: &str) {
            self.send(json!({"command": "subscribe", "identifier": identifier}))
                .await;
        }

        fn take(&self) -> Vec<Value> {
            std::mem::take(&mut *self.received.lock().unwrap())
        }

        /// The `message` of each frame received (presence events, data).
        fn messages(&self) -> Vec<Value> {
            self.take()
                .into_iter()
                .filter(|f| f["identifier"] == LOBBY)
                .filter_map(|f| f.get("message").cloned())
                .collect()
        }
    }

    async fn present(cable: &Cable, stream: &str) -> Vec<(String, Value)> {
        let set = cable.presence(stream).await.unwrap();
        let mut members: Vec<(String, Value)> = set
            .members
            .iter()
            .map(|m| (m.id.clone(), serde_json::from_slice(&m.info).unwrap()))
            .collect();
        members.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(set.total, members.len());
        members
    }

    #[tokio::test]
    async fn chat_streams_its_room_with_presence_and_whispers() {
        let cable = demo_cable(Arc::new(InMemory::new()));
        let mut alice = Client::open(&cable, "alice").await;
        alice.subscribe(LOBBY).await;
        let frames = alice.take();
        assert_eq!(frames[0]["type"], "confirm_subscription", "{frames:?}");
        // The server-side join, after the confirmation, reaches the joiner.
        assert_eq!(
            frames[1],
            json!({"type": "presence", "identifier": LOBBY,
                   "message": {"type": "join", "id": "alice", "info": {"name": "alice"}}})
        );
        assert_eq!(frames.len(), 2, "{frames:?}");
        assert_eq!(
            present(&cable, "chat:lobby").await,
            [("alice".to_owned(), json!({"name": "alice"}))]
        );

        // A second user in the room: the first sees the join.
        let mut bob = Client::open(&cable, "bob").await;
        bob.subscribe(LOBBY).await;
        assert_eq!(
            alice.messages(),
            [json!({"type": "join", "id": "bob", "info": {"name": "bob"}})]
        );
        assert_eq!(
            bob.messages(),
            [json!({"type": "join", "id": "bob", "info": {"name": "bob"}})]
        );
        bob.send(json!({"command": "presence", "identifier": LOBBY, "data": {}}))
            .await;
        assert_eq!(
            bob.messages(),
            [json!({"type": "info", "total": 2, "records": [
                {"id": "alice", "info": {"name": "alice"}},
                {"id": "bob", "info": {"name": "bob"}},
            ]})]
        );

        // A second tab of alice's: no second join.
        let mut alice2 = Client::open(&cable, "alice").await;
        alice2.subscribe(LOBBY).await;
        assert_eq!(bob.messages(), Vec::<Value>::new());
        assert_eq!(present(&cable, "chat:lobby").await.len(), 2);

        // A whisper reaches the others, not its sender, and is not a broadcast
        // of the room's stream (so never in its history).
        let typing = json!({"type": "typing", "from": "bob"});
        bob.send(json!({"command": "whisper", "identifier": LOBBY, "data": typing}))
            .await;
        assert_eq!(
            alice.take(),
            [json!({"identifier": LOBBY, "message": typing})]
        );
        assert_eq!(alice2.messages(), [typing]);
        assert_eq!(bob.take(), Vec::<Value>::new());

        // Speaking is a broadcast, to everyone.
        bob.send(json!({"command": "message", "identifier": LOBBY,
                        "data": json!({"action": "speak", "text": "hi"}).to_string()}))
            .await;
        let said = json!({"type": "message", "from": "bob", "text": "hi"});
        assert_eq!(alice.messages(), std::slice::from_ref(&said));
        assert_eq!(bob.messages(), std::slice::from_ref(&said));

        // An unsubscribe leaves at once; one of two tabs leaving does not.
        bob.send(json!({"command": "unsubscribe", "identifier": LOBBY}))
            .await;
        assert_eq!(alice.messages(), [json!({"type": "leave", "id": "bob"})]);
        alice2
            .send(json!({"command": "unsubscribe", "identifier": LOBBY}))
            .await;
        assert_eq!(alice.messages(), Vec::<Value>::new());
        assert_eq!(
            present(&cable, "chat:lobby").await,
            [("alice".to_owned(), json!({"name": "alice"}))]
        );
        // A disconnect leaves only after the presence TTL.
        alice.conn.disconnect().await;
        assert_eq!(present(&cable, "chat:lobby").await.len(), 1);
    }

    /// `streams` without the cable's own (`$keayl:presence:…` and
    /// `$keayl:whisper:…`, which the context lists too).
    fn app_streams(streams: &[String]) -> Vec<&str> {
        streams
            .iter()
            .map(String::as_str)
            .filter(|s| !s.starts_with('$'))
            .collect()
    }

    #[tokio::test]
    async fn chat_streams_its_room_and_broadcasts_what_is_said() {
        let cable = TestCable::from_fn(demo_cable);
        let alice = as_user(&cable, "alice").await;
        let a = alice
            .subscribe::<ChatChannel>(json!({"room": " lobby "}))
            .await
            .unwrap();
        assert!(a.is_confirmed());
        assert_eq!(app_streams(&a.streams()), ["chat:lobby"]);
        let bob = as_user(&cable, "bob").await;
        let b = bob
            .subscribe::<ChatChannel>(json!({"room": "lobby"}))
            .await
            .unwrap();
        a.take_transmissions();
        b.perform("speak", json!({"text": "hi"})).await.unwrap();
        let said = json!({"type": "message", "from": "bob", "text": "hi"});
        assert_eq!(a.take_transmissions(), std::slice::from_ref(&said));
        assert_eq!(cable.broadcasts("chat:lobby"), [said]);
        b.unsubscribe().await.unwrap();
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
        let cable = TestCable::from_fn(|p| {
            let ticker = Ticker::new(every, Duration::from_secs(5));
            demo_cable_with(p, ticker, &DemoCableOptions::default())
        });
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
    async fn pubsub_streams_signed_names_only() {
        let key = StreamVerifier::new("test-key");
        let options = DemoCableOptions {
            stream_verifier: key.clone(),
            ..DemoCableOptions::default()
        };
        let cable = TestCable::from_fn(|p| demo_cable_with_options(p, &options));
        let conn = as_user(&cable, "reader").await;
        let signed = key.generate(ANNOUNCEMENTS_STREAM);
        let sub = conn
            .subscribe::<PubSubChannel>(json!({"signed_stream_name": signed}))
            .await
            .unwrap();
        assert!(sub.is_confirmed());
        assert_eq!(app_streams(&sub.streams()), [ANNOUNCEMENTS_STREAM]);
        cable
            .cable()
            .broadcast(ANNOUNCEMENTS_STREAM, &json!({"text": "hello"}))
            .await
            .unwrap();
        assert_eq!(sub.take_transmissions(), [json!({"text": "hello"})]);

        let other_key = StreamVerifier::new(DEV_STREAM_KEY).generate(ANNOUNCEMENTS_STREAM);
        for params in [
            json!({"signed_stream_name": other_key}),
            json!({"stream_name": ANNOUNCEMENTS_STREAM}),
            json!({}),
        ] {
            let refused = conn.subscribe::<PubSubChannel>(params).await.unwrap();
            assert!(refused.is_rejected(), "{refused:?}");
        }
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
