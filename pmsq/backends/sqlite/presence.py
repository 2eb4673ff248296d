"""Worker presence in the SQLite store: the ``pmsq_workers`` table (schema version 6).

One row per running worker process, upserted every few seconds by its
heartbeat without an fsync: losing the last beat to a power cut costs
nothing, since a restarted worker beats again (see
:mod:`pmsq.backends.presence`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from pmsq.backends.presence import FORGET_AFTER, Presence, WorkerBeat

if TYPE_CHECKING:
    import contextlib

__all__ = ["PRESENCE_DDL", "SQLitePresence"]

T = TypeVar("T")

#: Schema version 6 (see ``schema.MIGRATIONS``). ``queues`` is a JSON list.
PRESENCE_DDL = """
CREATE TABLE IF NOT EXISTS pmsq_workers (
    id TEXT PRIMARY KEY,
    queues TEXT NOT NULL,
    concurrency INTEGER NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    last_seen REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pmsq_ix_workers_seen ON pmsq_workers (last_seen)
"""

_COLUMNS = "id, queues, concurrency, host, pid, started_at, last_seen"


class SQLitePresence(Presence):
    """The presence family for ``SQLiteBackend`` (mixed into it)."""

    if TYPE_CHECKING:

        def _write(self, fn: Callable[[sqlite3.Connection], T], *, sync: bool = True) -> T: ...

        def _reading(self) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...

    def beat_worker(self, beat: WorkerBeat) -> None:
        def go(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO pmsq_workers ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET queues = excluded.queues, "
                "concurrency = excluded.concurrency, last_seen = excluded.last_seen",
                (
                    beat.id,
                    json.dumps(list(beat.queues)),
                    beat.concurrency,
                    beat.host,
                    beat.pid,
                    beat.started_at,
                    beat.last_seen,
                ),
            )
            conn.execute(
                "DELETE FROM pmsq_workers WHERE last_seen < ?", (beat.last_seen - FORGET_AFTER,)
            )

        # A heartbeat need not survive a power cut: no fsync for it.
        self._write(go, sync=False)

    def forget_worker(self, worker_id: str) -> bool:
        return self._write(
            lambda c: c.execute("DELETE FROM pmsq_workers WHERE id = ?", (worker_id,)).rowcount > 0
        )

    def list_workers(self, *, since: float) -> list[WorkerBeat]:
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM pmsq_workers WHERE last_seen >= ? ORDER BY host, pid, id",
                (since,),
            ).fetchall()
        return [
            WorkerBeat(
                id=r[0],
                queues=tuple(json.loads(r[1])),
                concurrency=int(r[2]),
                host=r[3],
                pid=int(r[4]),
                started_at=float(r[5]),
                last_seen=float(r[6]),
            )
            for r in rows
        ]
