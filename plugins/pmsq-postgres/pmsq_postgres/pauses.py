"""Pauses in the PostgreSQL store: the ``pauses`` table, and what claims hold because of it.

A pause's scope is stored as ``(queue, tenant, keyed, key)`` with no NULLs,
so it can be the primary key (one pause per scope; pausing again replaces
it): ``tenant`` is ``''`` for none and ``key`` is ``''`` unless ``keyed``.
``('', false)`` is a queue-wide pause; ``(T, false)`` holds tenant ``T``;
``(T, true, K)`` holds key ``K`` of tenant ``T`` (``''``: the tenantless key).

A pause is *in force* while its ``until`` is unset or in the future. A
circuit pause (``circuit``) holds its scope even past ``until``: from then
on it is half-open, and the claim lets exactly one message of the scope
through as the probe (``probe`` names it; ``pmsq_postgres.circuit``).

Claims of a queue without any ``pauses`` row run the same statements as
before pauses existed; only a queue with a row pays for the filter.
"""

from __future__ import annotations

from typing import Any

from pmsq.backends.sqlkit.rows import tenant_in, tenant_out
from pmsq.backends.types import PauseRecord
from pmsq_postgres.tx import Tx

__all__ = [
    "CONTROL_DDL",
    "delete_pause",
    "holds",
    "in_force",
    "list_pauses",
    "paused_queues",
    "scope_of",
    "upsert_pause",
]

#: Schema version 3 (see ``schema.MIGRATIONS``): expiry, pauses, circuit failures.
CONTROL_DDL = """
ALTER TABLE {s}.messages ADD COLUMN IF NOT EXISTS expires_at double precision;
CREATE TABLE IF NOT EXISTS {s}.pauses (
    queue text NOT NULL,
    tenant text NOT NULL,
    keyed boolean NOT NULL,
    key text NOT NULL,
    until double precision,
    reason text NOT NULL,
    since double precision NOT NULL,
    circuit boolean NOT NULL,
    probe text,
    PRIMARY KEY (queue, tenant, keyed, key)
);
CREATE TABLE IF NOT EXISTS {s}.failures (
    queue text NOT NULL,
    tenant text NOT NULL,
    keyed boolean NOT NULL,
    key text NOT NULL,
    at double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_failures ON {s}.failures (queue, tenant, keyed, key, at);
"""

Scope = tuple[str, str, bool, str]


def scope_of(queue: str, tenant: str | None, key: str | None) -> Scope:
    """The stored scope columns ``(queue, tenant, keyed, key)`` of a public scope."""
    return (queue, tenant_in(tenant), key is not None, key or "")


def in_force(p: str, now: str) -> str:
    """SQL: pause row ``p`` holds its scope at ``now`` (a circuit holds until closed)."""
    return f"({p}.circuit OR {p}.until IS NULL OR {p}.until > {now})"


def covers(p: str, m: str) -> str:
    """SQL: pause row ``p``'s scope contains message row ``m``."""
    return (
        f"((NOT {p}.keyed AND {p}.tenant IN ('', {m}.tenant)) "
        f"OR ({p}.keyed AND {p}.tenant = {m}.tenant AND {p}.key = {m}.key))"
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


_COLUMNS = "queue, tenant, keyed, key, until, reason, since, circuit"


def _record(row: Any) -> PauseRecord:
    queue, tenant, keyed, key, until, reason, since, circuit = row
    return PauseRecord(
        queue=queue,
        tenant=tenant_out(tenant),
        key=key if keyed else None,
        until=until,
        reason=reason,
        since=since,
        circuit=circuit,
    )


def upsert_pause(tx: Tx, record: PauseRecord) -> None:
    """Store ``record``, replacing the pause of its scope (a new pause has no probe)."""
    queue, tenant, keyed, key = scope_of(record.queue, record.tenant, record.key)
    tx.execute(
        f"INSERT INTO {{s}}.pauses ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (queue, tenant, keyed, key) DO UPDATE SET until = excluded.until, "
        "reason = excluded.reason, since = excluded.since, circuit = excluded.circuit, "
        "probe = NULL",
        (queue, tenant, keyed, key, record.until, record.reason, record.since, record.circuit),
    )


def delete_pause(tx: Tx, scope: Scope, now: float) -> bool:
    """Remove the pause of ``scope`` and its circuit's failure count; whether one was in force."""
    row = tx.one(
        "DELETE FROM {s}.pauses p WHERE queue = %s AND tenant = %s AND keyed = %s AND key = %s "
        f"RETURNING {in_force('p', '%s')}",
        (*scope, now),
    )
    # A resumed circuit starts counting afresh.
    tx.execute(
        "DELETE FROM {s}.failures WHERE queue = %s AND tenant = %s AND keyed = %s AND key = %s",
        scope,
    )
    return bool(row is not None and row[0])


def paused_queues(tx: Tx, now: float) -> set[str]:
    """Queues with a queue-wide pause (or queue circuit) in force at ``now``."""
    rows = tx.all(
        "SELECT DISTINCT queue FROM {s}.pauses p WHERE tenant = '' AND NOT keyed "
        f"AND {in_force('p', '%s')}",
        (now,),
    )
    return {r[0] for r in rows}


def list_pauses(tx: Tx, now: float) -> list[PauseRecord]:
    """Every pause in force at ``now``, by queue, tenant and key (scope-wide before keys)."""
    rows = tx.all(
        f"SELECT {_COLUMNS} FROM {{s}}.pauses p WHERE {in_force('p', '%s')} "
        "ORDER BY queue, tenant, keyed, key",
        (now,),
    )
    return [_record(r) for r in rows]
