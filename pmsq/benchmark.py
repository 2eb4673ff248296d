"""Throughput and latency probes of a store, shared by ``pmsq bench`` and ``bench/``.

Each probe opens its own broker on the URL it is given, does a fixed amount
of work and returns a rate or a latency. None of them asserts anything: the
numbers are for reading, not for tests.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable

import pmsq

__all__ = [
    "end_to_end",
    "get_ack",
    "latency",
    "median",
    "put_many",
    "put_parallel",
    "put_single",
]

Factory = Callable[[], pmsq.Broker]


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def put_single(connect: Factory, n: int, queue: str = "bench") -> float:
    """Puts per second, one thread, one durable commit each."""
    with connect() as broker:
        q = broker.queue(queue)
        start = time.perf_counter()
        for i in range(n):
            q.put({"i": i})
        return _rate(n, time.perf_counter() - start)


def put_parallel(connect: Factory, n: int, threads: int, queue: str = "bench") -> float:
    """Puts per second from ``threads`` threads sharing one broker (group commit)."""
    with connect() as broker:
        q = broker.queue(queue)
        per = n // threads
        barrier = threading.Barrier(threads + 1)

        def work() -> None:
            barrier.wait()
            for i in range(per):
                q.put({"i": i})

        pool = [threading.Thread(target=work) for _ in range(threads)]
        for t in pool:
            t.start()
        barrier.wait()
        start = time.perf_counter()
        for t in pool:
            t.join()
        return _rate(per * threads, time.perf_counter() - start)


def put_many(connect: Factory, n: int, batch: int = 100, queue: str = "bench") -> float:
    """Messages per second stored with ``put_many`` in batches of ``batch``."""
    with connect() as broker:
        q = broker.queue(queue)
        start = time.perf_counter()
        for b in range(n // batch):
            q.put_many([{"i": b * batch + j} for j in range(batch)])
        return _rate((n // batch) * batch, time.perf_counter() - start)


def get_ack(connect: Factory, n: int, queue: str = "bench", backlog: int = 0) -> float:
    """Get + ack cycles per second, one at a time, with ``backlog`` extra messages waiting."""
    with connect() as broker:
        q = broker.queue(queue)
        total = n + backlog
        for b in range(0, total, 500):
            q.put_many([{"i": i} for i in range(b, min(total, b + 500))])
        start = time.perf_counter()
        for _ in range(n):
            q.get(timeout=5).ack()
        return _rate(n, time.perf_counter() - start)


def end_to_end(connect: Factory, n: int, concurrency: int = 8, queue: str = "bench") -> float:
    """Messages per second through a thread ``Worker`` with a no-op handler.

    The messages are put first (in batches), then the clock runs from the
    worker's start until the last message is acked.
    """
    with connect() as broker:
        done = threading.Event()
        count = [0]
        lock = threading.Lock()

        @broker.handler(queue)
        def handle(message: pmsq.Message) -> None:
            with lock:
                count[0] += 1
                if count[0] >= n:
                    done.set()

        q = broker.queue(queue)
        for b in range(0, n, 500):
            q.put_many([{"i": i} for i in range(b, min(n, b + 500))])
        start = time.perf_counter()
        with pmsq.Worker(broker, concurrency=concurrency):
            done.wait(timeout=600)
            while broker.stats(queue).depth:
                time.sleep(0.001)
            elapsed = time.perf_counter() - start
        return _rate(count[0], elapsed)


def latency(connect: Factory, n: int, gap: float = 0.005, queue: str = "bench") -> list[float]:
    """Put → handler-start latencies in ms at low load (one message every ``gap`` s)."""
    with connect() as broker:
        seen: list[float] = []
        arrived = threading.Semaphore(0)

        @broker.handler(queue)
        def handle(message: pmsq.Message) -> None:
            seen.append((time.time() - message.payload["t"]) * 1000.0)
            arrived.release()

        q = broker.queue(queue)
        with pmsq.Worker(broker, concurrency=2):
            time.sleep(0.2)  # let the worker reach its idle wait
            for _ in range(n):
                q.put({"t": time.time()})
                arrived.acquire(timeout=10)
                time.sleep(gap)
        return seen


def median(values: list[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else float("nan")
