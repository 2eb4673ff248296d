"""A handler for the process-isolation snooze test (a top-level function a child imports)."""

from __future__ import annotations

from pathlib import Path

import pmsq


def snooze_once(message: pmsq.Message) -> None:
    """Snooze the first delivery (logged to ``payload["log"]``), succeed on the next."""
    log = Path(message.payload["log"])
    first = not log.exists()
    with log.open("a") as f:
        f.write(f"{message.attempt}\n")
    if first:
        raise pmsq.Snooze(0)
