"""A consumer process for the fault tests: ``Queue.get_many`` + ``Delivery``, in threads.

Usage::

    consumer.py DB QUEUE EVENTS [--threads N] [--batch N] [--work-ms LO HI]
                [--until forever|drained] [--after-marker PATH] [--fsync] [--seed S]

Each delivery appends JSON lines to EVENTS: ``start`` (after the claim),
``done`` (processing finished, before the ack), then ``acked`` (the ack
returned) or ``lost`` (the ack raised ``LeaseLost``). Times are
``time.monotonic()``, which is one clock for every process on Linux, so logs
of different processes can be compared. With ``--fsync`` each line is
fsynced before the next step, so a SIGKILL leaves a log that tells exactly
which steps happened.

Any other exception (a ``StorageError`` such as "database is locked"
included) is logged as an ``error`` event and the process exits with status 3.
``--until drained`` exits 0 once the queue has nothing ready, delayed or in
flight (and, with ``--after-marker``, once that file exists).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
import traceback
from typing import Any

import pmsq


class EventLog:
    def __init__(self, path: str, fsync: bool) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._fsync = fsync
        self._lock = threading.Lock()

    def write(self, ev: str, **fields: Any) -> None:
        fields.update(ev=ev, pid=os.getpid(), t=time.monotonic())
        line = (json.dumps(fields, sort_keys=True) + "\n").encode()
        with self._lock:
            os.write(self._fd, line)  # one write(): a SIGKILL cannot tear it in half
            if self._fsync:
                os.fsync(self._fd)


def drained(queue: pmsq.Queue, marker: str | None) -> bool:
    if marker is not None and not os.path.exists(marker):
        return False
    s = queue.stats()
    return bool(s.ready == 0 and s.delayed == 0 and s.in_flight == 0)


def consume(args: argparse.Namespace, broker: pmsq.Broker, log: EventLog, seed: int) -> None:
    rng = random.Random(seed)
    queue = broker.queue(args.queue)
    lo, hi = args.work_ms
    while True:
        batch = queue.get_many(args.batch, timeout=0.2)
        if not batch:
            if args.until == "drained" and drained(queue, args.after_marker):
                return
            continue
        for d in batch:
            m = d.message
            info = {"id": m.id, "attempt": m.attempt, "key": m.key, "tenant": m.tenant}
            log.write("start", **info, payload=m.payload)
            time.sleep(rng.uniform(lo, hi) / 1000.0)
            log.write("done", **info)
            try:
                d.ack()
            except pmsq.LeaseLost:
                log.write("lost", **info)
            else:
                log.write("acked", **info)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("db")
    p.add_argument("queue")
    p.add_argument("events")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--work-ms", type=float, nargs=2, default=(0.0, 5.0))
    p.add_argument("--until", choices=("forever", "drained"), default="forever")
    p.add_argument("--after-marker", default=None)
    p.add_argument("--fsync", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    log = EventLog(args.events, args.fsync)
    failed = threading.Event()
    broker = pmsq.connect(args.db)

    def run(i: int) -> None:
        try:
            consume(args, broker, log, args.seed * 1000 + i)
        except BaseException as exc:
            log.write(
                "error",
                type=f"{type(exc).__module__}.{type(exc).__qualname__}",
                message=str(exc),
                tb=traceback.format_exc(),
            )
            failed.set()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(args.threads)]
    for t in threads:
        t.start()
    log.write("ready")
    print("ready", flush=True)
    for t in threads:
        while t.is_alive():
            t.join(0.1)
            if failed.is_set():
                os._exit(3)  # other threads may be blocked; the log says what went wrong
    broker.close()
    return 3 if failed.is_set() else 0


if __name__ == "__main__":
    sys.exit(main())
