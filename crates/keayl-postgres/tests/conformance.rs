//! The shared pub/sub conformance suite against PostgreSQL (the machine's,
//! `KEAYL_POSTGRES_URL`), with and without Rails' `channel_prefix`, history,
//! sessions and presence kept in PostgreSQL (the default `HistoryConfig`), plus
//! Rails wire compatibility: a plain connection (standing in for a Rails
//! process) hears Keayl's broadcasts on Rails' channel names (SHA-1 over 63
//! bytes) — verbatim on streams without history, with the position marker
//! on streams with — and Keayl hears its `NOTIFY`s; large payloads use the
//! spill table.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use keayl_cable::pubsub::conformance::{self, Factory, Inbox, Options};
use keayl_cable::pubsub::{HistoryConfig, PubSub};
use keayl_postgres::{POSITION_MARKER, PostgresConfig, SPILL_MARKER, channel_name};
use tokio_postgres::AsyncMessage;

const T: Duration = Duration::from_secs(5);

fn factory(prefix: Option<&'static str>) -> impl Factory {
    factory_with(prefix, HistoryConfig::default())
}

fn factory_with(prefix: Option<&'static str>, history: HistoryConfig) -> impl Factory {
    move || {
        let history = history.clone();
        async move {
            let mut config = PostgresConfig::from_url(&pg_url()).unwrap();
            config.channel_prefix = prefix.map(str::to_owned);
            config.history = history;
            Arc::new(connected(config).await) as Arc<dyn PubSub>
        }
    }
}

/// A networked backend keeping history, sessions and presence, shared by
/// every instance.
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
    run_if: require_pg(),
}

#[tokio::test]
async fn whole_suite_with_a_channel_prefix() {
    if !require_pg() {
        return;
    }
    conformance::run_all(&factory(Some("keayl-test-prefix")), &options()).await;
}

#[tokio::test]
async fn whole_suite_without_history() {
    if !require_pg() {
        return;
    }
    let options = Options {
        sessions: true,
        presence: true,
        ..Options::networked()
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
async fn prefixed_and_unprefixed_processes_do_not_mix() {
    if require_pg() {
        conformance::prefixes_do_not_mix(&factory(None), &factory(Some("app1")), &options()).await;
    }
}

/// A LISTENing connection that yields notifications as `(channel, payload)`.
async fn rails_listener(channel: &str) -> tokio::sync::mpsc::UnboundedReceiver<(String, String)> {
    let (client, mut connection) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(n) = m
                && tx
                    .send((n.channel().to_owned(), n.payload().to_owned()))
                    .is_err()
            {
                break;
            }
        }
    });
    let sql = format!("LISTEN \"{}\"", channel.replace('"', "\"\""));
    tokio::spawn(async move {
        client.batch_execute(&sql).await.unwrap();
        let _ = ready_tx.send(());
        // Keep the client (and so the connection) alive while the test runs.
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    ready_rx.await.unwrap();
    rx
}

#[tokio::test]
async fn rails_channel_names_both_ways() {
    if !require_pg() {
        return;
    }
    let base = conformance::unique_stream("rails");
    let long = format!("{base}:{}", "x".repeat(80)); // hashed
    let cases = [
        (None, base.clone()),
        (Some("app_production"), base.clone()),
        (None, long.clone()),
        (Some("p"), long),
    ];
    for (prefix, stream) in cases {
        // Rails hears Keayl's broadcasts verbatim on streams without
        // history (see `rails_hears_the_position_marker_on_streams_with_history`).
        let keayl = factory_with(prefix, HistoryConfig::off()).instance().await;
        let channel = channel_name(prefix, &stream);
        assert!(channel.len() <= 63);

        // Keayl -> Rails.
        let mut rails = rails_listener(&channel).await;
        keayl
            .broadcast(&stream, r#"{"from":"keayl"}"#.into())
            .await
            .unwrap();
        let (ch, payload) = tokio::time::timeout(T, rails.recv())
            .await
            .expect("Rails side got nothing")
            .unwrap();
        assert_eq!(ch, channel);
        assert_eq!(payload, r#"{"from":"keayl"}"#);

        // Rails -> Keayl (Rails: NOTIFY "<channel>", '<payload>').
        let got = Inbox::new();
        let id = conformance::subscribe_live(&*keayl, &stream, &got, T).await;
        let notifier = raw_client(&pg_url()).await;
        notifier
            .batch_execute(&format!(
                "NOTIFY \"{channel}\", '{{\"from\":\"rails\",\"quote\":\"it''s\"}}'"
            ))
            .await
            .unwrap();
        assert!(
            got.wait_for(1, T).await,
            "Keayl did not hear Rails' NOTIFY on {channel:?}"
        );
        assert_eq!(got.texts(), [r#"{"from":"rails","quote":"it's"}"#]);
        assert_eq!(got.streams(), std::slice::from_ref(&stream));
        keayl.unsubscribe(id);
    }
}

#[tokio::test]
async fn large_payloads_travel_as_spill_markers() {
    if !require_pg() {
        return;
    }
    let keayl = factory_with(None, HistoryConfig::off()).instance().await;
    let stream = conformance::unique_stream("spill");
    let mut rails = rails_listener(&channel_name(None, &stream)).await;
    let big = conformance::json_text_of_len(20_000);
    keayl.broadcast(&stream, big.clone().into()).await.unwrap();
    let (_, payload) = tokio::time::timeout(T, rails.recv())
        .await
        .unwrap()
        .unwrap();
    let id: i64 = payload
        .strip_prefix(SPILL_MARKER)
        .expect("a spill marker")
        .parse()
        .unwrap();
    let client = raw_client(&pg_url()).await;
    let row = client
        .query_one(
            "SELECT payload FROM keayl_cable_large_payloads WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Vec<u8>>(0), big.as_bytes());
}

#[tokio::test]
async fn an_unfetchable_spilled_payload_is_reported_not_dropped_silently() {
    if !require_pg() {
        return;
    }
    let logs = Logs::capture();
    let keayl = connected(PostgresConfig::from_url(&pg_url()).unwrap()).await;
    let stream = conformance::unique_stream("spill-missing");
    let got = Inbox::new();
    let id = conformance::subscribe_live(&keayl, &stream, &got, T).await;
    let client = raw_client(&pg_url()).await;
    client
        .execute(
            "SELECT pg_notify($1, $2)",
            &[&channel_name(None, &stream), &format!("{SPILL_MARKER}-1")],
        )
        .await
        .unwrap();
    keayl.broadcast(&stream, "\"after\"".into()).await.unwrap();
    assert!(got.wait_for(1, T).await);
    assert_eq!(got.texts(), ["\"after\""]);
    assert_eq!(keayl.health().failed_delivery_count(), 1);
    let channel = channel_name(None, &stream);
    assert!(
        logs.has_line(&["could not be delivered", &channel]),
        "{}",
        logs.text()
    );
    keayl.unsubscribe(id);
}

#[tokio::test]
async fn rails_hears_the_position_marker_on_streams_with_history() {
    if !require_pg() {
        return;
    }
    let keayl = factory(Some("app")).instance().await;
    let stream = conformance::unique_stream("rails-positioned");
    let channel = channel_name(Some("app"), &stream);
    let mut rails = rails_listener(&channel).await;
    keayl
        .broadcast(&stream, r#"{"from":"keayl"}"#.into())
        .await
        .unwrap();
    let (_, payload) = tokio::time::timeout(T, rails.recv())
        .await
        .expect("Rails side got nothing")
        .unwrap();
    let rest = payload
        .strip_prefix(POSITION_MARKER)
        .unwrap_or_else(|| panic!("no position marker: {payload:?}"));
    let (epoch, rest) = rest.split_once(':').unwrap();
    assert_eq!(epoch.len(), 16, "{payload:?}");
    assert_eq!(rest, r#"1:{"from":"keayl"}"#);
}
