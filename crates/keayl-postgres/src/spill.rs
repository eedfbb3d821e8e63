//! Payloads `NOTIFY` cannot carry: which ones spill, the typed refusals
//! and counters, the listener's fetch of a spilled row, and the table's
//! upkeep (expiry, vacuum).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keayl_broker::OpError;
use keayl_cable::pubsub::{BoxFuture, Position, PubSubError};
use tokio_postgres::{Client, NoTls, Statement};

use crate::client::Shared;
use crate::history::parse_positioned;
use crate::schema::{Conn, timed};
use crate::{POSITION_MARKER, SPILL_TABLE};
#[cfg(doc)]
use crate::{PostgresClient, PostgresConfig};

/// PostgreSQL's `NOTIFY` payload limit: payloads must be shorter than this
/// many bytes.
pub const NOTIFY_LIMIT: usize = 8000;

/// The prefix of a `NOTIFY` payload standing for a row of [`SPILL_TABLE`]:
/// `__keayl_large_payload:<id>`.
pub const SPILL_MARKER: &str = "__keayl_large_payload:";

/// Why a broadcast was not published, for callers that branch on the
/// spill table's limits ([`PostgresClient::broadcast_checked`]). Through
/// the [`PubSub`](keayl_cable::PubSub) trait the same refusals arrive as
/// [`PubSubError::Failed`] carrying this error's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BroadcastError {
    /// The payload is longer than [`PostgresConfig::max_payload_bytes`] (or
    /// than [`PostgresConfig::max_spill_bytes`], so it could never fit);
    /// refused without reaching the database. Retrying cannot help.
    #[error("payload of {len} bytes refused: the limit is {max} bytes (max_payload_bytes)")]
    PayloadTooLarge {
        /// The payload's length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The spill table holds [`PostgresConfig::max_spill_bytes`] of payloads
    /// that listeners have not read yet (all processes sharing the database
    /// count); nothing was published. Space frees as listeners read their
    /// rows, or after [`PostgresConfig::spill_ttl`]: retrying later may work.
    #[error(
        "payload of {len} bytes refused: the spill table {SPILL_TABLE} is full ({max_spill_bytes} bytes of unread payloads, max_spill_bytes)"
    )]
    SpillFull {
        /// The payload's length in bytes.
        len: usize,
        /// The bound in bytes.
        max_spill_bytes: usize,
    },
    /// Any other failure (database unreachable, statement refused, …).
    #[error(transparent)]
    PubSub(#[from] PubSubError),
}

impl From<BroadcastError> for PubSubError {
    fn from(e: BroadcastError) -> Self {
        match e {
            BroadcastError::PubSub(e) => e,
            refused => PubSubError::Failed(refused.to_string()),
        }
    }
}

/// Counters of the spill table's use by this process (see the crate docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpillStats {
    /// Payloads published through the spill table.
    pub spilled: u64,
    /// Broadcasts refused with [`BroadcastError::PayloadTooLarge`].
    pub refused_too_large: u64,
    /// Broadcasts refused with [`BroadcastError::SpillFull`].
    pub refused_spill_full: u64,
}

/// The live counters behind [`SpillStats`].
#[derive(Default)]
pub(crate) struct SpillCounters {
    pub(crate) spilled: AtomicU64,
    pub(crate) refused_too_large: AtomicU64,
    pub(crate) refused_spill_full: AtomicU64,
}

impl SpillCounters {
    pub(crate) fn snapshot(&self) -> SpillStats {
        SpillStats {
            spilled: self.spilled.load(Ordering::Relaxed),
            refused_too_large: self.refused_too_large.load(Ordering::Relaxed),
            refused_spill_full: self.refused_spill_full.load(Ordering::Relaxed),
        }
    }
}

/// How a payload travels.
pub(crate) enum Route<'a> {
    /// In the `NOTIFY` itself, as text.
    Notify(&'a str),
    /// Through [`SPILL_TABLE`].
    Spill,
}

/// Whether `message` fits a `NOTIFY` on a database whose encoding is
/// UTF-8 (`utf8_db`) or not, with `overhead` bytes added to it (a
/// position). A message starting with a marker always spills, so a
/// listener never mistakes it for one.
pub(crate) fn route(message: &[u8], utf8_db: bool, overhead: usize) -> Route<'_> {
    match std::str::from_utf8(message) {
        Ok(text)
            if text.len() + overhead < NOTIFY_LIMIT
                && !text.contains('\0')
                && !text.starts_with(SPILL_MARKER)
                && !text.starts_with(POSITION_MARKER)
                && (utf8_db || text.is_ascii()) =>
        {
            Route::Notify(text)
        }
        _ => Route::Spill,
    }
}

/// Vacuum the spill table on a short-lived connection of its own (the
/// listening connection must not stall behind it), at most one per process
/// at a time; `SKIP_LOCKED` skips it when another process is vacuuming.
/// Deleted payloads stay on disk as dead tuples until a vacuum, and
/// autovacuum visits a database only once a minute (by default): a flood
/// would grow the table by far more than the bound in that time.
pub(crate) fn spawn_vacuum(shared: &Arc<Shared>) {
    if shared.vacuuming.swap(true, Ordering::AcqRel) {
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let mut pg_config = shared.pg_config.clone();
        let name = format!(
            "{}-vacuum",
            pg_config.get_application_name().unwrap_or("keayl-cable")
        );
        pg_config.application_name(name);
        let timeout = shared.config.connect_timeout + shared.config.command_timeout * 30;
        let vacuum = async {
            let (client, connection) = pg_config.connect(NoTls).await?;
            let driver = tokio::spawn(connection);
            let result = client
                .batch_execute("VACUUM (SKIP_LOCKED) keayl_cable_large_payloads")
                .await;
            drop(client);
            let _ = driver.await;
            result
        };
        let started = Instant::now();
        tokio::select! {
            _ = shared.cancel.cancelled() => {}
            result = tokio::time::timeout(timeout, vacuum) => match result {
                Ok(Ok(())) => tracing::debug!(
                    backend = "postgres",
                    took = ?started.elapsed(),
                    "vacuumed {SPILL_TABLE}"
                ),
                Ok(Err(e)) => tracing::warn!(
                    backend = "postgres",
                    error = %e,
                    "could not vacuum {SPILL_TABLE}; its disk size is left to autovacuum"
                ),
                Err(_) => tracing::warn!(
                    backend = "postgres",
                    "vacuuming {SPILL_TABLE} timed out after {timeout:?}"
                ),
            },
        }
        shared.vacuuming.store(false, Ordering::Release);
    });
}

/// Rows the periodic maintenance deletes per statement, and statements per
/// round: expiry stays within the statement timeout, and keeps the
/// connection's one maintenance slot for a bounded time, however much has
/// expired (a table filled by a version without the bound, say).
const EXPIRE_BATCH: i64 = 100;
const EXPIRE_ROUNDS: usize = 10;

/// How often a process deletes expired spilled rows: twice per TTL, at most
/// every 30 s. (Rows are also reclaimed when a spill needs the room.)
pub(crate) fn expiry_interval(ttl: Duration) -> Duration {
    (ttl / 2).min(Duration::from_secs(30))
}

/// Delete expired spilled rows, [`EXPIRE_BATCH`] per statement, at most
/// [`EXPIRE_ROUNDS`] statements.
pub(crate) async fn expire_spilled(
    client: &Client,
    expire: &Statement,
    ttl_secs: f64,
    timeout: Duration,
) -> Result<(), OpError> {
    for _ in 0..EXPIRE_ROUNDS {
        let deleted = timed(
            timeout,
            "expiring spilled payloads",
            client.execute(expire, &[&ttl_secs, &EXPIRE_BATCH]),
        )
        .await?;
        if deleted < EXPIRE_BATCH as u64 {
            break;
        }
    }
    Ok(())
}

/// A notification's channel, payload and position (when it carries one),
/// once it can be delivered.
pub(crate) type Delivery = BoxFuture<'static, Result<(String, Bytes, Option<Position>), String>>;

/// The delivery of a notification: its payload at once, or the spilled row
/// it names, fetched on the listening connection; with the position a
/// positioned payload (`__keayl_position:<epoch>:<offset>:<payload>`)
/// carries. A payload that only looks positioned (malformed) is delivered
/// as it came, without a position.
pub(crate) fn delivery(
    shared: &Shared,
    conn: Option<&Arc<Conn>>,
    channel: &str,
    payload: &str,
) -> Delivery {
    let channel = channel.to_owned();
    let (position, payload) = match parse_positioned(payload) {
        Some((position, body)) => (Some(position), body),
        None => (None, payload),
    };
    let Some(id) = payload.strip_prefix(SPILL_MARKER) else {
        let payload = Bytes::copy_from_slice(payload.as_bytes());
        return Box::pin(std::future::ready(Ok((channel, payload, position))));
    };
    let id: Option<i64> = id.parse().ok();
    let tables = conn.filter(|c| c.tables.is_some()).cloned();
    let timeout = shared.config.command_timeout * 5;
    Box::pin(async move {
        let id = id.ok_or_else(|| format!("malformed spill marker on channel {channel:?}"))?;
        let conn = tables.ok_or_else(|| {
            format!("spilled payload {id} on {channel:?}: {SPILL_TABLE} unavailable")
        })?;
        let Some(t) = &conn.tables else {
            unreachable!()
        };
        match tokio::time::timeout(timeout, conn.client.query_one(&t.fetch, &[&id])).await {
            Ok(Ok(row)) => match row.get::<_, Option<Vec<u8>>>(0) {
                Some(payload) => Ok((channel, Bytes::from(payload), position)),
                None => Err(format!(
                    "spilled payload {id} on {channel:?} not found (expired?)"
                )),
            },
            Ok(Err(e)) => Err(format!("fetching spilled payload {id} on {channel:?}: {e}")),
            Err(_) => Err(format!(
                "fetching spilled payload {id} on {channel:?} timed out"
            )),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert!(matches!(route(b"\"hi\"", true, 0), Route::Notify(_)));
        assert!(matches!(route(&[b'a'; 7999], true, 0), Route::Notify(_)));
        assert!(matches!(route(&[b'a'; 8000], true, 0), Route::Spill));
        assert!(matches!(route(b"a\0b", true, 0), Route::Spill));
        assert!(matches!(route(&[0xff, 0xfe], true, 0), Route::Spill));
        assert!(matches!(
            route(b"__keayl_large_payload:1", true, 0),
            Route::Spill
        ));
        assert!(matches!(
            route(b"__keayl_position:e:1:x", true, 0),
            Route::Spill
        ));
        assert!(matches!(route("é".as_bytes(), false, 0), Route::Spill));
        assert!(matches!(route("é".as_bytes(), true, 0), Route::Notify(_)));
        // A position's bytes count towards the limit.
        assert!(matches!(route(&[b'a'; 7899], true, 100), Route::Notify(_)));
        assert!(matches!(route(&[b'a'; 7900], true, 100), Route::Spill));
    }

    #[test]
    fn refusals_and_their_errors() {
        let too_large = BroadcastError::PayloadTooLarge { len: 11, max: 10 };
        let full = BroadcastError::SpillFull {
            len: 9000,
            max_spill_bytes: 8000,
        };
        for (e, words) in [
            (too_large, ["11 bytes", "10 bytes", "max_payload_bytes"]),
            (full, ["9000 bytes", SPILL_TABLE, "max_spill_bytes"]),
        ] {
            match PubSubError::from(e) {
                PubSubError::Failed(text) => {
                    assert!(words.iter().all(|w| text.contains(w)), "{text}")
                }
                other => panic!("{other:?}"),
            }
        }
        // Other failures keep their kind.
        let down = PubSubError::Unavailable("down".into());
        assert_eq!(PubSubError::from(BroadcastError::from(down.clone())), down);
    }

    #[test]
    fn expiry_runs_twice_per_ttl_at_most_every_30_s() {
        assert_eq!(
            expiry_interval(Duration::from_secs(300)),
            Duration::from_secs(30)
        );
        assert_eq!(
            expiry_interval(Duration::from_secs(30)),
            Duration::from_secs(15)
        );
        assert_eq!(
            expiry_interval(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
    }
}
