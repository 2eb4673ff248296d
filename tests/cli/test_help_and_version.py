"""What a new user meets first: ``--version``, help that reads at 80 columns,
the totals ``pmsq stats`` promises, and an install hint that works."""

from __future__ import annotations

import argparse
import platform
import sqlite3
from importlib import metadata
from pathlib import Path

import pytest

from pmsq.backends import registry
from pmsq.cli import build_parser

from .conftest import Run


def _every_command(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    out = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                out += _every_command(child, (*prefix, name))
    return out


COMMANDS = _every_command(build_parser())


def test_every_command_is_found() -> None:
    names = {c[0] for c in COMMANDS if c}
    assert {"demo", "monitor", "stats", "peek", "trace", "dlq", "doctor"} <= names
    assert ("dlq", "list") in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "pmsq")
@pytest.mark.parametrize("columns", [80, 60])
def test_help_fits_the_terminal(
    cli: Run, monkeypatch: pytest.MonkeyPatch, command: tuple[str, ...], columns: int
) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    code, out, _ = cli(*command, "--help")
    assert code == 0
    # Epilogs keep their layout (example commands are not broken), so below 80
    # columns only the prose has to fit; at 80 everything does.
    assert [line for line in out.splitlines() if len(line) > 80] == []
    if columns == 60:
        description = out.split("\n\n")[1]
        assert max(len(line) for line in description.splitlines()) <= 58


def test_version_names_the_installed_package(cli: Run) -> None:
    code, out, _ = cli("--version")
    assert code == 0
    assert out.strip() == (
        f"pmsq {metadata.version('pmsq')} (Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version})"
    )


def test_stats_table_shows_the_totals_its_help_promises(cli: Run, store: Path) -> None:
    code, out, _ = cli("stats", str(store), "--help")
    assert "totals since the store was created" in " ".join(out.split())
    code, out, err = cli("stats", str(store))
    assert (code, err) == (0, "")
    totals = out.split("totals since the store was created", 1)[1]
    rows = {line.split()[0]: line.split()[1:] for line in totals.splitlines() if line.strip()}
    assert rows["queue"] == ["processed", "failed", "retried", "dead-lettered"]
    # The fixture dead-lettered one email by hand (not a failure) and settled nothing else.
    assert rows["email"] == ["0", "0", "0", "1"]
    assert rows["calendar"] == ["0", "0", "0", "0"]
    assert rows["all"] == ["queues", "0", "0", "0", "1"]


def test_stats_totals_per_tenant(cli: Run, store: Path) -> None:
    code, out, _ = cli("stats", str(store), "email", "--tenants")
    assert code == 0
    totals = out.split("totals since the store was created", 1)[1]
    lines = [line.split() for line in totals.splitlines() if "└" in line]
    assert ["└", "acme", "0", "0", "0", "1"] in lines
    assert ["└", "blue", "0", "0", "0", "0"] in lines


@pytest.mark.parametrize(
    ("url", "plugin"),
    [("postgresql://db/pms", "pmsq-postgres"), ("amqp://rabbit/pms", "pmsq-rabbitmq")],
)
def test_a_missing_plugin_is_installed_from_the_checkout(
    cli: Run, monkeypatch: pytest.MonkeyPatch, url: str, plugin: str
) -> None:
    # The plugins are installed in the test environment: hide them as on a new machine.
    monkeypatch.setattr(registry, "_entry_points", dict)
    code, _, err = cli("stats", url)
    assert code == 1
    assert f"pip install ./plugins/{plugin}" in err
    assert f"pip install {plugin}" not in err  # not on the package index
    assert len(err.splitlines()) == 1
