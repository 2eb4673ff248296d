"""Several processes, several threads each, one file: nothing crashes, so every message
is processed exactly once, keys stay in order across processes, and no lock error
ever reaches the user.

Consumers are ``tests/roles/consumer.py`` processes (``Queue.get_many`` and
``Delivery``, four threads each); producers are ``tests/roles/producer.py``.
Both log events with ``time.monotonic()``, one clock for all processes on
Linux, so intervals from different processes can be compared.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from faults._support import (
    by_id,
    integrity,
    read_events,
    reaping,
    start_role,
    stderr_of,
    table_rows,
    wait_ready,
)

import pmsq

PROCESSES = 4
THREADS = 4
TENANTS = ["acme", "globex", None]


class Put:
    """One message as the producers saw it: id, key scope, and when its put ran."""

    def __init__(self, mid: str, scope: tuple[Any, Any], producer: str, index: int) -> None:
        self.id, self.scope, self.producer, self.index = mid, scope, producer, index
        self.invoked = self.returned = 0.0

    def before(self, other: Put) -> bool:
        """Put order: the same producer's earlier put, or one that returned before ``other``."""
        if self.producer == other.producer:
            return self.index < other.index
        return self.returned < other.invoked


def start_consumers(db: Path, logs: Path, marker: Path, procs: list[Any]) -> list[Any]:
    started = [
        start_role(
            "consumer.py",
            db,
            "orders",
            logs / f"consumer-{i}.events",
            "--threads",
            str(THREADS),
            "--batch",
            str(1 + i % 3),  # get() and get_many() of a few
            "--work-ms",
            "0",
            "3",
            "--until",
            "drained",
            "--after-marker",
            marker,
            "--seed",
            str(i),
            log=logs / f"consumer-{i}.stderr",
        )
        for i in range(PROCESSES)
    ]
    procs.extend(started)
    return started


def wait_all(procs: Sequence[Any], logs: Path, what: str) -> None:
    for p in procs:
        code = p.wait(timeout=120)
        assert code == 0, f"{what} {p.pid} exited {code}: " + "".join(
            stderr_of(f) for f in sorted(logs.glob("*.stderr"))
        )


def check_exactly_once_in_order(puts: Sequence[Put], logs: Path, db: Path) -> None:
    events = read_events(logs)
    errors = [e for e in events if e["ev"] == "error"]
    assert not errors, f"errors reached the consumers: {errors[:3]}"
    starts, dones, acks = by_id(events, "start"), by_id(events, "done"), by_id(events, "acked")
    assert not [e for e in events if e["ev"] == "lost"], "a lease was lost with nothing crashing"

    put_ids = {p.id for p in puts}
    assert len(put_ids) == len(puts), "a put returned another message's id"
    assert set(starts) - put_ids == set(), "delivered a message nobody put"
    missed = put_ids - set(acks)
    assert not missed, f"{len(missed)} messages never processed, e.g. {sorted(missed)[:3]}"
    twice = {mid: len(s) for mid, s in starts.items() if len(s) != 1}
    assert not twice, f"delivered more than once: {twice}"
    assert all(s[0]["attempt"] == 1 for s in starts.values())
    assert all(len(acks[mid]) == 1 and len(dones[mid]) == 1 for mid in put_ids)
    pids = {s[0]["pid"] for s in starts.values()}
    assert len(pids) > 1, "only one process did any work: the test did not test concurrency"

    # Per key: processing intervals never overlap, and they follow put order.
    keyed: dict[tuple[Any, Any], list[Put]] = defaultdict(list)
    for p in puts:
        if p.scope[1] is not None:
            keyed[p.scope].append(p)
    assert len(keyed) >= 8
    for scope, group in keyed.items():
        span = {p.id: (starts[p.id][0]["t"], dones[p.id][0]["t"]) for p in group}
        by_start = sorted(group, key=lambda p: span[p.id][0])
        for a, b in itertools.pairwise(by_start):
            assert span[b.id][0] > span[a.id][1], f"key {scope}: {a.id} and {b.id} overlap"
            assert not b.before(a), f"key {scope}: {b.id} was put before {a.id}, processed after"
        assert {(s[0]["key"], s[0]["tenant"]) for s in (starts[p.id] for p in group)} == {
            (scope[1], scope[0])
        }

    assert table_rows(db, "SELECT count(*) FROM pmsq_messages") == [(0,)]
    assert integrity(db) == ["ok"]


@pytest.mark.timeout(180)
def test_consumers_in_four_processes_share_one_file(db_path: Path, tmp_path: Path) -> None:
    logs, marker = tmp_path / "logs", tmp_path / "all-put"
    logs.mkdir()
    rng = random.Random(7)
    puts: list[Put] = []
    with pmsq.connect(str(db_path)) as broker, reaping([]) as procs:
        q = broker.declare_queue("orders", lease=300.0)  # nothing may come back by expiry
        consumers = start_consumers(db_path, logs, marker, procs)
        wait_ready(consumers)
        for batch in range(16):  # puts land while 16 threads in 4 processes claim
            items = []
            for _ in range(50):
                tenant = rng.choice(TENANTS)
                key = None if rng.random() < 0.2 else f"property:{rng.randrange(6)}"
                items.append(pmsq.NewMessage({"batch": batch}, key=key, tenant=tenant))
            for mid, item in zip(q.put_many(items), items, strict=True):
                puts.append(Put(mid, (item.tenant, item.key), "test", len(puts)))
        marker.touch()
        wait_all(consumers, logs, "consumer")
    check_exactly_once_in_order(puts, logs, db_path)


@pytest.mark.timeout(180)
def test_producers_and_consumers_in_many_processes(db_path: Path, tmp_path: Path) -> None:
    logs, marker = tmp_path / "logs", tmp_path / "all-put"
    logs.mkdir()
    with pmsq.connect(str(db_path)) as broker:
        broker.declare_queue("orders", lease=300.0)
    with reaping([]) as procs:
        consumers = start_consumers(db_path, logs, marker, procs)
        producers = [
            start_role(
                "producer.py",
                db_path,
                "orders",
                logs / f"producer-{i}.puts",
                "--count",
                "250",
                "--prefix",
                f"p{i}",
                "--keys",
                "5",  # few keys, shared by all producers: puts of one key interleave
                "--tenants",
                "acme,globex,",
                "--seed",
                str(i),
                log=logs / f"producer-{i}.stderr",
            )
            for i in range(3)
        ]
        procs.extend(producers)
        wait_ready(consumers)
        wait_all(producers, logs, "producer")
        marker.touch()
        wait_all(consumers, logs, "consumer")

    invoked: dict[str, dict[str, Any]] = {}
    puts: list[Put] = []
    for e in sorted(read_events(logs, "*.puts"), key=lambda e: e["t"]):
        assert e["ev"] != "error", e
        if e["ev"] == "invoke":
            invoked[e["v"]] = e
        elif e["ev"] == "ok":
            producer, index = e["v"].rsplit("-", 1)
            p = Put(e["id"], (e["tenant"], e["key"]), producer, int(index))
            p.invoked, p.returned = invoked[e["v"]]["t"], e["t"]
            puts.append(p)
    assert len(puts) == 750
    check_exactly_once_in_order(puts, logs, db_path)
    payloads = {
        s[0]["id"]: s[0]["payload"]["v"] for s in by_id(read_events(logs), "start").values()
    }
    assert sorted(payloads.values()) == sorted(f"p{i}-{n}" for i in range(3) for n in range(250))


def test_first_use_does_not_undo_another_process_declaration(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Process B reads "no such queue", then process A declares it, then B uses it:
    B's defaults must not replace A's options. The interleaving is forced by
    making B's read come back empty, as it would have a moment earlier."""
    with pmsq.connect(str(db_path)) as app, pmsq.connect(str(db_path)) as worker:
        app.declare_queue("orders", lease=1.0, max_attempts=50)
        monkeypatch.setattr(worker.backend, "queue_config", lambda name: None)
        worker.queue("orders")
        monkeypatch.undo()
        assert (worker.queue("orders").config.lease, app.queue("orders").config.max_attempts) == (
            1.0,
            50,
        )
        stored = table_rows(db_path, "SELECT config FROM pmsq_queues WHERE name = 'orders'")
        assert '"max_attempts": 50' in stored[0][0]
