//! The shared pub/sub conformance suite against NATS (the machine's,
//! `KEAYL_NATS_URL`), with and without a channel prefix, plus what is
//! NATS's own: stream names as subjects, and other NATS clients joining in.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use keayl_cable::pubsub::PubSub;
use keayl_cable::pubsub::conformance::{self, Factory, Inbox, Options};

fn factory(prefix: Option<&'static str>) -> impl Factory {
    move || async move {
        let mut config = keayl_nats::config_from_url(&nats_url()).unwrap();
        config.channel_prefix = prefix.map(str::to_owned);
        Arc::new(connected(config).await) as Arc<dyn PubSub>
    }
}

// Every check of the suite, one test each.
conformance::conformance_tests! {
    factory: factory(None),
    options: Options::networked(),
    run_if: require_nats(),
}

#[tokio::test]
async fn whole_suite_with_a_channel_prefix() {
    if !require_nats() {
        return;
    }
    conformance::run_all(&factory(Some("keayl-test-prefix")), &Options::networked()).await;
}

#[tokio::test]
async fn prefixed_and_unprefixed_processes_do_not_mix() {
    if require_nats() {
        conformance::prefixes_do_not_mix(
            &factory(None),
            &factory(Some("app1")),
            &Options::networked(),
        )
        .await;
    }
}

/// A plain NATS client sees Keayl's broadcasts on the documented subject
/// (`subject_for("<prefix>:<stream>")`) and Keayl sees what it publishes
/// there, whatever the stream name holds.
#[tokio::test]
async fn other_nats_clients_use_the_documented_subjects() {
    if !require_nats() {
        return;
    }
    let keayl = factory(Some("app")).instance().await;
    let plain = async_nats::connect(nats_url()).await.unwrap();
    for label in ["room 1.*>", "ünï", ""] {
        let stream = format!("{}{label}", conformance::unique_stream("subject"));
        let subject = keayl_nats::subject_for(&format!("app:{stream}"));

        let got = Inbox::new();
        let id = conformance::subscribe_live(&*keayl, &stream, &got, Duration::from_secs(5)).await;
        plain
            .publish(subject.clone(), r#"{"from":"nats"}"#.into())
            .await
            .unwrap();
        plain.flush().await.unwrap();
        assert!(got.wait_for(1, Duration::from_secs(5)).await, "{subject}");
        assert_eq!(got.streams(), std::slice::from_ref(&stream));

        let mut sub = plain.subscribe(subject.clone()).await.unwrap();
        // A round trip (a request nobody answers) puts the SUB in place.
        let _ = plain.request(plain.new_inbox(), "".into()).await;
        keayl
            .broadcast(&stream, r#"{"from":"keayl"}"#.into())
            .await
            .unwrap();
        let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("the plain client got nothing")
            .unwrap();
        assert_eq!(msg.subject.as_str(), subject);
        assert_eq!(&msg.payload[..], br#"{"from":"keayl"}"#);
        keayl.unsubscribe(id);
    }
}

/// A broadcast over the server's `max_payload` (1 MiB by default) is
/// refused with an error, and the backend keeps working.
#[tokio::test]
async fn oversize_broadcasts_fail_loudly() {
    if !require_nats() {
        return;
    }
    let keayl = factory(None).instance().await;
    let stream = conformance::unique_stream("oversize");
    let got = Inbox::new();
    let id = conformance::subscribe_live(&*keayl, &stream, &got, Duration::from_secs(5)).await;
    let big = conformance::json_text_of_len(2 * 1024 * 1024);
    let err = keayl.broadcast(&stream, big.into()).await.unwrap_err();
    assert!(err.to_string().contains("exceeded"), "{err}");
    keayl.broadcast(&stream, "\"small\"".into()).await.unwrap();
    assert!(got.wait_for(1, Duration::from_secs(5)).await);
    assert_eq!(got.texts(), ["\"small\""]);
    keayl.unsubscribe(id);
}
