"""The journal's fast path writes exactly the rows its generic ``add`` would."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from pmsq.backends.sqlite.journal import Journal, duration_detail
from pmsq.backends.sqlite.puts import record_put
from pmsq.backends.types import Envelope


@pytest.mark.parametrize("ms", [None, 0.0154321, 1234.5, 1e-7])
def test_the_fast_path_rows_equal_the_generic_ones(ms: float | None) -> None:
    generic, fast = Journal(60.0), Journal(60.0)
    rounded = None if ms is None else round(ms, 3)
    generic.add(1.5, "acked", "m1", "q", "acme", "k", "c1", attempt=2, duration_ms=rounded)
    fast.add_row(1.5, "acked", "m1", "q", "acme", "k", "c1", 2, None, duration_detail(rounded))
    generic.add(2.5, "delivered", "m1", "q", "acme", "k", "c1", attempt=3, worker="w-1")
    fast.add_row(2.5, "delivered", "m1", "q", "acme", "k", "c1", 3, "w-1", None)
    assert fast._rows == generic._rows


def test_a_journal_without_retention_keeps_no_rows() -> None:
    off = Journal(None)
    off.add_row(1.0, "acked", "m1", "q", "", None, None, 1, None, None)
    assert off._rows == []


def _envelope(**changes: object) -> Envelope:
    base = Envelope(
        id="m1",
        queue="q",
        data=b"{}",
        format="json",
        key="k",
        tenant="acme",
        priority=0,
        available_at=10.0,
        enqueued_at=10.0,
        headers=None,
        dedup_id=None,
        topic=None,
        correlation_id="m1",
        causation_id=None,
    )
    return attrs.evolve(base, **changes)


@pytest.mark.parametrize(
    ("changes", "extra"),
    [
        ({}, {}),
        ({"tenant": None, "key": None}, {}),
        ({"available_at": 9.0}, {}),  # due already: no delay
        ({"available_at": 12.5}, {}),
        ({"topic": "booking.created"}, {}),
        ({"causation_id": "m0", "correlation_id": "m0"}, {}),
        ({"dedup_id": "pay-1"}, {}),
        ({}, {"siblings": ["m2"]}),
        ({}, {"siblings": []}),
        ({}, {"dead_letter_of": "m0"}),
    ],
)
def test_a_put_row_is_the_generic_one(changes: dict[str, object], extra: dict[str, Any]) -> None:
    env = _envelope(**changes)
    generic, fast = Journal(60.0), Journal(60.0)
    siblings = extra.pop("siblings", None)
    generic.add(
        10.0,
        "put",
        env.id,
        env.queue,
        env.tenant or "",
        env.key,
        env.correlation_id,
        topic=env.topic,
        siblings=siblings or None,
        causation_id=env.causation_id,
        dedup_id=env.dedup_id,
        delay=round(env.available_at - 10.0, 3) if env.available_at > 10.0 else None,
        **extra,
    )
    record_put(fast, env, 10.0, siblings=siblings, **extra)
    assert fast._rows == generic._rows
