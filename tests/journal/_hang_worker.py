"""A worker process that claims one message of ``calendar`` and hangs in its handler.

Usage: ``_hang_worker.py DB``. The handler prints ``started <id> <attempt>``
and then sleeps until the process is killed: the test kills it with SIGKILL
between the claim and the settle.
"""

from __future__ import annotations

import sys
import time

import pmsq


def main() -> int:
    with pmsq.connect(sys.argv[1], durability="normal", poll_interval=0.02) as broker:

        @broker.handler("calendar")
        def handle(message: pmsq.Message) -> None:
            print(f"started {message.id} {message.attempt}", flush=True)
            while True:
                time.sleep(60)

        with pmsq.Worker(broker, concurrency=1):
            while True:
                time.sleep(60)


if __name__ == "__main__":
    sys.exit(main())
