"""Pauses in the PostgreSQL store: the ``pauses`` table, and what claims hold because of it.

A pause's scope is stored as ``(queue, tenant, key)`` with ``''`` for none
(a key is never empty), the primary key: one pause per scope, and pausing
again replaces it. ``('', '')`` is a queue-wide pause, ``(T, '')`` holds
tenant ``T``, ``(T, K)`` holds key ``K`` of ``T`` (``T = ''``: the tenantless
key). What the rows mean is decided by :mod:`pmsq.backends.sqlkit.pauses`,
shared with SQLite; here it is written as SQL so a claim filters its
candidate heads in the statement that picks them.

A pause is *in force* while its ``until`` is unset or in the future. A
circuit pause (``circuit``) holds its scope even past ``until``: from then
on it is half-open, and a claim lets exactly one message of the scope
through as the probe (``probe`` names it; ``pmsq_postgres.circuit``).

Claims of a queue without any ``pauses`` row run the same statements as
before pauses existed; only a queue with a row pays for the filter.
"""

from __future__ import annotations

from pmsq.backends.sqlkit.pauses import record_from_row
from pmsq.backends.sqlkit.rows import tenant_in
from pmsq.backends.types import PauseRecord
from pmsq_postgres.tx import Tx

__all__ = [
    "CONTROL_DDL",
    "Scope",
    "covers",
    "delete_pause",
    "forget_failures",
    "holds",
    "in_force",
    "list_pauses",
    "paused_scopes",
    "scope_of",
    "upsert_pause",
]

#: Schema version 3 (see ``schema.MIGRATIONS``): expiry, pauses, circuit failures.
CONTROL_DDL = """
ALTER TABLE {s}.messages ADD COLUMN IF NOT EXISTS expires_at double precision;
CREATE TABLE IF NOT EXISTS {s}.pauses (
    queue text NOT NULL,
    tenant text NOT NULL,
    key text NOT NULL,
    until double precision,
    reason text NOT NULL,
    since double precision NOT NULL,
    circuit boolean NOT NULL,
    probe text,
    PRIMARY KEY (queue, tenant, key)
);
CREATE TABLE IF NOT EXISTS {s}.failures (
    queue text NOT NULL,
    tenant text NOT NULL,
    key text NOT NULL,
    at double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_failures ON {s}.failures (queue, tenant, key, at);
"""

#: ``(queue, tenant, key)`` of a pause as stored.
Scope = tuple[str, str, str]


def scope_of(queue: str, tenant: str | None, key: str | None) -> Scope:
    """The stored scope ``(queue, tenant, key)`` of a public scope."""
    return (queue, tenant_in(tenant), key or "")


def in_force(p: str, now: str) -> str:
    """SQL: pause row ``p`` holds (part of) its scope at ``now`` (a circuit until closed)."""
    return f"({p}.circuit OR {p}.until IS NULL OR {p}.until > {now})"


def covers(p: str, m: str) -> str:
    """SQL: pause row ``p``'s scope contains message row ``m``."""
    return (
        f"(({p}.key = '' AND {p}.tenant IN ('', {m}.tenant)) "
        f"OR ({p}.tenant = {m}.tenant AND {p}.key = {m}.key))"
    )


def holds(m: str, now: str = "%(now)s", *, but: str | None = None, lapsing: bool = False) -> str:
    """SQL: some pause in force holds message row ``m``.

    Args:
        m: The message row's alias.
        now: SQL of the current time.
        but: A condition on the pause row (alias ``x``) of a pause to disregard.
        lapsing: Disregard circuits past their ``until`` (half-open: one
            message may go through), for answers that may say too much.
    """
    skip = f" AND NOT ({but})" if but else ""
    force = f"(x.until IS NULL OR x.until > {now})" if lapsing else in_force("x", now)
    return (
        f"EXISTS (SELECT 1 FROM {{s}}.pauses x WHERE x.queue = {m}.queue AND {covers('x', m)} "
        f"AND {force}{skip})"
    )


_COLUMNS = "queue, tenant, key, until, reason, since, circuit"


def forget_failures(tx: Tx, scope: Scope) -> None:
    """Drop the failure count of ``scope`` (its circuit starts counting afresh)."""
    tx.execute("DELETE FROM {s}.failures WHERE queue = %s AND tenant = %s AND key = %s", scope)


def upsert_pause(tx: Tx, record: PauseRecord) -> None:
    """Store ``record``, replacing the pause of its scope (a new pause has no probe).

    An operator's pause replacing a circuit makes it count afresh.
    """
    scope = scope_of(record.queue, record.tenant, record.key)
    tx.execute(
        f"INSERT INTO {{s}}.pauses ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (queue, tenant, key) DO UPDATE SET until = excluded.until, "
        "reason = excluded.reason, since = excluded.since, circuit = excluded.circuit, "
        "probe = NULL",
        (*scope, record.until, record.reason, record.since, record.circuit),
    )
    if not record.circuit:
        forget_failures(tx, scope)


def delete_pause(tx: Tx, scope: Scope, now: float) -> bool:
    """Remove the pause of ``scope`` (a circuit: closed); whether one was in force."""
    row = tx.one(
        "DELETE FROM {s}.pauses p WHERE queue = %s AND tenant = %s AND key = %s "
        f"RETURNING {in_force('p', '%s')}",
        (*scope, now),
    )
    forget_failures(tx, scope)
    return bool(row is not None and row[0])


def paused_scopes(tx: Tx, now: float) -> set[tuple[str, str]]:
    """``(queue, tenant)`` held as a whole at ``now`` (tenant ``''``: the queue-wide pause)."""
    rows = tx.all(
        f"SELECT queue, tenant FROM {{s}}.pauses p WHERE key = '' AND {in_force('p', '%s')}",
        (now,),
    )
    return {(r[0], r[1]) for r in rows}


def list_pauses(tx: Tx, now: float) -> list[PauseRecord]:
    """Every pause in force at ``now`` (and every open circuit), by queue, tenant and key."""
    rows = tx.all(
        f"SELECT {_COLUMNS} FROM {{s}}.pauses p WHERE {in_force('p', '%s')} "
        "ORDER BY queue, tenant, key",
        (now,),
    )
    return [record_from_row(*r) for r in rows]
