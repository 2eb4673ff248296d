"""pmsq's conformance suite (every guarantee, plus the hypothesis model test) on PostgreSQL.

Each store is a schema of its own on the session's server, dropped after use.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import drop_schema
from pgserver import PgServer

import pmsq
from pmsq.clock import ManualClock
from pmsq.testing import BrokerConformance


class TestPostgresConformance(BrokerConformance):
    """The whole suite; a store is the schema named after ``store_id``."""

    _server: PgServer
    _made: set[str]

    @pytest.fixture(autouse=True)
    def _use_server(self, pg_server: PgServer) -> Iterator[None]:
        self._server = pg_server
        self._made = set()
        yield
        for schema in self._made:  # stores a test made and moved on from
            drop_schema(pg_server.url, schema)

    def _schema(self) -> str:
        return "c_" + re.sub(r"[^a-z0-9_]", "_", self.store_id.lower())[:58]

    def make_broker(self, clock: ManualClock) -> pmsq.Broker:
        schema = self._schema()
        self._made.add(schema)
        return pmsq.connect(f"{self._server.url}?schema={schema}", clock=clock, pool_min=0)

    def drop_store(self) -> None:
        schema = self._schema()
        drop_schema(self._server.url, schema)
        self._made.discard(schema)

    def app_transaction(self, broker: pmsq.Broker, *, commit: bool) -> Any:
        @contextlib.contextmanager
        def transaction() -> Iterator[psycopg.Connection[Any]]:
            with psycopg.connect(self._server.url) as conn:
                yield conn
                if commit:
                    conn.commit()
                else:
                    conn.rollback()

        return transaction()
