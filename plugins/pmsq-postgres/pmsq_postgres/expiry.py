"""Expiry at claim time: a leased message found past its ``expires_at`` is dead-lettered instead.

The check runs on the rows a claim has just leased, so a store with no
expiring messages pays nothing for it, and an expired message behind its
key's head waits until it would be delivered. Its dead letter does not count
the claim as an attempt: the message was never delivered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pmsq.backends.sqlkit.deadletter import EXPIRED_REASON, EXPIRED_TYPE
from pmsq_postgres.puts import ConfigReader
from pmsq_postgres.settle import bury
from pmsq_postgres.tx import Tx

__all__ = ["bury_expired"]


def bury_expired(
    tx: Tx, configs: ConfigReader, rows: Sequence[dict[str, Any]], now: float
) -> list[dict[str, Any]]:
    """Dead-letter the just-leased ``rows`` that expired; return the others, in order."""
    expired = [r for r in rows if r["expires_at"] is not None and r["expires_at"] <= now]
    if not expired:
        return list(rows)
    tx.execute(
        "UPDATE {s}.messages SET attempt = GREATEST(attempt - 1, 0) WHERE seq = ANY(%s)",
        ([r["seq"] for r in expired],),
    )
    for r in expired:
        done = bury(
            tx,
            configs,
            r["queue"],
            r["seq"],
            token=r["lease_token"],
            now=now,
            reason=EXPIRED_REASON,
            error_type=EXPIRED_TYPE,
            traceback=None,
        )
        if done is not None:
            tx.count(done[0], done[1], dead=1)
    gone = {r["seq"] for r in expired}
    return [r for r in rows if r["seq"] not in gone]
