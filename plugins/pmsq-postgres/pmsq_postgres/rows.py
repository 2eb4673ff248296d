"""Row <-> value conversions shared by the PostgreSQL backend's modules."""

from __future__ import annotations

from typing import Any

from pmsq.backends.base import Envelope

__all__ = ["MESSAGE_COLUMNS", "envelope_from_row", "tenant_in", "tenant_out"]

# Columns selected wherever a full envelope is rebuilt; envelope_from_row reads them by name.
MESSAGE_COLUMNS = (
    "seq, id, queue, tenant, key, priority, state, head, line, available_at, attempt, "
    "lease_token, lease_expires, enqueued_at, format, payload, headers, dedup_id, topic, "
    "correlation_id, causation_id, error_type, error, dead_reason, dead_at"
)


def tenant_in(tenant: str | None) -> str:
    """Stored form of a tenant: ``''`` for none, so equality and indexes work."""
    return tenant or ""


def tenant_out(tenant: str) -> str | None:
    """Public form of a stored tenant."""
    return tenant or None


def envelope_from_row(row: dict[str, Any]) -> Envelope:
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
    )
