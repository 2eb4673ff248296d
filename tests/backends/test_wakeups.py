"""Idle cost (issue 15): an idle worker's calls to its store do not grow with its queues.

Before: every idle round probed every queue (8 % of a core at 100 queues, 92 %
at 10,000). Now one change signal per store (``wait_for_change``, in one
watcher thread per broker) and one ``ready_queues`` question when it moves
decide where to claim. These tests count backend calls per claim round, so
they hold on any machine; ``bench/idle_queues.py`` measures the CPU.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pmsq
from pmsq.backends.sqlite import SQLiteBackend
from pmsq.worker.lifecycle import Call, Effect, Lifecycle, drive
from pmsq.worker.middleware import Hooks
from pmsq.worker.options import select_handlers

# Every backend verb an idle worker could use (the watcher's wait_for_change is counted apart).
_VERBS = (
    "claim",
    "ready_queues",
    "put_many",
    "settle",
    "extend",
    "stats",
    "queue_config",
    "ensure_queue",
    "list_queues",
    "bindings",
    "dead_letters",
    "peek",
)


def _perform(effect: Effect) -> Any:
    assert isinstance(effect, Call)
    return effect.fn()


class _Counted:
    """Counts the backend calls made from the test's own thread."""

    def __init__(self, backend: SQLiteBackend) -> None:
        self.calls: Counter[str] = Counter()
        self.claimed: list[str] = []
        me = threading.get_ident()
        for verb in _VERBS:
            real = getattr(backend, verb)

            def counted(*args: Any, _verb: str = verb, _real: Any = real, **kw: Any) -> Any:
                if threading.get_ident() == me:
                    self.calls[_verb] += 1
                    if _verb == "claim":
                        self.claimed.append(args[0])
                return _real(*args, **kw)

            setattr(backend, verb, counted)

    def take(self) -> Counter[str]:
        out, self.calls = self.calls, Counter()
        self.claimed.clear()
        return out


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "pms.db"


def _idle_worker(path: Path, queues: int) -> Iterator[tuple[pmsq.Broker, Lifecycle, _Counted]]:
    with pmsq.connect(str(path), durability="memory", poll_interval=0.05) as broker:
        for i in range(queues):
            broker.handler(f"q{i:05d}")(lambda message: None)
        counted = _Counted(broker.backend)  # type: ignore[arg-type]
        core = Lifecycle(broker, select_handlers(broker, None), 4, Hooks([]), kick=lambda: None)
        yield broker, core, counted


def _rounds(core: Lifecycle, n: int) -> None:
    for _ in range(n):
        assert drive(core.claim_round(), _perform) == []


@pytest.mark.parametrize("queues", [5, 2000])
def test_idle_rounds_ask_the_store_once_whatever_the_number_of_queues(
    store: Path, queues: int
) -> None:
    for _broker, core, counted in _idle_worker(store, queues):
        counted.take()  # declaring the queues
        _rounds(core, 50)
        # The first round asks which queues have work (none); the others ask nothing.
        assert counted.take() == Counter(ready_queues=1)


def test_a_local_put_costs_one_question_and_one_claim(store: Path) -> None:
    for broker, core, counted in _idle_worker(store, 500):
        _rounds(core, 3)
        counted.take()
        broker.queue("q00321").put({"booking": 1})
        counted.take()  # the put itself
        jobs = drive(core.claim_round(), _perform)
        assert [j.delivery.message.payload for j in jobs] == [{"booking": 1}]
        assert counted.claimed == ["q00321"]
        calls = counted.take()
        assert (calls["ready_queues"], calls["claim"]) == (1, 1)


def test_another_process_s_put_reaches_the_idle_worker_through_the_store_signal(
    store: Path,
) -> None:
    for broker, core, counted in _idle_worker(store, 500):
        _rounds(core, 3)
        since = broker.runtime.wakeups.changes(core.queues)
        with pmsq.connect(str(store), durability="memory") as other:  # another connection
            other.queue("q00007").put("from elsewhere")
        # The broker's one watcher thread sees the store move and wakes the waiters.
        # One wait lasts at most the poll interval; on a loaded machine the
        # watcher may need more than one, so wait (bounded) until it has seen it.
        deadline = time.monotonic() + 30.0
        while broker.runtime.wakeups.changes(core.queues) == since:
            assert time.monotonic() < deadline, "the watcher never saw the other process's put"
            broker.runtime.wakeups.wait_any(core.queues, since, 30.0)
        counted.take()
        jobs = drive(core.claim_round(), _perform)
        assert [j.delivery.message.payload for j in jobs] == ["from elsewhere"]
        calls = counted.take()
        assert (calls["ready_queues"], calls["claim"]) == (1, 1)
        watcher = broker.runtime.wakeups._watcher  # one per broker, whatever the number of queues
        assert watcher is not None
        assert watcher.name == "pmsq-store-watch"
        assert watcher.is_alive()
    watcher.join(5.0)  # the broker is closed: its watcher stops
    assert not watcher.is_alive(), "the watcher outlived its broker"


def test_a_delay_falling_due_is_claimed_without_any_write(store: Path) -> None:
    clock = pmsq.ManualClock()
    with pmsq.connect(str(store), durability="memory", clock=clock) as broker:
        for name in ("a", "b", "c"):
            broker.handler(name)(lambda message: None)
        broker.queue("b").put("later", delay=60.0)
        core = Lifecycle(broker, select_handlers(broker, None), 4, Hooks([]), kick=lambda: None)
        counted = _Counted(broker.backend)  # type: ignore[arg-type]
        _rounds(core, 3)
        assert counted.take() == Counter(ready_queues=1)  # then it knows when "b" is due
        clock.advance(61.0)
        jobs = drive(core.claim_round(), _perform)
        assert [j.delivery.message.payload for j in jobs] == ["later"]
        assert counted.claimed == ["b"]


def test_sqlite_readiness_is_one_query_per_store_and_exact(store: Path) -> None:
    clock = pmsq.ManualClock()
    with pmsq.connect(str(store), durability="memory", clock=clock) as broker:
        b = broker.backend
        broker.declare_queue("leased", lease=5.0)
        broker.queue("ready").put(1)
        broker.queue("later").put(2, delay=30.0)
        broker.queue("leased").put(3)
        broker.queue("blocked").put(4, key="k")
        broker.queue("blocked").put(5, key="k")
        broker.queue("leased").get(timeout=0)
        broker.queue("blocked").get(timeout=0)  # the head of k in flight: 5 waits behind it
        names = ["ready", "later", "leased", "blocked", "empty"]
        now = clock.time()
        r = b.ready_queues(names, now=now)
        assert r.queues == {"ready"}
        assert r.next_due == now + 5.0  # the lease ends before the delay
        r = b.ready_queues(names, now=now + 10.0)
        assert r.queues == {"ready", "leased"}
        assert r.next_due == now + 30.0
        assert b.ready_queues(["later"], now=now + 30.0).queues == {"later"}
