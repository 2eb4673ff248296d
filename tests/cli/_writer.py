"""A separate process writing a store while a monitor watches it: ``python _writer.py PATH``.

Declares ``calendar`` and ``email``, leaves one dead letter in ``email``, prints
``ready`` once that is committed, then puts and acks on ``calendar`` until killed.
"""

from __future__ import annotations

import sys
import time

import pmsq


def main(path: str) -> None:
    with pmsq.connect(path, durability="normal") as b:
        b.declare_queue("calendar")
        b.declare_queue("email", max_attempts=1)
        b.queue("email").put({"to": "guest@example.com"}, tenant="acme")
        with b.queue("email").get(timeout=5) as d:
            d.dead_letter("mailbox full")
        print("ready", flush=True)
        q = b.queue("calendar")
        n = 0
        while True:
            q.put_many([{"n": n + i} for i in range(5)])
            n += 5
            for d in q.get_many(6, timeout=1):
                d.ack()
            time.sleep(0.005)  # a steady trickle, not a CPU hog on a shared machine


if __name__ == "__main__":
    main(sys.argv[1])
