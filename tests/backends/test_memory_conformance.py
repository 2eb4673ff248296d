"""The example in-memory backend (examples/memory_backend.py) passes the conformance suite.

It is the proof offered in docs/writing-a-backend.md that a plugin is small:
the required verbs, two cheap families, and the suite for what it declares.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, ClassVar

import pmsq
from pmsq.backends import Backend, History, Inspect, Once, Settings, TransactionalPut, Transfer
from pmsq.testing import BrokerConformance, ManualClock

_PATH = Path(__file__).resolve().parents[2] / "examples" / "memory_backend.py"


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("memory_backend", _PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["memory_backend"] = module  # attrs resolves its annotations through it
    spec.loader.exec_module(module)
    return module


MemoryBackend: type[Backend] = _load().MemoryBackend


class TestMemoryBackend(BrokerConformance):
    missing_capabilities: ClassVar[frozenset[str]] = frozenset(
        {"dedup", "coalesce", "rate_limits", "tenant_fairness", "exact_stats"}
    )
    reopens = False

    def make_broker(self, clock: ManualClock) -> pmsq.Broker:
        return pmsq.Broker(MemoryBackend(), clock=clock)


def test_the_example_stays_small_and_declares_its_families() -> None:
    assert len(_PATH.read_text().splitlines()) < 300
    caps = MemoryBackend.capabilities
    assert caps.families == {"inspect", "settings"}
    assert issubclass(MemoryBackend, Inspect)
    assert issubclass(MemoryBackend, Settings)
    for family in (TransactionalPut, Once, History, Transfer):
        assert not issubclass(MemoryBackend, family)
