//! `GET /sse/{stream}` opened and closed many times against the in-process
//! demo leaves nothing behind: the runtime's alive tasks and the pub/sub
//! subscriptions return to their baseline.
//!
//! Every client waits for `: subscribed` before leaving, so each cycle ends
//! with a writer parked on a quiet stream, the case that used to leak a task
//! and a subscription per client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keayl_cable::{InMemory, PubSub};
use keayl_demo::DemoConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

const CYCLES: usize = 10_000;
const CONCURRENCY: usize = 50;
/// How long the server may take to notice the last closes and tear down.
const SETTLE: Duration = Duration::from_secs(5);

/// Open an SSE stream, wait until the writer is subscribed, and return the
/// open socket.
async fn open(addr: SocketAddr, stream: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET /sse/{stream} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains(": subscribed\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("`: subscribed` within 5 s")
            .unwrap();
        assert!(n > 0, "server closed before subscribing");
        got.extend_from_slice(&buf[..n]);
    }
    tcp
}

struct Counts {
    tasks: usize,
    subscriptions: usize,
}

fn counts(pubsub: &InMemory) -> Counts {
    Counts {
        tasks: tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        subscriptions: pubsub.stats().subscriptions,
    }
}

/// Wait (up to [`SETTLE`]) until both counts are back at `baseline`; the
/// counts reached and how long it took.
async fn settle(pubsub: &InMemory, baseline: &Counts) -> (Counts, Duration) {
    let started = Instant::now();
    loop {
        let now = counts(pubsub);
        let back = now.tasks <= baseline.tasks && now.subscriptions <= baseline.subscriptions;
        if back || started.elapsed() >= SETTLE {
            return (now, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_open_close_cycles_leave_no_tasks_or_subscriptions_behind() {
    let pubsub = Arc::new(InMemory::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(keayl_demo::serve(
        listener,
        DemoConfig {
            pubsub: pubsub.clone(),
            ..DemoConfig::default()
        },
    ));

    // Warm up the server's lazily started tasks with a plain request (not an
    // SSE stream, whose leak would hide in the baseline), then take the
    // baseline.
    let mut health = TcpStream::connect(addr).await.unwrap();
    health
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    health.read_to_end(&mut response).await.unwrap();
    assert!(response.starts_with(b"HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = counts(&pubsub);
    assert_eq!(baseline.subscriptions, 0, "nothing subscribed yet");
    eprintln!(
        "baseline: {} alive tasks, {} subscriptions",
        baseline.tasks, baseline.subscriptions
    );

    // The measurement can see a leak: held-open streams show up in both
    // counts.
    let mut held = Vec::new();
    for i in 0..CONCURRENCY {
        held.push(open(addr, &format!("held-{}", i % 5)).await);
    }
    let open_counts = counts(&pubsub);
    assert_eq!(
        open_counts.subscriptions,
        baseline.subscriptions + CONCURRENCY,
        "one subscription per open stream"
    );
    assert!(
        open_counts.tasks >= baseline.tasks + CONCURRENCY,
        "each open stream keeps tasks alive: {} vs baseline {}",
        open_counts.tasks,
        baseline.tasks
    );
    drop(held);
    let (after_held, _) = settle(&pubsub, &baseline).await;
    assert_eq!(after_held.subscriptions, baseline.subscriptions);
    assert!(after_held.tasks <= baseline.tasks);

    // The cycles: CONCURRENCY clients, each opening and closing in turn.
    let started = Instant::now();
    let mut clients = JoinSet::new();
    for client in 0..CONCURRENCY {
        clients.spawn(async move {
            for cycle in (client..CYCLES).step_by(CONCURRENCY) {
                drop(open(addr, &format!("cycle-{}", cycle % 10)).await);
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    let cycled_in = started.elapsed();
    let (after, settled_in) = settle(&pubsub, &baseline).await;
    eprintln!(
        "{CYCLES} cycles ({CONCURRENCY} at a time) in {cycled_in:?}; \
         {settled_in:?} later: {} alive tasks (baseline {}), {} subscriptions (baseline {})",
        after.tasks, baseline.tasks, after.subscriptions, baseline.subscriptions
    );
    assert_eq!(
        after.subscriptions, baseline.subscriptions,
        "every subscription must be dropped"
    );
    assert!(
        after.tasks <= baseline.tasks,
        "{} alive tasks after {CYCLES} cycles, baseline {}",
        after.tasks,
        baseline.tasks
    );
}
