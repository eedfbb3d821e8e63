//! Presence in PostgreSQL: who is on a stream, shared by every process
//! using the database (the semantics of
//! [`PresenceStore`](keayl_cable::pubsub::PresenceStore), kept in a table).
//!
//! One row per session in the unlogged table [`PRESENCE_TABLE`]:
//!
//! ```text
//! scope text, stream text, session text, id text, info bytea,
//! join_order bigint, expires_at timestamptz,
//! PRIMARY KEY (scope, stream, session)
//! INDEX (scope, stream, id), INDEX (scope, expires_at)
//! SEQUENCE keayl_cable_presence_order
//! ```
//!
//! * `scope` is the process's `channel_prefix` followed by `:` (empty
//!   without one), so instances with different prefixes neither see nor
//!   reap each other's sessions; `stream` is the stream's own name (not its
//!   channel, which may be a hash), so a reap can report it.
//! * Every session of an id carries the id's latest info and its join
//!   order (a value of the sequence taken when the id joined), so the set
//!   reads in join order and with the latest info from any of its rows.
//! * `expires_at` comes from the database clock (`clock_timestamp()`), so
//!   every process agrees on expiry.
//!
//! Each operation is one statement, hence one transaction: a PL/pgSQL
//! function (`keayl_cable_presence_{join,leave,reap}_v1` and `keayl_cable_presence_touch_v2`, versioned
//! by name like the spill functions: a body never changes) that first
//! takes a transaction-level advisory lock of the stream
//! (`pg_advisory_xact_lock(PRESENCE_LOCK_CLASS, hashtext(scope || stream))`),
//! so the changes of a stream's set are serialized across processes: two
//! sessions joining one id at once cannot both report `joined`, and an id
//! leaves only when no other session of it remains. A reap locks the
//! streams of a batch in key order (never deadlocking with another reap;
//! every other operation locks one stream), deletes their expired
//! sessions, and reports the ids left without a session: each is reported
//! by the one transaction that removed its last session. Lock waits are
//! bounded by a `lock_timeout` of half the command timeout (a reap's waits
//! share that budget), so a statement the client gave up on does not
//! commit much later (a reap committing after its caller gave up would
//! lose the leaves it made). Reading a set is a
//! plain `SELECT` (one snapshot).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keayl_broker::OpError;
use keayl_cable::pubsub::{
    PresenceError, PresenceJoined, PresenceLeft, PresenceLimits, PresenceMember, PresenceSet,
};
use tokio_postgres::{Client, Statement};

use crate::client::Shared;
use crate::history::{limit_i64, ttl_secs};
use crate::schema::{Conn, timed};

/// The unlogged table of presence sessions, keyed by `(scope, stream,
/// session)` (see the module docs).
pub(crate) const PRESENCE_TABLE: &str = "keayl_cable_presence";

/// Streams whose expired sessions one reap statement removes (each one an
/// advisory lock held until it commits), and statements per reap.
const REAP_BATCH: i32 = 100;
const REAP_ROUNDS: usize = 20;

/// The class (first key) of the per-stream advisory locks (`'keay'`);
/// the two-key form never meets the crate's one-key locks.
#[cfg(test)]
const PRESENCE_LOCK_CLASS: i32 = 0x6b65_6179;

/// The per-stream advisory lock, as every function takes it.
macro_rules! lock_stream {
    () => {
        "        PERFORM set_config('lock_timeout', p_lock_ms || 'ms', true);
        PERFORM pg_advisory_xact_lock(1801806201, hashtext(p_scope || p_stream));
"
    };
}

/// The presence table, its indexes and sequence, and the functions
/// (created when missing), in a transaction of its own under the crate's
/// DDL advisory lock.
pub(crate) const PRESENCE_SCHEMA: &str = concat!(
    r#"
BEGIN;
SELECT pg_advisory_xact_lock(7310585338293450066);
CREATE UNLOGGED TABLE IF NOT EXISTS keayl_cable_presence (
    scope text NOT NULL,
    stream text NOT NULL,
    session text NOT NULL,
    id text NOT NULL,
    info bytea NOT NULL,
    join_order bigint NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (scope, stream, session)
);
CREATE INDEX IF NOT EXISTS keayl_cable_presence_id_idx
    ON keayl_cable_presence (scope, stream, id);
CREATE INDEX IF NOT EXISTS keayl_cable_presence_expires_at_idx
    ON keayl_cable_presence (scope, expires_at);
CREATE SEQUENCE IF NOT EXISTS keayl_cable_presence_order;
DO $do$
BEGIN
    IF to_regprocedure('keayl_cable_presence_join_v1(text,text,text,text,bytea,double precision,bigint,integer)') IS NULL THEN
        CREATE FUNCTION keayl_cable_presence_join_v1(
            p_scope text, p_stream text, p_session text, p_id text, p_info bytea,
            p_ttl_secs double precision, p_max bigint, p_lock_ms integer,
            OUT o_joined boolean, OUT o_left text, OUT o_full boolean
        ) LANGUAGE plpgsql VOLATILE AS $fn$
        DECLARE
            v_previous text;
            v_order bigint;
            v_members bigint;
            v_expires timestamptz;
        BEGIN
            o_joined := false;
            o_full := false;
"#,
    lock_stream!(),
    r#"            v_expires := clock_timestamp() + make_interval(secs => p_ttl_secs);
            SELECT p.id INTO v_previous FROM keayl_cable_presence p
                WHERE p.scope = p_scope AND p.stream = p_stream AND p.session = p_session;
            IF v_previous = p_id THEN
                -- Joined again under the same id: new expiry, latest info.
                UPDATE keayl_cable_presence p SET expires_at = v_expires
                    WHERE p.scope = p_scope AND p.stream = p_stream AND p.session = p_session;
                UPDATE keayl_cable_presence p SET info = p_info
                    WHERE p.scope = p_scope AND p.stream = p_stream AND p.id = p_id
                      AND p.info IS DISTINCT FROM p_info;
                RETURN;
            END IF;
            SELECT min(p.join_order) INTO v_order FROM keayl_cable_presence p
                WHERE p.scope = p_scope AND p.stream = p_stream AND p.id = p_id;
            IF v_order IS NULL THEN
                -- A new id needs room (a session moving to one too: then
                -- nothing changes).
                SELECT count(*) INTO v_members FROM (
                    SELECT DISTINCT p.id FROM keayl_cable_presence p
                    WHERE p.scope = p_scope AND p.stream = p_stream
                    LIMIT p_max) m;
                IF v_members >= p_max THEN
                    o_full := true;
                    RETURN;
                END IF;
            END IF;
            IF v_previous IS NOT NULL THEN
                -- The session moves: its old id leaves with it if alone.
                DELETE FROM keayl_cable_presence p
                    WHERE p.scope = p_scope AND p.stream = p_stream AND p.session = p_session;
                IF NOT EXISTS (SELECT 1 FROM keayl_cable_presence p
                    WHERE p.scope = p_scope AND p.stream = p_stream AND p.id = v_previous) THEN
                    o_left := v_previous;
                END IF;
            END IF;
            IF v_order IS NULL THEN
                o_joined := true;
                v_order := nextval('keayl_cable_presence_order');
            ELSE
                UPDATE keayl_cable_presence p SET info = p_info
                    WHERE p.scope = p_scope AND p.stream = p_stream AND p.id = p_id
                      AND p.info IS DISTINCT FROM p_info;
            END IF;
            INSERT INTO keayl_cable_presence (scope, stream, session, id, info, join_order, expires_at)
                VALUES (p_scope, p_stream, p_session, p_id, p_info, v_order, v_expires);
        END
        $fn$;
    END IF;
    IF to_regprocedure('keayl_cable_presence_leave_v1(text,text,text,integer)') IS NULL THEN
        CREATE FUNCTION keayl_cable_presence_leave_v1(
            p_scope text, p_stream text, p_session text, p_lock_ms integer
        ) RETURNS text LANGUAGE plpgsql VOLATILE AS $fn$
        DECLARE
            v_id text;
        BEGIN
"#,
    lock_stream!(),
    r#"            DELETE FROM keayl_cable_presence p
                WHERE p.scope = p_scope AND p.stream = p_stream AND p.session = p_session
                RETURNING p.id INTO v_id;
            IF v_id IS NULL OR EXISTS (SELECT 1 FROM keayl_cable_presence p
                WHERE p.scope = p_scope AND p.stream = p_stream AND p.id = v_id) THEN
                RETURN NULL;
            END IF;
            RETURN v_id;
        END
        $fn$;
    END IF;
    IF to_regprocedure('keayl_cable_presence_touch_v2(text,text,text[],double precision,integer)') IS NULL THEN
        CREATE FUNCTION keayl_cable_presence_touch_v2(
            p_scope text, p_stream text, p_sessions text[], p_ttl_secs double precision, p_lock_ms integer
        ) RETURNS text[] LANGUAGE plpgsql VOLATILE AS $fn$
        DECLARE
            v_missing text[];
        BEGIN
"#,
    lock_stream!(),
    r#"            WITH touched AS (
                UPDATE keayl_cable_presence p
                    SET expires_at = clock_timestamp() + make_interval(secs => p_ttl_secs)
                    WHERE p.scope = p_scope AND p.stream = p_stream AND p.session = ANY (p_sessions)
                    RETURNING p.session
            )
            SELECT coalesce(array_agg(s), '{}') INTO v_missing
                FROM unnest(p_sessions) AS s
                WHERE s NOT IN (SELECT session FROM touched);
            RETURN v_missing;
        END
        $fn$;
    END IF;
    IF to_regprocedure('keayl_cable_presence_reap_v1(text,integer,integer)') IS NULL THEN
        CREATE FUNCTION keayl_cable_presence_reap_v1(
            p_scope text, p_batch integer, p_lock_ms integer,
            OUT o_streams text[], OUT o_ids text[], OUT o_more boolean
        ) LANGUAGE plpgsql VOLATILE AS $fn$
        DECLARE
            v_streams text[];
            v_key integer;
            v_group text[];
            v_locked text[] := '{}';
            v_budget_ms double precision;
            v_now timestamptz;
            v_gone_streams text[];
            v_gone_ids text[];
        BEGIN
            SELECT coalesce(array_agg(e.stream), '{}') INTO v_streams FROM (
                SELECT DISTINCT p.stream FROM keayl_cable_presence p
                WHERE p.scope = p_scope AND p.expires_at <= clock_timestamp()
                LIMIT p_batch) e;
            o_more := cardinality(v_streams) >= p_batch;
            -- In key order: two reaps never wait for each other in a cycle.
            -- Lock waits share one budget of p_lock_ms: the streams left
            -- when it is spent wait for the next reap (a wait running out
            -- of it fails the statement, which then changes nothing).
            FOR v_key, v_group IN
                SELECT hashtext(p_scope || s.stream) AS k, array_agg(s.stream)
                FROM unnest(v_streams) AS s(stream) GROUP BY k ORDER BY k
            LOOP
                v_budget_ms := p_lock_ms
                    - 1000 * extract(epoch FROM clock_timestamp() - statement_timestamp());
                IF v_budget_ms < 1 THEN
                    o_more := true;
                    EXIT;
                END IF;
                PERFORM set_config('lock_timeout', ceil(v_budget_ms)::bigint || 'ms', true);
                PERFORM pg_advisory_xact_lock(1801806201, v_key);
                v_locked := v_locked || v_group;
            END LOOP;
            -- Under the locks, a fresh snapshot: what an earlier reap (or a
            -- touch) committed is seen, and no join or leave runs meanwhile.
            v_now := clock_timestamp();
            WITH d AS (
                DELETE FROM keayl_cable_presence p
                WHERE p.scope = p_scope AND p.stream = ANY (v_locked) AND p.expires_at <= v_now
                RETURNING p.stream, p.id)
            SELECT array_agg(d.stream), array_agg(d.id) INTO v_gone_streams, v_gone_ids FROM d;
            SELECT coalesce(array_agg(g.stream), '{}'), coalesce(array_agg(g.id), '{}')
                INTO o_streams, o_ids
                FROM (SELECT DISTINCT u.stream, u.id
                      FROM unnest(v_gone_streams, v_gone_ids) AS u(stream, id)
                      WHERE NOT EXISTS (SELECT 1 FROM keayl_cable_presence p
                          WHERE p.scope = p_scope AND p.stream = u.stream AND p.id = u.id)) g;
        END
        $fn$;
    END IF;
END
$do$;
COMMIT;
"#
);

/// The presence statements of a connection.
pub(crate) struct PresenceStatements {
    /// `$1` scope, `$2` stream, `$3` session, `$4` id, `$5` info, `$6` ttl
    /// (s), `$7` max members, `$8` lock timeout (ms): joined, left, full.
    join: Statement,
    /// `$1` scope, `$2` stream, `$3` session, `$4` lock timeout (ms): the
    /// id that left, or NULL.
    leave: Statement,
    /// `$1` scope, `$2` stream, `$3` sessions, `$4` ttl (s), `$5` lock
    /// timeout (ms): the sessions it did not know.
    touch: Statement,
    /// `$1` scope, `$2` stream: the members (id, info) in join order.
    info: Statement,
    /// `$1` scope, `$2` batch (streams), `$3` lock timeout (ms): streams
    /// and ids that left, and whether the batch was full.
    reap: Statement,
}

/// Create the table and functions (when missing) and prepare the
/// statements.
pub(crate) async fn prepare(
    client: &Client,
    timeout: Duration,
) -> Result<PresenceStatements, OpError> {
    timed(
        timeout,
        "creating the presence table",
        client.batch_execute(PRESENCE_SCHEMA),
    )
    .await?;
    let prep = |sql: &'static str| timed(timeout, "prepare", client.prepare(sql));
    let (join, leave, touch, info, reap) = tokio::try_join!(
        prep(
            "SELECT o_joined, o_left, o_full FROM keayl_cable_presence_join_v1( \
               $1::text, $2::text, $3::text, $4::text, $5::bytea, $6::float8, $7::int8, $8::int4)",
        ),
        prep("SELECT keayl_cable_presence_leave_v1($1::text, $2::text, $3::text, $4::int4)"),
        prep(
            "SELECT keayl_cable_presence_touch_v2($1::text, $2::text, $3::text[], $4::float8, $5::int4)",
        ),
        // Every session of an id carries its info and join order.
        prep(
            "SELECT m.id, m.info FROM ( \
               SELECT DISTINCT ON (p.id) p.id, p.info, p.join_order \
               FROM keayl_cable_presence p \
               WHERE p.scope = $1::text AND p.stream = $2::text \
               ORDER BY p.id, p.join_order) m \
             ORDER BY m.join_order, m.id",
        ),
        prep(
            "SELECT o_streams, o_ids, o_more \
             FROM keayl_cable_presence_reap_v1($1::text, $2::int4, $3::int4)",
        ),
    )?;
    Ok(PresenceStatements {
        join,
        leave,
        touch,
        info,
        reap,
    })
}

/// The scope of this process's sessions: its `channel_prefix` and `:`, or
/// nothing without one (`None` and `Some("")` differ, as their channels do).
fn scope(prefix: Option<&str>) -> String {
    prefix.map_or_else(String::new, |p| format!("{p}:"))
}

/// What a call needs: the live connection (with its presence
/// statements), the scope, the command timeout and the lock timeout (ms).
struct Call {
    conn: Arc<Conn>,
    scope: String,
    timeout: Duration,
    lock_ms: i32,
}

impl Call {
    fn statements(&self) -> Result<&PresenceStatements, PresenceError> {
        self.conn.presence.as_ref().ok_or_else(|| {
            PresenceError::Unavailable(format!(
                "the presence table {PRESENCE_TABLE} is unavailable: {}",
                self.conn
                    .presence_error
                    .as_deref()
                    .unwrap_or("unknown error")
            ))
        })
    }
}

/// The live connection's presence statements, or why there are none.
fn call(shared: &Shared) -> Result<Call, PresenceError> {
    let Some(conn) = shared.conn() else {
        return Err(PresenceError::Unavailable(format!(
            "postgres {} is unreachable (reconnecting)",
            shared.broker
        )));
    };
    let scope = scope(shared.config.channel_prefix.as_deref());
    if scope.contains('\0') {
        return Err(PresenceError::Unavailable(
            "a channel prefix cannot contain NUL".into(),
        ));
    }
    let timeout = shared.config.command_timeout;
    Ok(Call {
        conn,
        scope,
        timeout,
        lock_ms: lock_ms(timeout),
    })
}

/// The lock timeout for a command timeout: half of it (at least 1 ms), so
/// a statement waiting for a lock fails (and rolls back) before the client
/// gives up on it.
fn lock_ms(timeout: Duration) -> i32 {
    i32::try_from(timeout.as_millis() / 2)
        .unwrap_or(i32::MAX)
        .max(1)
}

/// `f` within `timeout`, its failure as [`PresenceError::Unavailable`].
async fn within<T>(
    timeout: Duration,
    what: &str,
    f: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, PresenceError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(PresenceError::Unavailable(format!("{what}: {e}"))),
        Err(_) => Err(PresenceError::Unavailable(format!(
            "{what} timed out after {timeout:?}"
        ))),
    }
}

/// Whether `s` can be PostgreSQL text (no NUL).
fn is_text(s: &str) -> bool {
    !s.contains('\0')
}

/// Join `session` to `stream` as `id` (see
/// [`PubSub::presence_join`](keayl_cable::PubSub::presence_join)).
pub(crate) async fn join(
    shared: Arc<Shared>,
    stream: String,
    session: String,
    id: String,
    info: Bytes,
    limits: PresenceLimits,
) -> Result<PresenceJoined, PresenceError> {
    if ![&stream, &session, &id].iter().all(|s| is_text(s)) {
        return Err(PresenceError::Unavailable(
            "presence streams, sessions and ids cannot contain NUL in PostgreSQL".into(),
        ));
    }
    let c = call(&shared)?;
    let st = c.statements()?;
    let ttl = ttl_secs(limits.ttl);
    let max = limit_i64(limits.max_members);
    let row = within(
        c.timeout,
        "joining a presence set",
        c.conn.client.query_one(
            &st.join,
            &[
                &c.scope,
                &stream,
                &session,
                &id,
                &info.as_ref(),
                &ttl,
                &max,
                &c.lock_ms,
            ],
        ),
    )
    .await?;
    let joined: Option<bool> = row.try_get(0).ok().flatten();
    let left: Option<String> = row.try_get(1).ok().flatten();
    let full: Option<bool> = row.try_get(2).ok().flatten();
    if full == Some(true) {
        return Err(PresenceError::Full(limits.max_members));
    }
    Ok(PresenceJoined {
        joined: joined == Some(true),
        left,
    })
}

/// Remove `session` from `stream`: the id that left with it, if any.
pub(crate) async fn leave(
    shared: Arc<Shared>,
    stream: String,
    session: String,
) -> Result<Option<String>, PresenceError> {
    if !is_text(&stream) || !is_text(&session) {
        return Ok(None);
    }
    let c = call(&shared)?;
    let st = c.statements()?;
    let row = within(
        c.timeout,
        "leaving a presence set",
        c.conn
            .client
            .query_one(&st.leave, &[&c.scope, &stream, &session, &c.lock_ms]),
    )
    .await?;
    Ok(row.try_get::<_, Option<String>>(0).ok().flatten())
}

/// Keep `sessions` of `stream` for another `ttl`; returns those unknown.
pub(crate) async fn touch(
    shared: Arc<Shared>,
    stream: String,
    sessions: Vec<String>,
    ttl: Duration,
) -> Result<Vec<String>, PresenceError> {
    // A name PostgreSQL cannot store (NUL) was never joined.
    let (mut sessions, mut missing): (Vec<String>, Vec<String>) =
        sessions.into_iter().partition(|s| is_text(s));
    if !is_text(&stream) {
        missing.append(&mut sessions);
    }
    if sessions.is_empty() {
        return Ok(missing);
    }
    let c = call(&shared)?;
    let st = c.statements()?;
    let ttl = ttl_secs(ttl);
    let row = within(
        c.timeout,
        "touching presence sessions",
        c.conn
            .client
            .query_one(&st.touch, &[&c.scope, &stream, &sessions, &ttl, &c.lock_ms]),
    )
    .await?;
    let unknown: Vec<String> = row
        .try_get(0)
        .map_err(|e| PresenceError::Unavailable(format!("presence touch: {e}")))?;
    missing.extend(unknown);
    Ok(missing)
}

/// The presence set of `stream`, members in join order.
pub(crate) async fn info(
    shared: Arc<Shared>,
    stream: String,
) -> Result<PresenceSet, PresenceError> {
    if !is_text(&stream) {
        return Ok(PresenceSet::default());
    }
    let c = call(&shared)?;
    let st = c.statements()?;
    let rows = within(
        c.timeout,
        "reading a presence set",
        c.conn.client.query(&st.info, &[&c.scope, &stream]),
    )
    .await?;
    let members: Vec<PresenceMember> = rows
        .iter()
        .filter_map(|row| {
            let id: String = row.try_get(0).ok()?;
            let info: Vec<u8> = row.try_get(1).ok()?;
            Some(PresenceMember {
                id,
                info: Bytes::from(info),
            })
        })
        .collect();
    Ok(PresenceSet {
        total: members.len(),
        members,
    })
}

/// Remove the expired sessions of every stream of this scope: the ids
/// that left, each reported by the one reap that removed its last session.
/// In batches of [`REAP_BATCH`] streams, at most [`REAP_ROUNDS`] of them;
/// a failure after a batch committed returns what was reaped so far (those
/// ids are gone from the table: they must be reported).
pub(crate) async fn reap(shared: Arc<Shared>) -> Result<Vec<PresenceLeft>, PresenceError> {
    let c = call(&shared)?;
    let st = c.statements()?;
    let mut left = Vec::new();
    for round in 0..REAP_ROUNDS {
        let row = match within(
            c.timeout,
            "reaping presence sessions",
            c.conn
                .client
                .query_one(&st.reap, &[&c.scope, &REAP_BATCH, &c.lock_ms]),
        )
        .await
        {
            Ok(row) => row,
            Err(e) if round == 0 => return Err(e),
            Err(e) => {
                tracing::warn!(backend = "postgres", error = %e, "presence reap stopped early");
                break;
            }
        };
        let streams: Vec<String> = row.try_get(0).unwrap_or_default();
        let ids: Vec<String> = row.try_get(1).unwrap_or_default();
        let more: bool = row.try_get(2).unwrap_or(false);
        left.extend(
            streams
                .into_iter()
                .zip(ids)
                .map(|(stream, id)| PresenceLeft { stream, id }),
        );
        if !more {
            break;
        }
    }
    Ok(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_keep_prefixes_apart() {
        assert_eq!(scope(None), "");
        assert_eq!(scope(Some("")), ":");
        assert_eq!(scope(Some("app")), "app:");
    }

    #[test]
    fn lock_timeouts_stay_within_the_command_timeout() {
        assert_eq!(lock_ms(Duration::from_secs(5)), 2500);
        assert_eq!(lock_ms(Duration::ZERO), 1);
        assert_eq!(lock_ms(Duration::MAX), i32::MAX);
    }

    #[test]
    fn the_sql_uses_the_table_and_the_lock_class() {
        assert!(PRESENCE_SCHEMA.contains(&format!(
            "CREATE UNLOGGED TABLE IF NOT EXISTS {PRESENCE_TABLE} ("
        )));
        let class = format!("pg_advisory_xact_lock({PRESENCE_LOCK_CLASS},");
        // Join, leave, touch (the macro, three times) and reap.
        assert_eq!(PRESENCE_SCHEMA.matches(&class).count(), 4);
        assert_eq!(PRESENCE_SCHEMA.matches("pg_advisory_xact_lock(").count(), 5);
    }
}
