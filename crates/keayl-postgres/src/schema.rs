//! What a connection sets up: the tables and functions (DDL, under an
//! advisory lock; the presence table's are in `presence`), the session
//! settings, the prepared statements, and the helpers that run a statement
//! within a timeout.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use keayl_broker::OpError;
use tokio_postgres::{Client, Statement};

use crate::NOTIFY_LIMIT;
use crate::presence::{PRESENCE_TABLE, PresenceStatements};

/// The unlogged table holding payloads too large for `NOTIFY`.
pub const SPILL_TABLE: &str = "keayl_cable_large_payloads";

/// The unlogged table recording which backend listens to which channel
/// (for `subscriber_count`).
pub const LISTENERS_TABLE: &str = "keayl_cable_listeners";

/// The unlogged table of stream histories: per channel its epoch, last
/// offset, and when its history expires (reliable streams).
pub const STREAMS_TABLE: &str = "keayl_cable_streams";

/// The unlogged table of the messages of stream histories, keyed by
/// `(stream, "offset")`.
pub const MESSAGES_TABLE: &str = "keayl_cable_messages";

/// The unlogged table of session snapshots (extended protocol session
/// restore), keyed by session id.
pub const SESSIONS_TABLE: &str = "keayl_cable_sessions";

/// One live connection's statements, shared with publishers.
pub(crate) struct Conn {
    pub(crate) client: Arc<Client>,
    /// `pg_notify(channel, payload)`.
    pub(crate) notify: Statement,
    /// `None` when the tables could not be created (see `setup_error`).
    pub(crate) tables: Option<TableStatements>,
    /// Why the tables could not be created.
    pub(crate) setup_error: Option<String>,
    /// Whether the database encoding is UTF-8 (else non-ASCII text spills).
    pub(crate) utf8: bool,
    /// `None` when the history and session tables could not be created
    /// (see `history_error`): broadcasts then carry no positions.
    pub(crate) history: Option<HistoryStatements>,
    /// Why the history and session tables could not be created.
    pub(crate) history_error: Option<String>,
    /// `None` when the presence table could not be created (see
    /// `presence_error`): presence calls then fail.
    pub(crate) presence: Option<PresenceStatements>,
    /// Why the presence table could not be created.
    pub(crate) presence_error: Option<String>,
}

/// The statements on [`STREAMS_TABLE`], [`MESSAGES_TABLE`] and
/// [`SESSIONS_TABLE`] (see [`HISTORY_SCHEMA`] and the crate docs).
pub(crate) struct HistoryStatements {
    /// Position, record, trim and `NOTIFY` a message (one statement):
    /// `$1` channel, `$2` text, `$3` limit, `$4` ttl (s).
    pub(crate) publish: Statement,
    /// The same for a payload that spills (`keayl_cable_spill_v2`): `$1`
    /// channel, `$2` payload, `$3` limit, `$4` ttl (s), `$5`
    /// max_spill_bytes, `$6` spill ttl (s), `$7` spill lock timeout (ms).
    pub(crate) publish_spilled: Statement,
    /// The stream's epoch and last offset, and its messages after an
    /// offset: `$1` channel, `$2` epoch, `$3` offset, `$4` limit, `$5` ttl.
    pub(crate) read_after: Statement,
    /// The stream's messages since a Unix time: `$1` channel, `$2` since,
    /// `$3` limit, `$4` ttl.
    pub(crate) read_since: Statement,
    /// Delete the messages of a batch of expired streams, and forget the
    /// streams expired for a second TTL: `$1` batch size.
    pub(crate) purge_streams: Statement,
    /// Save a session snapshot: `$1` sid, `$2` snapshot, `$3` ttl (s).
    pub(crate) save_session: Statement,
    /// Take (delete, returning) a session snapshot: `$1` sid.
    pub(crate) take_session: Statement,
    /// Delete a session snapshot: `$1` sid.
    pub(crate) remove_session: Statement,
    /// Delete a batch of expired session snapshots: `$1` batch size.
    pub(crate) purge_sessions: Statement,
}

/// The statements on [`SPILL_TABLE`] and [`LISTENERS_TABLE`].
pub(crate) struct TableStatements {
    /// Spill a payload and notify (`keayl_cable_spill_v1`).
    pub(crate) spill: Statement,
    /// A listener's fetch of a spilled row (`keayl_cable_spill_take_v1`).
    pub(crate) fetch: Statement,
    /// The live processes listening to a channel.
    pub(crate) count: Statement,
    /// Record this backend as listening to channels.
    pub(crate) register: Statement,
    /// Forget this backend's listening to channels.
    pub(crate) unregister: Statement,
    /// Delete a batch of expired spilled rows.
    pub(crate) expire: Statement,
}

/// Whether a statement failure leaves the connection usable.
fn op_error(e: tokio_postgres::Error) -> OpError {
    if e.as_db_error().is_some() && !e.is_closed() {
        OpError::Refused(e.to_string())
    } else {
        OpError::Fatal(e.to_string())
    }
}

/// `f` within `timeout`; a timeout is fatal (the connection may be stuck).
pub(crate) async fn timed<T>(
    timeout: Duration,
    what: &str,
    f: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, OpError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => r.map_err(op_error),
        Err(_) => Err(OpError::Fatal(format!(
            "{what} timed out after {timeout:?}"
        ))),
    }
}

/// The spill function (`CREATE FUNCTION` when missing), one body for both
/// versions: `keayl_cable_spill_v1` notifies the spill marker itself
/// (`$notify`); `keayl_cable_spill_v2` leaves the `NOTIFY` to the statement
/// that publishes a positioned message (see [`HISTORY_SCHEMA`]).
macro_rules! spill_function {
    ($name:literal, $notify:literal) => {
        concat!(
            r#"    IF to_regprocedure('"#,
            $name,
            r#"(text,bytea,bigint,double precision,integer)') IS NULL THEN
        CREATE FUNCTION "#,
            $name,
            r#"(
            p_channel text, p_payload bytea, p_max_bytes bigint, p_ttl_secs double precision, p_lock_ms integer,
            OUT spill_id bigint, OUT vacuum_due boolean
        ) LANGUAGE plpgsql VOLATILE AS $fn$
        DECLARE
            v_len bigint := octet_length(p_payload);
            v_used bigint;
            v_readers integer[];
            v_churn bigint;
        BEGIN
            vacuum_due := false;
            PERFORM set_config('lock_timeout', p_lock_ms || 'ms', true);
            PERFORM pg_advisory_xact_lock(7310585338293450067);
            SELECT coalesce(sum(octet_length(t.payload)), 0) INTO v_used
                FROM keayl_cable_large_payloads t;
            IF v_used + v_len > p_max_bytes THEN
                -- Room is made only from rows no live listener still needs:
                -- read by all, expired, or awaited only by dead backends.
                -- Rows being read right now are skipped, not waited for.
                DELETE FROM keayl_cable_large_payloads d WHERE d.id IN (
                    SELECT t.id FROM keayl_cable_large_payloads t
                    WHERE cardinality(t.readers) = 0
                       OR t.created_at < now() - make_interval(secs => p_ttl_secs)
                       OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = ANY (t.readers))
                    FOR UPDATE SKIP LOCKED);
                SELECT coalesce(sum(octet_length(t.payload)), 0) INTO v_used
                    FROM keayl_cable_large_payloads t;
                IF v_used + v_len > p_max_bytes THEN
                    RETURN;
                END IF;
            END IF;
            v_readers := ARRAY(
                SELECT DISTINCT l.pid FROM keayl_cable_listeners l
                JOIN pg_stat_activity a ON a.pid = l.pid
                  AND (a.backend_start IS NULL OR a.backend_start IS NOT DISTINCT FROM l.backend_start)
                WHERE l.channel = p_channel);
            INSERT INTO keayl_cable_large_payloads (payload, readers)
                VALUES (p_payload, v_readers) RETURNING id INTO spill_id;
"#,
            $notify,
            r#"            -- Every spilled byte becomes a dead tuple once read; after a quarter of
            -- the bound, one caller is told to vacuum.
            INSERT INTO keayl_cable_spill_state AS s (singleton, spilled_since_vacuum) VALUES (true, v_len)
                ON CONFLICT (singleton) DO UPDATE SET spilled_since_vacuum = s.spilled_since_vacuum + v_len
                RETURNING s.spilled_since_vacuum INTO v_churn;
            IF v_churn >= p_max_bytes / 4 THEN
                UPDATE keayl_cable_spill_state SET spilled_since_vacuum = 0;
                vacuum_due := true;
            END IF;
        END
        $fn$;
    END IF;
"#
        )
    };
}

/// Creates (or upgrades) the tables and functions, under an advisory lock
/// so that processes starting together do not race on the DDL. Functions
/// are versioned by name and created only when missing: a body never
/// changes (a new behaviour gets a new name), and `CREATE OR REPLACE` would
/// fail for a role that does not own the function.
///
/// `keayl_cable_spill_v1` (see the crate docs) serializes spills on a
/// second advisory lock, held until its statement commits; as a `VOLATILE`
/// function its statements each take a fresh snapshot, so under the lock
/// (and in `READ COMMITTED`, set by [`SESSION`]) the sum it computes
/// includes every spill committed before. It returns the new row's id, or
/// NULL when the payload does not fit, and whether the caller should vacuum
/// the table (once per quarter of a bound of spilled bytes, counted in
/// `keayl_cable_spill_state` across processes).
///
/// `keayl_cable_spill_take_v1` is a listener's fetch: it removes the
/// reader's backend from the row's `readers` (the backends registered for
/// the channel at spill time) and deletes the row once all have read it;
/// NULL when the row is gone. A reader that was not awaited only reads, so
/// it cannot use up another listener's turn.
const SCHEMA: &str = concat!(
    r#"
BEGIN;
SELECT pg_advisory_xact_lock(7310585338293450066);
CREATE UNLOGGED TABLE IF NOT EXISTS keayl_cable_large_payloads (
    id bigserial PRIMARY KEY,
    payload bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    readers integer[] NOT NULL DEFAULT '{}'
);
CREATE UNLOGGED TABLE IF NOT EXISTS keayl_cable_spill_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    spilled_since_vacuum bigint NOT NULL DEFAULT 0
);
CREATE UNLOGGED TABLE IF NOT EXISTS keayl_cable_listeners (
    pid integer NOT NULL,
    backend_start timestamptz,
    channel text NOT NULL,
    PRIMARY KEY (pid, channel)
);
DO $do$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_attribute
        WHERE attrelid = 'keayl_cable_large_payloads'::regclass
          AND attname = 'readers' AND NOT attisdropped
    ) THEN
        ALTER TABLE keayl_cable_large_payloads ADD COLUMN readers integer[] NOT NULL DEFAULT '{}';
    END IF;
"#,
    spill_function!(
        "keayl_cable_spill_v1",
        "            PERFORM pg_notify(p_channel, '__keayl_large_payload:' || spill_id);\n"
    ),
    r#"    IF to_regprocedure('keayl_cable_spill_take_v1(bigint)') IS NULL THEN
        CREATE FUNCTION keayl_cable_spill_take_v1(p_id bigint)
        RETURNS bytea LANGUAGE plpgsql VOLATILE AS $fn$
        DECLARE
            v_payload bytea;
            v_left integer;
        BEGIN
            UPDATE keayl_cable_large_payloads t SET readers = array_remove(t.readers, pg_backend_pid())
                WHERE t.id = p_id AND pg_backend_pid() = ANY (t.readers)
                RETURNING t.payload, cardinality(t.readers) INTO v_payload, v_left;
            IF NOT FOUND THEN
                -- A reader not awaited (it was not registered yet): read only.
                SELECT t.payload INTO v_payload FROM keayl_cable_large_payloads t WHERE t.id = p_id;
            ELSIF v_left = 0 THEN
                DELETE FROM keayl_cable_large_payloads t WHERE t.id = p_id;
            END IF;
            RETURN v_payload;
        END
        $fn$;
    END IF;
END
$do$;
DELETE FROM keayl_cable_listeners l WHERE l.pid = pg_backend_pid() OR NOT EXISTS (
    SELECT 1 FROM pg_stat_activity a
    WHERE a.pid = l.pid AND (a.backend_start IS NULL OR a.backend_start IS NOT DISTINCT FROM l.backend_start)
);
COMMIT;
"#
);

/// The history and session tables (reliable streams; see the crate docs),
/// created in a transaction of their own after [`SCHEMA`], so that a role
/// that cannot create them still gets the spill table and the listener
/// registry (broadcasts then carry no positions).
///
/// `keayl_cable_spill_v2` is `keayl_cable_spill_v1` without the `NOTIFY`:
/// the statement publishing a positioned message that spills inserts the
/// row through it (same bound, same readers), then notifies the marker
/// with the position itself, and records the message in the history only
/// when the row was accepted (a refused broadcast takes no offset).
///
/// Messages carry their epoch, so a row left over from an earlier epoch
/// (the history expired, or the stream was forgotten and started again)
/// can never be served as part of the current one.
pub(crate) const HISTORY_SCHEMA: &str = concat!(
    r#"
BEGIN;
SELECT pg_advisory_xact_lock(7310585338293450066);
CREATE UNLOGGED TABLE IF NOT EXISTS keayl_cable_streams (
    stream text PRIMARY KEY,
    epoch text NOT NULL,
    last_offset bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE UNLOGGED TABLE IF NOT EXISTS keayl_cable_messages (
    stream text NOT NULL,
    "offset" bigint NOT NULL,
    epoch text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    payload bytea NOT NULL,
    PRIMARY KEY (stream, "offset")
);
CREATE UNLOGGED TABLE IF NOT EXISTS keayl_cable_sessions (
    sid text PRIMARY KEY,
    snapshot bytea NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS keayl_cable_sessions_expires_at_idx
    ON keayl_cable_sessions (expires_at);
DO $do$
BEGIN
"#,
    spill_function!("keayl_cable_spill_v2", ""),
    r#"END
$do$;
COMMIT;
"#
);

/// The first part of a positioned publish: the stream's row upserted (its
/// lock serializes the publishes of a stream across processes), the offset
/// incremented, a new random epoch (offsets from 1) when the row is new or
/// its history expired (the last message older than its TTL). `$from` is
/// what the row is selected from (nothing, or the accepted spill).
macro_rules! upsert_stream {
    ($from:literal) => {
        concat!(
            "s AS (INSERT INTO keayl_cable_streams AS st (stream, epoch, last_offset, updated_at, expires_at) \
               SELECT $1::text, substr(md5(random()::text || clock_timestamp()::text || pg_backend_pid()::text), 1, 16), \
                      1, now(), now() + make_interval(secs => $4::float8) ",
            $from,
            " ON CONFLICT (stream) DO UPDATE SET \
                 epoch = CASE WHEN st.expires_at < now() THEN EXCLUDED.epoch ELSE st.epoch END, \
                 last_offset = CASE WHEN st.expires_at < now() THEN 1 ELSE st.last_offset + 1 END, \
                 updated_at = now(), expires_at = EXCLUDED.expires_at \
               RETURNING st.stream, st.epoch, st.last_offset)"
        )
    };
}

/// The rest of a positioned publish: the message inserted (over a row left
/// from an earlier epoch at the same offset), and the stream's other rows
/// trimmed: other epochs, beyond the limit (`$3`), older than the TTL
/// (`$4`). The trim never touches the new row (a statement must not modify
/// a row twice).
macro_rules! record_and_trim {
    ($payload:literal) => {
        concat!(
            "m AS (INSERT INTO keayl_cable_messages AS mm (stream, \"offset\", epoch, created_at, payload) \
               SELECT s.stream, s.last_offset, s.epoch, now(), ",
            $payload,
            " FROM s \
               ON CONFLICT (stream, \"offset\") DO UPDATE SET \
                 epoch = EXCLUDED.epoch, created_at = EXCLUDED.created_at, payload = EXCLUDED.payload), \
             t AS (DELETE FROM keayl_cable_messages d USING s \
               WHERE d.stream = s.stream AND d.\"offset\" <> s.last_offset \
                 AND (d.epoch <> s.epoch OR d.\"offset\" > s.last_offset \
                      OR d.\"offset\" <= s.last_offset - $3::bigint \
                      OR d.created_at < now() - make_interval(secs => $4::float8)))"
        )
    };
}

/// A positioned message that fits a `NOTIFY`: position, record, trim and
/// notify `__keayl_position:<epoch>:<offset>:<message>`, in one statement.
const PUBLISH: &str = concat!(
    "WITH ",
    upsert_stream!(""),
    ", ",
    record_and_trim!("convert_to($2::text, 'UTF8')"),
    " SELECT s.epoch, s.last_offset, \
       pg_notify($1::text, '__keayl_position:' || s.epoch || ':' || s.last_offset || ':' || $2::text) \
     FROM s"
);

/// A positioned message that spills: the row inserted through
/// `keayl_cable_spill_v2` (bounded; NULL when full), then, only when it was
/// accepted, position, record, trim and notify
/// `__keayl_position:<epoch>:<offset>:__keayl_large_payload:<id>`.
const PUBLISH_SPILLED: &str = concat!(
    "WITH sp AS (SELECT f.spill_id, f.vacuum_due \
       FROM keayl_cable_spill_v2($1::text, $2::bytea, $5::bigint, $6::float8, $7::int4) f), ",
    upsert_stream!("FROM sp WHERE sp.spill_id IS NOT NULL"),
    ", ",
    record_and_trim!("$2::bytea"),
    " SELECT sp.spill_id, sp.vacuum_due, s.epoch, s.last_offset, \
       CASE WHEN s.epoch IS NOT NULL THEN pg_notify($1::text, \
         '__keayl_position:' || s.epoch || ':' || s.last_offset || ':__keayl_large_payload:' || sp.spill_id) END \
     FROM sp LEFT JOIN s ON true"
);

async fn prepare_history(client: &Client, timeout: Duration) -> Result<HistoryStatements, OpError> {
    timed(
        timeout,
        "creating history tables",
        client.batch_execute(HISTORY_SCHEMA),
    )
    .await?;
    let prep = |sql: &'static str| timed(timeout, "prepare", client.prepare(sql));
    let (publish, publish_spilled, read_after, read_since, purge_streams) = tokio::try_join!(
        prep(PUBLISH),
        prep(PUBLISH_SPILLED),
        // The stream's row, joined with the messages the request needs: of
        // its current epoch (only when it is the client's), after the
        // offset, within the limit and the TTL. No row: unknown stream.
        prep(
            "SELECT s.epoch, s.last_offset, m.\"offset\", m.payload \
             FROM keayl_cable_streams s \
             LEFT JOIN keayl_cable_messages m ON m.stream = s.stream AND m.epoch = s.epoch \
               AND s.epoch = $2::text AND m.\"offset\" > $3::bigint AND m.\"offset\" <= s.last_offset \
               AND m.\"offset\" > s.last_offset - $4::bigint \
               AND m.created_at >= now() - make_interval(secs => $5::float8) \
             WHERE s.stream = $1::text \
             ORDER BY m.\"offset\"",
        ),
        prep(
            "SELECT s.epoch, m.\"offset\", m.payload \
             FROM keayl_cable_streams s \
             JOIN keayl_cable_messages m ON m.stream = s.stream AND m.epoch = s.epoch \
             WHERE s.stream = $1::text AND m.created_at >= to_timestamp($2::float8) \
               AND m.\"offset\" <= s.last_offset AND m.\"offset\" > s.last_offset - $3::bigint \
               AND m.created_at >= now() - make_interval(secs => $4::float8) \
             ORDER BY m.\"offset\"",
        ),
        // Streams whose history expired and still have rows, or that
        // expired a second TTL ago (then forgotten: the next broadcast
        // starts a new epoch either way). Their rows are locked, so a
        // publish on one of them waits (and one running is skipped).
        prep(
            "WITH e AS ( \
               SELECT s.stream, s.expires_at + (s.expires_at - s.updated_at) < now() AS forget \
               FROM keayl_cable_streams s \
               WHERE s.expires_at < now() \
                 AND (s.expires_at + (s.expires_at - s.updated_at) < now() \
                      OR EXISTS (SELECT 1 FROM keayl_cable_messages m WHERE m.stream = s.stream)) \
               LIMIT $1::bigint FOR UPDATE SKIP LOCKED), \
             gone AS (DELETE FROM keayl_cable_messages m USING e WHERE m.stream = e.stream), \
             forgotten AS (DELETE FROM keayl_cable_streams s USING e WHERE s.stream = e.stream AND e.forget) \
             SELECT count(*) FROM e",
        ),
    )?;
    let (save_session, take_session, remove_session, purge_sessions) = tokio::try_join!(
        prep(
            "INSERT INTO keayl_cable_sessions (sid, snapshot, expires_at) \
             VALUES ($1::text, $2::bytea, now() + make_interval(secs => $3::float8)) \
             ON CONFLICT (sid) DO UPDATE SET snapshot = EXCLUDED.snapshot, expires_at = EXCLUDED.expires_at",
        ),
        prep(
            "DELETE FROM keayl_cable_sessions WHERE sid = $1::text \
             RETURNING snapshot, expires_at > now()",
        ),
        prep("DELETE FROM keayl_cable_sessions WHERE sid = $1::text"),
        prep(
            "DELETE FROM keayl_cable_sessions WHERE sid IN ( \
               SELECT sid FROM keayl_cable_sessions WHERE expires_at < now() \
               LIMIT $1::bigint FOR UPDATE SKIP LOCKED)",
        ),
    )?;
    Ok(HistoryStatements {
        publish,
        publish_spilled,
        read_after,
        read_since,
        purge_streams,
        save_session,
        take_session,
        remove_session,
        purge_sessions,
    })
}

/// Session settings the spill function relies on (see [`SCHEMA`]): a
/// database or role defaulting to `REPEATABLE READ` would let concurrent
/// spills miss each other.
const SESSION: &str = "SET default_transaction_isolation TO 'read committed'";

async fn prepare_tables(client: &Client, timeout: Duration) -> Result<TableStatements, OpError> {
    timed(timeout, "session settings", client.batch_execute(SESSION)).await?;
    timed(timeout, "creating tables", client.batch_execute(SCHEMA)).await?;
    let prep = |sql: &'static str| timed(timeout, "prepare", client.prepare(sql));
    Ok(TableStatements {
        spill: prep(
            "SELECT spill_id, vacuum_due FROM keayl_cable_spill_v1($1, $2, $3, $4, $5)",
        )
        .await?,
        fetch: prep("SELECT keayl_cable_spill_take_v1($1)").await?,
        count: prep(
            "SELECT count(DISTINCT l.pid) FROM keayl_cable_listeners l \
             JOIN pg_stat_activity a ON a.pid = l.pid \
               AND (a.backend_start IS NULL OR a.backend_start IS NOT DISTINCT FROM l.backend_start) \
             WHERE l.channel = $1",
        )
        .await?,
        register: prep(
            "INSERT INTO keayl_cable_listeners (pid, backend_start, channel) \
             SELECT pg_backend_pid(), (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()), c \
             FROM unnest($1::text[]) AS c ON CONFLICT DO NOTHING",
        )
        .await?,
        unregister: prep(
            "DELETE FROM keayl_cable_listeners WHERE pid = pg_backend_pid() AND channel = ANY($1::text[])",
        )
        .await?,
        // SKIP LOCKED: expiry never waits for (nor deadlocks with) a spill
        // making room or a listener reading.
        expire: prep(
            "DELETE FROM keayl_cable_large_payloads WHERE id IN ( \
               SELECT id FROM keayl_cable_large_payloads \
               WHERE created_at < now() - make_interval(secs => $1::float8) \
               LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .await?,
    })
}

/// Prepare a fresh connection: encoding, statements, tables. (The
/// `LISTEN`s follow as an ordinary change, once the session has the
/// statements a spilled notification needs.)
pub(crate) async fn setup(client: Arc<Client>, timeout: Duration) -> Result<Arc<Conn>, OpError> {
    let encoding = timed(
        timeout,
        "SHOW server_encoding",
        client.simple_query("SHOW server_encoding"),
    )
    .await?;
    let utf8 = encoding.iter().any(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0) == Some("UTF8"),
        _ => false,
    });
    if !utf8 {
        tracing::warn!(
            backend = "postgres",
            "database encoding is not UTF8: non-ASCII payloads go through the spill table"
        );
    }
    let notify = timed(
        timeout,
        "prepare",
        client.prepare("SELECT pg_notify($1, $2)"),
    )
    .await?;
    let (tables, setup_error) = optional(
        &client,
        prepare_tables(&client, timeout).await,
        || format!(
            "cannot create {SPILL_TABLE}/{LISTENERS_TABLE}: payloads of {NOTIFY_LIMIT} bytes or more will fail and subscriber_count is unavailable"
        ),
    )
    .await?;
    let (history, history_error) = optional(
        &client,
        prepare_history(&client, timeout).await,
        || format!(
            "cannot create {STREAMS_TABLE}/{MESSAGES_TABLE}/{SESSIONS_TABLE}: broadcasts carry no positions, history and sessions are unavailable"
        ),
    )
    .await?;
    let (presence, presence_error) = optional(
        &client,
        crate::presence::prepare(&client, timeout).await,
        || format!("cannot create {PRESENCE_TABLE}: presence is unavailable"),
    )
    .await?;
    Ok(Arc::new(Conn {
        client,
        notify,
        tables,
        setup_error,
        utf8,
        history,
        history_error,
        presence,
        presence_error,
    }))
}

/// A part of the schema a connection can do without: refused (no
/// privilege, say), its transaction is rolled back and `what_is_lost()`
/// logged, and the part is off (`None`, with the error); a fatal error
/// fails the setup.
async fn optional<T>(
    client: &Client,
    prepared: Result<T, OpError>,
    what_is_lost: impl FnOnce() -> String,
) -> Result<(Option<T>, Option<String>), OpError> {
    match prepared {
        Ok(t) => Ok((Some(t), None)),
        Err(OpError::Fatal(e)) => Err(OpError::Fatal(e)),
        Err(OpError::Refused(e)) => {
            let _ = client.batch_execute("ROLLBACK").await;
            tracing::error!(backend = "postgres", error = %e, "{}", what_is_lost());
            Ok((None, Some(e)))
        }
    }
}

/// The positioned publish statements (for tests of their text).
#[cfg(test)]
pub(crate) fn publish_sql() -> [&'static str; 2] {
    [PUBLISH, PUBLISH_SPILLED]
}
