//! Testing channels and connections without writing frames: the
//! equivalent of Rails' `ActionCable::Channel::TestCase` and
//! `ActionCable::Connection::TestCase`.
//!
//! Everything runs on the real [`Connection`](crate::Connection) and the
//! real [`InMemory`] pub/sub; the harness only builds the client's commands
//! and reads back what the client received.
//!
//! | Rails | Here |
//! |---|---|
//! | `connect params: {token: "x"}` | [`TestCable::connect`] with an `http::Request` |
//! | `assert_reject_connection { connect }` | [`TestConnection::is_rejected`], [`disconnect_reason`](TestConnection::disconnect_reason) |
//! | `connection.current_user` | [`TestConnection::identifier`] |
//! | `disconnect` | [`TestConnection::disconnect`] |
//! | `stub_connection current_user: alice` | [`TestCable::stub_connection`] |
//! | `subscribe room: "1"` | [`TestConnection::subscribe`] |
//! | `subscription.confirmed?` / `rejected?` | [`TestSubscription::is_confirmed`] / [`is_rejected`](TestSubscription::is_rejected) |
//! | `assert_has_stream` / `assert_has_stream_for` | [`TestSubscription::has_stream`] / [`has_stream_for`](TestSubscription::has_stream_for) |
//! | `perform :speak, message: "hi"` | [`TestSubscription::perform`] |
//! | `transmissions` | [`TestSubscription::transmissions`] (peek) / [`take_transmissions`](TestSubscription::take_transmissions) (drain) |
//! | `assert_broadcast_on` / `broadcasts` | [`TestCable::broadcasts`] (peek) / [`take_broadcasts`](TestCable::take_broadcasts) (drain) |
//! | `unsubscribe` | [`TestSubscription::unsubscribe`] |
//!
//! A [`TestCable`] is built on a pub/sub that records every broadcast (a
//! cable's pub/sub cannot be observed from outside once built): give it
//! your builder calls ([`TestCable::new`]) or your app's cable constructor
//! ([`TestCable::from_fn`]). Each step is deterministic: `subscribe`
//! returns once the subscription is confirmed (its streams live), actions
//! return once done, and in-memory broadcasts are delivered before
//! `broadcast` returns. Errors the connection reports (an unknown action,
//! a failing one, an unknown channel) are returned, never panics.
//!
//! ```
//! use keayl_cable::connection::{
//!     CommandError, ConnectError, Connection, ConnectionHandler, Identifiers,
//! };
//! use keayl_cable::testing::TestCable;
//! use keayl_cable::{Channel, ChannelContext, ChannelError};
//! use serde_json::json;
//!
//! /// Identifies connections by their `token` query parameter.
//! struct AppConnection;
//!
//! impl ConnectionHandler for AppConnection {
//!     const IDENTIFIED_BY: &'static [&'static str] = &["current_user"];
//!
//!     async fn connect(&self, conn: &mut Connection) -> Result<(), ConnectError> {
//!         match conn.request().query("token").map(str::to_owned) {
//!             Some(user) => {
//!                 conn.set_identifier("current_user", user);
//!                 Ok(())
//!             }
//!             None => conn.reject_unauthorized_connection(),
//!         }
//!     }
//! }
//!
//! #[derive(serde::Deserialize)]
//! struct Room {
//!     room: String,
//! }
//!
//! #[derive(serde::Deserialize)]
//! #[serde(tag = "action", rename_all = "snake_case")]
//! enum ChatAction {
//!     Speak { message: String },
//! }
//!
//! #[derive(Default)]
//! struct ChatChannel;
//!
//! impl Channel for ChatChannel {
//!     const NAME: &'static str = "ChatChannel";
//!     type Action = ChatAction;
//!
//!     async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
//!         let Ok(Room { room }) = ctx.params_as::<Room>() else {
//!             ctx.reject();
//!             return Ok(());
//!         };
//!         ctx.stream_from(format!("chat:{room}"));
//!         ctx.transmit(json!({ "joined": room }));
//!         Ok(())
//!     }
//!
//!     async fn perform(&mut self, ctx: &mut ChannelContext<'_>, action: ChatAction)
//!         -> Result<(), ChannelError>
//!     {
//!         let ChatAction::Speak { message } = action;
//!         let Room { room } = ctx.params_as()?;
//!         let from = ctx.identifiers().param("current_user");
//!         ctx.broadcast_to(&format!("chat:{room}"), &json!({ "from": from, "message": message }))
//!             .await?;
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), CommandError> {
//! let cable = TestCable::new(|b| b.connection_handler(AppConnection).channel::<ChatChannel>());
//!
//! // The connection handler.
//! let anonymous = cable.connect(http::Request::get("/cable").body(()).unwrap()).await;
//! assert!(anonymous.is_rejected());
//! assert_eq!(anonymous.disconnect_reason().as_deref(), Some("unauthorized"));
//! let alice = cable.connect(http::Request::get("/cable?token=alice").body(()).unwrap()).await;
//! assert!(alice.is_open());
//! assert_eq!(alice.identifier::<String>("current_user").map(String::as_str), Some("alice"));
//!
//! // The channel, on a connection stubbed with its identifiers.
//! let bob = cable
//!     .stub_connection(Identifiers::new().with("current_user", "bob".to_string()))
//!     .await;
//! let chat = bob.subscribe::<ChatChannel>(json!({ "room": "lobby" })).await?;
//! assert!(chat.is_confirmed());
//! assert!(chat.has_stream("chat:lobby"));
//! assert_eq!(chat.take_transmissions(), [json!({ "joined": "lobby" })]);
//!
//! chat.perform("speak", json!({ "message": "hi" })).await?;
//! let said = json!({ "from": "bob", "message": "hi" });
//! assert_eq!(cable.broadcasts("chat:lobby"), [said.clone()]);
//! assert_eq!(chat.transmissions(), [said]); // back through its stream
//!
//! // Errors are returned, as the connection reports them.
//! let err = chat.perform("shout", json!({ "message": "HI" })).await.unwrap_err();
//! assert!(matches!(err, CommandError::InvalidAction { .. }));
//!
//! // No room: rejected, nothing streamed.
//! let nowhere = bob.subscribe::<ChatChannel>(()).await?;
//! assert!(nowhere.is_rejected() && nowhere.streams().is_empty());
//! # Ok(())
//! # }
//! ```

mod connection;
mod recorder;
mod subscription;

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

pub use connection::TestConnection;
pub use subscription::TestSubscription;

use crate::cable::{Cable, CableBuilder};
use crate::channel::Channel;
use crate::connection::{Identifiers, Request};
use crate::naming::Streamable;
use crate::pubsub::{InMemory, PubSub};
use recorder::Recorder;

/// The cable under test, on a pub/sub that records every broadcast. Cheap
/// to clone; clones share the cable and the record.
#[derive(Clone)]
pub struct TestCable {
    cable: Cable,
    /// Same pub/sub and limits, no handler: for stubbed connections.
    stub: Cable,
    recorder: Arc<Recorder>,
}

impl std::fmt::Debug for TestCable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCable")
            .field("cable", &self.cable)
            .field("recorder", &self.recorder)
            .finish_non_exhaustive()
    }
}

impl TestCable {
    /// A cable from `configure` applied to a builder on a recording
    /// [`InMemory`]: `TestCable::new(|b| b.channel::<ChatChannel>())`.
    pub fn new(configure: impl FnOnce(CableBuilder) -> CableBuilder) -> Self {
        Self::from_fn(|pubsub| configure(Cable::builder_shared(pubsub)).build())
    }

    /// A cable made by `make` on a recording [`InMemory`]: for an app's
    /// cable constructor taking its pub/sub (`TestCable::from_fn(app_cable)`).
    /// `make` must build the cable on the pub/sub it is given, or
    /// broadcasts are not recorded.
    pub fn from_fn(make: impl FnOnce(Arc<dyn PubSub>) -> Cable) -> Self {
        Self::from_fn_on(Arc::new(InMemory::new()), make)
    }

    /// [`from_fn`](Self::from_fn) recording in front of another backend
    /// (an [`External`](crate::External) over a test broker, say).
    pub fn from_fn_on(
        backend: Arc<dyn PubSub>,
        make: impl FnOnce(Arc<dyn PubSub>) -> Cable,
    ) -> Self {
        let recorder = Arc::new(Recorder::new(backend));
        let pubsub: Arc<dyn PubSub> = recorder.clone();
        let cable = make(pubsub.clone());
        let stub = Cable::builder_shared(pubsub)
            .config(cable.config().clone())
            .build();
        TestCable {
            cable,
            stub,
            recorder,
        }
    }

    /// The cable: broadcast with [`Cable::broadcast`] or
    /// [`Cable::broadcaster`] and it is recorded and delivered.
    pub fn cable(&self) -> &Cable {
        &self.cable
    }

    /// The recording pub/sub (for
    /// [`set_cable_pubsub`](crate::set_cable_pubsub) or a
    /// [`Broadcaster`](crate::Broadcaster) in the code under test).
    pub fn pubsub(&self) -> Arc<dyn PubSub> {
        self.recorder.clone()
    }

    /// Open a connection for `request` (an `http::Request<_>` or a
    /// [`Request`]): the cable's connection handler runs `connect`, as for
    /// a real client. Rejected or not, the connection is returned: check
    /// [`is_rejected`](TestConnection::is_rejected).
    pub async fn connect(&self, request: impl Into<Request>) -> TestConnection {
        TestConnection::open(&self.cable, &self.cable, Identifiers::new(), request.into()).await
    }

    /// Open a connection carrying `identifiers` **without** running the
    /// connection handler (Rails' `stub_connection`), to test channels as
    /// that client. The connection is opened on a cable sharing this one's
    /// pub/sub, channels and limits but no handler, so it declares no
    /// identifiers (no [`connection_identifier`](TestConnection::connection_identifier),
    /// no remote disconnects).
    pub async fn stub_connection(&self, identifiers: Identifiers) -> TestConnection {
        self.stub_connection_with_request(identifiers, Request::default())
            .await
    }

    /// [`stub_connection`](Self::stub_connection) with the upgrade request
    /// channels see in [`ChannelContext::request`](crate::ChannelContext::request).
    pub async fn stub_connection_with_request(
        &self,
        identifiers: Identifiers,
        request: impl Into<Request>,
    ) -> TestConnection {
        TestConnection::open(&self.stub, &self.cable, identifiers, request.into()).await
    }

    /// What was published to `stream` (by channels, the test, anything on
    /// this cable's pub/sub) and not [taken](Self::take_broadcasts),
    /// oldest first, decoded as JSON; a payload that is not JSON appears as
    /// a string of its text. Peeks: calling it again returns the same values
    /// and more.
    pub fn broadcasts(&self, stream: &str) -> Vec<Value> {
        self.recorder.on(stream).iter().map(decode_json).collect()
    }

    /// [`broadcasts`](Self::broadcasts), draining them.
    pub fn take_broadcasts(&self, stream: &str) -> Vec<Value> {
        self.recorder.take(stream).iter().map(decode_json).collect()
    }

    /// What was published to `C`'s broadcasting for `target` (what
    /// [`stream_for`](crate::ChannelContext::stream_for) streams), decoded
    /// with [`C::coder`](Channel::coder). Peeks.
    pub fn broadcasts_for<C: Channel>(&self, target: &dyn Streamable) -> Vec<Value> {
        let coder = C::coder();
        self.recorder
            .on(&C::broadcasting_for(target))
            .iter()
            .map(|m| coder.decode(m).unwrap_or_else(|_| decode_json(m)))
            .collect()
    }

    /// The payloads published to `stream`, as published. Peeks.
    pub fn raw_broadcasts(&self, stream: &str) -> Vec<Bytes> {
        self.recorder.on(stream)
    }

    /// Every stream with a recorded broadcast, in order of first broadcast.
    pub fn broadcast_streams(&self) -> Vec<String> {
        self.recorder.streams()
    }

    /// Forget every recorded broadcast.
    pub fn clear_broadcasts(&self) {
        self.recorder.clear();
    }
}

fn decode_json(message: &Bytes) -> Value {
    serde_json::from_slice(message)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(message).into_owned()))
}

/// `C`'s broadcasting name for `target` (`chat:Z2lkOi8v…`), what
/// [`stream_for`](crate::ChannelContext::stream_for) streams and
/// [`Broadcaster::broadcast_for`](crate::Broadcaster::broadcast_for)
/// publishes to.
pub fn broadcasting_for<C: Channel>(target: &dyn Streamable) -> String {
    C::broadcasting_for(target)
}
