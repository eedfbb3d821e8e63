//! The supervisor task: one NATS connection per session, subscriptions
//! reconciled with the [`Registry`](keayl_broker::Registry), one forwarding
//! task per subject.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, ClientError, Event, ServerAddr, ServerError, Subscriber};
use futures_util::StreamExt;
use keayl_broker::{SessionEnd, health_check_interval, in_flight};
use keayl_cable::pubsub::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::client::{Acks, Shared, answer_census, connects, lock};
use crate::config::Credentials;

struct Session {
    client: Client,
    events: mpsc::UnboundedReceiver<Event>,
}

pub(crate) async fn supervise(
    shared: Arc<Shared>,
    servers: Vec<ServerAddr>,
    credentials: Credentials,
    cancel: CancellationToken,
) {
    let (shared, cancel) = (&shared, &cancel);
    shared
        .supervisor()
        .run(
            || cancel.cancelled(),
            || connect(shared, &servers, &credentials),
            |session| run_session(shared, session, cancel),
            || {
                shared.set_client(None);
                lock(&shared.actual).clear();
            },
        )
        .await;
}

/// One connection. The driver's own reconnection is cut short (one try per
/// server, no delay): a lost connection ends the session, and the
/// supervisor reconnects with the shared backoff and subscribes everything
/// again, so outages are reported like every other backend's.
async fn connect(
    shared: &Shared,
    servers: &[ServerAddr],
    credentials: &Credentials,
) -> Result<Session, String> {
    let (tx, events) = mpsc::unbounded_channel();
    let options = credentials
        .options()
        .name("keayl")
        .connection_timeout(shared.config.connect_timeout)
        .request_timeout(Some(shared.config.command_timeout))
        .max_reconnects(servers.len().max(1))
        .reconnect_delay_callback(|_| Duration::ZERO)
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(event);
            }
        });
    let timeout = shared.config.connect_timeout * servers.len().max(1) as u32;
    let client = tokio::time::timeout(
        timeout + Duration::from_millis(100),
        async_nats::connect_with_options(servers.to_vec(), options),
    )
    .await
    .map_err(|_| format!("connecting timed out after {timeout:?}"))?
    .map_err(|e| e.to_string())?;
    Ok(Session { client, events })
}

/// A subject's forwarding task: delivers its messages until told to stop,
/// then hands the subscription back (so it is unsubscribed in order).
struct Forwarder {
    stop: oneshot::Sender<()>,
    task: AbortOnDropHandle<Subscriber>,
}

fn forwarder(shared: Arc<Shared>, subject: String, mut subscriber: Subscriber) -> Forwarder {
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                _ = &mut stopped => break,
                message = subscriber.next() => match message {
                    Some(m) => {
                        shared.registry.dispatch(&subject, m.payload);
                    }
                    // The connection closed; the session notices it.
                    None => break,
                },
            }
        }
        subscriber
    });
    Forwarder {
        stop,
        task: AbortOnDropHandle::new(task),
    }
}

/// The one broker operation in flight.
enum Op {
    Changed {
        sub: Vec<String>,
        unsub: Vec<String>,
        subscribers: Vec<(String, Subscriber)>,
        result: Result<(), String>,
    },
    Ping(Result<(), String>),
}

/// Unsubscribe `stopping`, subscribe `sub`, then a round trip: the server
/// has both when it is echoed (unless the driver re-established the
/// connection meanwhile, which fails the batch).
fn change_op(
    client: Client,
    acks: Arc<Acks>,
    sub: Vec<String>,
    unsub: Vec<String>,
    stopping: Vec<Forwarder>,
    timeout: Duration,
) -> BoxFuture<'static, Op> {
    Box::pin(async move {
        let mut subscribers = Vec::with_capacity(sub.len());
        let connects_before = connects(&client);
        let work = async {
            for f in stopping {
                let _ = f.stop.send(());
                if let Ok(mut s) = f.task.await {
                    s.unsubscribe().await.map_err(|e| e.to_string())?;
                }
            }
            for subject in &sub {
                let s = client
                    .subscribe(subject.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                subscribers.push((subject.clone(), s));
            }
            acks.round_trip(timeout).await?;
            if connects(&client) != connects_before {
                return Err(
                    "the connection was re-established before SUB/UNSUB were acknowledged"
                        .to_owned(),
                );
            }
            Ok(())
        };
        let result = match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(format!("SUB/UNSUB not acknowledged within {timeout:?}")),
        };
        Op::Changed {
            sub,
            unsub,
            subscribers,
            result,
        }
    })
}

async fn run_session(
    shared: &Arc<Shared>,
    session: Session,
    cancel: &CancellationToken,
) -> SessionEnd {
    let Session { client, mut events } = session;
    let timeout = shared.config.command_timeout;
    // The session's own subscriptions come first, so the first batch's
    // round trip confirms them too: the round-trip echoes, then the census
    // requests (its answering task exists before anyone can count).
    let own = async {
        let (acks, echoes) = Acks::start(&client).await?;
        let root = format!("{}.*", crate::subject::CENSUS_ROOT);
        let requests = client
            .subscribe(root.clone())
            .await
            .map_err(|e| format!("SUB {root} failed: {e}"))?;
        Ok::<_, String>((acks, echoes, requests))
    };
    let (acks, _echoes, requests) = tokio::select! {
        _ = cancel.cancelled() => return SessionEnd::Cancelled,
        own = tokio::time::timeout(timeout, own) => match own {
            Ok(Ok(own)) => own,
            Ok(Err(e)) => return SessionEnd::Lost(e),
            Err(_) => return SessionEnd::Lost(format!("SUB not sent within {timeout:?}")),
        },
    };
    let _census = AbortOnDropHandle::new(tokio::spawn(answer_census(
        shared.clone(),
        client.clone(),
        requests,
    )));
    shared.set_client(Some((client.clone(), acks.clone())));
    let mut forwarders: HashMap<String, Forwarder> = HashMap::new();
    // Everything wanted is subscribed again (a no-op batch when nothing is).
    let mut op: Option<BoxFuture<'static, Op>> = Some(change_op(
        client.clone(),
        acks.clone(),
        shared.registry.take_all(),
        Vec::new(),
        Vec::new(),
        timeout,
    ));
    let mut announced = false;
    let mut tick = health_check_interval(shared.config.health_check_interval);
    loop {
        let busy = op.is_some();
        tokio::select! {
            _ = cancel.cancelled() => return SessionEnd::Cancelled,
            event = events.recv() => match event {
                Some(Event::Disconnected | Event::Closed) | None => {
                    return SessionEnd::Lost("connection lost".into());
                }
                Some(Event::ClientError(ClientError::MaxReconnects)) => {
                    return SessionEnd::Lost("connection lost".into());
                }
                Some(Event::SlowConsumer(sid) | Event::ServerError(ServerError::SlowConsumer(sid))) => {
                    shared.health.count_failed_delivery(&format!(
                        "NATS dropped messages of a subscription that fell behind (sid {sid})"
                    ));
                }
                Some(Event::ServerError(e)) => {
                    let e = e.to_string();
                    if e.contains("Permissions Violation for Publish") {
                        shared.health.record_lost(&e);
                    } else {
                        tracing::error!(backend = "nats", error = %e, "NATS server error");
                    }
                }
                Some(other) => tracing::debug!(backend = "nats", event = %other, "NATS event"),
            },
            done = in_flight(&mut op) => {
                op = None;
                match done {
                    Op::Changed { sub, unsub, subscribers, result: Ok(()) } => {
                        for (subject, s) in subscribers {
                            let f = forwarder(shared.clone(), subject.clone(), s);
                            forwarders.insert(subject, f);
                        }
                        shared.registry.applied(&mut lock(&shared.actual), &sub, &unsub);
                    }
                    Op::Changed { result: Err(e), .. } | Op::Ping(Err(e)) => {
                        return SessionEnd::Lost(e);
                    }
                    Op::Ping(Ok(())) => {}
                }
                if !announced {
                    announced = true;
                    shared.health.set_up(&shared.broker);
                }
            }
            _ = tick.tick(), if !busy => {
                let acks = acks.clone();
                op = Some(Box::pin(async move { Op::Ping(acks.round_trip(timeout).await) }));
            }
            _ = shared.registry.changed(), if !busy => {}
        }
        if op.is_none() && shared.registry.has_changes() {
            let (sub, unsub) = shared.registry.take_changes(&lock(&shared.actual));
            if !sub.is_empty() || !unsub.is_empty() {
                let stopping = unsub.iter().filter_map(|s| forwarders.remove(s)).collect();
                op = Some(change_op(
                    client.clone(),
                    acks.clone(),
                    sub,
                    unsub,
                    stopping,
                    timeout,
                ));
            }
        }
    }
}
