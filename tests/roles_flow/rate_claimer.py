"""Role: a consumer process claiming one message at a time from a rate-limited queue.

Usage: rate_claimer.py DB QUEUE LOG GO. Prints READY, waits for the file GO,
then claims until nothing is waiting or in flight. Each claim is logged as a
JSON line ``[before, after, id, tenant, attempt]``: ``before`` and ``after``
are clock readings (the broker's clock, ``time.time()``) taken just before and
just after the single claim attempt, so the claim happened between them.
"""

from __future__ import annotations

import json
import os
import sys
import time

import pmsq


def main() -> int:
    db, queue, log_path, go = sys.argv[1:5]
    broker = pmsq.connect(f"sqlite:///{db}", durability="normal", busy_timeout=30.0)
    q = broker.queue(queue)
    print("READY", flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            return 2
        time.sleep(0.01)
    with open(log_path, "w") as log:
        while True:
            before = time.time()
            got = q.get_many(1, timeout=0)  # exactly one claim attempt
            after = time.time()
            if got:
                m = got[0].message
                log.write(json.dumps([before, after, m.id, m.tenant, m.attempt]) + "\n")
                got[0].ack()
                continue
            if not q.peek(1):
                break
            time.sleep(0.005)
    broker.close()
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
