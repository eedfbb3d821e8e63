//! [`NatsClient`]: the cable's [`PubSubClient`] over one NATS connection.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::Client;
use async_nats::client::PublishErrorKind;
use async_nats::connection::State;
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use keayl_broker::{Background, BrokerClient, ConfigError, Core, Health};
use keayl_cable::pubsub::{
    BoxFuture, ClientHealth, PubSubClient, PubSubError, RemoteCallback, Subscribed, SubscriptionId,
};

use crate::subject::{census_subject, subject_for};
use crate::{BACKEND, NatsConfig, config_from_url};

pub(crate) struct Shared {
    /// Configuration, redacted URL, wanted subjects, health.
    core: Core<NatsConfig>,
    /// The current session's connection and its publish confirmations
    /// (`None` while reconnecting).
    client: Mutex<Option<(Client, Arc<Confirmations>)>>,
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

    pub(crate) fn set_client(&self, client: Option<Client>) {
        *lock(&self.client) = client.map(|c| (c, Arc::default()));
    }

    /// The connection, if it is up right now.
    fn connected(&self) -> Result<(Client, Arc<Confirmations>), String> {
        match lock(&self.client).clone() {
            Some((c, confirm)) if c.connection_state() == State::Connected => Ok((c, confirm)),
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
    /// read the message: a round trip queued after it (concurrent
    /// broadcasts share one). A message over the
    /// server's `max_payload` fails with [`PubSubError::Failed`]; one the
    /// server does not confirm fails with [`PubSubError::Unavailable`] and
    /// is counted lost.
    fn publish(&self, stream: &str, message: Bytes) -> BoxFuture<'static, Result<(), PubSubError>> {
        let shared = self.shared.clone();
        let subject = shared.subject(stream);
        Box::pin(async move {
            let (client, confirmations) = shared
                .connected()
                .map_err(|e| shared.lost(format!("{e}; broadcast not sent")))?;
            let timeout = shared.config.command_timeout;
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
                confirmations
                    .after_queued(&client, timeout)
                    .await
                    .map_err(|e| shared.lost(format!("PUBLISH to {subject:?} not confirmed: {e}")))
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

/// Answers census requests for the subjects subscribed on `client` until
/// the connection ends (the session aborts it).
pub(crate) async fn answer_census(shared: Arc<Shared>, client: Client) {
    let root = format!("{}.*", crate::subject::CENSUS_ROOT);
    let Ok(mut requests) = client.subscribe(root).await else {
        return;
    };
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

type RoundTrip = futures_util::future::Shared<BoxFuture<'static, Result<(), String>>>;

/// Publish confirmations on one connection, coalesced: a publisher whose message is queued
/// joins the round trip that has not been sent yet (or makes it); the round
/// trip leaves that slot just before it is sent, so every message it
/// confirms was queued before it. Under load one round trip confirms many
/// broadcasts; alone, a broadcast costs one.
#[derive(Default)]
pub(crate) struct Confirmations {
    next: Arc<Mutex<Option<RoundTrip>>>,
}

impl Confirmations {
    /// Completes once the server has read everything queued on `client`
    /// before this call.
    fn after_queued(&self, client: &Client, timeout: Duration) -> RoundTrip {
        let mut next = lock(&self.next);
        if let Some(trip) = next.as_ref() {
            return trip.clone();
        }
        let slot = self.next.clone();
        let client = client.clone();
        let trip: BoxFuture<'static, Result<(), String>> = Box::pin(async move {
            lock(&slot).take();
            round_trip(&client, timeout).await
        });
        let trip = trip.shared();
        *next = Some(trip.clone());
        trip
    }
}

/// A round trip to the server: a request nobody answers, which the server
/// turns down with "no responders" once it has read everything sent before
/// it (so a subscription sent earlier is in place). The acknowledgement of
/// a subscribe batch and the health check.
pub(crate) async fn round_trip(client: &Client, timeout: Duration) -> Result<(), String> {
    let subject = client.new_inbox();
    match tokio::time::timeout(timeout, client.request(subject, Bytes::new())).await {
        Err(_) => Err(format!("no reply from the server within {timeout:?}")),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => match e.kind() {
            async_nats::RequestErrorKind::NoResponders => Ok(()),
            _ => Err(format!("round trip to the server failed: {e}")),
        },
    }
}
