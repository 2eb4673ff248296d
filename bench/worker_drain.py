"""Worker drain probe: messages/s and CPU per message of one driver draining a backlog.

Usage: ``python bench/worker_drain.py {thread,async} [N] [PREFETCH|auto]``.

Puts ``N`` (default 20,000) messages to a fresh durable store, then times a
``Worker(8)`` (``thread``, sync no-op handler) or an ``AsyncWorker(8)``
(``async``, async no-op handler) from its start until the queue is empty,
with ``time.process_time`` over the same span. Without a third argument the
worker's default prefetch is used (so the script also runs against a pmsq
that has no ``prefetch=``). docs/performance.md ("Prefetch") holds figures.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from typing import Any

import anyio

import pmsq


def main() -> None:
    kind = sys.argv[1] if len(sys.argv) > 1 else "thread"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000
    options: dict[str, Any] = {}
    if len(sys.argv) > 3:
        options["prefetch"] = None if sys.argv[3] == "auto" else int(sys.argv[3])
    with (
        tempfile.TemporaryDirectory() as tmp,
        pmsq.connect(os.path.join(tmp, "drain.db"), durability="full") as b,
    ):
        done = threading.Event()
        count = [0]
        lock = threading.Lock()
        if kind == "thread":

            @b.handler("bench")
            def handle(_: pmsq.Message) -> None:
                with lock:
                    count[0] += 1
                    if count[0] >= n:
                        done.set()

        else:

            @b.handler("bench")
            async def handle_async(_: pmsq.Message) -> None:
                count[0] += 1
                if count[0] >= n:
                    done.set()

        q = b.queue("bench")
        for i in range(0, n, 500):
            q.put_many([{"i": j} for j in range(i, min(n, i + 500))])

        def drained() -> None:
            done.wait(600)
            while b.stats("bench").depth:
                time.sleep(0.001)

        cpu, start = time.process_time(), time.perf_counter()
        if kind == "thread":
            with pmsq.Worker(b, concurrency=8, **options):
                drained()
        else:
            worker = pmsq.AsyncWorker(b, concurrency=8, **options)

            def stopper() -> None:
                drained()
                worker.stop()

            threading.Thread(target=stopper).start()
            anyio.run(worker.run)
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu
        print(
            f"{kind} prefetch={options.get('prefetch', 'default')}: {n / wall:,.0f} msg/s, "
            f"CPU {cpu / n * 1e6:.0f} µs per message"
        )


if __name__ == "__main__":
    main()
