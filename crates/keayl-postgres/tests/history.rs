//! Reliable streams in PostgreSQL: history and session tables shared by
//! every process. The per-stream limit keeps the last messages (older
//! offsets are `Evicted`); streams without history write no rows and
//! publish as before; processes share one sequence of offsets; positioned
//! messages keep their position through the spill table; an expired history
//! starts a new epoch, while a restart keeps it; positions on the wire are
//! parsed defensively; an unreachable database makes history and sessions
//! `Unavailable`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::StreamExt;
use keayl_cable::pubsub::conformance::{Inbox, json_text_of_len, subscribe_live, unique_stream};
use keayl_cable::pubsub::{
    HistoryConfig, HistoryError, HistoryFrom, Position, PubSub, PubSubError,
};
use keayl_postgres::{POSITION_MARKER, PostgresConfig, PostgresPubSub, SPILL_MARKER, channel_name};
use tokio_postgres::AsyncMessage;

const T: Duration = Duration::from_secs(5);

fn config(history: HistoryConfig) -> PostgresConfig {
    let mut c = PostgresConfig::from_url(&pg_url()).unwrap();
    c.history = history;
    c
}

async fn instance(history: HistoryConfig) -> PostgresPubSub {
    connected(config(history)).await
}

fn after(p: &Position) -> HistoryFrom {
    HistoryFrom::After {
        offset: p.offset,
        epoch: p.epoch.to_string(),
    }
}

fn offsets(positions: &[Option<Position>]) -> Vec<u64> {
    positions
        .iter()
        .map(|p| p.as_ref().expect("a position").offset)
        .collect()
}

/// The offsets of the rows `channel` has in the messages table, and
/// whether it has a row in the streams table.
async fn rows(channel: &str) -> (Vec<i64>, bool) {
    let client = raw_client(&pg_url()).await;
    let offsets = client
        .query(
            "SELECT \"offset\" FROM keayl_cable_messages WHERE stream = $1 ORDER BY 1",
            &[&channel],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let stream = client
        .query_opt(
            "SELECT 1 FROM keayl_cable_streams WHERE stream = $1",
            &[&channel],
        )
        .await
        .unwrap()
        .is_some();
    (offsets, stream)
}

/// A LISTENing plain connection (a Rails process, or an inspector) that
/// yields the payloads of `channel`.
async fn raw_listener(channel: &str) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (client, mut connection) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(n) = m
                && tx.send(n.payload().to_owned()).is_err()
            {
                break;
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN \"{}\"", channel.replace('"', "\"\"")))
        .await
        .unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(client);
    });
    rx
}

async fn recv(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(T, rx.recv())
        .await
        .expect("nothing heard")
        .unwrap()
}

#[tokio::test]
async fn the_limit_keeps_the_last_messages_and_older_offsets_are_evicted() {
    if !require_pg() {
        return;
    }
    let p = instance(HistoryConfig {
        limit: 3,
        ..HistoryConfig::default()
    })
    .await;
    let stream = unique_stream("limit");
    let inbox = Inbox::new();
    let _id = subscribe_live(&p, &stream, &inbox, T).await;
    for i in 1..=5 {
        p.broadcast(&stream, format!("{{\"n\":{i}}}").into())
            .await
            .unwrap();
    }
    assert!(inbox.wait_for(5, T).await);
    let positions = inbox.positions();
    assert_eq!(offsets(&positions), [1, 2, 3, 4, 5]);
    let first = positions[0].clone().unwrap();
    let second = positions[1].clone().unwrap();
    let (kept, known) = rows(&channel_name(None, &stream)).await;
    assert_eq!(kept, [3, 4, 5], "only the last 3 rows are kept");
    assert!(known);
    assert_eq!(
        p.history(&stream, &after(&first)).await,
        Err(HistoryError::Evicted(2))
    );
    let entries = p.history(&stream, &after(&second)).await.unwrap();
    let got: Vec<(u64, &[u8])> = entries
        .iter()
        .map(|e| (e.position.offset, &e.message[..]))
        .collect();
    assert_eq!(
        got,
        [
            (3, &b"{\"n\":3}"[..]),
            (4, &b"{\"n\":4}"[..]),
            (5, &b"{\"n\":5}"[..])
        ]
    );
    assert!(entries.iter().all(|e| e.position.epoch == first.epoch));
    let last = positions[4].clone().unwrap();
    assert_eq!(p.history(&stream, &after(&last)).await, Ok(Vec::new()));
    assert_eq!(
        p.history(&stream, &HistoryFrom::Since(0))
            .await
            .unwrap()
            .len(),
        3
    );
    // An offset the stream never reached, and a stream never seen.
    let future = HistoryFrom::After {
        offset: 6,
        epoch: first.epoch.to_string(),
    };
    assert!(matches!(
        p.history(&stream, &future).await,
        Err(HistoryError::UnknownEpoch(_))
    ));
    let unknown = unique_stream("limit-unknown");
    assert!(matches!(
        p.history(&unknown, &after(&first)).await,
        Err(HistoryError::UnknownEpoch(_))
    ));
    assert_eq!(
        p.history(&unknown, &HistoryFrom::Since(0)).await,
        Ok(Vec::new())
    );
}

#[tokio::test]
async fn streams_without_history_write_no_rows_and_publish_as_before() {
    if !require_pg() {
        return;
    }
    let prefix = unique_stream("nohist");
    let mixed = instance(HistoryConfig::default().with_stream_override(
        prefix.clone(),
        0,
        Duration::from_secs(60),
    ))
    .await;
    let off = instance(HistoryConfig::off()).await;
    let big = json_text_of_len(20_000);
    for (p, stream) in [
        (&mixed, format!("{prefix}:1")),
        (&off, unique_stream("off")),
    ] {
        let channel = channel_name(None, &stream);
        let mut raw = raw_listener(&channel).await;
        let inbox = Inbox::new();
        let _id = subscribe_live(p, &stream, &inbox, T).await;
        p.broadcast(&stream, "\"small\"".into()).await.unwrap();
        p.broadcast(&stream, big.clone().into()).await.unwrap();
        assert!(inbox.wait_for(2, T).await);
        assert_eq!(inbox.positions(), [None, None]);
        assert_eq!(inbox.texts(), ["\"small\"".to_owned(), big.clone()]);
        // Exactly what Rails' adapter sends.
        assert_eq!(recv(&mut raw).await, "\"small\"");
        assert!(recv(&mut raw).await.starts_with(SPILL_MARKER));
        assert_eq!(rows(&channel).await, (Vec::new(), false), "no rows written");
        assert_eq!(
            p.history(&stream, &HistoryFrom::Since(0)).await,
            Err(HistoryError::Unsupported)
        );
        assert!(matches!(
            p.history(
                &stream,
                &HistoryFrom::After {
                    offset: 1,
                    epoch: "e".into()
                }
            )
            .await,
            Err(HistoryError::UnknownEpoch(_))
        ));
    }
    // The mixed instance's other streams keep history.
    let kept = unique_stream("kept");
    let inbox = Inbox::new();
    let _id = subscribe_live(&mixed, &kept, &inbox, T).await;
    mixed.broadcast(&kept, "\"x\"".into()).await.unwrap();
    assert!(inbox.wait_for(1, T).await);
    assert_eq!(offsets(&inbox.positions()), [1]);
}

/// Two processes publishing on one stream at once (small and spilled
/// payloads): one gap-free sequence of offsets, the same in both, and in
/// the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_sequence_of_offsets() {
    if !require_pg() {
        return;
    }
    const EACH: usize = 25;
    let a = Arc::new(instance(HistoryConfig::default()).await);
    let b = Arc::new(instance(HistoryConfig::default()).await);
    let stream = unique_stream("shared-seq");
    let inbox_a = Inbox::new();
    let inbox_b = Inbox::new();
    let _ia = subscribe_live(&*a, &stream, &inbox_a, T).await;
    let _ib = subscribe_live(&*b, &stream, &inbox_b, T).await;
    let tasks: Vec<_> = [("a", a.clone()), ("b", b.clone())]
        .into_iter()
        .map(|(name, p)| {
            let stream = stream.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    // Every fifth one spills: the spill lock and the
                    // stream's row lock are taken in one order.
                    let pad = if i % 5 == 0 {
                        "x".repeat(10_000)
                    } else {
                        String::new()
                    };
                    p.broadcast(&stream, format!("\"{name}{i}{pad}\"").into())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    for inbox in [&inbox_a, &inbox_b] {
        assert!(inbox.wait_for(2 * EACH, T).await, "{}", inbox.len());
    }
    let positions = inbox_a.positions();
    assert_eq!(
        offsets(&positions),
        (1..=2 * EACH as u64).collect::<Vec<_>>(),
        "one sequence, in delivery order"
    );
    let epoch = positions[0].clone().unwrap().epoch;
    assert!(positions.iter().all(|p| p.as_ref().unwrap().epoch == epoch));
    // Both processes saw the same messages at the same positions, and the
    // history (read by either) agrees.
    assert_eq!(inbox_b.positions(), positions);
    assert_eq!(inbox_b.texts(), inbox_a.texts());
    for p in [&a, &b] {
        let entries = p.history(&stream, &HistoryFrom::Since(0)).await.unwrap();
        let got: Vec<(Option<Position>, String)> = entries
            .iter()
            .map(|e| {
                (
                    Some(e.position.clone()),
                    String::from_utf8(e.message.to_vec()).unwrap(),
                )
            })
            .collect();
        let want: Vec<(Option<Position>, String)> =
            positions.iter().cloned().zip(inbox_a.texts()).collect();
        assert_eq!(got, want);
    }
}

#[tokio::test]
async fn a_spilled_positioned_message_keeps_its_position() {
    if !require_pg() {
        return;
    }
    let p = instance(HistoryConfig::default()).await;
    let stream = unique_stream("spill-pos");
    let channel = channel_name(None, &stream);
    let mut raw = raw_listener(&channel).await;
    let inbox = Inbox::new();
    let _id = subscribe_live(&p, &stream, &inbox, T).await;
    let big = json_text_of_len(20_000);
    // Fits a plain NOTIFY, not one with a position.
    let near = json_text_of_len(7_990);
    let sent = [
        "\"small\"".to_owned(),
        big.clone(),
        near.clone(),
        "\"last\"".to_owned(),
    ];
    for m in &sent {
        p.broadcast(&stream, m.clone().into()).await.unwrap();
    }
    assert!(inbox.wait_for(4, T).await);
    assert_eq!(inbox.texts(), sent);
    let positions = inbox.positions();
    assert_eq!(offsets(&positions), [1, 2, 3, 4]);
    let epoch = positions[0].clone().unwrap().epoch;
    // On the wire: the position, then the message or the spill marker.
    let heard: Vec<String> = [
        recv(&mut raw).await,
        recv(&mut raw).await,
        recv(&mut raw).await,
        recv(&mut raw).await,
    ]
    .into();
    assert_eq!(heard[0], format!("{POSITION_MARKER}{epoch}:1:\"small\""));
    for (i, h) in heard.iter().enumerate().skip(1).take(2) {
        let prefix = format!("{POSITION_MARKER}{epoch}:{}:{SPILL_MARKER}", i + 1);
        assert!(h.starts_with(&prefix), "{h:?}");
        h[prefix.len()..].parse::<i64>().expect("a spill id");
    }
    assert_eq!(heard[3], format!("{POSITION_MARKER}{epoch}:4:\"last\""));
    // The history holds the payloads themselves.
    let entries = p
        .history(&stream, &after(positions[0].as_ref().unwrap()))
        .await
        .unwrap();
    let got: Vec<(u64, String)> = entries
        .iter()
        .map(|e| {
            (
                e.position.offset,
                String::from_utf8(e.message.to_vec()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [(2, big), (3, near), (4, "\"last\"".to_owned())].to_vec()
    );
}

#[tokio::test]
async fn an_expired_history_starts_a_new_epoch() {
    if !require_pg() {
        return;
    }
    let ttl = Duration::from_secs(1);
    let p = instance(HistoryConfig {
        ttl,
        ..HistoryConfig::default()
    })
    .await;
    let stream = unique_stream("expiry");
    let inbox = Inbox::new();
    let _id = subscribe_live(&p, &stream, &inbox, T).await;
    p.broadcast(&stream, "\"1\"".into()).await.unwrap();
    p.broadcast(&stream, "\"2\"".into()).await.unwrap();
    assert!(inbox.wait_for(2, T).await);
    let old = inbox.positions();
    let (first, second) = (old[0].clone().unwrap(), old[1].clone().unwrap());
    assert_eq!(p.history(&stream, &after(&first)).await.unwrap().len(), 1);
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    // Rows older than the TTL are never returned; the epoch is still known.
    assert_eq!(
        p.history(&stream, &HistoryFrom::Since(0)).await,
        Ok(Vec::new())
    );
    assert_eq!(p.history(&stream, &after(&second)).await, Ok(Vec::new()));
    assert_eq!(
        p.history(&stream, &after(&first)).await,
        Err(HistoryError::Evicted(2))
    );
    // The next broadcast starts a new epoch, from offset 1.
    p.broadcast(&stream, "\"3\"".into()).await.unwrap();
    assert!(inbox.wait_for(3, T).await);
    let new = inbox.positions()[2].clone().unwrap();
    assert_eq!(new.offset, 1);
    assert_ne!(new.epoch, first.epoch);
    assert!(matches!(
        p.history(&stream, &after(&second)).await,
        Err(HistoryError::UnknownEpoch(_))
    ));
    let entries = p.history(&stream, &HistoryFrom::Since(0)).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].position, new);
    assert_eq!(entries[0].message, "\"3\"");
    // The old epoch's rows went with the broadcast that replaced it.
    assert_eq!(rows(&channel_name(None, &stream)).await.0, [1]);
}

#[tokio::test]
async fn epochs_and_offsets_survive_a_restart() {
    if !require_pg() {
        return;
    }
    let stream = unique_stream("restart");
    let inbox = Inbox::new();
    let listener = instance(HistoryConfig::default()).await;
    let _id = subscribe_live(&listener, &stream, &inbox, T).await;
    let before = instance(HistoryConfig::default()).await;
    before.broadcast(&stream, "\"1\"".into()).await.unwrap();
    before.broadcast(&stream, "\"2\"".into()).await.unwrap();
    before.shutdown();
    drop(before);
    // A new process: the tables persist, so does the stream's history.
    let after_restart = instance(HistoryConfig::default()).await;
    after_restart
        .broadcast(&stream, "\"3\"".into())
        .await
        .unwrap();
    assert!(inbox.wait_for(3, T).await);
    let positions = inbox.positions();
    assert_eq!(offsets(&positions), [1, 2, 3]);
    let first = positions[0].clone().unwrap();
    assert_eq!(positions[2].as_ref().unwrap().epoch, first.epoch);
    let entries = after_restart
        .history(&stream, &after(&first))
        .await
        .unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1].message, "\"3\"");
}

#[tokio::test]
async fn positions_on_the_wire_are_parsed_defensively() {
    if !require_pg() {
        return;
    }
    let p = instance(HistoryConfig::default()).await;
    let stream = unique_stream("wire");
    let channel = channel_name(None, &stream);
    let inbox = Inbox::new();
    let _id = subscribe_live(&p, &stream, &inbox, T).await;
    let notifier = raw_client(&pg_url()).await;
    for payload in [
        "__keayl_position:abc:5:\"x\"",
        "__keayl_position:oops",
        "__keayl_position:e:-3:\"y\"",
        "\"plain\"",
    ] {
        notifier
            .execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
            .await
            .unwrap();
    }
    // A positioned spill marker naming no row is reported, not delivered.
    notifier
        .execute(
            "SELECT pg_notify($1, $2)",
            &[
                &channel,
                &format!("{POSITION_MARKER}e:6:{SPILL_MARKER}-1").as_str(),
            ],
        )
        .await
        .unwrap();
    p.broadcast(&stream, "\"after\"".into()).await.unwrap();
    assert!(inbox.wait_for(5, T).await);
    assert_eq!(
        inbox.texts(),
        [
            "\"x\"",
            "__keayl_position:oops",
            "__keayl_position:e:-3:\"y\"",
            "\"plain\"",
            "\"after\"",
        ]
    );
    let positions = inbox.positions();
    assert_eq!(
        positions[0],
        Some(Position {
            offset: 5,
            epoch: Arc::from("abc")
        })
    );
    assert_eq!(positions[1..4], [None, None, None]);
    assert_eq!(positions[4].as_ref().unwrap().offset, 1);
    assert_eq!(p.health().failed_delivery_count(), 1);
}

#[tokio::test]
async fn sessions_are_replaced_and_survive_the_saving_process() {
    if !require_pg() {
        return;
    }
    let a = instance(HistoryConfig::off()).await;
    let sid = unique_stream("sid-replace");
    let ttl = Duration::from_secs(60);
    a.save_session(&sid, Bytes::from_static(b"1"), ttl)
        .await
        .unwrap();
    a.save_session(&sid, Bytes::from_static(&[0, 159, 146, 150]), ttl)
        .await
        .unwrap();
    a.shutdown();
    drop(a);
    let b = instance(HistoryConfig::off()).await;
    assert_eq!(
        b.take_session(&sid).await.unwrap().as_deref(),
        Some(&[0u8, 159, 146, 150][..]),
        "the latest snapshot, bytes intact"
    );
    assert_eq!(b.take_session(&sid).await.unwrap(), None);
    // Ids PostgreSQL text cannot hold were never saved.
    assert_eq!(b.take_session("a\0b").await.unwrap(), None);
    b.remove_session("a\0b").await.unwrap();
    assert!(matches!(
        b.save_session("a\0b", Bytes::new(), ttl).await,
        Err(PubSubError::Failed(_))
    ));
}

#[tokio::test]
async fn without_the_database_history_and_sessions_are_unavailable() {
    let mut c = fast_config(&format!(
        "postgres://postgres@127.0.0.1:{}/test",
        free_port()
    ));
    c.command_timeout = Duration::from_millis(500);
    let p = PostgresPubSub::new(c).unwrap();
    let stream = unique_stream("down");
    assert!(matches!(
        p.history(&stream, &HistoryFrom::Since(0)).await,
        Err(HistoryError::Unavailable(_))
    ));
    assert!(matches!(
        p.save_session("sid", Bytes::new(), Duration::from_secs(1))
            .await,
        Err(PubSubError::Unavailable(_))
    ));
    assert!(matches!(
        p.take_session("sid").await,
        Err(PubSubError::Unavailable(_))
    ));
    assert!(matches!(
        p.remove_session("sid").await,
        Err(PubSubError::Unavailable(_))
    ));
    assert!(matches!(
        p.broadcast(&stream, "\"x\"".into()).await,
        Err(PubSubError::Unavailable(_))
    ));
}
