//! The shared pub/sub conformance suite (`keayl_cable::pubsub::conformance`) against the
//! in-process backends: `InMemory` (one process, so every instance the suite asks for is the
//! same backend) and `External` over the in-process `FakeBroker` (every instance is a process of
//! its own sharing one broker). What only these backends do (broker subscription sharing,
//! acknowledgement, the registry) follows.
//!
//! The suite's source is compiled in here directly, at the path its macro expects
//! (`crate::pubsub::conformance`), so it runs with or without the `conformance` feature
//! (`cargo test -p keayl-cable`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::FutureExt;
use keayl_cable::pubsub::{External, InMemory, PubSub};

/// The `keayl_cable` paths the suite's source names: `super::…` (its parent module) and
/// `crate::protocol`; the source itself is `src/pubsub/conformance.rs`.
#[path = "../src/pubsub"]
mod pubsub {
    pub use keayl_cable::pubsub::*;

    #[path = "conformance.rs"]
    #[allow(dead_code)]
    pub mod conformance;
}
use keayl_cable::protocol;

use pubsub::conformance::{self, Factory, Inbox, Options};

/// The in-memory backend: every instance is the same one.
fn in_memory() -> impl Factory {
    let shared: Arc<dyn PubSub> = Arc::new(InMemory::new());
    move || {
        let p = shared.clone();
        async move { p }
    }
}

/// `External` over one auto-acknowledging `FakeBroker`: every instance is a process of its own.
fn external() -> impl Factory {
    let broker = FakeBroker::auto();
    move || {
        let p: Arc<dyn PubSub> = Arc::new(External::from_arc(broker.clone()));
        async move { p }
    }
}

mod in_memory {
    use super::*;

    conformance::conformance_tests! {
        factory: in_memory(),
        options: Options::in_process(),
    }
}

mod external {
    use super::*;

    conformance::conformance_tests! {
        factory: external(),
        // The broker counts processes, and delivers in line.
        options: Options {
            synchronous: true,
            ..Options::networked()
        },
    }
}

// ---------------------------------------------------------------------------------------
// External and InMemory specifics

const T: Duration = Duration::from_secs(5);

async fn publish(p: &dyn PubSub, stream: &str, message: &'static str) {
    p.broadcast(stream, Bytes::from_static(message.as_bytes()))
        .await
        .expect("broadcast accepted");
}

#[tokio::test]
async fn external_local_subscribers_share_one_broker_subscription() {
    let broker = FakeBroker::auto();
    let p = External::from_arc(broker.clone());
    let inboxes: Vec<Inbox> = (0..10).map(|_| Inbox::new()).collect();
    let mut ids = Vec::new();
    for inbox in &inboxes {
        ids.push(conformance::subscribe_live(&p, "shared", inbox, T).await);
    }
    assert_eq!(broker.subscribe_calls(), 1);
    assert_eq!(broker.remote_subscriptions("shared"), 1);
    assert_eq!(p.remote_subscription_count(), 1);
    assert_eq!(p.local().local_count("shared"), 10);

    publish(&p, "shared", "1").await;
    assert_eq!(broker.published().len(), 1, "published to the broker once");
    for inbox in &inboxes {
        assert_eq!(inbox.texts(), ["1"]);
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
    let again = Inbox::new();
    conformance::subscribe_live(&p, "shared", &again, T).await;
    assert_eq!(broker.subscribe_calls(), 2);
    publish(&p, "shared", "2").await;
    assert_eq!(again.texts(), ["2"]);
}

#[tokio::test]
async fn external_ready_waits_for_the_broker_ack_for_every_local_subscriber() {
    let broker = FakeBroker::manual();
    let p = External::from_arc(broker.clone());
    let first = Inbox::new();
    let second = Inbox::new();
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
    assert_eq!(first.texts(), ["live"]);
    assert_eq!(second.texts(), ["live"]);
}

#[tokio::test]
async fn external_broadcasts_go_through_the_broker_only() {
    let broker = FakeBroker::auto();
    let p = External::from_arc(broker.clone());
    let got = Inbox::new();
    conformance::subscribe_live(&p, "s", &got, T).await;
    // A message published by another process reaches local subscribers too.
    use keayl_cable::pubsub::PubSubClient;
    broker
        .publish("s", Bytes::from_static(b"\"from elsewhere\""))
        .await
        .unwrap();
    publish(&p, "s", "\"local\"").await;
    assert_eq!(got.texts(), ["\"from elsewhere\"", "\"local\""]);
    // Local dispatch alone (bypassing the broker) is what the broker callback drives.
    assert_eq!(p.local().dispatch("s", Bytes::from_static(b"3")), 1);
    assert_eq!(broker.published().len(), 2);
}

#[tokio::test]
async fn in_memory_reports_its_registry() {
    let p = InMemory::new();
    let got = Inbox::new();
    let a = conformance::subscribe_live(&p, "a", &got, T).await;
    conformance::subscribe_live(&p, "a", &got, T).await;
    conformance::subscribe_live(&p, "b", &got, T).await;
    assert_eq!(p.stream_count(), 2);
    assert_eq!(p.subscription_count(), 3);
    assert_eq!(p.local_count("a"), 2);
    assert_eq!(p.dispatch("a", Bytes::from_static(b"1")), 2);
    p.unsubscribe(a);
    assert_eq!(p.local_count("a"), 1);
    assert_eq!(p.dispatch("none", Bytes::from_static(b"1")), 0);
}
