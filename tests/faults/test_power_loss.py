"""Power cuts: with ``durability="full"`` no returned put is lost; ``"normal"`` loses
only a tail of the most recent puts and never corrupts the file.

A producer process (``tests/roles/producer.py``) writes through
:mod:`faults.powerloss_fs`, a FUSE file system that keeps every write since a
file's last fsync in memory only. At a random point the power is cut: the
file system keeps only what was fsynced and fails everything after; the
producer is SIGKILLed. The surviving files are then opened outside FUSE,
as a machine would after a reboot: ``PRAGMA integrity_check``, pmsq's own
open checks, and the history checker comparing the producer's log of
returned puts with what the store holds.

Needs ``/dev/fuse``, ``fusermount3`` (Debian ``fuse3``) and ``mfusepy``;
``scripts/install-test-deps.sh`` installs them. Without them the test skips,
except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pmsq
from faults._support import integrity, kill9, read_events, reaping, start_role, stderr_of
from faults.powerloss_fs import PowerLossMount, missing_prerequisite
from pmsq.testing.checker import FinalState, check


@pytest.fixture
def power(tmp_path: Path) -> Iterator[PowerLossMount]:
    reason = missing_prerequisite()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"power-loss tests cannot run: {reason}")
        pytest.skip(reason)
    with PowerLossMount(tmp_path) as mount:
        yield mount


def _oks(log: Path) -> int:
    if not log.exists():
        return 0
    return log.read_bytes().count(b'"ev": "ok"')


def _produce_then_cut(power: PowerLossMount, logs: Path, durability: str, seed: int) -> None:
    rng = random.Random(seed)
    events = logs / "producer.events"
    producer = start_role(
        "producer.py",
        power.mount / "pms.db",
        "orders",
        events,
        "--count",
        "1000000",  # it never gets there: the power goes first
        "--prefix",
        "p",
        "--keys",
        "3",
        "--seed",
        str(seed),
        "--durability",
        durability,
        log=logs / "producer.stderr",
    )
    with reaping([producer]):
        assert producer.stdout.readline() == b"ready\n", stderr_of(logs / "producer.stderr")
        want = rng.randint(150, 600)
        deadline = time.monotonic() + 60
        while _oks(events) < want and time.monotonic() < deadline:
            assert producer.poll() is None, stderr_of(logs / "producer.stderr")
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.05))
        power.cut()
        kill9(producer)


def _history(logs: Path) -> list[dict[str, Any]]:
    """The producer's log in the checker's vocabulary, in put order."""
    out = []
    for e in sorted(read_events(logs), key=lambda e: e["t"]):
        if e["ev"] == "invoke":
            out.append(
                {"t": e["t"], "proc": "p", "op": "put_invoke", "v": e["v"], "key": e["key"]}
                | {"tenant": e["tenant"], "dedup_id": None}
            )
        elif e["ev"] == "ok":
            out.append({"t": e["t"], "proc": "p", "op": "put_ok", "v": e["v"], "id": e["id"]})
    return out


def _survivors(db: Path) -> dict[str, Any]:
    """Open the surviving file with pmsq (its open checks run) and read every message."""
    assert integrity(db) == ["ok"]
    with pmsq.connect(str(db)) as broker:
        rows = broker.backend._conn.execute(  # type: ignore[attr-defined]
            "SELECT id, payload FROM pmsq_messages"
        ).fetchall()
        assert broker.backend.check() == []
    return {r[0]: json.loads(r[1])["v"] for r in rows}


def _run(tmp_path: Path, power: PowerLossMount, durability: str, seed: int) -> tuple[int, int]:
    """Produce, cut, reopen and check; returns (returned puts, returned puts lost)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    _produce_then_cut(power, logs, durability, seed)
    stored = _survivors(power.survived / "pms.db")
    history = _history(logs)
    ok_vs = [e["v"] for e in history if e["op"] == "put_ok"]
    invoked = [e["v"] for e in history if e["op"] == "put_invoke"]
    assert set(stored.values()) <= set(invoked), "the store holds a value nobody put"
    found = check(history, FinalState(waiting=stored), max_attempts=1, expect_drained=False)
    lost = [a for a in found if a.kind == "lost"]
    assert [a for a in found if a.kind != "lost"] == []
    if durability == "full":
        assert lost == [], f"{len(lost)} of {len(ok_vs)} returned puts lost at the power cut"
    else:
        # Only a tail: every stored put comes before every lost one.
        present = set(stored.values())
        kept = [i for i, v in enumerate(ok_vs) if v in present]
        gone = [i for i, v in enumerate(ok_vs) if v not in present]
        assert not kept or not gone or max(kept) < min(gone), "lost puts are not a tail"
    # The store still works: the survivors drain in order.
    with pmsq.connect(str(power.survived / "pms.db")) as broker:
        q = broker.queue("orders")
        drained = 0
        while batch := q.get_many(100, timeout=0):
            for d in batch:
                d.ack()
            drained += len(batch)
    assert drained == len(stored)
    assert integrity(power.survived / "pms.db") == ["ok"]
    return len(ok_vs), len(lost)


def test_the_file_system_keeps_only_what_was_fsynced(power: PowerLossMount) -> None:
    fd = os.open(power.mount / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"synced")
        os.fsync(fd)
        os.write(fd, b" and lost")
        assert (power.mount / "f").read_bytes() == b"synced and lost"
        power.cut()
        with pytest.raises(OSError):
            os.write(fd, b"after the cut")
    finally:
        os.close(fd)
    assert (power.survived / "f").read_bytes() == b"synced"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("durability", ["full", "normal"])
def test_power_cut(tmp_path: Path, power: PowerLossMount, durability: str) -> None:
    returned, _lost = _run(tmp_path, power, durability, seed=7)
    assert returned >= 150


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("durability", ["full", "normal"])
def test_power_cut_at_random_points(
    tmp_path: Path, power: PowerLossMount, durability: str, seed: int
) -> None:
    _run(tmp_path, power, durability, seed)
