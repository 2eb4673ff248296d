"""Message states, named once for every SQL backend.

A message row moves through these states; SQL text interpolates the names
(``f"state = {READY:d}"``) instead of spelling the numbers, so a reader
sees what a statement selects and the numbers live here alone. They are
stored in existing files: never renumber them.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Literal

__all__ = [
    "DEAD",
    "EXPORT_NAMES",
    "HELD",
    "IN_FLIGHT",
    "LIVE",
    "PEEK_NAMES",
    "READY",
    "SCHEDULED",
    "WAITING",
    "State",
    "export_name",
    "peek_name",
    "sql_set",
    "waiting_state",
]


class State(IntEnum):
    """The ``state`` column of a message row."""

    #: Deliverable now (claimable when it is also its key's head).
    READY = 0
    #: Leased to a consumer until ``lease_expires``.
    IN_FLIGHT = 1
    #: A dead letter, kept for an operator.
    DEAD = 2
    #: Waiting for ``available_at``: a delay or a retry backoff.
    SCHEDULED = 3


READY, IN_FLIGHT, DEAD, SCHEDULED = State.READY, State.IN_FLIGHT, State.DEAD, State.SCHEDULED


def sql_set(*states: State) -> str:
    """The SQL tuple of ``states`` for ``state IN ...``, e.g. ``(0, 1)``."""
    return "(" + ", ".join(f"{s:d}" for s in states) + ")"


#: States in which a lease token can still settle its message: leased, or
#: ready again after a lease expired that nobody else has claimed since.
HELD = sql_set(READY, IN_FLIGHT)
#: States of a message that waits to be delivered (counts toward quotas).
WAITING = sql_set(READY, SCHEDULED)
#: States of a message not yet settled for good (all but dead letters).
LIVE = sql_set(READY, IN_FLIGHT, SCHEDULED)

#: State names in ``peek``; a ready row that is not its key's head shows as
#: ``"waiting_for_key"`` (see :func:`peek_name`).
PEEK_NAMES = {READY: "ready", IN_FLIGHT: "in_flight", DEAD: "dead", SCHEDULED: "scheduled"}
#: State names of ``StoredMessage.state`` (export and import).
EXPORT_NAMES: dict[State, Literal["pending", "in_flight", "dead"]] = {
    READY: "pending",
    SCHEDULED: "pending",
    IN_FLIGHT: "in_flight",
    DEAD: "dead",
}


def waiting_state(available_at: float, now: float) -> State:
    """State of a message that waits for delivery at ``available_at``."""
    return SCHEDULED if available_at > now else READY


def peek_name(state: int, head: object) -> str:
    """What ``peek`` calls a row in ``state`` (``head``: whether it heads its key)."""
    if state == READY and not head:
        return "waiting_for_key"
    return PEEK_NAMES[State(state)]


def export_name(state: int) -> Literal["pending", "in_flight", "dead"]:
    """What ``StoredMessage.state`` calls a row in ``state``."""
    return EXPORT_NAMES[State(state)]
