//! The demo's Action Cable application: a chat with rooms and presence, and
//! the de-facto benchmark channel.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use keayl_cable::connection::{ConnectError, Connection, ConnectionHandler};
use keayl_cable::{Cable, Channel, ChannelContext, ChannelError, Data, PubSub};
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

impl Channel for ChatChannel {
    const NAME: &'static str = "ChatChannel";
    const ACTIONS: &'static [&'static str] = &["speak"];

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
        action: &str,
        data: &Data,
    ) -> Result<(), ChannelError> {
        if action == "speak" {
            let Some((room, user)) = &self.joined else {
                return Ok(());
            };
            let text: String = data
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or("")
                .chars()
                .take(2000)
                .collect();
            if text.trim().is_empty() {
                return Ok(());
            }
            ctx.broadcast_to(
                &format!("chat:{room}"),
                &json!({"type": "message", "from": user, "text": text}),
            )
            .await?;
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

impl Channel for BenchmarkChannel {
    const NAME: &'static str = "BenchmarkChannel";
    const ACTIONS: &'static [&'static str] = &["echo", "broadcast"];

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        let stream = bench_stream(ctx);
        ctx.stream_from(stream);
        Ok(())
    }

    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        action: &str,
        data: &Data,
    ) -> Result<(), ChannelError> {
        match action {
            "echo" => ctx.transmit(data),
            "broadcast" => {
                ctx.broadcast_to(&bench_stream(ctx), data).await?;
                let mut result = data.clone();
                result.insert("action".into(), json!("broadcastResult"));
                ctx.transmit(&result);
            }
            _ => {}
        }
        Ok(())
    }
}

/// The demo cable on `pubsub`.
pub fn demo_cable(pubsub: Arc<dyn PubSub>) -> Cable {
    let presence = Presence::default();
    Cable::builder_shared(pubsub)
        .connection_handler(DemoConnection::default())
        .channel_with(ChatChannel::NAME, move || ChatChannel {
            presence: presence.clone(),
            joined: None,
        })
        .channel::<BenchmarkChannel>()
        .build()
}
