//! Reliable streams, sans-IO: positions on broadcasts for the extended
//! protocol only, history by offset and by time, `reject_history` for
//! what the history cannot cover, and live messages that arrive during a
//! replay sent once, after it, in order.

mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use keayl_cable::connection::{Connection, Identifiers, Request};
use keayl_cable::protocol::Protocol;
use keayl_cable::pubsub::{
    BoxFuture, Callback, HistoryConfig, HistoryEntry, HistoryError, HistoryFrom, InMemory, PubSub,
    PubSubError, Subscribed, SubscriptionId,
};
use keayl_cable::{Broadcaster, Cable};
use serde_json::{Value, json};

const ID: &str = r#"{"channel":"EchoChannel","stream":"s"}"#;

fn cable(pubsub: impl PubSub) -> Cable {
    Cable::builder(pubsub).channel::<EchoChannel>().build()
}

async fn open(cable: &Cable, protocol: Protocol) -> (Connection, RecordingSink) {
    let sink = RecordingSink::new();
    let request =
        Request::from(http::Request::get("/cable").body(()).unwrap()).with_protocol(protocol);
    let mut conn = cable
        .connection(sink.sink(), Identifiers::new())
        .with_request(request);
    conn.open().await;
    sink.take();
    (conn, sink)
}

/// A subscriber of `s` watching `1..=n` get published: its connection
/// (kept alive) and the stream's epoch.
async fn watch_and_publish(cable: &Cable, n: u64) -> (Connection, String) {
    let (mut watcher, sink) = open(cable, Protocol::V1ExtJson).await;
    watcher
        .handle_frame(subscribe(ID).as_bytes())
        .await
        .unwrap();
    sink.take();
    publish(cable, 1..=n).await;
    let epoch = frames(&sink)[0]["epoch"].as_str().unwrap().to_owned();
    (watcher, epoch)
}

fn frames(sink: &RecordingSink) -> Vec<Value> {
    sink.take()
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect()
}

async fn publish(cable: &Cable, n: std::ops::RangeInclusive<u64>) {
    let broadcaster = Broadcaster::new(cable.pubsub().clone());
    for i in n {
        broadcaster
            .broadcast("s", &json!({ "n": i }))
            .await
            .unwrap();
    }
}

/// The `n` of each data frame, and whether frames carry positions.
fn numbers(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f.get("message").is_some())
        .map(|f| f["message"]["n"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn broadcasts_carry_positions_for_the_extended_protocol_only() {
    let cable = cable(InMemory::new());
    let (mut ext, ext_sink) = open(&cable, Protocol::V1ExtJson).await;
    let (mut v1, v1_sink) = open(&cable, Protocol::V1Json).await;
    ext.handle_frame(subscribe(ID).as_bytes()).await.unwrap();
    v1.handle_frame(subscribe(ID).as_bytes()).await.unwrap();
    ext_sink.take();
    v1_sink.take();
    publish(&cable, 1..=2).await;
    let got = frames(&ext_sink);
    let epoch = got[0]["epoch"].as_str().unwrap().to_owned();
    assert_eq!(
        got,
        [
            json!({"identifier": ID, "message": {"n": 1}, "stream_id": "s", "epoch": epoch, "offset": 1}),
            json!({"identifier": ID, "message": {"n": 2}, "stream_id": "s", "epoch": epoch, "offset": 2}),
        ]
    );
    // Byte for byte what Rails sends.
    assert_eq!(
        v1_sink.take(),
        [data(ID, r#"{"n":1}"#), data(ID, r#"{"n":2}"#)]
    );
}

#[tokio::test]
async fn history_by_offset_and_by_time() {
    let cable = cable(InMemory::new());
    let (_watcher, epoch) = watch_and_publish(&cable, 5).await;

    // A client that saw offset 2 subscribes again with its position.
    let (mut conn, sink) = open(&cable, Protocol::V1ExtJson).await;
    let frame = json!({"command": "subscribe", "identifier": ID,
        "history": {"streams": {"s": {"offset": 2, "epoch": epoch}}}});
    conn.handle_frame(frame.to_string().as_bytes())
        .await
        .unwrap();
    let got = frames(&sink);
    assert_eq!(
        got[0],
        json!({"identifier": ID, "type": "confirm_subscription"})
    );
    assert_eq!(numbers(&got), [3, 4, 5]);
    let offsets: Vec<u64> = got[1..4]
        .iter()
        .map(|f| f["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [3, 4, 5]);
    assert_eq!(got[4], json!({"type": "confirm_history", "identifier": ID}));
    assert_eq!(got.len(), 5);

    // By time: everything since a minute ago.
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60;
    let frame = json!({"command": "history", "identifier": ID, "history": {"since": since}});
    conn.handle_frame(frame.to_string().as_bytes())
        .await
        .unwrap();
    let got = frames(&sink);
    // Offsets the client already has are not sent twice.
    assert_eq!(numbers(&got), Vec::<u64>::new());
    assert_eq!(got, [json!({"type": "confirm_history", "identifier": ID})]);

    // A fresh connection asking by time gets all five.
    let (mut fresh, fresh_sink) = open(&cable, Protocol::V1ExtJson).await;
    let frame = json!({"command": "subscribe", "identifier": ID, "history": {"since": since}});
    fresh
        .handle_frame(frame.to_string().as_bytes())
        .await
        .unwrap();
    assert_eq!(numbers(&frames(&fresh_sink)), [1, 2, 3, 4, 5]);

    // Live broadcasts go on with the next offset.
    publish(&cable, 6..=6).await;
    let got = frames(&sink);
    assert_eq!(got[0]["offset"], 6);
    assert_eq!(cable.served_history(), 3);
    assert_eq!(cable.rejected_history(), 0);
    assert_eq!(cable.pubsub().stats().history.entries, 6);
}

#[tokio::test]
async fn what_the_history_cannot_cover_is_rejected() {
    let cable = cable(InMemory::with_history(HistoryConfig {
        limit: 3,
        ..HistoryConfig::default()
    }));
    let (mut conn, sink) = open(&cable, Protocol::V1ExtJson).await;
    conn.handle_frame(subscribe(ID).as_bytes()).await.unwrap();
    sink.take();
    publish(&cable, 1..=5).await;
    let epoch = frames(&sink)[0]["epoch"].as_str().unwrap().to_owned();
    for (offset, epoch) in [(1, epoch.as_str()), (4, "another-epoch")] {
        // Offset 2 was evicted (the last 3 are kept); an unknown epoch.
        let frame = json!({"command": "history", "identifier": ID,
            "history": {"streams": {"s": {"offset": offset, "epoch": epoch}}}});
        conn.handle_frame(frame.to_string().as_bytes())
            .await
            .unwrap();
        assert_eq!(
            frames(&sink),
            [json!({"type": "reject_history", "identifier": ID})],
            "offset {offset} of {epoch}"
        );
    }
    // Offset 2 is covered: 3, 4, 5 are kept and sent as asked (a client
    // asks from the last position it has).
    let frame = json!({"command": "history", "identifier": ID,
        "history": {"streams": {"s": {"offset": 2, "epoch": epoch}}}});
    conn.handle_frame(frame.to_string().as_bytes())
        .await
        .unwrap();
    let got = frames(&sink);
    assert_eq!(numbers(&got), [3, 4, 5]);
    assert_eq!(got[3], json!({"type": "confirm_history", "identifier": ID}));
    assert_eq!(cable.rejected_history(), 2);

    // No history kept at all: rejected too.
    let none = self::cable(InMemory::without_history());
    let (mut conn, sink) = open(&none, Protocol::V1ExtJson).await;
    let frame = json!({"command": "subscribe", "identifier": ID, "history": {"since": 1}});
    conn.handle_frame(frame.to_string().as_bytes())
        .await
        .unwrap();
    assert_eq!(
        frames(&sink),
        [
            json!({"identifier": ID, "type": "confirm_subscription"}),
            json!({"type": "reject_history", "identifier": ID}),
        ]
    );
    publish(&none, 1..=1).await;
    assert_eq!(
        frames(&sink),
        [json!({"identifier": ID, "message": {"n": 1}})],
        "no position without history"
    );
}

/// An in-memory backend whose history answers only when the test says,
/// after taking a snapshot of the history at the time of the request.
struct SlowHistory {
    inner: Arc<InMemory>,
    gate: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

impl PubSub for SlowHistory {
    fn subscribe(&self, stream: &str, callback: Callback) -> Subscribed {
        self.inner.subscribe(stream, callback)
    }
    fn unsubscribe(&self, id: SubscriptionId) {
        self.inner.unsubscribe(id)
    }
    fn broadcast(
        &self,
        stream: &str,
        message: Bytes,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        self.inner.broadcast(stream, message)
    }
    fn subscriber_count(&self, stream: &str) -> BoxFuture<'static, Result<usize, PubSubError>> {
        self.inner.subscriber_count(stream)
    }
    fn history(
        &self,
        stream: &str,
        from: &HistoryFrom,
    ) -> BoxFuture<'static, Result<Vec<HistoryEntry>, HistoryError>> {
        let release = self.gate.lock().unwrap().take();
        let inner = self.inner.clone();
        let (stream, from) = (stream.to_owned(), from.clone());
        Box::pin(async move {
            if let Some(release) = release {
                let _ = release.await;
            }
            // Read after the live broadcasts: history and live overlap.
            inner.history(&stream, &from).await
        })
    }
}

#[tokio::test]
async fn live_messages_during_a_replay_come_after_it_once_and_in_order() {
    let (release, wait) = tokio::sync::oneshot::channel();
    let inner = Arc::new(InMemory::new());
    let pubsub = Arc::new(SlowHistory {
        inner: inner.clone(),
        gate: Mutex::new(Some(wait)),
    });
    let cable = cable(pubsub.clone());
    let (_watcher, epoch) = watch_and_publish(&cable, 3).await;

    let (mut conn, sink) = open(&cable, Protocol::V1ExtJson).await;
    let frame = json!({"command": "subscribe", "identifier": ID,
        "history": {"streams": {"s": {"offset": 1, "epoch": epoch}}}});
    let frame = frame.to_string();
    let subscribing = conn.handle_frame(frame.as_bytes());
    let broadcasting = async {
        // While the history is being read, 4 and 5 arrive live.
        tokio::task::yield_now().await;
        publish(&cable, 4..=5).await;
        release.send(()).unwrap();
    };
    let (result, ()) = tokio::join!(subscribing, broadcasting);
    result.unwrap();
    publish(&cable, 6..=6).await;
    let got = frames(&sink);
    assert_eq!(
        got[0],
        json!({"identifier": ID, "type": "confirm_subscription"})
    );
    // History 2..=5 (read after 4 and 5 were broadcast), the trailer, then
    // the live 4 and 5 are dropped as already sent, then 6.
    assert_eq!(numbers(&got), [2, 3, 4, 5, 6]);
    let kinds: Vec<&str> = got
        .iter()
        .map(|f| f["type"].as_str().unwrap_or("data"))
        .collect();
    assert_eq!(
        kinds,
        [
            "confirm_subscription",
            "data",
            "data",
            "data",
            "data",
            "confirm_history",
            "data"
        ]
    );
}

/// Authenticates from `?user=`, and records every `connect`.
#[derive(Clone, Default)]
struct UserHandler {
    log: Log,
}

impl keayl_cable::connection::ConnectionHandler for UserHandler {
    const IDENTIFIED_BY: &'static [&'static str] = &["current_user"];

    async fn connect(
        &self,
        conn: &mut Connection,
    ) -> Result<(), keayl_cable::connection::ConnectError> {
        let user = conn.request().query("user").unwrap_or("nobody").to_owned();
        self.log.push(format!("connect:{user}"));
        conn.set_identifier("current_user", user);
        Ok(())
    }
}

fn session_cable(log: &Log) -> Cable {
    Cable::builder(InMemory::new())
        .connection_handler(UserHandler { log: log.clone() })
        .channel::<EchoChannel>()
        .build()
}

async fn open_at(
    cable: &Cable,
    uri: &str,
    header_sid: Option<&str>,
) -> (Connection, RecordingSink, Value) {
    let sink = RecordingSink::new();
    let mut request = http::Request::get(uri);
    if let Some(sid) = header_sid {
        request = request.header("X-AnyCable-Restore-Sid", sid);
    }
    let request = Request::from(request.body(()).unwrap()).with_protocol(Protocol::V1ExtJson);
    let mut conn = cable
        .connection(sink.sink(), Identifiers::new())
        .with_request(request);
    conn.open().await;
    let welcome = frames(&sink).remove(0);
    (conn, sink, welcome)
}

#[tokio::test]
async fn a_session_is_restored_without_connect_and_gets_what_it_missed() {
    let log = Log::new();
    let cable = session_cable(&log);
    let (mut first, sink, welcome) = open_at(&cable, "/cable?user=alice", None).await;
    let sid = welcome["sid"].as_str().unwrap().to_owned();
    first.handle_frame(subscribe(ID).as_bytes()).await.unwrap();
    sink.take();
    publish(&cable, 1..=1).await;
    let epoch = frames(&sink)[0]["epoch"].as_str().unwrap().to_owned();
    // The socket is cut; broadcasts go on.
    first.disconnect().await;
    publish(&cable, 2..=3).await;

    let (mut back, sink, welcome) =
        open_at(&cable, &format!("/cable?user=mallory&sid={sid}"), None).await;
    let new_sid = welcome["sid"].as_str().unwrap().to_owned();
    assert_ne!(new_sid, sid);
    assert_eq!(
        welcome,
        json!({"type": "welcome", "sid": new_sid, "restored": true, "restored_ids": [ID]})
    );
    assert_eq!(log.entries(), ["connect:alice"], "no connect on restore");
    assert_eq!(
        back.identifier::<String>("current_user")
            .map(String::as_str),
        Some("alice"),
        "the saved identity, not the query's"
    );
    assert!(back.is_restored());
    assert_eq!(back.subscription_identifiers().collect::<Vec<_>>(), [ID]);
    // Live messages wait for the client's history request ...
    publish(&cable, 4..=4).await;
    assert!(sink.take().is_empty());
    let frame = json!({"command": "history", "identifier": ID,
        "history": {"streams": {"s": {"offset": 1, "epoch": epoch}}}});
    back.handle_frame(frame.to_string().as_bytes())
        .await
        .unwrap();
    let got = frames(&sink);
    // ... so what was missed comes first and in order (4, broadcast after
    // the restore, is in the history too, and is sent once), then the
    // trailer.
    assert_eq!(numbers(&got), [2, 3, 4]);
    assert_eq!(got.len(), 4);
    assert_eq!(got[3], json!({"type": "confirm_history", "identifier": ID}));
    assert_eq!(cable.restored_sessions(), 1);

    // A session is restored once: the old sid now gets a new session.
    let (_again, _, welcome) = open_at(&cable, &format!("/cable?user=bob&sid={sid}"), None).await;
    assert_eq!(welcome.get("restored"), None);
    assert_eq!(log.entries(), ["connect:alice", "connect:bob"]);
}

#[tokio::test]
async fn the_header_wins_and_server_ended_sessions_are_gone() {
    let log = Log::new();
    let cable = session_cable(&log);
    let (mut a, _, welcome) = open_at(&cable, "/cable?user=a", None).await;
    let sid_a = welcome["sid"].as_str().unwrap().to_owned();
    a.disconnect().await;
    let (mut b, _, welcome) = open_at(&cable, "/cable?user=b", None).await;
    let sid_b = welcome["sid"].as_str().unwrap().to_owned();
    // The server ends b's session with a disconnect message.
    b.close(keayl_cable::protocol::DisconnectReason::ServerRestart, true);
    b.disconnect().await;

    // Header a, query b: the header is used.
    let (restored, _, welcome) =
        open_at(&cable, &format!("/cable?sid={sid_b}"), Some(&sid_a)).await;
    assert_eq!(welcome["restored"], true);
    assert_eq!(welcome["restored_ids"], json!([]));
    assert_eq!(
        restored
            .identifier::<String>("current_user")
            .map(String::as_str),
        Some("a")
    );
    // b's session ended with the disconnect message.
    let (_, _, welcome) = open_at(&cable, &format!("/cable?user=c&sid={sid_b}"), None).await;
    assert_eq!(welcome.get("restored"), None);
    assert_eq!(log.entries(), ["connect:a", "connect:b", "connect:c"]);
    // A made-up sid is a new session.
    let (_, _, welcome) = open_at(&cable, "/cable?user=d&sid=nope", None).await;
    assert_eq!(welcome.get("restored"), None);
}

#[tokio::test]
async fn held_messages_of_a_restored_subscription_flow_after_the_hold() {
    let log = Log::new();
    let cable = session_cable(&log);
    let (mut first, _, welcome) = open_at(&cable, "/cable?user=a", None).await;
    let sid = welcome["sid"].as_str().unwrap().to_owned();
    first.handle_frame(subscribe(ID).as_bytes()).await.unwrap();
    first.disconnect().await;
    let (mut back, sink, welcome) = open_at(&cable, &format!("/cable?sid={sid}"), None).await;
    assert_eq!(welcome["restored_ids"], json!([ID]));
    publish(&cable, 1..=2).await;
    assert!(sink.take().is_empty());
    // A client that never asks for history: after the hold, live messages
    // flow (the transport runs timers at `next_timer_due`).
    let due = back.next_timer_due().expect("the hold ends");
    assert!(due <= tokio::time::Instant::now() + cable.config().restore_hold);
    back.run_periodic_timers(due).await;
    assert_eq!(numbers(&frames(&sink)), [1, 2]);
    publish(&cable, 3..=3).await;
    assert_eq!(numbers(&frames(&sink)), [3]);
    assert_eq!(back.next_timer_due(), None);
}

#[tokio::test]
async fn a_client_that_stops_ponging_is_disconnected_with_no_pong() {
    let timeout = std::time::Duration::from_secs(9);
    let config = keayl_cable::CableConfig {
        pong_timeout: Some(timeout),
        ..keayl_cable::CableConfig::default()
    };
    let cable = Cable::builder(InMemory::new())
        .channel::<EchoChannel>()
        .config(config)
        .build();
    let (mut conn, sink) = open(&cable, Protocol::V1ExtJson).await;
    let first = conn.next_timer_due().expect("a pong is due");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    conn.handle_frame(br#"{"command":"pong"}"#).await.unwrap();
    let second = conn.next_timer_due().expect("still due");
    assert!(second > first, "a pong moves the deadline");
    // Before the deadline nothing happens.
    conn.run_periodic_timers(second - std::time::Duration::from_secs(1))
        .await;
    assert!(sink.take().is_empty());
    conn.run_periodic_timers(second).await;
    assert_eq!(sink.close_count(), 1);
    assert_eq!(
        sink.take(),
        [r#"{"type":"disconnect","reason":"no_pong","reconnect":true}"#]
    );
    // actioncable-v1-json clients never pong: no deadline for them.
    let (v1, _) = open(&cable, Protocol::V1Json).await;
    assert_eq!(v1.next_timer_due(), None);
}
