"""The dashboard rendered from known snapshots into a recording console of fixed width."""

from __future__ import annotations

import datetime as dt
import io

import attrs
import pytest
from rich.console import Console, RenderableType

from pmsq.alerts import AlertRule, evaluate
from pmsq.monitor.figures import Tracker, fmt_age, fmt_ms, plain_text, rows, sparkline
from pmsq.monitor.render import TREND_FLOOR, render
from pmsq.stats import QueueStats, Stats

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
RED = "\x1b[1;31m"
YELLOW = "\x1b[33m"


def snapshot(at: float = 0.0, scale: int = 1, **email: object) -> Stats:
    """Three queues; totals grow with ``scale``; ``email`` overrides email's figures."""
    fields: dict[str, object] = {
        "ready": 40,
        "delayed": 12,
        "in_flight": 4,
        "dead": 3,
        "consumers": 2,
        "oldest_age": 12.0,
        "processed": 50 * scale,
        "failed": 10 * scale,
        "processed_per_minute": 300,
        "failed_per_minute": 60,
        "p50_ms": 25.0,
        "p95_ms": 180.0,
    }
    fields.update(email)
    return Stats(
        queues={
            "calendar": QueueStats(
                "calendar",
                ready=3,
                delayed=1,
                in_flight=2,
                consumers=1,
                oldest_age=1.5,
                processed=100 * scale,
                processed_per_minute=600,
                p50_ms=3.2,
                p95_ms=12.0,
                tenants={
                    "acme": QueueStats("calendar", ready=2, consumers=1, processed=60 * scale),
                    "blue": QueueStats("calendar", ready=1, consumers=1, processed=40 * scale),
                },
            ),
            "email": QueueStats("email", **fields),  # type: ignore[arg-type]
            "accounting": QueueStats("accounting", processed=7 * scale),
        },
        taken_at=T0 + dt.timedelta(seconds=at),
    )


def text_of(renderable: RenderableType, width: int, *, styles: bool = False) -> str:
    console = Console(
        record=True,
        width=width,
        force_terminal=True,
        color_system="standard",
        file=io.StringIO(),
    )
    console.print(renderable)
    return console.export_text(styles=styles)


def line_of(text: str, first_word: str) -> str:
    for line in text.splitlines():
        # ANSI codes may precede the word; compare on the visible text.
        visible = line
        while "\x1b[" in visible:
            start = visible.index("\x1b[")
            visible = visible[:start] + visible[visible.index("m", start) + 1 :]
        if visible.split() and visible.split()[0] == first_word:
            return line
    raise AssertionError(f"no line starting with {first_word!r} in:\n{text}")


@pytest.mark.parametrize("width", [80, 100, 120])
def test_every_line_fits_the_width_and_every_queue_has_a_row(width: int) -> None:
    text = text_of(render(snapshot(10, 2), snapshot(0, 1), {}, width), width)
    assert all(len(line) <= width for line in text.splitlines()), text
    for queue in ("accounting", "calendar", "email"):
        line_of(text, queue)


def test_queue_row_shows_depth_dead_age_and_latency_at_80_columns() -> None:
    text = text_of(render(snapshot(10, 2), snapshot(0, 1), {}, 80), 80)
    assert line_of(text, "queue").split() == [
        "queue",
        "ready",
        "delay",
        "infl",
        "wk",
        "dead",
        "oldest",
        "done/s",
        "fail/s",
        "fail%",
        "p50/p95",
    ]
    # ready delayed in-flight workers dead oldest done/s fail/s fail% p50/p95
    assert line_of(text, "email").split() == [
        "email",
        "40",
        "12",
        "4",
        "2",
        "3",
        "12s",
        "5.0",  # (100 - 50) processed over 10 s
        "1.0",  # (20 - 10) failed over 10 s
        "17%",  # 60 / (300 + 60) over the last minute
        "25ms/180ms",
    ]
    assert line_of(text, "calendar").split()[1:7] == ["3", "1", "2", "1", "0", "1.5s"]


def test_rates_fall_back_to_the_last_minute_without_a_previous_snapshot() -> None:
    text = text_of(render(snapshot(), None, {}, 80), 80)
    # 300 processed and 60 failed per minute
    assert line_of(text, "email").split()[7:9] == ["5.0", "1.0"]


def test_the_wide_layout_cuts_no_figure_at_100_columns() -> None:
    # Real figures at the narrowest wide screen: fractional latencies, a long
    # queue name, a trend scale with decimals; no cell may end in an ellipsis.
    snap = snapshot(10, 2, p50_ms=7.8, p95_ms=18.4, oldest_age=1.2)
    snap = attrs.evolve(
        snap,
        queues={
            **snap.queues,
            "email.fallback": attrs.evolve(snap.queues["email"], name="email.fallback"),
        },
    )
    history = {"email": [66.5, 60.0, 12.5]}
    text = text_of(render(snap, snapshot(0, 1), {}, 100, history=history), 100)
    assert "…" not in text, text


def test_wide_layout_has_separate_latencies_and_a_trend_sparkline() -> None:
    history = {"calendar": [1.0, 2.0, 4.0, 8.0]}
    text = text_of(render(snapshot(10, 2), snapshot(0, 1), {}, 100, history=history), 100)
    header = line_of(text, "queue")
    assert "p50" in header
    assert "p95" in header
    assert "trend" in header
    assert line_of(text, "calendar").rstrip().endswith(sparkline([1, 2, 4, 8]))
    assert line_of(text, "email").split()[10:12] == ["25ms", "180ms"]


def test_dead_letters_colour_the_queue_red_and_healthy_queues_stay_uncoloured() -> None:
    text = text_of(render(snapshot(), None, {}, 100), 100, styles=True)
    assert RED in line_of(text, "email")
    assert RED not in line_of(text, "calendar")
    assert YELLOW not in line_of(text, "calendar")
    plain = text_of(render(snapshot(), None, {}, 100), 100)
    assert "● email: 3 dead letters (alert above 0)" in plain


def test_old_messages_colour_the_age_yellow_by_default() -> None:
    snap = snapshot(dead=0, oldest_age=400.0)
    text = text_of(render(snap, None, {}, 80), 80, styles=True)
    email = line_of(text, "email")
    assert YELLOW + " 6m40s" in email or YELLOW + "6m40s" in email
    assert RED not in email.split("email")[1].split("6m40s")[0]


def test_a_stored_rule_overrides_the_defaults_threshold_by_threshold() -> None:
    rules = {"email": AlertRule("email", dead_letters=5, max_failure_rate=0.1)}
    text = text_of(render(snapshot(), None, rules, 80), 80)
    assert "dead letters" not in text  # 3 dead is within the rule's 5
    assert "● email: 17% of deliveries failed (alert above 10%)" in text
    styled = text_of(render(snapshot(), None, rules, 80), 80, styles=True)
    assert RED + "  17%" in line_of(styled, "email") or RED + "17%" in line_of(styled, "email")


def test_depth_rule_marks_the_row_yellow() -> None:
    rules = {"calendar": AlertRule("calendar", max_depth=5)}
    text = text_of(render(snapshot(dead=0), None, rules, 80), 80, styles=True)
    assert YELLOW in line_of(text, "calendar")
    assert "calendar: 6 messages waiting (alert above 5)" in text_of(
        render(snapshot(dead=0), None, rules, 80), 80
    )


def test_tenant_lines_follow_their_queue() -> None:
    text = text_of(render(snapshot(10, 2), snapshot(0, 1), {}, 80, tenants=True), 80)
    lines = [line.split() for line in text.splitlines()]
    at = next(i for i, words in enumerate(lines) if words and words[0] == "calendar")
    assert lines[at + 1][:3] == ["└", "acme", "2"]
    assert lines[at + 2][:3] == ["└", "blue", "1"]
    assert lines[at + 1][8] == "6.0"  # acme: 60 more processed over 10 s


def test_no_queues_and_no_alerts_say_so() -> None:
    text = text_of(render(Stats(taken_at=T0), None, {}, 80), 80)
    assert "no queues in this store yet" in text
    assert "no alerts" in text


def test_rows_never_show_negative_rates_when_totals_shrink() -> None:
    out = rows(snapshot(10, 1), snapshot(0, 5))
    assert all(r.processed_per_s == 0 and r.failed_per_s == 0 for r in out)


def test_tracker_keeps_the_previous_snapshot_and_throughput_history() -> None:
    tracker = Tracker(samples=3)
    for i in range(5):
        tracker.update(snapshot(10 * i, i))
    assert tracker.previous is not None
    assert tracker.current is not None
    assert (tracker.current.taken_at - tracker.previous.taken_at).total_seconds() == 10
    assert list(tracker.history["calendar"]) == [10.0, 10.0, 10.0]


def test_sparkline_scales_to_the_largest_value() -> None:
    assert sparkline([]) == ""
    assert sparkline([0, 0]) == "▁▁"
    assert sparkline([0, 4, 8]) == "▁▅█"
    assert len(sparkline(list(range(50)), width=10)) == 10


def test_formatting_helpers() -> None:
    assert [fmt_age(x) for x in (None, 0.44, 42, 184, 7500, 90000)] == [
        "-",
        "0.4s",
        "42s",
        "3m04s",
        "2h05m",
        "1d01h",
    ]
    assert [fmt_ms(x) for x in (None, 0.42, 25, 1234)] == ["-", "0.4ms", "25ms", "1.2s"]


def test_plain_text_has_one_line_per_queue_and_the_alerts() -> None:
    snap = snapshot(10, 2)
    text = plain_text(snap, snapshot(0, 1), evaluate(snap, {}), source="pms.db")
    lines = text.splitlines()
    assert lines[0] == "pmsq 2024-05-01T12:00:10Z pms.db"
    email = next(line for line in lines if line.startswith("email "))
    assert "ready=40 delayed=12 in_flight=4 dead=3" in email
    assert "processed/s=5.0 failed/s=1.0 fail=17%" in email
    assert email.endswith("ALERT")
    assert lines[-1] == "CRITICAL: email: 3 dead letters (alert above 0)"
    assert "\x1b" not in text


def test_tracker_measures_rates_over_a_window_not_between_adjacent_snapshots() -> None:
    # Writers flush their counts about once a second: adjacent snapshots 0.5 s apart
    # would alternate between 0 and bursts.
    tracker = Tracker(window=5.0)
    for i in range(20):
        tracker.update(snapshot(0.5 * i, i // 2))  # totals step once per second
    assert tracker.current is not None
    assert tracker.previous is not None
    age = (tracker.current.taken_at - tracker.previous.taken_at).total_seconds()
    assert 5.0 <= age < 5.5
    assert 80 <= list(tracker.history["calendar"])[-1] <= 120  # 100 acks a second
    assert min(list(tracker.history["calendar"])[-8:]) > 0


def test_trend_bars_share_one_scale_so_an_idle_queue_looks_idle() -> None:
    busy = [80.0, 120.0, 100.0, 110.0]
    idle = [0.2, 0.2, 0.2, 0.2]
    text = text_of(
        render(snapshot(10, 2), snapshot(0, 1), {}, 100, history={"calendar": busy, "email": idle}),
        100,
    )
    assert line_of(text, "email").rstrip().endswith("▁▁▁▁")
    assert line_of(text, "calendar").rstrip().endswith(sparkline(busy))
    assert "trend ≤120/s" in line_of(text, "queue")
    # Alone, 0.2 msg/s is still drawn against the floor of the scale, not as a full bar.
    text = text_of(render(snapshot(10, 2), snapshot(0, 1), {}, 100, history={"email": idle}), 100)
    assert line_of(text, "email").rstrip().endswith("▁▁▁▁")
    assert f"trend ≤{TREND_FLOOR:.1f}/s" in line_of(text, "queue")


def test_sparkline_against_a_given_top() -> None:
    assert sparkline([1, 7], top=7) == "▂█"
    assert sparkline([14], top=7) == "█"  # above the scale: a full bar, not an error
    assert sparkline([0.2, 0.2], top=5) == "▁▁"
