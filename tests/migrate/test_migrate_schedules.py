"""``pmsq migrate`` carries recurring schedules (with their cursors) and operator pauses.

Before, a store moved with ``pmsq migrate`` lost its schedules and pauses:
nightly rate pushes stopped and a queue held for an outage flowed again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import pmsq
from pmsq.backends.types import PauseRecord
from pmsq.migrate import BackendSource, copy
from tests.cli.conftest import Run

T0 = 1_800_000_000.0


def _fill(path: Path, clock: pmsq.ManualClock) -> None:
    with pmsq.connect(str(path), durability="normal", clock=clock) as b:
        b.declare_queue("channel-sync")
        b.declare_queue("housekeeping")
        b.tenant("acme").schedule(
            "nightly-rates", queue="channel-sync", every=3600.0, payload={"push": "rates"}
        )
        b.schedule(
            "checkout-sweep",
            queue="housekeeping",
            cron="0 11 * * *",
            tz="Europe/Lisbon",
            payload={"sweep": True},
            key="sweep",
            headers={"source": "cron"},
        )
        # One slot of nightly-rates fired in the source: its message and cursor move.
        clock.advance(3600.5)
        assert b.run_schedules() == 1
        b.pause("channel-sync", tenant="acme", reason="channel manager outage")
        b.pause("housekeeping", key="room:12", until=T0 + 86_400, reason="deep clean")
        # A circuit breaker's pause is the state of an outage, learnt again from failures.
        b.backend.pause(  # type: ignore[attr-defined]
            PauseRecord(queue="housekeeping", tenant="blue", circuit=True, until=T0 + 9e5),
            now=clock.time(),
        )


@pytest.fixture
def clock() -> pmsq.ManualClock:
    return pmsq.ManualClock(T0)


@pytest.fixture
def src(tmp_path: Path, clock: pmsq.ManualClock) -> Path:
    path = tmp_path / "src.db"
    _fill(path, clock)
    return path


def _schedules(path: Path) -> list[tuple[object, ...]]:
    with pmsq.connect(str(path)) as b:
        return [
            (
                s.tenant,
                s.name,
                s.queue,
                s.cron,
                s.every,
                s.tz,
                s.next_at,
                s.last_at,
                s.key,
                s.payload,
                s.headers,
            )
            for s in b.schedules()
        ]


def _pauses(path: Path) -> list[tuple[object, ...]]:
    with pmsq.connect(str(path)) as b:
        return [(p.queue, p.tenant, p.key, p.until, p.reason, p.circuit) for p in b.pauses()]


def test_schedules_move_with_their_cursors_and_fire_on_from_there(
    cli: Run, src: Path, tmp_path: Path, clock: pmsq.ManualClock
) -> None:
    dst = tmp_path / "dst.db"
    code, out, err = cli("migrate", str(src), str(dst))
    assert (code, err) == (0, ""), err
    assert "2 schedule(s), cursors kept; 2 pause(s)" in out
    assert _schedules(dst) == _schedules(src)
    with pmsq.connect(str(dst), clock=clock) as b:
        # The slot the source fired is neither fired again nor skipped.
        assert b.run_schedules() == 0
        clock.advance(3600.0)
        assert b.run_schedules() == 1
        b.resume("channel-sync", tenant="acme")
        slots = [
            d.message.headers["pmsq.schedule"]
            for d in b.queue("channel-sync").get_many(10, timeout=0)
        ]
    assert len(slots) == 2, "the source's fired slot (copied) and the next one, once each"
    assert len(set(map(str, slots))) == 2


def test_operator_pauses_move_and_hold_circuit_pauses_do_not(
    cli: Run, src: Path, tmp_path: Path
) -> None:
    dst = tmp_path / "dst.db"
    assert cli("migrate", str(src), str(dst))[0] == 0
    assert _pauses(dst) == [p for p in _pauses(src) if not p[5]]
    assert len(_pauses(dst)) == 2
    with pmsq.connect(str(dst)) as b:
        # The paused tenant's message waits in the destination as it did in the source.
        assert b.queue("channel-sync").get_many(10, timeout=0) == []


def test_a_second_run_adds_no_schedule_or_pause_and_keeps_the_destinations_cursor(
    cli: Run, src: Path, tmp_path: Path, clock: pmsq.ManualClock
) -> None:
    dst = tmp_path / "dst.db"
    assert cli("migrate", str(src), str(dst))[0] == 0
    code, out, _ = cli("migrate", str(src), str(dst))
    assert code == 0
    assert "schedule(s)" not in out
    assert "pause(s)" not in out
    with pmsq.connect(str(dst), clock=clock) as b:
        clock.advance(3600.0)
        assert b.run_schedules() == 1  # the destination moved on
    moved_on = _schedules(dst)
    with pmsq.connect(str(src)) as s, pmsq.connect(str(dst)) as d:
        result = copy(BackendSource(s.backend, "src"), d.backend)
    assert (result.schedules_copied, result.pauses_copied) == (0, 0)
    assert _schedules(dst) == moved_on, "the destination's cursor is kept, not rewound"


def test_a_schedule_defined_otherwise_in_the_destination_stops_before_writing(
    cli: Run, src: Path, tmp_path: Path
) -> None:
    dst = tmp_path / "dst.db"
    with pmsq.connect(str(dst)) as b:
        b.declare_queue("housekeeping")
        b.schedule("checkout-sweep", queue="housekeeping", cron="0 12 * * *", tz="Europe/Lisbon")
    before = _schedules(dst)
    code, _, err = cli("migrate", str(src), str(dst))
    assert code != 0
    assert "schedule(s) with another definition: checkout-sweep" in err
    assert _schedules(dst) == before
    with pmsq.connect(str(dst)) as b:
        assert [c.name for c in b.backend.list_queues()] == ["housekeeping"]
        assert b.pauses() == []


def test_one_queue_moves_only_its_schedules_and_pauses(cli: Run, src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst.db"
    code, out, err = cli("migrate", str(src), str(dst), "--queue", "housekeeping")
    assert code == 0, err
    assert "1 schedule(s), cursors kept; 1 pause(s)" in out
    assert [s[1] for s in _schedules(dst)] == ["checkout-sweep"]
    assert [(p[0], p[2]) for p in _pauses(dst)] == [("housekeeping", "room:12")]
