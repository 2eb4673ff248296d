"""A worker process for the journal tests: handles queue ``calendar`` once or twice, then stops.

Usage::

    trace_worker.py DB fail|succeed

``fail``: every delivery raises ``ValueError`` naming the attempt and this
pid; on attempt 2 the handler first asks its own worker to stop, so this
process handles exactly attempts 1 and 2 of a message and exits.
``succeed``: the first delivery succeeds and the worker stops after it.
Either way the exit status is 0 once the worker stopped gracefully.
"""

from __future__ import annotations

import os
import sys

import pmsq


def main() -> int:
    db, mode = sys.argv[1], sys.argv[2]
    with pmsq.connect(db, durability="normal", poll_interval=0.02) as broker:
        broker.declare_queue(
            "calendar",
            max_attempts=5,
            backoff=pmsq.Backoff(base=0.01, factor=1.0, cap=0.01, jitter=False),
        )
        worker = pmsq.Worker(broker, concurrency=1)

        @broker.handler("calendar")
        def handle(message: pmsq.Message) -> None:
            if mode == "succeed":
                worker.stop()  # from a handler: only asks; this delivery still settles
                return
            if message.attempt >= 2:
                worker.stop()  # claim nothing more: attempt 3 is for the other process
            raise ValueError(f"calendar API down (attempt {message.attempt}, pid {os.getpid()})")

        worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
