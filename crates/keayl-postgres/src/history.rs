//! Reliable streams in PostgreSQL: the position marker of a positioned
//! `NOTIFY`, history reads, session snapshots, and the periodic purge of
//! expired rows. (The tables and statements are in `schema`; publishing is
//! in `publish`.)

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keayl_broker::OpError;
use keayl_cable::pubsub::{
    HistoryEntry, HistoryError, HistoryFrom, HistoryLimits, Position, PubSubError,
};
use tokio_postgres::Client;

#[cfg(doc)]
use crate::SPILL_MARKER;
use crate::client::Shared;
use crate::schema::{Conn, HistoryStatements, timed};

/// The prefix of a `NOTIFY` payload carrying a position:
/// `__keayl_position:<epoch>:<offset>:<message>`, where the message may be
/// a [`SPILL_MARKER`] (`__keayl_large_payload:<id>`) standing for a spilled
/// payload.
pub const POSITION_MARKER: &str = "__keayl_position:";

/// Bytes a position adds to a `NOTIFY` payload, at most: the marker, an
/// epoch (16 hex digits, up to 64 allowed for), two colons and an offset
/// of up to 20 digits. A positioned message spills when it and this do
/// not fit the `NOTIFY` limit.
pub(crate) const POSITION_OVERHEAD: usize = POSITION_MARKER.len() + 64 + 2 + 20;

/// Longest TTL given to PostgreSQL (an `interval` cannot hold
/// `Duration::MAX`): about 31 years.
const MAX_TTL_SECS: f64 = 1e9;

/// Rows the periodic purge deletes per statement (streams, sessions), and
/// statements per round: the purge stays within the statement timeout,
/// however much has expired.
const PURGE_BATCH: i64 = 100;
const PURGE_ROUNDS: usize = 10;

/// How often a process purges expired history and sessions.
pub(crate) const PURGE_INTERVAL: Duration = Duration::from_secs(30);

/// A TTL as PostgreSQL's seconds.
pub(crate) fn ttl_secs(ttl: Duration) -> f64 {
    ttl.as_secs_f64().min(MAX_TTL_SECS)
}

/// A history limit as PostgreSQL's `bigint`.
pub(crate) fn limit_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Whether `limits` keep any history.
pub(crate) fn keeps_history(limits: &HistoryLimits) -> bool {
    limits.limit > 0 && !limits.ttl.is_zero()
}

/// The position and the rest of a positioned `NOTIFY` payload, or `None`
/// when `payload` is not one (or is malformed: then it is delivered as it
/// came, without a position).
pub(crate) fn parse_positioned(payload: &str) -> Option<(Position, &str)> {
    let rest = payload.strip_prefix(POSITION_MARKER)?;
    let (epoch, rest) = rest.split_once(':')?;
    let (offset, body) = rest.split_once(':')?;
    if epoch.is_empty() || offset.is_empty() || !offset.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let offset: u64 = offset.parse().ok()?;
    Some((
        Position {
            offset,
            epoch: Arc::from(epoch),
        },
        body,
    ))
}

/// The live connection's history statements, or why there are none.
fn statements(shared: &Shared) -> Result<(Arc<Conn>, Duration), String> {
    let Some(conn) = shared.conn() else {
        return Err(format!(
            "postgres {} is unreachable (reconnecting)",
            shared.broker
        ));
    };
    if conn.history.is_none() {
        return Err(format!(
            "the history and session tables are unavailable: {}",
            conn.history_error.as_deref().unwrap_or("unknown error")
        ));
    }
    Ok((conn, shared.config.command_timeout))
}

fn history_of(conn: &Conn) -> &HistoryStatements {
    conn.history.as_ref().expect("checked by statements()")
}

/// `f` within `timeout`, its failure as text.
async fn within<T>(
    timeout: Duration,
    what: &str,
    f: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what} timed out after {timeout:?}")),
    }
}

/// The history of `channel` (see [`PubSubClient::history`]).
///
/// [`PubSubClient::history`]: keayl_cable::pubsub::PubSubClient::history
pub(crate) async fn read(
    shared: Arc<Shared>,
    channel: String,
    limits: HistoryLimits,
    from: HistoryFrom,
) -> Result<Vec<HistoryEntry>, HistoryError> {
    if !keeps_history(&limits) {
        // As the in-process history answers for a stream that keeps none.
        return match from {
            HistoryFrom::After { epoch, .. } => Err(HistoryError::UnknownEpoch(epoch)),
            HistoryFrom::Since(_) => Err(HistoryError::Unsupported),
        };
    }
    if channel.contains('\0') {
        // Never published (PostgreSQL text cannot hold NUL).
        return match from {
            HistoryFrom::After { epoch, .. } => Err(HistoryError::UnknownEpoch(epoch)),
            HistoryFrom::Since(_) => Ok(Vec::new()),
        };
    }
    let (conn, timeout) = statements(&shared).map_err(HistoryError::Unavailable)?;
    let h = history_of(&conn);
    let limit = limit_i64(limits.limit);
    let ttl = ttl_secs(limits.ttl);
    match from {
        HistoryFrom::After { offset, epoch } => {
            let Ok(after) = i64::try_from(offset) else {
                return Err(HistoryError::UnknownEpoch(epoch));
            };
            let rows = within(
                timeout,
                "reading the history",
                conn.client
                    .query(&h.read_after, &[&channel, &epoch, &after, &limit, &ttl]),
            )
            .await
            .map_err(HistoryError::Unavailable)?;
            let Some(first) = rows.first() else {
                return Err(HistoryError::UnknownEpoch(epoch));
            };
            let current: &str = first.get(0);
            let last: i64 = first.get(1);
            if current != epoch || after > last {
                return Err(HistoryError::UnknownEpoch(epoch));
            }
            let current: Arc<str> = Arc::from(current);
            let mut entries = Vec::with_capacity(rows.len());
            for row in &rows {
                let (Some(at), Some(payload)) = (
                    row.get::<_, Option<i64>>(2),
                    row.get::<_, Option<Vec<u8>>>(3),
                ) else {
                    continue;
                };
                entries.push(HistoryEntry {
                    position: Position {
                        offset: at as u64,
                        epoch: current.clone(),
                    },
                    message: Bytes::from(payload),
                });
            }
            // Every offset from the next one to the last must be there.
            let complete = entries.len() as u64 == (last - after) as u64
                && entries
                    .iter()
                    .zip(offset + 1..)
                    .all(|(e, want)| e.position.offset == want);
            if !complete {
                return Err(HistoryError::Evicted(offset + 1));
            }
            Ok(entries)
        }
        HistoryFrom::Since(since) => {
            let since = since as f64;
            let rows = within(
                timeout,
                "reading the history",
                conn.client
                    .query(&h.read_since, &[&channel, &since, &limit, &ttl]),
            )
            .await
            .map_err(HistoryError::Unavailable)?;
            let mut epoch: Option<Arc<str>> = None;
            Ok(rows
                .iter()
                .map(|row| {
                    let e = epoch
                        .get_or_insert_with(|| Arc::from(row.get::<_, &str>(0)))
                        .clone();
                    HistoryEntry {
                        position: Position {
                            offset: row.get::<_, i64>(1) as u64,
                            epoch: e,
                        },
                        message: Bytes::from(row.get::<_, Vec<u8>>(2)),
                    }
                })
                .collect())
        }
    }
}

fn unavailable(e: String) -> PubSubError {
    PubSubError::Unavailable(e)
}

/// Keep `snapshot` under `sid` for `ttl`.
pub(crate) async fn save_session(
    shared: Arc<Shared>,
    sid: String,
    snapshot: Bytes,
    ttl: Duration,
) -> Result<(), PubSubError> {
    if sid.contains('\0') {
        return Err(PubSubError::Failed(
            "a session id cannot contain NUL".into(),
        ));
    }
    let (conn, timeout) = statements(&shared).map_err(unavailable)?;
    let h = history_of(&conn);
    let ttl = ttl_secs(ttl);
    within(
        timeout,
        "saving a session",
        conn.client
            .execute(&h.save_session, &[&sid, &snapshot.as_ref(), &ttl]),
    )
    .await
    .map_err(unavailable)?;
    Ok(())
}

/// The snapshot saved under `sid`, deleted; `None` when absent or expired.
pub(crate) async fn take_session(
    shared: Arc<Shared>,
    sid: String,
) -> Result<Option<Bytes>, PubSubError> {
    if sid.contains('\0') {
        return Ok(None);
    }
    let (conn, timeout) = statements(&shared).map_err(unavailable)?;
    let h = history_of(&conn);
    let row = within(
        timeout,
        "taking a session",
        conn.client.query_opt(&h.take_session, &[&sid]),
    )
    .await
    .map_err(unavailable)?;
    Ok(row.and_then(|row| {
        row.get::<_, bool>(1)
            .then(|| Bytes::from(row.get::<_, Vec<u8>>(0)))
    }))
}

/// Forget the snapshot saved under `sid`.
pub(crate) async fn remove_session(shared: Arc<Shared>, sid: String) -> Result<(), PubSubError> {
    if sid.contains('\0') {
        return Ok(());
    }
    let (conn, timeout) = statements(&shared).map_err(unavailable)?;
    let h = history_of(&conn);
    within(
        timeout,
        "removing a session",
        conn.client.execute(&h.remove_session, &[&sid]),
    )
    .await
    .map_err(unavailable)?;
    Ok(())
}

/// The periodic purge: the rows of streams whose history expired (and the
/// streams expired a second TTL ago), and expired session snapshots, in
/// bounded batches ([`PURGE_BATCH`] per statement, at most
/// [`PURGE_ROUNDS`] statements each). Live streams trim their own rows on
/// every broadcast; reads never return expired rows either way.
pub(crate) async fn purge(
    client: &Client,
    h: &HistoryStatements,
    timeout: Duration,
) -> Result<(), OpError> {
    for _ in 0..PURGE_ROUNDS {
        let row = timed(
            timeout,
            "purging expired history",
            client.query_one(&h.purge_streams, &[&PURGE_BATCH]),
        )
        .await?;
        if row.get::<_, i64>(0) < PURGE_BATCH {
            break;
        }
    }
    for _ in 0..PURGE_ROUNDS {
        let deleted = timed(
            timeout,
            "purging expired sessions",
            client.execute(&h.purge_sessions, &[&PURGE_BATCH]),
        )
        .await?;
        if deleted < PURGE_BATCH as u64 {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NOTIFY_LIMIT, SPILL_MARKER};

    #[test]
    fn positioned_payloads_parse() {
        let (p, body) = parse_positioned("__keayl_position:ab12:7:{\"a\":1}").unwrap();
        assert_eq!((p.offset, &*p.epoch, body), (7, "ab12", "{\"a\":1}"));
        // The message may hold colons, and may be empty.
        let (p, body) = parse_positioned("__keayl_position:e:1:a:b:c").unwrap();
        assert_eq!((p.offset, body), (1, "a:b:c"));
        assert_eq!(parse_positioned("__keayl_position:e:2:").unwrap().1, "");
        let spilled = format!("__keayl_position:e:3:{SPILL_MARKER}42");
        let (p, body) = parse_positioned(&spilled).unwrap();
        assert_eq!((p.offset, body), (3, "__keayl_large_payload:42"));
        // Malformed: not positioned (delivered as they came).
        for bad in [
            "plain",
            "__keayl_position:",
            "__keayl_position:e",
            "__keayl_position:e:1",
            "__keayl_position::1:x",
            "__keayl_position:e::x",
            "__keayl_position:e:-1:x",
            "__keayl_position:e:+1:x",
            "__keayl_position:e:99999999999999999999999:x",
            "__keayl_position:e:1x:x",
        ] {
            assert!(parse_positioned(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_marker_in_the_sql_is_the_constant() {
        assert!(
            crate::schema::publish_sql()
                .iter()
                .all(|sql| sql.contains(&format!("'{POSITION_MARKER}'")))
        );
        const { assert!(POSITION_OVERHEAD < NOTIFY_LIMIT / 50) };
        let longest = format!("{POSITION_MARKER}{}:{}:", "f".repeat(64), u64::MAX);
        assert!(longest.len() <= POSITION_OVERHEAD);
    }

    #[test]
    fn ttls_and_limits_for_postgres() {
        assert_eq!(ttl_secs(Duration::from_millis(1500)), 1.5);
        assert_eq!(ttl_secs(Duration::MAX), MAX_TTL_SECS);
        assert_eq!(limit_i64(usize::MAX), i64::MAX);
        assert!(!keeps_history(&HistoryLimits {
            limit: 0,
            ttl: Duration::from_secs(1)
        }));
        assert!(!keeps_history(&HistoryLimits {
            limit: 1,
            ttl: Duration::ZERO
        }));
    }

    /// Against the machine's PostgreSQL (`KEAYL_POSTGRES_URL`; skipped
    /// when unreachable), in a schema of the test's own.
    #[tokio::test]
    async fn the_purge_deletes_expired_rows_in_batches() {
        let url = std::env::var("KEAYL_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let connect = tokio_postgres::connect(&url, tokio_postgres::NoTls);
        let Ok(Ok((client, connection))) =
            tokio::time::timeout(Duration::from_secs(2), connect).await
        else {
            eprintln!("skipped: PostgreSQL unreachable at {url}");
            return;
        };
        tokio::spawn(connection);
        let schema = format!("keayl_unit_purge_{}", std::process::id());
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; \
                 SET search_path TO {schema}"
            ))
            .await
            .unwrap();
        let client = Arc::new(client);
        let conn = match crate::schema::setup(client.clone(), Duration::from_secs(5)).await {
            Ok(c) => c,
            Err(e) => panic!("setup: {e:?}"),
        };
        let h = conn.history.as_ref().expect("history tables");
        // 150 streams whose history expired 10 s ago (remembered for
        // another TTL), 120 expired a second TTL ago (forgotten), one live;
        // two messages each. 250 expired sessions, one live.
        client
            .batch_execute(
                "INSERT INTO keayl_cable_streams (stream, epoch, last_offset, updated_at, expires_at) \
                   SELECT 'old-' || i, 'e', 2, now() - interval '310 s', now() - interval '10 s' \
                   FROM generate_series(1, 150) i \
                 UNION ALL SELECT 'gone-' || i, 'e', 2, now() - interval '700 s', now() - interval '400 s' \
                   FROM generate_series(1, 120) i \
                 UNION ALL SELECT 'live', 'e', 2, now(), now() + interval '300 s'; \
                 INSERT INTO keayl_cable_messages (stream, \"offset\", epoch, created_at, payload) \
                   SELECT s.stream, o, 'e', s.updated_at, '\\x00'::bytea \
                   FROM keayl_cable_streams s, generate_series(1, 2) o; \
                 INSERT INTO keayl_cable_sessions (sid, snapshot, expires_at) \
                   SELECT 'sid-' || i, '\\x00'::bytea, now() - interval '1 s' FROM generate_series(1, 250) i \
                 UNION ALL SELECT 'sid-live', '\\x00', now() + interval '60 s';",
            )
            .await
            .unwrap();
        let count = async |sql: &str| -> i64 { client.query_one(sql, &[]).await.unwrap().get(0) };
        purge(&client, h, Duration::from_secs(5)).await.unwrap();
        let counts = [
            count("SELECT count(*) FROM keayl_cable_streams WHERE stream LIKE 'old-%'").await,
            count("SELECT count(*) FROM keayl_cable_messages WHERE stream LIKE 'old-%'").await,
            count("SELECT count(*) FROM keayl_cable_streams WHERE stream LIKE 'gone-%'").await,
            count("SELECT count(*) FROM keayl_cable_messages WHERE stream LIKE 'gone-%'").await,
            count("SELECT count(*) FROM keayl_cable_streams WHERE stream = 'live'").await,
            count("SELECT count(*) FROM keayl_cable_messages WHERE stream = 'live'").await,
            count("SELECT count(*) FROM keayl_cable_sessions").await,
        ];
        assert_eq!(counts, [150, 0, 0, 0, 1, 2, 1]);
        // Nothing left to do: a second purge selects nothing.
        let row = client
            .query_one(&h.purge_streams, &[&PURGE_BATCH])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 0);
        client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    }
}
