"""``pmsq demo``: the verification is a pure function that catches broken histories,
and a short real run passes it."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from rich.console import Console

from pmsq.demo.app import DemoRun
from pmsq.demo.model import (
    Handled,
    History,
    Published,
    ReminderFacts,
    apply_event,
    replay_calendar,
    verify,
)
from pmsq.demo.run import run_demo

ROOT = Path(__file__).resolve().parents[2]


def event(tenant: str, prop: int, seq: int, topic: str, **payload: object) -> Published:
    queues = ("calendar", "email") if topic.startswith("booking.") else ("email",)
    return Published(f"{tenant}/{prop}/{seq}", topic, tenant, prop, seq, queues, payload)


def small_history() -> History:
    """Property 1 of acme: a booking, a change, a cancellation; property 2: a booking."""
    published = [
        event("acme", 1, 1, "booking.created", booking_id=7, start=3, nights=2),
        event("acme", 2, 1, "booking.created", booking_id=8, start=1, nights=1),
        event("acme", 1, 2, "booking.modified", booking_id=7, start=4, nights=3),
        event("acme", 1, 3, "booking.cancelled", booking_id=7),
        event("acme", 1, 4, "guest.message", booking_id=7, text="hi"),
    ]
    handled = [Handled(q, e.event_id, e.tenant, e.prop, e.seq) for e in published for q in e.queues]
    calendars = replay_calendar(published)
    return History(published, handled, {"email": [], "calendar": []}, calendars)


def failed(history: History) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for c in verify(history):
        if not c.ok:
            out.setdefault(c.name, []).append(c.queue)
    return out


def test_a_correct_history_passes_every_check() -> None:
    checks = verify(small_history())
    assert all(c.ok for c in checks), checks
    names = {(c.name, c.queue) for c in checks}
    assert ("property order", "calendar") in names
    assert ("calendar = replay", "calendar") in names
    assert ("nothing lost", "email.fallback") in names


def test_handling_a_cancellation_before_its_booking_change_fails_order() -> None:
    h = small_history()
    handled = list(h.handled)
    i = next(n for n, x in enumerate(handled) if x.queue == "calendar" and x.seq == 2)
    j = next(n for n, x in enumerate(handled) if x.queue == "calendar" and x.seq == 3)
    handled[i], handled[j] = handled[j], handled[i]
    broken = attrs.evolve(h, handled=handled)
    assert failed(broken) == {"property order": ["calendar"]}
    [check] = [c for c in verify(broken) if not c.ok]
    assert check.problems == ("acme/property:1: event #2 handled after #3",)


def test_a_redelivery_right_after_its_first_run_is_allowed_but_going_back_is_not() -> None:
    h = small_history()
    first = h.handled[0]
    again = attrs.evolve(h, handled=[first, *h.handled])  # at-least-once: twice in a row
    assert failed(again) == {}
    late = attrs.evolve(h, handled=[*h.handled, first])  # #1 again after #4: out of order
    assert failed(late) == {"property order": ["calendar"]}


def test_a_lost_event_is_reported_unless_it_was_dead_lettered() -> None:
    h = small_history()
    lost = h.handled[-1]  # the guest message's email
    without = attrs.evolve(h, handled=[x for x in h.handled if x != lost])
    assert failed(without) == {"nothing lost": ["email"]}
    dead = attrs.evolve(without, dead={"email": [lost.event_id], "calendar": []})
    # Dead-lettered counts as accounted for, but its fallback copy must then be handled.
    assert failed(dead) == {"nothing lost": ["email.fallback"]}
    sms = Handled("email.fallback", lost.event_id, lost.tenant, lost.prop, lost.seq)
    assert failed(attrs.evolve(dead, handled=[*dead.handled, sms])) == {}


def test_a_calendar_that_differs_from_the_replay_fails() -> None:
    h = small_history()
    calendars = {k: dict(v) for k, v in h.calendars.items()}
    calendars["acme/property:2"]["8"] = (1, 5)
    assert failed(attrs.evolve(h, calendars=calendars)) == {"calendar = replay": ["calendar"]}


def test_applying_events_out_of_order_leaves_a_visible_trace() -> None:
    in_order: dict[str, tuple[int, int]] = {}
    swapped: dict[str, tuple[int, int]] = {}
    created = {"booking_id": 1, "start": 2, "nights": 3}
    apply_event(in_order, "booking.created", created)
    apply_event(in_order, "booking.cancelled", {"booking_id": 1})
    apply_event(swapped, "booking.cancelled", {"booking_id": 1})
    apply_event(swapped, "booking.created", created)
    assert in_order == {}
    assert swapped == {"1": (2, 3)}


@pytest.fixture(scope="module")
def real_history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    """One short real day (with the real injected failures), recorded."""
    path = tmp_path_factory.mktemp("demo") / "day.db"
    day = DemoRun(str(path), duration=2.0, seed=11)
    stop = day.start()
    try:
        assert day.drained.wait(120), "the demo did not drain"
    finally:
        stop()
    try:
        yield day.history()
    finally:
        day.close()


def test_a_real_day_passes_and_breaking_its_order_on_purpose_fails(
    real_history: History,
) -> None:
    assert all(c.ok for c in verify(real_history)), verify(real_history)
    assert real_history.dead["email"], "the poison messages should have been dead-lettered"
    calendar = [h for h in real_history.handled if h.queue == "calendar"]
    by_key: dict[str, list[Handled]] = {}
    for h in calendar:
        by_key.setdefault(h.key, []).append(h)
    _key, runs = next((k, v) for k, v in by_key.items() if len(v) >= 2)
    handled = list(real_history.handled)
    a, b = handled.index(runs[0]), handled.index(runs[1])
    handled[a], handled[b] = handled[b], handled[a]
    assert failed(attrs.evolve(real_history, handled=handled))["property order"] == ["calendar"]


def test_a_buggy_handler_makes_the_demo_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = DemoRun.update_calendar

    def forgets_cancellations(self: DemoRun, msg: object) -> None:
        if getattr(msg, "topic", None) == "booking.cancelled":
            self._record(msg)  # type: ignore[arg-type]
            return
        real(self, msg)  # type: ignore[arg-type]

    monkeypatch.setattr(DemoRun, "update_calendar", forgets_cancellations)
    out = io.StringIO()
    console = Console(file=out, width=120)
    code = run_demo(str(tmp_path / "bug.db"), duration=1.5, seed=3, live=False, console=console)
    assert code == 1
    assert "✗ FAIL" in out.getvalue()
    assert "calendar = replay" in out.getvalue()


def test_pmsq_demo_short_run_exits_0_and_prints_the_verification(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    db = tmp_path / "demo.db"
    done = subprocess.run(
        [sys.executable, "-m", "pmsq", "demo", "--duration", "3", "--no-monitor", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert out.splitlines()[0] == f"store: {db}  (worker log: {db}.log)"
    assert "dead-lettered" in Path(f"{db}.log").read_text()
    assert "verification" in out
    assert "✓ all checks passed" in out
    for queue in ("accounting", "calendar", "cleaning", "email", "channel", "email.fallback"):
        assert f"nothing lost        {queue}" in out
    assert "cancel withdraws    reminders" in out
    assert "maintenance held    channel" in out
    assert "✗" not in out
    assert db.exists()


def test_demo_refuses_an_existing_file(tmp_path: Path) -> None:
    from pmsq.cli import main

    existing = tmp_path / "mine.db"
    existing.write_text("keep me")
    assert main(["demo", "--db", str(existing), "--no-monitor"]) == 1
    assert existing.read_text() == "keep me"


def test_the_alert_line_says_callbacks_fire_once_when_an_alert_starts(tmp_path: Path) -> None:
    from pmsq.alerts import Alert
    from pmsq.demo.run import _progress

    day = DemoRun(str(tmp_path / "day.db"), duration=5)
    try:
        day.alerts_fired.append(Alert("email", None, "dead", "critical", 1, 0))
        day.alerts_fired_at.append(3.2)
        text = _progress(day).plain
    finally:
        day.close()
    # The table shows today's count of dead letters; the callback's figure is from 3 s in.
    assert (
        "alert callbacks fired: 1 (each once, when its alert starts)\n"
        "  latest, at 3s: email: 1 dead letter (alert above 0)"
    ) in text


def reminder_facts(**journal: list[str]) -> ReminderFacts:
    """Reminders r1.. of booking 7 (cancelled, withdrawing every reminder journaled so)."""
    cancelled = sum(1 for events in journal.values() if events[-1] == "cancelled")
    return ReminderFacts(
        booking_of=dict.fromkeys(journal, 7),
        sent=[mid for mid, events in journal.items() if "acked" in events],
        withdrawn={7: cancelled},
        journal=journal,
    )


def test_reminders_sent_or_withdrawn_pass() -> None:
    facts = reminder_facts(
        r1=["put", "delivered", "acked"],
        r2=["put", "cancelled"],
        r3=["put", "delivered", "cancelled"],  # in flight when cancelled: allowed
    )
    h = attrs.evolve(small_history(), reminders=facts)
    [check] = [c for c in verify(h) if c.queue == "reminders"]
    assert check.ok, check
    assert check.detail == "3 put: 1 sent, 2 withdrawn by 1 cancellations"


def test_a_reminder_delivered_after_its_withdrawal_or_left_waiting_fails() -> None:
    late = reminder_facts(r1=["put", "cancelled", "delivered", "cancelled"])
    h = attrs.evolve(small_history(), reminders=late)
    assert failed(h) == {"cancel withdraws": ["reminders"]}
    [check] = [c for c in verify(h) if not c.ok]
    assert check.problems == ("reminder r1 was delivered after it was withdrawn",)

    waiting = reminder_facts(r1=["put", "cancelled"], r2=["put"])
    assert failed(attrs.evolve(small_history(), reminders=waiting)) == {
        "cancel withdraws": ["reminders"]
    }


def test_withdrawn_counts_must_match_the_journal() -> None:
    facts = attrs.evolve(reminder_facts(r1=["put", "cancelled"]), withdrawn={7: 2})
    h = attrs.evolve(small_history(), reminders=facts)
    [check] = [c for c in verify(h) if not c.ok]
    assert check.problems == ("2 withdrawn by cancellations, but 1 journaled",)


@pytest.mark.parametrize(
    ("channel", "dead", "ok"),
    [
        ((True, False, 4), [], True),
        ((False, False, 4), [], False),  # the circuit never opened
        ((True, True, 4), [], False),  # still paused at the end
        ((True, False, 4), ["x"], False),  # the maintenance killed a push
    ],
)
def test_the_maintenance_check(channel: tuple[bool, bool, int], dead: list[str], ok: bool) -> None:
    h = attrs.evolve(small_history(), channel=channel, dead={"email": [], "channel": dead})
    [check] = [c for c in verify(h) if c.name == "maintenance held"]
    assert check.ok is ok


def test_a_real_day_withdraws_reminders_and_rides_out_the_maintenance(
    real_history: History,
) -> None:
    checks = {(c.name, c.queue): c for c in verify(real_history)}
    assert checks[("cancel withdraws", "reminders")].ok
    assert checks[("maintenance held", "channel")].ok
    facts = real_history.reminders
    assert facts is not None
    assert sum(facts.withdrawn.values()) > 0, "some cancellation should withdraw reminders"
    assert real_history.channel is not None
    assert real_history.channel[0], "the maintenance should open the channel's circuit"
