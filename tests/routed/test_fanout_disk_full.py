"""A publish across two stores when one store's disk is full (a real small tmpfs).

The store that has room commits its copies; the full one fails; the error
is a ``PartialPublish`` naming both; once space is freed, retrying with the
same ``dedup_id`` completes the publish without a duplicate anywhere.
Needs root and ``mount -t tmpfs``; skipped otherwise.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from faults._support import integrity, tmpfs

import pmsq


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "tiny", "4m") as mnt:
        yield mnt


def fill(disk: Path) -> Path:
    """Write a filler file until the disk is full; the operator deletes it later."""
    filler = disk / "filler"
    with filler.open("wb") as f, pytest.raises(OSError) as info:
        while True:
            f.write(b"\x00" * 65536)
            f.flush()
    assert info.value.errno == errno.ENOSPC
    return filler


def ready(broker: pmsq.Broker, queue: str) -> list[pmsq.Message]:
    return [m for m, _ in broker.queue(queue).peek(100)]


@pytest.mark.timeout(120)
def test_a_full_store_fails_its_copies_only_and_the_retry_completes_the_publish(
    tmp_path: Path, tiny_disk: Path
) -> None:
    main = tmp_path / "main.db"
    analytics = tiny_disk / "analytics.db"
    with pmsq.connect(str(main), routes={"analytics.#": str(analytics)}) as broker:
        broker.declare_queue("accounting")
        broker.declare_queue("analytics.bookings")
        broker.subscribe("booking.*", queue="accounting")
        broker.subscribe("booking.*", queue="analytics.bookings")
        filler = fill(tiny_disk)
        payload = {"booking": 4521, "body": os.urandom(20_000).hex()}

        with pytest.raises(pmsq.PartialPublish) as info:
            broker.publish("booking.created", payload, key="property:4521", dedup_id="b-4521")
        err = info.value
        assert isinstance(err, pmsq.StorageError)
        assert err.stored == {str(main): ["accounting"]}
        assert list(err.failed) == [str(analytics)]
        assert isinstance(err.failed[str(analytics)], pmsq.StorageError)
        assert str(main) in str(err)
        assert str(analytics) in str(err)
        assert "dedup_id" in str(err)  # says how to complete it
        first = ready(broker, "accounting")
        assert [m.dedup_id for m in first] == ["b-4521"]
        assert ready(broker, "analytics.bookings") == []

        # Still full: the retry fails the same way and stores nothing twice.
        with pytest.raises(pmsq.PartialPublish):
            broker.publish("booking.created", payload, key="property:4521", dedup_id="b-4521")
        assert len(ready(broker, "accounting")) == 1

        filler.unlink()
        ids = broker.publish("booking.created", payload, key="property:4521", dedup_id="b-4521")
        assert ids[0] == first[0].id  # the stored copy answers with its id
        copies = ready(broker, "accounting") + ready(broker, "analytics.bookings")
        assert sorted(m.queue for m in copies) == ["accounting", "analytics.bookings"]
        assert all(m.payload == payload for m in copies)
    assert integrity(analytics) == ["ok"]
