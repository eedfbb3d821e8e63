//! One conformance suite for every pub/sub backend, run against `InMemory` and against
//! `External` over an in-process fake broker. Backend-specific checks (broker subscription
//! sharing, acknowledgement) follow.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::FutureExt;
use keayl_cable::protocol::EncodedIdentifier;
use keayl_cable::pubsub::{Callback, Delivery, External, InMemory, PubSub, SubscriptionId};

/// A backend under test.
struct Backend<P: PubSub> {
    pubsub: Arc<P>,
    /// `subscriber_count` counts processes (a broker's view), not local callbacks.
    counts_processes: bool,
    broker: Option<Arc<FakeBroker>>,
}

impl Backend<InMemory> {
    fn in_memory() -> Self {
        Backend {
            pubsub: Arc::new(InMemory::new()),
            counts_processes: false,
            broker: None,
        }
    }
}

impl Backend<External> {
    fn external() -> Self {
        let broker = FakeBroker::auto();
        Backend {
            pubsub: Arc::new(External::from_arc(broker.clone())),
            counts_processes: true,
            broker: Some(broker),
        }
    }
}

/// Collects `(stream, message)` for every delivery.
#[derive(Clone, Default)]
struct Got(Arc<Mutex<Vec<(String, Bytes)>>>);

impl Got {
    fn callback(&self) -> Callback {
        let got = self.clone();
        Arc::new(move |d: &Delivery| {
            got.0
                .lock()
                .unwrap()
                .push((d.stream().to_owned(), d.message().clone()))
        })
    }
    fn messages(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, m)| String::from_utf8(m.to_vec()).unwrap())
            .collect()
    }
    fn raw(&self) -> Vec<(String, Bytes)> {
        self.0.lock().unwrap().clone()
    }
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

async fn sub<P: PubSub>(p: &P, stream: &str, got: &Got) -> SubscriptionId {
    let s = p.subscribe(stream, got.callback());
    s.ready.await.expect("subscription goes live");
    s.id
}

async fn publish<P: PubSub>(p: &P, stream: &str, message: impl Into<Bytes>) {
    p.broadcast(stream, message.into())
        .await
        .expect("broadcast accepted");
}

mod suite {
    use super::*;

    pub async fn subscribe_broadcast_unsubscribe<P: PubSub>(b: &Backend<P>) {
        let p = &*b.pubsub;
        let got = Got::default();
        let id = sub(p, "room:1", &got).await;
        publish(p, "room:1", r#""hi""#).await;
        publish(p, "room:2", r#""not for me""#).await;
        assert_eq!(
            got.raw(),
            vec![("room:1".to_owned(), Bytes::from_static(br#""hi""#))]
        );
        p.unsubscribe(id);
        publish(p, "room:1", r#""after""#).await;
        assert_eq!(got.len(), 1, "no delivery after unsubscribe");
        // Unknown and repeated ids are ignored.
        p.unsubscribe(id);
        p.unsubscribe(SubscriptionId(u64::MAX));
        // The stream works again for a new subscriber.
        let again = Got::default();
        sub(p, "room:1", &again).await;
        publish(p, "room:1", r#""again""#).await;
        assert_eq!(again.messages(), vec![r#""again""#]);
        assert_eq!(got.len(), 1);
    }

    pub async fn unsubscribe_right_after_subscribe_wins<P: PubSub>(b: &Backend<P>) {
        let p = &*b.pubsub;
        let got = Got::default();
        let s = p.subscribe("quick", got.callback());
        p.unsubscribe(s.id);
        let _ = s.ready.await;
        publish(p, "quick", "1").await;
        assert_eq!(got.len(), 0);
        assert_eq!(p.subscriber_count("quick").await.unwrap(), 0);
    }

    pub async fn many_streams<P: PubSub>(b: &Backend<P>) {
        let p = &*b.pubsub;
        let gots: Vec<Got> = (0..200).map(|_| Got::default()).collect();
        for (i, got) in gots.iter().enumerate() {
            sub(p, &format!("stream:{i}"), got).await;
        }
        for i in (0..200).rev() {
            publish(p, &format!("stream:{i}"), format!("{i}")).await;
        }
        for (i, got) in gots.iter().enumerate() {
            assert_eq!(
                got.raw(),
                vec![(format!("stream:{i}"), Bytes::from(format!("{i}")))],
                "stream {i} got exactly its own message"
            );
        }
    }

    pub async fn many_subscribers_per_stream<P: PubSub>(b: &Backend<P>) {
        let p = &*b.pubsub;
        let gots: Vec<Got> = (0..100).map(|_| Got::default()).collect();
        let mut ids = Vec::new();
        for got in &gots {
            ids.push(sub(p, "crowd", got).await);
        }
        publish(p, "crowd", r#"{"n":1}"#).await;
        for got in &gots {
            assert_eq!(got.messages(), vec![r#"{"n":1}"#]);
        }
        for id in ids.iter().step_by(2) {
            p.unsubscribe(*id);
        }
        publish(p, "crowd", r#"{"n":2}"#).await;
        for (i, got) in gots.iter().enumerate() {
            let expected = if i % 2 == 0 { 1 } else { 2 };
            assert_eq!(got.len(), expected, "subscriber {i}");
        }
    }

    pub async fn large_and_non_ascii_payloads<P: PubSub>(b: &Backend<P>) {
        let p = &*b.pubsub;
        let got = Got::default();
        sub(p, "big", &got).await;
        let large = format!("\"{}\"", "x".repeat(1 << 20));
        let non_ascii = "\"héllo wörld — 😀 ✓ 日本語 \u{2028}\u{2029} \\u0000\"".to_owned();
        let binaryish = Bytes::from_static(&[0xff, 0x00, 0xfe, b'"']);
        publish(p, "big", Bytes::from(large.clone())).await;
        publish(p, "big", Bytes::from(non_ascii.clone())).await;
        publish(p, "big", binaryish.clone()).await;
        let raw = got.raw();
        assert_eq!(raw.len(), 3);
        assert_eq!(raw[0].1.len(), (1 << 20) + 2);
        assert_eq!(raw[0].1, Bytes::from(large));
        assert_eq!(raw[1].1, Bytes::from(non_ascii));
        assert_eq!(
            raw[2].1, binaryish,
            "payloads are opaque bytes to the backend"
        );
    }

    pub async fn ordering_on_one_stream<P: PubSub>(b: &Backend<P>) {
        let p = &*b.pubsub;
        let first = Got::default();
        let second = Got::default();
        sub(p, "ordered", &first).await;
        sub(p, "ordered", &second).await;
        for i in 0..1000 {
            publish(p, "ordered", format!("{i}")).await;
        }
        let expected: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        assert_eq!(first.messages(), expected);
        assert_eq!(second.messages(), expected);
    }

    pub async fn subscriber_count<P: PubSub>(b: &Backend<P>) {
        let p = &*b.pubsub;
        assert_eq!(p.subscriber_count("counted").await.unwrap(), 0);
        let got = Got::default();
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(sub(p, "counted", &got).await);
        }
        let expected = if b.counts_processes { 1 } else { 3 };
        assert_eq!(p.subscriber_count("counted").await.unwrap(), expected);
        assert_eq!(p.subscriber_count("other").await.unwrap(), 0);
        p.unsubscribe(ids.pop().unwrap());
        let expected = if b.counts_processes { 1 } else { 2 };
        assert_eq!(p.subscriber_count("counted").await.unwrap(), expected);
        for id in ids {
            p.unsubscribe(id);
        }
        assert_eq!(p.subscriber_count("counted").await.unwrap(), 0);
    }

    pub async fn concurrent_broadcasting<P: PubSub>(b: &Backend<P>) {
        const TASKS: usize = 8;
        const EACH: usize = 300;
        let stable: Vec<Got> = (0..2).map(|_| Got::default()).collect();
        for got in &stable {
            sub(&*b.pubsub, "busy", got).await;
        }
        let mut handles = Vec::new();
        for t in 0..TASKS {
            let p = b.pubsub.clone();
            handles.push(tokio::spawn(async move {
                for i in 0..EACH {
                    p.broadcast("busy", Bytes::from(format!("[{t},{i}]")))
                        .await
                        .unwrap();
                    if i % 50 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
        // Subscribers come and go on the same stream and on others meanwhile.
        for c in 0..4 {
            let p = b.pubsub.clone();
            handles.push(tokio::spawn(async move {
                for i in 0..100 {
                    let got = Got::default();
                    let stream = if i % 2 == 0 {
                        "busy".to_owned()
                    } else {
                        format!("churn:{c}")
                    };
                    let id = sub(&*p, &stream, &got).await;
                    p.broadcast(&format!("churn:{c}"), Bytes::from_static(b"0"))
                        .await
                        .unwrap();
                    p.unsubscribe(id);
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        for got in &stable {
            let messages = got.messages();
            assert_eq!(
                messages.len(),
                TASKS * EACH,
                "nothing lost, nothing duplicated"
            );
            let mut next = [0usize; TASKS];
            for m in messages {
                let v: Vec<usize> = serde_json::from_str(&m).unwrap();
                assert_eq!(v[1], next[v[0]], "per-broadcaster order kept");
                next[v[0]] += 1;
            }
        }
        assert_eq!(b.pubsub.subscriber_count("churn:0").await.unwrap(), 0);
    }

    /// Runs `body` on its own thread and fails if it does not finish: a deadlock blocks a
    /// thread, which no async timeout could interrupt.
    pub fn without_deadlock(body: impl FnOnce() + Send + 'static) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            body();
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("deadlock: the body did not finish");
    }

    pub fn reentrant_callbacks<P: PubSub>(b: &Backend<P>) {
        let p = b.pubsub.clone();
        without_deadlock(move || {
            let inner = Got::default();
            let outer_calls = Arc::new(AtomicUsize::new(0));
            let own_id: Arc<OnceLock<SubscriptionId>> = Arc::new(OnceLock::new());
            let callback: Callback = {
                let p = p.clone();
                let inner = inner.clone();
                let outer_calls = outer_calls.clone();
                let own_id = own_id.clone();
                Arc::new(move |d: &Delivery| {
                    let n = outer_calls.fetch_add(1, Ordering::SeqCst);
                    // Subscribe from inside a callback...
                    let s = p.subscribe("inner", inner.callback());
                    drop(s.ready);
                    // ...broadcast to another stream from inside a callback...
                    let _ = p
                        .broadcast("inner", d.message().clone())
                        .now_or_never()
                        .expect("an in-process broadcast completes at once");
                    // ...broadcast again on this very stream (bounded recursion)...
                    if n < 2 {
                        let _ = p
                            .broadcast("outer", Bytes::from(format!("{}", n + 1)))
                            .now_or_never();
                    }
                    // ...and unsubscribe oneself.
                    if n == 2 {
                        p.unsubscribe(*own_id.get().unwrap());
                    }
                    // And read the count.
                    let _ = p.subscriber_count("outer").now_or_never();
                })
            };
            let s = p.subscribe("outer", callback);
            own_id.set(s.id).unwrap();
            blocking::block_on_ready(s.ready).unwrap();
            let _ = p
                .broadcast("outer", Bytes::from_static(b"0"))
                .now_or_never();
            assert_eq!(outer_calls.load(Ordering::SeqCst), 3);
            // Each inner broadcast reached the inner subscribers live at that moment:
            // 1 + 2 + 3.
            assert_eq!(inner.len(), 6);
            // Unsubscribed itself: no more deliveries.
            let _ = p
                .broadcast("outer", Bytes::from_static(b"9"))
                .now_or_never();
            assert_eq!(outer_calls.load(Ordering::SeqCst), 3);
        });
    }

    /// `PubSub::unsubscribe`: "After this returns the callback is not called again."
    pub async fn unsubscribe_inside_a_callback_stops_later_callbacks<P: PubSub + 'static>(
        b: &Backend<P>,
    ) {
        let p = b.pubsub.clone();
        let victim = Got::default();
        let victim_id: Arc<OnceLock<SubscriptionId>> = Arc::new(OnceLock::new());
        let killer: Callback = {
            let p = p.clone();
            let victim_id = victim_id.clone();
            Arc::new(move |_: &Delivery| {
                if let Some(id) = victim_id.get() {
                    p.unsubscribe(*id);
                }
            })
        };
        // The killer runs first (subscribed first), then the victim.
        let k = p.subscribe("fragile", killer);
        k.ready.await.unwrap();
        let v = sub(&*p, "fragile", &victim).await;
        victim_id.set(v).unwrap();
        publish(&*p, "fragile", "1").await;
        assert_eq!(
            victim.len(),
            0,
            "the victim was unsubscribed before its turn in this broadcast"
        );
    }

    pub async fn deliveries_share_encoded_frames<P: PubSub>(b: &Backend<P>) {
        let p = &*b.pubsub;
        let id = EncodedIdentifier::new(r#"{"channel":"ChatChannel"}"#);
        let frames = Arc::new(Mutex::new(Vec::new()));
        for _ in 0..2 {
            let frames = frames.clone();
            let id = id.clone();
            let s = p.subscribe(
                "shared",
                Arc::new(move |d: &Delivery| {
                    assert_eq!(d.stream(), "shared");
                    frames.lock().unwrap().push(d.frame_for(&id));
                }),
            );
            s.ready.await.unwrap();
        }
        publish(p, "shared", r#"{"a":1}"#).await;
        publish(p, "shared", "not json").await;
        let frames = frames.lock().unwrap();
        assert_eq!(frames.len(), 4);
        let a = frames[0].clone().unwrap();
        let b2 = frames[1].clone().unwrap();
        assert_eq!(
            &a[..],
            br#"{"identifier":"{\"channel\":\"ChatChannel\"}","message":{"a":1}}"#
        );
        assert_eq!(
            a.as_ptr(),
            b2.as_ptr(),
            "encoded once per broadcast and identifier"
        );
        assert!(
            frames[2].is_none() && frames[3].is_none(),
            "non-JSON has no frame"
        );
    }
}

/// `ready` futures of the in-process backends complete without a runtime after at most a
/// couple of polls; drive one to completion on a plain thread.
mod blocking {
    pub fn block_on_ready<F: std::future::Future>(fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        for _ in 0..100 {
            if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
        }
        panic!("ready did not complete");
    }
}

macro_rules! conformance {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn subscribe_broadcast_unsubscribe() {
                suite::subscribe_broadcast_unsubscribe(&$make).await;
            }
            #[tokio::test]
            async fn unsubscribe_right_after_subscribe_wins() {
                suite::unsubscribe_right_after_subscribe_wins(&$make).await;
            }
            #[tokio::test]
            async fn many_streams() {
                suite::many_streams(&$make).await;
            }
            #[tokio::test]
            async fn many_subscribers_per_stream() {
                suite::many_subscribers_per_stream(&$make).await;
            }
            #[tokio::test]
            async fn large_and_non_ascii_payloads() {
                suite::large_and_non_ascii_payloads(&$make).await;
            }
            #[tokio::test]
            async fn ordering_on_one_stream() {
                suite::ordering_on_one_stream(&$make).await;
            }
            #[tokio::test]
            async fn subscriber_count() {
                suite::subscriber_count(&$make).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_broadcasting() {
                suite::concurrent_broadcasting(&$make).await;
            }
            #[test]
            fn reentrant_callbacks() {
                suite::reentrant_callbacks(&$make);
            }
            #[tokio::test]
            async fn unsubscribe_inside_a_callback_stops_later_callbacks() {
                suite::unsubscribe_inside_a_callback_stops_later_callbacks(&$make).await;
            }
            #[tokio::test]
            async fn deliveries_share_encoded_frames() {
                suite::deliveries_share_encoded_frames(&$make).await;
            }
        }
    };
}

conformance!(in_memory, Backend::in_memory());
conformance!(external, Backend::external());

// ---------------------------------------------------------------------------------------
// External specifics

#[tokio::test]
async fn external_local_subscribers_share_one_broker_subscription() {
    let b = Backend::external();
    let broker = b.broker.clone().unwrap();
    let p = &*b.pubsub;
    let gots: Vec<Got> = (0..10).map(|_| Got::default()).collect();
    let mut ids = Vec::new();
    for got in &gots {
        ids.push(sub(p, "shared", got).await);
    }
    assert_eq!(broker.subscribe_calls(), 1);
    assert_eq!(broker.remote_subscriptions("shared"), 1);
    assert_eq!(p.remote_subscription_count(), 1);
    assert_eq!(p.local().local_count("shared"), 10);

    publish(p, "shared", "1").await;
    assert_eq!(broker.published().len(), 1, "published to the broker once");
    for got in &gots {
        assert_eq!(got.messages(), vec!["1"]);
    }

    let last = ids.pop().unwrap();
    for id in ids {
        p.unsubscribe(id);
        assert_eq!(broker.remote_subscriptions("shared"), 1);
    }
    assert_eq!(broker.unsubscribe_calls(), 0);
    p.unsubscribe(last);
    assert_eq!(
        broker.remote_subscriptions("shared"),
        0,
        "the last one leaving drops it"
    );
    assert_eq!(broker.unsubscribe_calls(), 1);
    assert_eq!(p.remote_subscription_count(), 0);

    // A new subscriber subscribes at the broker again.
    let again = Got::default();
    sub(p, "shared", &again).await;
    assert_eq!(broker.subscribe_calls(), 2);
    publish(p, "shared", "2").await;
    assert_eq!(again.messages(), vec!["2"]);
}

#[tokio::test]
async fn external_ready_waits_for_the_broker_ack_for_every_local_subscriber() {
    let broker = FakeBroker::manual();
    let p = External::from_arc(broker.clone());
    let first = Got::default();
    let second = Got::default();
    let s1 = p.subscribe("s", first.callback());
    let s2 = p.subscribe("s", second.callback());
    let mut r1 = s1.ready;
    let mut r2 = s2.ready;
    assert!((&mut r1).now_or_never().is_none());
    assert!((&mut r2).now_or_never().is_none());
    assert_eq!(broker.subscribe_calls(), 1);
    // Not live yet: the broker does not deliver.
    publish(&p, "s", "early").await;
    assert_eq!(first.len() + second.len(), 0);
    broker.ack("s");
    r1.await.unwrap();
    r2.await.unwrap();
    publish(&p, "s", "live").await;
    assert_eq!(first.messages(), vec!["live"]);
    assert_eq!(second.messages(), vec!["live"]);
}

#[tokio::test]
async fn external_broadcasts_go_through_the_broker_only() {
    let b = Backend::external();
    let broker = b.broker.clone().unwrap();
    let got = Got::default();
    sub(&*b.pubsub, "s", &got).await;
    // A message published by another process reaches local subscribers too.
    use keayl_cable::pubsub::PubSubClient;
    broker
        .publish("s", Bytes::from_static(b"\"from elsewhere\""))
        .await
        .unwrap();
    publish(&*b.pubsub, "s", "\"local\"").await;
    assert_eq!(got.messages(), vec!["\"from elsewhere\"", "\"local\""]);
    // Local dispatch alone (bypassing the broker) is what the broker callback drives.
    assert_eq!(b.pubsub.local().dispatch("s", Bytes::from_static(b"3")), 1);
    assert_eq!(broker.published().len(), 2);
}

#[tokio::test]
async fn in_memory_reports_its_registry() {
    let p = InMemory::new();
    let got = Got::default();
    let a = sub(&p, "a", &got).await;
    sub(&p, "a", &got).await;
    sub(&p, "b", &got).await;
    assert_eq!(p.stream_count(), 2);
    assert_eq!(p.subscription_count(), 3);
    assert_eq!(p.local_count("a"), 2);
    assert_eq!(p.dispatch("a", Bytes::from_static(b"1")), 2);
    p.unsubscribe(a);
    assert_eq!(p.local_count("a"), 1);
    assert_eq!(p.dispatch("none", Bytes::from_static(b"1")), 0);
}
