"""A PMS-like app for the browser tests: puts work and runs a worker until SIGTERM.

``email`` gets ``N`` messages of two tenants at start, every ``FAIL``-th of
which fails (and, with one attempt, is dead-lettered); ``ticks`` gets a new
message every 50 ms for as long as the process runs, so the store is being
written while the dashboard is read. Before that, :func:`backfill` plays the
last hour of a ``calendar`` queue on a manual clock, so the charts have an
hour of history to draw.

Usage: python -m tests.web._filler DB N FAIL
"""

from __future__ import annotations

import math
import sys
import threading
import time

import pmsq
from pmsq.clock import ManualClock


class TemplateError(Exception):
    """A guest e-mail template that does not render."""


def backfill(db: str) -> None:
    """An hour of ``calendar`` work, minute by minute: a daily wave of load and a bad patch."""
    clock = ManualClock(time.time() - 3600)
    with pmsq.connect(db, clock=clock, durability="normal") as broker:
        broker.declare_queue("calendar", max_attempts=3)
        q = broker.queue("calendar")
        for minute in range(60):
            n = 8 + int(6 * math.sin(minute / 9))
            q.put_many([pmsq.NewMessage({"m": minute}, tenant=("acme", "globex")[i % 2])
                        for i in range(n)])  # fmt: skip
            for i in range(n):
                try:
                    with q.get(timeout=0) as d:
                        if 35 <= minute < 42 and i % 3 == 0:
                            raise ConnectionError("channel manager timed out")
                        d.extend(30.0)
                except pmsq.Empty:
                    break
                except ConnectionError:
                    pass
            broker.backend.stats(now=clock.time())  # writes the minute's counters
            clock.advance(60)
        # Calendar has no worker in this app: these wait, and grow late.
        q.put_many([{"late": i} for i in range(5)])


def main() -> None:
    db, n, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    backfill(db)
    broker = pmsq.connect(db, durability="normal")
    broker.declare_queue("email", max_attempts=1)
    broker.declare_queue("ticks")
    broker.schedule("nightly-rates", queue="ticks", cron="0 2 * * *", tz="Europe/Lisbon")
    broker.schedule("ical-poll", queue="ticks", every=900.0, tenant="acme")

    @broker.handler("email")
    def send(msg: pmsq.Message) -> None:
        if msg.payload["fail"]:
            raise TemplateError(f"template 'checkin-{msg.payload['n']}' has no field <guest_name>")

    @broker.handler("ticks")
    def tick(msg: pmsq.Message) -> None:
        pass

    broker.queue("email").put_many(
        [
            pmsq.NewMessage(
                {"n": i, "fail": i % every == 0},
                tenant="acme" if i % 3 else "globex",
                key=f"booking:{i}",
            )
            for i in range(n)
        ]
    )
    stop = threading.Event()

    def fill() -> None:
        ticks = broker.queue("ticks")
        i = 0
        while not stop.wait(0.05):
            ticks.put({"tick": i}, tenant="acme" if i % 2 else "globex")
            i += 1

    filler = threading.Thread(target=fill, daemon=True)
    filler.start()
    print("filling", flush=True)
    try:
        pmsq.Worker(broker, concurrency=2).run()  # until SIGTERM
    finally:
        stop.set()
        filler.join()
        broker.close()


if __name__ == "__main__":
    main()
