"""Fixtures of the worker tests: the driver under test and a real-clock broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pmsq
from worker._support import DRIVERS, Running


@pytest.fixture(params=DRIVERS)
def kind(request: pytest.FixtureRequest) -> str:
    """The driver under test: ``thread``, ``asyncio`` (AsyncWorker) or ``trio`` (AsyncWorker)."""
    return str(request.param)


@pytest.fixture
def start(kind: str) -> Iterator[Callable[..., Running]]:
    """``start(broker, **options)`` runs a worker of the current kind; stopped at teardown."""
    running: list[Running] = []

    def go(broker: pmsq.Broker, **options: Any) -> Running:
        r = Running(kind, broker, **options)
        running.append(r)
        return r

    yield go
    for r in running:
        r.stop()


@pytest.fixture
def live(db_path: Path) -> Iterator[pmsq.Broker]:
    """A broker on the real clock (leases, heartbeats and timeouts in real time)."""
    with pmsq.connect(str(db_path), durability="normal", poll_interval=0.02) as b:
        yield b
