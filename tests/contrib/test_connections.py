"""``pmsq.connections``: what ``connection=`` accepts beyond a DB-API connection, and why."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import pmsq
from pmsq.clock import ManualClock
from pmsq.connections import app_connection


@pytest.fixture
def store(db_path: Path, clock: ManualClock) -> Iterator[pmsq.Broker]:
    with pmsq.connect(str(db_path), clock=clock, durability="normal", busy_timeout=5.0) as b:
        b.declare_queue("calendar")
        b.declare_queue("email")
        b.subscribe("booking.*", queue="calendar")
        app = sqlite3.connect(db_path)
        app.execute("CREATE TABLE bookings (id INTEGER PRIMARY KEY)")
        app.commit()
        app.close()
        yield b


def test_a_dbapi_connection_and_none_pass_through() -> None:
    conn = sqlite3.connect(":memory:")
    with app_connection(conn) as raw:
        assert raw is conn
    with app_connection(None) as raw:
        assert raw is None
    conn.close()


def test_publish_in_the_apps_transaction_does_not_wait_for_the_brokers_own_writer(
    store: pmsq.Broker, db_path: Path
) -> None:
    # A web app with an in-process worker: the request's transaction holds the
    # file's write lock while the worker's connection waits for it inside the
    # backend. Routing the publish must not queue behind that writer (it would
    # wait for a lock its own transaction holds, until busy_timeout).
    app = sqlite3.connect(db_path, timeout=5.0, isolation_level=None)
    app.execute("BEGIN IMMEDIATE")
    app.execute("INSERT INTO bookings VALUES (1)")
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            store.queue("email").put("from the worker's side")
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    lock = store.backend._lock  # type: ignore[attr-defined]
    while lock.acquire(blocking=False):  # until the writer holds it, waiting for the file
        lock.release()
        assert t.is_alive()
    store.publish("booking.created", {"booking": 1}, connection=app)
    app.execute("COMMIT")
    t.join()
    app.close()
    assert errors == []
    assert [m.payload for m, _s in store.queue("calendar").peek(5)] == [{"booking": 1}]


def test_publish_through_a_connection_of_another_kind_is_refused(store: pmsq.Broker) -> None:
    class NotAConnection:
        pass

    with pytest.raises(pmsq.ConfigurationError, match=r"sqlite3\.Connection"):
        store.publish("booking.created", {"booking": 1}, connection=NotAConnection())
    assert store.queue("calendar").peek(5) == []
