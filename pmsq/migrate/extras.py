"""What ``pmsq migrate`` carries beside messages: recurring schedules and pauses.

A schedule moves with its cursor (the next slot and the last slot fired),
so the destination neither fires a slot the source already fired nor skips
one; the slots' dedup ids (``schedule:<name>:<slot>``) travel with the
queue's dedup ids. A pause moves as it is (scope, reason, until), so a
queue an operator held in the source stays held in the destination. Pauses
opened by a circuit breaker are not copied: they are the state of a
downstream outage the new store learns again from the next failures.

Both are compared before anything is written (:func:`check_extras`): a
destination schedule of the same name with another definition stops the
migration, as a queue declared with other options does. Running the same
migration again writes nothing new: a schedule already there keeps the
destination's cursor (it may have fired since), a pause already there is
left alone.
"""

from __future__ import annotations

import json
import time

from pmsq.backends.base import Backend
from pmsq.backends.control_family import Control
from pmsq.backends.schedule_family import ScheduleStore, StoredSchedule
from pmsq.backends.types import PauseRecord
from pmsq.errors import ConfigurationError
from pmsq.migrate.sources import Source

__all__ = ["check_extras", "copy_pauses", "copy_schedules"]

# What a schedule is, as opposed to where it stands (cursor, version, history).
_DEFINITION = ("queue", "cron", "every", "tz", "catch_up", "data", "format", "key", "priority")


def _label(s: StoredSchedule) -> str:
    return s.name if s.tenant is None else f"{s.name} (tenant {s.tenant})"


def _same_definition(a: StoredSchedule, b: StoredSchedule) -> bool:
    if any(getattr(a, f) != getattr(b, f) for f in _DEFINITION):
        return False
    # Stored JSON text: compare what it says, not its spelling.
    return _headers(a) == _headers(b)


def _headers(s: StoredSchedule) -> object:
    return None if s.headers is None else json.loads(s.headers)


def check_extras(source: Source, dest: Backend) -> None:
    """Refuse, before anything is written, schedules the destination defines otherwise.

    Raises:
        ConfigurationError: naming each conflicting schedule.
    """
    if not isinstance(dest, ScheduleStore):
        return
    theirs = {(s.tenant, s.name): s for s in dest.list_schedules()}
    conflicts = [
        _label(s)
        for s in source.schedules()
        if (s.tenant, s.name) in theirs and not _same_definition(s, theirs[(s.tenant, s.name)])
    ]
    if conflicts:
        raise ConfigurationError(
            "the destination already has schedule(s) with another definition: "
            + ", ".join(conflicts)
            + "; unschedule them there or re-declare them as in the source"
        )


def copy_schedules(source: Source, dest: Backend, warnings: list[str]) -> int:
    """Store the source's schedules the destination lacks, cursors kept; return how many.

    A destination without schedules gets none, and ``warnings`` says which were left.
    """
    wanted = source.schedules()
    if not wanted:
        return 0
    if not isinstance(dest, ScheduleStore):
        warnings.append(
            f"{len(wanted)} schedule(s) not copied ({', '.join(map(_label, wanted))}): the "
            f"{dest.name} backend does not support schedules"
        )
        return 0
    present = {(s.tenant, s.name) for s in dest.list_schedules()}
    copied = 0
    for s in wanted:
        if (s.tenant, s.name) in present:
            continue
        # Saved as new: the store keeps next_at/last_at as given (version starts at 1).
        dest.save_schedule(s, now=time.time())
        copied += 1
    return copied


def copy_pauses(source: Source, dest: Backend, warnings: list[str]) -> int:
    """Set the source's operator pauses the destination lacks; return how many.

    A destination without message control gets none, and ``warnings`` says so.
    """
    wanted = [p for p in source.pauses() if not p.circuit]
    if not wanted:
        return 0
    if not isinstance(dest, Control):
        warnings.append(
            f"{len(wanted)} pause(s) not copied ({', '.join(map(_scope, wanted))}): the "
            f"{dest.name} backend does not support pauses"
        )
        return 0
    now = time.time()
    present = {p.scope for p in dest.pauses(now=now)}
    copied = 0
    for p in wanted:
        if p.scope in present:
            continue
        dest.pause(p, now=now)
        copied += 1
    return copied


def _scope(p: PauseRecord) -> str:
    parts = [f"queue {p.queue}"]
    if p.tenant is not None:
        parts.append(f"tenant {p.tenant}")
    if p.key is not None:
        parts.append(f"key {p.key}")
    return " ".join(parts)
