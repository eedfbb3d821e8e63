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

mod identifiers;
mod request;
mod sink;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use serde_json::Value;
use tokio::time::Instant;

pub use identifiers::{IdentifierValue, Identifiers};
pub use request::Request;
pub use sink::Sink;

use crate::channel::{Call, Channel, ChannelContext, Data, DynChannel, Params, SubState, Timer};
use crate::protocol::{self, Command, DisconnectReason, ProtocolError};
use crate::pubsub::{PubSub, PubSubError, SubscriptionId};
use crate::server::Cable;

/// An app's connection class: which identifiers it declares, how it
/// authenticates, what it does on disconnect.
pub trait ConnectionHandler: Send + Sync + 'static {
    /// The identifiers a connection carries (`identified_by`). Their values,
    /// once set, name the connection for remote disconnects.
    const IDENTIFIED_BY: &'static [&'static str] = &[];

    /// Authenticate: read [`Connection::request`] and
    /// [`Connection::identifiers`], call
    /// [`set_identifier`](Connection::set_identifier), or return
    /// [`reject_unauthorized_connection`](Connection::reject_unauthorized_connection).
    fn connect(
        &self,
        conn: &mut Connection,
    ) -> impl Future<Output = Result<(), ConnectError>> + Send {
        let _ = conn;
        async { Ok(()) }
    }

    /// Called last when the connection closes, after every subscription was
    /// torn down.
    fn disconnect(&self, conn: &mut Connection) -> impl Future<Output = ()> + Send {
        let _ = conn;
        async {}
    }
}

/// Accepts every connection and declares no identifiers.
#[derive(Debug, Clone, Copy, Default)]
pub struct AcceptAll;

impl ConnectionHandler for AcceptAll {}

pub(crate) trait DynHandler: Send + Sync {
    fn identified_by(&self) -> &'static [&'static str];
    fn connect<'a>(
        &'a self,
        conn: &'a mut Connection,
    ) -> crate::pubsub::BoxFuture<'a, Result<(), ConnectError>>;
    fn disconnect<'a>(&'a self, conn: &'a mut Connection) -> crate::pubsub::BoxFuture<'a, ()>;
}

impl<H: ConnectionHandler> DynHandler for H {
    fn identified_by(&self) -> &'static [&'static str] {
        H::IDENTIFIED_BY
    }
    fn connect<'a>(
        &'a self,
        conn: &'a mut Connection,
    ) -> crate::pubsub::BoxFuture<'a, Result<(), ConnectError>> {
        Box::pin(ConnectionHandler::connect(self, conn))
    }
    fn disconnect<'a>(&'a self, conn: &'a mut Connection) -> crate::pubsub::BoxFuture<'a, ()> {
        Box::pin(ConnectionHandler::disconnect(self, conn))
    }
}

/// Why `connect` refused a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// `reject_unauthorized_connection`: the client gets
    /// `{"type":"disconnect","reason":"unauthorized","reconnect":false}`.
    #[error("unauthorized connection")]
    Unauthorized,
    /// `connect` failed for another reason (a database down, say): the
    /// client is told to reconnect later.
    #[error("connect failed: {0}")]
    Failed(String),
}

/// Why a client command produced no effect. Logged and counted by the
/// transport; never sent to the client, never fatal to the connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The frame is not a valid command (§3.6 of the protocol notes).
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// No channel of that name is registered.
    #[error("subscription class not found: {0:?}")]
    UnknownChannel(String),
    /// A subscribe for an identifier already subscribed (ignored).
    #[error("already subscribed to {0}")]
    AlreadySubscribed(String),
    /// The connection holds the maximum number of subscriptions.
    #[error("too many subscriptions (limit {0})")]
    TooManySubscriptions(usize),
    /// A subscribe whose identifier is longer than the limit (in bytes).
    #[error("identifier of {0} bytes is over the limit of {1}")]
    IdentifierTooLong(usize, usize),
    /// An unsubscribe or message for an identifier not subscribed.
    #[error("unable to find subscription with identifier: {0}")]
    UnknownSubscription(String),
    /// A message the channel does not handle: without an action on a
    /// channel that does not [`receive`](crate::Channel::receive).
    #[error("unable to process {channel}#{action}")]
    UnknownAction {
        /// Channel class.
        channel: String,
        /// The action requested.
        action: String,
    },
    /// A message that does not decode as the channel's
    /// [`Action`](crate::Channel::Action): an action it does not define,
    /// or data of the wrong shape.
    #[error("unable to process {channel}#{action}: {message}")]
    InvalidAction {
        /// Channel class.
        channel: String,
        /// The action requested.
        action: String,
        /// What did not decode.
        message: String,
    },
    /// The action ran and failed (error or panic).
    #[error("{channel}#{action} failed: {message}")]
    ActionFailed {
        /// Channel class.
        channel: String,
        /// The action.
        action: String,
        /// The error or panic message.
        message: String,
    },
    /// The connection is not open (not yet opened, rejected or closed).
    #[error("connection is not open")]
    NotOpen,
    /// The subscription would take the connection's (or the process's)
    /// subscriptions over their memory budget.
    #[error("subscription of ~{needed} bytes is over the memory budget ({budget})")]
    OverBudget {
        /// The subscription's estimated bytes.
        needed: usize,
        /// Which budget: `"connection"` or `"process"`.
        budget: &'static str,
    },
}

impl CommandError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CommandError::Protocol(e) => e.kind(),
            CommandError::UnknownChannel(_) => "unknown_channel",
            CommandError::AlreadySubscribed(_) => "already_subscribed",
            CommandError::TooManySubscriptions(_) => "too_many_subscriptions",
            CommandError::IdentifierTooLong(..) => "identifier_too_long",
            CommandError::UnknownSubscription(_) => "unknown_subscription",
            CommandError::UnknownAction { .. } => "unknown_action",
            CommandError::InvalidAction { .. } => "invalid_action",
            CommandError::ActionFailed { .. } => "action_failed",
            CommandError::NotOpen => "not_open",
            CommandError::OverBudget { .. } => "over_budget",
        }
    }
}

/// How a subscribe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeOutcome {
    /// `confirm_subscription` was sent.
    Confirmed,
    /// `reject_subscription` was sent.
    Rejected,
    /// Its streams are not live yet and confirmations are deferred
    /// ([`Connection::set_deferred_confirmations`]): the confirmation (or
    /// rejection) follows from [`Connection::confirm_settled`].
    Pending,
}

/// Poll a subscription's pending stream subscriptions once: drop those that
/// went live; a failure marks the subscription rejected.
fn settle_ready(cable: &Cable, state: &mut SubState, cx: &mut std::task::Context<'_>) {
    let mut i = 0;
    while i < state.pending.len() {
        match state.pending[i].ready.as_mut().poll(cx) {
            std::task::Poll::Ready(Ok(())) => {
                state.pending.swap_remove(i);
            }
            std::task::Poll::Ready(Err(e)) => {
                if cable.log_allowed() {
                    tracing::error!(identifier = %state.identifier, stream = %state.pending[i].stream, error = %e, "stream subscription failed; rejecting");
                }
                state.pending.swap_remove(i);
                state.rejected = true;
            }
            std::task::Poll::Pending => i += 1,
        }
    }
}

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
    pub(crate) cable: Cable,
    pub(crate) sink: Sink,
    pub(crate) identifiers: Identifiers,
    pub(crate) request: Request,
}

struct Subscription {
    channel: Box<dyn DynChannel>,
    state: SubState,
    charge: Charge,
}

/// A subscription's share of the memory budgets; released when dropped.
struct Charge {
    bytes: usize,
    total: Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.total
            .fetch_sub(self.bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The estimated memory of a subscription (see
/// [`CableConfig::max_subscription_bytes`](crate::CableConfig::max_subscription_bytes)).
fn estimated_bytes(identifier: &str, params: &Params) -> usize {
    fn values(v: &Value) -> usize {
        match v {
            Value::Array(a) => 1 + a.iter().map(values).sum::<usize>(),
            Value::Object(m) => 1 + m.values().map(values).sum::<usize>(),
            _ => 1,
        }
    }
    let n: usize = params.values().map(values).sum();
    identifier.len() * 7 + n * 160 + 1024
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
    /// A connection on `pubsub` with no registered channels and no
    /// authentication: the spec's `Connection.new(pubsub, sink, identifiers)`.
    /// Use [`Cable::connection`] for a connection that knows the app's
    /// channels and connection handler.
    pub fn new(pubsub: impl PubSub, sink: Sink, identifiers: Identifiers) -> Self {
        Cable::builder(pubsub).build().connection(sink, identifiers)
    }

    pub(crate) fn with_cable(cable: Cable, sink: Sink, identifiers: Identifiers) -> Self {
        Connection {
            shared: ConnShared {
                cable,
                sink,
                identifiers,
                request: Request::default(),
            },
            subscriptions: Vec::new(),
            internal: None,
            state: ConnectionState::New,
            deferred_confirmations: false,
        }
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

    /// The cable this connection belongs to.
    pub fn cable(&self) -> &Cable {
        &self.shared.cable
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
        let declared = self.shared.cable.handler().identified_by();
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

    /// Run `connect`, catching a rejection. Accepted: the connection's
    /// internal stream (`action_cable/<connection identifier>`, for remote
    /// disconnects) is live, then `welcome` is sent. Refused: the client gets
    /// the `disconnect` message and the sink is closed.
    pub async fn open(&mut self) -> ConnectionState {
        if self.state != ConnectionState::New {
            return self.state;
        }
        let handler = self.shared.cable.handler();
        let outcome = AssertUnwindSafe(handler.connect(self)).catch_unwind().await;
        let outcome = match outcome {
            Ok(r) => r,
            Err(panic) => Err(ConnectError::Failed(panic_message(&*panic))),
        };
        match outcome {
            Ok(()) => {}
            Err(ConnectError::Unauthorized) => {
                tracing::info!("connection rejected: unauthorized");
                self.state = ConnectionState::Rejected;
                self.shared
                    .sink
                    .send(protocol::disconnect(DisconnectReason::Unauthorized, false));
                self.shared.sink.close();
                return self.state;
            }
            Err(ConnectError::Failed(message)) => {
                if self.shared.cable.log_allowed() {
                    tracing::error!(%message, "connect failed");
                }
                self.state = ConnectionState::Rejected;
                self.shared.sink.send(protocol::disconnect(
                    DisconnectReason::Other("server_error"),
                    true,
                ));
                self.shared.sink.close();
                return self.state;
            }
        }
        if let Some(id) = self.connection_identifier() {
            let sink = self.shared.sink.clone();
            let sub = self.shared.cable.pubsub().subscribe(
                &crate::server::internal_stream(&id),
                Arc::new(move |d: &crate::pubsub::Delivery| handle_internal(&sink, d.message())),
            );
            self.internal = Some(sub.id);
            if let Err(e) = sub.ready.await {
                // Without it, remote disconnects would be missed: the client
                // is told to come back later instead of being welcomed.
                tracing::error!(error = %e, "internal stream subscription failed; refusing the connection");
                self.state = ConnectionState::Rejected;
                self.shared.sink.send(protocol::disconnect(
                    DisconnectReason::Other("server_error"),
                    true,
                ));
                self.shared.sink.close();
                return self.state;
            }
        }
        self.state = ConnectionState::Open;
        self.shared.sink.send(protocol::welcome());
        self.state
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
    pub fn close(&self, reason: DisconnectReason, reconnect: bool) {
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
        match protocol::parse_command(frame)? {
            Command::Subscribe {
                identifier,
                channel,
                params,
            } => {
                let max = self.shared.cable.config().max_identifier_bytes;
                if identifier.len() > max {
                    return Err(CommandError::IdentifierTooLong(identifier.len(), max));
                }
                if self.position(&identifier).is_some() {
                    return Err(CommandError::AlreadySubscribed(identifier));
                }
                let factory = self
                    .shared
                    .cable
                    .channel_factory(&channel)
                    .ok_or(CommandError::UnknownChannel(channel.clone()))?;
                self.subscribe_dyn(identifier, channel.into(), params, factory())
                    .await
                    .map(|_| ())
            }
            Command::Unsubscribe { identifier } => self.remove_subscription(&identifier).await,
            Command::Message {
                identifier,
                action,
                data,
            } => self.perform(&identifier, action.as_deref(), &data).await,
        }
    }

    /// Register `channel` under `identifier` (a JSON object with a `channel`
    /// key, as a client sends it) and subscribe it: `subscribed` runs, its
    /// streams go live, then the client gets `confirm_subscription` — or
    /// `reject_subscription` if it rejected.
    pub async fn add_subscription<C: Channel>(
        &mut self,
        identifier: &str,
        channel: C,
    ) -> Result<SubscribeOutcome, CommandError> {
        if self.state != ConnectionState::Open {
            return Err(CommandError::NotOpen);
        }
        if self.position(identifier).is_some() {
            return Err(CommandError::AlreadySubscribed(identifier.to_owned()));
        }
        let params = match serde_json::from_str::<Value>(identifier) {
            Ok(Value::Object(map)) => map,
            _ => Params::new(),
        };
        self.subscribe_dyn(
            identifier.to_owned(),
            C::NAME.into(),
            params,
            Box::new(channel),
        )
        .await
    }

    async fn subscribe_dyn(
        &mut self,
        identifier: String,
        channel_class: Arc<str>,
        params: Params,
        mut channel: Box<dyn DynChannel>,
    ) -> Result<SubscribeOutcome, CommandError> {
        let limit = self.shared.cable.config().max_subscriptions;
        if self.subscriptions.len() >= limit {
            return Err(CommandError::TooManySubscriptions(limit));
        }
        let charge = self.charge(&identifier, &params)?;
        let pending_limit = self.shared.cable.config().max_pending_bytes;
        let mut state = SubState::new(
            &identifier,
            channel_class,
            channel.name(),
            channel.coder(),
            params,
            pending_limit,
        );
        let mut ctx = ChannelContext {
            state: &mut state,
            conn: &self.shared,
        };
        let result = AssertUnwindSafe(channel.subscribed(&mut ctx))
            .catch_unwind()
            .await;
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(panic) => Some(panic_message(&*panic)),
        };
        if let Some(message) = &failure {
            if self.shared.cable.log_allowed() {
                tracing::error!(identifier = %identifier, %message, "subscribed failed; rejecting");
            }
            state.rejected = true;
        }
        if !state.rejected {
            // Streams already live (in memory, or a broker stream another
            // subscriber made live) need no wait.
            settle_ready(
                &self.shared.cable,
                &mut state,
                &mut std::task::Context::from_waker(std::task::Waker::noop()),
            );
        }
        if state.rejected {
            Self::reject(&self.shared, channel.as_mut(), &mut state).await;
            return Ok(SubscribeOutcome::Rejected);
        }
        if state.pending.is_empty() {
            Self::confirm(&self.shared, channel.as_ref(), &mut state);
            self.subscriptions.push((
                identifier,
                Box::new(Subscription {
                    channel,
                    state,
                    charge,
                }),
            ));
            return Ok(SubscribeOutcome::Confirmed);
        }
        // Waiting for the broker: the subscription exists (its actions can
        // run), its confirmation follows once every stream is live.
        self.subscriptions.push((
            identifier.clone(),
            Box::new(Subscription {
                channel,
                state,
                charge,
            }),
        ));
        if self.deferred_confirmations {
            return Ok(SubscribeOutcome::Pending);
        }
        loop {
            self.pending_settled().await;
            self.confirm_settled().await;
            match self.position(&identifier) {
                None => return Ok(SubscribeOutcome::Rejected),
                Some(i) if self.subscriptions[i].1.state.confirmed => {
                    return Ok(SubscribeOutcome::Confirmed);
                }
                Some(_) => {}
            }
        }
    }

    /// Reserve a new subscription's share of the memory budgets.
    fn charge(&self, identifier: &str, params: &Params) -> Result<Charge, CommandError> {
        use std::sync::atomic::Ordering;
        let config = self.shared.cable.config();
        let needed = estimated_bytes(identifier, params);
        let held: usize = self.subscriptions.iter().map(|(_, s)| s.charge.bytes).sum();
        if held + needed > config.max_subscription_bytes {
            return Err(CommandError::OverBudget {
                needed,
                budget: "connection",
            });
        }
        let total = self.shared.cable.subscription_budget();
        let before = total.fetch_add(needed, Ordering::Relaxed);
        let charge = Charge {
            bytes: needed,
            total: total.clone(),
        };
        if before + needed > config.max_total_subscription_bytes {
            return Err(CommandError::OverBudget {
                needed,
                budget: "process",
            });
        }
        Ok(charge)
    }

    /// Send `confirm_subscription` (then the messages held back meanwhile)
    /// and start the channel's declared timers.
    fn confirm(shared: &ConnShared, channel: &dyn DynChannel, state: &mut SubState) {
        state.confirmed = true;
        state
            .gate
            .open(&shared.sink, state.encoded.confirm_subscription());
        let now = Instant::now();
        for &(name, every) in channel.periodically() {
            if !every.is_zero() && !state.timers.iter().any(|t| t.name == name) {
                state.timers.push(Timer {
                    name,
                    every,
                    due: now + every,
                });
            }
        }
    }

    /// Rails' order for a rejection: stream messages stop, `unsubscribed`
    /// runs, streams and timers stop, then `reject_subscription`.
    async fn reject(shared: &ConnShared, channel: &mut dyn DynChannel, state: &mut SubState) {
        state.gate.close();
        let mut ctx = ChannelContext {
            state,
            conn: shared,
        };
        let _ = AssertUnwindSafe(channel.unsubscribed(&mut ctx))
            .catch_unwind()
            .await;
        ctx.stop_all_streams();
        state.pending.clear();
        state.timers.clear();
        shared.sink.send(state.encoded.reject_subscription());
    }

    /// Whether a subscription waits for its streams to go live (see
    /// [`set_deferred_confirmations`](Self::set_deferred_confirmations)).
    pub fn has_pending(&self) -> bool {
        self.subscriptions.iter().any(|(_, s)| !s.state.confirmed)
    }

    /// How a subscribe whose streams are not live yet behaves. By default
    /// (`false`) [`handle_frame`](Self::handle_frame) waits for the broker
    /// and returns after the confirmation, so each command finishes before
    /// the next. A driver that must keep handling commands while a broker is
    /// slow (the socket driver does) sets `true`: the subscribe returns
    /// [`SubscribeOutcome::Pending`], later commands run, and the driver
    /// awaits [`pending_settled`](Self::pending_settled) and then calls
    /// [`confirm_settled`](Self::confirm_settled), which sends the
    /// confirmation (or the rejection, if the broker refused).
    pub fn set_deferred_confirmations(&mut self, deferred: bool) {
        self.deferred_confirmations = deferred;
    }

    /// Wait until some subscription's streams went live or failed. Cancel
    /// safe (nothing is lost if the wait is dropped); returns at once when a
    /// subscription is already settled, and never when none is pending.
    pub async fn pending_settled(&mut self) {
        std::future::poll_fn(|cx| {
            let mut settled = false;
            for (_, sub) in self.subscriptions.iter_mut() {
                let state = &mut sub.state;
                if state.confirmed {
                    continue;
                }
                settle_ready(&self.shared.cable, state, cx);
                settled |= state.rejected || state.pending.is_empty();
            }
            if settled {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await
    }

    /// Confirm every pending subscription whose streams are all live, and
    /// reject those whose broker subscription failed.
    pub async fn confirm_settled(&mut self) {
        let mut i = 0;
        while i < self.subscriptions.len() {
            let state = &self.subscriptions[i].1.state;
            if state.confirmed || (!state.rejected && !state.pending.is_empty()) {
                i += 1;
                continue;
            }
            if state.rejected {
                let (_, mut sub) = self.subscriptions.remove(i);
                let Subscription { channel, state, .. } = &mut *sub;
                Self::reject(&self.shared, channel.as_mut(), state).await;
                continue;
            }
            let Subscription { channel, state, .. } = &mut *self.subscriptions[i].1;
            Self::confirm(&self.shared, channel.as_ref(), state);
            i += 1;
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
                if shared.cable.log_allowed() {
                    tracing::error!(error = %e, stream = %p.stream, "stream subscription from an action failed; stopping it");
                }
                if state.streams.get(&p.stream) == Some(&p.id) {
                    state.streams.remove(&p.stream);
                    shared.cable.pubsub().unsubscribe(p.id);
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

    /// Unsubscribe `identifier`: its streams and timers stop, `unsubscribed`
    /// runs. No frame is sent.
    pub async fn remove_subscription(&mut self, identifier: &str) -> Result<(), CommandError> {
        let Some(index) = self.position(identifier) else {
            return Err(CommandError::UnknownSubscription(identifier.to_owned()));
        };
        let (_, mut sub) = self.subscriptions.remove(index);
        Self::unsubscribe(&self.shared, &mut sub).await;
        Ok(())
    }

    // Takes the shared parts, not `&self`: a future holding `&Connection`
    // would need `Connection: Sync`, which channels need not be.
    async fn unsubscribe(shared: &ConnShared, sub: &mut Subscription) {
        let Subscription { channel, state, .. } = sub;
        state.timers.clear();
        let mut ctx = ChannelContext {
            state,
            conn: shared,
        };
        if let Err(panic) = AssertUnwindSafe(channel.unsubscribed(&mut ctx))
            .catch_unwind()
            .await
            && shared.cable.log_allowed()
        {
            tracing::error!(message = %panic_message(&*panic), "unsubscribed panicked");
        }
        ctx.stop_all_streams();
        state.gate.close();
    }

    /// The earliest due time of any periodic timer.
    pub fn next_timer_due(&self) -> Option<Instant> {
        self.subscriptions
            .iter()
            .flat_map(|(_, s)| s.state.timers.iter().map(|t| t.due))
            .min()
    }

    /// Fire every periodic timer due at `now` (the transport calls this on
    /// its interval, or at [`next_timer_due`](Self::next_timer_due)). Returns
    /// how many fired.
    pub async fn run_periodic_timers(&mut self, now: Instant) -> usize {
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
                    && self.shared.cable.log_allowed()
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
        self.state = ConnectionState::Closed;
        for (_, mut sub) in std::mem::take(&mut self.subscriptions) {
            Self::unsubscribe(&self.shared, &mut sub).await;
        }
        if let Some(id) = self.internal.take() {
            self.shared.cable.pubsub().unsubscribe(id);
        }
        if was_open {
            let handler = self.shared.cable.handler();
            if let Err(panic) = AssertUnwindSafe(handler.disconnect(self))
                .catch_unwind()
                .await
                && self.shared.cable.log_allowed()
            {
                tracing::error!(message = %panic_message(&*panic), "disconnect panicked");
            }
        }
    }
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

impl From<PubSubError> for CommandError {
    fn from(e: PubSubError) -> Self {
        CommandError::ActionFailed {
            channel: String::new(),
            action: String::new(),
            message: e.to_string(),
        }
    }
}
