//! The supervisor task: the reconnect loop ([`Supervisor::run`]) around
//! the session loop, which drives the one connection (`poll_message` sees
//! the notifications), keeps its `LISTEN`s in step with the registry,
//! delivers messages in order (with the positions they carry), and runs the
//! health check and the maintenance of the spill, history and session
//! tables.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use keayl_broker::{OpError, SessionEnd, health_check_interval, in_flight};
use keayl_cable::pubsub::{BoxFuture, PubSubError};
use tokio_postgres::{AsyncMessage, Client, NoTls, Statement};
use tokio_util::sync::CancellationToken;

use crate::LISTENERS_TABLE;
use crate::channel::quote_ident;
use crate::client::Shared;
use crate::history::{self, PURGE_INTERVAL};
use crate::schema::{Conn, setup, timed};
use crate::spill::{Delivery, delivery, expire_spilled, expiry_interval};

/// The supervisor task: sessions on a fresh connection until `cancel`.
pub(crate) async fn supervise(shared: Arc<Shared>, cancel: CancellationToken) {
    let (shared, cancel) = (&shared, &cancel);
    shared
        .supervisor()
        .run(
            || cancel.cancelled(),
            || connect(shared),
            |(client, connection)| run_session(shared, client, connection, cancel),
            || shared.set_conn(None),
        )
        .await;
}

/// The driver's half of a connection, which the session loop polls.
type Connection =
    tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>;

/// One connection attempt.
async fn connect(shared: &Shared) -> Result<(Client, Connection), String> {
    let timeout = shared.config.connect_timeout;
    match tokio::time::timeout(
        timeout + Duration::from_millis(100),
        shared.pg_config.connect(NoTls),
    )
    .await
    {
        Ok(Ok(pair)) => Ok(pair),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("connecting timed out after {timeout:?}")),
    }
}

/// The one operation in flight on the connection (besides publishers' and
/// spill fetches, which the driver interleaves).
enum Op {
    Setup(Result<Arc<Conn>, OpError>),
    Changed {
        sub: Vec<String>,
        unsub: Vec<String>,
        result: Result<(), OpError>,
    },
    Check(Result<(), OpError>),
}

/// `LISTEN` to `sub` and `UNLISTEN` from `unsub`, recording the change in
/// [`LISTENERS_TABLE`] (when it exists). A refused recording is only
/// logged: `subscriber_count` is off, nothing else.
async fn listen(
    client: &Client,
    conn: &Conn,
    sub: &[String],
    unsub: &[String],
    timeout: Duration,
) -> Result<(), OpError> {
    let tables = conn.tables.as_ref();
    let register = tables.map(|t| (&t.register, "registering listeners"));
    if let Err(e) = toggle(client, "LISTEN", sub, register, timeout).await? {
        tracing::warn!(
            backend = "postgres",
            error = %e,
            "could not record listeners in {LISTENERS_TABLE}; subscriber_count will miss them"
        );
    }
    let unregister = tables.map(|t| (&t.unregister, "unregistering listeners"));
    if let Err(e) = toggle(client, "UNLISTEN", unsub, unregister, timeout).await? {
        tracing::warn!(
            backend = "postgres",
            error = %e,
            "could not remove listeners from {LISTENERS_TABLE}"
        );
    }
    Ok(())
}

/// `verb` (`LISTEN` or `UNLISTEN`) every channel in one round trip, then
/// run `record` (the statement recording them, and what it does, for its
/// timeout error) with them. A fatal error fails the whole; the database
/// refusing the record is the inner error.
async fn toggle(
    client: &Client,
    verb: &str,
    channels: &[String],
    record: Option<(&Statement, &str)>,
    timeout: Duration,
) -> Result<Result<(), String>, OpError> {
    if channels.is_empty() {
        return Ok(Ok(()));
    }
    let sql: String = channels
        .iter()
        .map(|c| format!("{verb} {};", quote_ident(c)))
        .collect();
    timed(timeout, verb, client.batch_execute(&sql)).await?;
    let Some((record, what)) = record else {
        return Ok(Ok(()));
    };
    match timed(timeout, what, client.execute(record, &[&channels])).await {
        Ok(_) => Ok(Ok(())),
        Err(OpError::Fatal(e)) => Err(OpError::Fatal(e)),
        Err(OpError::Refused(e)) => Ok(Err(e)),
    }
}

/// One session on a connection, to its end: set up, `LISTEN` to everything
/// wanted, then deliver notifications, keep the `LISTEN`s in step with the
/// registry and check the link, one operation in flight at a time.
async fn run_session(
    shared: &Arc<Shared>,
    client: Client,
    mut connection: Connection,
    cancel: &CancellationToken,
) -> SessionEnd {
    let client = Arc::new(client);
    let timeout = shared.config.command_timeout;
    let mut conn: Option<Arc<Conn>> = None;
    let mut actual: HashSet<String> = HashSet::new();
    let mut op: Option<BoxFuture<'static, Op>> = {
        let client = client.clone();
        Some(Box::pin(
            async move { Op::Setup(setup(client, timeout).await) },
        ))
    };
    let mut announced = false;
    let mut deliveries: FuturesOrdered<Delivery> = FuturesOrdered::new();
    let mut tick = health_check_interval(shared.config.health_check_interval);
    let mut last_expiry = Instant::now();
    let mut last_purge = Instant::now();
    loop {
        let busy = op.is_some();
        tokio::select! {
            _ = cancel.cancelled() => return SessionEnd::Cancelled,
            message = std::future::poll_fn(|cx| connection.poll_message(cx)) => match message {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    deliveries.push_back(delivery(shared, conn.as_ref(), n.channel(), n.payload()));
                }
                Some(Ok(AsyncMessage::Notice(n))) => {
                    tracing::debug!(backend = "postgres", severity = n.severity(), "{}", n.message());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return SessionEnd::Lost(e.to_string()),
                None => return SessionEnd::Lost("connection closed".into()),
            },
            Some(d) = deliveries.next(), if !deliveries.is_empty() => match d {
                Ok((channel, payload, position)) => {
                    shared.registry.dispatch_at(&channel, payload, position);
                }
                Err(e) => shared.health.record_failed_delivery(&e),
            },
            done = in_flight(&mut op) => {
                op = None;
                match done {
                    Op::Setup(Ok(c)) => {
                        shared.set_conn(Some(c.clone()));
                        // Everything wanted is listened to again (a no-op
                        // batch when nothing is).
                        let (client, c2) = (client.clone(), c.clone());
                        let sub = shared.registry.take_all();
                        op = Some(Box::pin(async move {
                            let result = listen(&client, &c2, &sub, &[], timeout).await;
                            Op::Changed { sub, unsub: Vec::new(), result }
                        }));
                        conn = Some(c);
                        continue;
                    }
                    Op::Setup(Err(OpError::Fatal(e) | OpError::Refused(e))) => {
                        return SessionEnd::Lost(format!("setting up the listener: {e}"));
                    }
                    Op::Changed { sub, unsub, result: Ok(()) } => {
                        shared.registry.applied(&mut actual, &sub, &unsub);
                    }
                    Op::Changed { sub, unsub, result: Err(OpError::Refused(e)) } => {
                        tracing::error!(backend = "postgres", channels = sub.len() + unsub.len(), error = %e, "PostgreSQL refused LISTEN/UNLISTEN");
                        shared.registry.fail(&sub, &PubSubError::Failed(e));
                    }
                    Op::Changed { result: Err(OpError::Fatal(e)), .. } | Op::Check(Err(OpError::Fatal(e))) => {
                        return SessionEnd::Lost(e);
                    }
                    Op::Check(Err(OpError::Refused(e))) => {
                        tracing::warn!(backend = "postgres", error = %e, "maintenance statement failed");
                    }
                    Op::Check(Ok(())) => {}
                }
                if !announced && conn.is_some() {
                    announced = true;
                    shared.health.set_up(&shared.broker);
                }
            }
            _ = tick.tick(), if !busy => {
                let client = client.clone();
                let expire = (last_expiry.elapsed() >= expiry_interval(shared.config.spill_ttl))
                    .then(|| conn.clone())
                    .flatten();
                if expire.is_some() {
                    last_expiry = Instant::now();
                }
                let purge = (last_purge.elapsed() >= PURGE_INTERVAL)
                    .then(|| conn.clone())
                    .flatten();
                if purge.is_some() {
                    last_purge = Instant::now();
                }
                let ttl = shared.config.spill_ttl.as_secs_f64();
                op = Some(Box::pin(async move {
                    let result = async {
                        timed(timeout, "health check", client.simple_query("SELECT 1")).await?;
                        if let Some(c) = expire
                            && let Some(t) = &c.tables
                        {
                            expire_spilled(&client, &t.expire, ttl, timeout * 5).await?;
                        }
                        if let Some(c) = purge
                            && let Some(h) = &c.history
                        {
                            history::purge(&client, h, timeout * 5).await?;
                        }
                        Ok(())
                    }
                    .await;
                    Op::Check(result)
                }));
            }
            _ = shared.registry.changed(), if !busy => {}
        }
        if op.is_none()
            && let Some(c) = &conn
            && shared.registry.has_changes()
        {
            let (sub, unsub) = shared.registry.take_changes(&actual);
            if !sub.is_empty() || !unsub.is_empty() {
                let (client, c) = (client.clone(), c.clone());
                op = Some(Box::pin(async move {
                    let result = listen(&client, &c, &sub, &unsub, timeout).await;
                    Op::Changed { sub, unsub, result }
                }));
            }
        }
    }
}
