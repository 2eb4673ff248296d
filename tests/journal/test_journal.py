"""The message journal of the SQLite store: what it records, in which transaction,
how long it keeps it, and the schema migration that brought it."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest
from backends._bare import BareSQLite

import pmsq
from pmsq.backends import History
from pmsq.backends.sqlite.schema import SCHEMA_VERSION


def journal_rows(db: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(db)
    try:
        return [
            (r[0], r[1])
            for r in conn.execute("SELECT message_id, event FROM pmsq_journal ORDER BY seq")
        ]
    finally:
        conn.close()


def events(broker: pmsq.Broker, mid: str) -> list[str]:
    return [e.event for e in broker.backend.history(message_id=mid)]


# -- same transaction ---------------------------------------------------------------------
def test_a_put_many_that_fails_leaves_no_history(broker: pmsq.Broker, db_path: Path) -> None:
    q = broker.declare_queue("calendar", max_depth=2)
    with pytest.raises(pmsq.QueueFull):
        q.put_many(["a", "b", "c"])
    with pytest.raises(pmsq.PayloadTooLarge):
        q.put_many(["a", "x" * 2_000_000])
    assert journal_rows(db_path) == []
    ids = q.put_many(["a", "b"])
    assert journal_rows(db_path) == [(ids[0], "put"), (ids[1], "put")]


def test_an_outbox_put_is_journaled_in_the_apps_transaction(
    broker: pmsq.Broker, db_path: Path
) -> None:
    q = broker.declare_queue("calendar")
    app = sqlite3.connect(db_path, isolation_level=None)
    try:
        app.execute("BEGIN IMMEDIATE")
        q.put("lost", connection=app)
        app.execute("ROLLBACK")
        assert journal_rows(db_path) == []
        app.execute("BEGIN IMMEDIATE")
        mid = q.put("kept", connection=app)
        app.execute("COMMIT")
    finally:
        app.close()
    assert events(broker, mid) == ["put"]


def test_every_outcome_is_recorded(broker: pmsq.Broker, clock: pmsq.ManualClock) -> None:
    q = broker.declare_queue(
        "email", max_attempts=2, lease=10.0, backoff=pmsq.Backoff(base=5.0, jitter=False)
    )
    mid = q.put("hello", key="guest:1", tenant="acme", dedup_id="mail-1")
    assert q.put("hello again", key="guest:1", tenant="acme", dedup_id="mail-1") == mid
    with q.get(timeout=0) as d:
        d.retry()
    clock.advance(5.0)
    q.get(timeout=0)  # attempt 2: the worker dies, the lease runs out
    clock.advance(10.0)
    assert q.get_many(1, timeout=0) == []  # the expired lease ends the last attempt
    assert events(broker, mid) == [
        "put",
        "dedup_hit",
        "delivered",
        "retried",
        "delivered",
        "lease_expired",
        "dead_lettered",
    ]
    history = broker.backend.history(message_id=mid)
    assert history[3].detail["delay"] == 5.0
    assert history[5].attempt == 2
    assert history[6].detail["error_type"] == "pmsq.LeaseExpired"
    assert broker.dead_letters("email").redrive([mid]) == 1
    with q.get(timeout=0) as d:
        d.dead_letter("bounced")
    assert broker.dead_letters("email").purge([mid]) == 1
    assert events(broker, mid)[7:] == ["redriven", "delivered", "dead_lettered", "purged"]
    assert broker.backend.history(message_id=mid)[9].detail["reason"] == "bounced"


def test_coalescing_and_release_are_recorded(broker: pmsq.Broker) -> None:
    q = broker.declare_queue("channel")
    mid = q.put({"rate": 100}, key="room:1", coalesce=True)
    assert q.put({"rate": 120}, key="room:1", coalesce=True) == mid
    d = q.get(timeout=0)
    d.release()
    assert events(broker, mid) == ["put", "coalesced", "delivered", "released"]


def test_fan_out_records_topic_and_siblings_and_fallback_copies(broker: pmsq.Broker) -> None:
    broker.declare_queue("email", max_attempts=1, fallback="sms")
    broker.subscribe("booking.*", queue="calendar")
    broker.subscribe("booking.*", queue="email")
    cal, mail = broker.publish("booking.created", {"booking": 1})
    [put] = broker.backend.history(message_id=cal)
    assert put.detail["topic"] == "booking.created"
    assert put.detail["siblings"] == [mail]
    with broker.queue("email").get(timeout=0) as d:
        d.dead_letter("mailbox full")
    dead = broker.backend.history(message_id=mail)[-1]
    assert dead.event == "dead_lettered"
    copy = broker.backend.history(message_id=dead.detail["fallback"])
    assert [e.event for e in copy] == ["put"]
    assert copy[0].queue == "sms"
    assert copy[0].detail["dead_letter_of"] == mail


# -- retention ------------------------------------------------------------------------------
def test_retention_prunes_old_history_and_never_touches_live_messages(db_path: Path) -> None:
    clock = pmsq.ManualClock()
    with pmsq.connect(str(db_path), clock=clock, durability="normal", history=3600) as b:
        q = b.declare_queue("calendar")
        old_live = q.put("still waiting", key="k")
        old_done = q.put("done")
        with q.get(timeout=0) as d:
            assert d.message.id == old_live
            d.retry(delay=0)  # old_live goes back, old_done stays unclaimed
        with b.queue("calendar").get(timeout=0) as d:
            pass
        done = d.message.id
        assert {old_live, old_done} >= {done}
    clock.advance(3601)
    # Housekeeping runs with the first put of a newly opened store.
    with pmsq.connect(str(db_path), clock=clock, durability="normal", history=3600) as b:
        fresh = b.queue("calendar").put("new")
        assert b.backend.history(message_id=old_live) == []
        assert b.backend.history(message_id=old_done) == []
        assert [e.event for e in b.backend.history(message_id=fresh)] == ["put"]
        waiting = {m.id for m, _ in b.queue("calendar").peek(10)}
        left = ({old_live, old_done} - {done}) | {fresh}
        assert waiting == left  # the messages themselves are untouched


def test_pruning_is_bounded_per_pass(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pmsq.backends.sqlite import journal

    monkeypatch.setattr(journal, "PRUNE_BATCH", 3)
    clock = pmsq.ManualClock()
    with pmsq.connect(str(db_path), clock=clock, durability="normal", history=60) as b:
        b.queue("q").put_many(list(range(7)))
    clock.advance(61)
    conn_rows = lambda: len(journal_rows(db_path))  # noqa: E731
    with pmsq.connect(str(db_path), clock=clock, durability="normal", history=60) as b:
        q = b.queue("q")
        q.put("a")  # the housekeeping pass: 3 of the 7 old events
        assert conn_rows() == 7 - 3 + 1
        q.put("b")  # behind: another batch at the next commit
        assert conn_rows() == 7 - 6 + 2
        q.put("c")
        assert conn_rows() == 3


def test_history_none_keeps_no_journal(db_path: Path) -> None:
    with pmsq.connect(str(db_path), durability="normal", history=None) as b:
        q = b.queue("q")
        q.put("x")
        with q.get(timeout=0):
            pass
    assert journal_rows(db_path) == []


def test_history_option_is_checked(db_path: Path) -> None:
    with pmsq.connect(str(db_path), durability="normal", history=dt.timedelta(hours=1)) as b:
        assert b.backend._journal.retention == 3600.0  # type: ignore[attr-defined]
    for bad in (0, -1, "3 days", True):
        with pytest.raises(pmsq.ConfigurationError, match="history"):
            pmsq.connect(str(db_path), history=bad)  # type: ignore[arg-type]


def test_a_backend_without_history_refuses_clearly(db_path: Path) -> None:
    backend = BareSQLite(str(db_path), durability="normal")  # implements no History
    assert not backend.capabilities.history
    with pytest.raises(pmsq.ConfigurationError, match="Bare backend does not support history"):
        History.of(backend).history(message_id="x")
    with pytest.raises(pmsq.ConfigurationError, match="does not support history"):
        History.of(backend).set_history(60.0)
    backend.close()


# -- schema -----------------------------------------------------------------------------------
def _downgrade_to_v1(db: Path) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TABLE pmsq_journal")
    conn.execute("UPDATE pmsq_meta SET v = '1' WHERE k = 'schema_version'")
    conn.close()


def test_a_version_1_store_migrates_and_keeps_its_messages(db_path: Path) -> None:
    with pmsq.connect(str(db_path), durability="normal") as b:
        mid = b.queue("calendar").put("before the upgrade", key="k")
    _downgrade_to_v1(db_path)
    with pmsq.connect(str(db_path), durability="normal") as b:
        assert b.backend.get_meta("schema_version") == str(SCHEMA_VERSION)
        with b.queue("calendar").get(timeout=0) as d:
            assert d.message.id == mid
        assert events(b, mid) == ["delivered", "acked"]  # history starts with the upgrade
    conn = sqlite3.connect(db_path)
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    conn.close()
    assert {
        "pmsq_ix_journal_message",
        "pmsq_ix_journal_key",
        "pmsq_ix_journal_correlation",
    } <= indexes


def test_a_store_from_a_newer_pmsq_is_still_refused(db_path: Path) -> None:
    with pmsq.connect(str(db_path), durability="normal") as b:
        b.queue("q").put("x")
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute(
        "UPDATE pmsq_meta SET v = ? WHERE k = 'schema_version'", (str(SCHEMA_VERSION + 1),)
    )
    conn.close()
    with pytest.raises(pmsq.StorageError, match="newer pmsq"):
        pmsq.connect(str(db_path))
