"""Schedules in the PostgreSQL store: the ``schedules`` table and exactly-once firing.

Firing runs in one READ COMMITTED transaction. The compare-and-set is an
``UPDATE ... WHERE version = %s``: a racing transaction blocks on the row
lock, and once the first commits, PostgreSQL re-checks the condition against
the new row, finds the version moved on and updates nothing. Only the
winner then puts the firing's messages, through the same ``puts.put_many``
as every put, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from pmsq.backends.schedule_family import (
    FireResult,
    Firing,
    ScheduleStore,
    StoredSchedule,
    merge_declaration,
)
from pmsq.backends.sqlkit.rows import tenant_in
from pmsq.backends.sqlkit.schedules import COLUMNS, from_row, to_row
from pmsq.errors import PmsqError
from pmsq_postgres import puts
from pmsq_postgres.tx import Tx

__all__ = ["SCHEDULES_DDL", "PostgresSchedules"]

T = TypeVar("T")

#: Schema version 2 (see ``schema.MIGRATIONS``). ``tenant`` is ``''`` for none.
SCHEDULES_DDL = """
CREATE TABLE IF NOT EXISTS {s}.schedules (
    tenant text NOT NULL,
    name text NOT NULL,
    queue text NOT NULL,
    definition text NOT NULL,
    payload bytea NOT NULL,
    next_at double precision,
    last_at double precision,
    fired_at double precision,
    version bigint NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE INDEX IF NOT EXISTS schedules_due ON {s}.schedules (next_at) WHERE next_at IS NOT NULL;
"""


class PostgresSchedules(ScheduleStore):
    """The schedule family for ``PostgresBackend`` (mixed into it)."""

    if TYPE_CHECKING:
        _configs: puts.ConfigReader

        def _run(self, fn: Callable[[Tx], T], *, relaxed: bool = False) -> T: ...

        def _read(self, fn: Callable[[Tx], T]) -> T: ...

    def save_schedule(self, schedule: StoredSchedule, *, now: float) -> StoredSchedule:
        def go(tx: Tx) -> StoredSchedule:
            row = tx.one(
                f"SELECT {COLUMNS} FROM {{s}}.schedules WHERE tenant = %s AND name = %s FOR UPDATE",
                (tenant_in(schedule.tenant), schedule.name),
            )
            stored = merge_declaration(None if row is None else from_row(row), schedule, now)
            tx.execute(
                f"INSERT INTO {{s}}.schedules ({COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (tenant, name) DO UPDATE SET queue = excluded.queue, "
                "definition = excluded.definition, payload = excluded.payload, "
                "next_at = excluded.next_at, last_at = excluded.last_at, "
                "fired_at = excluded.fired_at, version = excluded.version",
                to_row(stored),
            )
            return stored

        return self._run(go)

    def delete_schedule(self, tenant: str | None, name: str) -> bool:
        row = self._run(
            lambda tx: tx.one(
                "DELETE FROM {s}.schedules WHERE tenant = %s AND name = %s RETURNING 1",
                (tenant_in(tenant), name),
            )
        )
        return row is not None

    def list_schedules(self) -> list[StoredSchedule]:
        rows = self._read(
            lambda tx: tx.all(f"SELECT {COLUMNS} FROM {{s}}.schedules ORDER BY tenant, name")
        )
        return [from_row(r) for r in rows]

    def due_schedules(self, now: float) -> list[StoredSchedule]:
        rows = self._read(
            lambda tx: tx.all(
                f"SELECT {COLUMNS} FROM {{s}}.schedules "
                "WHERE next_at IS NOT NULL AND next_at <= %s ORDER BY next_at",
                (now,),
            )
        )
        return [from_row(r) for r in rows]

    def next_schedule_at(self) -> float | None:
        row = self._read(
            lambda tx: tx.one("SELECT min(next_at) FROM {s}.schedules WHERE next_at IS NOT NULL")
        )
        return None if row is None or row[0] is None else float(row[0])

    def fire_schedules(self, firings: Sequence[Firing], *, now: float) -> list[FireResult]:
        if not firings:
            return []
        return self._run(lambda tx: [self._fire_one(tx, f, now) for f in firings])

    def _fire_one(self, tx: Tx, f: Firing, now: float) -> FireResult:
        tx.execute("SAVEPOINT pmsq_fire")
        try:
            won = tx.one(
                "UPDATE {s}.schedules SET next_at = %s, last_at = %s, fired_at = %s, "
                "version = version + 1 WHERE tenant = %s AND name = %s AND version = %s "
                "RETURNING 1",
                (f.next_at, f.last_at, f.fired_at, tenant_in(f.tenant), f.name, f.version),
            )
            if won is not None and f.envelopes:
                puts.put_many(tx, self._configs, f.envelopes, now)
        except PmsqError as exc:
            # Raised by pmsq's own checks (a full queue), not by the server: the
            # transaction is healthy and only this firing is undone.
            tx.execute("ROLLBACK TO SAVEPOINT pmsq_fire")
            return exc
        tx.execute("RELEASE SAVEPOINT pmsq_fire")
        return len(f.envelopes) if won is not None else 0
