"""Splitting a batch of settlements the way both SQL backends settle them.

A worker hands in all its finished handlers' outcomes at once; the acks of
a batch are settled together (one statement per dialect), every other
outcome one by one, and each settlement's own success is reported in the
order given.
"""

from __future__ import annotations

from collections.abc import Sequence

from pmsq.backends.types import Settlement

__all__ = ["failure_count", "partition"]


def partition(settlements: Sequence[Settlement]) -> tuple[list[int], list[int]]:
    """Indexes of the acks, and of every other settlement, each in the order given."""
    acks: list[int] = []
    rest: list[int] = []
    for i, s in enumerate(settlements):
        (acks if s.action == "ack" else rest).append(i)
    return acks, rest


def failure_count(settlement: Settlement) -> int:
    """1 if ``settlement`` counts as a failed attempt (it carries an error type), else 0.

    A retry without an error type (a snooze) is not a failure.
    """
    return int(settlement.error_type is not None)
