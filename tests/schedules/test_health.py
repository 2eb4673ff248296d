"""Schedules in the operator's tools: the late-schedule alert, the monitor and ``pmsq stats``."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import pytest
from rich.console import Console

import pmsq
from pmsq.cli import main
from pmsq.monitor.live import watch
from pmsq.schedules.health import LATE_AFTER, schedule_section


@pytest.fixture
def clock() -> pmsq.ManualClock:
    return pmsq.ManualClock(1_800_000_000.0)


@pytest.fixture
def broker(tmp_path: Path, clock: pmsq.ManualClock) -> pmsq.Broker:
    b = pmsq.connect(str(tmp_path / "pms.db"), clock=clock)
    b.declare_queue("channel-sync")
    b.tenant("acme").schedule("nightly-rates", queue="channel-sync", every=3600.0)
    return b


def test_a_schedule_nobody_fires_raises_one_alert_until_it_fires(
    broker: pmsq.Broker, clock: pmsq.ManualClock
) -> None:
    heard: list[pmsq.Alert] = []
    # No worker runs here: the "no consumer" alert is off, to watch the schedule's alone.
    broker.alert("channel-sync", min_consumers=0, callback=heard.append)
    clock.advance(3600 + LATE_AFTER)
    assert broker.check_alerts() == [], "a minute late is still within the bound"
    clock.advance(1)
    (alert,) = broker.check_alerts()
    assert (alert.queue, alert.tenant, alert.level) == ("channel-sync", "acme", "warning")
    assert alert.message == (
        "channel-sync [acme]: schedule 'nightly-rates' has not fired for 61s (alert above 60s)"
    )
    broker.check_alerts()
    assert heard == [alert], "the callback hears a lasting alert once"
    assert broker.run_schedules() == 1
    assert broker.check_alerts() == []


def test_the_monitor_shows_schedules_and_their_lag(
    broker: pmsq.Broker, clock: pmsq.ManualClock
) -> None:
    clock.advance(3600 + 0.5)
    broker.run_schedules()
    console = Console(record=True, width=80)
    console.print(schedule_section(broker.schedules(), clock.time()))
    text = console.export_text()
    assert "acme/nightly-rates" in text
    assert "every 3600s" in text
    assert "0.5s" in text, "the lag of the last firing"
    assert all(len(line) <= 80 for line in text.splitlines())


def test_plain_monitor_and_stats_json_list_schedules(
    broker: pmsq.Broker, clock: pmsq.ManualClock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = io.StringIO()

    class Once(threading.Event):
        def is_set(self) -> bool:  # run the loop body exactly once
            done = self.wait(0)
            self.set()
            return done

    watch(broker, stop=Once(), plain=True, out=out)
    assert "schedule acme/nightly-rates -> channel-sync: next" in out.getvalue()
    broker.close()
    assert main(["stats", str(tmp_path / "pms.db"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (row,) = data["schedules"]
    assert (row["name"], row["tenant"], row["every"]) == ("nightly-rates", "acme", 3600.0)


def test_prometheus_text_has_schedule_gauges_and_the_alert(
    broker: pmsq.Broker, clock: pmsq.ManualClock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pmsq.schedules.health import schedules_prometheus

    clock.advance(3600 + 90)  # due 90 s ago, nobody fired it
    text = schedules_prometheus(broker.schedules(), clock.time())
    labels = '{schedule="nightly-rates",queue="channel-sync",tenant="acme"}'
    assert f"pmsq_schedule_overdue_seconds{labels} 90.0" in text.splitlines()
    assert "pmsq_schedule_lag_seconds{" not in text, "no firing yet, no lag"
    broker.run_schedules()
    text = schedules_prometheus(broker.schedules(), clock.time())
    assert f"pmsq_schedule_lag_seconds{labels} 90.0" in text.splitlines()
    assert f"pmsq_schedule_overdue_seconds{labels} 0.0" in text.splitlines()
