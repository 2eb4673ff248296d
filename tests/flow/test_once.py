"""``broker.once``: exactly-once effects recorded in the app's own transaction."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import pmsq
from pmsq.clock import ManualClock

from ._support import raw_rows, roles


@pytest.fixture
def app(db_path: Path, broker: pmsq.Broker) -> Iterator[sqlite3.Connection]:
    """The app's connection to the same file as the store (the PMS keeps one database)."""
    conn = sqlite3.connect(str(db_path), timeout=5.0)
    conn.execute("CREATE TABLE calendar_blocks (message_id TEXT, property INTEGER)")
    conn.commit()
    yield conn
    conn.close()


def _effects(db: Path) -> int:
    return int(raw_rows(db, "SELECT COUNT(*) FROM calendar_blocks")[0][0])


def _handle(broker: pmsq.Broker, app: sqlite3.Connection, msg: pmsq.Message) -> bool:
    with broker.once(msg, connection=app) as first:
        if first:
            app.execute(
                "INSERT INTO calendar_blocks VALUES (?, ?)", (msg.id, msg.payload["property"])
            )
    app.commit()
    return first


def test_redelivery_after_a_lost_ack_applies_the_effect_once(
    broker: pmsq.Broker, app: sqlite3.Connection, db_path: Path, clock: ManualClock
) -> None:
    q = broker.declare_queue("calendar", lease=30.0)
    q.put({"property": 4521})
    d = q.get(timeout=0)
    assert _handle(broker, app, d.message) is True
    clock.advance(31)  # the worker died before acking: the lease runs out
    with q.get(timeout=0) as again:
        assert again.message.id == d.message.id
        assert again.message.attempt == 2
        assert _handle(broker, app, again.message) is False
    assert _effects(db_path) == 1
    with pytest.raises(pmsq.LeaseLost):
        d.ack()


def test_consumers_are_recorded_separately(broker: pmsq.Broker, app: sqlite3.Connection) -> None:
    q = broker.queue("calendar")
    q.put({"property": 4521})
    with q.get(timeout=0) as d:
        msg = d.message
    firsts = []
    for consumer in ("calendar-sync", "audit", "calendar-sync", "audit", None, "calendar"):
        with broker.once(msg, connection=app, consumer=consumer) as first:
            firsts.append(first)
        app.commit()
    # The default consumer name is the message's queue.
    assert firsts == [True, True, False, False, True, False]


def test_rollback_removes_the_record_so_a_retry_applies_the_effect(
    broker: pmsq.Broker, app: sqlite3.Connection, db_path: Path
) -> None:
    q = broker.queue("calendar")
    q.put({"property": 4521})
    d = q.get(timeout=0)
    with broker.once(d.message, connection=app) as first:
        assert first
        app.execute("INSERT INTO calendar_blocks VALUES (?, ?)", (d.message.id, 4521))
    app.rollback()  # the handler failed after the effect: the app rolls back
    d.retry(delay=0)
    with q.get(timeout=0) as again:
        assert _handle(broker, app, again.message) is True
    assert _effects(db_path) == 1


def test_once_never_commits_for_the_app(broker: pmsq.Broker, db_path: Path) -> None:
    q = broker.queue("calendar")
    q.put_many([{"property": 1}, {"property": 2}])
    earlier, msg = (d.message for d in q.get_many(2, timeout=0))
    conn = sqlite3.connect(str(db_path), timeout=5.0, isolation_level=None)  # autocommit
    try:
        with broker.once(earlier, connection=conn):
            pass
        conn.execute("COMMIT")
        with broker.once(msg, connection=conn) as first:
            assert first
        # once opened a transaction and left it to the app: the record is not visible yet.
        assert conn.in_transaction
        assert raw_rows(db_path, "SELECT message_id FROM pmsq_once") == [(earlier.id,)]
        conn.execute("COMMIT")
    finally:
        conn.close()
    assert sorted(raw_rows(db_path, "SELECT consumer, message_id FROM pmsq_once")) == sorted(
        [("calendar", earlier.id), ("calendar", msg.id)]
    )


def test_once_works_with_an_app_database_apart_from_the_store(
    broker: pmsq.Broker, tmp_path: Path
) -> None:
    q = broker.queue("calendar")
    q.put({"property": 4521})
    msg = q.get(timeout=0).message
    conn = sqlite3.connect(str(tmp_path / "app.db"))
    try:
        with broker.once(msg, connection=conn) as first:
            assert first
        conn.commit()
        with broker.once(msg, connection=conn) as first:
            assert not first
        conn.commit()
    finally:
        conn.close()


def test_once_needs_a_sqlite_connection(broker: pmsq.Broker) -> None:
    q = broker.queue("calendar")
    q.put({"property": 4521})
    msg = q.get(timeout=0).message
    with pytest.raises(pmsq.ConfigurationError), broker.once(msg, connection=object()):
        pass


def test_concurrent_handlers_on_the_store_file_do_not_fail_with_locked(
    broker: pmsq.Broker, db_path: Path
) -> None:
    # Regression: once used to open a deferred transaction that read before
    # writing; under concurrent writers SQLite refuses such an upgrade at once
    # ("database is locked") instead of waiting.
    q = broker.queue("calendar")
    q.put_many([{"property": i} for i in range(160)])
    setup = sqlite3.connect(str(db_path))
    setup.execute("CREATE TABLE calendar_blocks (message_id TEXT, property INTEGER)")
    setup.commit()
    setup.close()
    errors: list[BaseException] = []

    def consume() -> None:
        conn = sqlite3.connect(str(db_path), timeout=10.0)
        try:
            while True:
                batch = q.get_many(1, timeout=0)
                if not batch:
                    return
                with batch[0] as d:
                    _handle(broker, conn, d.message)
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=consume) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert _effects(db_path) == 160


def test_killed_after_commit_before_ack_applies_the_effect_once(db_path: Path) -> None:
    with pmsq.connect(str(db_path), durability="normal") as setup:
        setup.declare_queue("calendar", lease=1.0, max_attempts=5)
        mid = setup.queue("calendar").put({"property": 4521}, key="property:4521")
    app = sqlite3.connect(str(db_path))
    app.execute("CREATE TABLE calendar_blocks (message_id TEXT, property INTEGER)")
    app.commit()
    app.close()
    with roles(("once_consumer.py", str(db_path), "die-before-ack")) as (first,):
        line = first.expect("COMMITTED")
        assert line == f"COMMITTED first=True attempt=1 id={mid}"
        first.kill()  # after the commit, before the ack
    assert _effects(db_path) == 1
    with roles(("once_consumer.py", str(db_path), "ack")) as (second,):
        # Redelivered once the lease ran out: the record says it was done.
        line = second.expect("COMMITTED")
        assert line == f"COMMITTED first=False attempt=2 id={mid}"
        second.expect("ACKED")
        assert second.wait() == 0
    assert _effects(db_path) == 1
    assert raw_rows(db_path, "SELECT consumer, message_id FROM pmsq_once") == [("calendar", mid)]
    assert raw_rows(db_path, "SELECT COUNT(*) FROM pmsq_messages") == [(0,)]
