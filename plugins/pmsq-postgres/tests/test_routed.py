"""Several stores at once with PostgreSQL: SQLite by default, ``payments.#`` on PostgreSQL.

The whole conformance suite through the routed broker (the suite's
``payments``, ``any-words`` and ``b`` queues in PostgreSQL, the
rest in SQLite), a worker serving queues of both stores, a publish across
them, ``connection=`` and ``pmsq migrate --queue`` from SQLite to PostgreSQL.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import drop_schema
from hypothesis import settings
from pgserver import PgServer

import pmsq
from pmsq.backends.routed import RoutedBackend
from pmsq.cli import main
from pmsq.clock import ManualClock
from pmsq.testing import BrokerConformance

IN_POSTGRES = ("payments.#", "any-words", "b")


class TestSQLiteAndPostgres(BrokerConformance):
    """``main.db`` for most queues, a PostgreSQL schema per store for the routed ones."""

    stateful_settings_slow = settings(BrokerConformance.stateful_settings_slow, max_examples=300)
    _server: PgServer
    _made: set[str]

    @pytest.fixture(autouse=True)
    def _use_server(self, pg_server: PgServer) -> Iterator[None]:
        self._server = pg_server
        self._made = set()
        yield
        for schema in self._made:
            drop_schema(pg_server.url, schema)

    def _schema(self) -> str:
        return "r_" + re.sub(r"[^a-z0-9_]", "_", self.store_id.lower())[:58]

    def make_broker(self, clock: ManualClock) -> pmsq.Broker:
        schema = self._schema()
        self._made.add(schema)
        pg = f"{self._server.url}?schema={schema}&pool_min=0"  # options of one store: its URL
        return pmsq.connect(
            str(self.tmp_path / "main.db"),
            routes=dict.fromkeys(IN_POSTGRES, pg),
            clock=clock,
            durability="normal",
        )

    def drop_store(self) -> None:
        super().drop_store()
        schema = self._schema()
        drop_schema(self._server.url, schema)
        self._made.discard(schema)

    def app_transaction(self, broker: pmsq.Broker, *, commit: bool) -> Any:
        @contextlib.contextmanager
        def transaction() -> Iterator[sqlite3.Connection]:
            conn = sqlite3.connect(str(self.tmp_path / "main.db"), isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT" if commit else "ROLLBACK")
            finally:
                conn.close()

        return transaction()


def test_the_routed_broker_has_only_what_both_stores_have(tmp_path: Path, pg_url: str) -> None:
    with pmsq.connect(str(tmp_path / "main.db"), routes={"payments.#": pg_url}) as b:
        assert isinstance(b.backend, RoutedBackend)
        assert b.backend.name == "routed (SQLite + PostgreSQL)"
        assert not b.backend.capabilities.history  # the PostgreSQL backend keeps no journal
        with pytest.raises(pmsq.ConfigurationError, match=r"history.*the PostgreSQL store lacks"):
            pmsq.connect(str(tmp_path / "main.db"), routes={"payments.#": pg_url}, history=3600.0)


def test_publish_connection_and_a_worker_across_sqlite_and_postgres(
    tmp_path: Path, pg_url: str
) -> None:
    seen: dict[tuple[str, str], list[int]] = defaultdict(list)
    lock = threading.Lock()
    main_db = tmp_path / "main.db"
    with pmsq.connect(
        str(main_db), routes={"payments.#": pg_url}, durability="normal", poll_interval=0.02
    ) as b:
        b.declare_queue("payments", backoff=pmsq.Backoff(base=0.0, jitter=False))
        b.declare_queue("email", backoff=pmsq.Backoff(base=0.0, jitter=False))
        b.subscribe("booking.*", queue="payments")
        b.subscribe("booking.*", queue="email")

        # connection= on the PostgreSQL side: the payments copy commits with the app.
        with psycopg.connect(pg_url.split("?")[0]) as app:
            with pytest.raises(pmsq.ConfigurationError, match="different stores"):
                b.publish("booking.created", {"n": -1}, connection=app)
            with pytest.raises(pmsq.ConfigurationError, match=r"email lives in"):
                b.queue("email").put({"n": -1}, connection=app)
            app.rollback()

        attempts: dict[str, int] = defaultdict(int)

        def handle(msg: pmsq.Message) -> None:
            with lock:
                attempts[msg.id] += 1
                if attempts[msg.id] == 1 and msg.payload["n"] % 7 == 3:
                    raise RuntimeError("flaky")  # a retried head holds back its key
                seen[(msg.queue, msg.key or "")].append(msg.payload["n"])

        b.handler("payments", concurrency=4)(handle)
        b.handler("email", concurrency=4)(handle)
        for n in range(30):
            ids = b.publish("booking.created", {"n": n}, key=f"property:{n % 3}")
            assert len(ids) == 2
        with pmsq.Worker(b, concurrency=8):
            deadline = time.monotonic() + 60
            while sum(len(v) for v in seen.values()) < 60:
                assert time.monotonic() < deadline, dict(seen)
                time.sleep(0.01)
        for (q, key), ns in seen.items():
            assert ns == sorted(ns), f"{q} {key}: {ns}"
            assert len(ns) == 10
        assert {q for q, _ in seen} == {"payments", "email"}
        snap = b.stats()
        assert snap.queues["payments"].processed == snap.queues["email"].processed == 30


def test_migrate_one_queue_from_sqlite_to_postgres(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main_db = tmp_path / "main.db"
    with pmsq.connect(str(main_db), durability="normal") as b:
        b.declare_queue("payments", max_attempts=1)
        b.declare_queue("email")
        for n in range(5):
            b.queue("payments").put({"n": n}, key="property:1", dedup_id=f"p{n}")
        with b.queue("payments").get(timeout=0) as d:
            d.dead_letter("declined")
    assert main(["migrate", str(main_db), pg_url, "--queue", "payments"]) == 0
    assert "verified" in capsys.readouterr().out
    with pmsq.connect(str(main_db), routes={"payments": pg_url}) as b:
        q = b.queue("payments")
        assert b.stats("payments").dead == 1
        assert q.put({"n": 1}, key="property:1", dedup_id="p1") is not None
        got = []
        while batch := q.get_many(1, timeout=0):
            got.append(batch[0].message.payload["n"])
            batch[0].ack()
        assert got == [1, 2, 3, 4]  # key order kept, the dedup id not stored twice
