"""Rate limits: a sliding window enforced at claim time, across connections and processes."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

import pmsq
from pmsq.clock import ManualClock

from ._support import roles, window_violation


def test_the_window_checker_finds_violations_and_accepts_correct_logs() -> None:
    per = 1.0
    ok = [(0.0, 0.01), (0.5, 0.51), (1.0, 1.01), (1.5, 1.51)]  # 2 per second
    assert window_violation(ok, 2, per) is None
    bad = [(0.0, 0.01), (0.3, 0.31), (0.98, 0.985)]
    assert window_violation(bad, 2, per) == bad
    # Uncertain claims are not held against the limiter: the third may have
    # happened at 1.0, outside the first one's window.
    uncertain = [(0.0, 0.01), (0.3, 0.31), (0.9, 1.2)]
    assert window_violation(uncertain, 2, per) is None


def test_sliding_window_per_queue(broker: pmsq.Broker, clock: ManualClock) -> None:
    q = broker.declare_queue("channel", rate_limit=pmsq.RateLimit(2, per=1.0))
    q.put_many({"i": i} for i in range(10))
    assert len(q.get_many(10, timeout=0)) == 2
    assert q.get_many(10, timeout=0) == []
    clock.advance(0.6)
    assert q.get_many(10, timeout=0) == []
    clock.advance(0.4)  # the first two are a whole window old
    (a,) = q.get_many(1, timeout=0)
    clock.advance(0.5)
    (b,) = q.get_many(10, timeout=0)  # one more fits: the window holds a only
    assert q.get_many(10, timeout=0) == []
    clock.advance(0.5)  # a leaves the window, b stays: one slot, not two (not a fixed window)
    assert len(q.get_many(10, timeout=0)) == 1
    # Held-back messages spent no attempt and count as no failure.
    clock.advance(10)
    rest = q.get_many(10, timeout=0)
    assert [d.message.attempt for d in rest] == [1, 1]
    assert (a.message.attempt, b.message.attempt) == (1, 1)
    stats = broker.stats("channel")
    assert (stats.failed, stats.retried) == (0, 0)


def test_scope_tenant_counts_each_tenant_apart(broker: pmsq.Broker, clock: ManualClock) -> None:
    q = broker.declare_queue("channel", rate_limit=pmsq.RateLimit(2, per=1.0, scope="tenant"))
    for t in ("acme", "beach"):
        q.put_many(pmsq.NewMessage({"i": i}, tenant=t) for i in range(5))
    got = q.get_many(10, timeout=0)
    assert sorted(d.message.tenant for d in got) == ["acme", "acme", "beach", "beach"]
    assert q.get_many(10, timeout=0) == []
    # A tenant-scoped consumer is held to its tenant's budget too.
    assert broker.tenant("acme").queue("channel").get_many(10, timeout=0) == []
    clock.advance(1.0)
    assert len(broker.tenant("acme").queue("channel").get_many(10, timeout=0)) == 2
    assert [d.message.tenant for d in q.get_many(10, timeout=0)] == ["beach", "beach"]


def test_scope_key_counts_each_key_apart(broker: pmsq.Broker) -> None:
    q = broker.declare_queue("channel", rate_limit=pmsq.RateLimit(1, per=60.0, scope="key"))
    q.put_many(pmsq.NewMessage({"i": i}, key=f"channel:{i % 3}") for i in range(6))
    got = q.get_many(10, timeout=0)
    assert sorted(d.message.key for d in got) == ["channel:0", "channel:1", "channel:2"]
    for d in got:
        d.ack()
    assert q.get_many(10, timeout=0) == []


def test_the_budget_is_shared_by_every_connection(
    broker: pmsq.Broker, db_path: Path, clock: ManualClock
) -> None:
    q = broker.declare_queue("channel", rate_limit=pmsq.RateLimit(3, per=1.0))
    q.put_many({"i": i} for i in range(10))
    with pmsq.connect(str(db_path), clock=clock, durability="normal") as other:
        oq = other.queue("channel")
        assert len(oq.get_many(2, timeout=0)) == 2
        assert len(q.get_many(10, timeout=0)) == 1
        assert oq.get_many(10, timeout=0) == []
        clock.advance(1.0)
        assert len(oq.get_many(10, timeout=0)) == 3


def _run_claimers(db: Path, tmp: Path, queue: str) -> list[list[object]]:
    go = tmp / f"go-{queue}"
    logs = [tmp / f"claims-{queue}-{i}.jsonl" for i in range(3)]
    specs = [("rate_claimer.py", str(db), queue, str(log), str(go)) for log in logs]
    with roles(*specs) as procs:
        for p in procs:
            p.expect("READY")
        go.touch()  # all three claim at once
        for p in procs:
            p.expect("DONE", timeout=90)
            assert p.wait() == 0
    entries: list[list[object]] = []
    for log in logs:
        entries += [json.loads(line) for line in log.read_text().splitlines()]
    return entries


def test_three_processes_never_exceed_the_rate(db_path: Path, tmp_path: Path) -> None:
    limit, per, total = 5, 0.25, 60
    with pmsq.connect(str(db_path), durability="normal") as setup:
        q = setup.declare_queue("channel", rate_limit=pmsq.RateLimit(limit, per=per))
        ids = set(q.put_many({"i": i} for i in range(total)))
    entries = _run_claimers(db_path, tmp_path, "channel")
    assert sorted(e[2] for e in entries) == sorted(ids)  # each claimed once, none lost
    assert {e[4] for e in entries} == {1}  # waiting for the rate spends no attempt
    violation = window_violation([(e[0], e[1]) for e in entries], limit, per)
    assert violation is None, f"{limit + 1} claims within {per}s: {violation}"
    with pmsq.connect(str(db_path)) as after:
        stats = after.stats("channel")
        assert (stats.failed, stats.retried, stats.processed) == (0, 0, total)


def test_three_processes_never_exceed_the_rate_of_each_tenant(
    db_path: Path, tmp_path: Path
) -> None:
    limit, per, each = 3, 0.25, 24
    with pmsq.connect(str(db_path), durability="normal") as setup:
        q = setup.declare_queue(
            "channel", rate_limit=pmsq.RateLimit(limit, per=per, scope="tenant")
        )
        for t in ("acme", "beach"):
            q.put_many(pmsq.NewMessage({"i": i}, tenant=t) for i in range(each))
    entries = _run_claimers(db_path, tmp_path, "channel")
    by_tenant: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for before, after, _mid, tenant, attempt in entries:
        assert attempt == 1
        by_tenant[str(tenant)].append((float(before), float(after)))  # type: ignore[arg-type]
    assert {t: len(c) for t, c in by_tenant.items()} == {"acme": each, "beach": each}
    for tenant, claims in by_tenant.items():
        violation = window_violation(claims, limit, per)
        assert violation is None, f"tenant {tenant}: {limit + 1} claims within {per}s"


@pytest.mark.parametrize("limit", [0, -1, True])
def test_rate_limit_is_validated(limit: int) -> None:
    with pytest.raises(pmsq.ConfigurationError):
        pmsq.RateLimit(limit)
    with pytest.raises(pmsq.ConfigurationError):
        pmsq.RateLimit(1, per=0)
    with pytest.raises(pmsq.ConfigurationError):
        pmsq.RateLimit(1, scope="property")  # type: ignore[arg-type]
