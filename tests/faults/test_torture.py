"""kill -9 torture: producers and consumers (thread ``Worker`` and anyio
``AsyncWorker``) killed at random and restarted, consumers frozen past their
leases, leases that run out mid-handler, several tenants and one hot key.
Every run ends with the history checker finding nothing and ``PRAGMA
integrity_check`` ok. See ``faults/_torture.py`` for the driver.

One short mixed run is in the default suite; the long variants run under
``-m slow`` (``nox -s torture``), each bounded to about a minute of faults.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from faults._torture import Outcome, Shape, torture


def _assert_valid(out: Outcome) -> None:
    detail = "\n".join(f"{a.kind} {a.message_id}: {a.detail}" for a in out.anomalies[:20])
    assert out.anomalies == [], f"{len(out.anomalies)} anomalies, {out.counts}:\n{detail}"
    assert out.integrity == ["ok"]
    assert out.counts.get("put_ok", 0) > 50, out.counts
    assert out.counts["kills"] > 0, out.counts


def _run(tmp_path: Path, shape: Shape, seed: int) -> Outcome:
    logs = tmp_path / "logs"
    logs.mkdir()
    return torture(tmp_path / "pms.db", logs, shape, seed)


@pytest.mark.timeout(150)
def test_torture_smoke(tmp_path: Path) -> None:
    """About 6 s of faults: kills of every role, SIGSTOPs past the lease, stalled handlers."""
    shape = Shape(seconds=6.0, lease=0.5, sigstop=True, stall_share=0.02)
    out = _run(tmp_path, shape, seed=1)
    _assert_valid(out)
    assert out.counts["redelivered"] > 0, out.counts


@pytest.mark.timeout(150)
def test_torture_smoke_with_prefetch(tmp_path: Path) -> None:
    """The same faults with consumers holding up to 32 messages each beyond their
    4 handlers: held messages killed with their worker come back, none lost, key
    order kept; those frozen past their lease are never started stale."""
    shape = Shape(seconds=6.0, lease=0.5, sigstop=True, stall_share=0.02, prefetch=32)
    out = _run(tmp_path, shape, seed=2)
    _assert_valid(out)
    assert out.counts["redelivered"] > 0, out.counts


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("seed", range(2))
def test_torture_kill9_with_prefetch(tmp_path: Path, seed: int) -> None:
    _assert_valid(_run(tmp_path, Shape(seconds=60.0, producers=3, lease=1.0, prefetch=64), seed))


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("seed", range(2))
def test_torture_kill9(tmp_path: Path, seed: int) -> None:
    _assert_valid(_run(tmp_path, Shape(seconds=60.0, producers=3, lease=1.0), seed))


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("seed", range(2))
def test_torture_sigstop_fencing(tmp_path: Path, seed: int) -> None:
    """Frozen consumers wake up to settle messages others hold: ``LeaseLost``, recorded."""
    out = _run(tmp_path, Shape(seconds=60.0, lease=0.5, sigstop=True), seed)
    _assert_valid(out)
    assert out.counts["stops"] > 10, out.counts
    assert out.counts.get("ack_rejected", 0) + out.counts.get("retry_rejected", 0) > 0, out.counts


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("seed", range(2))
def test_torture_tiny_leases(tmp_path: Path, seed: int) -> None:
    """Leases of 0.15 s; handlers that block their heartbeats outlive them mid-handler."""
    shape = Shape(seconds=60.0, lease=0.15, stall_share=0.1, work_ms=(0.0, 60.0))
    out = _run(tmp_path, shape, seed)
    _assert_valid(out)
    assert out.counts["redelivered"] > 10, out.counts
