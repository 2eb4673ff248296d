"""The pure slot logic against a brute-force reference built on ``zoneinfo`` alone.

The reference (``pmsq.testing._schedule_tests.reference_slots``, shared with
the conformance suite) walks every UTC minute of a window, reads the zone's
wall clock with ``zoneinfo`` and applies DESIGN.md's rules literally.
"""

from __future__ import annotations

import datetime as dt
import itertools
import zoneinfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pmsq.errors import ConfigurationError
from pmsq.schedules.slots import (
    MAX_SLOTS_PER_RUN,
    MISSED_AFTER,
    Timing,
    check_catch_up,
    check_cron,
    check_every,
    check_zone,
    missed_after,
    plan,
    slot_iso,
)
from pmsq.testing._schedule_tests import cron_specs, reference_slots

UTC = dt.UTC
NY, LIS = "America/New_York", "Europe/Lisbon"
ZONES = ["Europe/Lisbon", "America/New_York", "Australia/Lord_Howe", "UTC"]
# Transitions of 2026-2027 in the zones above (UTC), and a quiet day.
AROUND = [
    dt.datetime(2026, 3, 8, 7, tzinfo=UTC),  # New York springs forward
    dt.datetime(2026, 11, 1, 6, tzinfo=UTC),  # New York falls back
    dt.datetime(2026, 3, 29, 1, tzinfo=UTC),  # Lisbon springs forward
    dt.datetime(2026, 10, 25, 1, tzinfo=UTC),  # Lisbon falls back
    dt.datetime(2026, 4, 4, 15, tzinfo=UTC),  # Lord Howe falls back 30 minutes
    dt.datetime(2026, 10, 3, 15, 30, tzinfo=UTC),  # Lord Howe springs forward 30 minutes
    dt.datetime(2027, 3, 14, 7, tzinfo=UTC),
    dt.datetime(2026, 6, 15, 12, tzinfo=UTC),
]


def ours(timing: Timing, start: float, end: float) -> list[float]:
    out = []
    for s in timing.iter_after(start):
        if s > end:
            break
        out.append(s)
    return out


@settings(max_examples=150, deadline=None)
@given(
    cron=cron_specs(),
    tz=st.sampled_from(ZONES),
    around=st.sampled_from(AROUND),
    shift_min=st.integers(-36 * 60, 36 * 60),
)
def test_cron_slots_match_the_zoneinfo_reference(
    cron: tuple[str, dict[str, set[int]]], tz: str, around: dt.datetime, shift_min: int
) -> None:
    start = around.timestamp() + shift_min * 60 - 24 * 3600
    end = start + 48 * 3600
    timing = Timing(cron[0], None, tz)
    assert ours(timing, start, end) == reference_slots(cron[1], zoneinfo.ZoneInfo(tz), start, end)


@settings(max_examples=150, deadline=None)
@given(
    cron=cron_specs(),
    tz=st.sampled_from(ZONES),
    around=st.sampled_from(AROUND),
    jumps=st.lists(st.integers(1, 6 * 3600), min_size=1, max_size=12),
    catch_up=st.sampled_from(["all", "latest", "none"]),
)
def test_plans_over_clock_jumps_fire_each_slot_at_most_once(
    cron: tuple[str, dict[str, set[int]]],
    tz: str,
    around: dt.datetime,
    jumps: list[int],
    catch_up: str,
) -> None:
    timing = Timing(cron[0], None, tz)
    created = around.timestamp() - 12 * 3600
    now = created
    cursor = timing.next_after(created)
    assert cursor is not None
    fired: list[float] = []
    for jump in jumps:
        now += jump
        result = plan(timing, cursor, now, check_catch_up(catch_up))
        due = [s for s in ours(timing, cursor - 1e-6, now) if s >= cursor]
        if catch_up == "all":
            assert list(result.slots) == due[:MAX_SLOTS_PER_RUN]
        elif not due:
            assert result.slots == ()
        elif catch_up == "latest" or now - due[-1] <= missed_after(
            due[-1], timing.next_after(due[-1])
        ):
            assert result.slots == (due[-1],)
        else:
            assert result.slots == ()
        fired.extend(result.slots)
        assert result.next_at is not None
        assert result.next_at > now or not due or catch_up == "all"
        cursor = result.next_at
    assert fired == sorted(set(fired)), "each slot fires once, in order"
    if catch_up == "all":
        everything = ours(timing, created, now)
        assert fired == [s for s in everything if s < cursor]


@settings(max_examples=200, deadline=None)
@given(
    every=st.floats(0.5, 10_000, allow_nan=False),
    anchor=st.floats(1.7e9, 1.9e9, allow_nan=False),
    offset=st.floats(0, 1e6, allow_nan=False),
)
def test_every_slots_are_whole_periods_after_creation(
    every: float, anchor: float, offset: float
) -> None:
    timing = Timing(None, every, anchor=anchor)
    every = round(every * 1e6) / 1e6  # periods count in whole microseconds
    first = timing.next_after(anchor)
    assert first is not None
    assert first == pytest.approx(anchor + every, abs=1e-5), "one period after creation"
    t = anchor + offset
    nxt = timing.next_after(t)
    assert nxt is not None
    assert nxt > t
    k = round((nxt - anchor) / every)
    assert k >= 1
    assert nxt == pytest.approx(anchor + k * every, abs=1e-5)
    assert nxt - every <= t + 1e-5, "no slot is skipped"
    latest = timing.latest_at_or_before(nxt + every / 2, first)
    assert latest == nxt
    # A cursor read back from the store (a float) yields the very next slot, never itself.
    chain = [first]
    for _ in range(20):
        following = timing.next_after(chain[-1])
        assert following is not None
        chain.append(following)
    assert all(b - a == pytest.approx(every, abs=2e-6) for a, b in itertools.pairwise(chain))


def test_every_catch_up_policies_after_downtime() -> None:
    timing = Timing(None, 60.0, anchor=0.0)
    assert plan(timing, 60.0, 60.0 * 5 + 1, "all").slots == (60.0, 120.0, 180.0, 240.0, 300.0)
    assert plan(timing, 60.0, 60.0 * 5 + 1, "latest").slots == (300.0,)
    assert plan(timing, 60.0, 60.0 * 5 + 1, "none").slots == (300.0,), "300 is on time"
    assert plan(timing, 60.0, 60.0 * 5 + 31, "none").slots == (), "nearer 360 than 300"
    hourly = Timing(None, 3600.0, anchor=0.0)
    late = plan(hourly, 3600.0, 3 * 3600.0 + MISSED_AFTER + 1, "none")
    assert late.slots == ()
    assert late.next_at == 4 * 3600.0
    assert plan(timing, 60.0, 59.0, "all").slots == ()
    flood = plan(Timing(None, 1.0, anchor=0.0), 1.0, 1e6, "all")
    assert len(flood.slots) == MAX_SLOTS_PER_RUN
    assert flood.next_at == MAX_SLOTS_PER_RUN + 1


@pytest.mark.parametrize(
    ("tz", "cron", "after", "expected"),
    [
        # New York springs forward at 02:00 EST: 02:30 fires at 03:00 EDT, once.
        (NY, "30 2 * * *", "2026-03-07T12:00", ["2026-03-08T07:00", "2026-03-09T06:30"]),
        # 02:00, 02:30 and 03:00 all land on 03:00 EDT: one slot.
        (
            NY,
            "*/30 1-3 * * *",
            "2026-03-08T06:00",
            ["2026-03-08T06:30", "2026-03-08T07:00", "2026-03-08T07:30"],
        ),
        # New York falls back: 01:30 happens twice and fires once (EDT).
        (NY, "30 1 * * *", "2026-10-31T12:00", ["2026-11-01T05:30", "2026-11-02T06:30"]),
        # Lisbon springs forward at 01:00 WET: 01:15 fires at 02:00 WEST (01:00 UTC).
        (LIS, "15 1 * * *", "2026-03-28T12:00", ["2026-03-29T01:00", "2026-03-30T00:15"]),
        # Lisbon falls back at 02:00 WEST: 01:45 fires once, at 00:45 UTC.
        (LIS, "45 1 * * *", "2026-10-24T12:00", ["2026-10-25T00:45", "2026-10-26T01:45"]),
    ],
)
def test_dst_examples(tz: str, cron: str, after: str, expected: list[str]) -> None:
    start = dt.datetime.fromisoformat(after).replace(tzinfo=UTC).timestamp()
    slots = Timing(cron, None, tz).iter_after(start)
    got = [slot_iso(next(slots)) for _ in expected]
    assert got == [dt.datetime.fromisoformat(e).replace(tzinfo=UTC).isoformat() for e in expected]


def test_slot_iso_is_utc_iso8601() -> None:
    assert slot_iso(1796349600.0) == "2026-12-04T02:00:00+00:00"
    assert slot_iso(1796349600.25) == "2026-12-04T02:00:00.250000+00:00"


@pytest.mark.parametrize(
    ("check", "value", "words"),
    [
        (check_cron, "61 * * * *", "invalid cron expression '61 * * * *'"),
        (check_cron, "* * * *", "five fields"),
        (check_cron, "0 0 * * * *", "five fields"),
        (check_cron, "0 2 * * *\n", "cron must be"),
        (check_cron, None, "cron must be"),
        (check_zone, "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        (check_zone, "", "IANA"),
        (check_zone, "../etc/passwd", "unknown time zone"),
        (check_every, 0, "every must be"),
        (check_every, -5.0, "every must be"),
        (check_every, float("inf"), "every must be"),
        (check_every, True, "every must be"),
        (check_catch_up, "some", "catch_up must be"),
    ],
)
def test_bad_input_is_named(check: object, value: object, words: str) -> None:
    with pytest.raises(ConfigurationError, match=None) as info:
        check(value)  # type: ignore[operator]
    assert words in str(info.value)
