"""The SQL kit's decisions, checked against plain models of what they must do.

Both SQL backends call these functions for tenant rotation, the priority
pick of a claim and rate budgets; the conformance suites check the outcome
end to end, these check the rules themselves on inputs no store would
easily produce (many tenants, exhausted budgets, ties everywhere).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pmsq.backends.sqlkit.rotation import TENANT_WINDOW, RateBudget, pick, rotation_order
from pmsq.backends.sqlkit.settlements import partition, settle_batch
from pmsq.backends.sqlkit.states import (
    HELD,
    LIVE,
    WAITING,
    State,
    export_name,
    peek_name,
    waiting_state,
)
from pmsq.backends.types import Receipt, Settlement
from pmsq.config import RateLimit

tenants = st.lists(st.text("abcdefgh", max_size=3), unique=True, max_size=80)


def test_state_numbers_are_the_ones_stored_in_existing_files() -> None:
    # Stores written by earlier versions hold these numbers: renumbering would
    # turn every dead letter of an old file into something else.
    assert [(s.name, int(s)) for s in State] == [
        ("READY", 0),
        ("IN_FLIGHT", 1),
        ("DEAD", 2),
        ("SCHEDULED", 3),
    ]
    assert (HELD, WAITING, LIVE) == ("(0, 1)", "(0, 3)", "(0, 1, 3)")


def test_state_names_seen_by_operators() -> None:
    assert peek_name(State.READY, head=1) == "ready"
    assert peek_name(State.READY, head=0) == "waiting_for_key"
    assert peek_name(State.SCHEDULED, head=0) == "scheduled"
    assert [export_name(s) for s in State] == ["pending", "in_flight", "dead", "pending"]
    assert waiting_state(10.0, now=10.0) is State.READY
    assert waiting_state(10.5, now=10.0) is State.SCHEDULED


def _scan_of(stored: list[str]) -> Any:
    """A scan over ``stored`` tenants, as a dialect's index scan answers it."""
    ordered = sorted(stored)

    def scan(start: str, inclusive: bool, limit: int, upto: str | None) -> list[str]:
        found = [t for t in ordered if (t >= start if inclusive else t > start)]
        return found[:limit]

    return scan


@given(tenants, st.one_of(st.none(), st.text("abcdefgh", max_size=3)))
def test_rotation_starts_after_the_cursor_and_wraps_around(
    stored: list[str], after: str | None
) -> None:
    order = rotation_order(after, _scan_of(stored))
    ordered = sorted(stored)
    if after is None:
        expected = ordered
    else:
        expected = [t for t in ordered if t > after] + [t for t in ordered if t <= after]
    assert order == expected[:TENANT_WINDOW]


def _fronts(spec: list[list[int]]) -> list[list[dict[str, Any]]]:
    """Per-tenant fronts in delivery order (priority descending, then put order)."""
    fronts = []
    for t, priorities in enumerate(spec):
        rows = [
            {"tenant": f"t{t}", "key": None, "priority": p, "seq": i}
            for i, p in enumerate(sorted(priorities, reverse=True))
        ]
        fronts.append(rows)
    return fronts


fronts_spec = st.lists(st.lists(st.integers(0, 3), max_size=6), min_size=1, max_size=6)


@given(fronts_spec, st.integers(0, 40))
def test_pick_takes_the_highest_priority_first_and_no_more_than_asked(
    spec: list[list[int]], n: int
) -> None:
    picked, last = pick(_fronts(spec), n, None)
    total = sum(len(p) for p in spec)
    assert len(picked) == min(n, total)
    priorities = [r["priority"] for r in picked]
    assert priorities == sorted(priorities, reverse=True)
    # What it left behind is never of a higher priority than what it took last.
    everything = sorted((p for ps in spec for p in ps), reverse=True)
    assert priorities == everything[: len(picked)]
    assert (last is None) == (not picked)
    if picked:
        assert picked[-1]["tenant"] == f"t{last}"


@given(st.integers(2, 6), st.integers(1, 5), st.integers(1, 30))
def test_pick_rotates_over_tenants_of_equal_priority(count: int, each: int, n: int) -> None:
    picked, _ = pick(_fronts([[1] * each for _ in range(count)]), n, None)
    served = [int(r["tenant"][1:]) for r in picked]
    # Round robin: tenant 0, 1, ... count-1, 0, 1, ... while each still has work.
    assert served == [i % count for i in range(len(served))]


@given(fronts_spec, st.integers(1, 3), st.integers(0, 3), st.integers(1, 40))
def test_pick_never_exceeds_a_tenant_rate_budget(
    spec: list[list[int]], limit: int, used_before: int, n: int
) -> None:
    asked: list[str] = []

    def used(scope: str) -> int:
        asked.append(scope)
        return used_before

    budget = RateBudget(RateLimit(limit, per=1.0, scope="tenant"), used)
    picked, _ = pick(_fronts(spec), n, budget)
    per_tenant = Counter(r["tenant"] for r in picked)
    allowed = max(0, limit - used_before)
    for t, ps in enumerate(spec):
        assert per_tenant[f"t{t}"] <= allowed
        if n >= sum(len(p) for p in spec):
            # Asked for everything: every tenant gets all its budget allows.
            assert per_tenant[f"t{t}"] == min(len(ps), allowed)
    assert budget.taken == [r["tenant"] for r in picked]
    assert len(asked) == len(set(asked))  # each scope's log is counted once per claim


def test_a_key_scoped_budget_skips_only_that_key() -> None:
    rows = [
        {"tenant": "", "key": "hot", "priority": 0, "seq": 1},
        {"tenant": "", "key": "hot", "priority": 0, "seq": 2},
        {"tenant": "", "key": "cold", "priority": 0, "seq": 3},
    ]
    budget = RateBudget(RateLimit(1, per=1.0, scope="key"), lambda scope: 0)
    picked, _ = pick([rows], 3, budget)
    assert [r["seq"] for r in picked] == [1, 3]
    assert budget.taken == ["\x1fhot", "\x1fcold"]


def test_partition_keeps_each_group_in_the_order_given() -> None:
    r = Receipt("q", "m", "t")
    batch = [
        Settlement(r, "retry"),
        Settlement(r, "ack"),
        Settlement(r, "dead"),
        Settlement(r, "ack"),
    ]
    assert partition(batch) == ([1, 3], [0, 2])


def test_a_batch_settles_acks_first_then_each_other_outcome_and_reports_in_order() -> None:
    r = Receipt("q", "m", "t")
    batch = [
        Settlement(r, "release"),
        Settlement(r, "retry"),
        Settlement(r, "ack"),
        Settlement(r, "dead"),
        Settlement(r, "ack"),
    ]
    calls: list[tuple[str, list[str]]] = []

    def acks(group: list[Settlement]) -> list[bool]:
        calls.append(("acks", [s.action for s in group]))
        return [True, False]  # the second ack's lease was lost

    def one(s: Settlement) -> bool:
        calls.append(("one", [s.action]))
        return s.action != "dead"

    def releases(group: list[Settlement]) -> list[bool]:
        calls.append(("releases", [s.action for s in group]))
        return [True]

    assert settle_batch(batch, acks=acks, one=one) == [True, True, True, False, False]
    assert calls == [
        ("acks", ["ack", "ack"]),
        ("one", ["release"]),
        ("one", ["retry"]),
        ("one", ["dead"]),
    ]
    calls.clear()
    done = settle_batch(batch, acks=acks, one=one, releases=releases)
    assert done == [True, True, True, False, False]
    assert calls == [
        ("acks", ["ack", "ack"]),
        ("one", ["retry"]),
        ("one", ["dead"]),
        ("releases", ["release"]),
    ]
