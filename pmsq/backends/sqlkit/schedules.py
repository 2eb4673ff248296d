"""A schedule's row in a SQL store: its columns, and the conversions both ways.

The SQLite backend and the PostgreSQL plugin keep schedules in the same
columns (the dialects differ only in types); the definition travels as
JSON text (``dump_definition``), so adding a field changes no table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pmsq.backends.schedule_family import StoredSchedule, dump_definition, load_schedule
from pmsq.backends.sqlkit.rows import tenant_in

__all__ = ["COLUMNS", "from_row", "to_row"]

#: The schedule table's columns, in the order of :func:`from_row` and :func:`to_row`.
COLUMNS = "tenant, name, queue, definition, payload, next_at, last_at, fired_at, version"


def from_row(row: Sequence[Any]) -> StoredSchedule:
    """The schedule of a row selected with :data:`COLUMNS`."""
    return load_schedule(
        tenant=row[0],
        name=row[1],
        queue=row[2],
        definition=row[3],
        data=row[4],
        next_at=row[5],
        last_at=row[6],
        fired_at=row[7],
        version=row[8],
    )


def to_row(s: StoredSchedule) -> tuple[Any, ...]:
    """The values to insert for :data:`COLUMNS`."""
    return (
        tenant_in(s.tenant),
        s.name,
        s.queue,
        dump_definition(s),
        s.data,
        s.next_at,
        s.last_at,
        s.fired_at,
        s.version,
    )
