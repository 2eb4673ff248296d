"""One group commit for puts, claims, settlements and lease extensions (SQLite).

Claims and extensions join the transaction of concurrent puts and acks; a
leader lingers for more writers only while writers contend, so a lone
writer never waits; each caller's error stays its own.
"""

from __future__ import annotations

import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pmsq
from pmsq.backends.sqlite.backend import SQLiteBackend
from pmsq.backends.sqlite.group_commit import RECENT


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[pmsq.Broker]:
    with pmsq.connect(str(tmp_path / "g.db")) as b:
        yield b


def _backend(broker: pmsq.Broker) -> SQLiteBackend:
    backend = broker.backend
    assert isinstance(backend, SQLiteBackend)
    return backend


def _record_transactions(backend: SQLiteBackend) -> list[bool]:
    """From now on, record each ``_write`` call (one per transaction) with its ``sync``."""
    syncs: list[bool] = []
    original = backend._write

    def recording(fn: Callable[..., Any], *, sync: bool = True) -> Any:
        syncs.append(sync)
        return original(fn, sync=sync)

    backend._write = recording  # type: ignore[method-assign]
    return syncs


def _run_queued(backend: SQLiteBackend, jobs: list[Callable[[], Any]]) -> list[Any]:
    """Run ``jobs[0]`` as a leader stuck on the store lock, queue the rest behind it, let go.

    ``jobs[0]`` commits alone; the rest are then committed together by the
    next leader.
    """
    results: list[Any] = [None] * len(jobs)

    def run(i: int) -> None:
        try:
            results[i] = jobs[i]()
        except Exception as exc:
            results[i] = exc

    def until(done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 10
        while not done():
            assert time.monotonic() < deadline, what
            time.sleep(0.001)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    with backend._lock:
        threads[0].start()
        # Leading, and its batch (itself) taken: it now waits for the store lock.
        until(lambda: backend._group._leading and not backend._pending, "no job led")
        for t in threads[1:]:
            t.start()
        until(lambda: len(backend._pending) == len(jobs) - 1, "writers did not queue up")
    for t in threads:
        t.join(10)
    return results


def _skip_probe(queue: pmsq.Queue) -> pmsq.Delivery:
    """Claim one message of ``queue``, so its next claim skips the lock-free probe.

    The probe reads under the store lock, which ``_run_queued`` holds; a
    claim whose last claim came back full goes straight to the group commit.
    """
    return queue.get(timeout=0)


class _Lingers:
    """Stands in for the group commit's ``wait``: counts lingers and never blocks.

    Each call moves ``now`` (the group's clock) on by the time it would have
    waited, as a wait that timed out does.
    """

    def __init__(self, now: list[float] | None = None) -> None:
        self.calls: list[float] = []
        self.now = now

    def __call__(self, condition: threading.Condition, seconds: float) -> bool:
        self.calls.append(seconds)
        if self.now is not None:
            self.now[0] += seconds
        return False


def test_claims_acks_extensions_and_puts_share_one_transaction(broker: pmsq.Broker) -> None:
    jobs = broker.declare_queue("jobs", lease=30.0)
    work = broker.declare_queue("work", lease=30.0)
    jobs.put_many(["ack me", "extend me"])
    ack_me, extend_me = jobs.get_many(2)
    work.put_many(["first", "waiting"])
    _skip_probe(work).ack()
    backend = _backend(broker)
    syncs = _record_transactions(backend)
    before = extend_me.lease_expires

    results = _run_queued(
        backend,
        [
            lambda: work.put("new"),
            lambda: work.get(timeout=0),
            ack_me.ack,
            lambda: extend_me.extend(300.0),
            lambda: work.put("newer"),
        ],
    )

    assert [type(r) for r in results] == [str, pmsq.Delivery, type(None), type(None), str]
    # The first put alone; then, of the four queued behind it, the claim in a
    # transaction without a sync, the ack, extension and put in one with.
    assert syncs == [True, False, True]
    claimed = results[1]
    assert claimed.message.payload == "waiting"
    assert extend_me.lease_expires > before + 200
    # What each caller was told is what is stored.
    states = {m.payload: state for m, state in work.peek(10)}
    assert states == {"waiting": "in_flight", "new": "ready", "newer": "ready"}
    assert [m.payload for m, _ in jobs.peek(10)] == ["extend me"]
    assert broker.stats("jobs").processed == 1
    claimed.ack()
    extend_me.ack()


def test_an_error_in_one_request_undoes_only_its_own_work(broker: pmsq.Broker) -> None:
    # A put refused inside the transaction (quota) sits in one batch with a
    # claim, an ack and other puts: only the refused put is undone.
    work = broker.declare_queue("work", lease=30.0)
    small = broker.declare_queue("small", max_depth=1)
    small.put("only room for one")
    work.put_many(["ack me", "claim me"])
    ack_me = _skip_probe(work)
    assert ack_me.message.payload == "ack me"
    backend = _backend(broker)
    syncs = _record_transactions(backend)

    results = _run_queued(
        backend,
        [
            lambda: small.put("no room"),
            lambda: work.get(timeout=0),
            ack_me.ack,
            lambda: small.put("no room either"),
            lambda: work.put("stored"),
        ],
    )

    assert isinstance(results[0], pmsq.QueueFull)
    assert isinstance(results[1], pmsq.Delivery)
    assert results[1].message.payload == "claim me"
    assert results[2] is None
    assert isinstance(results[3], pmsq.QueueFull)
    assert isinstance(results[4], str)
    assert syncs == [True, False, True]  # the refused put alone; the claim; the rest
    assert [m.payload for m, _ in small.peek(10)] == ["only room for one"]
    assert {m.payload: s for m, s in work.peek(10)} == {"claim me": "in_flight", "stored": "ready"}
    stats = broker.stats("work")
    assert (stats.processed, stats.in_flight, stats.ready) == (1, 1, 1)
    # The claim's lease was committed: nobody else can take that message now.
    assert work.get_many(5, timeout=0)[0].message.payload == "stored"


def test_claims_commit_without_a_sync_and_never_wait_for_another_writes_sync(
    broker: pmsq.Broker,
) -> None:
    work = broker.declare_queue("work")
    work.put_many(list(range(8)))
    _skip_probe(work).ack()
    backend = _backend(broker)
    syncs = _record_transactions(backend)

    got = _run_queued(backend, [lambda: work.get(timeout=0) for _ in range(4)])

    assert all(isinstance(d, pmsq.Delivery) for d in got)
    # A lost claim only makes its message deliverable again: no fsync needed.
    assert syncs == [False, False]

    syncs.clear()
    got = _run_queued(backend, [lambda: work.get(timeout=0), lambda: work.put("x")] * 2)

    assert not any(isinstance(r, Exception) for r in got)
    # The leading claim alone; then the queued claim commits first, without
    # waiting for the disk, and the two puts after it with one sync.
    assert syncs == [False, False, True]
    assert {m.payload: s for m, s in work.peek(10)}["x"] == "ready"


def test_a_claim_returns_before_the_sync_of_the_puts_in_its_batch(broker: pmsq.Broker) -> None:
    work = broker.declare_queue("work")
    work.put_many(["first", "second"])
    _skip_probe(work).ack()
    backend = _backend(broker)
    claimed = threading.Event()
    # For each synced transaction: had the claim returned to its caller when it began?
    seen: list[bool] = []
    original = backend._write

    def write(fn: Callable[..., Any], *, sync: bool = True) -> Any:
        if sync:
            seen.append(claimed.wait(5) if seen else False)
        return original(fn, sync=sync)

    backend._write = write  # type: ignore[method-assign]

    def claim() -> pmsq.Delivery:
        delivery = work.get(timeout=0)
        claimed.set()
        return delivery

    results = _run_queued(backend, [lambda: work.put("lead"), claim, lambda: work.put("x")])

    assert isinstance(results[1], pmsq.Delivery)
    assert results[1].message.payload == "second"
    # The leading put alone, then the batch's put: by then the claim was back.
    assert seen == [False, True]


def test_a_lone_writer_never_lingers(broker: pmsq.Broker) -> None:
    q = broker.declare_queue("jobs", lease=30.0)
    backend = _backend(broker)
    lingers = _Lingers()
    backend._group._wait = lingers

    for i in range(5):
        q.put(i)
    q.put_many([5, 6, 7])
    first = q.get(timeout=0)
    first.extend(60.0)
    first.ack()
    for d in q.get_many(3):
        d.retry(delay=10)
    q.get(timeout=0).dead_letter("bad")
    q.get(timeout=0).release()

    assert lingers.calls == []


def test_a_leader_lingers_for_the_writers_of_the_last_batch_while_they_contend(
    broker: pmsq.Broker,
) -> None:
    q = broker.declare_queue("jobs")
    backend = _backend(broker)
    now = [1000.0]
    lingers = _Lingers(now)
    backend._group._wait = lingers
    backend._group._clock = lambda: now[0]

    # Six writers at once: the first leads alone, the five queued behind it
    # are all there when their leader starts, so nobody waits.
    _run_queued(backend, [lambda i=i: q.put(i) for i in range(6)])
    assert lingers.calls == []

    # Contention is older than RECENT: a lone put goes straight through.
    now[0] += RECENT * 1.01
    q.put("later")
    assert lingers.calls == []

    # A lone put right after a batch of five waits (a little) for the other four...
    _run_queued(backend, [lambda i=i: q.put(i) for i in range(6)])
    q.put("just after")
    assert len(lingers.calls) == 1
    assert 0 < lingers.calls[0] <= 0.001
    # ...and having found itself alone, the next one does not.
    q.put("alone")
    assert len(lingers.calls) == 1
    assert len(q.peek(20)) == 15


# -- many threads mixing puts, claims and acks -----------------------------------------
OPS = st.lists(st.sampled_from(["put", "put_small", "get", "get_many", "ack"]), max_size=12)


@settings(max_examples=15, deadline=None)
@given(plans=st.lists(OPS, min_size=2, max_size=6), seed=st.integers(0, 2**16))
def test_threads_mixing_puts_claims_and_acks_lose_nothing_and_deliver_once(
    plans: list[list[str]], seed: int
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        with pmsq.connect(f"{folder}/g.db", durability="memory") as broker:
            work = broker.declare_queue("work", lease=600.0)
            small = broker.declare_queue("small", max_depth=3)
            put_ids: list[str] = []
            small_ids: list[str] = []
            refused = [0]
            delivered: list[str] = []
            acked: list[str] = []
            lock = threading.Lock()
            start = threading.Barrier(len(plans))

            def worker(plan: list[str], rng: random.Random) -> None:
                held: list[pmsq.Delivery] = []
                start.wait()
                for op in plan:
                    if op == "put":
                        mid = work.put(rng.random())
                        with lock:
                            put_ids.append(mid)
                    elif op == "put_small":
                        try:
                            mid = small.put("s")
                        except pmsq.QueueFull:
                            with lock:
                                refused[0] += 1
                        else:
                            with lock:
                                small_ids.append(mid)
                    elif op in ("get", "get_many"):
                        got = work.get_many(1 if op == "get" else 3, timeout=0)
                        with lock:
                            delivered.extend(d.message.id for d in got)
                        held.extend(got)
                    elif held:
                        d = held.pop(rng.randrange(len(held)))
                        d.ack()
                        with lock:
                            acked.append(d.message.id)
                for d in held:
                    d.ack()
                    with lock:
                        acked.append(d.message.id)

            rngs = [random.Random(seed + i) for i in range(len(plans))]
            threads = [
                threading.Thread(target=worker, args=(p, r))
                for p, r in zip(plans, rngs, strict=True)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert not any(t.is_alive() for t in threads)

            # No message whose claim returned was handed out again.
            assert len(delivered) == len(set(delivered))
            # Every put that returned is stored: acked, or still there to take now.
            rest = work.get_many(len(put_ids) + 1, timeout=0)
            assert sorted(acked + [d.message.id for d in rest]) == sorted(put_ids)
            assert sorted(delivered) == sorted(acked)
            # Refused puts left nothing behind; the accepted ones are all there.
            assert sorted(m.id for m, _ in small.peek(10)) == sorted(small_ids)
            assert len(small_ids) == min(3, len(small_ids) + refused[0])
