//! Publishing: a `NOTIFY`, or a spill for a payload `NOTIFY` cannot carry.

use std::sync::Arc;

use keayl_cable::pubsub::PubSubError;

use crate::client::Shared;
use crate::history::{POSITION_OVERHEAD, keeps_history, limit_i64, ttl_secs};
use crate::spill::{Route, route, spawn_vacuum};
use crate::{BroadcastError, NOTIFY_LIMIT, SPILL_TABLE};

/// A driver error as the caller sees it: refused by the database, or the
/// database unavailable.
pub(crate) fn pg_error(e: &tokio_postgres::Error) -> PubSubError {
    if e.as_db_error().is_some() {
        PubSubError::Failed(e.to_string())
    } else {
        PubSubError::Unavailable(e.to_string())
    }
}

/// How a published payload travelled.
pub(crate) enum Sent {
    /// In a `NOTIFY`.
    Notified,
    /// Through the spill table.
    Spilled,
}

/// Publish `message` on `stream` (broker channel `channel`; no counting:
/// the caller records the outcome). When the stream keeps history (and the
/// history tables exist) the message gets its position, is recorded and
/// the stream trimmed in the same statement as its `NOTIFY`, which carries
/// the position (`__keayl_position:<epoch>:<offset>:…`); otherwise it is a
/// plain `NOTIFY` (or spill), as Rails' adapter sends it.
pub(crate) async fn publish(
    shared: &Arc<Shared>,
    stream: &str,
    channel: &str,
    message: &[u8],
) -> Result<Sent, BroadcastError> {
    let config = &shared.config;
    // A payload that could never fit the spill table is as hopeless as one
    // over the per-payload limit: refuse it the same way, up front.
    let max = config
        .max_payload_bytes
        .min(config.max_spill_bytes.max(NOTIFY_LIMIT - 1));
    if message.len() > max {
        return Err(BroadcastError::PayloadTooLarge {
            len: message.len(),
            max,
        });
    }
    if channel.contains('\0') {
        return Err(
            PubSubError::Failed("PostgreSQL channel names cannot contain NUL".into()).into(),
        );
    }
    let Some(conn) = shared.conn() else {
        return Err(PubSubError::Unavailable(format!(
            "postgres {} is unreachable (reconnecting); broadcast not sent",
            shared.broker
        ))
        .into());
    };
    let timeout = config.command_timeout;
    let limits = config.history.limits_for(stream);
    // History on, but its tables could not be created: plain broadcasts
    // (the connection's setup logged why).
    let history = keeps_history(&limits)
        .then_some(conn.history.as_ref())
        .flatten();
    let (limit, ttl) = (limit_i64(limits.limit), ttl_secs(limits.ttl));
    let overhead = if history.is_some() {
        POSITION_OVERHEAD
    } else {
        0
    };
    match route(message, conn.utf8, overhead) {
        Route::Notify(text) => {
            let sent = async {
                match history {
                    None => conn.client.execute(&conn.notify, &[&channel, &text]).await,
                    Some(h) => {
                        conn.client
                            .execute(&h.publish, &[&channel, &text, &limit, &ttl])
                            .await
                    }
                }
            };
            match tokio::time::timeout(timeout, sent).await {
                Ok(Ok(_)) => Ok(Sent::Notified),
                Ok(Err(e)) => Err(pg_error(&e).into()),
                Err(_) => Err(PubSubError::Unavailable(format!(
                    "NOTIFY timed out after {timeout:?}"
                ))
                .into()),
            }
        }
        Route::Spill => {
            let Some(tables) = &conn.tables else {
                return Err(PubSubError::Failed(format!(
                    "a payload of {} bytes needs the spill table {SPILL_TABLE}, which is unavailable: {}",
                    message.len(),
                    conn.setup_error.as_deref().unwrap_or("unknown error")
                ))
                .into());
            };
            let timeout = timeout * 5;
            let max_spill = i64::try_from(config.max_spill_bytes).unwrap_or(i64::MAX);
            let spill_ttl = config.spill_ttl.as_secs_f64();
            // The server gives up waiting for the spill lock well before we
            // give up on the statement, so a timed-out spill is not published
            // later behind the caller's back.
            let lock_ms = i32::try_from(timeout.as_millis() / 2)
                .unwrap_or(i32::MAX)
                .max(1);
            let spill = async {
                match history {
                    None => {
                        conn.client
                            .query_one(
                                &tables.spill,
                                &[&channel, &message, &max_spill, &spill_ttl, &lock_ms],
                            )
                            .await
                    }
                    Some(h) => {
                        conn.client
                            .query_one(
                                &h.publish_spilled,
                                &[
                                    &channel, &message, &limit, &ttl, &max_spill, &spill_ttl,
                                    &lock_ms,
                                ],
                            )
                            .await
                    }
                }
            };
            let spilled = tokio::time::timeout(timeout, spill).await;
            match spilled {
                Ok(Ok(row)) => match row.get::<_, Option<i64>>(0) {
                    Some(_id) => {
                        if row.get::<_, Option<bool>>(1) == Some(true) {
                            spawn_vacuum(shared);
                        }
                        Ok(Sent::Spilled)
                    }
                    None => Err(BroadcastError::SpillFull {
                        len: message.len(),
                        max_spill_bytes: config.max_spill_bytes,
                    }),
                },
                Ok(Err(e)) => Err(pg_error(&e).into()),
                Err(_) => Err(PubSubError::Unavailable(format!(
                    "spilling a payload of {} bytes timed out after {timeout:?}",
                    message.len()
                ))
                .into()),
            }
        }
    }
}
