"""History logging for the torture roles: the checker's events, written where they happen.

``LoggingBackend`` is the SQLite backend unchanged except that it logs, at
the storage boundary, ``delivered`` after each claim (with the lease expiry
the store granted), ``settle_invoke`` just before each ack, retry, dead
letter or release, and ``ack_ok`` / ``ack_rejected`` after an ack (all
settlements, single or batched, releases included, pass through ``settle``).
``HistoryMiddleware`` logs ``process_start`` / ``process_done`` around the
handler. Both write through one :class:`pmsq.testing.checker.History`
(fsynced per event, so a SIGKILL loses nothing already logged).

Imported by the role scripts in this directory (``sys.path[0]`` is it).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import Any

import pmsq
from pmsq.backends.base import Claimed, Receipt, Settlement
from pmsq.backends.sqlite import SQLiteBackend
from pmsq.testing.checker import History


class LoggingBackend(SQLiteBackend):
    def __init__(self, url: str, history: History, **options: Any) -> None:
        super().__init__(url, **options)
        self.history = history
        self._attempts: dict[str, int] = {}
        self._mutex = threading.Lock()

    def _attempt(self, r: Receipt) -> int | None:
        with self._mutex:
            return self._attempts.get(r.token)

    def claim(
        self, queue: str, n: int, *, now: float, tenant: str | None = None, **kw: Any
    ) -> list[Claimed]:
        got = super().claim(queue, n, now=now, tenant=tenant, **kw)
        for c in got:
            env = c.envelope
            with self._mutex:
                # By lease token: one process may hold two deliveries of a message
                # (its late settle of the first, a new claim of it).
                self._attempts[c.receipt.token] = c.attempt
            self.history.log(
                "delivered",
                id=env.id,
                v=json.loads(env.data)["v"],
                attempt=c.attempt,
                lease_expires=c.lease_expires,
                scope=tenant,
                tenant=env.tenant,
                key=env.key,
            )
        return got

    def settle(self, settlements: Sequence[Settlement], *, now: float) -> list[bool]:
        # Every ack, retry, dead letter and release goes through here:
        # Delivery.settle with one settlement, a Worker's dispatcher with a batch.
        for s in settlements:
            self.history.log(
                "settle_invoke",
                id=s.receipt.message_id,
                attempt=self._attempt(s.receipt),
                how=s.action,
            )
        out = super().settle(settlements, now=now)
        for s, ok in zip(settlements, out, strict=True):
            r = s.receipt
            if s.action == "ack":
                self.history.log(
                    "ack_ok" if ok else "ack_rejected", id=r.message_id, attempt=self._attempt(r)
                )
            elif s.action == "retry" and not ok:
                self.history.log("retry_rejected", id=r.message_id, attempt=self._attempt(r))
        return out


class HistoryMiddleware(pmsq.Middleware):
    def __init__(self, history: History) -> None:
        self.history = history

    def before_process(self, message: pmsq.Message) -> None:
        self.history.log("process_start", id=message.id, attempt=message.attempt)

    def after_process(
        self, message: pmsq.Message, outcome: Any, error: BaseException | None, duration_ms: float
    ) -> None:
        self.history.log("process_done", id=message.id, attempt=message.attempt)


def drained(broker: pmsq.Broker, queue: str, until_file: str | None = None) -> bool:
    if until_file is not None and not os.path.exists(until_file):
        return False
    s = broker.queue(queue).stats()
    return bool(s.ready == 0 and s.delayed == 0 and s.in_flight == 0)


def parse_consumer_args(description: str) -> Any:
    import argparse

    p = argparse.ArgumentParser(description=description)
    p.add_argument("db")
    p.add_argument("queue")
    p.add_argument("history")
    p.add_argument("--proc", required=True)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument(
        "--prefetch", type=int, default=None, help="messages claimed ahead (default: adaptive)"
    )
    p.add_argument("--work-ms", type=float, nargs=2, default=(0.0, 20.0))
    p.add_argument("--fail-share", type=float, default=0.0)
    p.add_argument("--stall-share", type=float, default=0.0)
    p.add_argument("--stall", type=float, default=0.3, help="seconds a stalling handler blocks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--drain", action="store_true", help="exit 0 once the queue is drained")
    p.add_argument("--until-file", default=None, help="with --drain: only once this file exists")
    return p.parse_args()


def open_broker(args: Any) -> tuple[pmsq.Broker, History]:
    history = History(args.history, args.proc)
    return pmsq.Broker(LoggingBackend(args.db, history)), history
