"""The torture driver: role processes, a nemesis that kills and stops them, a final check.

Producers (``tests/roles/history_producer.py``) and consumers — thread
``Worker`` (``worker_consumer.py``) and anyio ``AsyncWorker``
(``aio_consumer.py``) — share one store and write histories in the
checker's vocabulary. The nemesis, in the test process, picks a random
victim every few hundred milliseconds and SIGKILLs it (a new process of the
same role takes its place) or, in the SIGSTOP variant, freezes a consumer
for longer than its leases and lets it go on (SIGCONT), so it settles
messages others hold by then: those settles must be rejected with
``LeaseLost``. Then every producer and consumer is killed, two drain
consumers (one of each driver, never killed) empty the queue, and the
checker reads every history and the store.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import attrs

import pmsq
from faults._support import integrity, kill9, stderr_of
from faults._support import start_role as _start
from pmsq.testing.checker import Anomaly, FinalState, check, read_histories

QUEUE = "orders"
MAX_ATTEMPTS = 1000  # leases run out often here; dead letters would hide nothing


@attrs.frozen
class Shape:
    """One torture run's size and faults."""

    seconds: float
    producers: int = 2
    thread_consumers: int = 2
    aio_consumers: int = 2
    lease: float = 1.0
    sigstop: bool = False
    stall_share: float = 0.0
    fail_share: float = 0.05
    work_ms: tuple[float, float] = (0.0, 30.0)
    #: The consumers' ``prefetch`` (``None``: their default, adaptive).
    prefetch: int | None = None


@attrs.define
class Outcome:
    """What a run did and what the checker found."""

    anomalies: list[Anomaly]
    counts: dict[str, int]
    integrity: list[str]


class Cluster:
    """The role processes of one run, each restartable by the nemesis."""

    def __init__(self, db: Path, logs: Path, shape: Shape, rng: random.Random) -> None:
        self.db, self.logs, self.shape, self.rng = db, logs, shape, rng
        self.live: dict[str, tuple[str, Any]] = {}
        self.every: list[Any] = []
        self.serial = 0
        self.kills = 0
        self.stops = 0

    def wait_ready(self, names: list[str]) -> None:
        for name in names:
            line = self.live[name][1].stdout.readline()
            log = self.logs / f"{name}.stderr"
            assert line == b"ready\n", f"{name} did not start: {stderr_of(log)}"

    def spawn(self, role: str, *extra: str, wait: bool = True) -> str:
        self.serial += 1
        name = f"{role[:3]}{self.serial:03d}"
        args: list[str] = [str(self.db), QUEUE, str(self.logs / f"{name}.jsonl"), "--proc", name]
        seed = str(self.rng.randrange(1 << 30))
        if role == "history_producer.py":
            args += ["--seed", seed, "--batch", "3", "--pause-ms", "0", "20"]
        else:
            lo, hi = self.shape.work_ms
            args += [
                "--seed",
                seed,
                "--concurrency",
                "4",
                "--work-ms",
                str(lo),
                str(hi),
                "--fail-share",
                str(self.shape.fail_share),
                "--stall-share",
                str(self.shape.stall_share),
                "--stall",
                str(self.shape.lease * 2),
            ]
            if self.shape.prefetch is not None:
                args += ["--prefetch", str(self.shape.prefetch)]
        proc = _start(role, *args, *extra, log=self.logs / f"{name}.stderr")
        self.every.append(proc)
        self.live[name] = (role, proc)
        if wait:
            self.wait_ready([name])
        return name

    def _assert_alive(self, name: str) -> None:
        _, proc = self.live[name]
        assert proc.poll() is None, (
            f"{name} died by itself: {stderr_of(self.logs / f'{name}.stderr')}"
        )

    def kill(self, name: str, *, respawn: bool = True) -> None:
        self._assert_alive(name)
        role, proc = self.live.pop(name)
        kill9(proc)
        self.kills += 1
        if respawn:
            self.spawn(role)

    def freeze(self, name: str, seconds: float) -> None:
        """SIGSTOP for ``seconds`` (longer than a lease), then SIGCONT."""
        self._assert_alive(name)
        _, proc = self.live[name]
        os.kill(proc.pid, signal.SIGSTOP)
        self.stops += 1
        try:
            time.sleep(seconds)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)

    def consumers(self) -> list[str]:
        return [n for n, (role, _) in self.live.items() if role != "history_producer.py"]

    def producers(self) -> list[str]:
        return [n for n, (role, _) in self.live.items() if role == "history_producer.py"]

    def reap(self) -> None:
        for proc in self.every:
            kill9(proc)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()


def final_state(db: Path) -> FinalState:
    import json

    with pmsq.connect(str(db)) as broker:
        dead = {
            dl.message.id: (dl.message.payload["v"], dl.attempts, dl.reason)
            for dl in broker.dead_letters(QUEUE).list()
        }
        rows = broker.backend._conn.execute(  # type: ignore[attr-defined]
            "SELECT id, payload FROM pmsq_messages WHERE state != 2"
        ).fetchall()
    return FinalState(waiting={r[0]: json.loads(r[1])["v"] for r in rows}, dead=dead)


def torture(db: Path, logs: Path, shape: Shape, seed: int) -> Outcome:
    """Run one torture round and check it."""
    rng = random.Random(seed)
    with pmsq.connect(str(db)) as broker:
        broker.declare_queue(
            QUEUE,
            lease=shape.lease,
            max_attempts=MAX_ATTEMPTS,
            backoff=pmsq.Backoff(base=0.02, factor=2.0, cap=0.2, jitter=True),
        )
    cluster = Cluster(db, logs, shape, rng)
    try:
        roles = (
            ["history_producer.py"] * shape.producers
            + ["worker_consumer.py"] * shape.thread_consumers
            + ["aio_consumer.py"] * shape.aio_consumers
        )
        cluster.wait_ready([cluster.spawn(role, wait=False) for role in roles])
        end = time.monotonic() + shape.seconds
        while time.monotonic() < end:
            time.sleep(rng.uniform(0.15, 0.6))
            roll = rng.random()
            if shape.sigstop and roll < 0.35:
                cluster.freeze(rng.choice(cluster.consumers()), shape.lease * rng.uniform(1.5, 3))
            elif roll < 0.8:
                cluster.kill(rng.choice(cluster.consumers()))
            else:
                cluster.kill(rng.choice(cluster.producers()))
        for name in list(cluster.live):
            cluster.kill(name, respawn=False)
        drains = [
            cluster.spawn("worker_consumer.py", "--drain", wait=False),
            cluster.spawn("aio_consumer.py", "--drain", wait=False),
        ]
        cluster.wait_ready(drains)
        for name in drains:
            _, proc = cluster.live[name]
            code = proc.wait(timeout=120)
            assert code == 0, stderr_of(logs / f"{name}.stderr")
    finally:
        cluster.reap()

    events = read_histories(sorted(logs.glob("*.jsonl")))
    ops: dict[str, int] = {}
    for e in events:
        ops[e["op"]] = ops.get(e["op"], 0) + 1
    redelivered = sum(1 for e in events if e["op"] == "delivered" and e["attempt"] > 1)
    counts = {
        **ops,
        "kills": cluster.kills,
        "stops": cluster.stops,
        "redelivered": redelivered,
    }
    found = check(events, final_state(db), max_attempts=MAX_ATTEMPTS)
    return Outcome(anomalies=found, counts=counts, integrity=integrity(db))
