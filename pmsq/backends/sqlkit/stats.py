"""Folding a store's counted rows into a ``Stats`` snapshot.

Each dialect runs two grouped queries (messages by state, and metrics
slots) and hands their rows here, so "what counts as ready, delayed,
in flight or dead" and "which slots make the last minute" are decided once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pmsq.backends.sqlkit.metrics import SLOT_SECONDS, TOTAL_SLOT, slot_of
from pmsq.backends.sqlkit.states import IN_FLIGHT, READY, SCHEDULED
from pmsq.message import utc_from_epoch
from pmsq.stats import Stats, StatsBuilder

__all__ = ["add_message_counts", "add_metric_rows", "first_recent_slot", "snapshot"]


def first_recent_slot(now: float) -> int:
    """The oldest metrics slot that counts toward the per-minute figures at ``now``."""
    return slot_of(now) - (60 // SLOT_SECONDS) + 1


def add_message_counts(per: StatsBuilder, rows: Iterable[Any]) -> None:
    """Add ``(queue, tenant, state, head, count, earliest due available_at)`` group rows.

    The last column is the earliest ``available_at`` among the group's
    messages that are due (``None`` if none is): ``oldest_age`` measures
    lateness, so a message scheduled for later does not count.
    """
    for q, t, state, head, count, oldest in rows:
        d = per.figures(q, t)
        if state == READY and head:
            d["ready"] += count
        elif state in (READY, SCHEDULED):
            d["delayed"] += count  # scheduled, or waiting behind its key's head
        elif state == IN_FLIGHT:
            d["in_flight"] += count
        else:
            d["dead"] += count
        due = state in (READY, SCHEDULED) and oldest is not None
        if due and (d["oldest"] is None or oldest < d["oldest"]):
            d["oldest"] = oldest


def add_metric_rows(
    per: StatsBuilder, rows: Iterable[Any], decode_hist: Callable[[Any], list[int]]
) -> None:
    """Add ``(queue, tenant, slot, processed, failed, retried, dead, hist, put, wait_hist)`` rows.

    Args:
        per: The snapshot being built.
        rows: The totals slot and the recent slots (see :func:`first_recent_slot`).
        decode_hist: Turns a stored, non-empty histogram into bucket counts.
    """
    for q, t, slot, processed, failed, retried, dead, hist, put, wait_hist in rows:
        d = per.figures(q, t)
        if slot == TOTAL_SLOT:
            d["processed"] += processed
            d["failed"] += failed
            d["retried"] += retried
            d["dead_lettered"] += dead
        else:
            d["processed_per_minute"] += processed
            d["failed_per_minute"] += failed
            d["retried_per_minute"] += retried
            d["dead_lettered_per_minute"] += dead
            d["put_per_minute"] += put or 0
            if hist:
                per.merge(d, {"hist": decode_hist(hist)})
            if wait_hist:
                per.merge(d, {"wait_hist": decode_hist(wait_hist)})


def snapshot(per: StatsBuilder, bindings: Iterable[Any], now: float) -> Stats:
    """The finished ``Stats`` of ``per`` with the store's ``(pattern, queue)`` bindings."""
    return Stats(
        queues=per.queues(now),
        bindings=tuple((p, q) for p, q in bindings),
        taken_at=utc_from_epoch(now),
    )
