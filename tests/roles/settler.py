"""Claim every waiting message of a queue and settle each with one verb, reporting outcomes.

Usage: ``settler.py DB QUEUE VERB`` with VERB ``ack``, ``retry`` or ``dead``.
Prints one JSON object: message id -> ``"ok"`` or the pmsq error's class name.
Run under ``strace -e inject=fdatasync:error=EIO`` by the I/O-error tests.
"""

from __future__ import annotations

import json
import sys

import pmsq


def main() -> int:
    db, queue, verb = sys.argv[1:4]
    outcomes: dict[str, str] = {}
    with pmsq.connect(db) as broker:
        try:
            deliveries = broker.queue(queue).get_many(100, timeout=0)
        except pmsq.StorageError:
            # The claim met the error (a WAL reset syncs too): claim again.
            deliveries = broker.queue(queue).get_many(100, timeout=0)
        for d in deliveries:
            try:
                if verb == "ack":
                    d.ack()
                elif verb == "retry":
                    d.retry(delay=0)
                else:
                    d.dead_letter("unusable")
                outcomes[d.message.id] = "ok"
            except pmsq.StorageError as exc:
                outcomes[d.message.id] = type(exc).__name__
    print(json.dumps(outcomes), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
