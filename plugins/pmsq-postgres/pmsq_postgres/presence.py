"""Worker presence in the PostgreSQL store: the ``workers`` table (schema version 3).

One row per running worker process, upserted every few seconds by its
heartbeat in a relaxed commit (no wait for the WAL flush): a lost beat
costs nothing, the next one rewrites the row (see
:mod:`pmsq.backends.presence`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from pmsq.backends.presence import FORGET_AFTER, Presence, WorkerBeat
from pmsq.backends.sqlkit.states import WAITING
from pmsq_postgres.tx import Tx

__all__ = ["PRESENCE_DDL", "PostgresPresence"]

T = TypeVar("T")

#: Schema version 3 (see ``schema.MIGRATIONS``), with the lateness index and the
#: metrics columns of the same release. Every statement may run again.
PRESENCE_DDL = f"""
CREATE TABLE IF NOT EXISTS {{s}}.workers (
    id text PRIMARY KEY,
    queues text[] NOT NULL,
    concurrency integer NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    started_at double precision NOT NULL,
    last_seen double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_workers_seen ON {{s}}.workers (last_seen);
DROP INDEX IF EXISTS {{s}}.ix_waiting;
CREATE INDEX IF NOT EXISTS ix_due ON {{s}}.messages (queue, tenant, available_at)
    WHERE state IN {WAITING};
ALTER TABLE {{s}}.metrics ADD COLUMN IF NOT EXISTS put bigint NOT NULL DEFAULT 0;
ALTER TABLE {{s}}.metrics ADD COLUMN IF NOT EXISTS wait_hist bigint[];
"""

_COLUMNS = "id, queues, concurrency, host, pid, started_at, last_seen"


class PostgresPresence(Presence):
    """The presence family for ``PostgresBackend`` (mixed into it)."""

    if TYPE_CHECKING:

        def _run(self, fn: Callable[[Tx], T], *, relaxed: bool = False) -> T: ...

        def _read(self, fn: Callable[[Tx], T]) -> T: ...

    def beat_worker(self, beat: WorkerBeat) -> None:
        def go(tx: Tx) -> None:
            tx.execute(
                f"INSERT INTO {{s}}.workers ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET queues = excluded.queues, "
                "concurrency = excluded.concurrency, last_seen = excluded.last_seen",
                (
                    beat.id,
                    list(beat.queues),
                    beat.concurrency,
                    beat.host,
                    beat.pid,
                    beat.started_at,
                    beat.last_seen,
                ),
            )
            tx.execute(
                "DELETE FROM {s}.workers WHERE last_seen < %s", (beat.last_seen - FORGET_AFTER,)
            )

        self._run(go, relaxed=True)

    def forget_worker(self, worker_id: str) -> bool:
        def go(tx: Tx) -> bool:
            # RETURNING: a pipelined statement's rowcount is not known before the commit.
            return (
                tx.one("DELETE FROM {s}.workers WHERE id = %s RETURNING id", (worker_id,))
                is not None
            )

        return self._run(go)

    def list_workers(self, *, since: float) -> list[WorkerBeat]:
        rows = self._read(
            lambda tx: tx.all(
                f"SELECT {_COLUMNS} FROM {{s}}.workers WHERE last_seen >= %s "
                "ORDER BY host, pid, id",
                (since,),
            )
        )
        return [
            WorkerBeat(
                id=r[0],
                queues=tuple(r[1]),
                concurrency=int(r[2]),
                host=r[3],
                pid=int(r[4]),
                started_at=float(r[5]),
                last_seen=float(r[6]),
            )
            for r in rows
        ]
