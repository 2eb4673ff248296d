"""A ``pmsq.Worker`` serving queues of two stores through one routed broker, logging a
history per store.

Usage::

    routed_worker.py MAIN_DB PAYMENTS_DB LOGS --proc NAME [--seed S] [--drain]

``orders`` lives in MAIN_DB, ``payments`` in PAYMENTS_DB (route
``payments.#``). Each store is a ``LoggingBackend`` writing the checker's
events to ``LOGS/<store>-<proc>.jsonl``, so each store's history is checked
on its own. The handler sleeps 0-20 ms and fails one delivery in ten (the
queue's policy retries it). Prints ``ready``; runs until killed, or with
``--drain`` until both queues are drained, then stops gracefully.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

from _history_backend import LoggingBackend, drained

import pmsq
from pmsq.backends.routed import parse_routes, routed_class
from pmsq.testing.checker import History

QUEUES = {"orders": "main", "payments": "payments"}


class PerStoreHistory(pmsq.Middleware):
    """``process_start`` / ``process_done`` in the history of the message's store."""

    def __init__(self, histories: dict[str, History]) -> None:
        self.histories = histories

    def before_process(self, message: pmsq.Message) -> None:
        self.histories[QUEUES[message.queue]].log(
            "process_start", id=message.id, attempt=message.attempt
        )

    def after_process(
        self, message: pmsq.Message, outcome: Any, error: BaseException | None, duration_ms: float
    ) -> None:
        self.histories[QUEUES[message.queue]].log(
            "process_done", id=message.id, attempt=message.attempt
        )


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("main_db")
    p.add_argument("payments_db")
    p.add_argument("logs")
    p.add_argument("--proc", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--drain", action="store_true")
    args = p.parse_args()
    logs = Path(args.logs)
    histories = {
        s: History(logs / f"{s}-{args.proc}.jsonl", args.proc) for s in ("main", "payments")
    }
    routes = parse_routes(args.main_db, {"payments.#": args.payments_db})
    stores = [
        LoggingBackend(args.main_db, histories["main"]),
        LoggingBackend(args.payments_db, histories["payments"]),
    ]
    broker = pmsq.Broker(routed_class(stores)(routes, stores, interval=0.05), poll_interval=0.05)
    rng = random.Random(args.seed)

    def handle(message: pmsq.Message) -> None:
        time.sleep(rng.uniform(0.0, 0.02))
        if rng.random() < 0.1:
            raise RuntimeError("injected handler failure")

    for queue in QUEUES:
        broker.handler(queue)(handle)
    worker = pmsq.Worker(broker, concurrency=6, middleware=[PerStoreHistory(histories)])
    worker.start()
    print("ready", flush=True)
    while not (args.drain and all(drained(broker, q) for q in QUEUES)):
        time.sleep(0.1)
    worker.stop(timeout=30)
    broker.close()
    for h in histories.values():
        h.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
