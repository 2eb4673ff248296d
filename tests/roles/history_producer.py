"""A producer process for the torture tests: puts until killed, logging a checker history.

Usage::

    history_producer.py DB QUEUE HISTORY --proc NAME [--tenants A,B,] [--keys K]
                        [--hot-share F] [--unkeyed-share F] [--batch B] [--seed S]
                        [--pause-ms LO HI] [--count N]

Value ``v`` is ``NAME-i``; payload ``{"v": v}``. A share of the keyed messages
(``--hot-share``) goes to the one hot key ``hot``. Each put logs
``put_invoke`` before and ``put_ok`` after (``put_many`` with ``--batch``:
one pair per message around one call), or ``put_fail`` / ``put_unknown`` on
an exception, whose type it also names. Prints ``ready``; runs until killed,
or with ``--count`` until it has put that many messages, then exits 0.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import pmsq
from pmsq.testing.checker import History


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("db")
    p.add_argument("queue")
    p.add_argument("history")
    p.add_argument("--proc", required=True)
    p.add_argument("--tenants", default=",acme,globex")
    p.add_argument("--keys", type=int, default=4)
    p.add_argument("--hot-share", type=float, default=0.5)
    p.add_argument("--unkeyed-share", type=float, default=0.3)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pause-ms", type=float, nargs=2, default=(0.0, 5.0))
    p.add_argument("--count", type=int, default=None)
    args = p.parse_args()

    rng = random.Random(args.seed)
    tenants = [t or None for t in args.tenants.split(",")]
    history = History(args.history, args.proc)
    broker = pmsq.connect(args.db)
    q = broker.queue(args.queue)
    print("ready", flush=True)
    i = 0
    while args.count is None or i < args.count:
        items = []
        size = rng.randint(1, args.batch)
        if args.count is not None:
            size = min(size, args.count - i)
        for _ in range(size):
            if rng.random() < args.unkeyed_share:
                key = None
            elif rng.random() < args.hot_share:
                key = "hot"
            else:
                key = f"k{rng.randrange(args.keys)}"
            items.append((f"{args.proc}-{i}", key, rng.choice(tenants)))
            i += 1
        for v, key, tenant in items:
            history.log("put_invoke", v=v, key=key, tenant=tenant, dedup_id=None)
        try:
            ids = q.put_many([pmsq.NewMessage({"v": v}, key=k, tenant=t) for v, k, t in items])
        except pmsq.OutcomeUnknown as exc:
            for v, _, _ in items:
                history.log("put_unknown", v=v, error=str(exc))
        except pmsq.PmsqError as exc:
            for v, _, _ in items:
                history.log("put_fail", v=v, error=f"{type(exc).__name__}: {exc}")
        else:
            for (v, _, _), mid in zip(items, ids, strict=True):
                history.log("put_ok", v=v, id=mid)
        lo, hi = args.pause_ms
        time.sleep(rng.uniform(lo, hi) / 1000.0)
    broker.close()
    history.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
