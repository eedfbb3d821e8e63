//! The shared pub/sub conformance suite against Redis (the machine's,
//! `KEAYL_REDIS_URL`), with and without Rails' `channel_prefix`, history,
//! sessions and presence kept in Redis (the default configuration), plus
//! Rails wire compatibility: a plain Redis client (standing in for a Rails
//! process) sees Keayl's broadcasts on Rails' channel names, and Keayl sees
//! its publishes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use keayl_cable::pubsub::conformance::{self, Factory, Inbox, Options};
use keayl_cable::pubsub::{HistoryConfig, PubSub};

fn factory(prefix: Option<&'static str>) -> impl Factory {
    factory_with(prefix, HistoryConfig::default())
}

fn factory_with(prefix: Option<&'static str>, history: HistoryConfig) -> impl Factory {
    move || {
        let history = history.clone();
        async move {
            let mut config = keayl_redis::config_from_url(&redis_url()).unwrap();
            config.channel_prefix = prefix.map(str::to_owned);
            config.history = history;
            Arc::new(connected(config).await) as Arc<dyn PubSub>
        }
    }
}

/// History (the defaults), sessions and presence are kept in Redis.
fn options() -> Options {
    Options {
        history: true,
        sessions: true,
        presence: true,
        ..Options::networked()
    }
}

// Every check of the suite, one test each.
conformance::conformance_tests! {
    factory: factory(None),
    options: options(),
    run_if: require_service("Redis", &host_port(&redis_url())),
}

/// With history off, the whole suite again: plain `PUBLISH`es, no
/// positions, `Unsupported` history (sessions and presence are still kept).
#[tokio::test]
async fn whole_suite_without_history() {
    if !require_service("Redis", &host_port(&redis_url())) {
        return;
    }
    let options = Options {
        history: false,
        ..options()
    };
    // A prefix of its own: presence reaps cover a whole prefix, and the
    // unprefixed checks run beside this one.
    conformance::run_all(
        &factory_with(Some("keayl-test-no-history"), HistoryConfig::off()),
        &options,
    )
    .await;
}

#[tokio::test]
async fn whole_suite_with_a_channel_prefix() {
    if !require_service("Redis", &host_port(&redis_url())) {
        return;
    }
    conformance::run_all(&factory(Some("keayl-test-prefix")), &options()).await;
}

#[tokio::test]
async fn prefixed_and_unprefixed_processes_do_not_mix() {
    if require_service("Redis", &host_port(&redis_url())) {
        conformance::prefixes_do_not_mix(&factory(None), &factory(Some("app1")), &options()).await;
    }
}

/// A plain Redis client plays the Rails process: it subscribes to
/// `"<prefix>:<stream>"` (Rails' `ChannelPrefix`) and publishes there.
/// Rails' raw broadcasts reach Keayl (without a position) whether or not
/// the stream keeps history; Keayl's broadcasts reach Rails verbatim when
/// the stream keeps none, and as a positioned frame when it does.
#[tokio::test]
async fn rails_channel_names_both_ways() {
    if !require_service("Redis", &host_port(&redis_url())) {
        return;
    }
    for prefix in [None, Some("rails_app_production")] {
        for history in [HistoryConfig::off(), HistoryConfig::default()] {
            let keeps_history = history.is_on();
            let keayl = factory_with(prefix, history).instance().await;
            let stream = conformance::unique_stream("rails");
            // Rails: `[channel_prefix, broadcasting].compact.join(":")`.
            let channel = match prefix {
                Some(p) => format!("{p}:{stream}"),
                None => stream.clone(),
            };

            // Rails -> Keayl.
            let got = Inbox::new();
            let id =
                conformance::subscribe_live(&*keayl, &stream, &got, Duration::from_secs(5)).await;
            let client = redis::Client::open(redis_url()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let receivers: i64 = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(r#"{"from":"rails"}"#)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert_eq!(receivers, 1, "Keayl is not subscribed to {channel:?}");
            assert!(got.wait_for(1, Duration::from_secs(5)).await);
            assert_eq!(got.texts(), [r#"{"from":"rails"}"#]);
            assert_eq!(got.positions(), [None], "a raw message has no position");
            assert_eq!(
                got.streams(),
                std::slice::from_ref(&stream),
                "delivered under the unprefixed stream name"
            );

            // Keayl -> Rails.
            let mut rails = client.get_async_pubsub().await.unwrap();
            rails.subscribe(&channel).await.unwrap();
            let count = keayl.subscriber_count(&stream).await.unwrap();
            assert_eq!(
                count, 2,
                "PUBSUB NUMSUB counts the Keayl and the Rails connection"
            );
            keayl
                .broadcast(&stream, r#"{"from":"keayl"}"#.into())
                .await
                .unwrap();
            let msg = tokio::time::timeout(Duration::from_secs(5), rails.on_message().next())
                .await
                .expect("the Rails side got nothing")
                .unwrap();
            assert_eq!(msg.get_channel_name(), channel);
            let payload = msg.get_payload_bytes();
            if keeps_history {
                assert!(
                    payload.starts_with(b"\x1ekeayl1 1 ")
                        && payload.ends_with(b"\x1e{\"from\":\"keayl\"}"),
                    "a positioned frame: {:?}",
                    String::from_utf8_lossy(payload)
                );
            } else {
                assert_eq!(payload, br#"{"from":"keayl"}"#);
            }
            // Keayl's own subscriber gets the message itself.
            assert!(got.wait_for(2, Duration::from_secs(5)).await);
            assert_eq!(got.texts()[1], r#"{"from":"keayl"}"#);
            assert_eq!(got.positions()[1].is_some(), keeps_history);
            keayl.unsubscribe(id);
        }
    }
}

/// Remote disconnects travel on `action_cable/<connection identifier>`,
/// prefixed like every channel: what a Rails app's
/// `ActionCable.server.remote_connections.where(current_user: …).disconnect`
/// publishes reaches Keayl's internal channel.
#[tokio::test]
async fn remote_disconnect_channel_is_rails_compatible() {
    if !require_service("Redis", &host_port(&redis_url())) {
        return;
    }
    let prefix = Some("myapp");
    let keayl = factory(prefix).instance().await;
    let user = conformance::unique_stream("user");
    let stream = keayl_cable::naming::internal_stream(&user);
    let got = Inbox::new();
    let id = conformance::subscribe_live(&*keayl, &stream, &got, Duration::from_secs(5)).await;
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("myapp:action_cable/{user}"))
        .arg(r#"{"type":"disconnect","reconnect":true}"#)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(got.wait_for(1, Duration::from_secs(5)).await);
    keayl.unsubscribe(id);
}
