"""Pauses and circuit breakers in the SQLite store: ``pmsq_pauses`` and ``pmsq_failures``.

Every function runs inside the caller's write transaction (or, for the
lock-free probes, on a read connection). What the rows mean is decided by
:mod:`pmsq.backends.sqlkit.pauses`, shared with PostgreSQL.

The claim path reads one queue's pause rows with one primary-key range seek
(``pmsq_pauses`` is ``WITHOUT ROWID``, keyed by queue first): with no pause
stored that is the whole cost of pauses on a claim.
"""

from __future__ import annotations

from typing import Any

from pmsq.backends.sqlite.journal import Event, Journal
from pmsq.backends.sqlkit import pauses as kit
from pmsq.backends.sqlkit.rows import tenant_in
from pmsq.backends.sqlkit.states import IN_FLIGHT
from pmsq.backends.types import PauseRecord
from pmsq.config import Circuit

__all__ = [
    "CONTROL_DDL",
    "circuit_failure",
    "close_probe",
    "held_scopes",
    "list_pauses",
    "load_holds",
    "migrate",
    "paused_scopes",
    "remove_pause",
    "save_pause",
    "set_probe",
]

#: Schema version 5 (see ``schema.MIGRATIONS``): pauses and circuit failures
#: (and ``pmsq_messages.expires_at``, added by :func:`migrate`). ``tenant``
#: and ``key`` are ``''`` for none (a key is never empty).
CONTROL_DDL = """
CREATE TABLE IF NOT EXISTS pmsq_pauses (
    queue TEXT NOT NULL,
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    until REAL,
    reason TEXT NOT NULL,
    since REAL NOT NULL,
    circuit INTEGER NOT NULL DEFAULT 0,
    probe TEXT,
    PRIMARY KEY (queue, tenant, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pmsq_failures (
    queue TEXT NOT NULL,
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS pmsq_ix_failures ON pmsq_failures (queue, tenant, key, at);
"""


def migrate(conn: Any) -> None:
    """Schema version 5: the expiry column (unless present) and the tables above."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(pmsq_messages)")}
    if "expires_at" not in columns:
        conn.execute("ALTER TABLE pmsq_messages ADD COLUMN expires_at REAL")
    for statement in CONTROL_DDL.split(";"):
        if statement.strip():
            conn.execute(statement)


def _journal(
    journal: Journal,
    now: float,
    event: str,
    queue: str,
    tenant: str,
    key: str,
    **detail: Any,
) -> None:
    # A scope's event belongs to no message: message_id "".
    journal.add(now, event, "", queue, tenant, key or None, None, **detail)


def load_holds(conn: Any, queue: str, now: float) -> kit.Holds | None:
    """What ``queue``'s pauses hold at ``now``; ``None`` when it has none (the usual case)."""
    rows = conn.execute(
        "SELECT tenant, key, until, circuit, probe FROM pmsq_pauses WHERE queue = ?", (queue,)
    ).fetchall()
    if not rows:
        return None

    def busy(mid: str) -> bool:
        return bool(
            conn.execute(
                f"SELECT 1 FROM pmsq_messages WHERE id = ? AND state = {IN_FLIGHT:d}", (mid,)
            ).fetchone()
        )

    return kit.holds(
        ((r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows),
        now,
        busy,
    )


def set_probe(conn: Any, queue: str, scope: kit.Scope, message_id: str) -> None:
    """Record that ``message_id`` is the half-open probe of the circuit of ``scope``."""
    conn.execute(
        "UPDATE pmsq_pauses SET probe = ? WHERE queue = ? AND tenant = ? AND key = ?",
        (message_id, queue, scope[0], scope[1]),
    )


def save_pause(conn: Any, journal: Journal, record: PauseRecord, now: float) -> None:
    """Insert or replace the pause of ``record``'s scope (journal ``paused``)."""
    tenant, key = tenant_in(record.tenant), record.key or ""
    conn.execute(
        "INSERT OR REPLACE INTO pmsq_pauses (queue, tenant, key, until, reason, since, circuit, "
        "probe) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
        (record.queue, tenant, key, record.until, record.reason, record.since, int(record.circuit)),
    )
    if not record.circuit:
        # An operator's pause replaces a circuit: its failures start afresh.
        _forget_failures(conn, record.queue, tenant, key)
    _journal(
        journal,
        now,
        Event.CIRCUIT_OPENED if record.circuit else Event.PAUSED,
        record.queue,
        tenant,
        key,
        reason=record.reason or None,
        until=record.until,
    )


def remove_pause(
    conn: Any, journal: Journal, queue: str, tenant: str | None, key: str | None, now: float
) -> bool:
    """Delete the pause of exactly this scope; whether one was in force.

    Removing a circuit's pause closes the circuit (journal ``circuit_closed``).
    """
    t, k = tenant_in(tenant), key or ""
    row = conn.execute(
        "DELETE FROM pmsq_pauses WHERE queue = ? AND tenant = ? AND key = ? "
        "RETURNING until, circuit",
        (queue, t, k),
    ).fetchone()
    if row is None:
        return False
    until, circuit = row
    _forget_failures(conn, queue, t, k)
    if circuit:
        _journal(journal, now, Event.CIRCUIT_CLOSED, queue, t, k, by="resume")
        return True
    if not kit.in_force(until, now):
        _journal(journal, now, Event.RESUMED, queue, t, k, by="until", until=until)
        return False
    _journal(journal, now, Event.RESUMED, queue, t, k, by="resume")
    return True


def list_pauses(conn: Any, now: float) -> list[PauseRecord]:
    """Every pause in force (and every open circuit), by queue, tenant and key."""
    rows = conn.execute(
        "SELECT queue, tenant, key, until, reason, since, circuit FROM pmsq_pauses "
        "WHERE circuit = 1 OR until IS NULL OR until > ? ORDER BY queue, tenant, key",
        (now,),
    ).fetchall()
    return [kit.record_from_row(*r) for r in rows]


def paused_scopes(conn: Any, now: float) -> set[tuple[str, str]]:
    """``(queue, tenant)`` held as a whole at ``now`` (tenant ``''``: the queue-wide pause)."""
    rows = conn.execute(
        "SELECT queue, tenant FROM pmsq_pauses WHERE key = '' "
        "AND (circuit = 1 OR until IS NULL OR until > ?)",
        (now,),
    ).fetchall()
    return {(r[0], r[1]) for r in rows}


def held_scopes(conn: Any, queue: str, tenant: str | None, now: float) -> bool:
    """Lock-free probe: is ``queue`` (or ``tenant``'s part of it) held as a whole now?"""
    tenants = ("",) if tenant is None else ("", tenant_in(tenant))
    marks = ", ".join("?" * len(tenants))
    # A half-open circuit (until passed) lets its probe through: not held here.
    return bool(
        conn.execute(
            f"SELECT 1 FROM pmsq_pauses WHERE queue = ? AND tenant IN ({marks}) AND key = '' "
            "AND (until IS NULL OR until > ?) LIMIT 1",
            (queue, *tenants, now),
        ).fetchone()
    )


def _forget_failures(conn: Any, queue: str, tenant: str, key: str) -> None:
    conn.execute(
        "DELETE FROM pmsq_failures WHERE queue = ? AND tenant = ? AND key = ?",
        (queue, tenant, key),
    )


def close_probe(conn: Any, journal: Journal, queue: str, message_id: str, now: float) -> None:
    """An acked message closes the circuit it probed (journal ``circuit_closed``)."""
    for tenant, key in conn.execute(
        "DELETE FROM pmsq_pauses WHERE queue = ? AND circuit = 1 AND probe = ? "
        "RETURNING tenant, key",
        (queue, message_id),
    ).fetchall():
        _forget_failures(conn, queue, tenant, key)
        _journal(journal, now, Event.CIRCUIT_CLOSED, queue, tenant, key, probe=message_id)


def circuit_failure(
    conn: Any,
    journal: Journal,
    circuit: Circuit,
    *,
    queue: str,
    tenant: str,
    key: str | None,
    message_id: str,
    error_type: str | None,
    error: str | None,
    now: float,
) -> None:
    """Count a handler failure toward ``circuit``; open (or re-open) it when due.

    A failing probe opens its circuit again for ``open_for``. A scope held
    already (an open circuit, or an operator's pause) counts nothing more.
    """
    scope = kit.circuit_scope(circuit, tenant, key)
    if scope is None:
        return
    t, k = scope
    reason = kit.circuit_reason(error_type, error)
    until = now + circuit.open_for
    held = conn.execute(
        "SELECT circuit, probe FROM pmsq_pauses WHERE queue = ? AND tenant = ? AND key = ?",
        (queue, t, k),
    ).fetchone()
    if held is not None:
        if held[0] and held[1] == message_id:
            conn.execute(
                "UPDATE pmsq_pauses SET until = ?, reason = ?, since = ?, probe = NULL "
                "WHERE queue = ? AND tenant = ? AND key = ?",
                (until, reason, now, queue, t, k),
            )
            _journal(
                journal,
                now,
                Event.CIRCUIT_OPENED,
                queue,
                t,
                k,
                reason=reason,
                until=until,
                probe=message_id,
            )
        return
    conn.execute(
        "DELETE FROM pmsq_failures WHERE queue = ? AND tenant = ? AND key = ? AND at <= ?",
        (queue, t, k, now - circuit.within),
    )
    conn.execute(
        "INSERT INTO pmsq_failures (queue, tenant, key, at) VALUES (?, ?, ?, ?)",
        (queue, t, k, now),
    )
    count = conn.execute(
        "SELECT COUNT(*) FROM pmsq_failures WHERE queue = ? AND tenant = ? AND key = ?",
        (queue, t, k),
    ).fetchone()[0]
    if kit.opens(circuit, int(count)):
        record = PauseRecord(
            queue=queue,
            tenant=t or None,
            key=k or None,
            until=until,
            reason=reason,
            since=now,
            circuit=True,
        )
        save_pause(conn, journal, record, now)
        _forget_failures(conn, queue, t, k)
