"""History.record (operator events in the journal), per-minute series and the SVG charts."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pmsq
from pmsq.backends import History
from pmsq.backends.types import HistoryEvent
from pmsq.clock import ManualClock
from pmsq.web import charts
from pmsq.web.series import MINUTES, read_series

START = 1_800_000_000.0  # a whole minute


def _event(mid: str, **detail: object) -> HistoryEvent:
    return HistoryEvent(
        at=START,
        message_id=mid,
        queue="email",
        tenant="acme",
        key=None,
        correlation_id=None,
        event="operator",
        detail=dict(detail),
    )


def test_record_writes_operator_events_beside_the_message_events(tmp_path: Path) -> None:
    with pmsq.connect(str(tmp_path / "s.db"), clock=ManualClock(START)) as broker:
        mid = broker.queue("email").put({"a": 1}, tenant="acme")
        backend = broker.backend
        assert isinstance(backend, History)
        backend.record([_event(mid, action="redrive", by="token:abc"), _event("", action="x")])
        events = backend.history(message_id=mid)
        assert [e.event for e in events] == ["put", "operator"]
        op = events[-1]
        assert op.detail == {"action": "redrive", "by": "token:abc"}
        assert op.tenant == "acme"
        assert op.process is not None
        assert op.process.endswith(f":{os.getpid()}")
        assert [e.detail["action"] for e in backend.history(message_id="")] == ["x"]


def test_record_keeps_nothing_without_a_journal(tmp_path: Path) -> None:
    with pmsq.connect(str(tmp_path / "s.db"), history=None) as broker:
        backend = broker.backend
        assert isinstance(backend, History)
        backend.record([_event("m1", action="purge")])
    with pmsq.connect(str(tmp_path / "s.db")) as broker:
        backend = broker.backend
        assert isinstance(backend, History)
        assert backend.history(message_id="m1") == []


def test_series_puts_each_minutes_outcomes_in_its_place(tmp_path: Path) -> None:
    clock = ManualClock(START)
    with pmsq.connect(str(tmp_path / "s.db"), clock=clock, durability="memory") as broker:
        broker.declare_queue("email", max_attempts=1)
        q = broker.queue("email")

        def finish(n: int, *, fail: int = 0, tenant: str | None = None) -> None:
            for _ in range(n + fail):
                q.put({}, tenant=tenant)
            for i in range(n + fail):
                with q.get(timeout=0) as d:
                    if i >= n:
                        d.dead_letter("no")
            # Counters are buffered and written about once a second, into the slot of
            # the time they are written: write them now, at the manual clock's time.
            broker.backend.stats(now=clock.time())

        finish(3, tenant="acme")  # minute 0
        clock.advance(120)
        finish(2, fail=1)  # minute 2
        clock.advance(60)
        finish(1, tenant="acme")  # minute 3: the minute in progress
        now = clock.time()
        series = read_series(broker.backend, now)
        assert series is not None
        total = series[("email", "")]
        assert len(total.processed) == MINUTES
        assert total.processed[-4:] == (3, 0, 2, 1)
        assert total.failed[-4:] == (0, 0, 0, 0)  # a dead_letter() is not a handler failure
        assert sum(total.processed) == 6
        assert total.p95_ms[-2] is not None
        assert total.p95_ms[-3] is None  # nothing finished that minute
        acme = series[("email", "acme")]
        assert acme.processed[-4:] == (3, 0, 0, 1)
        # A tenant viewer's series hold only its tenant.
        only = read_series(broker.backend, now, tenant="acme")
        assert only is not None
        assert only[("email", "")].processed[-4:] == (3, 0, 0, 1)
        # An hour later the old points have left the chart.
        later = read_series(broker.backend, now + 3600)
        assert later is not None
        assert all(sum(s.processed) == 0 for s in later.values())


def test_no_series_for_an_in_memory_store() -> None:
    with pmsq.connect(":memory:") as broker:
        assert read_series(broker.backend, START) is None


_counts = st.lists(st.integers(0, 10_000), min_size=1, max_size=60)


@given(_counts, st.data())
def test_bars_stay_inside_the_chart(processed: list[int], data: st.DataObject) -> None:
    failed = data.draw(st.lists(st.integers(0, 10_000), min_size=len(processed),
                                max_size=len(processed)))  # fmt: skip
    svg = str(charts.bars(processed, failed, title="t"))
    rects = re.findall(r'<rect class="(ok|bad)" x="([\d.]+)" y="([-\d.]+)" '
                       r'width="([\d.]+)" height="([\d.]+)"/>', svg)  # fmt: skip
    assert sum(1 for r in rects if r[0] == "ok") == sum(1 for p in processed if p)
    assert sum(1 for r in rects if r[0] == "bad") == sum(1 for f in failed if f)
    for _, x, y, w, h in rects:
        assert float(x) >= 0
        assert float(x) + float(w) <= 240.05
        assert -0.05 <= float(y) <= 48
        assert float(y) + float(h) <= 48.05
    tallest = max(p + f for p, f in zip(processed, failed, strict=True))
    if tallest:
        tops = [float(r[2]) for r in rects]
        assert min(tops) == pytest.approx(0.0, abs=0.05)


@given(st.lists(st.one_of(st.none(), st.floats(0, 1e6)), min_size=1, max_size=60))
def test_line_draws_every_known_point(values: list[float | None]) -> None:
    svg = str(charts.line(values, title="p95"))
    points = re.findall(r"([\d.]+),([\d.]+)", svg)
    circles = re.findall(r'cx="([\d.]+)" cy="([\d.]+)"', svg)
    assert len(points) + len(circles) == sum(1 for v in values if v is not None)
    for _, y in points + circles:
        assert 0 <= float(y) <= 48


def test_chart_titles_are_escaped() -> None:
    assert "<script>" not in charts.bars([1], [0], title="<script>x</script>")
    assert "&lt;script&gt;" in charts.line([1.0], title="<script>x</script>")


def test_charts_sharing_a_top_draw_a_quiet_series_low() -> None:
    quiet = str(charts.bars([1], [0], title="q", top=100.0))
    alone = str(charts.bars([1], [0], title="q"))
    assert 'height="0.5"' in quiet  # 1 of 100: a sliver
    assert 'height="48.0"' in alone  # its own top: full height
    # A top below the series' own highest never clips it.
    assert 'height="48.0"' in str(charts.bars([10], [0], title="q", top=1.0))
