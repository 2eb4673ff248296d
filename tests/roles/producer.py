"""A producer process for the fault tests: puts messages and logs each put.

Usage::

    producer.py DB QUEUE EVENTS --count N --prefix P [--keys K] [--tenants A,B]
                [--unkeyed-share F] [--seed S] [--batch B] [--durability D]

For message ``v`` (``P-0`` ... ``P-{N-1}``) it logs ``invoke`` (before the
put: v, key, tenant) and ``ok`` (after it returned: v, id), with
``time.monotonic()`` times, so the checks know real-time put order even
across processes: a put that returned before another was invoked comes first
in its key. Payload is ``{"v": v}``. Any exception is logged as ``error`` and
exits with status 3.

With ``--batch B`` > 1 it calls ``put_many`` with B messages at a time and
logs one ``invoke_many`` (vs, keys, tenants) and one ``ok_many`` (vs, ids)
per call: a process killed in between leaves a call whose outcome is
unknown, and the check is that it stored all of its messages or none.
Every line is fsynced before the put goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import traceback
from typing import Any

import pmsq


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("db")
    p.add_argument("queue")
    p.add_argument("events")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--keys", type=int, default=4)
    p.add_argument("--tenants", default="")
    p.add_argument("--unkeyed-share", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--durability", default="full")
    args = p.parse_args()

    rng = random.Random(args.seed)
    tenants: list[str | None] = [t or None for t in args.tenants.split(",")]
    fd = os.open(args.events, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def log(ev: str, **fields: Any) -> None:
        fields.update(ev=ev, pid=os.getpid(), t=time.monotonic())
        os.write(fd, (json.dumps(fields, sort_keys=True) + "\n").encode())
        if args.batch > 1:
            os.fsync(fd)

    try:
        with pmsq.connect(args.db, durability=args.durability) as broker:
            queue = broker.queue(args.queue)
            log("ready")
            print("ready", flush=True)
            for start in range(0, args.count, args.batch):
                msgs = []
                for i in range(start, min(start + args.batch, args.count)):
                    share = args.unkeyed_share
                    key = None if rng.random() < share else f"k{rng.randrange(args.keys)}"
                    msgs.append((f"{args.prefix}-{i}", key, rng.choice(tenants)))
                if args.batch == 1:
                    ((v, key, tenant),) = msgs
                    log("invoke", v=v, key=key, tenant=tenant)
                    mid = queue.put({"v": v}, key=key, tenant=tenant)
                    log("ok", v=v, id=mid, key=key, tenant=tenant)
                    continue
                vs = [m[0] for m in msgs]
                log("invoke_many", vs=vs, keys=[m[1] for m in msgs], tenants=[m[2] for m in msgs])
                ids = queue.put_many(
                    [pmsq.NewMessage({"v": v}, key=key, tenant=tenant) for v, key, tenant in msgs]
                )
                log("ok_many", vs=vs, ids=ids)
    except BaseException as exc:
        log("error", type=type(exc).__qualname__, message=str(exc), tb=traceback.format_exc())
        return 3
    log("finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
