"""A consumer process running ``pmsq.Worker`` (threads) with a sync handler, logging a history.

Usage::

    worker_consumer.py DB QUEUE HISTORY --proc NAME [--concurrency N] [--work-ms LO HI]
                       [--fail-share F] [--stall-share F] [--stall S] [--seed S] [--drain]

The handler sleeps a random time; with ``--fail-share`` it raises (the queue's
policy retries it); with ``--stall-share`` it hogs the GIL for ``--stall``
seconds in one C call (``sum(range(n))``), so the heartbeat thread cannot
extend the lease: a CPU-bound handler outliving a short lease. Events go to
HISTORY in the checker's vocabulary (see ``_history_backend``). Prints
``ready`` once the worker started; runs until killed, or with ``--drain``
until the queue is drained, then stops gracefully and exits 0.
"""

from __future__ import annotations

import random
import sys
import time

from _history_backend import HistoryMiddleware, drained, open_broker, parse_consumer_args

import pmsq


def _gil_hog(seconds: float) -> None:
    """Hold the GIL for about ``seconds``: one long C call, no bytecode boundaries."""
    n = 1_000_000
    t0 = time.perf_counter()
    sum(range(n))
    per = max(time.perf_counter() - t0, 1e-4) / n
    sum(range(int(seconds / per)))


def main() -> int:
    args = parse_consumer_args(__doc__ or "")
    broker, history = open_broker(args)
    rng = random.Random(args.seed)
    lo, hi = args.work_ms

    @broker.handler(args.queue)
    def handle(message: pmsq.Message) -> None:
        time.sleep(rng.uniform(lo, hi) / 1000.0)
        if rng.random() < args.stall_share:
            _gil_hog(args.stall)
        if rng.random() < args.fail_share:
            raise RuntimeError("injected handler failure")

    worker = pmsq.Worker(
        broker,
        concurrency=args.concurrency,
        prefetch=args.prefetch,
        middleware=[HistoryMiddleware(history)],
    )
    worker.start()
    print("ready", flush=True)
    while not (args.drain and drained(broker, args.queue, args.until_file)):
        time.sleep(0.1)
    worker.stop(timeout=30)
    broker.close()
    history.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
