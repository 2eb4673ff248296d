"""Settling a batch of outcomes the way both SQL backends do it.

A worker hands in all its finished handlers' outcomes at once; the acks of
a batch are settled together (one statement per dialect), every other
outcome one by one (or, for releases, together where the dialect can), and
each settlement's own success is reported in the order given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pmsq.backends.types import Settlement

__all__ = ["failure_count", "partition", "settle_batch"]

Many = Callable[[list[Settlement]], list[bool]]


def partition(settlements: Sequence[Settlement]) -> tuple[list[int], list[int]]:
    """Indexes of the acks, and of every other settlement, each in the order given."""
    acks: list[int] = []
    rest: list[int] = []
    for i, s in enumerate(settlements):
        (acks if s.action == "ack" else rest).append(i)
    return acks, rest


def settle_batch(
    settlements: Sequence[Settlement],
    *,
    acks: Many,
    one: Callable[[Settlement], bool],
    releases: Many | None = None,
) -> list[bool]:
    """Settle ``settlements`` inside one open transaction; whether each one's lease held.

    Args:
        settlements: The batch, in the caller's order.
        acks: Settles all the acks at once (first).
        one: Settles one retry or dead letter (and one release, without
            ``releases``), in the order given.
        releases: Settles all the releases at once (last), if the dialect can.

    Returns:
        One flag per settlement, in the order given.
    """
    done = [False] * len(settlements)
    ack_at, rest = partition(settlements)
    if ack_at:
        for i, ok in zip(ack_at, acks([settlements[i] for i in ack_at]), strict=True):
            done[i] = ok
    if releases is not None:
        release_at = [i for i in rest if settlements[i].action == "release"]
        rest = [i for i in rest if settlements[i].action != "release"]
    for i in rest:
        done[i] = one(settlements[i])
    if releases is not None and release_at:
        for i, ok in zip(release_at, releases([settlements[i] for i in release_at]), strict=True):
            done[i] = ok
    return done


def failure_count(settlement: Settlement) -> int:
    """1 if ``settlement`` counts as a failed attempt (it carries an error type), else 0.

    A retry without an error type (a snooze) is not a failure.
    """
    return int(settlement.error_type is not None)
