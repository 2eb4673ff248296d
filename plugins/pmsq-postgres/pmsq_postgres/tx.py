"""One open transaction as the SQL modules see it: a connection plus schema-qualified SQL.

SQL is written with ``{s}`` where the schema goes (``{s}.messages``); the
schema name was validated as a plain identifier, so formatting it in is
safe, and each template is formatted once per backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row

__all__ = ["SqlText", "Tx"]


class SqlText:
    """Formats SQL templates for one schema and remembers the results."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self._quoted = f'"{schema}"'
        self._cache: dict[str, str] = {}

    def __call__(self, template: str) -> str:
        text = self._cache.get(template)
        if text is None:
            text = template.replace("{s}", self._quoted)
            self._cache[template] = text
        return text


class Tx:
    """The open transaction handed to the SQL modules.

    Attributes:
        conn: The psycopg connection (a transaction is open on it).
        sql: The template formatter of this backend's schema.
        notify: Queues that got deliverable messages in this transaction;
            the backend sends one NOTIFY per queue just before committing.
        outcomes: Outcome counts ``(queue, tenant, counts)`` for the metrics,
            taken in only after the commit (a retried transaction must not
            count twice).
    """

    def __init__(self, conn: psycopg.Connection[Any], sql: SqlText) -> None:
        self.conn = conn
        self.sql = sql
        self.notify: set[str] = set()
        self.outcomes: list[tuple[str, str, dict[str, Any]]] = []

    def count(self, queue: str, tenant: str, **counts: Any) -> None:
        """Record outcome counts (``processed=1``, ``duration_ms=...``) for the metrics."""
        self.outcomes.append((queue, tenant, counts))

    def execute(self, template: str, args: Any = ()) -> psycopg.Cursor[Any]:
        """Run one statement; return its cursor."""
        # An explicit tuple row factory: an app's connection (the outbox) may use another.
        cur = self.conn.cursor(row_factory=tuple_row)
        return cur.execute(self.sql(template), args)

    def one(self, template: str, args: Any = ()) -> Any:
        """Run one statement; return its first row as a tuple, or ``None``."""
        return self.execute(template, args).fetchone()

    def all(self, template: str, args: Any = ()) -> list[Any]:
        """Run one statement; return every row as tuples."""
        return self.execute(template, args).fetchall()

    def dicts(self, template: str, args: Any = ()) -> list[dict[str, Any]]:
        """Run one statement; return every row as a dict keyed by column name."""
        cur = self.conn.cursor(row_factory=dict_row)
        cur.execute(self.sql(template), args)
        return cur.fetchall()

    def many(self, template: str, rows: Sequence[Any]) -> None:
        """Run one statement for each parameter row (pipelined by psycopg)."""
        if rows:
            with self.conn.cursor(row_factory=tuple_row) as cur:
                cur.executemany(self.sql(template), rows)
