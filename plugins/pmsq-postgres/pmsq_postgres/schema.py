"""The PostgreSQL schema, its version, and creating or migrating it.

Row states and invariants (the same as the SQLite backend's, see
``pmsq.backends.sqlite.schema``):

- ``state``: 0 ready, 1 in flight, 2 dead, 3 scheduled (waiting for
  ``available_at``: a delay or a retry backoff).
- ``line`` is true while a keyed message occupies its key's line (not yet
  acked, and not dead unless its queue blocks keys on failure). ``head`` is
  true for the line's first message, and always for unkeyed messages. Only
  heads are ever claimed, so a claim never looks at messages queued behind a
  hot key, and never leases two messages of one key.
- ``keys`` holds one row per (queue, tenant, key) with ``live`` = the number
  of messages in the line and ``tail`` = the last position handed out.
  Everything that adds to or removes from a line first locks that row
  (``INSERT .. ON CONFLICT DO UPDATE`` or ``UPDATE``), then, in a *separate*
  statement (a fresh READ COMMITTED snapshot), looks at the messages. So
  producers of one key are serialised on the row and ``kpos`` follows commit
  order even though ``seq`` values (from a sequence) can commit out of
  order; and an ack that moves the head up always sees a message put by a
  producer that held the row before it.
- ``ix_ready`` holds exactly the claimable messages, per tenant in delivery
  order (priority desc, seq), so a claim is an index seek whatever the backlog.
- ``pauses`` holds at most one pause per scope and ``failures`` the circuit
  breakers' recent failures (``pmsq_postgres.pauses``, ``pmsq_postgres.circuit``);
  ``messages.expires_at`` is checked when a message would be delivered
  (``pmsq_postgres.expiry``).
"""

from __future__ import annotations

from typing import Any

import psycopg

from pmsq.backends.sqlkit.states import DEAD, IN_FLIGHT, READY, SCHEDULED, WAITING
from pmsq_postgres.pauses import CONTROL_DDL
from pmsq_postgres.presence import PRESENCE_DDL
from pmsq_postgres.schedules import SCHEDULES_DDL
from pmsq_postgres.tx import SqlText

__all__ = ["SCHEMA_VERSION", "SchemaError", "create_or_migrate", "drop_schema"]

SCHEMA_VERSION = 4

_V1 = f"""
CREATE TABLE {{s}}.meta (
    k text PRIMARY KEY,
    v text NOT NULL
);
CREATE TABLE {{s}}.queues (
    name text PRIMARY KEY,
    config text NOT NULL,
    rr_tenant text
);
CREATE TABLE {{s}}.bindings (
    pattern text NOT NULL,
    queue text NOT NULL,
    PRIMARY KEY (pattern, queue)
);
CREATE TABLE {{s}}.messages (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id text NOT NULL UNIQUE,
    queue text NOT NULL,
    tenant text NOT NULL,
    key text,
    kpos bigint,
    priority integer NOT NULL,
    state smallint NOT NULL,
    head boolean NOT NULL,
    line boolean NOT NULL,
    available_at double precision NOT NULL,
    attempt integer NOT NULL DEFAULT 0,
    lease_token text,
    lease_expires double precision,
    enqueued_at double precision NOT NULL,
    format text NOT NULL,
    payload bytea NOT NULL,
    headers text,
    dedup_id text,
    topic text,
    correlation_id text,
    causation_id text,
    error_type text,
    error text,
    dead_reason text,
    dead_at double precision
) WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.05);
CREATE INDEX ix_ready ON {{s}}.messages (queue, tenant, priority DESC, seq)
    WHERE state = {READY:d} AND head;
CREATE INDEX ix_scheduled ON {{s}}.messages (queue, available_at) WHERE state = {SCHEDULED:d};
CREATE INDEX ix_leases ON {{s}}.messages (queue, lease_expires) WHERE state = {IN_FLIGHT:d};
CREATE INDEX ix_line ON {{s}}.messages (queue, tenant, key, kpos) WHERE line;
CREATE INDEX ix_dead ON {{s}}.messages (queue, tenant, dead_at) WHERE state = {DEAD:d};
CREATE INDEX ix_waiting ON {{s}}.messages (queue, tenant, enqueued_at) WHERE state IN {WAITING};
CREATE TABLE {{s}}.keys (
    queue text NOT NULL,
    tenant text NOT NULL,
    key text NOT NULL,
    tail bigint NOT NULL,
    live integer NOT NULL,
    PRIMARY KEY (queue, tenant, key)
);
CREATE TABLE {{s}}.dedup (
    queue text NOT NULL,
    tenant text NOT NULL,
    dedup_id text NOT NULL,
    message_id text NOT NULL,
    expires_at double precision,
    PRIMARY KEY (queue, tenant, dedup_id)
);
CREATE INDEX ix_dedup_expiry ON {{s}}.dedup (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE {{s}}.metrics (
    queue text NOT NULL,
    tenant text NOT NULL,
    slot bigint NOT NULL,
    processed bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    retried bigint NOT NULL DEFAULT 0,
    dead_lettered bigint NOT NULL DEFAULT 0,
    hist bigint[],
    PRIMARY KEY (queue, tenant, slot)
);
CREATE TABLE {{s}}.rate (
    queue text NOT NULL,
    scope text NOT NULL,
    ts double precision NOT NULL
);
CREATE INDEX ix_rate ON {{s}}.rate (queue, scope, ts);
CREATE TABLE {{s}}.once (
    consumer text NOT NULL,
    message_id text NOT NULL,
    recorded_at double precision NOT NULL,
    PRIMARY KEY (consumer, message_id)
);
"""

# Forward migrations: MIGRATIONS[n] upgrades a store from version n to n + 1.
MIGRATIONS: dict[int, str] = {
    1: SCHEDULES_DDL,  # version 2: recurring schedules
    2: CONTROL_DDL,  # version 3: expiry, pauses and circuit breakers
    3: PRESENCE_DDL,  # version 4: worker presence, lateness index, puts and waits
}


class SchemaError(Exception):
    """The schema is not a usable pmsq store; the message says why."""


def _lock_key(sql: SqlText) -> str:
    return f"pmsq-schema:{sql.schema}"


def _current(conn: psycopg.Connection[Any], sql: SqlText) -> bool:
    """Whether the store exists at this pmsq's version (the common case: one query)."""
    try:
        with conn.transaction():
            rows = dict(
                conn.execute(
                    sql("SELECT k, v FROM {s}.meta WHERE k IN ('store', 'schema_version')")
                ).fetchall()
            )
    except psycopg.errors.UndefinedTable:
        return False
    return rows == {"store": "pmsq", "schema_version": str(SCHEMA_VERSION)}


def create_or_migrate(conn: psycopg.Connection[Any], sql: SqlText) -> int:
    """Create the schema's tables, or migrate them forward; return the version found.

    Runs in its own transaction under an advisory lock, so processes opening
    the same store at once create it exactly once.

    Raises:
        SchemaError: the schema holds foreign tables, or was written by a newer pmsq.
    """
    if _current(conn, sql):
        return SCHEMA_VERSION
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (_lock_key(sql),))
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (sql.schema,),
            )
        }
        if "meta" not in tables:
            if tables:
                raise SchemaError(
                    f"schema {sql.schema!r} already holds tables that are not pmsq's "
                    f"({', '.join(sorted(tables)[:5])}); choose another schema with ?schema="
                )
            conn.execute(sql("CREATE SCHEMA IF NOT EXISTS {s}"))
            # One round trip: a script without parameters runs as a simple query.
            conn.execute(sql(_V1).encode())
            for version in range(1, SCHEMA_VERSION):  # a new store gets every migration too
                conn.execute(sql(MIGRATIONS[version]).encode())
            conn.execute(
                sql("INSERT INTO {s}.meta (k, v) VALUES ('store', 'pmsq'), ('schema_version', %s)"),
                (str(SCHEMA_VERSION),),
            )
            return 0
        rows = dict(conn.execute(sql("SELECT k, v FROM {s}.meta")).fetchall())
        found_text = rows.get("schema_version", "")
        if rows.get("store") != "pmsq" or not found_text.isdigit():
            raise SchemaError(
                f"schema {sql.schema!r} has a meta table that is not pmsq's; "
                "choose another schema with ?schema="
            )
        found = int(found_text)
        if found > SCHEMA_VERSION:
            raise SchemaError(
                f"it was written by a newer pmsq (schema version {found}, this pmsq-postgres "
                f"reads up to {SCHEMA_VERSION}); upgrade pmsq-postgres to open it"
            )
        version = found
        while version < SCHEMA_VERSION:
            conn.execute(sql(MIGRATIONS[version]).encode())
            version += 1
        if found != version:
            conn.execute(
                sql("UPDATE {s}.meta SET v = %s WHERE k = 'schema_version'"),
                (str(SCHEMA_VERSION),),
            )
        return found


def drop_schema(conn: psycopg.Connection[Any], sql: SqlText) -> None:
    """Drop the whole store (tests and ``pmsq`` tooling); irreversible."""
    with conn.transaction():
        conn.execute(sql("DROP SCHEMA IF EXISTS {s} CASCADE"))
