"""Stored message rows to the values a backend returns.

Rows are read by column name (``sqlite3.Row`` or a psycopg dict row), so
each dialect selects :data:`MESSAGE_COLUMNS` plus any columns of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pmsq.backends.sqlkit.states import DEAD, export_name, peek_name
from pmsq.backends.types import Claimed, Envelope, Receipt, StoredDeadLetter, StoredMessage

__all__ = [
    "EXPIRY_COLUMN",
    "MESSAGE_COLUMNS",
    "claimed_from_row",
    "dead_letter_from_row",
    "envelope_from_row",
    "peek_from_row",
    "stored_from_row",
    "tenant_in",
    "tenant_out",
]

Row = Mapping[str, Any]

#: Columns every dialect stores for a message and the functions below read.
MESSAGE_COLUMNS = (
    "seq, id, queue, tenant, key, priority, state, head, line, available_at, attempt, "
    "lease_token, lease_expires, enqueued_at, format, payload, headers, dedup_id, topic, "
    "correlation_id, causation_id, error_type, error, dead_reason, dead_at"
)


#: The column of ``Envelope.expires_at`` (message control, schema v5). Not in
#: :data:`MESSAGE_COLUMNS` yet, so a dialect without it keeps working: a
#: dialect that stores it selects it too, and :func:`envelope_from_row`
#: reads it when present.
EXPIRY_COLUMN = "expires_at"


def tenant_in(tenant: str | None) -> str:
    """Stored form of a tenant: ``''`` for none, so equality and indexes work."""
    return tenant or ""


def tenant_out(tenant: str) -> str | None:
    """Public form of a stored tenant."""
    return tenant or None


def envelope_from_row(row: Row) -> Envelope:
    """Rebuild an ``Envelope`` from a row selected with ``MESSAGE_COLUMNS``."""
    return Envelope(
        id=row["id"],
        queue=row["queue"],
        data=bytes(row["payload"]),
        format=row["format"],
        key=row["key"],
        tenant=tenant_out(row["tenant"]),
        priority=row["priority"],
        available_at=row["available_at"],
        enqueued_at=row["enqueued_at"],
        headers=row["headers"],
        dedup_id=row["dedup_id"],
        topic=row["topic"],
        correlation_id=row["correlation_id"],
        causation_id=row["causation_id"],
        expires_at=_expiry(row),
    )


def _expiry(row: Row) -> float | None:
    # Asked, not looked up in keys(): that would build the list of names per row.
    try:
        value = row[EXPIRY_COLUMN]
    except (KeyError, IndexError):  # a dict row, a sqlite3.Row
        return None
    return None if value is None else float(value)


def claimed_from_row(row: Row, *, token: str, attempt: int, lease_expires: float) -> Claimed:
    """The ``Claimed`` of a row just leased with ``token`` for delivery ``attempt``."""
    return Claimed(
        receipt=Receipt(
            queue=row["queue"],
            message_id=row["id"],
            token=token,
            handle=row["seq"],
            tenant=tenant_out(row["tenant"]),
        ),
        envelope=envelope_from_row(row),
        attempt=attempt,
        lease_expires=lease_expires,
    )


def dead_letter_from_row(row: Row) -> StoredDeadLetter:
    """The ``StoredDeadLetter`` of a dead row."""
    return StoredDeadLetter(
        envelope=envelope_from_row(row),
        attempts=row["attempt"],
        reason=row["dead_reason"] or "",
        error_type=row["error_type"],
        traceback=row["error"],
        dead_at=row["dead_at"],
    )


def stored_from_row(row: Row) -> StoredMessage:
    """The ``StoredMessage`` (export form) of any row."""
    return StoredMessage(
        envelope=envelope_from_row(row),
        state=export_name(row["state"]),
        attempts=row["attempt"],
        error_type=row["error_type"],
        error=row["error"],
        dead_reason=row["dead_reason"],
        dead_at=row["dead_at"],
        holds_key=bool(row["state"] == DEAD and row["line"] and row["key"] is not None),
    )


def peek_from_row(row: Row) -> tuple[Envelope, int, str]:
    """One entry of ``peek``: the envelope, its attempts and its state's name."""
    return envelope_from_row(row), row["attempt"], peek_name(row["state"], row["head"])
