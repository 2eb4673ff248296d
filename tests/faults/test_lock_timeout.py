"""Another process holds the write lock longer than busy_timeout.

Every write then fails with a ``StorageError`` that names the file and
``busy_timeout`` (not sqlite3's bare "database is locked"), changes nothing,
and once the lock is released the same broker carries on with nothing lost.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import pmsq
from faults._support import reaping, start_role, table_rows


def test_lock_held_longer_than_busy_timeout(db_path: Path, tmp_path: Path) -> None:
    with pmsq.connect(str(db_path), busy_timeout=0.2) as broker, reaping([]) as procs:
        q = broker.declare_queue("orders", lease=60.0)
        ids = q.put_many([{"n": i} for i in range(3)])
        held = q.get(timeout=0)

        holder = start_role("hold_lock.py", db_path, log=tmp_path / "holder.err")
        procs.append(holder)
        assert holder.stdout.readline() == b"locked\n"

        writes = {
            "put": lambda: q.put({"n": 99}),
            "put_many": lambda: q.put_many([{"n": 100}, {"n": 101}]),
            "get": lambda: q.get(timeout=0),
            "ack": held.ack,
            "retry": held.retry,
            "extend": lambda: held.extend(30),
            "declare_queue": lambda: broker.declare_queue("orders", lease=5.0),
        }
        for name, write in writes.items():
            with pytest.raises(pmsq.StorageError, match=r"busy_timeout=0\.2") as info:
                write()
            message = str(info.value)
            assert str(db_path) in message, name
            assert "database is locked" not in message, name
            assert not isinstance(info.value, pmsq.OutcomeUnknown), name  # it never began

        # Reads do not need the write lock (WAL): operators can still look.
        assert broker.stats("orders").in_flight == 1
        assert [m.id for m, _ in q.peek(10)] == ids

        holder.stdin.write(b"\n")
        holder.stdin.flush()
        assert holder.stdout.readline() == b"released\n"
        assert holder.wait() == 0

        # The failed settles left the delivery held: it can still be acked.
        assert held.settled is None
        held.ack()
        assert q.config.lease == 60.0  # the failed re-declaration changed nothing
        new = q.put({"n": 99})
        got = []
        while batch := q.get_many(10, timeout=0):
            for d in batch:
                got.append(d.message.id)
                d.ack()
        assert sorted(got) == sorted([*ids[1:], new])
    assert table_rows(db_path, "SELECT count(*) FROM pmsq_messages") == [(0,)]


def test_connect_while_locked(db_path: Path, tmp_path: Path) -> None:
    """Opening a store needs the write lock once (schema check); waiting too long is an error."""
    pmsq.connect(str(db_path)).close()
    with reaping([]) as procs:
        holder = start_role("hold_lock.py", db_path, log=tmp_path / "holder.err")
        procs.append(holder)
        assert holder.stdout.readline() == b"locked\n"
        with pytest.raises(pmsq.StorageError, match=r"busy_timeout=0\.2") as info:
            pmsq.connect(str(db_path), busy_timeout=0.2)
        assert str(db_path) in str(info.value)
        holder.stdin.close()
        assert holder.wait() == 0
    with pmsq.connect(str(db_path), busy_timeout=0.2) as broker:
        broker.queue("orders").put({"n": 1})
