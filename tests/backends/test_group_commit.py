"""Group commit of puts and settlements on the SQLite backend.

Concurrent writers share one transaction (and one fsync), yet each caller's
outcome is its own: a stale lease, a full queue or a dead letter in the same
batch changes nothing for the others.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pmsq
from pmsq.backends.sqlite.backend import SQLiteBackend
from pmsq.policy import Ack, DeadLetterOutcome, RetryAt
from pmsq.worker.lifecycle import Lifecycle, Settle


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[pmsq.Broker]:
    with pmsq.connect(str(tmp_path / "g.db")) as b:
        yield b


def _backend(broker: pmsq.Broker) -> SQLiteBackend:
    backend = broker.backend
    assert isinstance(backend, SQLiteBackend)
    return backend


def _count_transactions(backend: SQLiteBackend) -> list[int]:
    """Count ``_write`` calls from now on (one per transaction)."""
    calls = [0]
    original = backend._write

    def counting(fn: Callable[..., Any], **kw: Any) -> Any:
        calls[0] += 1
        return original(fn, **kw)

    backend._write = counting  # type: ignore[method-assign]
    return calls


def _run_queued(backend: SQLiteBackend, jobs: list[Callable[[], Any]]) -> list[Any]:
    """Start ``jobs`` while the store lock is held, so they all queue up, then let go.

    The first job leads and waits for the lock with only its own work; the
    rest queue behind it and must then be committed together by the next leader.
    """
    results: list[Any] = [None] * len(jobs)

    def run(i: int) -> None:
        try:
            results[i] = jobs[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    with backend._lock:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(backend._pending) < len(jobs) - 1:
            assert time.monotonic() < deadline, "writers did not queue up"
            time.sleep(0.001)
    for t in threads:
        t.join(10)
    return results


def test_concurrent_acks_share_one_transaction(broker: pmsq.Broker) -> None:
    q = broker.declare_queue("jobs")
    q.put_many(list(range(8)))
    deliveries = q.get_many(8)
    assert len(deliveries) == 8
    backend = _backend(broker)
    calls = _count_transactions(backend)

    results = _run_queued(backend, [d.ack for d in deliveries])

    assert results == [None] * 8
    assert calls[0] == 2  # the first leader alone, then the seven that queued behind it
    assert broker.stats("jobs").processed == 8
    with pytest.raises(pmsq.Empty):
        q.get(timeout=0)


def test_a_stale_ack_in_a_batch_changes_nothing_for_the_others(tmp_path: Path) -> None:
    clock = pmsq.ManualClock(1_000_000.0)
    with pmsq.connect(str(tmp_path / "g.db"), clock=clock) as broker:
        q = broker.declare_queue("jobs", lease=10.0, max_attempts=5)
        q.put_many(["a", "b", "c", "d"])
        first = q.get_many(4)
        clock.advance(11.0)  # every lease expires; a second consumer takes "a" again
        again = q.get(timeout=0)
        assert again.message.payload == "a"
        stale = next(d for d in first if d.message.payload == "a")
        fresh = [d for d in first if d.message.payload != "a"]
        backend = _backend(broker)
        calls = _count_transactions(backend)

        results = _run_queued(backend, [stale.ack] + [d.ack for d in fresh])

        assert isinstance(results[0], pmsq.LeaseLost)
        # Their leases expired too, but nobody took them: their holder may still settle them.
        assert results[1:] == [None, None, None]
        assert calls[0] == 2
        again.ack()
        with pytest.raises(pmsq.Empty):
            q.get(timeout=0)


def test_puts_acks_and_dead_letters_batched_together_keep_their_own_outcomes(
    broker: pmsq.Broker,
) -> None:
    q = broker.declare_queue("jobs", max_attempts=5)
    full = broker.declare_queue("small", max_depth=1)
    full.put("only room for one")
    q.put_many(["ack me", "bury me"])
    ack_me, bury_me = q.get_many(2)
    backend = _backend(broker)
    calls = _count_transactions(backend)

    results = _run_queued(
        backend,
        [
            lambda: q.put("new"),
            ack_me.ack,
            lambda: full.put("no room"),
            lambda: bury_me.dead_letter("bad data"),
            lambda: q.put("another"),
        ],
    )

    assert isinstance(results[0], str)
    assert results[1] is None
    assert isinstance(results[2], pmsq.QueueFull)
    assert results[3] is None
    assert isinstance(results[4], str)
    assert calls[0] == 2
    assert [m.payload for m, _ in q.peek(10)] == ["new", "another"]
    assert [d.message.payload for d in broker.dead_letters("jobs").list()] == ["bury me"]
    assert [m.payload for m, _ in full.peek(10)] == ["only room for one"]
    assert broker.stats("small").ready == 1


def test_a_workers_settlements_commit_in_one_transaction_each_with_its_own_outcome(
    tmp_path: Path,
) -> None:
    # What the thread Worker's dispatcher does with the outcomes its handlers
    # parked: one store call, one transaction, one result per message.
    clock = pmsq.ManualClock(1_000_000.0)
    with pmsq.connect(str(tmp_path / "g.db"), clock=clock) as broker:
        q = broker.declare_queue("jobs", lease=10.0, max_attempts=5)
        q.put_many(["stale", "ack", "retry", "bury", "twice"])
        stale, ack, retry, bury, twice = q.get_many(5)
        clock.advance(11.0)
        taken = q.get(timeout=0)  # "stale" belongs to someone else now
        assert taken.message.payload == "stale"
        twice.ack()
        backend = _backend(broker)
        calls = _count_transactions(backend)

        errors = Lifecycle.settle_many(
            [
                Settle(stale, Ack(), 1.0),
                Settle(taken, Ack(), 1.0),  # the same message, under its live lease
                Settle(ack, Ack(), 1.0),
                Settle(retry, RetryAt(at=clock.time() + 60, error_type="E", error="e"), 1.0),
                Settle(bury, DeadLetterOutcome(reason="bad", error_type="E", traceback="tb"), 1.0),
                Settle(twice, Ack(), 1.0),
            ]
        )

        assert calls[0] == 1
        assert isinstance(errors[0], pmsq.LeaseLost)
        assert errors[1:5] == [None, None, None, None]
        assert isinstance(errors[5], pmsq.LeaseLost)  # already acked by this delivery
        assert [d.settled for d in (stale, taken, ack, retry, bury, twice)] == [
            "lost",
            "acked",
            "acked",
            "retried",
            "dead",
            "acked",
        ]
        stats = broker.stats("jobs")
        # retried: the five expired leases, then the one retry
        assert (stats.processed, stats.retried, stats.dead, stats.delayed, stats.in_flight) == (
            3,
            6,
            1,
            1,
            0,
        )
        [dead] = broker.dead_letters("jobs").list()
        assert (dead.message.payload, dead.reason) == ("bury", "bad")


def test_a_failing_batch_is_settled_one_by_one(
    broker: pmsq.Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    q = broker.declare_queue("jobs")
    q.put_many(["a", "b", "c"])
    deliveries = q.get_many(3)
    backend = _backend(broker)
    original = backend.settle

    def refuse_batches(settlements: Any, *, now: float) -> list[bool]:
        if len(settlements) > 1:
            raise pmsq.StorageError("the batch failed")
        if settlements[0].receipt.message_id == deliveries[1].message.id:
            raise pmsq.StorageError("this one failed")
        return original(settlements, now=now)

    monkeypatch.setattr(backend, "settle", refuse_batches)

    errors = Lifecycle.settle_many([Settle(d, Ack(), None) for d in deliveries])

    assert errors[0] is None
    assert errors[2] is None
    assert isinstance(errors[1], pmsq.StorageError)
    assert [d.settled for d in deliveries] == ["acked", None, "acked"]
    assert broker.stats("jobs").in_flight == 1


def test_a_full_queue_in_a_batch_of_puts_fails_alone(broker: pmsq.Broker) -> None:
    # Puts batch without a savepoint each; one failing put makes the batch
    # roll back and run again with them, so only that put fails.
    q = broker.declare_queue("jobs")
    full = broker.declare_queue("small", max_depth=1)
    full.put("only room for one")
    backend = _backend(broker)
    calls = _count_transactions(backend)

    results = _run_queued(
        backend,
        [
            lambda: q.put("first"),
            lambda: q.put("second"),
            lambda: full.put("no room"),
            lambda: q.put("third"),
        ],
    )

    assert [type(r) for r in results] == [str, str, pmsq.QueueFull, str]
    # the leader alone; then the batch of three unisolated (rolled back) and isolated
    assert calls[0] == 3
    # The threads queue in whatever order they reach the lock: compare as sets.
    assert sorted(d.message.payload for d in q.get_many(10)) == ["first", "second", "third"]
    assert [m.payload for m, _ in full.peek(10)] == ["only room for one"]
    # The rolled-back attempt left no journal rows behind.
    puts = [e for e in backend.history(queue="jobs") if e.event == "put"]
    assert sorted(e.message_id for e in puts) == sorted(results[i] for i in (0, 1, 3))


def test_a_batch_of_puts_shares_one_transaction(broker: pmsq.Broker) -> None:
    q = broker.declare_queue("jobs")
    backend = _backend(broker)
    calls = _count_transactions(backend)

    results = _run_queued(backend, [lambda i=i: q.put(i) for i in range(8)])

    assert all(isinstance(r, str) for r in results)
    assert calls[0] == 2
    assert sorted(d.message.payload for d in q.get_many(10)) == list(range(8))
