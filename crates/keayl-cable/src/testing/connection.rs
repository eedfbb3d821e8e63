//! [`TestConnection`]: one client connection driven by a test, and the
//! record of the frames it sent.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use super::subscription::{Probe, TestSubscription, identifier_for};
use crate::cable::Cable;
use crate::channel::{Channel, DynChannel};
use crate::connection::{
    CommandError, Connection, ConnectionState, Identifiers, Request, Sink, SubscribeOutcome,
};

/// Every frame a connection sent its client, decoded, with a sequence
/// number; data frames can be marked taken.
#[derive(Debug, Default)]
pub(super) struct FrameLog {
    next: u64,
    frames: Vec<Frame>,
    closed: bool,
}

#[derive(Debug)]
struct Frame {
    seq: u64,
    raw: Bytes,
    value: Value,
    taken: bool,
}

impl Frame {
    fn is_for(&self, identifier: &str) -> bool {
        self.value.get("identifier").and_then(Value::as_str) == Some(identifier)
    }

    fn type_is(&self, ty: &str) -> bool {
        self.value.get("type").and_then(Value::as_str) == Some(ty)
    }
}

impl FrameLog {
    fn push(&mut self, frame: &Bytes) {
        let value = serde_json::from_slice(frame)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(frame).into_owned()));
        self.frames.push(Frame {
            seq: self.next,
            raw: frame.clone(),
            value,
            taken: false,
        });
        self.next += 1;
    }

    /// The messages of the data frames for `identifier` from `since` on,
    /// not taken; marking them taken when `take`.
    pub(super) fn messages(&mut self, identifier: &str, since: u64, take: bool) -> Vec<Value> {
        let mut out = Vec::new();
        for frame in self.frames.iter_mut() {
            if frame.seq < since || frame.taken || !frame.is_for(identifier) {
                continue;
            }
            // Data frames carry no `type` (presence events do).
            if frame.value.get("type").is_some() {
                continue;
            }
            let Some(message) = frame.value.get("message") else {
                continue;
            };
            out.push(message.clone());
            frame.taken |= take;
        }
        out
    }

    /// The messages of the presence frames (`{"type":"presence",…}`) for
    /// `identifier` from `since` on, not taken; marking them taken when
    /// `take`.
    pub(super) fn presence(&mut self, identifier: &str, since: u64, take: bool) -> Vec<Value> {
        let mut out = Vec::new();
        for frame in self.frames.iter_mut() {
            if frame.seq < since || frame.taken || !frame.is_for(identifier) {
                continue;
            }
            if !frame.type_is("presence") {
                continue;
            }
            if let Some(message) = frame.value.get("message") {
                out.push(message.clone());
                frame.taken |= take;
            }
        }
        out
    }

    /// Whether `identifier` got a frame of type `ty` from `since` on.
    fn got(&self, identifier: &str, since: u64, ty: &str) -> bool {
        self.frames
            .iter()
            .any(|f| f.seq >= since && f.is_for(identifier) && f.type_is(ty))
    }
}

/// What a connection and its subscription handles share.
#[derive(Debug)]
pub(super) struct Shared {
    conn: tokio::sync::Mutex<Connection>,
    frames: Arc<Mutex<FrameLog>>,
}

impl Shared {
    pub(super) fn frames(&self) -> std::sync::MutexGuard<'_, FrameLog> {
        self.frames.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection, for commands the test makes without a frame.
    pub(super) async fn conn(&self) -> tokio::sync::MutexGuard<'_, Connection> {
        self.conn.lock().await
    }

    /// Hand `command` to the connection as a client frame.
    pub(super) async fn handle_frame(&self, command: &Value) -> Result<(), CommandError> {
        let frame = command.to_string();
        self.conn.lock().await.handle_frame(frame.as_bytes()).await
    }
}

/// A client connection under test: a real [`Connection`] whose sink
/// records every frame, opened by [`TestCable::connect`](super::TestCable::connect)
/// (the connection handler's `connect` ran: Rails'
/// `ActionCable::Connection::TestCase`) or
/// [`TestCable::stub_connection`](super::TestCable::stub_connection) (it
/// did not: Rails' `stub_connection` in a channel test).
///
/// [`state`](Self::state), [`identifiers`](Self::identifiers) and
/// [`connection_identifier`](Self::connection_identifier) are read when the
/// connection is opened and after [`disconnect`](Self::disconnect) (the
/// only times the connection changes them).
#[derive(Debug)]
pub struct TestConnection {
    shared: Arc<Shared>,
    /// The app's cable: its channel registry serves subscribes.
    app: Cable,
    state: ConnectionState,
    identifiers: Identifiers,
    connection_identifier: Option<String>,
}

impl TestConnection {
    /// Create a connection on `cable` with a recording sink and open it.
    pub(super) async fn open(
        cable: &Cable,
        app: &Cable,
        identifiers: Identifiers,
        request: Request,
    ) -> Self {
        let frames = Arc::new(Mutex::new(FrameLog::default()));
        let (on_frame, on_close) = (frames.clone(), frames.clone());
        let sink = Sink::new(move |frame: Bytes| {
            on_frame
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(&frame)
        })
        .on_close(move || on_close.lock().unwrap_or_else(|e| e.into_inner()).closed = true);
        let mut conn = cable.connection(sink, identifiers).with_request(request);
        let state = conn.open().await;
        TestConnection {
            app: app.clone(),
            state,
            identifiers: conn.identifiers().clone(),
            connection_identifier: conn.connection_identifier(),
            shared: Arc::new(Shared {
                conn: tokio::sync::Mutex::new(conn),
                frames,
            }),
        }
    }

    /// The lifecycle state: [`Open`](ConnectionState::Open) once accepted,
    /// [`Rejected`](ConnectionState::Rejected) when `connect` refused,
    /// [`Closed`](ConnectionState::Closed) after [`disconnect`](Self::disconnect).
    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// Whether `connect` refused the connection (Rails'
    /// `assert_reject_connection`).
    pub fn is_rejected(&self) -> bool {
        self.state == ConnectionState::Rejected
    }

    /// Whether the connection is open (accepted, not disconnected).
    pub fn is_open(&self) -> bool {
        self.state == ConnectionState::Open
    }

    /// The connection's identifiers: those stubbed, or those `connect` set.
    pub fn identifiers(&self) -> &Identifiers {
        &self.identifiers
    }

    /// One identifier with its type (Rails' `connection.current_user`);
    /// `None` when absent or of another type.
    pub fn identifier<T: std::any::Any>(&self, name: &str) -> Option<&T> {
        self.identifiers.get(name)
    }

    /// Rails' `connection_identifier`: the declared identifiers' params,
    /// sorted, joined with `:`. Always `None` for a stubbed connection
    /// (it declares none).
    pub fn connection_identifier(&self) -> Option<&str> {
        self.connection_identifier.as_deref()
    }

    /// Every frame sent to the client so far, decoded, in order: `welcome`,
    /// confirmations, data frames (taken ones too), `disconnect`.
    pub fn frames(&self) -> Vec<Value> {
        self.shared
            .frames()
            .frames
            .iter()
            .map(|f| f.value.clone())
            .collect()
    }

    /// [`frames`](Self::frames) as the client received them: the exact
    /// text, key order and spacing included.
    pub fn raw_frames(&self) -> Vec<String> {
        self.shared
            .frames()
            .frames
            .iter()
            .map(|f| String::from_utf8_lossy(&f.raw).into_owned())
            .collect()
    }

    /// The `reason` of the last `disconnect` frame sent
    /// (`"unauthorized"` when `connect` rejected, `"server_error"` when it
    /// failed, `"remote"` after a remote disconnect).
    pub fn disconnect_reason(&self) -> Option<String> {
        self.shared
            .frames()
            .frames
            .iter()
            .rev()
            .find(|f| f.type_is("disconnect"))
            .and_then(|f| f.value.get("reason")?.as_str().map(str::to_owned))
    }

    /// Whether the server asked the transport to close the connection
    /// (after a rejection or a remote disconnect).
    pub fn is_closed(&self) -> bool {
        self.shared.frames().closed
    }

    /// Subscribe to channel `C` with `params` (any `Serialize` giving a JSON
    /// object, or `()` for none); the identifier's `channel` key is
    /// `C::NAME`, first. The channel is built by the cable's registry, as
    /// for a client's `subscribe` (so factories given to
    /// [`channel_with`](crate::cable::CableBuilder::channel_with) and their
    /// shared state are used).
    ///
    /// Returns once the subscription is confirmed or rejected: its streams
    /// are live, so a broadcast right after reaches it. A rejection is
    /// `Ok` ([`is_rejected`](TestSubscription::is_rejected)); errors are
    /// the connection's refusals, as for a client: a channel not
    /// registered ([`CommandError::UnknownChannel`]), an identifier already
    /// subscribed, a connection not open ([`CommandError::NotOpen`]),
    /// limits. Params that are not an object are
    /// [`ProtocolError::IdentifierNotObject`](crate::protocol::ProtocolError::IdentifierNotObject).
    pub async fn subscribe<C: Channel>(
        &self,
        params: impl Serialize,
    ) -> Result<TestSubscription<C>, CommandError> {
        let factory = self
            .app
            .channel_factory(C::NAME)
            .ok_or_else(|| CommandError::UnknownChannel(C::NAME.to_owned()))?;
        self.subscribe_dyn::<C>(factory(), params).await
    }

    /// [`subscribe`](Self::subscribe) with a given channel value, registered
    /// or not.
    pub async fn subscribe_with<C: Channel>(
        &self,
        channel: C,
        params: impl Serialize,
    ) -> Result<TestSubscription<C>, CommandError> {
        self.subscribe_dyn::<C>(Box::new(channel), params).await
    }

    async fn subscribe_dyn<C: Channel>(
        &self,
        channel: Box<dyn DynChannel>,
        params: impl Serialize,
    ) -> Result<TestSubscription<C>, CommandError> {
        let identifier = identifier_for::<C>(params)?;
        let max = self.app.config().max_identifier_bytes;
        if identifier.len() > max {
            return Err(CommandError::IdentifierTooLong(identifier.len(), max));
        }
        let streams = super::subscription::StreamList::default();
        let mut conn = self.shared.conn.lock().await;
        let since = self.shared.frames().next;
        let outcome = conn
            .add_subscription(&identifier, Probe::<C>::new(channel, streams.clone()))
            .await?;
        if outcome == SubscribeOutcome::Pending {
            // Deferred confirmations (set through `connection()`): settle
            // as the socket driver would, until this one is answered.
            loop {
                let answered = {
                    let frames = self.shared.frames();
                    frames.got(&identifier, since, "confirm_subscription")
                        || frames.got(&identifier, since, "reject_subscription")
                };
                if answered || !conn.has_pending() {
                    break;
                }
                conn.pending_settled().await;
                conn.confirm_settled().await;
            }
        }
        drop(conn);
        let frames = self.shared.frames();
        Ok(TestSubscription {
            confirmed: frames.got(&identifier, since, "confirm_subscription"),
            rejected: frames.got(&identifier, since, "reject_subscription"),
            identifier,
            since,
            streams,
            shared: self.shared.clone(),
            _channel: PhantomData,
        })
    }

    /// The identifiers of the connection's current subscriptions, in
    /// subscription order.
    pub async fn subscription_identifiers(&self) -> Vec<String> {
        let conn = self.shared.conn.lock().await;
        conn.subscription_identifiers().map(str::to_owned).collect()
    }

    /// Fire the timers due next, as the transport does when it wakes for
    /// the earliest one: every timer due at that instant fires once, and
    /// each is then due one interval later. Returns how many fired (0 when
    /// none is registered). Needs no clock: calling it repeatedly steps
    /// through the schedule (timers every 1 s and every 3 s fire 1 s, 1 s,
    /// then both).
    pub async fn run_next_timers(&self) -> usize {
        let mut conn = self.shared.conn.lock().await;
        match conn.next_timer_due() {
            Some(due) => conn.run_periodic_timers(due).await,
            None => 0,
        }
    }

    /// Fire the timers due now (by tokio's clock: pause and advance it with
    /// `tokio::time::pause` and `advance` for a test that controls time),
    /// each once, as the transport's timer does. Returns how many fired.
    pub async fn run_due_timers(&self) -> usize {
        let mut conn = self.shared.conn.lock().await;
        conn.run_periodic_timers(Instant::now()).await
    }

    /// When the next timer is due, if any is registered.
    pub async fn next_timer_due(&self) -> Option<Instant> {
        self.shared.conn.lock().await.next_timer_due()
    }

    /// Close the connection as the transport does when the socket closes:
    /// every subscription's `unsubscribed` runs and its streams stop, then
    /// the handler's `disconnect` (for a connection that was open).
    pub async fn disconnect(&mut self) {
        let mut conn = self.shared.conn.lock().await;
        conn.disconnect().await;
        self.state = conn.state();
        self.identifiers = conn.identifiers().clone();
    }

    /// The underlying connection, for what the harness does not wrap
    /// (raw frames with [`handle_frame`](Connection::handle_frame), say).
    /// Hold the guard only briefly: every other operation of this
    /// connection and its subscriptions waits for it.
    pub async fn connection(&self) -> tokio::sync::MutexGuard<'_, Connection> {
        self.shared.conn.lock().await
    }
}
