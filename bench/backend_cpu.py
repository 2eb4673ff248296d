"""CPU per message in the SQLite backend alone: ``put_many(100)``, then claim 8 + settle 8 acks.

Usage: ``python bench/backend_cpu.py [--keyed]``. No worker and no fsync
(``durability="normal"``): ``time.process_time`` per message of the store's
own Python and SQL, the figure docs/performance.md compares across changes
(run the old and the new code interleaved; one run varies by 5-10 %).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pmsq
from pmsq.backends.types import Settlement

N = 20_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--keyed", action="store_true", help="500 keys instead of none")
    args = ap.parse_args()
    with (
        tempfile.TemporaryDirectory() as d,
        pmsq.connect(str(Path(d) / "q.db"), durability="normal") as b,
    ):
        q = b.declare_queue("bench")
        start = time.process_time()
        for s in range(0, N, 100):
            q.put_many(
                [
                    pmsq.NewMessage({"i": i}, key=f"k{i % 500}" if args.keyed else None)
                    for i in range(s, s + 100)
                ]
            )
        put_us = (time.process_time() - start) / N * 1e6
        backend, now, n = b.backend, time.time(), 0
        start = time.process_time()
        while got := backend.claim("bench", 8, now=now, consumer="bench"):
            backend.settle(
                [Settlement(receipt=c.receipt, action="ack", duration_ms=0.1) for c in got],
                now=now,
            )
            n += len(got)
        claim_us = (time.process_time() - start) / n * 1e6
    print(f"put_many(100): {put_us:.1f} us/msg; claim 8 + settle 8 acks: {claim_us:.1f} us/msg")


if __name__ == "__main__":
    main()
