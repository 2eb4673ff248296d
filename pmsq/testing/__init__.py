"""Testing tools for pmsq users and backend authors.

- :class:`ManualClock`: a clock that moves only when told, for tests of
  leases, delays, dedup windows and backoff without sleeping.
- :class:`QueueModel`: a pure-Python model of the queue semantics.
- :class:`BrokerConformance`: the pytest base class every backend's tests
  subclass (one test per guarantee, plus the stateful test).
- :func:`make_state_machine`: the hypothesis state machine comparing a
  backend with :class:`QueueModel`, for use outside ``BrokerConformance``.

``BrokerConformance`` and the state machine need pytest and hypothesis (the
``test`` extra); they are imported on first use, so ``ManualClock`` and
``QueueModel`` work without them.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if "pytest" in sys.modules:
    # Plain asserts in the suite's modules get pytest's detailed failure messages.
    sys.modules["pytest"].register_assert_rewrite(
        "pmsq.testing.conformance",
        "pmsq.testing.stateful",
        "pmsq.testing._stateful_setup",
        "pmsq.testing._stateful_control",
        "pmsq.testing._delivery_tests",
        "pmsq.testing._order_tests",
        "pmsq.testing._put_tests",
        "pmsq.testing._operator_tests",
        "pmsq.testing._schedule_tests",
        "pmsq.testing._control_tests",
        "pmsq.testing._pause_tests",
        "pmsq.testing._family_tests",
        "pmsq.testing._transfer_tests",
        "pmsq.testing._suite",
    )

from pmsq.clock import ManualClock
from pmsq.testing.model import ModelMessage, ModelPut, QueueModel

if TYPE_CHECKING:
    from pmsq.testing.conformance import BrokerConformance
    from pmsq.testing.stateful import BrokerStateMachine, ScratchStore, make_state_machine

__all__ = [
    "BrokerConformance",
    "BrokerStateMachine",
    "ManualClock",
    "ModelMessage",
    "ModelPut",
    "QueueModel",
    "ScratchStore",
    "make_state_machine",
]

_LAZY = {
    "BrokerConformance": "pmsq.testing.conformance",
    "BrokerStateMachine": "pmsq.testing.stateful",
    "ScratchStore": "pmsq.testing.stateful",
    "make_state_machine": "pmsq.testing.stateful",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pmsq.testing' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
