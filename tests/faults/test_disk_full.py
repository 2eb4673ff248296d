"""A full disk: puts fail with a clear ``StorageError``, nothing stored is lost, and
the same broker works again once space is freed.

Needs root and ``mount -t tmpfs`` (a small tmpfs holds the store); skipped otherwise.
The disk is 8 MB and a 5 MB filler file is what the operator deletes: draining
the queue afterwards appends up to SQLite's auto-checkpoint size (4 MB) of
WAL before the WAL is reused, and that must fit in the freed space.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import pmsq
from faults._support import integrity, tmpfs


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "tiny", "8m") as mnt:
        yield mnt


@pytest.mark.timeout(120)
def test_disk_full(tiny_disk: Path) -> None:
    path = tiny_disk / "pms.db"
    filler = tiny_disk / "filler"
    filler.write_bytes(b"\x00" * 5_000_000)  # what the operator deletes to make room
    stored: dict[str, dict[str, object]] = {}
    with pmsq.connect(str(path)) as broker:
        q = broker.declare_queue("orders")
        error: pmsq.StorageError | None = None
        for i in range(5000):
            payload = {"n": i, "body": os.urandom(3000).hex()}  # incompressible, ~6 KB
            try:
                stored[q.put(payload, key=f"property:{i % 5}")] = payload
            except pmsq.StorageError as exc:
                error = exc
                break
        assert error is not None, "the disk never filled up"
        assert len(stored) > 10
        message = str(error)
        assert "disk full" in message
        assert str(path) in message
        assert "free space" in message  # what to do
        assert not isinstance(error, pmsq.OutcomeUnknown)  # a full disk is a clean failure

        # put_many fails as a whole, too.
        with pytest.raises(pmsq.StorageError, match="disk full"):
            q.put_many([{"n": -1, "body": os.urandom(3000).hex()} for _ in range(20)])

        filler.unlink()
        # Everything that was acknowledged as stored is readable, unclaimed.
        assert {m.id: m.payload for m, _ in q.peek(10_000)} == stored
        # Same broker, no reopening: writes go through again.
        again = {"n": "after", "body": "ok"}
        stored[q.put(again, key="property:0")] = again

        got: dict[str, object] = {}
        while batch := q.get_many(50, timeout=0):
            for d in batch:
                got[d.message.id] = d.message.payload
                d.ack()
        assert got == stored  # every put that returned an id is there, intact; no extras
    assert integrity(path) == ["ok"]
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"{path}-wal")
