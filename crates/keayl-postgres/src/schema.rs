//! What a connection sets up: the tables and functions (DDL, under an
//! advisory lock), the session settings, the prepared statements, and the
//! helpers that run a statement within a timeout.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use keayl_broker::OpError;
use tokio_postgres::{Client, Statement};

use crate::NOTIFY_LIMIT;

/// The unlogged table holding payloads too large for `NOTIFY`.
pub const SPILL_TABLE: &str = "keayl_cable_large_payloads";

/// The unlogged table recording which backend listens to which channel
/// (for `subscriber_count`).
pub const LISTENERS_TABLE: &str = "keayl_cable_listeners";

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
const SCHEMA: &str = r#"
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
    IF to_regprocedure('keayl_cable_spill_v1(text,bytea,bigint,double precision,integer)') IS NULL THEN
        CREATE FUNCTION keayl_cable_spill_v1(
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
            PERFORM pg_notify(p_channel, '__keayl_large_payload:' || spill_id);
            -- Every spilled byte becomes a dead tuple once read; after a quarter of
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
    IF to_regprocedure('keayl_cable_spill_take_v1(bigint)') IS NULL THEN
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
"#;

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
    let (tables, setup_error) = match prepare_tables(&client, timeout).await {
        Ok(t) => (Some(t), None),
        Err(OpError::Fatal(e)) => return Err(OpError::Fatal(e)),
        Err(OpError::Refused(e)) => {
            let _ = client.batch_execute("ROLLBACK").await;
            tracing::error!(
                backend = "postgres",
                error = %e,
                "cannot create {SPILL_TABLE}/{LISTENERS_TABLE}: payloads of {NOTIFY_LIMIT} bytes or more will fail and subscriber_count is unavailable"
            );
            (None, Some(e))
        }
    };
    Ok(Arc::new(Conn {
        client,
        notify,
        tables,
        setup_error,
        utf8,
    }))
}
