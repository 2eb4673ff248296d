"""The message journal: what happened to each message, for ``pmsq trace``.

Events are collected while a transaction runs and inserted just before its
COMMIT, so the journal records exactly the state changes that committed, in
the same fsync. Rows older than the retention period are pruned in small
batches by the backend's housekeeping.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
from typing import Any

__all__ = ["JOURNAL_DDL", "Journal", "prune", "query"]

JOURNAL_DDL = """
CREATE TABLE IF NOT EXISTS pmsq_journal (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    message_id TEXT NOT NULL,
    queue TEXT NOT NULL,
    tenant TEXT NOT NULL,
    key TEXT,
    correlation_id TEXT,
    event TEXT NOT NULL,
    attempt INTEGER,
    worker TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS pmsq_ix_journal_message ON pmsq_journal (message_id);
CREATE INDEX IF NOT EXISTS pmsq_ix_journal_correlation
    ON pmsq_journal (correlation_id) WHERE correlation_id IS NOT NULL;
"""

_PRUNE_BATCH = 5000


class Journal:
    """Collects one transaction's events; ``enabled=False`` makes every call a no-op."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._rows: list[tuple[Any, ...]] = []
        self._process = f"{socket.gethostname()}:{os.getpid()}"

    def worker(self) -> str:
        """Where this event happens: host, process id and thread name."""
        return f"{self._process}:{threading.current_thread().name}"

    def add(
        self,
        at: float,
        event: str,
        message_id: str,
        queue: str,
        tenant: str,
        key: str | None,
        correlation_id: str | None,
        *,
        attempt: int | None = None,
        **detail: Any,
    ) -> None:
        """Record one event (nothing is written until :meth:`flush`)."""
        if not self.enabled:
            return
        clean = {k: v for k, v in detail.items() if v is not None}
        self._rows.append(
            (
                at,
                message_id,
                queue,
                tenant,
                key,
                correlation_id,
                event,
                attempt,
                self.worker(),
                json.dumps(clean, separators=(",", ":")) if clean else None,
            )
        )

    def flush(self, conn: sqlite3.Connection) -> None:
        """Insert the collected events (inside the transaction about to commit)."""
        if self._rows:
            conn.executemany(
                "INSERT INTO pmsq_journal (at, message_id, queue, tenant, key, correlation_id, "
                "event, attempt, worker, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                self._rows,
            )
            self._rows.clear()

    def discard(self) -> None:
        """Forget the events of a transaction that rolled back."""
        self._rows.clear()


def prune(conn: sqlite3.Connection, older_than: float) -> int:
    """Delete up to one batch of the oldest events recorded before ``older_than``."""
    cur = conn.execute(
        "DELETE FROM pmsq_journal WHERE seq IN (SELECT seq FROM pmsq_journal ORDER BY seq "
        "LIMIT ?) AND at < ?",
        (_PRUNE_BATCH, older_than),
    )
    return cur.rowcount


def query(
    conn: sqlite3.Connection,
    *,
    message_id: str | None = None,
    correlation_id: str | None = None,
    key: str | None = None,
    queue: str | None = None,
    tenant: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Journal events in time order for a message, a correlation chain, or a key."""
    where: list[str] = []
    args: list[Any] = []
    if message_id is not None:
        where.append("message_id = ?")
        args.append(message_id)
    if correlation_id is not None:
        where.append("(correlation_id = ? OR message_id = ?)")
        args.extend([correlation_id, correlation_id])
    if key is not None:
        where.append("key = ?")
        args.append(key)
    if queue is not None:
        where.append("queue = ?")
        args.append(queue)
    if tenant is not None:
        where.append("tenant = ?")
        args.append(tenant)
    sql = (
        "SELECT seq, at, message_id, queue, tenant, key, correlation_id, event, attempt, worker, "
        "detail FROM pmsq_journal"
    )
    if where:
        sql += " WHERE " + " AND ".join(where)
    # Newest `limit` events, returned oldest first.
    sql = f"SELECT * FROM ({sql} ORDER BY seq DESC LIMIT ?) ORDER BY seq"
    rows = conn.execute(sql, [*args, limit]).fetchall()
    return [
        {
            "at": r[1],
            "message_id": r[2],
            "queue": r[3],
            "tenant": r[4] or None,
            "key": r[5],
            "correlation_id": r[6],
            "event": r[7],
            "attempt": r[8],
            "worker": r[9],
            **(json.loads(r[10]) if r[10] else {}),
        }
        for r in rows
    ]
