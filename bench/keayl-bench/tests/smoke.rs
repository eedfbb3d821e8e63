//! The load generator against the in-process baseline server: every
//! measurement runs end to end at a small scale, with no loss.

use std::time::Duration;

use keayl_bench::client::{Frames, Target};
use keayl_bench::load::{self, BroadcastSettings, EchoSettings, Fanout, Feed, Rig};

async fn baseline() -> Target {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(keayl_bench::baseline::serve(listener));
    Target::new(addr)
}

fn settings() -> BroadcastSettings {
    BroadcastSettings {
        samples: 5,
        pause: Duration::from_millis(5),
        wait: Duration::from_secs(5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_measurement_runs_against_the_baseline() {
    let rig = Rig {
        concurrency: 16,
        server_pid: Some(std::process::id()),
        ..Rig::new(baseline().await)
    };

    let c = load::measure_connect(&rig, 50, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(c.failed, 0, "{:?}", c.first_error);
    assert!(c.rss_per_conn_kib.is_some() && c.idle_cpu_pct.is_some());

    for feed in [Feed::Ws, Feed::Http] {
        let fanout = Fanout {
            senders: 2,
            feed,
            settings: settings(),
        };
        let steps = load::measure_broadcast_series(&rig, &fanout, &[10, 40], 5_000.0, |_| {})
            .await
            .unwrap();
        assert_eq!(steps.len(), 2);
        for s in &steps {
            assert_eq!(s.round.lost, 0, "{feed:?}");
            assert_eq!(s.round.duplicates, 0);
            assert_eq!(s.round.latency.count, s.round.receivers as u64 * 5);
        }
        assert_eq!(load::largest_within(&steps, 5_000.0), Some(40));
    }

    let echo = EchoSettings {
        clients: 20,
        messages: 3,
        interval: Duration::from_millis(10),
    };
    let e = load::measure_echo(&rig, &echo).await.unwrap();
    assert_eq!(e.latency.count, 60);
    assert_eq!(e.timeouts, 0);

    let fanout = Fanout {
        settings: settings(),
        ..Fanout::default()
    };
    let s = load::measure_sse(&rig, &fanout, 30).await.unwrap();
    assert_eq!(s.round.lost, 0);
    assert_eq!(s.round.latency.count, 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_with_an_id_param_are_separate() {
    let target = baseline().await;
    // Receivers on stream `all7`; a sender on `all` reaches nobody.
    let mut pool = load::Pool::new(target.clone(), Frames::new(Some("7")), 8, 4);
    pool.add_ws_receivers(5).await.unwrap();
    let mut other = load::Pool::new(target, Frames::new(None), 8, 4);
    other.add_senders(1, Feed::Ws).await.unwrap();
    other.add_ws_receivers(2).await.unwrap();
    let r = other
        .broadcast_round(
            &BroadcastSettings {
                samples: 2,
                pause: Duration::ZERO,
                wait: Duration::from_secs(2),
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.lost, 0);
    assert_eq!(r.latency.count, 4);
    assert_eq!(pool.shared().first_error(), None);
    pool.close().await;
    other.close().await;
}
