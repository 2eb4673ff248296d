"""``pmsq trace`` tells the story of message control: cancel, reschedule, expiry, snooze,
and (``--pauses``) the pauses and circuits of a queue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import pmsq

from .conftest import Run

START = 1_780_000_000.0  # 2026-05-28 20:26:40 UTC


class ChannelDown(Exception):
    pass


@pytest.fixture
def controlled(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    path = tmp_path / "pms.db"
    clock = pmsq.ManualClock(START)
    with pmsq.connect(str(path), clock=clock, durability="normal") as b:
        q = b.declare_queue(
            "ota", circuit=pmsq.Circuit(failures=1, within=60.0, open_for=10.0, scope="queue")
        )
        reminder = q.put({"send": "door code"}, key="booking:8812", tenant="acme", delay=100)
        assert q.reschedule(reminder, delay=50) is True
        assert b.tenant("acme").queue("ota").cancel(key="booking:8812") == 1
        late = q.put({"sms": "room ready"}, expires=10)
        clock.advance(20)
        assert q.get_many(5, timeout=0) == []  # expired on the way out
        push = q.put({"push": "rates"})
        with pytest.raises(pmsq.Snooze), q.get(timeout=0):
            raise pmsq.Snooze(5.0)
        clock.advance(6)
        with pytest.raises(ChannelDown), q.get(timeout=0):
            raise ChannelDown("503 maintenance")
        clock.advance(20)
        with q.get(timeout=0):
            pass  # the probe succeeds: the circuit closes
        b.pause("ota", tenant="acme", until=clock.time() + 60, reason="expired credentials")
        assert b.resume("ota", tenant="acme") is True
    return path, {"reminder": reminder, "late": late, "push": push}


def lines(out: str) -> list[str]:
    return [" ".join(line.split()) for line in out.splitlines()]


def test_a_cancelled_message_says_when_and_from_which_state(
    cli: Run, controlled: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    path, ids = controlled
    code, out, _ = cli("trace", str(path), ids["reminder"])
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 80
    shown = lines(out)
    assert shown[0].endswith("key booking:8812 · tenant acme · cancelled")
    assert shown[4].startswith("20:26:40.000 put")
    assert shown[5].startswith("20:26:40.000 rescheduled pid")
    assert shown[5].endswith("now due at 20:27:30 UTC")
    assert shown[6].startswith("20:26:40.000 cancelled")
    assert shown[7] == "withdrawn while delayed or waiting to retry"


def test_expiry_and_snooze(cli: Run, controlled: tuple[Path, dict[str, str]]) -> None:
    path, ids = controlled
    code, out, _ = cli("trace", str(path), ids["late"])
    assert code == 0
    shown = lines(out)
    assert "dead (expired)" in shown[0]
    at = next(i for i, line in enumerate(shown) if line.startswith("20:27:00.000 expired"))
    assert "not delivered by 20:26:50 UTC: dead letter" in " ".join(shown[at : at + 2])
    code, out, _ = cli("trace", str(path), ids["push"])
    assert code == 0
    [snoozed] = [line for line in lines(out) if " snoozed " in line]
    assert snoozed.endswith("again in 5s, attempt not spent")
    assert " 1 " in snoozed  # the attempt the snooze did not spend


def test_pauses_and_circuits_of_a_queue(
    cli: Run, controlled: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    path, ids = controlled
    code, out, _ = cli("trace", str(path), "--pauses", "--queue", "ota")
    assert code == 0
    shown = lines(out)
    assert shown[0] == "ota · pauses and circuits flowing"
    text = "\n".join(shown)
    assert "circuit_opened" in text
    assert "whole queue; probe at 20:27:16 UTC" in text
    assert "ChannelDown: 503 maintenance" in text  # the error that tripped it
    assert f"whole queue; probe {ids['push']} succeeded" in text
    # The tenant's pause history is a story of its own.
    tenant = shown.index("ota · pauses and circuits tenant acme · flowing")
    assert shown[tenant + 4].startswith("20:27:26.000 paused")
    assert shown[tenant + 5] == "tenant acme; until 20:28:26 UTC; expired credentials"
    assert shown[tenant + 6].split()[1] == "resumed"

    code, out, _ = cli("trace", str(path), "--pauses", "--tenant", "acme", "--json")
    assert code == 0
    [scope] = json.loads(out)["messages"]
    assert [e["event"] for e in scope["events"]] == ["paused", "resumed"]


def test_pauses_mode_errors(cli: Run, controlled: tuple[Path, dict[str, str]]) -> None:
    path, ids = controlled
    code, _, err = cli("trace", str(path), "--pauses", "--queue", "nothing-here")
    assert code == 1
    assert "no pauses of queue nothing-here in the journal" in err
    code, _, err = cli("trace", str(path), ids["push"], "--pauses")
    assert code == 1
    assert "give exactly one of" in err
