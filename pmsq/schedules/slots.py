"""The pure time logic of schedules: which instants are slots, and which to fire now.

No store, no clock, no threads: functions of epoch seconds. The broker asks
:func:`plan` what a due schedule should fire; the backend then commits that
plan with a compare-and-set on the schedule's cursor.

DST rules (DESIGN.md, "Schedules"): a cron expression is matched against the
*wall clock* of its zone, minute by minute, with cronsim as the matcher
(fed naive local times, so its own DST quirks never apply). Each matching
wall-clock time then becomes one instant:

- a wall-clock time that exists once is that instant;
- one that occurs twice (the fall-back hour) fires once, at its first
  occurrence (``fold=0``);
- one that does not exist (the spring-forward gap) fires once, at the next
  valid instant: the moment the clocks jump.

Slots are instants, so several wall-clock times landing on one instant (a
gap's times and the regular slot at its end) make one slot.
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from collections.abc import Iterator
from typing import Literal

import attrs
from cronsim import CronSim, CronSimError

from pmsq.errors import ConfigurationError

__all__ = [
    "CATCH_UP",
    "MAX_SLOTS_PER_RUN",
    "MISSED_AFTER",
    "CatchUp",
    "Plan",
    "Timing",
    "check_catch_up",
    "check_cron",
    "check_every",
    "check_zone",
    "missed_after",
    "plan",
    "slot_iso",
]

CatchUp = Literal["latest", "all", "none"]
CATCH_UP: tuple[str, ...] = ("latest", "all", "none")
#: With ``catch_up="none"``, a slot found more than this many seconds (or half
#: its period, if shorter) after it came due was missed and makes no message.
MISSED_AFTER = 60.0
#: ``catch_up="all"`` writes at most this many slots per run (one transaction);
#: the cursor stops after the last one written and the next run goes on.
MAX_SLOTS_PER_RUN = 1000
# No zone has ever shifted its clocks by more than this at once: a wall-clock
# time this far before an instant's own cannot land after it.
_MAX_SHIFT = dt.timedelta(hours=3)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_US = 1_000_000


def _to_us(t: float) -> int:
    return round(t * _US)


def slot_iso(t: float) -> str:
    """A slot as DESIGN.md writes it: ISO 8601 in UTC (``2026-12-04T02:00:00+00:00``)."""
    return (_EPOCH + dt.timedelta(microseconds=_to_us(t))).isoformat()


def check_zone(tz: object) -> zoneinfo.ZoneInfo:
    """Return the zone named ``tz``.

    Raises:
        ConfigurationError: not an IANA zone name this machine knows.
    """
    if not isinstance(tz, str) or not tz or not tz.isprintable():
        raise ConfigurationError(f"tz must be an IANA time zone name such as 'UTC', got {tz!r}")
    try:
        return zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ConfigurationError(
            f"unknown time zone {tz!r}: use an IANA name such as 'Europe/Lisbon' or "
            "'America/New_York' (install the tzdata package if this machine has no zone files)"
        ) from exc


def check_cron(expr: object) -> str:
    """Return ``expr`` if it is a valid five-field cron expression.

    Raises:
        ConfigurationError: naming what is wrong with it.
    """
    if not isinstance(expr, str) or not expr.isprintable():
        raise ConfigurationError(f"cron must be a cron expression string, got {expr!r}")
    if len(expr.split()) != 5:
        raise ConfigurationError(
            f"invalid cron expression {expr!r}: it needs five fields "
            "(minute hour day-of-month month day-of-week), e.g. '0 2 * * *'"
        )
    try:
        CronSim(expr, dt.datetime(2000, 1, 1))
    except CronSimError as exc:
        raise ConfigurationError(f"invalid cron expression {expr!r}: {exc}") from exc
    return expr


def check_every(every: object) -> float:
    """Return ``every`` as seconds if it is a finite period > 0.

    Raises:
        ConfigurationError: otherwise.
    """
    if (
        isinstance(every, bool)
        or not isinstance(every, (int, float))
        or not math.isfinite(every)
        or not (0.001 <= every <= 1e9)
    ):
        raise ConfigurationError(
            f"every must be a period in seconds > 0 (at least 0.001), got {every!r}"
        )
    return float(every)


def check_catch_up(catch_up: object) -> CatchUp:
    """Return ``catch_up`` if it is ``"latest"``, ``"all"`` or ``"none"``.

    Raises:
        ConfigurationError: otherwise.
    """
    if catch_up not in CATCH_UP:
        raise ConfigurationError(f"catch_up must be 'latest', 'all' or 'none', got {catch_up!r}")
    return catch_up  # type: ignore[return-value]


@attrs.frozen
class Timing:
    """When a schedule's slots are: a cron expression in a zone, or a fixed period.

    Attributes:
        cron: Five-field cron expression, or ``None``.
        every: Period in seconds, or ``None`` (exactly one of the two is set).
        tz: IANA zone the cron expression reads (``every`` ignores it).
        anchor: ``every`` slots are ``anchor + k * every`` for ``k >= 1``.
    """

    cron: str | None
    every: float | None
    tz: str = "UTC"
    anchor: float = 0.0

    def next_after(self, t: float) -> float | None:
        """The first slot strictly after ``t``, or ``None`` if there is none."""
        return next(self.iter_after(t), None)

    def iter_after(self, t: float) -> Iterator[float]:
        """Slots strictly after ``t``, in order, each once."""
        if self.every is not None:
            return self._every_after(t)
        assert self.cron is not None
        return _cron_after(self.cron, check_zone(self.tz), t)

    def latest_at_or_before(self, t: float, floor: float) -> float:
        """The last slot at or before ``t``, given that ``floor`` is a slot ``<= t``."""
        if self.every is not None:
            a, p = _to_us(self.anchor), _to_us(self.every)
            k = (_to_us(t) - a) // p
            return max(floor, (a + k * p) / _US)
        window = 86400.0
        while True:
            start = max(floor, t - window)
            last = floor if start == floor else None
            for s in self.iter_after(start):
                if s > t:
                    break
                last = s
            if last is not None:
                return last
            window *= 4

    def _every_after(self, t: float) -> Iterator[float]:
        assert self.every is not None
        a, p = _to_us(self.anchor), _to_us(self.every)
        # Rounded like the slots themselves, so a stored slot read back as a float
        # (a hair below its exact microsecond) is never returned again.
        k = max(1, (_to_us(t) - a) // p + 1)
        while True:
            yield (a + k * p) / _US
            k += 1


def _naive_local(t: float, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    return (_EPOCH + dt.timedelta(microseconds=_to_us(t))).astimezone(zone).replace(tzinfo=None)


def _instant(wall: dt.datetime, zone: zoneinfo.ZoneInfo) -> float:
    """The instant a wall-clock time fires at (see the module docs for the DST rules)."""
    first = wall.replace(tzinfo=zone, fold=0)
    at = first.timestamp()
    if _naive_local(at, zone) == wall:
        return at
    # In a gap: fold=0 reads it with the offset from before the jump, which
    # lands after the jump; fold=1 with the offset from after it, which lands
    # before. The jump lies between; find the first second whose wall clock
    # is past ``wall``.
    lo, hi = math.floor(wall.replace(tzinfo=zone, fold=1).timestamp()), math.ceil(at)
    while lo < hi:
        mid = (lo + hi) // 2
        if _naive_local(mid, zone) > wall:
            hi = mid
        else:
            lo = mid + 1
    return float(lo)


def _cron_after(expr: str, zone: zoneinfo.ZoneInfo, t: float) -> Iterator[float]:
    local = _naive_local(t, zone)
    around = (t - _MAX_SHIFT.total_seconds(), t + _MAX_SHIFT.total_seconds())
    offsets = {_utcoffset(x, zone) for x in around}
    # Away from any clock change wall time and instants map one to one; near
    # one, start early enough to meet every wall time that lands after t.
    start = local if len(offsets) == 1 else local - _MAX_SHIFT
    last = t
    # cronsim stops by itself when nothing matches within 50 years.
    for wall in CronSim(expr, start - dt.timedelta(seconds=1)):
        at = _instant(wall, zone)
        if at > last:
            last = at
            yield at


def _utcoffset(t: float, zone: zoneinfo.ZoneInfo) -> dt.timedelta | None:
    return (_EPOCH + dt.timedelta(seconds=t)).astimezone(zone).utcoffset()


@attrs.frozen
class Plan:
    """What one run should do with a due schedule.

    Attributes:
        slots: Slots to make a message for (epoch seconds, oldest first).
        next_at: The schedule's new cursor: its next slot.
    """

    slots: tuple[float, ...]
    next_at: float | None


def plan(timing: Timing, next_at: float, now: float, catch_up: CatchUp) -> Plan:
    """Decide which slots a schedule whose cursor is ``next_at`` fires at ``now``.

    Every slot from ``next_at`` up to ``now`` is due. ``"all"`` fires each
    (at most :data:`MAX_SLOTS_PER_RUN` per run); ``"latest"`` fires only the
    latest; ``"none"`` fires the latest only if it is on time (see
    :func:`missed_after`), else none.

    Returns:
        The slots to fire and the new cursor (``next_at`` unchanged when nothing is due).
    """
    if next_at > now:
        return Plan((), next_at)
    if catch_up == "all":
        fire = [next_at]
        following = timing.iter_after(next_at)
        upcoming: float | None = None
        for s in following:
            if s > now or len(fire) >= MAX_SLOTS_PER_RUN:
                upcoming = s
                break
            fire.append(s)
        return Plan(tuple(fire), upcoming)
    latest = timing.latest_at_or_before(now, next_at)
    upcoming = timing.next_after(now)
    if catch_up == "none" and now - latest > missed_after(latest, upcoming):
        return Plan((), upcoming)
    return Plan((latest,), upcoming)


def missed_after(slot: float, following: float | None) -> float:
    """How late ``slot`` may be found and still count as on time (``catch_up="none"``).

    :data:`MISSED_AFTER`, or half the time to the following slot if that is
    shorter: a slot found nearer its successor than itself was missed.
    """
    if following is None:
        return MISSED_AFTER
    return min(MISSED_AFTER, (following - slot) / 2)
