"""A producer or consumer process for test_reliability.py, logging a checker history.

Usage: ``python reliability_worker.py produce|consume URL HISTORY NAME [COUNT]``.
Both roles ride out a broker restart: a call that fails with
``BackendUnavailable`` is tried again after a pause.
"""

from __future__ import annotations

import sys
import time

import pmsq
from pmsq.errors import BackendUnavailable, OutcomeUnknown, StorageError
from pmsq.testing.checker import History

QUEUE = "reliable"


def _connect(url: str) -> pmsq.Broker:
    while True:
        try:
            return pmsq.connect(url)
        except BackendUnavailable:
            time.sleep(0.2)


def produce(url: str, history: History, name: str, count: int) -> None:
    broker = _connect(url)
    q = broker.queue(QUEUE)
    for i in range(count):
        key = f"k{i % 5}" if i % 3 == 0 else None
        tries = 0
        while True:
            v = f"{name}-{i}-{tries}"
            tries += 1
            history.log("put_invoke", v=v, key=key, tenant=None, dedup_id=None)
            try:
                mid = q.put({"v": v}, key=key)
            except BackendUnavailable:
                history.log("put_fail", v=v)  # nothing was sent
            except (OutcomeUnknown, StorageError):
                history.log("put_unknown", v=v)
            else:
                history.log("put_ok", v=v, id=mid)
                break
            time.sleep(0.2)
    broker.close()


def consume(url: str, history: History, name: str) -> None:
    broker = _connect(url)
    q = broker.queue(QUEUE)
    while True:
        try:
            d = q.get(timeout=1.0)
        except pmsq.Empty:
            continue
        except (BackendUnavailable, StorageError):
            time.sleep(0.2)
            continue
        m = d.message
        history.log(
            "delivered",
            id=m.id,
            v=m.payload["v"],
            attempt=m.attempt,
            lease_expires=d.lease_expires,
            key=m.key,
            tenant=m.tenant,
        )
        history.log("process_start", id=m.id, attempt=m.attempt)
        history.log("process_done", id=m.id, attempt=m.attempt)
        how = "retry" if hash(m.id) % 7 == 0 and m.attempt == 1 else "ack"
        history.log("settle_invoke", id=m.id, attempt=m.attempt, how=how)
        try:
            if how == "retry":
                d.retry(delay=0)
            else:
                d.ack()
                history.log("ack_ok", id=m.id, attempt=m.attempt)
        except pmsq.LeaseLost:
            history.log("ack_rejected", id=m.id, attempt=m.attempt)
        except (BackendUnavailable, StorageError):
            history.log("ack_rejected", id=m.id, attempt=m.attempt)
            time.sleep(0.2)


def main() -> None:
    role, url, path, name = sys.argv[1:5]
    history = History(path, name)
    if role == "produce":
        produce(url, history, name, int(sys.argv[5]))
    else:
        consume(url, history, name)


if __name__ == "__main__":
    main()
