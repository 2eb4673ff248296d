"""kill -9 of workers serving queues of two stores (one routed broker), then the history
checker on each store's history: nothing lost, no duplicate ack, per-key order, leases.

Worker processes (``tests/roles/routed_worker.py``) serve ``orders`` (main.db)
and ``payments`` (payments.db) through one routed broker, logging each store's
events to a history of its own. The test process produces to both queues and
SIGKILLs workers at random points, restarting them; a last worker drains both
queues. Each store's history is then checked by ``pmsq.testing.checker``.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

import pmsq
from faults._support import integrity, kill9, reaping, start_role, stderr_of, wait_ready
from pmsq.testing.checker import FinalState, History, check, read_histories

MAX_ATTEMPTS = 50
STORES = {"main": "orders", "payments": "payments"}


def _final(db: Path, queue: str) -> FinalState:
    with pmsq.connect(str(db)) as broker:
        dead = {
            dl.message.id: (dl.message.payload["v"], dl.attempts, dl.reason)
            for dl in broker.dead_letters(queue).list()
        }
        waiting = {m.id: m.payload["v"] for m, _ in broker.queue(queue).peek(100_000)}
    return FinalState(waiting=waiting, dead=dead)


def _spawn(dbs: dict[str, Path], logs: Path, n: int, *extra: str) -> Any:
    return start_role(
        "routed_worker.py",
        dbs["main"],
        dbs["payments"],
        logs,
        "--proc",
        f"w{n}",
        "--seed",
        str(n),
        *extra,
        log=logs / f"w{n}.stderr",
    )


@pytest.mark.timeout(240)
def test_kill9_of_a_worker_serving_two_stores_leaves_each_history_valid(tmp_path: Path) -> None:
    dbs = {"main": tmp_path / "main.db", "payments": tmp_path / "payments.db"}
    logs = tmp_path / "logs"
    logs.mkdir()
    rng = random.Random(2126)
    producers = {s: History(logs / f"{s}-producer.jsonl", "producer") for s in STORES}
    v = 0
    with (
        pmsq.connect(str(dbs["main"]), routes={"payments.#": str(dbs["payments"])}) as broker,
        reaping([]) as procs,
    ):
        for queue in STORES.values():
            broker.declare_queue(
                queue,
                lease=1.0,
                max_attempts=MAX_ATTEMPTS,
                backoff=pmsq.Backoff(base=0.02, factor=2.0, cap=0.2),
            )
        serial = 0
        alive = []
        for _ in range(2):
            alive.append(_spawn(dbs, logs, serial))
            serial += 1
        procs.extend(alive)
        wait_ready(alive)
        for _round in range(8):
            for _ in range(30):
                store = rng.choice(list(STORES))
                key = f"property:{rng.randrange(4)}" if rng.random() < 0.8 else None
                tenant = rng.choice(["acme", None])
                producers[store].log("put_invoke", v=v, key=key, tenant=tenant, dedup_id=None)
                mid = broker.queue(STORES[store]).put({"v": v}, key=key, tenant=tenant)
                producers[store].log("put_ok", v=v, id=mid)
                v += 1
            time.sleep(rng.uniform(0.05, 0.4))  # a random point in the workers' work
            victim = rng.choice(alive)
            assert victim.poll() is None, stderr_of(logs / "w0.stderr")
            kill9(victim)
            alive.remove(victim)
            fresh = _spawn(dbs, logs, serial)
            serial += 1
            procs.append(fresh)
            alive.append(fresh)
            wait_ready([fresh])
        for p in alive:
            kill9(p)
        drain = _spawn(dbs, logs, serial, "--drain")
        procs.append(drain)
        wait_ready([drain])
        assert drain.wait(timeout=120) == 0, stderr_of(logs / f"w{serial}.stderr")
    for h in producers.values():
        h.close()

    for store, queue in STORES.items():
        events = read_histories(sorted(logs.glob(f"{store}-*.jsonl")))
        puts = [e for e in events if e["op"] == "put_ok"]
        assert len(puts) > 50, f"{store}: too few messages to mean anything"
        redelivered = [e for e in events if e["op"] == "delivered" and e["attempt"] > 1]
        assert redelivered, f"{store}: no kill or failure ever caused a redelivery"
        # No message of the other store leaked into this store's history.
        assert {e["id"] for e in events if e["op"] == "delivered"} <= {e["id"] for e in puts}
        found = check(events, _final(dbs[store], queue), max_attempts=MAX_ATTEMPTS)
        assert found == [], f"{store}: " + json.dumps([str(a) for a in found[:10]])
        assert integrity(dbs[store]) == ["ok"]
