//! The spill table is bounded in bytes across processes: floods of large
//! payloads keep the sum of payload lengths within `max_spill_bytes` (and
//! the table's disk size near it), broadcasts beyond the bound fail with
//! `BroadcastError::SpillFull` (and `PubSubError::Failed` through the
//! trait), payloads over `max_payload_bytes` are refused up front, and
//! large broadcasts that fit still arrive intact.
//!
//! Every test runs in a schema of its own (`search_path` set through the
//! connection's `options`), so it has its own spill table and bound while
//! the other tests of the crate use the shared one in parallel. Several
//! backends in one test stand in for several processes: each has its own
//! connection, and the bound is enforced by PostgreSQL.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use keayl_cable::pubsub::conformance::{Inbox, subscribe_live, unique_stream};
use keayl_cable::pubsub::{PubSub, PubSubError};
use keayl_postgres::{BroadcastError, PostgresConfig, channel_name};

const T: Duration = Duration::from_secs(10);

/// A schema of the test's own, dropped (with its tables) on drop.
struct Schema {
    name: String,
}

impl Schema {
    async fn new(label: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "keayl_test_{label}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        raw_client(&pg_url())
            .await
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
            ))
            .await
            .expect("create the test's schema");
        Schema { name }
    }

    /// The database URL with this schema first on the `search_path`.
    fn url(&self) -> String {
        let url = pg_url();
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}options=-csearch_path%3D{}", self.name)
    }

    fn config(&self) -> PostgresConfig {
        let mut c = fast_config(&self.url());
        // Spills (and a flood's lock waits) get 5x this.
        c.command_timeout = Duration::from_secs(2);
        c
    }

    /// A plain connection inside the schema.
    async fn client(&self) -> tokio_postgres::Client {
        raw_client(&self.url()).await
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        // Drop runs outside any runtime's async context: a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client.batch_execute(&sql).await;
                }
            });
        })
        .join();
    }
}

/// `(rows, sum of payload lengths, pg_total_relation_size)` of the schema's
/// spill table.
async fn table_size(client: &tokio_postgres::Client) -> (i64, i64, i64) {
    let row = client
        .query_one(
            "SELECT count(*), coalesce(sum(octet_length(payload)), 0)::bigint, \
                    pg_total_relation_size('keayl_cable_large_payloads') \
             FROM keayl_cable_large_payloads",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// A JSON string of exactly `len` bytes that TOAST cannot compress (so the
/// disk size reflects the payload bytes), starting with `"<tag>:`.
fn payload(tag: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ (len as u64) ^ tag.len() as u64;
    for b in tag.bytes() {
        x = x.rotate_left(5) ^ u64::from(b);
    }
    let mut s = String::with_capacity(len);
    s.push('"');
    s.push_str(tag);
    s.push(':');
    while s.len() + 1 < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push(char::from(ALPHABET[(x % 64) as usize]));
    }
    s.push('"');
    assert_eq!(s.len(), len);
    s
}

/// A listener's fetch of spilled row `id`, on `client`'s backend.
async fn take(client: &tokio_postgres::Client, id: i64) -> Option<Vec<u8>> {
    client
        .query_one("SELECT keayl_cable_spill_take_v1($1)", &[&id])
        .await
        .unwrap()
        .get(0)
}

/// A backend that listens to `channel` and is registered as a Keayl
/// listener (so spilled rows wait for it) but never fetches a row: a stuck
/// process. Kept alive while the returned client lives.
async fn stuck_listener(schema: &Schema, channel: &str) -> tokio_postgres::Client {
    let client = schema.client().await;
    client
        .batch_execute(&format!("LISTEN \"{}\"", channel.replace('"', "\"\"")))
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO keayl_cable_listeners (pid, backend_start, channel) \
             SELECT pid, backend_start, $1 FROM pg_stat_activity WHERE pid = pg_backend_pid()",
            &[&channel],
        )
        .await
        .unwrap();
    client
}

/// Samples the spill table's payload sum every few milliseconds until
/// stopped; returns the largest seen.
fn watch_sum(
    client: tokio_postgres::Client,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<i64> {
    tokio::spawn(async move {
        let mut max = 0;
        while !stop.load(Ordering::Relaxed) {
            max = max.max(table_size(&client).await.1);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        max.max(table_size(&client).await.1)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_eight_processes_stays_within_the_bound_and_the_rest_is_refused() {
    if !require_pg() {
        return;
    }
    let schema = Schema::new("flood").await;
    const BOUND: usize = 2 * 1024 * 1024;
    const LEN: usize = 300_000;
    let mut config = schema.config();
    config.max_spill_bytes = BOUND;
    config.spill_ttl = Duration::from_secs(600);
    // Eight processes: a connection executes one statement at a time, so
    // this many spills can race inside PostgreSQL at once.
    let mut processes = Vec::new();
    for _ in 0..8 {
        processes.push(Arc::new(connected(config.clone()).await));
    }
    let a = processes[0].clone();
    let stream = unique_stream("flood");
    // A registered listener that never reads: nothing is reclaimable, so the
    // table fills to the bound and stays there.
    let _stuck = stuck_listener(&schema, &channel_name(None, &stream)).await;

    let inspect = schema.client().await;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_sum(schema.client().await, stop.clone());
    // 2 tasks per process, 5 payloads each: 24 MB offered to a 2 MiB table
    // that holds 6 of them. All 16 start at once, so the first wave alone
    // races 8 spills for 6 places across the processes.
    let start = Arc::new(tokio::sync::Barrier::new(16));
    let mut tasks = Vec::new();
    for (n, p) in processes.iter().enumerate() {
        for t in 0..2 {
            let (p, stream, start) = (p.clone(), stream.clone(), start.clone());
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let mut results = Vec::new();
                for i in 0..5 {
                    let message = payload(&format!("{n}-{t}-{i}"), LEN);
                    results.push(p.client().broadcast_checked(&stream, message.into()).await);
                }
                results
            }));
        }
    }
    let mut ok = 0;
    let mut full = 0;
    for t in tasks {
        for r in t.await.unwrap() {
            match r {
                Ok(()) => ok += 1,
                Err(BroadcastError::SpillFull {
                    len,
                    max_spill_bytes,
                }) => {
                    assert_eq!((len, max_spill_bytes), (LEN, BOUND));
                    full += 1;
                }
                Err(e) => panic!("unexpected error: {e:?}"),
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let max_seen = watcher.await.unwrap();
    let (rows, sum, disk) = table_size(&inspect).await;
    eprintln!(
        "flood: {ok} spilled, {full} refused; table: {rows} rows, {sum} payload bytes (max seen {max_seen}), {disk} bytes on disk; bound {BOUND}"
    );
    // Exactly as many as fit: no overshoot from the race, no room wasted.
    assert_eq!(ok, BOUND / LEN, "{ok} spilled, {full} refused");
    assert_eq!(ok + full, 80);
    assert_eq!(rows as usize, ok);
    assert!(
        sum as usize <= BOUND && max_seen as usize <= BOUND,
        "{sum} / {max_seen}"
    );
    // Nothing is deleted (the listener is stuck), so no dead tuples: the
    // disk size is the payloads plus TOAST and index overhead.
    assert!(disk as usize <= BOUND + BOUND / 2, "{disk} bytes on disk");

    // The counters agree with what the callers saw.
    let sum_of = |f: &dyn Fn(&keayl_postgres::PostgresPubSub) -> u64| -> usize {
        processes.iter().map(|p| f(p) as usize).sum()
    };
    assert_eq!(sum_of(&|p| p.client().spill_stats().spilled), ok);
    assert_eq!(
        sum_of(&|p| p.client().spill_stats().refused_spill_full),
        full
    );
    assert_eq!(sum_of(&|p| p.client().spill_stats().refused_too_large), 0);
    assert_eq!(sum_of(&|p| p.health().lost_broadcast_count()), full);

    // Through the PubSub trait a refusal is an error too, never a silent drop.
    let pubsub: Arc<dyn PubSub> = a.clone();
    let err = pubsub
        .broadcast(&stream, payload("trait", LEN).into())
        .await
        .unwrap_err();
    match &err {
        PubSubError::Failed(text) => {
            assert!(
                text.contains("keayl_cable_large_payloads is full"),
                "{text}"
            )
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(a.stats().lost_broadcasts, a.health().lost_broadcast_count());
    // Small payloads do not need the table and still go through.
    a.broadcast(&stream, "\"small\"".into()).await.unwrap();

    // A process with a short TTL expires the stuck rows in its maintenance;
    // then large broadcasts fit again.
    let mut short = schema.config();
    short.max_spill_bytes = BOUND;
    short.spill_ttl = Duration::from_millis(500);
    short.health_check_interval = Duration::from_millis(100);
    let c = connected(short).await;
    let started = Instant::now();
    while table_size(&inspect).await.0 > 0 {
        assert!(started.elapsed() < T, "expired rows were not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("stuck rows expired {:?} after the flood", started.elapsed());
    a.client()
        .broadcast_checked(&stream, payload("after", LEN).into())
        .await
        .unwrap();
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_broadcasts_arrive_intact_through_a_small_bound() {
    if !require_pg() {
        return;
    }
    let schema = Schema::new("intact").await;
    const BOUND: usize = 4 * 1024 * 1024;
    const LEN: usize = 100_000;
    const N: usize = 400; // 40 MB through a 4 MiB table.
    let mut config = schema.config();
    config.max_spill_bytes = BOUND;
    let publisher = connected(config.clone()).await;
    let listener = connected(config).await;
    let stream = unique_stream("intact");
    let here = Inbox::new();
    let there = Inbox::new();
    let _id = subscribe_live(&publisher, &stream, &here, T).await;
    let _id2 = subscribe_live(&listener, &stream, &there, T).await;

    let inspect = schema.client().await;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_sum(schema.client().await, stop.clone());
    let started = Instant::now();
    let mut sent = Vec::with_capacity(N);
    let mut retries = 0;
    for i in 0..N {
        let message = payload(&i.to_string(), LEN);
        // Rows are freed as both listeners read them; a broadcast that finds
        // the table full (listeners behind) is told so and retried.
        loop {
            match publisher
                .client()
                .broadcast_checked(&stream, message.clone().into())
                .await
            {
                Ok(()) => break,
                Err(BroadcastError::SpillFull { .. }) => {
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => panic!("broadcast {i}: {e}"),
            }
        }
        sent.push(message);
    }
    let took = started.elapsed();
    for inbox in [&here, &there] {
        assert!(inbox.wait_for(N, T).await, "{} of {N} arrived", inbox.len());
        assert!(inbox.texts() == sent, "payloads corrupted or out of order");
    }
    stop.store(true, Ordering::Relaxed);
    let max_seen = watcher.await.unwrap();
    // Every row was deleted by the last of its two readers.
    let deadline = Instant::now() + T;
    while table_size(&inspect).await.0 > 0 {
        assert!(
            Instant::now() < deadline,
            "rows left after every listener read them: {:?}",
            table_size(&inspect).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, _, disk) = table_size(&inspect).await;
    eprintln!(
        "intact: {N} x {LEN} bytes in {took:?} ({retries} retries after SpillFull); max payload sum seen {max_seen}, {disk} bytes on disk; bound {BOUND}"
    );
    assert!(max_seen as usize <= BOUND, "{max_seen}");
    assert_eq!(publisher.client().spill_stats().spilled as usize, N);
    assert_eq!(listener.health().failed_delivery_count(), 0);
    assert_eq!(publisher.health().failed_delivery_count(), 0);
}

#[tokio::test]
async fn a_payload_over_max_payload_bytes_is_refused() {
    if !require_pg() {
        return;
    }
    let schema = Schema::new("too_large").await;
    let mut config = schema.config();
    config.max_payload_bytes = 100_000;
    let p = connected(config).await;
    let stream = unique_stream("too-large");
    let inbox = Inbox::new();
    let _id = subscribe_live(&p, &stream, &inbox, T).await;

    let err = p
        .client()
        .broadcast_checked(&stream, payload("over", 100_001).into())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        BroadcastError::PayloadTooLarge {
            len: 100_001,
            max: 100_000
        }
    );
    // Through the trait: an error as well.
    let err = PubSub::broadcast(&p, &stream, payload("over", 1_000_000).into())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PubSubError::Failed(t) if t.contains("max_payload_bytes")),
        "{err:?}"
    );
    // At the limit: spilled and delivered intact.
    let at_limit = payload("at-limit", 100_000);
    p.client()
        .broadcast_checked(&stream, at_limit.clone().into())
        .await
        .unwrap();
    assert!(inbox.wait_for(1, T).await);
    assert_eq!(inbox.texts(), [at_limit]);
    let stats = p.client().spill_stats();
    assert_eq!(
        (stats.refused_too_large, stats.spilled),
        (2, 1),
        "{stats:?}"
    );
    assert_eq!(p.health().lost_broadcast_count(), 2);
    // The refused payloads never reached the database.
    assert_eq!(table_size(&schema.client().await).await.0, 0);

    // The limit covers payloads small enough for NOTIFY too.
    let mut small = schema.config();
    small.max_payload_bytes = 1000;
    let q = connected(small).await;
    assert!(matches!(
        q.client()
            .broadcast_checked(&stream, payload("small", 1001).into())
            .await,
        Err(BroadcastError::PayloadTooLarge {
            len: 1001,
            max: 1000
        })
    ));
    q.client()
        .broadcast_checked(&stream, payload("fits", 1000).into())
        .await
        .unwrap();
    assert!(inbox.wait_for(2, T).await);
    assert_eq!(inbox.len(), 2);
}

#[tokio::test]
async fn a_spill_table_from_before_the_bound_is_upgraded_and_counted() {
    if !require_pg() {
        return;
    }
    let schema = Schema::new("upgrade").await;
    let old = schema.client().await;
    // The table as the previous version created it, with 600 KB in it.
    old.batch_execute(
        "CREATE UNLOGGED TABLE keayl_cable_large_payloads ( \
             id bigserial PRIMARY KEY, payload bytea NOT NULL, \
             created_at timestamptz NOT NULL DEFAULT now()); \
         INSERT INTO keayl_cable_large_payloads (payload) \
             SELECT convert_to(repeat('x', 200000), 'UTF8') FROM generate_series(1, 3);",
    )
    .await
    .unwrap();
    let mut config = schema.config();
    config.max_spill_bytes = 1_000_000;
    let p = connected(config).await;
    let stream = unique_stream("upgrade");
    let _stuck = stuck_listener(&schema, &channel_name(None, &stream)).await;
    // The old rows count towards the bound, but nobody waits for them
    // (pending 0): they are reclaimed when room is needed.
    let (rows, sum, _) = table_size(&old).await;
    assert_eq!((rows, sum), (3, 600_000));
    for i in 0..3 {
        p.client()
            .broadcast_checked(&stream, payload(&i.to_string(), 300_000).into())
            .await
            .unwrap();
    }
    let (rows, sum, _) = table_size(&old).await;
    assert_eq!((rows, sum), (3, 900_000), "old rows not reclaimed");
    assert!(matches!(
        p.client()
            .broadcast_checked(&stream, payload("over", 300_000).into())
            .await,
        Err(BroadcastError::SpillFull { .. })
    ));
    assert_eq!(table_size(&old).await.1, 900_000);
}

/// On a server of the test's own (a shared database's other sessions could
/// hold back what `VACUUM` may remove): 40 MB of large broadcasts through a
/// 4 MiB table leave it small on disk, because the backend vacuums the
/// table as it churns instead of leaving the dead rows to autovacuum's next
/// visit (a minute away by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuuming_keeps_the_disk_size_near_the_bound() {
    let Some(pg) = PrivatePostgres::start() else {
        return;
    };
    const BOUND: usize = 4 * 1024 * 1024;
    const LEN: usize = 100_000;
    const N: usize = 400;
    let mut config = fast_config(&pg.url());
    config.max_spill_bytes = BOUND;
    let publisher = connected(config.clone()).await;
    let listener = connected(config).await;
    let stream = unique_stream("vacuum");
    let inbox = Inbox::new();
    let _id = subscribe_live(&listener, &stream, &inbox, T).await;
    for i in 0..N {
        let message = payload(&i.to_string(), LEN);
        loop {
            match publisher
                .client()
                .broadcast_checked(&stream, message.clone().into())
                .await
            {
                Ok(()) => break,
                Err(BroadcastError::SpillFull { .. }) => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                Err(e) => panic!("broadcast {i}: {e}"),
            }
        }
    }
    assert!(inbox.wait_for(N, T).await, "{} of {N} arrived", inbox.len());
    let inspect = raw_client(&pg.url()).await;
    let (_, _, disk) = table_size(&inspect).await;
    let row = inspect
        .query_one(
            "SELECT vacuum_count, autovacuum_count FROM pg_stat_all_tables \
             WHERE relid = 'keayl_cable_large_payloads'::regclass",
            &[],
        )
        .await
        .unwrap();
    let (vacuums, autovacuums): (i64, i64) = (row.get(0), row.get(1));
    eprintln!(
        "vacuum: {} bytes spilled, {disk} bytes on disk, {vacuums} vacuums ({autovacuums} by autovacuum); bound {BOUND}",
        N * LEN
    );
    assert!(vacuums >= 1, "the spill table was never vacuumed");
    // Without the vacuums the table holds every spilled byte (40 MB).
    assert!(disk as usize <= 3 * BOUND, "{disk} bytes on disk");
}

#[tokio::test]
async fn a_row_is_deleted_once_every_awaited_listener_read_it() {
    if !require_pg() {
        return;
    }
    let schema = Schema::new("readers").await;
    let p = connected(schema.config()).await;
    let stream = unique_stream("readers");
    let channel = channel_name(None, &stream);
    let first = stuck_listener(&schema, &channel).await;
    let second = stuck_listener(&schema, &channel).await;
    let latecomer = schema.client().await; // listening, but not registered
    let big = payload("readers", 50_000);
    p.client()
        .broadcast_checked(&stream, big.clone().into())
        .await
        .unwrap();
    let inspect = schema.client().await;
    let id: i64 = inspect
        .query_one("SELECT id FROM keayl_cable_large_payloads", &[])
        .await
        .unwrap()
        .get(0);
    // The latecomer reads without using up an awaited listener's turn.
    assert_eq!(take(&latecomer, id).await.as_deref(), Some(big.as_bytes()));
    assert_eq!(take(&first, id).await.as_deref(), Some(big.as_bytes()));
    // Reading twice does not count twice either.
    assert_eq!(take(&first, id).await.as_deref(), Some(big.as_bytes()));
    assert_eq!(
        table_size(&inspect).await.0,
        1,
        "deleted before the second read it"
    );
    assert_eq!(take(&second, id).await.as_deref(), Some(big.as_bytes()));
    assert_eq!(
        table_size(&inspect).await.0,
        0,
        "not deleted after the last read"
    );
    assert_eq!(take(&latecomer, id).await, None);
}

#[tokio::test]
async fn rows_awaited_only_by_a_dead_listener_are_reclaimed() {
    if !require_pg() {
        return;
    }
    let schema = Schema::new("dead_reader").await;
    let mut config = schema.config();
    config.max_spill_bytes = 1_000_000;
    config.spill_ttl = Duration::from_secs(600);
    let p = connected(config).await;
    let stream = unique_stream("dead-reader");
    let stuck = stuck_listener(&schema, &channel_name(None, &stream)).await;
    for i in 0..3 {
        p.client()
            .broadcast_checked(&stream, payload(&i.to_string(), 300_000).into())
            .await
            .unwrap();
    }
    // Full of rows a live listener has not read: refused, nothing evicted.
    assert!(matches!(
        p.client()
            .broadcast_checked(&stream, payload("full", 300_000).into())
            .await,
        Err(BroadcastError::SpillFull { .. })
    ));
    let inspect = schema.client().await;
    assert_eq!(table_size(&inspect).await.1, 900_000);
    // The listener's backend goes away without reading.
    let pid: i32 = stuck
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    drop(stuck);
    let deadline = Instant::now() + T;
    loop {
        let alive: i64 = inspect
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if alive == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "backend {pid} still alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its rows no longer hold the table, long before their TTL.
    p.client()
        .broadcast_checked(&stream, payload("after", 300_000).into())
        .await
        .unwrap();
    let (rows, sum, _) = table_size(&inspect).await;
    assert_eq!((rows, sum), (1, 300_000));
}
