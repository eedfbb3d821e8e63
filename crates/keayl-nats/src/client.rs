//! [`NatsClient`]: the cable's [`PubSubClient`] over one NATS connection.

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::client::PublishErrorKind;
use async_nats::connection::State;
use async_nats::{Client, Subscriber};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use keayl_broker::{Background, BrokerClient, ConfigError, Core, Health};
use keayl_cable::pubsub::{
    BoxFuture, ClientHealth, PubSubClient, PubSubError, RemoteCallback, Subscribed, SubscriptionId,
};
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;

use crate::subject::{census_subject, subject_for};
use crate::{BACKEND, NatsConfig, config_from_url};

pub(crate) struct Shared {
    /// Configuration, redacted URL, wanted subjects, health.
    core: Core<NatsConfig>,
    /// The current session's connection and its round trips (`None` while
    /// reconnecting).
    client: Mutex<Option<(Client, Arc<Acks>)>>,
    /// The subjects subscribed on the current connection (what the census
    /// answers for).
    pub(crate) actual: Mutex<HashSet<String>>,
}

impl std::ops::Deref for Shared {
    type Target = Core<NatsConfig>;
    fn deref(&self) -> &Core<NatsConfig> {
        &self.core
    }
}

impl Shared {
    pub(crate) fn subject(&self, stream: &str) -> String {
        subject_for(&self.config.prefixed(stream))
    }

    pub(crate) fn set_client(&self, client: Option<(Client, Arc<Acks>)>) {
        *lock(&self.client) = client;
    }

    /// The connection, if it is up right now.
    fn connected(&self) -> Result<(Client, Arc<Acks>), String> {
        match lock(&self.client).clone() {
            Some((c, acks)) if c.connection_state() == State::Connected => Ok((c, acks)),
            _ => Err(format!(
                "nats {} is unreachable (reconnecting)",
                self.broker
            )),
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The networked half: a [`PubSubClient`] over NATS (one connection per
/// process, kept alive by a supervisor task). Most applications use
/// [`NatsPubSub`](crate::NatsPubSub), which wraps it in
/// [`External`](keayl_cable::pubsub::External).
pub struct NatsClient {
    shared: Arc<Shared>,
    task: Background,
}

impl std::fmt::Debug for NatsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsClient")
            .field("broker", &self.shared.broker)
            .field("channel_prefix", &self.shared.config.channel_prefix)
            .field("health", &self.shared.health)
            .finish_non_exhaustive()
    }
}

impl NatsClient {
    /// The configuration.
    pub fn config(&self) -> &NatsConfig {
        &self.shared.config
    }

    /// Number of subjects this process wants subscribed.
    pub fn channel_count(&self) -> usize {
        self.shared.registry.channel_count()
    }

    /// The NATS subject stream `stream` travels on (with this client's
    /// channel prefix; see [`subject_for`]).
    pub fn subject(&self, stream: &str) -> String {
        self.shared.subject(stream)
    }
}

impl BrokerClient for NatsClient {
    const BACKEND: &'static str = BACKEND;
    type Config = NatsConfig;

    fn config_from_url(url: &str) -> Result<NatsConfig, ConfigError> {
        config_from_url(url)
    }

    fn start(config: NatsConfig) -> Result<Self, ConfigError> {
        let task = Background::current(BACKEND)?;
        let (servers, credentials) = crate::config::servers(&config.url)?;
        let shared = Arc::new(Shared {
            core: Core::new(BACKEND, config),
            client: Mutex::new(None),
            actual: Mutex::new(HashSet::new()),
        });
        let supervised = shared.clone();
        task.spawn(|cancel| crate::session::supervise(supervised, servers, credentials, cancel));
        Ok(NatsClient { shared, task })
    }

    fn link(&self) -> Health {
        self.shared.health.clone()
    }

    fn shutdown(&self) {
        self.task.cancel();
    }
}

impl PubSubClient for NatsClient {
    fn subscribe(&self, stream: &str, callback: RemoteCallback) -> Subscribed {
        self.shared
            .subscribe(self.shared.subject(stream), stream, callback)
    }

    fn unsubscribe(&self, id: SubscriptionId) {
        self.shared.registry.remove(id);
    }

    /// Publish, then wait (at most `command_timeout`) until the server has
    /// read the message: a round trip queued after it comes back
    /// (concurrent broadcasts share one, echoed on the session's private
    /// subject). A message over the server's `max_payload` fails with
    /// [`PubSubError::Failed`]; one the server does not confirm, or confirms on a connection the driver
    /// re-established after it was sent (it may have been lost in
    /// between), fails with [`PubSubError::Unavailable`] and is counted
    /// lost.
    fn publish(&self, stream: &str, message: Bytes) -> BoxFuture<'static, Result<(), PubSubError>> {
        let shared = self.shared.clone();
        let subject = shared.subject(stream);
        Box::pin(async move {
            let (client, acks) = shared
                .connected()
                .map_err(|e| shared.lost(format!("{e}; broadcast not sent")))?;
            let timeout = shared.config.command_timeout;
            let connects_before = connects(&client);
            let sent = async {
                client
                    .publish(subject.clone(), message)
                    .await
                    .map_err(|e| match e.kind() {
                        PublishErrorKind::MaxPayloadExceeded => {
                            PubSubError::Failed(format!("NATS refused the broadcast: {e}"))
                        }
                        _ => shared.lost(format!("PUBLISH to {subject:?} failed: {e}")),
                    })?;
                acks.after_queued(timeout).await.map_err(|e| {
                    shared.lost(format!("PUBLISH to {subject:?} not confirmed: {e}"))
                })?;
                if connects(&client) != connects_before {
                    return Err(shared.lost(format!(
                        "PUBLISH to {subject:?} not confirmed: the connection was re-established after it was sent"
                    )));
                }
                Ok(())
            };
            match tokio::time::timeout(timeout, sent).await {
                Ok(result) => result,
                Err(_) => Err(shared.lost(format!(
                    "PUBLISH to {subject:?} not confirmed within {timeout:?}"
                ))),
            }
        })
    }

    /// How many processes are subscribed to `stream`: the ones that answer
    /// a census request within [`NatsConfig::census_window`] (each answers
    /// when the stream is subscribed on its connection). NATS does not tell
    /// a client how many subscribers a subject has, so this is a count of
    /// the answers, not the server's bookkeeping.
    fn subscriber_count(&self, stream: &str) -> BoxFuture<'static, Result<usize, PubSubError>> {
        let shared = self.shared.clone();
        let subject = census_subject(&shared.subject(stream));
        Box::pin(async move {
            let (client, _) = shared.connected().map_err(PubSubError::Unavailable)?;
            let failed = |e: &dyn std::fmt::Display| {
                PubSubError::Unavailable(format!("NATS subscriber count failed: {e}"))
            };
            let inbox = client.new_inbox();
            let mut answers = client
                .subscribe(inbox.clone())
                .await
                .map_err(|e| failed(&e))?;
            client
                .publish_with_reply(subject, inbox, Bytes::new())
                .await
                .map_err(|e| failed(&e))?;
            client.flush().await.map_err(|e| failed(&e))?;
            let window = tokio::time::sleep(shared.config.census_window);
            tokio::pin!(window);
            let mut count = 0;
            loop {
                tokio::select! {
                    _ = &mut window => break,
                    answer = answers.next() => match answer {
                        // A status ("no responders" when nobody answers) is
                        // the server's, not a process's answer.
                        Some(m) if m.status.is_some() => {}
                        Some(_) => count += 1,
                        None => return Err(failed(&"the connection closed")),
                    },
                }
            }
            Ok(count)
        })
    }

    fn health(&self) -> ClientHealth {
        self.shared.health.client_health()
    }
}

/// Answers the census requests that `requests` (the session's subscription
/// to `_keayl_census.*`, made before its first subscribe batch) receives,
/// for the subjects subscribed on `client`, until the connection ends (the
/// session aborts it).
pub(crate) async fn answer_census(shared: Arc<Shared>, client: Client, mut requests: Subscriber) {
    let prefix_len = crate::subject::CENSUS_ROOT.len() + 1;
    while let Some(request) = requests.next().await {
        let Some(reply) = request.reply else { continue };
        let subject = request.subject.get(prefix_len..).unwrap_or_default();
        if lock(&shared.actual).contains(subject) {
            // Best effort: a count that misses this answer is one low.
            let _ = client.publish(reply, Bytes::from_static(b"1")).await;
        }
    }
}

/// How many times `client`'s driver has established its connection: a
/// change between sending something and its confirmation means it may
/// have been lost on the old connection.
pub(crate) fn connects(client: &Client) -> u64 {
    client.statistics().connects.load(Ordering::Relaxed)
}

/// Root token of the sessions' private round-trip subjects:
/// `_keayl_ack.<session id>`.
const ACK_ROOT: &str = "_keayl_ack";

type RoundTrip = futures_util::future::Shared<BoxFuture<'static, Result<(), String>>>;

/// Round trips to the server on one connection (one session): the
/// acknowledgement of a subscribe batch, the health check, and publish
/// confirmations.
///
/// NATS acknowledges nothing, but it reads a connection in order and
/// delivers in order. So the session subscribes to a subject of its own,
/// `_keayl_ack.<random id>`, and a round trip publishes the next counter
/// value there and waits until the server echoes it back: everything sent
/// before it has been read by then. As tokens are taken in order and each
/// is published after it is taken, an echo of token `n` completes every
/// round trip with a token up to `n`. Nothing here relies on request
/// semantics ("no responders"), which any subscriber to `>` would answer
/// or stall.
///
/// Publish confirmations are coalesced: a publisher whose message is queued
/// joins the round trip that has not been sent yet (or makes it); the round
/// trip leaves that slot just before it is sent, so every message it
/// confirms was queued before it.
pub(crate) struct Acks {
    client: Client,
    subject: String,
    /// The last token taken.
    sent: AtomicU64,
    /// The highest token echoed (the echo task's sender closes with the
    /// session).
    echoed: watch::Receiver<u64>,
    /// The publish confirmation not sent yet, which publishers join.
    next: Mutex<Option<RoundTrip>>,
}

impl Acks {
    /// Subscribe `client` to a fresh private subject; returns the round
    /// trips and the task reading the echoes (which the session keeps
    /// until it ends).
    pub(crate) async fn start(
        client: &Client,
    ) -> Result<(Arc<Acks>, AbortOnDropHandle<()>), String> {
        let id = std::collections::hash_map::RandomState::new()
            .hash_one((std::time::SystemTime::now(), std::process::id()));
        let subject = format!("{ACK_ROOT}.{id:016x}");
        let mut echoes = client
            .subscribe(subject.clone())
            .await
            .map_err(|e| format!("SUB {subject} failed: {e}"))?;
        let (tx, echoed) = watch::channel(0u64);
        let task = tokio::spawn(async move {
            while let Some(m) = echoes.next().await {
                let token = std::str::from_utf8(&m.payload)
                    .ok()
                    .and_then(|t| t.parse::<u64>().ok());
                if let (None, Some(n)) = (&m.status, token) {
                    tx.send_if_modified(|echoed| {
                        let newer = n > *echoed;
                        *echoed = (*echoed).max(n);
                        newer
                    });
                }
            }
        });
        let acks = Acks {
            client: client.clone(),
            subject,
            sent: AtomicU64::new(0),
            echoed,
            next: Mutex::new(None),
        };
        Ok((Arc::new(acks), AbortOnDropHandle::new(task)))
    }

    /// A round trip, at most `timeout`: completes once the server has read
    /// everything queued on the connection before this call.
    pub(crate) async fn round_trip(&self, timeout: Duration) -> Result<(), String> {
        let token = self.sent.fetch_add(1, Ordering::SeqCst) + 1;
        let mut echoed = self.echoed.clone();
        let trip = async {
            self.client
                .publish(self.subject.clone(), Bytes::from(token.to_string()))
                .await
                .map_err(|e| format!("round trip to the server failed: {e}"))?;
            match echoed.wait_for(|&n| n >= token).await {
                Ok(_) => Ok(()),
                Err(_) => Err("the connection closed before the server echoed".to_owned()),
            }
        };
        match tokio::time::timeout(timeout, trip).await {
            Ok(result) => result,
            Err(_) => Err(format!("no echo from the server within {timeout:?}")),
        }
    }

    /// The coalesced [`round_trip`](Self::round_trip) a publisher whose
    /// message is queued waits for.
    fn after_queued(self: &Arc<Self>, timeout: Duration) -> RoundTrip {
        let mut next = lock(&self.next);
        if let Some(trip) = next.as_ref() {
            return trip.clone();
        }
        // Weak: the slot holding the trip must not keep the session's
        // round trips alive (its publishers hold them while they wait).
        let acks = Arc::downgrade(self);
        let trip: BoxFuture<'static, Result<(), String>> = Box::pin(async move {
            let acks = acks.upgrade().ok_or("the session ended")?;
            lock(&acks.next).take();
            acks.round_trip(timeout).await
        });
        let trip = trip.shared();
        *next = Some(trip.clone());
        trip
    }
}
