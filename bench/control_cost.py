"""What pauses cost a claim: the pause lookup alone, and get + ack with and without pauses.

Usage: ``python bench/control_cost.py [--n 3000] [--repeat 5]``. In one
process, on a durability "memory" store (no fsync, so the CPU cost shows):

- the statement every claim adds (``pauses.load_holds``) with no pause of
  the queue, in microseconds per call;
- get + ack one at a time, in microseconds per message: with no pause
  stored, with 50 other queues paused, and with one key of the queue paused
  (the claim then filters heads).

Prints the best of ``--repeat`` runs of each. Run it before and after a
change to the claim path (it needs a pmsq with message control).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable

import pmsq
from pmsq.backends.sqlite import pauses


def best(fn: Callable[[], None], calls: int, repeat: int) -> float:
    """Microseconds per call of ``fn``, best of ``repeat`` rounds of ``calls``."""
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        out.append((time.perf_counter() - t) / calls * 1e6)
    return min(out)


def get_ack(broker: pmsq.Broker, n: int, repeat: int) -> float:
    """Microseconds per message of get + ack, one at a time, over ``n`` waiting messages."""
    q = broker.queue("q")
    rounds = []
    for _ in range(repeat):
        q.put_many([{"i": i} for i in range(n)])
        t = time.perf_counter()
        while batch := q.get_many(1, timeout=0):
            batch[0].ack()
        rounds.append((time.perf_counter() - t) / n * 1e6)
    return min(rounds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        pmsq.connect(os.path.join(tmp, "c.db"), durability="memory") as b,
    ):
        conn = b.backend._conn  # type: ignore[attr-defined]
        lookup = best(lambda: pauses.load_holds(conn, "q", 0.0), 20_000, args.repeat)
        plain = get_ack(b, args.n, args.repeat)
        for i in range(50):
            b.pause(f"other-{i}")
        others = get_ack(b, args.n, args.repeat)
        b.pause("q", key="some-other-key")
        keyed = get_ack(b, args.n, args.repeat)
    print(f"pause lookup per claim (none stored):  {lookup:8.2f} us")
    print(f"get + ack, no pause:                   {plain:8.1f} us/msg")
    print(f"get + ack, 50 other queues paused:     {others:8.1f} us/msg")
    print(f"get + ack, a key of the queue paused:  {keyed:8.1f} us/msg")


if __name__ == "__main__":
    main()
