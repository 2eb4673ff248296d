"""Workers fire schedules with no scheduler process: thread and async drivers.

Real time (a ``SystemClock``) with short periods; assertions are about
counts and slots, never about how long anything took.
"""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
import pytest

import pmsq


def _slots(messages: list[pmsq.Message]) -> list[str]:
    return [m.headers["pmsq.schedule"]["slot"] for m in messages]


def test_a_busy_thread_worker_fires_every_slot_once(tmp_path: Path) -> None:
    broker = pmsq.connect(str(tmp_path / "pms.db"), durability="normal")
    broker.declare_queue("slow")
    broker.declare_queue("ticks")
    seen: list[pmsq.Message] = []
    release = threading.Event()

    @broker.handler("slow")
    def slow(msg: pmsq.Message) -> None:
        release.wait(60)  # every handler slot stays taken until the ticks were made

    @broker.handler("ticks")
    def tick(msg: pmsq.Message) -> None:
        seen.append(msg)

    broker.queue("slow").put_many(list(range(40)))
    broker.schedule("tick", queue="ticks", every=0.2, catch_up="all")
    with pmsq.Worker(broker, concurrency=4):
        made = 0
        for _ in range(600):  # bounded: 60 s
            made = broker.stats("ticks").depth
            if made >= 5:
                break
            release.wait(0.1)
        assert made >= 5, "the schedule fired although every handler slot was busy"
        broker.unschedule("tick")
        release.set()
        for _ in range(600):
            if len(seen) >= made and broker.stats("ticks").depth == 0:
                break
            threading.Event().wait(0.1)
    slots = _slots(seen)
    assert len(slots) == len(set(slots)) >= 5, "one message per slot"
    broker.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
def test_the_async_worker_fires_schedules(tmp_path: Path, anyio_backend: str) -> None:
    broker = pmsq.connect(str(tmp_path / "pms.db"), durability="normal")
    broker.declare_queue("ticks")
    seen: list[pmsq.Message] = []
    worker = pmsq.AsyncWorker(broker, concurrency=4)

    @broker.handler("ticks")
    async def tick(msg: pmsq.Message) -> None:
        seen.append(msg)
        if len(seen) >= 3:
            worker.stop()

    broker.schedule("tick", queue="ticks", every=0.2)

    async def main() -> None:
        with anyio.fail_after(60):
            await worker.run()

    anyio.run(main, backend=anyio_backend)
    slots = _slots(seen)
    assert len(slots) == len(set(slots)) >= 3
    broker.close()
