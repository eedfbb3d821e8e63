//! The demo's Action Cable application: a chat with rooms and presence, and
//! the de-facto benchmark channel.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use keayl_cable::connection::{ConnectError, Connection, ConnectionHandler};
use keayl_cable::{Cable, Channel, ChannelContext, ChannelError, Data, PubSub};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

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

/// A string field; `""` when it is not a string (rather than an invalid
/// action).
fn str_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        _ => String::new(),
    })
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
            BenchmarkAction::Broadcast(mut data) => {
                ctx.broadcast_to(&bench_stream(ctx), &data).await?;
                data.insert("action".into(), json!("broadcastResult"));
                ctx.transmit(&data);
            }
        }
        Ok(())
    }
}

/// The demo cable on `pubsub`.
pub fn demo_cable(pubsub: Arc<dyn PubSub>) -> Cable {
    let presence = Presence::default();
    Cable::builder_shared(pubsub)
        .connection_handler(DemoConnection::default())
        .channel_with(move || ChatChannel {
            presence: presence.clone(),
            joined: None,
        })
        .channel::<BenchmarkChannel>()
        .build()
}
