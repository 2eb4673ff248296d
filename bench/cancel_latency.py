"""How soon a worker stops an async handler whose message was cancelled (issue 17).

A thread ``Worker`` runs an ``async def`` handler that hangs; the script
cancels its message and times how long until the handler was cancelled, and
(with ``--next``) until the key's next message started. Without a next
message the worker learns it at the next heartbeat (every third of the
lease); with one, the store lets the key go at the cancel, the worker claims
the next message, sees it still runs the key's previous one, hands the new
one back and checks the running one at once.

    python bench/cancel_latency.py                 # lease 3 s, 10 cancels
    python bench/cancel_latency.py --next --rounds 20
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import anyio

import pmsq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lease", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--next", action="store_true", help="queue a next message of the key")
    args = parser.parse_args()
    started: dict[int, float] = {}
    ended: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        broker = pmsq.connect(str(Path(tmp) / "lat.db"), durability="normal", poll_interval=0.02)
        q = broker.declare_queue("ota", lease=args.lease)

        @broker.handler("ota", concurrency=2)
        async def push(msg: pmsq.Message) -> None:
            n = msg.payload["n"]
            started[n] = time.monotonic()
            try:
                if msg.payload["hang"]:
                    await anyio.sleep(3600)
            finally:
                ended[n] = time.monotonic()

        to_end: list[float] = []
        to_next: list[float] = []
        with pmsq.Worker(broker, concurrency=4):
            for i in range(args.rounds):
                first, second = 2 * i, 2 * i + 1
                mid = q.put({"n": first, "hang": True}, key=f"k{i}")
                if args.next:
                    q.put({"n": second, "hang": False}, key=f"k{i}")
                while first not in started:
                    time.sleep(0.005)
                # Land the cancel at different points of the heartbeat cycle.
                time.sleep(args.lease / 3 * (i % 5) / 5)
                t0 = time.monotonic()
                q.cancel(mid)
                while first not in ended or (args.next and second not in started):
                    time.sleep(0.002)
                to_end.append(ended[first] - t0)
                if args.next:
                    to_next.append(started[second] - t0)
                    assert started[second] >= ended[first], "the key ran twice at once"
        broker.close()
    print(
        f"lease {args.lease:g}s (a beat every {args.lease / 3:.2f}s), {args.rounds} cancels:"
        f" handler cancelled after median {statistics.median(to_end):.3f}s,"
        f" max {max(to_end):.3f}s"
    )
    if to_next:
        print(
            f"key's next message started after median {statistics.median(to_next):.3f}s,"
            f" max {max(to_next):.3f}s, never before the cancelled handler ended"
        )


if __name__ == "__main__":
    main()
