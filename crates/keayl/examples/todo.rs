//! A Turbo todo list: saving a todo appends it to every page showing its list.
//!
//! - `GET /lists/{id}`: the list page. It loads turbo-rails from a CDN and
//!   carries `<turbo-cable-stream-source channel="Turbo::StreamsChannel"
//!   signed-stream-name="…">`, which subscribes over `/cable` and applies
//!   every `<turbo-stream>` broadcast to the list.
//! - `POST /lists/{id}/todos`: an HTML form (`title=milk`, answered with a
//!   redirect back to the list) or JSON (`{"title":"milk"}`, answered with
//!   the todo). The todo is stored in memory and
//!   `broadcaster.broadcast_append_to(&list.global_id(), "todos", html)`
//!   sends `<turbo-stream action="append" target="todos">` to the list's
//!   stream.
//!
//! ```sh
//! cargo run -p keayl --example todo -- --addr 127.0.0.1:3000
//! # open http://127.0.0.1:3000/lists/1 in two windows and add todos, or:
//! curl -d title=milk http://127.0.0.1:3000/lists/1/todos
//! curl -H 'content-type: application/json' -d '{"title":"eggs"}' http://127.0.0.1:3000/lists/1/todos
//! ```
//!
//! **Why turbo-rails' `Turbo::StreamsChannel` rather than a channel of our
//! own:** the page needs no JavaScript of its own (the
//! `<turbo-cable-stream-source>` element subscribes and applies the
//! updates), and the stream name the page subscribes with is signed by the
//! server ([`StreamVerifier`], Rails' `MessageVerifier` format), so a client
//! can only stream lists the server rendered for it: a list page is the
//! authorization, as with Rails' `turbo_stream_from @list`. A custom channel
//! (`ctx.stream_from_model(&TodoList { id }.global_id())` in `subscribed`,
//! see the README) receives the very same broadcasts, and would have to
//! check access itself.
//!
//! Signed names are verified with `TURBO_STREAMS_SECRET` (Rails:
//! `config.turbo.signed_stream_verifier_key`; share it between processes),
//! or with a random key generated at start-up.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use clap::Parser;
use keayl::cable::naming::{GlobalId, HasGlobalId, stream_name_from};
use keayl::cable::signing::StreamVerifier;
use keayl::cable::turbo_channel::TurboStreamsChannel;
use keayl::cable::{Broadcaster, Cable, InMemory};
use keayl::transport::cable::{CableServer, ServerConfig};
use keayl::transport::listener::{self, Listener, ListenerConfig};
use serde::{Deserialize, Serialize};

/// A Turbo todo list updated live over Action Cable.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "ADDR", default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
}

// ---------------------------------------------------------------------------
// The models.

/// A todo list. Any id names a list (empty until a todo is added), which
/// keeps the example free of list management.
struct TodoList {
    id: u64,
}

/// Its GlobalID (`gid://todo-app/TodoList/1`) names its Turbo stream, as in
/// Rails: broadcasts from a Rails app about the same record reach the same
/// pages.
impl HasGlobalId for TodoList {
    fn global_id(&self) -> GlobalId {
        GlobalId::new("todo-app", "TodoList", self.id)
    }
}

impl TodoList {
    /// The signed name the list page streams from (turbo-rails'
    /// `turbo_stream_from @list`).
    fn signed_stream_name(&self, verifier: &StreamVerifier) -> String {
        verifier.generate(&stream_name_from(&[&self.global_id()]))
    }
}

#[derive(Clone, Serialize)]
struct Todo {
    id: u64,
    list_id: u64,
    title: String,
}

impl Todo {
    /// The item's HTML, in the page and in the broadcast. The `id` lets
    /// Turbo skip an append of an item already on the page.
    fn to_html(&self) -> String {
        format!(
            r#"<li id="todo_{}">{}</li>"#,
            self.id,
            escape_html(&self.title)
        )
    }
}

/// The "database".
#[derive(Default)]
struct Db {
    last_id: u64,
    todos: HashMap<u64, Vec<Todo>>,
}

// ---------------------------------------------------------------------------
// The app.

#[derive(Clone)]
struct AppState {
    db: Arc<Mutex<Db>>,
    /// Publishes through the cable's pub/sub, from any handler or job.
    broadcaster: Broadcaster,
    verifier: StreamVerifier,
}

/// `GET /lists/{id}`.
async fn show_list(State(state): State<AppState>, Path(list_id): Path<u64>) -> Html<String> {
    let list = TodoList { id: list_id };
    let items: String = {
        let db = state.db.lock().unwrap();
        db.todos
            .get(&list_id)
            .into_iter()
            .flatten()
            .map(Todo::to_html)
            .collect()
    };
    Html(
        LIST_PAGE
            .replace("{list_id}", &list_id.to_string())
            .replace(
                "{signed_stream_name}",
                &list.signed_stream_name(&state.verifier),
            )
            .replace("{items}", &items),
    )
}

#[derive(Deserialize)]
struct TodoParams {
    title: String,
}

/// The body of `POST /lists/{id}/todos`: a form or JSON, by `Content-Type`.
struct NewTodo {
    title: String,
    json: bool,
}

impl<S: Send + Sync> FromRequest<S> for NewTodo {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let TodoParams { title } = if json {
            Json::<TodoParams>::from_request(req, state)
                .await
                .map_err(IntoResponse::into_response)?
                .0
        } else {
            Form::<TodoParams>::from_request(req, state)
                .await
                .map_err(IntoResponse::into_response)?
                .0
        };
        Ok(NewTodo { title, json })
    }
}

/// `POST /lists/{id}/todos`: store, then broadcast the new item.
async fn create_todo(
    State(state): State<AppState>,
    Path(list_id): Path<u64>,
    new: NewTodo,
) -> Response {
    let title = new.title.trim();
    if title.is_empty() || title.chars().count() > 200 {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "title: 1 to 200 characters",
        )
            .into_response();
    }
    let todo = {
        let mut db = state.db.lock().unwrap();
        db.last_id += 1;
        let todo = Todo {
            id: db.last_id,
            list_id,
            title: title.to_owned(),
        };
        db.todos.entry(list_id).or_default().push(todo.clone());
        todo
    };

    // Every page showing the list appends the item to its `#todos`.
    let list = TodoList { id: list_id };
    if let Err(e) = state
        .broadcaster
        .broadcast_append_to(&list.global_id(), "todos", &todo.to_html())
        .await
    {
        // Saved anyway; pages see it on their next load.
        eprintln!("broadcast failed: {e}");
    }

    if new.json {
        (StatusCode::CREATED, Json(todo)).into_response()
    } else {
        // 303 See Other: what Turbo expects after a form submission.
        Redirect::to(&format!("/lists/{list_id}")).into_response()
    }
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `TURBO_STREAMS_SECRET`, or 32 random bytes.
fn stream_verifier() -> Result<StreamVerifier, Box<dyn std::error::Error>> {
    if let Ok(secret) = std::env::var("TURBO_STREAMS_SECRET") {
        return Ok(StreamVerifier::new(secret));
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)?;
    Ok(StreamVerifier::new(key))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let verifier = stream_verifier()?;

    let channel_verifier = verifier.clone();
    let cable = Cable::builder(InMemory::new())
        // turbo-rails' channel, verifying the names our pages carry.
        .channel_with(move || TurboStreamsChannel::new(channel_verifier.clone()))
        .build();
    let state = AppState {
        db: Arc::default(),
        broadcaster: cable.broadcaster(),
        verifier,
    };
    let server = CableServer::new(cable, ServerConfig::default())?;

    let app = Router::new()
        .route("/", get(|| async { Redirect::to("/lists/1") }))
        .route("/lists/{id}", get(show_list))
        .route("/lists/{id}/todos", post(create_todo))
        .merge(server.router()) // GET /cable
        .with_state(state);

    let listener = Listener::new(listener::bind(args.addr)?, ListenerConfig::default())?;
    println!("listening on {}", listener.local_addr()?);
    listener
        .serve_until(app, async move {
            let _ = tokio::signal::ctrl_c().await;
            server.shutdown().await;
        })
        .await?;
    Ok(())
}

const LIST_PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>Todo list {list_id}</title>
<script type="module" src="https://cdn.jsdelivr.net/npm/@hotwired/turbo-rails@8.0.23/app/assets/javascripts/turbo.js"></script>
<h1>Todo list {list_id}</h1>
<turbo-cable-stream-source channel="Turbo::StreamsChannel" signed-stream-name="{signed_stream_name}"></turbo-cable-stream-source>
<ul id="todos">{items}</ul>
<form action="/lists/{list_id}/todos" method="post">
  <input name="title" required maxlength="200" autocomplete="off" autofocus>
  <button>Add</button>
</form>
"#;
