"""What the stateful test works with: its queues, tenants, keys and step strategies.

Small, fixed sets on purpose: collisions (same key, same dedup id, same
tenant) are where queues go wrong, and few names make them frequent.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from hypothesis import strategies as st

from pmsq.broker import Broker
from pmsq.clock import ManualClock
from pmsq.config import Backoff

__all__ = [
    "BACKOFF",
    "CONSUMER_REASONS",
    "DEDUP_IDS",
    "FALLBACK",
    "KEYS",
    "LEASE",
    "PUT_OPTIONS",
    "QUEUES",
    "QUEUE_OPTIONS",
    "SETTLE_ACTIONS",
    "TENANTS",
    "TENANT_SCOPES",
    "ScratchStore",
]

QUEUES = ("orders", "sync")
FALLBACK = "fallback"
TENANTS = ("acme", "globex")
KEYS = ("property:1", "property:2")
DEDUP_IDS = ("d1", "d2", "d3")
CONSUMER_REASONS = ("bad payload", "guest cancelled")
LEASE = 10.0
# No jitter: the model must predict every retry time exactly.
BACKOFF = Backoff(base=2.0, factor=2.0, cap=8.0, jitter=False)


# Queue options drawn once per run, for each queue.
QUEUE_OPTIONS = st.fixed_dictionaries(
    {
        "max_attempts": st.sampled_from((1, 2, 4, 4)),
        "fallback": st.sampled_from((None, FALLBACK)),
        "on_key_failure": st.sampled_from(("continue", "block")),
        "dedup_window": st.sampled_from((5.0, 30.0, None)),
        "max_depth": st.sampled_from((None, None, 8)),
        "tenant_quota": st.sampled_from((None, None, 4)),
    }
)
# One put's options; those the backend lacks are dropped before use.
PUT_OPTIONS = st.fixed_dictionaries(
    {
        "key": st.sampled_from((None, *KEYS)),
        "tenant": st.sampled_from((None, *TENANTS)),
        "priority": st.sampled_from((0, 0, 1, 5)),
        "delay": st.sampled_from((0.0, 0.0, 0.0, 3.0, 15.0)),
        "not_before": st.sampled_from((None, None, None, "epoch", "datetime")),
        "dedup_id": st.sampled_from((None, None, *DEDUP_IDS)),
        "headers": st.booleans(),
        "coalesce": st.booleans(),
    }
)
# How a held delivery is settled: (verb, argument).
SETTLE_ACTIONS = st.sampled_from(
    (
        ("ack", None),
        ("ack", None),
        ("retry", None),
        ("retry", 0.0),
        ("retry", 1.0),
        ("retry", 5.0),
        ("dead_letter", CONSUMER_REASONS[0]),
        ("dead_letter", CONSUMER_REASONS[1]),
        ("extend", 1.0),
        ("extend", 5.0),
        ("extend", 20.0),
    )
)
TENANT_SCOPES = st.sampled_from((None, None, *TENANTS))


@attrs.frozen
class ScratchStore:
    """An empty store for one run: ``open`` connects to it (again), ``drop`` removes it.

    Attributes:
        open: Returns a broker on this store using the given clock. Called
            once at the start and again after every close-and-reopen step, so
            each call must reach the same store.
        drop: Called once at the end of the run, after the broker is closed.
    """

    open: Callable[[ManualClock], Broker]
    drop: Callable[[], None] = lambda: None
