"""``pmsq cancel``, ``pmsq pause``, ``pmsq resume`` and ``pmsq pauses``, run as the CLI,
against a real store: what they change, what they print, their exit codes."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pmsq
from pmsq.cli.pause import duration

from .conftest import Run

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def reminders(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A store with booking reminders: two of acme's booking 8812, one of blue's, one tenantless."""
    path = tmp_path / "pms.db"
    with pmsq.connect(str(path), durability="normal") as b:
        q = b.declare_queue("reminders")
        b.declare_queue("channel-sync")
        ids = {
            "a1": q.put({"n": 1}, key="booking:8812", tenant="acme", delay=3600),
            "a2": q.put({"n": 2}, key="booking:8812", tenant="acme"),
            "blue": q.put({"n": 3}, key="booking:8812", tenant="blue"),
            "plain": q.put({"n": 4}, key="booking:1"),
        }
    return path, ids


def waiting(path: Path, queue: str = "reminders") -> int:
    with pmsq.connect(str(path)) as b:
        s = b.stats(queue)
        return s.ready + s.delayed


def test_cancel_by_id_removes_exactly_those_and_says_so(
    cli: Run, reminders: tuple[Path, dict[str, str]]
) -> None:
    path, ids = reminders
    code, out, err = cli("cancel", str(path), "reminders", ids["a1"], ids["plain"])
    assert (code, err) == (0, "")
    assert out.splitlines() == [f"cancelled {ids['a1']}", f"cancelled {ids['plain']}"]
    assert waiting(path) == 2
    with pmsq.connect(str(path)) as b:
        assert [e.event for e in b.backend.history(message_id=ids["a1"])][-1] == "cancelled"  # type: ignore[attr-defined]


def test_cancelling_an_unknown_or_gone_id_exits_1_and_names_it(
    cli: Run, reminders: tuple[Path, dict[str, str]]
) -> None:
    path, ids = reminders
    assert cli("cancel", str(path), "reminders", ids["a2"])[0] == 0
    code, out, err = cli("cancel", str(path), "reminders", ids["a2"], ids["blue"], "--json")
    assert code == 1
    assert json.loads(out) == {"cancelled": [ids["blue"]], "not_cancelled": [ids["a2"]]}
    assert f"{ids['a2']} was not cancelled" in err
    assert waiting(path) == 2


def test_tenant_guards_a_cancel_by_id(cli: Run, reminders: tuple[Path, dict[str, str]]) -> None:
    path, ids = reminders
    code, _, err = cli("cancel", str(path), "reminders", ids["blue"], "--tenant", "acme")
    assert code == 1
    assert (
        f"{ids['blue']} was not cancelled: no such unacked message in reminders of tenant acme"
        in err
    )
    code, out, _ = cli("cancel", str(path), "reminders", ids["blue"], "--tenant", "blue")
    assert (code, out) == (0, f"cancelled {ids['blue']}\n")


def test_cancel_by_key_is_scoped_to_the_tenant(
    cli: Run, reminders: tuple[Path, dict[str, str]]
) -> None:
    path, _ = reminders
    code, out, _ = cli(
        "cancel", str(path), "reminders", "--key", "booking:8812", "--tenant", "acme"
    )
    assert code == 0
    assert out.strip() == "cancelled 2 messages of key booking:8812 of tenant acme in reminders"
    # blue's booking:8812 is another key; without --tenant it is the tenantless key.
    code, out, _ = cli("cancel", str(path), "reminders", "--key", "booking:8812", "--json")
    assert code == 0
    assert json.loads(out) == {"key": "booking:8812", "tenant": None, "cancelled": 0}
    assert waiting(path) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give message IDs or --key K"),
        (["X", "--key", "k"], "give message IDs or --key K"),
        (["--key", ""], "--key takes a non-empty key"),
    ],
)
def test_cancel_refuses_bad_input_with_one_line(
    cli: Run, reminders: tuple[Path, dict[str, str]], args: list[str], message: str
) -> None:
    path, _ = reminders
    code, out, err = cli("cancel", str(path), "reminders", *args)
    assert code == 1
    assert out == ""
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert waiting(path) == 4


def test_an_unknown_queue_is_named_with_the_known_ones(
    cli: Run, reminders: tuple[Path, dict[str, str]]
) -> None:
    path, _ = reminders
    for argv in (
        ("cancel", str(path), "remindres", "X"),
        ("pause", str(path), "remindres"),
        ("resume", str(path), "remindres"),
    ):
        code, _, err = cli(*argv)
        assert code == 1
        assert "no queue 'remindres'" in err
        assert "reminders" in err


def test_pause_holds_the_scope_for_every_process_and_resume_lifts_it(
    cli: Run, reminders: tuple[Path, dict[str, str]]
) -> None:
    path, _ = reminders
    with pmsq.connect(str(path)) as b:
        ready = b.queue("reminders").put({"n": 5}, key="booking:9", tenant="acme")
    code, out, err = cli(
        "pause", str(path), "reminders", "--tenant", "acme", "--reason", "expired credentials"
    )
    assert (code, err) == (0, "")
    assert out.strip() == (
        "paused reminders (tenant acme) until resumed (pmsq resume): expired credentials"
    )
    with pmsq.connect(str(path)) as b:  # another process obeys the stored pause
        got = b.queue("reminders").get_many(10, timeout=0)
        assert {d.message.tenant for d in got} == {"blue", None}
        for d in got:
            d.release()
    code, out, _ = cli("pauses", str(path), "--json")
    assert code == 0
    [shown] = json.loads(out)["pauses"]
    assert shown["queue"] == "reminders"
    assert shown["tenant"] == "acme"
    assert shown["key"] is None
    assert shown["circuit"] is False
    assert shown["until"] is None
    assert shown["reason"] == "expired credentials"

    assert cli("resume", str(path), "reminders", "--tenant", "acme")[:2] == (
        0,
        "resumed reminders (tenant acme)\n",
    )
    with pmsq.connect(str(path)) as b:
        assert b.pauses() == []
        got = b.queue("reminders").get_many(10, timeout=0)
        assert ready in {d.message.id for d in got}  # acme's ready message flows again


def test_pause_for_a_while_stores_until_and_prints_it(
    cli: Run, reminders: tuple[Path, dict[str, str]]
) -> None:
    path, _ = reminders
    before = dt.datetime.now(dt.UTC)
    code, out, _ = cli("pause", str(path), "channel-sync", "--for", "30m", "--json")
    assert code == 0
    until = dt.datetime.fromisoformat(json.loads(out)["until"])
    assert dt.timedelta(minutes=29) < until - before < dt.timedelta(minutes=31)
    code, out, _ = cli("pauses", str(path))
    assert code == 0
    assert "channel-sync" in out
    assert "resumes in 29m" in out or "resumes in 30m" in out
    assert "paused with pmsq pause" in out


def test_resume_of_a_scope_that_is_not_paused_exits_1_and_lists_the_pauses(
    cli: Run, reminders: tuple[Path, dict[str, str]]
) -> None:
    path, _ = reminders
    assert cli("pause", str(path), "reminders", "--tenant", "acme", "--key", "booking:8812")[0] == 0
    # resume(queue) lifts only the queue-wide pause: the key pause stays.
    code, out, err = cli("resume", str(path), "reminders")
    assert code == 1
    assert out == ""
    assert err.strip() == (
        "pmsq resume: reminders is not paused "
        "(pauses on reminders: reminders · tenant acme · key booking:8812)"
    )
    with pmsq.connect(str(path)) as b:
        assert len(b.pauses()) == 1


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("2h", 7200.0), ("1d", 86400.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert duration(text) == seconds


@pytest.mark.parametrize("bad", ["0", "-5", "5x", "soon", "400d", ""])
def test_bad_durations_are_refused_before_touching_the_store(
    cli: Run, reminders: tuple[Path, dict[str, str]], bad: str
) -> None:
    path, _ = reminders
    code, _, err = cli("pause", str(path), "reminders", "--for", bad)
    assert code == 2  # an argparse usage error
    assert "--for" in err
    with pmsq.connect(str(path)) as b:
        assert b.pauses() == []


def test_empty_reason_or_scope_is_refused(cli: Run, reminders: tuple[Path, dict[str, str]]) -> None:
    path, _ = reminders
    assert "--reason takes some text" in cli("pause", str(path), "reminders", "--reason", " ")[2]
    assert (
        "--tenant takes a non-empty value"
        in cli("pause", str(path), "reminders", "--tenant", "")[2]
    )
    with pmsq.connect(str(path)) as b:
        assert b.pauses() == []


def test_pauses_with_nothing_paused(cli: Run, reminders: tuple[Path, dict[str, str]]) -> None:
    path, _ = reminders
    assert cli("pauses", str(path)) == (0, "nothing paused, no circuit open\n", "")


def test_help_of_each_command_fits_80_columns() -> None:
    env = dict(os.environ, COLUMNS="80", PYTHONPATH=str(ROOT))
    for command in ("cancel", "pause", "resume", "pauses"):
        done = subprocess.run(
            [sys.executable, "-m", "pmsq", command, "--help"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert [line for line in done.stdout.splitlines() if len(line) > 80] == []
        assert "examples:" in done.stdout


@given(
    number=st.integers(1, 10_000) | st.floats(0.01, 10_000, allow_nan=False),
    unit=st.sampled_from(["", "s", "m", "h", "d"]),
)
def test_any_duration_in_range_reads_as_number_times_unit(number: float, unit: str) -> None:
    factor = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    text = f"{number}{unit}"
    seconds = float(number) * factor
    if seconds > 366 * 86400:
        with pytest.raises(argparse.ArgumentTypeError):
            duration(text)
    else:
        assert duration(text) == pytest.approx(seconds)
