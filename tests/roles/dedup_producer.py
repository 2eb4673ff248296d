"""Puts ``COUNT`` messages with dedup ids, retrying each one whose outcome is unknown.

Usage: ``dedup_producer.py DB QUEUE COUNT [--crash-on-unknown]``.

Message ``i`` has payload ``{"n": i}`` and ``dedup_id="d-i"``. On
``OutcomeUnknown`` (a commit that failed in a way that may have reached the
disk) the same put is retried, as DESIGN.md says is safe; with
``--crash-on-unknown`` the process dies on the spot instead (``os._exit``:
no cleanup, no close, its WAL left as it is), and the test retries by running
this script again. Prints one JSON line: ``{"ok": ..., "unknown": ..., "message": ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import pmsq


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("db")
    p.add_argument("queue")
    p.add_argument("count", type=int)
    p.add_argument("--crash-on-unknown", action="store_true")
    args = p.parse_args()
    result = {"ok": 0, "unknown": 0, "message": ""}
    broker = pmsq.connect(args.db)
    q = broker.queue(args.queue)
    for i in range(args.count):
        while True:
            try:
                q.put({"n": i}, dedup_id=f"d-{i}")
            except pmsq.OutcomeUnknown as exc:
                result["unknown"] += 1
                result["message"] = str(exc)
                if args.crash_on_unknown:
                    print(json.dumps(result), flush=True)
                    os._exit(3)
                continue
            result["ok"] += 1
            break
    broker.close()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
