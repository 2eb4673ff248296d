"""Schedules in the SQLite store: the ``pmsq_schedules`` table and exactly-once firing.

Firing runs in one ``BEGIN IMMEDIATE`` transaction: the write lock orders
racing processes, the ``version`` compare-and-set lets only the first commit
a plan, and the messages go through the same ``put_one`` as every put (dedup,
quotas, key lines, journal) inside that transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

from pmsq.backends.schedule_family import (
    FireResult,
    Firing,
    ScheduleStore,
    StoredSchedule,
    merge_declaration,
)
from pmsq.backends.sqlite import puts
from pmsq.backends.sqlkit.rows import tenant_in
from pmsq.backends.sqlkit.schedules import COLUMNS, from_row, to_row
from pmsq.errors import PmsqError

if TYPE_CHECKING:
    import contextlib

    from pmsq.backends.sqlite.journal import Journal
    from pmsq.backends.sqlite.puts import ConfigReader
    from pmsq.backends.sqlkit.metrics import Metrics

__all__ = ["SCHEDULES_DDL", "SQLiteSchedules"]

T = TypeVar("T")

#: Schema version 3 (see ``schema.MIGRATIONS``). ``tenant`` is ``''`` for none.
SCHEDULES_DDL = """
CREATE TABLE IF NOT EXISTS pmsq_schedules (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    queue TEXT NOT NULL,
    definition TEXT NOT NULL,
    payload BLOB NOT NULL,
    next_at REAL,
    last_at REAL,
    fired_at REAL,
    version INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pmsq_ix_schedules_due
    ON pmsq_schedules (next_at) WHERE next_at IS NOT NULL;
"""


class SQLiteSchedules(ScheduleStore):
    """The schedule family for ``SQLiteBackend`` (mixed into it)."""

    if TYPE_CHECKING:
        _journal: Journal

        def _write(self, fn: Callable[[sqlite3.Connection], T], *, sync: bool = True) -> T: ...

        def _reading(self) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...

        _configs: ConfigReader
        _metrics: Metrics

    def save_schedule(self, schedule: StoredSchedule, *, now: float) -> StoredSchedule:
        def go(conn: sqlite3.Connection) -> StoredSchedule:
            row = conn.execute(
                f"SELECT {COLUMNS} FROM pmsq_schedules WHERE tenant = ? AND name = ?",
                (tenant_in(schedule.tenant), schedule.name),
            ).fetchone()
            stored = merge_declaration(None if row is None else from_row(row), schedule, now)
            conn.execute(
                f"INSERT OR REPLACE INTO pmsq_schedules ({COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                to_row(stored),
            )
            return stored

        return self._write(go)

    def delete_schedule(self, tenant: str | None, name: str) -> bool:
        return self._write(
            lambda conn: (
                conn.execute(
                    "DELETE FROM pmsq_schedules WHERE tenant = ? AND name = ?",
                    (tenant_in(tenant), name),
                ).rowcount
                > 0
            )
        )

    def list_schedules(self) -> list[StoredSchedule]:
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM pmsq_schedules ORDER BY tenant, name"
            ).fetchall()
        return [from_row(r) for r in rows]

    def due_schedules(self, now: float) -> list[StoredSchedule]:
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM pmsq_schedules "
                "WHERE next_at IS NOT NULL AND next_at <= ? ORDER BY next_at",
                (now,),
            ).fetchall()
        return [from_row(r) for r in rows]

    def next_schedule_at(self) -> float | None:
        with self._reading() as conn:
            row = conn.execute(
                "SELECT min(next_at) FROM pmsq_schedules WHERE next_at IS NOT NULL"
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def fire_schedules(self, firings: Sequence[Firing], *, now: float) -> list[FireResult]:
        def go(conn: sqlite3.Connection) -> list[FireResult]:
            return list(self._fire_each(conn, firings, now))

        return self._write(go) if firings else []

    def _fire_each(
        self, conn: sqlite3.Connection, firings: Sequence[Firing], now: float
    ) -> Iterator[FireResult]:
        for f in firings:
            conn.execute("SAVEPOINT pmsq_fire")
            mark = self._journal.mark()
            try:
                won = conn.execute(
                    "UPDATE pmsq_schedules SET next_at = ?, last_at = ?, fired_at = ?, "
                    "version = version + 1 WHERE tenant = ? AND name = ? AND version = ?",
                    (f.next_at, f.last_at, f.fired_at, tenant_in(f.tenant), f.name, f.version),
                ).rowcount
                if won and f.envelopes:
                    puts.put_batch(
                        conn, self._configs, self._journal, f.envelopes, now, self._metrics
                    )
            except PmsqError as exc:
                self._journal.rewind(mark)
                conn.execute("ROLLBACK TO pmsq_fire")
                conn.execute("RELEASE pmsq_fire")
                yield exc
                continue
            conn.execute("RELEASE pmsq_fire")
            yield len(f.envelopes) if won else 0
