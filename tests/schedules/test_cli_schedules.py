"""``pmsq schedules URL``: what an operator reads at 80 columns, and the JSON form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import pmsq
from pmsq.cli import main


@pytest.fixture
def store(tmp_path: Path) -> str:
    path = str(tmp_path / "pms.db")
    with pmsq.connect(path) as b:
        b.declare_queue("channel-sync")
        b.declare_queue("ical")
        b.tenant("acme").schedule(
            "nightly-rates", queue="channel-sync", cron="0 2 * * *", tz="Europe/Lisbon"
        )
        b.schedule("ical-poll", queue="ical", every=900.0)
    return path


def test_lists_every_schedule_within_80_columns(
    store: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["schedules", store]) == 0
    out = capsys.readouterr().out
    assert all(len(line) <= 80 for line in out.splitlines())
    for words in ("ical-poll", "every 900s", "acme/nightly-rates", "0 2 * * *", "Europe/Lisbon"):
        assert words in out


def test_json_reports_next_last_and_lag(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schedules", store, "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["schedules"]}
    assert rows["nightly-rates"]["tenant"] == "acme"
    assert rows["nightly-rates"]["tz"] == "Europe/Lisbon"
    assert rows["ical-poll"]["every"] == 900.0
    assert rows["ical-poll"]["last_at"] is None
    assert rows["ical-poll"]["lag"] is None


def test_an_overdue_schedule_shows_its_lag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "pms.db")
    clock = pmsq.ManualClock(1_700_000_000.0)  # 2023: long past
    with pmsq.connect(path, clock=clock) as b:
        b.declare_queue("q")
        b.schedule("s", queue="q", every=10.0)
    # No worker ran: the real clock is far past the slot, which is now overdue.
    assert main(["schedules", path, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["schedules"]
    assert row["lag"] > 0
