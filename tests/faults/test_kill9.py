"""Consumers SIGKILLed at random points, again and again: nothing is lost, nothing
acked comes back, per-key order of completed processing holds, the file stays sound.

Consumer processes (``tests/roles/consumer.py``: get -> log ``start`` -> work
-> log ``done`` -> ack -> log ``acked``, every line fsynced) are killed by PID
while they claim, work, ack or log; killed ones are restarted at once. Their
leases (1 s) run out and the messages come back. The test process is the
producer, putting a new batch every round, so keys gain messages while
earlier ones of the key are in flight or orphaned. A last consumer drains the
queue without being killed.

What a kill can leave in the logs, and why each check holds anyway:

- The store deletes a message only on an ack, and an ack follows ``done``:
  every message gone from the store has a ``done`` delivery, and its last
  delivery (highest attempt) is one that completed, because nothing is
  delivered after its ack.
- ``acked`` may be missing (killed between the ack and the log line); when
  present its attempt is the last one ever delivered.
- The next message of a key is claimed only after the previous one was
  acked, so every delivery of message i+1 starts after the completed
  processing of message i ended.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

import pmsq
from faults._support import (
    by_id,
    integrity,
    kill9,
    read_events,
    reaping,
    start_role,
    stderr_of,
    table_rows,
    wait_ready,
)

MAX_ATTEMPTS = 100
LEASE = 1.0


class Run:
    """The shape of one run: short by default, long behind ``-m slow``."""

    def __init__(self, rounds: int, batch: int, consumers: int) -> None:
        self.rounds, self.batch, self.consumers = rounds, batch, consumers


def _start_consumer(db: Path, logs: Path, n: int, *, until: str) -> Any:
    return start_role(
        "consumer.py",
        db,
        "orders",
        logs / f"consumer-{n:03d}.events",
        "--threads",
        "2",
        "--batch",
        str(1 + n % 2),
        "--work-ms",
        "0",
        "40",  # long enough that many kills land mid-work
        "--until",
        until,
        "--fsync",
        "--seed",
        str(n),
        log=logs / f"consumer-{n:03d}.stderr",
    )


def _count(logs: Path, ev: str) -> int:
    return sum(1 for e in read_events(logs) if e["ev"] == ev)


def _wait_for_progress(logs: Path, since: int, deadline: float) -> None:
    """Until the consumers started at least a few more deliveries (or time is up)."""
    while time.monotonic() < deadline and _count(logs, "start") < since + 5:
        time.sleep(0.02)


def _run(db: Path, logs: Path, run: Run, rng: random.Random) -> list[tuple[str, Any, Any]]:
    """Produce, kill and restart; return the puts in order as (id, tenant, key)."""
    puts: list[tuple[str, Any, Any]] = []
    kills = 0
    with pmsq.connect(str(db)) as broker, reaping([]) as procs:
        q = broker.declare_queue("orders", lease=LEASE, max_attempts=MAX_ATTEMPTS)
        serial = 0
        alive: list[Any] = []
        for _ in range(run.consumers):
            alive.append(_start_consumer(db, logs, serial, until="forever"))
            serial += 1
        procs.extend(alive)
        wait_ready(alive)
        for r in range(run.rounds):
            items = []
            for _ in range(run.batch):
                tenant = rng.choice(["acme", "globex", None])
                key = None if rng.random() < 0.25 else f"property:{rng.randrange(4)}"
                items.append(pmsq.NewMessage({"round": r}, key=key, tenant=tenant))
            if rng.random() < 0.5:
                ids = q.put_many(items)
            else:
                ids = [q.put(m.payload, key=m.key, tenant=m.tenant) for m in items]
            puts.extend((mid, m.tenant, m.key) for mid, m in zip(ids, items, strict=True))

            _wait_for_progress(logs, _count(logs, "start"), time.monotonic() + 10)
            time.sleep(rng.uniform(0.0, 0.3))  # a random point in the consumers' work
            victims = rng.sample(alive, rng.randint(1, len(alive)))
            for p in victims:
                assert p.poll() is None, f"consumer {p.pid} died by itself"
                kill9(p)
                kills += 1
            restarted = []
            for p in victims:
                alive.remove(p)
                restarted.append(_start_consumer(db, logs, serial, until="forever"))
                serial += 1
            procs.extend(restarted)
            alive.extend(restarted)
            wait_ready(restarted)
        for p in alive:
            kill9(p)
            kills += 1

        drain = _start_consumer(db, logs, serial, until="drained")
        procs.append(drain)
        code = drain.wait(timeout=120)
        assert code == 0, stderr_of(logs / f"consumer-{serial:03d}.stderr")
    assert kills >= run.rounds
    return puts


def _check(db: Path, logs: Path, puts: list[tuple[str, Any, Any]]) -> None:
    events = read_events(logs)
    assert not [e for e in events if e["ev"] == "error"], "a consumer hit an error"
    starts, dones, acks = by_id(events, "start"), by_id(events, "done"), by_id(events, "acked")
    put_ids = [p[0] for p in puts]
    assert len(set(put_ids)) == len(put_ids)
    assert set(starts) <= set(put_ids), "delivered a message nobody put"

    # Nothing left in the store but dead letters, and those only for exhausted leases.
    left = table_rows(db, "SELECT id, state, attempt, error_type FROM pmsq_messages")
    dead = {row[0] for row in left if row[1] == 2}
    assert [row for row in left if row[1] != 2] == [], "messages left undelivered"
    for row in left:
        assert row[2] == MAX_ATTEMPTS, row
        assert row[3] == "pmsq.LeaseExpired", row
    killed_mid_ack = 0
    for mid in put_ids:
        if mid in dead:
            continue
        # Gone from the store, so acked: its last delivery completed...
        assert mid in dones, f"{mid} was acked but never processed"
        attempts = [s["attempt"] for s in starts[mid]]
        assert len(attempts) == len(set(attempts)), f"{mid}: one attempt leased twice"
        last = max(attempts)
        assert max(d["attempt"] for d in dones[mid]) == last, f"{mid} delivered after its ack"
        # ...and it was acked exactly once, by that last delivery.
        acked = acks.get(mid, [])
        assert len(acked) <= 1, f"{mid} acked twice: {acked}"
        if acked:
            assert acked[0]["attempt"] == last, f"{mid} delivered again after its ack"
        else:
            killed_mid_ack += 1  # killed after the ack committed, before logging it

    # Per key: every delivery of the next message starts after the completed
    # processing of the one before it ended (which also puts them in put order).
    lines: dict[tuple[Any, Any], list[str]] = defaultdict(list)
    for mid, tenant, key in puts:
        if key is not None and mid not in dead:
            lines[(tenant, key)].append(mid)
    for scope, ids in lines.items():
        for prev, nxt in itertools.pairwise(ids):
            finished = max(dones[prev], key=lambda d: d["attempt"])["t"]
            first_start = min(s["t"] for s in starts[nxt])
            assert first_start > finished, f"key {scope}: {nxt} started before {prev} finished"

    assert integrity(db) == ["ok"]
    redelivered = sum(1 for s in starts.values() if len(s) > 1)
    assert redelivered > 0, "no kill ever orphaned a message: the test tested nothing"


@pytest.mark.timeout(180)
def test_kill9_consumers(db_path: Path, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    rng = random.Random(20240521)
    puts = _run(db_path, logs, Run(rounds=10, batch=50, consumers=3), rng)
    _check(db_path, logs, puts)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("seed", range(5))
def test_kill9_consumers_long(db_path: Path, tmp_path: Path, seed: int) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    rng = random.Random(seed)
    puts = _run(db_path, logs, Run(rounds=30, batch=100, consumers=4), rng)
    _check(db_path, logs, puts)


def _start_producer(db: Path, logs: Path, n: int) -> Any:
    return start_role(
        "producer.py",
        db,
        "orders",
        logs / f"producer-{n:03d}.puts",
        "--count",
        "100000",  # more than it will get to: it is killed first
        "--prefix",
        f"p{n}",
        "--batch",
        "4",
        "--keys",
        "3",
        "--tenants",
        "acme,",
        "--seed",
        str(n),
        log=logs / f"producer-{n:03d}.stderr",
    )


@pytest.mark.timeout(180)
def test_kill9_producers(db_path: Path, tmp_path: Path) -> None:
    """Producers killed mid-``put_many``: each call stored all of its messages or none,
    every call that returned is delivered, and keys keep the order of the calls."""
    logs, marker = tmp_path / "logs", tmp_path / "all-put"
    logs.mkdir()
    rng = random.Random(99)
    with pmsq.connect(str(db_path)) as broker:
        broker.declare_queue("orders", lease=300.0)
    with reaping([]) as procs:
        consumers = [
            start_role(
                "consumer.py",
                db_path,
                "orders",
                logs / f"consumer-{i}.events",
                "--threads",
                "2",
                "--until",
                "drained",
                "--after-marker",
                marker,
                log=logs / f"consumer-{i}.stderr",
            )
            for i in range(2)
        ]
        procs.extend(consumers)
        wait_ready(consumers)
        for n in range(8):
            producer = _start_producer(db_path, logs, n)
            procs.append(producer)
            wait_ready([producer])
            time.sleep(rng.uniform(0.05, 0.4))  # a random point in its stream of puts
            kill9(producer)
        marker.touch()
        for c in consumers:
            assert c.wait(timeout=120) == 0, stderr_of(logs / "consumer-0.stderr")

    events = read_events(logs)
    assert not [e for e in events if e["ev"] == "error"]
    starts = by_id(events, "start")
    assert all(len(s) == 1 for s in starts.values()), "delivered twice without any crash"
    delivered = {s[0]["payload"]["v"]: s[0] for s in starts.values()}
    puts = read_events(logs, "*.puts")
    returned = {tuple(e["vs"]): e for e in puts if e["ev"] == "ok_many"}
    calls = sorted((e for e in puts if e["ev"] == "invoke_many"), key=lambda e: e["t"])
    unknown = 0
    for call in calls:
        got = [v in delivered for v in call["vs"]]
        if tuple(call["vs"]) in returned:
            assert all(got), f"put_many returned but lost some of {call['vs']}"
            ids = returned[tuple(call["vs"])]["ids"]
            assert [delivered[v]["id"] for v in call["vs"]] == ids
        else:
            unknown += 1  # killed inside put_many: all or nothing
            assert all(got) or not any(got), f"put_many stored part of {call['vs']}"
    assert set(delivered) <= {v for c in calls for v in c["vs"]}
    assert len(returned) > 10
    assert unknown <= 8

    # Order: within a key, each call's messages in the order of the calls.
    done = by_id(events, "done")
    seen: dict[tuple[Any, Any], list[tuple[float, float, str]]] = defaultdict(list)
    for call in calls:
        for v, key, tenant in zip(call["vs"], call["keys"], call["tenants"], strict=True):
            if v in delivered and key is not None:
                mid = delivered[v]["id"]
                seen[(tenant, key)].append((delivered[v]["t"], done[mid][0]["t"], v))
    for scope, spans in seen.items():  # calls in invoke order; one producer ran at a time
        for (_, end, v1), (begin, _, v2) in itertools.pairwise(spans):
            assert begin > end, f"key {scope}: {v2} started before {v1} finished"
    assert table_rows(db_path, "SELECT count(*) FROM pmsq_messages") == [(0,)]
    assert integrity(db_path) == ["ok"]
