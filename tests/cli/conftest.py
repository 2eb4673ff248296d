"""Fixtures for the operator commands: a populated store on disk, a CLI runner."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import pmsq
from pmsq.cli import main


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A closed store: calendar (3 messages, 2 keys), email (1 dead letter), bindings, a rule."""
    path = tmp_path / "pms.db"
    with pmsq.connect(str(path), durability="normal") as b:
        b.declare_queue("calendar")
        b.declare_queue("email", max_attempts=1, fallback="email.fallback")
        b.declare_queue("email.fallback")
        b.subscribe("booking.*", queue="calendar")
        b.subscribe("booking.*", queue="email")
        b.publish("booking.created", {"booking": 1}, key="property:1", tenant="acme")
        b.publish("booking.created", {"booking": 2}, key="property:2", tenant="blue")
        b.publish("booking.cancelled", {"booking": 1}, key="property:1", tenant="acme")
        with b.queue("email").get(timeout=1) as d:
            d.dead_letter("mailbox full")
        b.alert("calendar", max_depth=100)
    return path


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Run:
    """Run ``pmsq ARGS`` in-process; return (exit code, stdout, stderr)."""

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse usage errors and --help
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run
