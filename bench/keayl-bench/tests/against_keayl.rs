//! The load generator against Keayl's demo server, in-process: the
//! benchmark protocol, the SSE endpoint and `POST /_broadcast` all work.

use std::time::Duration;

use keayl_bench::client::{Frames, Target};
use keayl_bench::load::{self, BroadcastSettings, EchoSettings, Fanout, Feed, Rig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measures_keayl_demo() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(keayl_demo::serve(
        listener,
        keayl_demo::DemoConfig::default(),
    ));
    let rig = Rig {
        concurrency: 16,
        ..Rig::new(Target::new(addr))
    };
    let settings = BroadcastSettings {
        samples: 5,
        pause: Duration::from_millis(5),
        wait: Duration::from_secs(5),
    };

    let c = load::measure_connect(&rig, 40, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(c.failed, 0, "{:?}", c.first_error);

    for feed in [Feed::Ws, Feed::Http] {
        let fanout = Fanout {
            senders: 1,
            feed,
            settings: settings.clone(),
        };
        let steps = load::measure_broadcast_series(&rig, &fanout, &[10, 30], 5_000.0, |_| {})
            .await
            .unwrap();
        for s in &steps {
            assert_eq!(s.round.lost, 0, "{feed:?}");
            assert_eq!(s.round.duplicates, 0);
        }
    }

    let echo = EchoSettings {
        clients: 10,
        messages: 3,
        interval: Duration::from_millis(10),
    };
    let e = load::measure_echo(&rig, &echo).await.unwrap();
    assert_eq!((e.latency.count, e.timeouts), (30, 0));

    let fanout = Fanout {
        senders: 1,
        feed: Feed::Ws,
        settings,
    };
    let s = load::measure_sse(&rig, &fanout, 20).await.unwrap();
    assert_eq!(s.round.lost, 0);
    assert_eq!(s.round.latency.count, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_origin_is_refused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(keayl_demo::serve(
        listener,
        keayl_demo::DemoConfig::default(),
    ));
    let mut target = Target::new(addr);
    target.origin = "http://evil.example".into();
    let err = keayl_bench::client::open_subscribed(&target, &Frames::new(None))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("handshake"), "{err:#}");
}
