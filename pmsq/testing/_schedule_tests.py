"""Conformance: recurring schedules (DESIGN.md, "Schedules, message control and pauses").

Exactly one message per slot with several brokers racing on one store, the
catch-up policies after clock jumps, cron slots across DST in two zones
against a brute-force ``zoneinfo`` reference, re-declaring, unscheduling,
tenant schedules and bad input. A backend without the schedule family must
refuse every call with a ``ConfigurationError`` naming itself and
``schedules``.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
import zoneinfo
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pmsq.backends.schedule_family import ScheduleStore
from pmsq.broker import Broker, connect
from pmsq.clock import ManualClock
from pmsq.errors import ConfigurationError
from pmsq.testing._suite import SuiteBase

__all__ = ["ScheduleTests", "check_sigkilled_workers", "cron_specs", "reference_slots"]

_UTC = dt.UTC
#: Clock changes of 2026 in Lisbon and New York (UTC), and a quiet day.
DST_INSTANTS = [
    dt.datetime(2026, 3, 8, 7, tzinfo=_UTC),
    dt.datetime(2026, 11, 1, 6, tzinfo=_UTC),
    dt.datetime(2026, 3, 29, 1, tzinfo=_UTC),
    dt.datetime(2026, 10, 25, 1, tzinfo=_UTC),
    dt.datetime(2026, 6, 15, 12, tzinfo=_UTC),
]


def _field(lo: int, hi: int) -> st.SearchStrategy[tuple[str, set[int]]]:
    values = st.sets(st.integers(lo, hi), min_size=1, max_size=4).map(
        lambda s: (",".join(map(str, sorted(s))), s)
    )
    steps = st.integers(2, 30).map(lambda n: (f"*/{n}", set(range(lo, hi + 1, n))))
    return st.one_of(st.just(("*", set(range(lo, hi + 1)))), values, steps)


@st.composite
def cron_specs(draw: st.DrawFn) -> tuple[str, dict[str, set[int]]]:
    """A cron expression and the minutes, hours and weekdays it matches."""
    minute = draw(_field(0, 59))
    hour = draw(_field(0, 23))
    dow = draw(st.one_of(st.just(("*", set(range(7)))), _field(0, 6)))
    return f"{minute[0]} {hour[0]} * * {dow[0]}", {
        "minute": minute[1],
        "hour": hour[1],
        "dow": dow[1],
    }


def _matches(spec: dict[str, set[int]], wall: dt.datetime) -> bool:
    return (
        wall.minute in spec["minute"]
        and wall.hour in spec["hour"]
        and (wall.weekday() + 1) % 7 in spec["dow"]
    )


def reference_slots(
    spec: dict[str, set[int]], zone: zoneinfo.ZoneInfo, start: float, end: float
) -> list[float]:
    """Slots in ``(start, end]`` (whole minutes), walking every UTC minute with ``zoneinfo``.

    DESIGN.md's rules, literally: a matching wall-clock time fires at its
    first occurrence; wall-clock times skipped by a forward jump fire at the
    instant of the jump; one instant fires once.
    """
    out = []
    u = start + 60
    while u <= end:
        now = dt.datetime.fromtimestamp(u, _UTC).astimezone(zone)
        before = dt.datetime.fromtimestamp(u - 60, _UTC).astimezone(zone)
        wall = now.replace(tzinfo=None)
        fire = _matches(spec, wall) and now.fold == 0
        offset, previous = now.utcoffset(), before.utcoffset()
        assert offset is not None
        assert previous is not None
        if offset > previous:
            skipped = before.replace(tzinfo=None) + dt.timedelta(minutes=1)
            while skipped < wall:
                fire = fire or _matches(spec, skipped)
                skipped += dt.timedelta(minutes=1)
        if fire:
            out.append(u)
        u += 60
    return out


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, _UTC).isoformat()


_WORKER_APP = """
import os, pmsq

broker = pmsq.connect(os.environ["APP_DB"])
broker.declare_queue("idle")


@broker.handler("idle")
def idle(msg):
    pass
"""


def check_sigkilled_workers(url: str, workdir: Path, *, seconds: float = 10.0) -> int:
    """Run four ``pmsq worker`` processes on ``url`` firing an ``every=1`` schedule,
    SIGKILL one every ~1.2 s (starting a new one), and check every slot made
    exactly one message, none skipped. Returns the number of slots checked.

    The store at ``url`` must be empty. The queue's dedup window is a
    millisecond, so exactly-once rests on the schedule's compare-and-set alone.
    """
    with connect(url) as b:
        # No handler anywhere: the messages stay to be counted.
        b.declare_queue("ticks", dedup_window=0.001)
        b.declare_queue("idle")
        b.schedule("tick", queue="ticks", every=1.0, catch_up="all")
        (created,) = b.schedules()
    assert created.next_at is not None
    first = created.next_at
    (workdir / "sched_app.py").write_text(_WORKER_APP)
    env = {**os.environ, "APP_DB": url, "PYTHONPATH": str(workdir), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "pmsq", "worker", "sched_app:broker", "--concurrency", "2"]

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, env=env, cwd=workdir)

    procs = [start() for _ in range(4)]
    rng = random.Random(16)
    kills = 0
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.6, 1.8))
            victim = rng.randrange(len(procs))
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait()
            kills += 1
            procs[victim] = start()
        time.sleep(1.5)  # let the survivors fire what is due
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    with connect(url) as b:
        (s,) = b.schedules()
        assert s.last_at is not None
        slots = []
        while batch := b.queue("ticks").get_many(1000, timeout=0):
            for d in batch:
                slots.append(d.message.headers["pmsq.schedule"]["slot"])
                d.ack()
    n = round((s.last_at - first).total_seconds()) + 1
    expected = [(first + dt.timedelta(seconds=k)).isoformat() for k in range(n)]
    assert kills >= 4
    assert n >= seconds * 0.8, "the workers kept firing through the kills"
    assert sorted(slots) == expected, "every slot exactly once, none skipped"
    return n


class ScheduleTests(SuiteBase):
    """Schedules: stored, fired exactly once per slot, in each schedule's own time zone."""

    def _schedules_or_refused(self, broker: Broker) -> bool:
        """True if the backend stores schedules; otherwise check it refuses them clearly."""
        if isinstance(broker.backend, ScheduleStore):
            return True
        if getattr(self, "_refused_by", None) is broker:
            return False  # checked already (hypothesis runs a test many times per store)
        self._refused_by = broker
        broker.declare_queue("q")
        for use in (
            lambda: broker.schedule("s", queue="q", every=60.0),
            broker.schedules,
            broker.run_schedules,
            lambda: broker.unschedule("s"),
        ):
            with pytest.raises(ConfigurationError) as info:
                use()
            assert "schedules" in str(info.value)
            assert broker.backend.name in str(info.value)
        return False

    @staticmethod
    def _slots(broker: Broker, queue: str) -> list[str]:
        """Drain ``queue``; the slot of each message, checked against its dedup id."""
        q = broker.queue(queue)
        out = []
        while batch := q.get_many(100, timeout=0):
            for d in batch:
                mark = d.message.headers["pmsq.schedule"]
                assert d.message.dedup_id == f"schedule:{mark['name']}:{mark['slot']}"
                out.append(mark["slot"])
                d.ack()
        return out

    def test_every_schedule_makes_one_message_per_slot(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        if not self._schedules_or_refused(broker):
            return
        broker.declare_queue("ical")
        start = clock.time()
        made = broker.schedule("ical-poll", queue="ical", every=900.0, payload={"job": "poll"})
        assert made.next_at == dt.datetime.fromtimestamp(start + 900, _UTC)
        assert made.last_at is None
        assert made.paused is False
        assert made.tz == "UTC"
        assert broker.run_schedules() == 0, "every= slots start one period after creation"
        clock.advance(899.0)
        assert broker.run_schedules() == 0
        clock.advance(1.0)
        assert broker.run_schedules() == 1
        assert broker.run_schedules() == 0, "a slot fires once"
        with broker.queue("ical").get(timeout=0) as d:
            assert d.message.payload == {"job": "poll"}
            assert d.message.headers["pmsq.schedule"] == {
                "name": "ical-poll",
                "slot": _iso(start + 900),
            }
            assert d.message.dedup_id == f"schedule:ical-poll:{_iso(start + 900)}"
            assert d.message.correlation_id == d.message.id
        (listed,) = broker.schedules()
        assert listed.last_at == dt.datetime.fromtimestamp(start + 900, _UTC)
        assert listed.next_at == dt.datetime.fromtimestamp(start + 1800, _UTC)
        assert listed.lag == 0.0

    def test_brokers_racing_make_exactly_one_message_per_slot(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        if not self._schedules_or_refused(broker):
            return
        broker.declare_queue("ticks", dedup_window=0.001)  # only the schedule's own guard
        start = clock.time()
        broker.schedule("tick", queue="ticks", every=1.0, catch_up="all")
        others = [self.make_broker(clock) for _ in range(3)]
        self._open_brokers.extend(others)
        brokers = [broker, *others]
        made: list[int] = []  # list.append is atomic; a Counter's += is not
        errors: list[BaseException] = []
        for step in (1.0, 1.0, 3.0, 0.5, 2.5, 1.0, 7.0, 1.0, 1.0, 2.0):
            clock.advance(step)
            barrier = threading.Barrier(len(brokers) * 2)

            def race(b: Broker, barrier: threading.Barrier = barrier) -> None:
                try:
                    barrier.wait()
                    made.append(b.run_schedules())
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=race, args=(b,)) for b in brokers for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert not errors, errors
        expected = [_iso(start + k) for k in range(1, 21)]
        slots = self._slots(broker, "ticks")
        assert sorted(slots) == expected, "every slot exactly once"
        assert sum(made) == len(expected), "run_schedules counts only what it made"

    def test_catch_up_policies_after_the_clock_jumps(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        if not self._schedules_or_refused(broker):
            return
        start = clock.time()
        for policy in ("all", "latest", "none"):
            broker.declare_queue(policy)
            broker.schedule(policy, queue=policy, every=60.0, catch_up=policy)
        clock.advance(10 * 60 + 45)  # ten slots due; the latest is 45 s late (missed)
        assert broker.run_schedules() == 11  # ten, one, none
        assert self._slots(broker, "all") == [_iso(start + 60 * k) for k in range(1, 11)]
        assert self._slots(broker, "latest") == [_iso(start + 600)]
        assert self._slots(broker, "none") == []
        for s in broker.schedules():
            assert s.next_at == dt.datetime.fromtimestamp(start + 660, _UTC)
        clock.advance(60 - 45 + 5)  # the next slot, on time, fires whatever the policy
        assert broker.run_schedules() == 3
        assert self._slots(broker, "none") == [_iso(start + 660)]

    def test_a_cron_slot_at_a_spring_forward_gap_and_a_fall_back_hour(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        if not self._schedules_or_refused(broker):
            return
        broker.declare_queue("nightly")
        # New York: 02:30 does not exist on 2026-03-08 and 01:30 happens twice on 2026-11-01.
        clock.set(dt.datetime(2026, 3, 7, 12, tzinfo=_UTC).timestamp())
        broker.schedule("ny-gap", queue="nightly", cron="30 2 * * *", tz="America/New_York")
        clock.set(dt.datetime(2026, 3, 8, 7, 0, 30, tzinfo=_UTC).timestamp())
        assert broker.run_schedules() == 1
        assert self._slots(broker, "nightly") == ["2026-03-08T07:00:00+00:00"]
        broker.unschedule("ny-gap")
        clock.set(dt.datetime(2026, 10, 31, 12, tzinfo=_UTC).timestamp())
        broker.schedule("ny-fold", queue="nightly", cron="30 1 * * *", tz="America/New_York")
        for hour in (5, 6, 7):  # 01:30 EDT, 01:30 EST, 02:30 EST
            clock.set(dt.datetime(2026, 11, 1, hour, 30, 5, tzinfo=_UTC).timestamp())
            broker.run_schedules()
        assert self._slots(broker, "nightly") == ["2026-11-01T05:30:00+00:00"]

    @settings(
        max_examples=25,
        deadline=None,
        # Every backend's subclass runs this one method: the "executors" differ by design.
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.differing_executors,
        ],
    )
    @given(
        cron=cron_specs(),
        tz=st.sampled_from(["Europe/Lisbon", "America/New_York"]),
        around=st.sampled_from(DST_INSTANTS),
        shift=st.integers(-12 * 3600, 0),
        jumps=st.lists(st.integers(1, 4 * 3600), min_size=1, max_size=10),
    )
    def test_cron_slots_across_dst_match_a_zoneinfo_reference(
        self,
        broker: Broker,
        clock: ManualClock,
        cron: tuple[str, dict[str, set[int]]],
        tz: str,
        around: dt.datetime,
        shift: int,
        jumps: list[int],
    ) -> None:
        if not self._schedules_or_refused(broker):
            return
        for s in broker.schedules():
            broker.unschedule(s.name)
        broker.declare_queue("dst")
        self._slots(broker, "dst")
        start = around.timestamp() + shift - (around.timestamp() + shift) % 60
        clock.set(start)
        # A new name per example: slots of earlier examples are remembered by dedup.
        name = f"dst-{uuid.uuid4().hex[:12]}"
        broker.schedule(name, queue="dst", cron=cron[0], tz=tz, catch_up="all")
        now = start
        for jump in jumps:
            now += jump
            clock.set(now)
            broker.run_schedules()
        expected = reference_slots(cron[1], zoneinfo.ZoneInfo(tz), start, now - now % 60)
        assert self._slots(broker, "dst") == [_iso(t) for t in expected]

    def test_redeclaring_updates_and_keeps_the_cursor_unless_the_timing_changes(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        if not self._schedules_or_refused(broker):
            return
        broker.declare_queue("a")
        broker.declare_queue("b")
        start = clock.time()
        broker.schedule("job", queue="a", every=100.0, payload=1)
        clock.advance(50)
        again = broker.schedule("job", queue="b", every=100.0, payload=2, priority=0)
        assert again.next_at == dt.datetime.fromtimestamp(start + 100, _UTC), "cursor kept"
        assert [s.name for s in broker.schedules()] == ["job"]
        clock.advance(50)
        assert broker.run_schedules() == 1
        assert self.depth(broker, "a") == 0
        (d,) = self.claim(broker.queue("b"))
        assert d.message.payload == 2
        d.ack()
        changed = broker.schedule("job", queue="b", every=30.0, payload=3)
        assert changed.next_at == dt.datetime.fromtimestamp(start + 130, _UTC)
        assert changed.last_at == dt.datetime.fromtimestamp(start + 100, _UTC)
        cron = broker.schedule("job", queue="b", cron="0 * * * *", tz="Europe/Lisbon")
        assert cron.cron == "0 * * * *"
        assert cron.every is None
        assert cron.tz == "Europe/Lisbon"
        assert cron.next_at is not None
        assert cron.next_at.minute == 0

    def test_unschedule_removes_it_and_says_whether_it_existed(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        if not self._schedules_or_refused(broker):
            return
        broker.declare_queue("q")
        broker.schedule("gone", queue="q", every=10.0)
        assert broker.unschedule("gone") is True
        assert broker.unschedule("gone") is False
        clock.advance(100)
        assert broker.run_schedules() == 0
        assert broker.schedules() == []

    def test_tenant_schedules_are_the_tenants_own(self, broker: Broker, clock: ManualClock) -> None:
        if not self._schedules_or_refused(broker):
            return
        broker.declare_queue("channel-sync")
        acme, beta = broker.tenant("acme"), broker.tenant("beta")
        acme.schedule("push", queue="channel-sync", every=60.0, payload="acme")
        beta.schedule("push", queue="channel-sync", every=60.0, payload="beta")
        broker.schedule("push", queue="channel-sync", every=60.0, payload="store")
        assert [(s.tenant, s.payload) for s in acme.schedules()] == [("acme", "acme")]
        assert len(broker.schedules()) == 3, "names are unique per tenant"
        with pytest.raises(ConfigurationError, match="scoped to tenant"):
            acme.schedule("x", queue="channel-sync", every=60.0, tenant="beta")
        clock.advance(60)
        assert broker.run_schedules() == 3
        got = sorted(
            (d.message.tenant or "", d.message.payload)
            for d in self.claim(broker.queue("channel-sync"))
        )
        assert got == [("", "store"), ("acme", "acme"), ("beta", "beta")]
        assert acme.unschedule("push") is True
        assert [s.tenant for s in broker.schedules()] == [None, "beta"]

    @pytest.mark.parametrize(
        ("options", "words"),
        [
            ({"name": "n", "cron": "61 * * * *"}, "invalid cron expression"),
            ({"name": "n", "cron": "0 2 * *"}, "five fields"),
            ({"name": "n", "cron": "0 2 * * *", "tz": "Europe/Atlantis"}, "unknown time zone"),
            ({"name": "n", "cron": "0 2 * * *", "every": 60.0}, "exactly one of cron= or every="),
            ({"name": "n"}, "exactly one of cron= or every="),
            ({"name": "n", "every": 0}, "every must be"),
            ({"name": "n", "every": -1.0}, "every must be"),
            ({"name": "n", "every": 60.0, "queue": "nowhere"}, "unknown queue 'nowhere'"),
            ({"name": "bad\nname", "every": 60.0}, "invalid schedule name"),
            ({"name": "tab\tname", "every": 60.0}, "control characters"),
            ({"name": "n", "every": 60.0, "catch_up": "some"}, "catch_up must be"),
        ],
    )
    def test_bad_input_is_refused_and_nothing_is_stored(
        self, broker: Broker, options: dict[str, Any], words: str
    ) -> None:
        if not self._schedules_or_refused(broker):
            return
        broker.declare_queue("q")
        args = {"queue": "q", **options}
        name = args.pop("name")
        with pytest.raises(ConfigurationError) as info:
            broker.schedule(name, **args)
        assert words in str(info.value)
        assert broker.schedules() == []
        assert [q.name for q in broker.queues()] == ["q"], "no queue created either"

    def test_schedules_are_stored_for_every_process(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        if not self._schedules_or_refused(broker):
            return
        broker.declare_queue("q")
        broker.schedule("kept", queue="q", cron="0 2 * * *", tz="Europe/Lisbon", payload=[1])
        again = self.reopen(broker, clock)
        (s,) = again.schedules()
        assert (s.name, s.cron, s.tz, s.payload) == ("kept", "0 2 * * *", "Europe/Lisbon", [1])

    def test_a_schedule_is_paused_while_a_pause_holds_what_it_makes(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        if not self._schedules_or_refused(broker) or not broker.backend.capabilities.control:
            return  # without pauses (the control family) nothing is ever paused
        broker.declare_queue("sync")
        broker.declare_queue("other")
        broker.schedule("all", queue="sync", every=60.0)
        broker.tenant("acme").schedule("acme", queue="sync", every=60.0)
        broker.schedule("keyed", queue="sync", every=60.0, key="property:1")

        def paused() -> dict[str, bool]:
            return {s.name: s.paused for s in broker.schedules()}

        assert paused() == {"acme": False, "all": False, "keyed": False}
        broker.pause("other")
        assert paused() == {"acme": False, "all": False, "keyed": False}
        broker.pause("sync", tenant="acme")
        assert paused() == {"acme": True, "all": False, "keyed": False}
        broker.pause("sync", key="property:1")
        assert paused() == {"acme": True, "all": False, "keyed": True}
        broker.pause("sync", until=clock.time() + 30.0)
        assert paused() == {"acme": True, "all": True, "keyed": True}
        clock.advance(61.0)
        # A paused schedule still fires on time; its messages wait like any put.
        assert broker.run_schedules() == 3
        assert broker.resume("sync", tenant="acme")
        assert broker.resume("sync", key="property:1")
        assert paused() == {"acme": False, "all": False, "keyed": False}  # the timed one lapsed
