"""Transactional outbox: messages put through the app's own sqlite3 connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import pmsq
from pmsq.clock import ManualClock

from ._support import raw_rows, roles


@pytest.fixture
def store(db_path: Path, clock: ManualClock) -> Iterator[pmsq.Broker]:
    # A short busy timeout: a test that wrongly waits for the app's write lock
    # fails in seconds instead of hanging.
    with pmsq.connect(str(db_path), clock=clock, durability="normal", busy_timeout=5.0) as b:
        b.declare_queue("calendar")
        b.declare_queue("email")
        b.subscribe("booking.*", queue="calendar")
        b.subscribe("booking.*", queue="email")
        app = sqlite3.connect(str(db_path))
        app.execute("CREATE TABLE bookings (id INTEGER PRIMARY KEY, property INTEGER)")
        app.commit()
        app.close()
        yield b


def _bookings(db: Path) -> int:
    return int(raw_rows(db, "SELECT COUNT(*) FROM bookings")[0][0])


def _messages(db: Path) -> int:
    return int(raw_rows(db, "SELECT COUNT(*) FROM pmsq_messages")[0][0])


def _app_legacy(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(db), timeout=5.0)  # Python's implicit transactions


def _app_autocommit(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(db), timeout=5.0, isolation_level=None)


# Three ways an app opens its transaction: implicitly by its own first write,
# by the outbox put being the first statement, or explicitly.
def _row_then_put(app: sqlite3.Connection, put: Callable[[], object]) -> None:
    app.execute("INSERT INTO bookings VALUES (8812, 4521)")
    put()


def _put_then_row(app: sqlite3.Connection, put: Callable[[], object]) -> None:
    put()
    app.execute("INSERT INTO bookings VALUES (8812, 4521)")


def _explicit(app: sqlite3.Connection, put: Callable[[], object]) -> None:
    app.execute("BEGIN IMMEDIATE")
    app.execute("INSERT INTO bookings VALUES (8812, 4521)")
    put()


STYLES = [
    pytest.param(_app_legacy, _row_then_put, id="implicit-row-first"),
    pytest.param(_app_legacy, _put_then_row, id="implicit-put-first"),
    pytest.param(_app_autocommit, _explicit, id="explicit-begin"),
    pytest.param(_app_autocommit, _put_then_row, id="autocommit-put-first"),
]


@pytest.mark.parametrize(("opener", "body"), STYLES)
@pytest.mark.parametrize("via", ["put", "publish"])
def test_rollback_leaves_neither_row_nor_message(
    store: pmsq.Broker, db_path: Path, opener, body, via: str
) -> None:
    app = opener(db_path)
    try:
        if via == "put":
            body(app, lambda: store.queue("calendar").put({"b": 8812}, connection=app))
        else:
            body(app, lambda: store.publish("booking.created", {"b": 8812}, connection=app))
        assert app.in_transaction  # nothing was committed behind the app's back
        app.execute("ROLLBACK")
        assert _bookings(db_path) == 0
        assert _messages(db_path) == 0
        assert store.queue("calendar").get_many(1, timeout=0) == []
    finally:
        app.close()


@pytest.mark.parametrize(("opener", "body"), STYLES)
def test_commit_makes_row_and_messages_visible_and_deliverable(
    store: pmsq.Broker, db_path: Path, opener, body
) -> None:
    app = opener(db_path)
    ids: list[str] = []
    try:
        body(
            app,
            lambda: ids.extend(
                store.publish("booking.created", {"b": 8812}, key="property:4521", connection=app)
            ),
        )
        app.execute("COMMIT")
    finally:
        app.close()
    assert _bookings(db_path) == 1
    assert len(ids) == 2
    for name, mid in zip(("calendar", "email"), ids, strict=True):
        with store.queue(name).get(timeout=0) as d:
            assert d.message.id == mid
            assert d.message.payload == {"b": 8812}
            assert d.message.topic == "booking.created"


def test_a_consumer_does_not_see_the_message_before_the_commit(
    store: pmsq.Broker, db_path: Path, clock: ManualClock
) -> None:
    # The consumer is another broker (another connection), opened before the
    # app takes the write lock: opening a store writes.
    with pmsq.connect(str(db_path), clock=clock, busy_timeout=5.0) as consumer:
        cq = consumer.queue("calendar")
        app = _app_legacy(db_path)
        try:
            app.execute("INSERT INTO bookings VALUES (8812, 4521)")
            mid = store.queue("calendar").put({"b": 8812}, connection=app)
            # Reading never waits for the app's write lock (WAL), and sees nothing yet.
            assert cq.get_many(1, timeout=0) == []
            assert cq.peek() == []
            assert store.queue("calendar").get_many(1, timeout=0) == []
            app.commit()
        finally:
            app.close()
        with cq.get(timeout=0) as d:
            assert d.message.id == mid


def test_a_failed_put_undoes_only_its_own_part(store: pmsq.Broker, db_path: Path) -> None:
    store.declare_queue("email", max_depth=1)
    store.queue("email").put({"old": True})
    app = _app_legacy(db_path)
    try:
        app.execute("INSERT INTO bookings VALUES (8812, 4521)")
        with pytest.raises(pmsq.QueueFull):
            store.publish("booking.created", {"b": 8812}, connection=app)
        # The app decides: its own row survives the failed publish.
        app.commit()
    finally:
        app.close()
    assert _bookings(db_path) == 1
    assert _messages(db_path) == 1  # only the message put before; no calendar copy


def test_dedup_inside_the_app_transaction(store: pmsq.Broker, db_path: Path) -> None:
    q = store.queue("calendar")
    app = _app_legacy(db_path)
    try:
        first = q.put({"n": 1}, dedup_id="booking-8812", connection=app)
        again = q.put({"n": 2}, dedup_id="booking-8812", connection=app)
        assert again == first
        app.commit()
    finally:
        app.close()
    assert _messages(db_path) == 1
    assert q.put({"n": 3}, dedup_id="booking-8812") == first


def test_a_connection_to_another_file_is_refused(
    store: pmsq.Broker, db_path: Path, tmp_path: Path
) -> None:
    other = sqlite3.connect(str(tmp_path / "other.db"))
    memory = sqlite3.connect(":memory:")
    try:
        for conn in (other, memory):
            with pytest.raises(pmsq.ConfigurationError, match="same file"):
                store.queue("calendar").put({"b": 1}, connection=conn)
            with pytest.raises(pmsq.ConfigurationError):
                store.publish("booking.created", {"b": 1}, connection=conn)
            assert not conn.in_transaction
        with pytest.raises(pmsq.ConfigurationError):
            store.queue("calendar").put({"b": 1}, connection="not a connection")
    finally:
        other.close()
        memory.close()
    assert _messages(db_path) == 0


@pytest.mark.parametrize("mode", ["before-commit", "after-commit"])
def test_producer_killed_around_its_commit(store: pmsq.Broker, db_path: Path, mode: str) -> None:
    store.close()  # the producer must be able to open the store; we reopen after the kill
    with roles(("outbox_producer.py", str(db_path), mode)) as (producer,):
        line = producer.expect("UNCOMMITTED" if mode == "before-commit" else "COMMITTED")
        ids = line.split()[1:]
        assert len(ids) == 2
        if mode == "before-commit":
            # It holds the write lock with its transaction open: readers see nothing.
            assert _messages(db_path) == 0
        producer.kill()
    with pmsq.connect(str(db_path), durability="normal", busy_timeout=5.0) as after:
        assert after.backend.check() == []
        if mode == "before-commit":
            assert _bookings(db_path) == 0
            assert _messages(db_path) == 0
            assert after.queue("calendar").get_many(1, timeout=0) == []
        else:
            assert _bookings(db_path) == 1
            for name, mid in zip(("calendar", "email"), ids, strict=True):
                with after.queue(name).get(timeout=0) as d:
                    assert d.message.id == mid
        # The store is healthy: it takes writes and delivers them.
        mid = after.queue("calendar").put({"after": "restart"})
        with after.queue("calendar").get(timeout=0) as d:
            assert d.message.id == mid
