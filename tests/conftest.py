"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import pmsq
from pmsq.clock import ManualClock


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "pms.db"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def broker(db_path: Path, clock: ManualClock) -> Iterator[pmsq.Broker]:
    with pmsq.connect(str(db_path), clock=clock, durability="normal") as b:
        yield b
