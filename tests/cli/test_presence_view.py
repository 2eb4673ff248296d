"""Presence as operators see it: the "no consumer" alert, the workers panel, stats output."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import pytest
from rich.console import Console, RenderableType

import pmsq
from cli.conftest import Run
from cli.test_prometheus import parse
from pmsq.alerts import DEFAULT_RULE, AlertRule, check_queue, evaluate
from pmsq.backends.presence import LIVE_WINDOW, Presence, WorkerBeat, WorkerInfo
from pmsq.monitor.prometheus import to_prometheus
from pmsq.monitor.workers import render_workers, worker_lines
from pmsq.stats import QueueStats, Stats

T0 = 1_800_000_000.0


def text_of(renderable: RenderableType, width: int = 100) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def _rule(**kw: object) -> AlertRule:
    return AlertRule(queue="email", **kw).over(DEFAULT_RULE)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("figures", "raised"),
    [
        ({"ready": 3, "consumers": 0}, True),  # due, nobody serves it
        ({"ready": 0, "delayed": 5, "oldest_age": 4.0, "consumers": 0}, True),  # due behind a key
        ({"ready": 3, "consumers": 1}, False),  # served
        ({"ready": 0, "delayed": 5, "consumers": 0}, False),  # only scheduled for later
        ({"in_flight": 2, "consumers": 0}, False),  # nothing due (yet)
        ({"ready": 3, "consumers": None}, False),  # the backend cannot tell
    ],
)
def test_the_no_consumer_alert_needs_messages_due_and_no_live_worker(
    figures: dict[str, object], raised: bool
) -> None:
    qs = QueueStats("email", **figures)  # type: ignore[arg-type]
    alerts = [a for a in check_queue(qs, _rule()) if a.metric == "consumers"]
    assert bool(alerts) is raised
    if raised:
        (a,) = alerts
        assert (a.level, a.value, a.threshold) == ("critical", 0.0, 1.0)
        assert a.message == (
            "email: messages are due and no live worker serves the queue "
            "(alert below 1; start a worker for it)"
        )


def test_min_consumers_sets_or_turns_off_the_alert() -> None:
    qs = QueueStats("email", ready=3, consumers=1)
    assert [a.metric for a in check_queue(qs, _rule(min_consumers=2))] == ["consumers"]
    assert check_queue(QueueStats("email", ready=3, consumers=0), _rule(min_consumers=0)) == []
    with pytest.raises(pmsq.ConfigurationError, match="min_consumers"):
        AlertRule(queue="email", min_consumers=-1)


def test_a_tenant_line_does_not_repeat_the_queue_alert() -> None:
    tenant = QueueStats("email", ready=1, consumers=0)
    qs = QueueStats("email", ready=1, consumers=0, tenants={"acme": tenant})
    alerts = evaluate(Stats(queues={"email": qs}), {}, tenants=True)
    assert [(a.tenant, a.metric) for a in alerts] == [(None, "consumers")]


def test_check_alerts_raises_it_until_a_worker_beats(tmp_path: Path) -> None:
    clock = pmsq.ManualClock(T0)
    with pmsq.connect(str(tmp_path / "pms.db"), clock=clock, durability="memory") as b:
        b.queue("reminders").put({"in": "a week"}, delay=7 * 86400)
        assert b.check_alerts() == [], "nothing due yet: no alert"
        b.queue("email").put({"to": "guest"})
        assert [(a.queue, a.metric) for a in b.check_alerts()] == [("email", "consumers")]
        store = Presence.of(b.backend)
        store.beat_worker(WorkerBeat("w1", ("email",), 2, "pms-1", 7, T0, T0))
        assert b.check_alerts() == []
        clock.advance(LIVE_WINDOW + 1)  # the worker was killed: silence
        assert [a.metric for a in b.check_alerts()] == ["consumers"]


def _info(worker_id: str, host: str, queues: tuple[str, ...]) -> WorkerInfo:
    at = dt.datetime.fromtimestamp(T0, dt.UTC)
    return WorkerInfo(worker_id, queues, 8, host, 4242, at - dt.timedelta(hours=2), at)


def test_the_workers_panel_lists_each_live_process() -> None:
    text = text_of(
        render_workers(
            [_info("worker-a1", "pms-1", ("calendar", "email")), _info("worker-b2", "pms-2", ())],
            T0 + 3.0,
        )
    )
    assert "live workers: 2" in text
    a = next(line for line in text.splitlines() if "worker-a1" in line).split()
    assert a == ["worker-a1", "pms-1:4242", "8", "2h00m", "3.0s", "ago", "calendar,", "email"]
    assert "pms-2:4242" in text
    assert "no process is consuming" in text_of(render_workers([], T0))
    assert "not known" in text_of(render_workers(None, T0))
    assert worker_lines(None, T0) == ""
    assert (
        worker_lines([_info("w", "h", ("q",))], T0)
        == "\nworker w h:4242 slots=8 seen=0.0s queues=q"
    )


def test_hostile_names_in_the_panel_are_shown_not_interpreted() -> None:
    text = text_of(render_workers([_info("[bold]x[/bold]", "[red]h", ("[link=x]q",))], T0))
    assert "[bold]x[/bold]" in text
    assert "[red]h:4242" in text
    assert "[link=x]q" in text


def test_stats_json_and_prometheus_carry_the_new_figures(cli: Run, tmp_path: Path) -> None:
    path = tmp_path / "pms.db"
    with pmsq.connect(str(path), durability="normal") as b:
        q = b.queue("email")
        q.put_many([{"n": i} for i in range(3)])
        with q.get(timeout=0):
            pass  # acked
        now = b.clock.time()
        Presence.of(b.backend).beat_worker(WorkerBeat("w1", ("email",), 2, "pms-1", 7, now, now))
    code, out, _ = cli("stats", str(path), "--json")
    assert code == 0
    data = json.loads(out)
    email = data["queues"]["email"]
    assert (email["consumers"], email["put_per_minute"], email["ready"]) == (1, 3, 2)
    assert email["eta"] == pytest.approx(2 * 60.0)
    assert email["wait_p50_ms"] is not None
    assert [w["id"] for w in data["workers"]] == ["w1"]
    assert data["workers"][0]["queues"] == ["email"]
    code, out, _ = cli("stats", str(path), "--prometheus")
    types, samples = parse(out)
    assert types["pmsq_queue_consumers"] == "gauge"
    assert samples['pmsq_queue_consumers{queue="email"}'] == 1
    assert samples['pmsq_queue_put_per_minute{queue="email"}'] == 3
    assert samples['pmsq_queue_eta_seconds{queue="email"}'] == pytest.approx(120.0)
    assert 'pmsq_queue_wait_seconds{queue="email",quantile="0.95"}' in samples
    code, out, _ = cli("stats", str(path))
    assert "live workers: 1" in out


def test_prometheus_leaves_out_unknown_consumers() -> None:
    text = to_prometheus(Stats(queues={"email": QueueStats("email", ready=1)}))
    _, samples = parse(text)
    assert not any(s.startswith("pmsq_queue_consumers") for s in samples)
