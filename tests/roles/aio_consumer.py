"""A consumer process running ``pmsq.AsyncWorker`` (anyio) with an async handler, logging a history.

Usage: as ``worker_consumer.py`` (same options).

The handler awaits a random time; with ``--fail-share`` it raises (retried
by the queue's policy); with ``--stall-share`` it calls ``time.sleep`` for
``--stall`` seconds, blocking the event loop, so the heartbeat task cannot
extend the lease: the classic blocking call in an async handler. Prints
``ready`` once the worker runs; runs until killed, or with ``--drain`` until
the queue is drained, then stops gracefully and exits 0.
"""

from __future__ import annotations

import random
import sys
import time
from typing import Any

import anyio
import anyio.to_thread
from _history_backend import HistoryMiddleware, drained, open_broker, parse_consumer_args

import pmsq


async def serve(args: Any) -> None:
    broker, history = open_broker(args)
    rng = random.Random(args.seed)
    lo, hi = args.work_ms

    @broker.handler(args.queue)
    async def handle(message: pmsq.Message) -> None:
        await anyio.sleep(rng.uniform(lo, hi) / 1000.0)
        if rng.random() < args.stall_share:
            time.sleep(args.stall)  # blocks the event loop on purpose
        if rng.random() < args.fail_share:
            raise RuntimeError("injected handler failure")

    worker = pmsq.AsyncWorker(
        broker,
        concurrency=args.concurrency,
        prefetch=args.prefetch,
        middleware=[HistoryMiddleware(history)],
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        print("ready", flush=True)
        while not (
            args.drain
            and await anyio.to_thread.run_sync(drained, broker, args.queue, args.until_file)
        ):
            await anyio.sleep(0.1)
        worker.stop(timeout=30)
    broker.close()
    history.close()


def main() -> int:
    anyio.run(serve, parse_consumer_args(__doc__ or ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
