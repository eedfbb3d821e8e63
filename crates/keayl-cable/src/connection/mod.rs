//! Connections: one per client.
//!
//! A [`Connection`] carries the pub/sub backend, a [`Sink`] (the transport's
//! function for sending a message to this client) and [`Identifiers`]. The
//! transport drives it, one call at a time, from one task:
//! [`open`](Connection::open) once, then
//! [`handle_frame`](Connection::handle_frame) for every client message in
//! arrival order, [`ping`](Connection::ping) and
//! [`run_periodic_timers`](Connection::run_periodic_timers) on its timers, and
//! [`disconnect`](Connection::disconnect) when the socket closes. No lock is
//! held across an await, and each command finishes (its pub/sub
//! subscriptions live, its confirmation sent) before the next starts.
//!
//! Authentication lives in a [`ConnectionHandler`]: `connect` checks the
//! request, records a verified identity with
//! [`set_identifier`](Connection::set_identifier), or refuses with
//! [`reject_unauthorized_connection`](Connection::reject_unauthorized_connection).
//!
//! ```
//! use keayl_cable::connection::{Connection, ConnectionHandler, ConnectError, Identifiers, Sink};
//! use keayl_cable::{Cable, pubsub::InMemory};
//!
//! struct AppConnection;
//!
//! impl ConnectionHandler for AppConnection {
//!     const IDENTIFIED_BY: &'static [&'static str] = &["current_user"];
//!
//!     async fn connect(&self, conn: &mut Connection) -> Result<(), ConnectError> {
//!         match conn.request().query("token").map(str::to_owned) {
//!             Some(user) if user != "bad" => {
//!                 conn.set_identifier("current_user", user);
//!                 Ok(())
//!             }
//!             _ => conn.reject_unauthorized_connection(),
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let cable = Cable::builder(InMemory::new()).connection_handler(AppConnection).build();
//! let request = keayl_cable::connection::Request::from(
//!     http::Request::get("/cable?token=alice").body(()).unwrap(),
//! );
//! let mut conn = cable.connection(Sink::new(|_| {}), Identifiers::new()).with_request(request);
//! conn.open().await;
//! assert!(!conn.is_rejected());
//! assert_eq!(conn.identifier::<String>("current_user").map(String::as_str), Some("alice"));
//! # }
//! ```

mod error;
mod handler;
mod history;
mod identifiers;
mod presence;
mod request;
mod session;
mod sink;
mod subscriptions;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use serde_json::Value;
use tokio::time::Instant;

pub use error::CommandError;
pub(crate) use handler::DynHandler;
pub use handler::{AcceptAll, ConnectError, ConnectionHandler};
pub use identifiers::{IdentifierValue, Identifiers};
pub(crate) use presence::{
    Joined, PresenceTracker, join as join_presence, leave_detached, split_whisper, start_presence,
    whisper_tag,
};
pub use request::Request;
pub use session::RESTORE_SID_HEADER;
pub use sink::Sink;
pub use subscriptions::SubscribeOutcome;
use subscriptions::Subscription;

use crate::channel::{Call, ChannelContext, Data, DynChannel, SubState};
use crate::protocol::{self, Command, DisconnectReason};
use crate::pubsub::{PubSub, SubscriptionId};
use crate::registry::Registry;

/// The lifecycle state of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Created, `open` not yet called.
    New,
    /// `connect` accepted it; `welcome` was sent.
    Open,
    /// `connect` refused it.
    Rejected,
    /// Disconnected.
    Closed,
}

/// The parts of a connection its channels can see.
pub(crate) struct ConnShared {
    pub(crate) registry: Arc<Registry>,
    pub(crate) handler: Arc<dyn DynHandler>,
    pub(crate) sink: Sink,
    pub(crate) identifiers: Identifiers,
    pub(crate) request: Request,
    /// This connection's number in the process (tells whisper senders
    /// apart).
    pub(crate) socket: u64,
}

/// One client connection. See the [module docs](self).
pub struct Connection {
    shared: ConnShared,
    // In subscription order (for teardown and timers). A vector, not a map:
    // a connection holds a handful of subscriptions (at most the limit), a
    // scan is as fast as a hash, and idle connections stay small. Boxed: a
    // subscription is a few hundred bytes.
    subscriptions: Vec<(String, Box<Subscription>)>,
    internal: Option<SubscriptionId>,
    state: ConnectionState,
    deferred_confirmations: bool,
    /// The extended protocol's session id, sent in `welcome`.
    session_id: Option<String>,
    /// The server ended the session (a `disconnect` message).
    session_ended: bool,
    /// `open` restored a saved session.
    restored: bool,
    /// Whether sessions are saved and restored (extended protocol).
    sessions: bool,
    /// Until when restored subscriptions hold live messages for the
    /// client's history request.
    restore_hold_until: Option<Instant>,
    /// When the client must have sent its next `pong` (extended protocol
    /// with [`CableConfig::pong_timeout`](crate::CableConfig::pong_timeout)).
    pong_due: Option<Instant>,
    /// Presence and whisper commands in the current one-second window,
    /// and that window (see
    /// [`CableConfig::max_presence_commands_per_second`](crate::CableConfig::max_presence_commands_per_second)).
    presence_budget: (u32, u32),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("state", &self.state)
            .field("identifiers", &self.shared.identifiers)
            .field(
                "subscriptions",
                &self.subscription_identifiers().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}

impl Connection {
    pub(crate) fn from_parts(
        registry: Arc<Registry>,
        handler: Arc<dyn DynHandler>,
        sink: Sink,
        identifiers: Identifiers,
    ) -> Self {
        let socket = registry.next_socket();
        Connection {
            shared: ConnShared {
                socket,
                registry,
                handler,
                sink,
                identifiers,
                request: Request::default(),
            },
            subscriptions: Vec::new(),
            internal: None,
            state: ConnectionState::New,
            deferred_confirmations: false,
            session_id: None,
            session_ended: false,
            restored: false,
            sessions: true,
            restore_hold_until: None,
            pong_due: None,
            presence_budget: (0, 0),
        }
    }

    /// Neither save this connection's session nor restore one from the
    /// request, whatever the protocol: for transports that resume by other
    /// means (the SSE transport resumes from `Last-Event-ID`).
    pub fn without_sessions(mut self) -> Self {
        self.sessions = false;
        self
    }

    /// Attach the upgrade request (query, cookies, headers) for `connect`.
    pub fn with_request(mut self, request: Request) -> Self {
        self.shared.request = request;
        self
    }

    /// The upgrade request.
    pub fn request(&self) -> &Request {
        &self.shared.request
    }

    /// What [`cable`](Self::cable) is made of.
    pub(crate) fn cable_parts(&self) -> (Arc<Registry>, Arc<dyn DynHandler>) {
        (self.shared.registry.clone(), self.shared.handler.clone())
    }

    /// The connection's identifiers.
    pub fn identifiers(&self) -> &Identifiers {
        &self.shared.identifiers
    }

    /// Read a declared identifier with its type: the spec's
    /// `$conn.current-user`.
    pub fn identifier<T: std::any::Any>(&self, name: &str) -> Option<&T> {
        self.shared.identifiers.get(name)
    }

    /// Record a verified identity (call from `connect`).
    pub fn set_identifier(&mut self, name: impl Into<String>, value: impl IdentifierValue) {
        self.shared.identifiers.set(name, value);
    }

    /// Refuse the connection: `return conn.reject_unauthorized_connection()`
    /// from `connect`.
    pub fn reject_unauthorized_connection(&self) -> Result<(), ConnectError> {
        Err(ConnectError::Unauthorized)
    }

    /// The lifecycle state.
    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// Whether `connect` refused the connection.
    pub fn is_rejected(&self) -> bool {
        self.state == ConnectionState::Rejected
    }

    /// Rails' `connection_identifier`: the declared identifiers' params,
    /// sorted, joined with `:`; `None` without any.
    pub fn connection_identifier(&self) -> Option<String> {
        let declared = self.shared.handler.identified_by();
        self.shared.identifiers.connection_identifier(declared)
    }

    /// The identifiers of the current subscriptions, in subscription order.
    pub fn subscription_identifiers(&self) -> impl Iterator<Item = &str> {
        self.subscriptions.iter().map(|(id, _)| id.as_str())
    }

    fn position(&self, identifier: &str) -> Option<usize> {
        self.subscriptions
            .iter()
            .position(|(id, _)| id == identifier)
    }

    /// Refuse the connection: the `disconnect` message, then the sink closes.
    fn refuse(&mut self, reason: DisconnectReason, reconnect: bool) -> ConnectionState {
        self.state = ConnectionState::Rejected;
        self.shared
            .sink
            .send(protocol::disconnect(reason, reconnect));
        self.shared.sink.close();
        self.state
    }

    /// Run `connect`, catching a rejection. Accepted: the connection's
    /// internal stream (`action_cable/<connection identifier>`, for remote
    /// disconnects) is live, then `welcome` is sent. Refused: the client gets
    /// the `disconnect` message and the sink is closed.
    pub async fn open(&mut self) -> ConnectionState {
        if self.state != ConnectionState::New {
            return self.state;
        }
        let restoring = self.restore_identifiers().await;
        let by_token = match restoring {
            Some(_) => None,
            None => self.identify_by_token().await,
        };
        match by_token {
            Some(Err(crate::jwt::JwtError::Expired)) => {
                tracing::info!("connection rejected: token expired");
                return self.refuse(DisconnectReason::Other("token_expired"), false);
            }
            Some(Err(e)) => {
                tracing::info!(error = %e, "connection rejected: bad token");
                return self.refuse(DisconnectReason::Unauthorized, false);
            }
            Some(Ok(())) | None => {}
        }
        let outcome = if restoring.is_some() || by_token.is_some() {
            Ok(())
        } else {
            let handler = self.shared.handler.clone();
            match AssertUnwindSafe(handler.connect(self)).catch_unwind().await {
                Ok(r) => r,
                Err(panic) => Err(ConnectError::Failed(panic_message(&*panic))),
            }
        };
        match outcome {
            Ok(()) => {}
            Err(ConnectError::Unauthorized) => {
                tracing::info!("connection rejected: unauthorized");
                return self.refuse(DisconnectReason::Unauthorized, false);
            }
            Err(ConnectError::Failed(message)) => {
                if self.shared.registry.log_allowed() {
                    tracing::error!(%message, "connect failed");
                }
                return self.refuse(DisconnectReason::Other("server_error"), true);
            }
        }
        if let Some(id) = self.connection_identifier() {
            let sink = self.shared.sink.clone();
            let sub = self.shared.registry.pubsub().subscribe(
                &crate::naming::internal_stream(&id),
                Arc::new(move |d: &crate::pubsub::Delivery| handle_internal(&sink, d.message())),
            );
            self.internal = Some(sub.id);
            if let Err(e) = sub.ready.await {
                // Without it, remote disconnects would be missed: the client
                // is told to come back later instead of being welcomed.
                tracing::error!(error = %e, "internal stream subscription failed; refusing the connection");
                return self.refuse(DisconnectReason::Other("server_error"), true);
            }
        }
        self.state = ConnectionState::Open;
        if self.shared.request.protocol().is_extended() {
            let sid = new_session_id();
            match restoring {
                Some(saved) => {
                    let restored = self.restore_subscriptions(saved).await;
                    self.shared.registry.count_restored_session();
                    self.restored = true;
                    self.shared.sink.send(protocol::welcome_restored(
                        &sid,
                        restored.iter().map(String::as_str),
                    ));
                }
                None => self.shared.sink.send(protocol::welcome_with_sid(&sid)),
            }
            self.session_id = Some(sid);
            self.pong_due = self
                .shared
                .registry
                .config()
                .pong_timeout
                .map(|t| Instant::now() + t);
            self.save_session().await;
        } else {
            self.shared.sink.send(protocol::welcome());
        }
        self.state
    }

    /// The identifiers a JWT in the request carries, set through the
    /// handler's `restore` (`None`: JWT identification is off or the
    /// request brings no token).
    async fn identify_by_token(&mut self) -> Option<Result<(), crate::jwt::JwtError>> {
        let jwt = self.shared.registry.jwt()?;
        let token = jwt.token_of(&self.shared.request)?;
        let ids = match jwt.verify(&token) {
            Ok(ids) => ids,
            Err(e) => return Some(Err(e)),
        };
        let handler = self.shared.handler.clone();
        let outcome = AssertUnwindSafe(handler.restore(self, &ids))
            .catch_unwind()
            .await;
        Some(match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(crate::jwt::JwtError::Invalid(format!("refused: {e}"))),
            Err(panic) => Err(crate::jwt::JwtError::Invalid(panic_message(&*panic))),
        })
    }

    /// Whether `open` restored a saved session (extended protocol).
    pub fn is_restored(&self) -> bool {
        self.restored
    }

    /// The session id sent in the extended protocol's `welcome` (`None`
    /// for `actioncable-v1-json`, or before `open`).
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// Send a ping (`{"type":"ping","message":<unix seconds>}`) if open.
    pub fn ping(&self, unix_secs: u64) {
        if self.state == ConnectionState::Open {
            self.shared.sink.send(protocol::ping(unix_secs));
        }
    }

    /// Close from the server side: send `{"type":"disconnect",…}` and ask the
    /// transport to close. The transport then calls
    /// [`disconnect`](Self::disconnect).
    pub fn close(&mut self, reason: DisconnectReason, reconnect: bool) {
        // The client forgets its session on a `disconnect` message.
        self.session_ended = true;
        self.shared
            .sink
            .send(protocol::disconnect(reason, reconnect));
        self.shared.sink.close();
    }

    /// Handle one client frame (a WebSocket text message). Errors produce no
    /// frame and leave the connection and its other subscriptions as they
    /// were; the caller logs and counts them.
    pub async fn handle_frame(&mut self, frame: &[u8]) -> Result<(), CommandError> {
        if self.state != ConnectionState::Open {
            return Err(CommandError::NotOpen);
        }
        match protocol::parse_command_with(frame, self.shared.request.protocol())? {
            Command::Subscribe {
                identifier,
                channel,
                params,
                history,
                presence,
            } => {
                let max = self.shared.registry.config().max_identifier_bytes;
                if identifier.len() > max {
                    return Err(CommandError::IdentifierTooLong(identifier.len(), max));
                }
                if self.position(&identifier).is_some() {
                    return Err(CommandError::AlreadySubscribed(identifier));
                }
                let factory = self
                    .shared
                    .registry
                    .channel_factory(&channel)
                    .ok_or(CommandError::UnknownChannel(channel.clone()))?;
                let outcome = self
                    .subscribe_dyn(
                        history,
                        identifier.clone(),
                        channel.into(),
                        params,
                        factory(),
                    )
                    .await?;
                match (outcome, presence) {
                    (SubscribeOutcome::Confirmed, Some(presence)) => {
                        // The join a client attaches to its subscribe.
                        if let Err(e) = self.join_presence(&identifier, presence).await {
                            tracing::info!(error = %e, "presence join with a subscribe failed");
                        }
                    }
                    (SubscribeOutcome::Pending, Some(presence)) => {
                        if let Some(i) = self.position(&identifier) {
                            self.subscriptions[i].1.join_on_confirm = Some(presence);
                        }
                    }
                    _ => {}
                }
                if outcome == SubscribeOutcome::Confirmed {
                    self.save_session().await;
                }
                Ok(())
            }
            Command::History {
                identifier,
                history,
            } => {
                let Some(index) = self.position(&identifier) else {
                    return Err(CommandError::UnknownSubscription(identifier));
                };
                if history.is_empty() {
                    return Err(protocol::ProtocolError::InvalidHistory {
                        reason: "neither \"since\" nor \"streams\"".into(),
                    }
                    .into());
                }
                self.serve_history(index, history).await;
                Ok(())
            }
            Command::Join {
                identifier,
                presence,
            } => self.join_presence(&identifier, presence).await,
            Command::Leave { identifier } => self.leave_presence(&identifier).await,
            Command::Presence {
                identifier,
                return_records,
            } => self.presence_info(&identifier, return_records).await,
            Command::Whisper { identifier, data } => self.whisper(&identifier, &data).await,
            Command::Ping => {
                self.shared.sink.send(protocol::pong());
                Ok(())
            }
            // A client's answer to our ping: its arrival is what counts
            // (the reader saw the connection alive).
            Command::Pong => {
                if let Some(timeout) = self.shared.registry.config().pong_timeout {
                    self.pong_due = Some(Instant::now() + timeout);
                }
                Ok(())
            }
            Command::Unsubscribe { identifier } => {
                self.remove_subscription(&identifier).await?;
                self.save_session().await;
                Ok(())
            }
            Command::Message {
                identifier,
                action,
                data,
            } => self.perform(&identifier, action.as_deref(), &data).await,
        }
    }

    /// Dispatch a client message to the subscription `identifier` (the
    /// spec's `perform`): decoded as the channel's
    /// [`Action`](crate::Channel::Action), or given to
    /// [`receive`](crate::Channel::receive) when `action` is `None`, empty
    /// or `"receive"`. Nothing else is callable.
    pub async fn perform(
        &mut self,
        identifier: &str,
        action: Option<&str>,
        data: &Data,
    ) -> Result<(), CommandError> {
        let Some(index) = self.position(identifier) else {
            return Err(CommandError::UnknownSubscription(identifier.to_owned()));
        };
        let sub = &mut self.subscriptions[index].1;
        let action = action.filter(|a| !a.is_empty()).unwrap_or("receive");
        let Subscription { channel, state, .. } = &mut **sub;
        let named;
        let call = if action == "receive" {
            Call::Receive(data)
        } else if data.action() == Some(action) {
            Call::Action(data)
        } else {
            named = data.with_action(action);
            Call::Action(&named)
        };
        Self::run_action(&self.shared, channel.as_mut(), state, action, call).await
    }

    async fn run_action(
        shared: &ConnShared,
        channel: &mut dyn DynChannel,
        state: &mut SubState,
        action: &str,
        call: Call<'_>,
    ) -> Result<(), CommandError> {
        let mut ctx = ChannelContext {
            state,
            conn: shared,
        };
        let result = AssertUnwindSafe(channel.call(&mut ctx, call))
            .catch_unwind()
            .await;
        // Streams started by the action go live before the next command (a
        // subscription still awaiting its confirmation waits for them with
        // the rest).
        let pending = if state.confirmed {
            std::mem::take(&mut state.pending)
        } else {
            Vec::new()
        };
        for p in pending {
            if let Err(e) = p.ready.await {
                if shared.registry.log_allowed() {
                    tracing::error!(error = %e, stream = %p.stream, "stream subscription from an action failed; stopping it");
                }
                if state.streams.get(&p.stream).map(|(id, _)| *id) == Some(p.id) {
                    state.streams.remove(&p.stream);
                    shared.registry.pubsub().unsubscribe(p.id);
                }
            }
        }
        let message = match result {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) if e.is_unhandled() => {
                return Err(CommandError::UnknownAction {
                    channel: state.channel_class.to_string(),
                    action: action.to_owned(),
                });
            }
            Ok(Err(e)) if e.is_invalid() => {
                return Err(CommandError::InvalidAction {
                    channel: state.channel_class.to_string(),
                    action: action.to_owned(),
                    message: e.to_string(),
                });
            }
            Ok(Err(e)) => e.to_string(),
            Err(panic) => panic_message(&*panic),
        };
        Err(CommandError::ActionFailed {
            channel: state.channel_class.to_string(),
            action: action.to_owned(),
            message,
        })
    }

    /// The earliest due time of any periodic timer (or of the end of a
    /// restored session's hold, see [`CableConfig::restore_hold`]).
    ///
    /// [`CableConfig::restore_hold`]: crate::CableConfig::restore_hold
    pub fn next_timer_due(&self) -> Option<Instant> {
        self.subscriptions
            .iter()
            .flat_map(|(_, s)| s.state.timers.iter().map(|t| t.due))
            .chain(self.restore_hold_until)
            .chain(self.pong_due)
            .min()
    }

    /// Fire every periodic timer due at `now` (the transport calls this on
    /// its interval, or at [`next_timer_due`](Self::next_timer_due)). Returns
    /// how many fired.
    pub async fn run_periodic_timers(&mut self, now: Instant) -> usize {
        if self.restore_hold_until.is_some_and(|at| at <= now) {
            self.release_restored();
        }
        if self.pong_due.is_some_and(|at| at <= now) && self.state == ConnectionState::Open {
            self.pong_due = None;
            tracing::info!("no pong within the pong timeout; disconnecting");
            self.close(DisconnectReason::NoPong, true);
            return 0;
        }
        let mut fired = 0;
        for (_, sub) in self.subscriptions.iter_mut() {
            let due: Vec<&'static str> = sub
                .state
                .timers
                .iter_mut()
                .filter(|t| t.due <= now)
                .map(|t| {
                    t.due = (t.due + t.every).max(now + t.every / 2);
                    t.name
                })
                .collect();
            for name in due {
                let Subscription { channel, state, .. } = &mut **sub;
                if let Err(e) = Self::run_action(
                    &self.shared,
                    channel.as_mut(),
                    state,
                    name,
                    Call::Timer(name),
                )
                .await
                    && self.shared.registry.log_allowed()
                {
                    tracing::error!(error = %e, "periodic timer failed");
                }
                fired += 1;
            }
        }
        fired
    }

    /// Tear the connection down, in Rails' order: every subscription is
    /// unsubscribed (its `unsubscribed` runs and may broadcast, then its
    /// streams and timers stop), the internal stream is dropped, and the
    /// handler's `disconnect` runs last.
    pub async fn disconnect(&mut self) {
        if self.state == ConnectionState::Closed {
            return;
        }
        let was_open = self.state == ConnectionState::Open;
        if was_open {
            // Kept for a reconnect with the session id, unless the server
            // ended it.
            if self.session_ended {
                self.end_session().await;
            } else {
                self.save_session().await;
            }
        }
        self.state = ConnectionState::Closed;
        for (_, mut sub) in std::mem::take(&mut self.subscriptions) {
            Self::unsubscribe(&self.shared, &mut sub, presence::Leave::AfterTtl).await;
        }
        if let Some(id) = self.internal.take() {
            self.shared.registry.pubsub().unsubscribe(id);
        }
        if was_open {
            let handler = self.shared.handler.clone();
            if let Err(panic) = AssertUnwindSafe(handler.disconnect(self))
                .catch_unwind()
                .await
                && self.shared.registry.log_allowed()
            {
                tracing::error!(message = %panic_message(&*panic), "disconnect panicked");
            }
        }
    }
}

/// A fresh session id: 128 random bits from the OS, hex. (A restored
/// session will be found by its id, so it must not be guessable.)
fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    if let Err(e) = getrandom::fill(&mut bytes) {
        // Never seen on Linux; without OS randomness, mix what differs
        // between calls through SHA-256 rather than hand out a counter.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        tracing::error!(error = %e, "no OS randomness for a session id");
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .to_le_bytes(),
        );
        h.update(std::process::id().to_le_bytes());
        h.update(format!("{:?}", std::time::SystemTime::now()).as_bytes());
        h.update((&bytes as *const _ as usize).to_le_bytes());
        bytes.copy_from_slice(&h.finalize()[..16]);
    }
    hex::encode(bytes)
}

/// A message on the internal stream: `{"type":"disconnect","reconnect":…}`
/// closes the connection with reason `remote`.
fn handle_internal(sink: &Sink, message: &[u8]) {
    let Ok(Value::Object(msg)) = serde_json::from_slice::<Value>(message) else {
        return;
    };
    if msg.get("type").and_then(Value::as_str) == Some("disconnect") {
        let reconnect = msg
            .get("reconnect")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        sink.send(protocol::disconnect(DisconnectReason::Remote, reconnect));
        sink.close();
    }
}
