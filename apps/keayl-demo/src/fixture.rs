//! The conformance fixture that Action Cable test suites expect (the
//! `cable-fixture` binary): the channels of the reference Rails app, with
//! origin checking off on `/cable` and on at `/cable-origin`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use keayl_axum::cable::{
    AllowedOrigin, BroadcastAuth, CableServer, OriginPolicy, ServerConfig, SocketConfig,
};
use keayl_cable::connection::{ConnectError, Connection, ConnectionHandler};
use keayl_cable::jwt::JwtIdentifier;
use keayl_cable::naming::GlobalId;
use keayl_cable::pubsub_channel::PubSubChannel;
use keayl_cable::signing::StreamVerifier;
use keayl_cable::turbo_channel::TurboStreamsChannel;
use keayl_cable::{Cable, Channel, ChannelContext, ChannelError, Data, NoActions, PubSub};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

// Action fields are lenient: a field of another JSON type counts as missing.
use crate::lenient::{bool_or_true, str_or_empty, u64_or_zero, yes};

/// The Turbo verifier key of the fixture.
pub const TURBO_KEY: &str = "s3Krit";

/// The fixture's JWT identification secret (HS256).
pub const JWT_SECRET: &str = "qwerty";

/// Authenticates by the `token` query parameter, else the `token` cookie:
/// `bad` is rejected, any other token is `current_user`, none is accepted
/// with `current_user` null.
#[derive(Debug, Default)]
pub struct FixtureConnection;

fn current_user_json(ids: &keayl_cable::Identifiers) -> Value {
    ids.get::<String>("current_user")
        .map_or(Value::Null, |u| Value::String(u.clone()))
}

impl ConnectionHandler for FixtureConnection {
    const IDENTIFIED_BY: &'static [&'static str] = &["current_user"];

    async fn connect(&self, conn: &mut Connection) -> Result<(), ConnectError> {
        let token = conn
            .request()
            .query("token")
            .or_else(|| conn.request().cookie("token"))
            .map(str::to_owned);
        match token.as_deref() {
            Some("bad") => conn.reject_unauthorized_connection(),
            Some(user) => {
                conn.set_identifier("current_user", user.to_owned());
                Ok(())
            }
            None => Ok(()),
        }
    }

    async fn disconnect(&self, conn: &mut Connection) {
        let user = current_user_json(conn.identifiers());
        let _ = conn
            .cable()
            .broadcast("audit", &json!({"event": "disconnect", "user": user}))
            .await;
    }
}

fn param_text(ctx: &ChannelContext<'_>, key: &str) -> String {
    match ctx.params().get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// `ChatChannel`: streams `room:<room>`; rejects room `forbidden`; `slow`
/// (`{"ms": N}`, N capped at [`SLOW_ACTION_MAX_MS`]) awaits N ms, then
/// transmits `{"slow": "done", "ms": N}`; messages without an action are
/// transmitted back as `{"received": data}`.
///
/// The reference Rails app's `ChatChannel`, whose frames test suites compare
/// byte for byte with Rails transcripts; not the demo's chat
/// ([`cable_app::ChatChannel`](crate::cable_app::ChatChannel): rooms on
/// `chat:<room>`, presence, `{"type":"message","from","text"}`), which shares
/// only the name and the lenient field decoding.
#[derive(Debug, Default)]
pub struct ChatChannel;

/// The longest wait `ChatChannel#slow` accepts (longer requests are capped).
pub const SLOW_ACTION_MAX_MS: u64 = 30_000;

/// What clients may call on [`ChatChannel`].
#[derive(Debug)]
pub enum ChatAction {
    /// `speak`: broadcast `{"message": message, "from": current_user}` to
    /// the room (`message` is any JSON, null when missing).
    Speak {
        /// The message, as sent.
        message: Value,
    },
    /// `echo`: transmit the whole data object back, `action` included.
    Echo(Data),
    /// `tick`: transmit the JSON string `"tock"`.
    Tick,
    /// `slow`: wait `ms` (0 unless a non-negative integer, capped at
    /// [`SLOW_ACTION_MAX_MS`]), then transmit `{"slow":"done","ms":ms}`.
    Slow {
        /// The requested wait in milliseconds, uncapped.
        ms: u64,
    },
}

/// The actions of [`ChatAction`] decoded field by field (`echo` keeps the
/// data object whole, so it is decoded apart).
#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum ChatFields {
    Speak {
        #[serde(default)]
        message: Value,
    },
    Tick,
    Slow {
        #[serde(default, deserialize_with = "u64_or_zero")]
        ms: u64,
    },
}

impl<'de> Deserialize<'de> for ChatAction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // `echo` sends the data on as it came: `action` included, keys in
        // the client's order, numbers untouched.
        let data = Data::deserialize(d)?;
        if data.get("action").and_then(Value::as_str) == Some("echo") {
            return Ok(ChatAction::Echo(data));
        }
        Ok(
            match data.decode::<ChatFields>().map_err(D::Error::custom)? {
                ChatFields::Speak { message } => ChatAction::Speak { message },
                ChatFields::Tick => ChatAction::Tick,
                ChatFields::Slow { ms } => ChatAction::Slow { ms },
            },
        )
    }
}

// What `ChatChannel` sends, as structs: serde writes their fields in this
// order, the order of the reference Rails app's hashes.

/// `speak`'s broadcast.
#[derive(Serialize)]
struct Said {
    message: Value,
    from: Value,
}

/// `slow`'s answer.
#[derive(Serialize)]
struct SlowDone {
    slow: &'static str,
    ms: u64,
}

/// What `unsubscribed` broadcasts to `audit`.
#[derive(Serialize)]
struct Unsubscribed {
    event: &'static str,
    user: Value,
    room: Value,
}

impl Channel for ChatChannel {
    const NAME: &'static str = "ChatChannel";
    type Action = ChatAction;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        let room = param_text(ctx, "room");
        if room == "forbidden" {
            ctx.reject();
            return Ok(());
        }
        ctx.stream_from(format!("room:{room}"));
        Ok(())
    }

    async fn unsubscribed(&mut self, ctx: &mut ChannelContext<'_>) {
        let user = current_user_json(ctx.identifiers());
        let room = ctx.params().get("room").cloned().unwrap_or(Value::Null);
        let _ = ctx
            .broadcast_to(
                "audit",
                &Unsubscribed {
                    event: "unsubscribed",
                    user,
                    room,
                },
            )
            .await;
    }

    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        action: ChatAction,
    ) -> Result<(), ChannelError> {
        match action {
            ChatAction::Speak { message } => {
                let room = param_text(ctx, "room");
                let user = current_user_json(ctx.identifiers());
                ctx.broadcast_to(
                    &format!("room:{room}"),
                    &Said {
                        message,
                        from: user,
                    },
                )
                .await?;
            }
            ChatAction::Echo(data) => ctx.transmit(&data),
            ChatAction::Tick => ctx.transmit("tock"),
            ChatAction::Slow { ms } => {
                // Awaits without blocking a thread: the connection keeps
                // pinging, reading and writing meanwhile.
                let ms = ms.min(SLOW_ACTION_MAX_MS);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                ctx.transmit(SlowDone { slow: "done", ms });
            }
        }
        Ok(())
    }

    async fn receive(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        data: &Data,
    ) -> Result<(), ChannelError> {
        ctx.transmit(json!({"received": data}));
        Ok(())
    }
}

/// `AuditChannel`: streams `audit`.
#[derive(Debug, Default)]
pub struct AuditChannel;

impl Channel for AuditChannel {
    const NAME: &'static str = "AuditChannel";
    type Action = NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_from("audit");
        Ok(())
    }
}

/// `TransmitChannel`: transmits `"hello"` then `"world"` while subscribing.
#[derive(Debug, Default)]
pub struct TransmitChannel;

impl Channel for TransmitChannel {
    const NAME: &'static str = "TransmitChannel";
    type Action = NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.transmit("hello");
        ctx.transmit("world");
        Ok(())
    }
}

/// `RejectChannel`: transmits a note, streams `rejected_stream`, rejects.
#[derive(Debug, Default)]
pub struct RejectChannel;

impl Channel for RejectChannel {
    const NAME: &'static str = "RejectChannel";
    type Action = NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.transmit(json!({"note": "before reject"}));
        ctx.stream_from("rejected_stream");
        ctx.reject();
        Ok(())
    }
}

/// `MultiStreamChannel`: streams `ms:a` and `ms:b`; `follow`/`unfollow`
/// (`{"name":…}`) and `stop_all`.
#[derive(Debug, Default)]
pub struct MultiStreamChannel;

/// What clients may call on [`MultiStreamChannel`].
#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum MultiStreamAction {
    /// Stream `name` too (a no-op for `""`).
    Follow {
        /// The stream; `""` when missing or not a string.
        #[serde(default, deserialize_with = "str_or_empty")]
        name: String,
    },
    /// Stop streaming `name`.
    Unfollow {
        /// The stream; `""` when missing or not a string.
        #[serde(default, deserialize_with = "str_or_empty")]
        name: String,
    },
    /// Stop every stream.
    StopAll,
}

impl Channel for MultiStreamChannel {
    const NAME: &'static str = "MultiStreamChannel";
    type Action = MultiStreamAction;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_from("ms:a");
        ctx.stream_from("ms:b");
        Ok(())
    }

    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        action: MultiStreamAction,
    ) -> Result<(), ChannelError> {
        match action {
            MultiStreamAction::Follow { name } => {
                if !name.is_empty() {
                    ctx.stream_from(name);
                }
            }
            MultiStreamAction::Unfollow { name } => ctx.stop_stream_from(&name),
            MultiStreamAction::StopAll => ctx.stop_all_streams(),
        }
        Ok(())
    }
}

/// `NotesChannel`: `stream_for` a Room (`gid://cable-test/Room/<room>`);
/// `which` transmits the broadcasting, `notify` broadcasts a note to it.
#[derive(Debug, Default)]
pub struct NotesChannel;

fn room_gid(ctx: &ChannelContext<'_>) -> GlobalId {
    GlobalId::new("cable-test", "Room", param_text(ctx, "room"))
}

/// What clients may call on [`NotesChannel`].
#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum NotesAction {
    /// Transmit `{"broadcasting": …}`.
    Which,
    /// Broadcast `{"note": note}` to the room's broadcasting.
    Notify {
        /// The note, as sent (null when missing).
        #[serde(default)]
        note: Value,
    },
}

impl Channel for NotesChannel {
    const NAME: &'static str = "NotesChannel";
    type Action = NotesAction;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        let room = room_gid(ctx);
        ctx.stream_for(&room);
        Ok(())
    }

    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        action: NotesAction,
    ) -> Result<(), ChannelError> {
        let broadcasting = ctx.broadcasting_for(&room_gid(ctx));
        match action {
            NotesAction::Which => ctx.transmit(json!({"broadcasting": broadcasting})),
            NotesAction::Notify { note } => {
                ctx.broadcast_to(&broadcasting, &json!({"note": note}))
                    .await?;
            }
        }
        Ok(())
    }
}

/// `TickerChannel`: transmits `{"tick":n}` every second (every `tick_every`).
#[derive(Debug)]
pub struct TickerChannel {
    n: u64,
    every: Duration,
}

impl Channel for TickerChannel {
    const NAME: &'static str = "TickerChannel";
    type Action = NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.periodically("tick", self.every);
        Ok(())
    }

    async fn periodic(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        timer: &'static str,
    ) -> Result<(), ChannelError> {
        if timer == "tick" {
            self.n += 1;
            ctx.transmit(json!({"tick": self.n}));
        }
        Ok(())
    }
}

/// `StateChannel`: a per-subscription counter starting at 1; `tick` adds 2.
#[derive(Debug)]
pub struct StateChannel {
    count: i64,
}

impl Default for StateChannel {
    fn default() -> Self {
        StateChannel { count: 1 }
    }
}

/// What clients may call on [`StateChannel`].
#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum StateAction {
    /// Add 2 and transmit `{"count": …, "name": <the name param>}`.
    Tick,
}

impl Channel for StateChannel {
    const NAME: &'static str = "StateChannel";
    type Action = StateAction;

    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        action: StateAction,
    ) -> Result<(), ChannelError> {
        match action {
            StateAction::Tick => {
                self.count += 2;
                let name = ctx.params().get("name").cloned().unwrap_or(Value::Null);
                ctx.transmit(json!({"count": self.count, "name": name}));
            }
        }
        Ok(())
    }
}

/// The servers `ControlChannel` restarts (set once the servers exist).
static SERVERS: OnceLock<Vec<CableServer>> = OnceLock::new();

/// `ControlChannel`: `kick` (`{"user":…,"reconnect":bool}`) disconnects a
/// user's connections remotely; `restart` restarts this process's
/// connections.
#[derive(Debug, Default)]
pub struct ControlChannel;

/// What clients may call on [`ControlChannel`].
#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ControlAction {
    /// Disconnect `user`'s connections, telling them whether to reconnect.
    Kick {
        /// The `current_user` to disconnect; `""` when missing or not a
        /// string.
        #[serde(default, deserialize_with = "str_or_empty")]
        user: String,
        /// Whether the clients may reconnect; `true` unless a boolean.
        #[serde(default = "yes", deserialize_with = "bool_or_true")]
        reconnect: bool,
    },
    /// Restart this process's connections.
    Restart,
}

impl Channel for ControlChannel {
    const NAME: &'static str = "ControlChannel";
    type Action = ControlAction;

    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        action: ControlAction,
    ) -> Result<(), ChannelError> {
        match action {
            ControlAction::Kick { user, reconnect } => {
                let stream = keayl_cable::naming::internal_stream(&user);
                ctx.broadcast_to(
                    &stream,
                    &json!({"type": "disconnect", "reconnect": reconnect}),
                )
                .await?;
            }
            ControlAction::Restart => {
                if let Some(servers) = SERVERS.get() {
                    for s in servers {
                        s.restart();
                    }
                }
            }
        }
        Ok(())
    }
}

/// `FailingChannel`: its `subscribed` panics.
#[derive(Debug, Default)]
pub struct FailingChannel;

impl Channel for FailingChannel {
    const NAME: &'static str = "FailingChannel";
    type Action = NoActions;

    async fn subscribed(&mut self, _ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        panic!("FailingChannel#subscribed always fails");
    }
}

/// Options of the fixture.
#[derive(Debug, Clone)]
pub struct FixtureConfig {
    /// Interval of `TickerChannel`. Default 1 s.
    pub tick_every: Duration,
    /// Ping interval. Default 3 s.
    pub ping_interval: Duration,
    /// Extended protocol: disconnect clients that stop ponging
    /// ([`CableConfig::pong_timeout`](keayl_cable::CableConfig::pong_timeout)).
    /// Default off.
    pub pong_timeout: Option<Duration>,
    /// How long a presence session outlives its connection
    /// ([`CableConfig::presence_ttl`](keayl_cable::CableConfig::presence_ttl)).
    /// Default 15 s.
    pub presence_ttl: Duration,
}

impl Default for FixtureConfig {
    fn default() -> Self {
        FixtureConfig {
            tick_every: Duration::from_secs(1),
            ping_interval: Duration::from_secs(3),
            pong_timeout: None,
            presence_ttl: Duration::from_secs(15),
        }
    }
}

/// The fixture's cable.
pub fn fixture_cable(pubsub: Arc<dyn PubSub>, config: &FixtureConfig) -> Cable {
    let verifier = StreamVerifier::new(TURBO_KEY);
    // `$pubsub`: signed names with the Turbo key, and any public name.
    let pubsub_channel = PubSubChannel::signed(verifier.clone()).with_public_streams(true);
    let every = config.tick_every;
    Cable::builder_shared(pubsub)
        .connection_handler(FixtureConnection)
        .channel::<ChatChannel>()
        .channel::<AuditChannel>()
        .channel::<TransmitChannel>()
        .channel::<RejectChannel>()
        .channel::<MultiStreamChannel>()
        .channel::<NotesChannel>()
        .channel_with(move || TickerChannel { n: 0, every })
        .channel::<StateChannel>()
        .channel::<ControlChannel>()
        .channel::<FailingChannel>()
        .channel::<HistoryChannel>()
        .channel::<WhisperChannel>()
        .channel::<PresenceChannel>()
        .channel_with(move || pubsub_channel.clone())
        .channel_with(move || TurboStreamsChannel::new(verifier.clone()))
        .config(keayl_cable::CableConfig {
            pong_timeout: config.pong_timeout,
            presence_ttl: config.presence_ttl,
            ..keayl_cable::CableConfig::default()
        })
        // AnyCable's JWT identification: `ext` carries `current_user`.
        .jwt(JwtIdentifier::new(JWT_SECRET))
        .build()
}

/// `HistoryChannel`: streams `history_a` (reliable streams: with the
/// extended protocol, its broadcasts carry positions and missed ones are
/// served from history).
#[derive(Debug, Default)]
pub struct HistoryChannel;

impl Channel for HistoryChannel {
    const NAME: &'static str = "HistoryChannel";
    type Action = NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_from("history_a");
        Ok(())
    }
}

/// `WhisperChannel`: streams `whisper_room` with whispers enabled (a
/// client's `whisper` reaches every other subscriber).
#[derive(Debug, Default)]
pub struct WhisperChannel;

impl Channel for WhisperChannel {
    const NAME: &'static str = "WhisperChannel";
    type Action = NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_from("whisper_room").with_whispers();
        Ok(())
    }
}

/// `PresenceChannel`: streams `presence_room` as its presence stream
/// (clients `join`, `leave` and ask for the `presence` set).
#[derive(Debug, Default)]
pub struct PresenceChannel;

impl Channel for PresenceChannel {
    const NAME: &'static str = "PresenceChannel";
    type Action = NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_from("presence_room").with_presence();
        Ok(())
    }
}

/// The fixture's router: `/cable` (origin checks off), `/cable-origin`
/// (allowing `http://allowed.example` and the same origin as the host), an
/// open `POST /_broadcast`, and `/cable`'s channels over SSE at `GET /events`.
pub fn fixture_router(pubsub: Arc<dyn PubSub>, config: &FixtureConfig) -> Router {
    let cable = fixture_cable(pubsub, config);
    let open = CableServer::new(
        cable.clone(),
        ServerConfig {
            origins: OriginPolicy::AllowAll,
            broadcast_auth: BroadcastAuth::OpenForDevelopment,
            socket: SocketConfig {
                ping_interval: config.ping_interval,
                ..SocketConfig::default()
            },
            ..ServerConfig::default()
        },
    )
    .expect("fixture settings are valid");
    let checked = CableServer::new(
        cable,
        ServerConfig {
            path: "/cable-origin".into(),
            origins: OriginPolicy::Check {
                allowed: vec![AllowedOrigin::Exact("http://allowed.example".into())],
                allow_same_origin_as_host: true,
            },
            socket: SocketConfig {
                ping_interval: config.ping_interval,
                ..SocketConfig::default()
            },
            ..ServerConfig::default()
        },
    )
    .expect("fixture settings are valid");
    let _ = SERVERS.set(vec![open.clone(), checked.clone()]);
    open.router()
        .merge(open.broadcast_router())
        .merge(open.events_router())
        .merge(checked.route_at("/cable-origin"))
        .merge(keayl_axum::ops::ops_router(
            vec![open.clone(), checked],
            None,
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode<A: serde::de::DeserializeOwned>(data: Value) -> Result<A, serde_json::Error> {
        serde_json::from_value(data)
    }

    #[test]
    fn echo_keeps_the_data_whole_and_in_order() {
        let data = json!({"x": [1, 2], "action": "echo", "big": 12345678901234567890u64});
        let Ok(ChatAction::Echo(got)) = decode(data.clone()) else {
            panic!("echo did not decode");
        };
        assert_eq!(
            serde_json::to_string(&got).unwrap(),
            serde_json::to_string(&data).unwrap()
        );
    }

    #[test]
    fn action_fields_are_lenient() {
        assert!(matches!(
            decode(json!({"action": "speak"})),
            Ok(ChatAction::Speak {
                message: Value::Null
            })
        ));
        assert!(matches!(
            decode(json!({"action": "tick", "message": "x"})),
            Ok(ChatAction::Tick)
        ));
        for ms in [json!("abc"), json!(-5), json!(1.5), json!(null)] {
            assert!(matches!(
                decode(json!({"action": "slow", "ms": ms})),
                Ok(ChatAction::Slow { ms: 0 })
            ));
        }
        assert!(matches!(
            decode(json!({"action": "slow", "ms": 99_999})),
            Ok(ChatAction::Slow { ms: 99_999 })
        ));
        assert!(matches!(
            decode(json!({"action": "follow", "name": 5})),
            Ok(MultiStreamAction::Follow { name }) if name.is_empty()
        ));
        assert!(matches!(
            decode(json!({"action": "kick", "user": "u", "reconnect": "no"})),
            Ok(ControlAction::Kick { user, reconnect: true }) if user == "u"
        ));
        assert!(matches!(
            decode(json!({"action": "kick", "reconnect": false})),
            Ok(ControlAction::Kick { user, reconnect: false }) if user.is_empty()
        ));
    }

    #[test]
    fn other_names_are_not_actions() {
        for name in ["dance", "leak", "Echo", "echo ", "receive", "subscribed"] {
            assert!(
                decode::<ChatAction>(json!({"action": name})).is_err(),
                "{name}"
            );
        }
    }
}
