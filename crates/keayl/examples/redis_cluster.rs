//! One chat, several processes: broadcasts cross processes through Redis.
//!
//! Run the same binary twice against one Redis; a message spoken to either
//! process reaches the clients of both (and of any Rails app using the same
//! Redis and `channel_prefix`):
//!
//! ```sh
//! cargo run -p keayl --features redis --example redis_cluster -- --addr 127.0.0.1:3000 --pubsub redis://127.0.0.1:6379/0 &
//! cargo run -p keayl --features redis --example redis_cluster -- --addr 127.0.0.1:3001 --pubsub redis://127.0.0.1:6379/0 &
//! # open http://127.0.0.1:3000/?name=alice and http://127.0.0.1:3001/?name=bob
//! ```
//!
//! The backend comes from a URL ([`keayl::pubsub::from_url`]; `--pubsub`, or
//! the `KEAYL_PUBSUB` environment variable): `redis://…` (add
//! `?channel_prefix=myapp` to match a Rails `cable.yml`), `memory` for a
//! single process, or `postgres://…` with the `postgres` feature. Nothing
//! else in the app changes.
//!
//! To keep the example about pub/sub, a connection is identified by the
//! `name` query parameter of the cable URL (`/cable?name=alice`), which is
//! no authentication at all: see the `chat` example for a signed session
//! cookie (give every process the same key).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use clap::Parser;
use keayl::cable::{
    Cable, Channel, ChannelContext, ChannelError, ConnectError, Connection, ConnectionHandler,
};
use keayl::transport::cable::{CableServer, ServerConfig};
use keayl::transport::listener::{self, Listener, ListenerConfig};
use serde::Deserialize;
use serde_json::json;

/// A chat server that shares its broadcasts with every process on the same
/// pub/sub backend.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "ADDR", default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// Pub/sub backend: `redis://host:6379/0[?channel_prefix=app]`, `memory`,
    /// or `postgres://…` (feature `postgres`).
    // A String parsed by keayl, not by clap: clap's errors would print it,
    // password included; keayl's never do.
    #[arg(
        long,
        env = keayl::pubsub::DEFAULT_ENV,
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379/0"
    )]
    pubsub: String,
}

/// Identifies a connection by `?name=` (see the module docs).
struct NamedConnection;

impl ConnectionHandler for NamedConnection {
    const IDENTIFIED_BY: &'static [&'static str] = &["current_user"];

    async fn connect(&self, conn: &mut Connection) -> Result<(), ConnectError> {
        match conn.request().query("name").filter(|n| is_valid_name(n)) {
            Some(name) => {
                let name = name.to_owned();
                conn.set_identifier("current_user", name);
                Ok(())
            }
            None => conn.reject_unauthorized_connection(),
        }
    }
}

fn is_valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[derive(Deserialize)]
struct RoomParams {
    room: String,
}

#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum ChatAction {
    Speak { message: String },
}

/// A chat room. Built per subscription by the factory given to
/// `channel_with`, which hands it this process's address.
struct ChatChannel {
    /// Which process relayed a message (`"127.0.0.1:3000"`), shown to
    /// clients so the crossing is visible.
    node: String,
    stream: String,
}

impl Channel for ChatChannel {
    const NAME: &'static str = "ChatChannel";
    type Action = ChatAction;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        let RoomParams { room } = ctx.params_as()?;
        if !is_valid_name(&room) {
            ctx.reject();
            return Ok(());
        }
        // A stream is a broker channel: every process subscribed to
        // `chat:<room>` (on Redis: `<channel_prefix>:chat:<room>`) gets
        // every broadcast to it. The subscription is confirmed once Redis
        // acknowledged the SUBSCRIBE.
        self.stream = format!("chat:{room}");
        ctx.stream_from(self.stream.clone());
        Ok(())
    }

    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        action: ChatAction,
    ) -> Result<(), ChannelError> {
        match action {
            ChatAction::Speak { message } => {
                let message = message.trim();
                if message.is_empty() || message.chars().count() > 500 {
                    return Err(ChannelError::invalid("message: 1 to 500 characters"));
                }
                let user = ctx.identifiers().param("current_user").unwrap_or_default();
                // Published to the broker, which delivers it to every
                // subscribed process, this one included. While the broker
                // is down the broadcast fails with an error.
                ctx.broadcast_to(
                    &self.stream,
                    &json!({ "user": user, "message": message, "via": self.node }),
                )
                .await?;
            }
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();

    // Bind first, so the address printed is the real one (`--addr 127.0.0.1:0`).
    let listener = Listener::new(listener::bind(args.addr)?, ListenerConfig::default())?;
    let addr = listener.local_addr()?;

    // Connects in the background and reconnects forever: the server starts
    // even while Redis is unreachable, and re-subscribes every stream when
    // it is back.
    let backend = keayl::pubsub::from_url(&args.pubsub)?;
    if backend.health.wait_up(Duration::from_secs(2)).await {
        println!("pub/sub: {}", backend.url); // password redacted
    } else {
        eprintln!(
            "pub/sub: {} not reachable yet; serving local clients and retrying",
            backend.url
        );
    }

    let node = addr.to_string();
    let cable = Cable::builder_shared(backend.pubsub.clone())
        .connection_handler(NamedConnection)
        .channel_with(move || ChatChannel {
            node: node.clone(),
            stream: String::new(),
        })
        .build();
    let server = CableServer::new(cable, ServerConfig::default())?;

    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .merge(server.router());

    println!("listening on {addr}");
    listener
        .serve_until(app, async move {
            let _ = tokio::signal::ctrl_c().await;
            server.shutdown().await;
        })
        .await?;
    Ok(())
}

const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>Keayl chat over Redis</title>
<p>Open this page on two processes (<code>?name=alice&amp;room=lobby</code>): messages cross over.</p>
<ul id="messages"></ul>
<form id="say"><input id="message" autocomplete="off" placeholder="Say something" autofocus> <button>Send</button></form>
<script type="module">
  import { createConsumer } from "https://cdn.jsdelivr.net/npm/@rails/actioncable@8.1.400/app/assets/javascripts/actioncable.esm.js";

  const query = new URLSearchParams(location.search);
  const name = query.get("name") || `guest${Math.floor(Math.random() * 1000)}`;
  const consumer = createConsumer(`/cable?name=${encodeURIComponent(name)}`);
  const messages = document.getElementById("messages");
  const room = consumer.subscriptions.create({ channel: "ChatChannel", room: query.get("room") || "lobby" }, {
    received({ user, message, via }) {
      const item = document.createElement("li");
      item.textContent = `${user} (via ${via}): ${message}`;
      messages.append(item);
    },
  });
  document.getElementById("say").onsubmit = (event) => {
    event.preventDefault();
    const input = document.getElementById("message");
    room.perform("speak", { message: input.value });
    input.value = "";
  };
</script>
"#;
