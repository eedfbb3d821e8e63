//! Chat rooms behind a cookie session, on the official `@rails/actioncable`
//! client, in one process or in several sharing a broker.
//!
//! - `GET /login?name=alice` signs a session cookie with axum-extra's
//!   [`SignedCookieJar`] (keyed by the app state's [`Key`]) and redirects to
//!   the chat page at `/`.
//! - `GET /cable` is the Action Cable endpoint. Its [`ConnectionHandler`]
//!   sees the real upgrade request: it takes the app state from the request
//!   extensions (the cable router puts it there), verifies the same signed
//!   cookie, and identifies the connection as `current_user`; without a
//!   valid cookie the client gets the `unauthorized` disconnect.
//! - `ChatChannel` streams one room per subscription
//!   (`{"channel":"ChatChannel","room":"lobby"}`); its `speak` action
//!   broadcasts `{"user":…,"message":…}` to everyone in the room.
//!
//! ```sh
//! cargo run -p keayl --example chat -- --addr 127.0.0.1:3000
//! # open http://127.0.0.1:3000/ in two browsers, log in with two names, talk
//! ```
//!
//! The pub/sub backend comes from a URL ([`keayl::pubsub::from_url`];
//! `--pubsub`, or the `KEAYL_PUBSUB` environment variable): `memory` (the
//! default, one process), `redis://…` with the `redis` feature (add
//! `?channel_prefix=myapp` to match a Rails `cable.yml`), or `postgres://…`
//! with the `postgres` feature. Nothing else in the app changes. Run it twice
//! against one Redis and a message spoken to either process reaches the
//! clients of both (and of any Rails app using the same Redis and
//! `channel_prefix`):
//!
//! ```sh
//! cargo run -p keayl --features redis --example chat -- --addr 127.0.0.1:3000 --pubsub redis://127.0.0.1:6379/0 &
//! cargo run -p keayl --features redis --example chat -- --addr 127.0.0.1:3001 --pubsub redis://127.0.0.1:6379/0 &
//! # log in as alice on :3000 and as bob on :3001: messages cross over
//! ```
//!
//! Sessions are signed with a key generated at start-up (so they end when the
//! process does, and each process only knows its own) unless
//! `SESSION_SECRET` holds at least 64 bytes: give every process of a
//! deployment the same secret.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRef, Query};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::cookie::{Cookie, Key, SameSite, SignedCookieJar};
use clap::Parser;
use keayl::cable::{
    Cable, Channel, ChannelContext, ChannelError, ConnectError, Connection, ConnectionHandler,
    Request,
};
use keayl::transport::cable::{CableServer, ServerConfig};
use keayl::transport::listener::{self, Listener, ListenerConfig};
use serde::Deserialize;
use serde_json::json;

/// The session cookie: the signed user name.
const SESSION_COOKIE: &str = "chat_user";

/// Chat rooms behind a signed-cookie session, sharing broadcasts with every
/// process on the same pub/sub backend.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "ADDR", default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// Pub/sub backend: `memory`, `redis://host:6379/0[?channel_prefix=app]`
    /// (feature `redis`) or `postgres://…` (feature `postgres`).
    // A String parsed by keayl, not by clap: clap's errors would print it,
    // password included; keayl's never do.
    #[arg(
        long,
        env = keayl::pubsub::DEFAULT_ENV,
        hide_env_values = true,
        default_value = "memory"
    )]
    pubsub: String,
}

/// The app's state. HTTP handlers get it through axum's `State`; the cable's
/// `connect` finds it in the upgrade request's extensions.
#[derive(Clone)]
struct AppState {
    /// Signs and verifies session cookies.
    key: Key,
}

/// Lets the `SignedCookieJar` extractor find the key in the state.
impl FromRef<AppState> for Key {
    fn from_ref(state: &AppState) -> Key {
        state.key.clone()
    }
}

// ---------------------------------------------------------------------------
// HTTP: log in, log out, the page.

#[derive(Deserialize)]
struct Login {
    name: String,
}

/// `GET /login?name=alice`: start a session as `alice`.
async fn login(jar: SignedCookieJar, Query(Login { name }): Query<Login>) -> Response {
    if !is_valid_name(&name) {
        return (
            StatusCode::BAD_REQUEST,
            "name: 1 to 32 letters, digits, '-' or '_'",
        )
            .into_response();
    }
    let cookie = Cookie::build((SESSION_COOKIE, name))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax);
    (jar.add(cookie), Redirect::to("/")).into_response()
}

/// `POST /logout`: end the session (open sockets stay until they reconnect).
async fn logout(jar: SignedCookieJar) -> impl IntoResponse {
    (
        jar.remove(Cookie::build(SESSION_COOKIE).path("/")),
        Redirect::to("/"),
    )
}

/// `GET /`: the chat page when logged in, the login form otherwise.
async fn index(jar: SignedCookieJar) -> Html<String> {
    match jar.get(SESSION_COOKIE) {
        // The name was validated before it was signed: safe inside HTML.
        Some(user) => Html(CHAT_PAGE.replace("{user}", user.value())),
        None => Html(LOGIN_PAGE.to_owned()),
    }
}

/// User and room names: short, and nothing that needs escaping.
fn is_valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

// ---------------------------------------------------------------------------
// The cable: who is connecting, and what they may do.

/// Authenticates WebSocket connections with the session cookie.
struct ChatConnection;

impl ConnectionHandler for ChatConnection {
    const IDENTIFIED_BY: &'static [&'static str] = &["current_user"];

    async fn connect(&self, conn: &mut Connection) -> Result<(), ConnectError> {
        match session_user(conn.request()) {
            Some(user) => {
                conn.set_identifier("current_user", user);
                Ok(())
            }
            // The client gets {"type":"disconnect","reason":"unauthorized","reconnect":false}.
            None => conn.reject_unauthorized_connection(),
        }
    }
}

/// The user of the request's session cookie, verified with the app's key.
fn session_user(request: &Request) -> Option<String> {
    let state = request.extension::<AppState>()?;
    let jar = SignedCookieJar::from_headers(request.headers(), state.key.clone());
    // `get` returns only cookies whose signature checks out.
    jar.get(SESSION_COOKIE).map(|c| c.value().to_owned())
}

/// The subscription's params: `{"channel":"ChatChannel","room":"lobby"}`.
#[derive(Deserialize)]
struct RoomParams {
    room: String,
}

/// What clients may call: `subscription.perform("speak", { message })`.
#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum ChatAction {
    Speak { message: String },
}

/// One value per subscription: its fields are that subscription's state.
#[derive(Default)]
struct ChatChannel {
    /// The room's stream, set in `subscribed`.
    stream: String,
}

impl Channel for ChatChannel {
    const NAME: &'static str = "ChatChannel";
    type Action = ChatAction;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        // Params that do not decode reject the subscription.
        let RoomParams { room } = ctx.params_as()?;
        if !is_valid_name(&room) {
            ctx.reject();
            return Ok(());
        }
        // A stream is a broker channel: every process subscribed to
        // `chat:<room>` (on Redis: `<channel_prefix>:chat:<room>`) gets
        // every broadcast to it. The subscription is confirmed once the
        // broker acknowledged the SUBSCRIBE.
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
                    // Logged; the subscription stays.
                    return Err(ChannelError::invalid("message: 1 to 500 characters"));
                }
                // Set by `connect`: the speaker cannot choose it.
                let user = ctx.identifiers().param("current_user").unwrap_or_default();
                // Published to the broker, which delivers it to every
                // subscribed process, this one included. While the broker
                // is down the broadcast fails with an error.
                ctx.broadcast_to(&self.stream, &json!({ "user": user, "message": message }))
                    .await?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let key = match std::env::var("SESSION_SECRET") {
        Ok(secret) => Key::try_from(secret.as_bytes())?, // at least 64 bytes
        Err(_) => Key::generate(),
    };

    // Connects in the background and reconnects forever: the server starts
    // even while the broker is unreachable, and re-subscribes every stream
    // when it is back.
    let backend = keayl::pubsub::from_url(&args.pubsub)?;
    if backend.health.wait_up(Duration::from_secs(2)).await {
        println!("pub/sub: {}", backend.url); // password redacted
    } else {
        eprintln!(
            "pub/sub: {} not reachable yet; serving local clients and retrying",
            backend.url
        );
    }

    let cable = Cable::builder_shared(backend.pubsub)
        .connection_handler(ChatConnection)
        .channel::<ChatChannel>()
        .build();
    // The default ServerConfig accepts WebSockets only from pages of the
    // same origin as the Host (Rails' request forgery protection).
    let server = CableServer::new(cable, ServerConfig::default())?;

    let app = Router::new()
        .route("/", get(index))
        .route("/login", get(login))
        .route("/logout", post(logout))
        .merge(server.router()) // GET /cable
        .with_state(AppState { key });

    let listener = Listener::new(listener::bind(args.addr)?, ListenerConfig::default())?;
    println!("listening on {}", listener.local_addr()?);
    listener
        .serve_until(app, async move {
            let _ = tokio::signal::ctrl_c().await;
            // Every client gets a server_restart disconnect and reconnects.
            server.shutdown().await;
        })
        .await?;
    Ok(())
}

const LOGIN_PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>Keayl chat</title>
<form action="/login">
  <label>Your name <input name="name" required pattern="[A-Za-z0-9_\-]{1,32}" autofocus></label>
  <button>Log in</button>
</form>
"#;

const CHAT_PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>Keayl chat</title>
<form action="/logout" method="post">Logged in as <b>{user}</b> <button>Log out</button></form>
<p><label>Room <input id="room" value="lobby"></label> <button id="join">Join</button></p>
<ul id="messages"></ul>
<form id="say"><input id="message" autocomplete="off" placeholder="Say something" autofocus> <button>Send</button></form>
<script type="module">
  import { createConsumer } from "https://cdn.jsdelivr.net/npm/@rails/actioncable@8.1.400/app/assets/javascripts/actioncable.esm.js";

  // Connects to /cable on this host; the browser sends the session cookie.
  const consumer = createConsumer();
  const messages = document.getElementById("messages");
  let room;

  function join(name) {
    room?.unsubscribe();
    messages.replaceChildren();
    room = consumer.subscriptions.create({ channel: "ChatChannel", room: name }, {
      received({ user, message }) {
        const item = document.createElement("li");
        item.textContent = `${user}: ${message}`; // text, never HTML
        messages.append(item);
      },
    });
  }

  document.getElementById("join").onclick = () => join(document.getElementById("room").value);
  document.getElementById("say").onsubmit = (event) => {
    event.preventDefault();
    const input = document.getElementById("message");
    room.perform("speak", { message: input.value });
    input.value = "";
  };
  join("lobby");
</script>
"#;
