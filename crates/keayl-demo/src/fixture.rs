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
use keayl_cable::naming::GlobalId;
use keayl_cable::signing::StreamVerifier;
use keayl_cable::turbo_channel::TurboStreamsChannel;
use keayl_cable::{Cable, Channel, ChannelContext, ChannelError, Data, PubSub};
use serde_json::{Value, json};

/// The Turbo verifier key of the fixture.
pub const TURBO_KEY: &str = "s3Krit";

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
/// transmits `{"slow": "done", "ms": N}`.
#[derive(Debug, Default)]
pub struct ChatChannel;

/// The longest wait `ChatChannel#slow` accepts (longer requests are capped).
pub const SLOW_ACTION_MAX_MS: u64 = 30_000;

impl ChatChannel {
    /// A helper that must never be callable from the wire.
    fn leak(ctx: &ChannelContext<'_>) {
        ctx.transmit(json!({"leaked": "private helper was called"}));
    }
}

impl Channel for ChatChannel {
    const NAME: &'static str = "ChatChannel";
    const ACTIONS: &'static [&'static str] = &["speak", "echo", "tick", "receive", "slow"];

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
                &json!({"event": "unsubscribed", "user": user, "room": room}),
            )
            .await;
    }

    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        action: &str,
        data: &Data,
    ) -> Result<(), ChannelError> {
        match action {
            "speak" => {
                let room = param_text(ctx, "room");
                let user = current_user_json(ctx.identifiers());
                let message = data.get("message").cloned().unwrap_or(Value::Null);
                ctx.broadcast_to(
                    &format!("room:{room}"),
                    &json!({"message": message, "from": user}),
                )
                .await?;
            }
            "echo" => ctx.transmit(data),
            "tick" => ctx.transmit("tock"),
            "slow" => {
                // Awaits without blocking a thread: the connection keeps
                // pinging, reading and writing meanwhile.
                let ms = data
                    .get("ms")
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
                    .min(SLOW_ACTION_MAX_MS);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                ctx.transmit(json!({"slow": "done", "ms": ms}));
            }
            "receive" => ctx.transmit(json!({"received": data})),
            "__never__" => Self::leak(ctx),
            _ => {}
        }
        Ok(())
    }
}

/// `AuditChannel`: streams `audit`.
#[derive(Debug, Default)]
pub struct AuditChannel;

impl Channel for AuditChannel {
    const NAME: &'static str = "AuditChannel";
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

impl Channel for MultiStreamChannel {
    const NAME: &'static str = "MultiStreamChannel";
    const ACTIONS: &'static [&'static str] = &["follow", "unfollow", "stop_all"];

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_from("ms:a");
        ctx.stream_from("ms:b");
        Ok(())
    }

    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        action: &str,
        data: &Data,
    ) -> Result<(), ChannelError> {
        let name = data
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        match action {
            "follow" if !name.is_empty() => ctx.stream_from(name),
            "unfollow" => ctx.stop_stream_from(&name),
            "stop_all" => ctx.stop_all_streams(),
            _ => {}
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

impl Channel for NotesChannel {
    const NAME: &'static str = "NotesChannel";
    const ACTIONS: &'static [&'static str] = &["which", "notify"];

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        let room = room_gid(ctx);
        ctx.stream_for(&room);
        Ok(())
    }

    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        action: &str,
        data: &Data,
    ) -> Result<(), ChannelError> {
        let broadcasting = ctx.broadcasting_for(&room_gid(ctx));
        match action {
            "which" => ctx.transmit(json!({"broadcasting": broadcasting})),
            "notify" => {
                let note = data.get("note").cloned().unwrap_or(Value::Null);
                ctx.broadcast_to(&broadcasting, &json!({"note": note}))
                    .await?;
            }
            _ => {}
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
    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.periodically("tick", self.every);
        Ok(())
    }
    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        action: &str,
        _data: &Data,
    ) -> Result<(), ChannelError> {
        if action == "tick" {
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

impl Channel for StateChannel {
    const NAME: &'static str = "StateChannel";
    const ACTIONS: &'static [&'static str] = &["tick"];
    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        action: &str,
        _data: &Data,
    ) -> Result<(), ChannelError> {
        if action == "tick" {
            self.count += 2;
            let name = ctx.params().get("name").cloned().unwrap_or(Value::Null);
            ctx.transmit(json!({"count": self.count, "name": name}));
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

impl Channel for ControlChannel {
    const NAME: &'static str = "ControlChannel";
    const ACTIONS: &'static [&'static str] = &["kick", "restart"];

    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        action: &str,
        data: &Data,
    ) -> Result<(), ChannelError> {
        match action {
            "kick" => {
                let user = data
                    .get("user")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let reconnect = data
                    .get("reconnect")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                let stream = keayl_cable::server::internal_stream(&user);
                ctx.broadcast_to(
                    &stream,
                    &json!({"type": "disconnect", "reconnect": reconnect}),
                )
                .await?;
            }
            "restart" => {
                if let Some(servers) = SERVERS.get() {
                    for s in servers {
                        s.restart();
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// `FailingChannel`: its `subscribed` panics.
#[derive(Debug, Default)]
pub struct FailingChannel;

impl Channel for FailingChannel {
    const NAME: &'static str = "FailingChannel";
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
}

impl Default for FixtureConfig {
    fn default() -> Self {
        FixtureConfig {
            tick_every: Duration::from_secs(1),
            ping_interval: Duration::from_secs(3),
        }
    }
}

/// The fixture's cable.
pub fn fixture_cable(pubsub: Arc<dyn PubSub>, config: &FixtureConfig) -> Cable {
    let verifier = StreamVerifier::new(TURBO_KEY);
    let every = config.tick_every;
    Cable::builder_shared(pubsub)
        .connection_handler(FixtureConnection)
        .channel::<ChatChannel>()
        .channel::<AuditChannel>()
        .channel::<TransmitChannel>()
        .channel::<RejectChannel>()
        .channel::<MultiStreamChannel>()
        .channel::<NotesChannel>()
        .channel_with(TickerChannel::NAME, move || TickerChannel { n: 0, every })
        .channel::<StateChannel>()
        .channel::<ControlChannel>()
        .channel::<FailingChannel>()
        .channel_with(TurboStreamsChannel::NAME, move || {
            TurboStreamsChannel::new(verifier.clone())
        })
        .build()
}

/// The fixture's router: `/cable` (origin checks off), `/cable-origin`
/// (allowing `http://allowed.example` and the same origin as the host), and
/// an open `POST /_broadcast`.
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
        .merge(checked.route_at("/cable-origin"))
        .merge(keayl_axum::ops::ops_router(
            vec![open.clone(), checked],
            None,
        ))
}
