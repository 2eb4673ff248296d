"""Measure how late a busy Worker fires an ``every=1`` schedule (run by hand, not a test).

    python tests/schedules/lag_probe.py [sleep|spin] [seconds]

Worker(8) drains a backlog of slow handlers (``sleep``: 0.2 s waiting on I/O;
``spin``: 0.2 s of pure-Python CPU, fighting the timer thread for the GIL)
while an ``every=1`` schedule fires; prints the firing lag of each slot
(``enqueued_at`` minus the slot) as median, p95 and max.
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import tempfile
import time

import pmsq


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "sleep"
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 12.0
    with tempfile.TemporaryDirectory() as tmp:
        broker = pmsq.connect(f"{tmp}/pms.db")
        broker.declare_queue("slow")
        broker.declare_queue("ticks")

        @broker.handler("slow")
        def slow(msg: pmsq.Message) -> None:
            if mode == "spin":
                end = time.perf_counter() + 0.2
                while time.perf_counter() < end:
                    pass
            else:
                time.sleep(0.2)

        broker.queue("slow").put_many(list(range(int(seconds * 8 / 0.2) + 80)))
        broker.schedule("tick", queue="ticks", every=1.0, catch_up="all")
        # No handler for "ticks": its messages stay for us to read their lag.
        with pmsq.Worker(broker, concurrency=8):
            time.sleep(seconds)
            broker.unschedule("tick")
        seen = []
        for d in broker.queue("ticks").get_many(10_000, timeout=0):
            slot = dt.datetime.fromisoformat(d.message.headers["pmsq.schedule"]["slot"])
            seen.append((d.message.enqueued_at - slot).total_seconds())
        lags = sorted(seen)
        print(
            f"{mode}: {len(lags)} slots, lag median {statistics.median(lags) * 1000:.1f} ms, "
            f"p95 {lags[int(len(lags) * 0.95) - 1] * 1000:.1f} ms, max {lags[-1] * 1000:.1f} ms"
        )
        broker.close()


if __name__ == "__main__":
    main()
