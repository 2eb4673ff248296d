"""The monitor's panel of paused scopes and open circuits, rendered at fixed widths."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest
from backends._bare import BareSQLite
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.cells import cell_len
from rich.console import Console

import pmsq
from pmsq.monitor.pauses import pause_lines, pause_section, pauses_to_dicts, read_pauses

NOW = 1_780_000_000.0


def at(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(NOW + seconds, tz=dt.UTC)


PAUSES = [
    pmsq.Pause(
        queue="channel-sync",
        tenant="acme",
        key=None,
        until=at(1800),
        reason="OTA maintenance",
        since=at(-120),
    ),
    pmsq.Pause(
        queue="calendar",
        tenant="acme",
        key="property:4521",
        until=None,
        reason="migrating the property to a new channel manager account",
        since=at(-7200),
    ),
    pmsq.Pause(
        queue="ota-push",
        tenant=None,
        key=None,
        until=at(12),
        reason="circuit open: ChannelDown: 503 Service Unavailable",
        since=at(-18),
        circuit=True,
    ),
]


def render(width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    console.print(pause_section(PAUSES, NOW))
    return console.export_text().splitlines()


@pytest.mark.parametrize("width", [80, 120])
def test_every_pause_has_a_line_that_fits(width: int) -> None:
    lines = render(width)
    assert max(len(line) for line in lines) <= width
    text = "\n".join(lines)
    assert lines[0].startswith("paused: 2 scopes paused, 1 circuit open")
    for shown in (
        "channel-sync · tenant acme",
        "calendar · tenant acme · key property:4521",
        "ota-push",
        "OTA maintenance",
        "until resumed",
        "resumes in 30m00s",
        "2h00m ago",
    ):
        assert shown in text, shown


def test_an_open_circuit_comes_first_with_its_probe_time_and_error() -> None:
    lines = render(100)
    assert lines[1].split() == [
        "circuit",
        "open",
        "ota-push",
        "probes",
        "in",
        "12s,",
        "since",
        "18s",
        "ago",
    ]
    # The reason is the error, without repeating "circuit open:".
    assert lines[2].strip() == "ChannelDown: 503 Service Unavailable"
    assert lines[3].split()[:2] == ["paused", "calendar"]


def test_plain_lines_for_a_monitor_without_a_terminal() -> None:
    lines = pause_lines(PAUSES, NOW).splitlines()
    assert lines[0] == ""  # appended under the plain snapshot
    assert lines[1].startswith("circuit open: ota-push, probes in 12s, since 18s ago: circuit open")
    assert lines[3] == (
        "paused: channel-sync · tenant acme, resumes in 30m00s, since 2m00s ago: OTA maintenance"
    )
    assert pause_lines([], NOW) == ""


def test_an_open_circuit_past_its_time_waits_for_a_probe() -> None:
    later = pause_lines(PAUSES[2:], NOW + 60).strip()
    assert later.startswith("circuit open: ota-push, probe due: the next message, since")


def test_json_has_utc_times_and_the_circuit_flag() -> None:
    [circuit, *_] = pauses_to_dicts(PAUSES)
    assert circuit["circuit"] is True
    assert circuit["until"] == at(12).isoformat()
    assert circuit["since"].endswith("+00:00")


def test_a_store_that_cannot_pause_shows_no_panel(tmp_path: Path) -> None:
    with pmsq.Broker(BareSQLite(str(tmp_path / "x.db"), durability="normal")) as bare:
        assert read_pauses(bare) == []


def test_the_monitor_shows_the_panel_of_a_real_store(tmp_path: Path) -> None:
    from pmsq.monitor.live import _Screen

    with pmsq.connect(str(tmp_path / "pms.db"), durability="normal") as b:
        b.declare_queue("channel-sync")
        screen = _Screen(b, tenants=False, title="pmsq monitor")
        assert screen.take()
        assert "paused:" not in screen.plain()
        b.pause("channel-sync", tenant="acme", reason="OTA maintenance")
        assert screen.take()
        console = Console(file=io.StringIO(), width=80, record=True, color_system=None)
        console.print(screen.renderable(80, None))
        text = console.export_text()
        assert "paused: 1 scope paused" in text
        assert "channel-sync · tenant acme" in text
        assert "paused: channel-sync · tenant acme, until resumed" in screen.plain()


_names = st.text(
    alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "Zs")), min_size=1, max_size=60
)


@given(
    pauses=st.lists(
        st.builds(
            pmsq.Pause,
            queue=_names,
            tenant=st.none() | _names,
            key=st.none() | _names,
            until=st.none() | st.floats(-1e5, 1e7).map(at),
            reason=st.text(max_size=300),
            since=st.floats(-1e7, 0).map(at),
            circuit=st.booleans(),
        ),
        min_size=1,
        max_size=5,
    ),
    width=st.sampled_from([60, 80, 120]),
)
@settings(max_examples=60, deadline=None)
def test_the_panel_fits_any_width_whatever_the_names(pauses: list[pmsq.Pause], width: int) -> None:
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    console.print(pause_section(pauses, NOW))
    lines = console.export_text().splitlines()
    assert max(cell_len(line) for line in lines) <= width
    assert len(pauses_to_dicts(pauses)) == len(pauses)
