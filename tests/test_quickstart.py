"""The example script a newcomer runs first keeps working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_example_runs_and_shows_order_retry_and_dead_letter() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    lines = out.splitlines()
    assert lines[0].startswith("handled {'booking': 1, 'event': 'created'}")
    assert "attempt 2" in lines[2]
    assert lines[3].startswith("dead letter: {'booking': 1, 'event': 'cancelled'}")
