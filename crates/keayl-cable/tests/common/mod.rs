//! Shared helpers for the black-box tests of `keayl-cable`: a recording sink, an
//! ordered event log, frame builders, a few reusable channels (the echo probe in
//! `echo.rs`, which `keayl-axum`'s tests share too), and a fake networked pub/sub
//! broker with controllable (asynchronous) acknowledgement.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use keayl_cable::channel::{Channel, ChannelContext, ChannelError, Data};
use keayl_cable::connection::Sink;
use keayl_cable::pubsub::{
    BoxFuture, PubSubClient, PubSubError, RemoteCallback, Subscribed, SubscriptionId,
};
use serde_json::Value;
use tokio::sync::oneshot;

// ---------------------------------------------------------------------------------------
// Ordered log shared between channels, handlers and sinks.

/// An ordered, shareable list of strings (callback order, frames, closes).
#[derive(Clone, Default, Debug)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn push(&self, entry: impl Into<String>) {
        self.0.lock().unwrap().push(entry.into());
    }
    pub fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
    pub fn count(&self, entry: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| *e == entry)
            .count()
    }
}

// ---------------------------------------------------------------------------------------
// Recording sink.

/// What the connection did to its client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A frame, as the exact text sent.
    Frame(String),
    /// `Sink::close` was called.
    Close,
}

/// Records every frame (as a `String`) and every `close()` call, in order.
/// Optionally mirrors them into a shared [`Log`] as `frame:<text>` / `close`.
#[derive(Clone, Default)]
pub struct RecordingSink {
    events: Arc<Mutex<Vec<Event>>>,
    mirror: Option<Log>,
}

impl RecordingSink {
    pub fn new() -> Self {
        Self::default()
    }

    /// Also append `frame:<text>` and `close` to `log`.
    pub fn mirrored(log: &Log) -> Self {
        RecordingSink {
            events: Arc::default(),
            mirror: Some(log.clone()),
        }
    }

    /// The transport sink to hand to a connection.
    pub fn sink(&self) -> Sink {
        let events = self.events.clone();
        let mirror = self.mirror.clone();
        let events_close = self.events.clone();
        let mirror_close = self.mirror.clone();
        Sink::new(move |frame: Bytes| {
            let text = String::from_utf8(frame.to_vec()).expect("frames are UTF-8 JSON text");
            if let Some(log) = &mirror {
                log.push(format!("frame:{text}"));
            }
            events.lock().unwrap().push(Event::Frame(text));
        })
        .on_close(move || {
            if let Some(log) = &mirror_close {
                log.push("close");
            }
            events_close.lock().unwrap().push(Event::Close);
        })
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// Every frame so far (closes left out).
    pub fn frames(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Frame(f) => Some(f.clone()),
                Event::Close => None,
            })
            .collect()
    }

    /// Frames so far, clearing the record (closes are dropped too).
    pub fn take(&self) -> Vec<String> {
        let events = std::mem::take(&mut *self.events.lock().unwrap());
        events
            .into_iter()
            .filter_map(|e| match e {
                Event::Frame(f) => Some(f),
                Event::Close => None,
            })
            .collect()
    }

    /// How many times `close()` was called.
    pub fn close_count(&self) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| **e == Event::Close)
            .count()
    }
}

// ---------------------------------------------------------------------------------------
// Frames.

/// `s` as a JSON string literal (quotes included). serde_json escapes exactly what
/// ActiveSupport does for the identifiers used in these tests (no `<`, `>`, `&`).
pub fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Client `subscribe` command for `identifier`.
pub fn subscribe(identifier: &str) -> String {
    format!(
        r#"{{"command":"subscribe","identifier":{}}}"#,
        json_str(identifier)
    )
}

/// Client `unsubscribe` command for `identifier`.
pub fn unsubscribe(identifier: &str) -> String {
    format!(
        r#"{{"command":"unsubscribe","identifier":{}}}"#,
        json_str(identifier)
    )
}

/// Client `message` command: `data` is JSON-encoded into a string.
pub fn message(identifier: &str, data: &Value) -> String {
    format!(
        r#"{{"command":"message","identifier":{},"data":{}}}"#,
        json_str(identifier),
        json_str(&data.to_string())
    )
}

/// Server `confirm_subscription` for `identifier`.
pub fn confirm(identifier: &str) -> String {
    format!(
        r#"{{"identifier":{},"type":"confirm_subscription"}}"#,
        json_str(identifier)
    )
}

/// Server `reject_subscription` for `identifier`.
pub fn reject(identifier: &str) -> String {
    format!(
        r#"{{"identifier":{},"type":"reject_subscription"}}"#,
        json_str(identifier)
    )
}

/// Server data frame: `message_json` spliced verbatim.
pub fn data(identifier: &str, message_json: &str) -> String {
    format!(
        r#"{{"identifier":{},"message":{}}}"#,
        json_str(identifier),
        message_json
    )
}

pub const WELCOME: &str = r#"{"type":"welcome"}"#;

// ---------------------------------------------------------------------------------------
// Reusable channels.

mod echo;
pub use echo::*;

/// The echo probe's command and expected answer.
pub fn echo_probe(text: &str) -> (String, String) {
    let d = serde_json::json!({"action": "echo", "text": text});
    (message(ECHO_ID, &d), data(ECHO_ID, &d.to_string()))
}

/// `room:<room>` where `<room>` is the `room` param (string as is, anything else as JSON).
pub fn room_stream(ctx: &ChannelContext<'_>) -> String {
    match ctx.params().get("room") {
        Some(Value::String(s)) => format!("room:{s}"),
        Some(other) => format!("room:{other}"),
        None => "room:lobby".to_owned(),
    }
}

/// A chat channel streaming `room:<room>`, logging its callbacks into `log`.
#[derive(Default, Clone)]
pub struct ChatChannel {
    pub log: Log,
}

/// What [`ChatChannel`] clients may call.
#[derive(serde::Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ChatAction {
    Speak {
        #[serde(default)]
        message: Value,
    },
    Echo {
        #[serde(flatten)]
        rest: Data,
    },
    Follow {
        stream: String,
    },
    Unfollow {
        stream: String,
    },
    StopAll,
    Streams,
    Fail,
    Explode,
    Whoami,
}

impl ChatAction {
    pub fn name(&self) -> &'static str {
        match self {
            ChatAction::Speak { .. } => "speak",
            ChatAction::Echo { .. } => "echo",
            ChatAction::Follow { .. } => "follow",
            ChatAction::Unfollow { .. } => "unfollow",
            ChatAction::StopAll => "stop_all",
            ChatAction::Streams => "streams",
            ChatAction::Fail => "fail",
            ChatAction::Explode => "explode",
            ChatAction::Whoami => "whoami",
        }
    }
}

impl Channel for ChatChannel {
    const NAME: &'static str = "ChatChannel";
    type Action = ChatAction;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        let stream = room_stream(ctx);
        ctx.stream_from(stream);
        self.log.push(format!("subscribed:{}", ctx.identifier()));
        Ok(())
    }

    async fn unsubscribed(&mut self, ctx: &mut ChannelContext<'_>) {
        let mut streams: Vec<&str> = ctx.streams().collect();
        streams.sort();
        self.log.push(format!(
            "unsubscribed:{} streams={}",
            ctx.identifier(),
            streams.join(",")
        ));
    }

    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        action: ChatAction,
    ) -> Result<(), ChannelError> {
        self.log.push(format!("perform:{}", action.name()));
        match action {
            ChatAction::Speak { message } => {
                let stream = room_stream(ctx);
                ctx.broadcast_to(&stream, &message).await?;
            }
            ChatAction::Echo { rest } => ctx.transmit(with_action("echo", rest)),
            ChatAction::Follow { stream } => {
                ctx.stream_from(stream);
            }
            ChatAction::Unfollow { stream } => ctx.stop_stream_from(&stream),
            ChatAction::StopAll => ctx.stop_all_streams(),
            ChatAction::Streams => {
                let mut streams: Vec<String> = ctx.streams().map(str::to_owned).collect();
                streams.sort();
                ctx.transmit(streams);
            }
            ChatAction::Fail => return Err(ChannelError::msg("nope")),
            ChatAction::Explode => panic!("kaboom"),
            ChatAction::Whoami => {
                let user = ctx.identifiers().param("current_user");
                ctx.transmit(serde_json::json!({
                    "user": user,
                    "channel": ctx.channel_class(),
                    "params": ctx.params(),
                }));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Futures.

/// Completes on its second poll: an acknowledgement that is asynchronous but needs no
/// runtime or timer.
pub struct YieldOnce(bool);

impl YieldOnce {
    pub fn new() -> Self {
        YieldOnce(false)
    }
}

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

// ---------------------------------------------------------------------------------------
// Fake broker.

struct RemoteSub {
    stream: String,
    callback: RemoteCallback,
    live: bool,
}

struct PendingAck {
    id: u64,
    stream: String,
    tx: oneshot::Sender<Result<(), PubSubError>>,
}

#[derive(Default)]
struct BrokerState {
    next_id: u64,
    subs: BTreeMap<u64, RemoteSub>,
    pending: Vec<PendingAck>,
    subscribe_calls: usize,
    unsubscribe_calls: usize,
    published: Vec<(String, Bytes)>,
}

/// An in-process stand-in for a Redis-shaped broker, as a [`PubSubClient`].
///
/// * `subscribe` registers the intent and returns at once. In *auto-ack* mode the broker
///   subscription is live immediately and `ready` completes on its next poll. In *manual*
///   mode it is **not live** (publishes are not delivered to it, as with Redis before the
///   `SUBSCRIBE` reply) and `ready` waits until the test calls [`ack`](Self::ack) /
///   [`ack_all`](Self::ack_all) (or [`fail`](Self::fail)).
/// * `publish` delivers synchronously, in order, to every live subscription of the stream,
///   with no lock held.
/// * Counters let tests check how many broker subscriptions a process holds.
pub struct FakeBroker {
    state: Mutex<BrokerState>,
    auto_ack: AtomicBool,
}

impl FakeBroker {
    /// A broker that acknowledges every subscription by itself.
    pub fn auto() -> Arc<Self> {
        Arc::new(FakeBroker {
            state: Mutex::default(),
            auto_ack: AtomicBool::new(true),
        })
    }

    /// A broker whose acknowledgements the test releases.
    pub fn manual() -> Arc<Self> {
        Arc::new(FakeBroker {
            state: Mutex::default(),
            auto_ack: AtomicBool::new(false),
        })
    }

    /// Switch between auto and manual acknowledgement.
    pub fn set_auto_ack(&self, auto: bool) {
        self.auto_ack.store(auto, Ordering::SeqCst);
    }

    /// Acknowledge the pending subscriptions of `stream`: they go live, then their
    /// `ready` futures complete. Returns how many were acknowledged.
    pub fn ack(&self, stream: &str) -> usize {
        self.resolve(Some(stream), Ok(()))
    }

    /// Acknowledge every pending subscription.
    pub fn ack_all(&self) -> usize {
        self.resolve(None, Ok(()))
    }

    /// Refuse the pending subscriptions of `stream` with `error`.
    pub fn fail(&self, stream: &str, error: PubSubError) -> usize {
        self.resolve(Some(stream), Err(error))
    }

    fn resolve(&self, stream: Option<&str>, result: Result<(), PubSubError>) -> usize {
        let acks: Vec<PendingAck> = {
            let mut st = self.state.lock().unwrap();
            let (matching, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut st.pending)
                .into_iter()
                .partition(|p| stream.is_none_or(|s| p.stream == s));
            st.pending = rest;
            if result.is_ok() {
                for p in &matching {
                    if let Some(sub) = st.subs.get_mut(&p.id) {
                        sub.live = true;
                    }
                }
            }
            matching
        };
        let n = acks.len();
        for p in acks {
            let _ = p.tx.send(result.clone());
        }
        n
    }

    /// Subscriptions waiting for an acknowledgement.
    pub fn pending_acks(&self) -> usize {
        self.state.lock().unwrap().pending.len()
    }

    /// Broker subscriptions (live or pending) on `stream`.
    pub fn remote_subscriptions(&self, stream: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .subs
            .values()
            .filter(|s| s.stream == stream)
            .count()
    }

    /// Broker subscriptions on every stream.
    pub fn total_subscriptions(&self) -> usize {
        self.state.lock().unwrap().subs.len()
    }

    /// How many times `subscribe` was called.
    pub fn subscribe_calls(&self) -> usize {
        self.state.lock().unwrap().subscribe_calls
    }

    /// How many times `unsubscribe` was called.
    pub fn unsubscribe_calls(&self) -> usize {
        self.state.lock().unwrap().unsubscribe_calls
    }

    /// Every publish so far.
    pub fn published(&self) -> Vec<(String, Bytes)> {
        self.state.lock().unwrap().published.clone()
    }
}

impl PubSubClient for FakeBroker {
    fn subscribe(&self, stream: &str, callback: RemoteCallback) -> Subscribed {
        let auto = self.auto_ack.load(Ordering::SeqCst);
        let mut st = self.state.lock().unwrap();
        st.next_id += 1;
        st.subscribe_calls += 1;
        let id = st.next_id;
        st.subs.insert(
            id,
            RemoteSub {
                stream: stream.to_owned(),
                callback,
                live: auto,
            },
        );
        let ready: BoxFuture<'static, Result<(), PubSubError>> = if auto {
            Box::pin(async {
                YieldOnce::new().await;
                Ok(())
            })
        } else {
            let (tx, rx) = oneshot::channel();
            st.pending.push(PendingAck {
                id,
                stream: stream.to_owned(),
                tx,
            });
            Box::pin(async move { rx.await.unwrap_or(Err(PubSubError::Closed)) })
        };
        Subscribed {
            id: SubscriptionId(id),
            ready,
        }
    }

    fn unsubscribe(&self, id: SubscriptionId) {
        let mut st = self.state.lock().unwrap();
        st.unsubscribe_calls += 1;
        st.subs.remove(&id.0);
        // Dropping the sender completes `ready` with `Closed`.
        st.pending.retain(|p| p.id != id.0);
    }

    fn publish(&self, stream: &str, message: Bytes) -> BoxFuture<'static, Result<(), PubSubError>> {
        let callbacks: Vec<RemoteCallback> = {
            let mut st = self.state.lock().unwrap();
            st.published.push((stream.to_owned(), message.clone()));
            st.subs
                .values()
                .filter(|s| s.live && s.stream == stream)
                .map(|s| s.callback.clone())
                .collect()
        };
        for callback in callbacks {
            callback(stream, message.clone(), None);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn subscriber_count(&self, stream: &str) -> BoxFuture<'static, Result<usize, PubSubError>> {
        let n = self
            .state
            .lock()
            .unwrap()
            .subs
            .values()
            .filter(|s| s.live && s.stream == stream)
            .count();
        Box::pin(std::future::ready(Ok(n)))
    }
}

/// Identifies every connection as `current_user` = `"alice"`.
pub struct Named;

impl keayl_cable::connection::ConnectionHandler for Named {
    const IDENTIFIED_BY: &'static [&'static str] = &["current_user"];
    async fn connect(
        &self,
        conn: &mut keayl_cable::connection::Connection,
    ) -> Result<(), keayl_cable::connection::ConnectError> {
        conn.set_identifier("current_user", "alice".to_string());
        Ok(())
    }
}
