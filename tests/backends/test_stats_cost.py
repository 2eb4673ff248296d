"""``stats()`` stays cheap whatever the backlog: counted in SQLite VM steps, not timed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pmsq


def _steps_of_stats(b: pmsq.Broker) -> int:
    conn: sqlite3.Connection = b.backend._conn  # type: ignore[attr-defined]
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0  # go on

    b.stats()  # flush this process's buffered metrics first: not part of the read
    conn.set_progress_handler(count, 1)
    try:
        b.stats()
    finally:
        conn.set_progress_handler(None, 1)
    return steps


def _fill(b: pmsq.Broker, n: int) -> None:
    q = b.queue("reminders")
    for start in range(0, n, 5000):
        batch = range(start, min(n, start + 5000))
        # Half due now, half scheduled for next week: oldest_age looks only at
        # the due ones, through the index, without stepping over the others.
        q.put_many([pmsq.NewMessage({"n": i}, delay=0 if i % 2 else 7 * 86400) for i in batch])


def test_stats_work_does_not_grow_with_the_backlog(tmp_path: Path) -> None:
    with pmsq.connect(str(tmp_path / "small.db"), durability="memory") as small:
        _fill(small, 10)
        few = _steps_of_stats(small)
        figures = small.stats("reminders")
        assert (figures.ready, figures.delayed) == (5, 5)
    with pmsq.connect(str(tmp_path / "big.db"), durability="memory") as big:
        _fill(big, 40_000)
        many = _steps_of_stats(big)
        figures = big.stats("reminders")
        assert (figures.ready, figures.delayed) == (20_000, 20_000)
        assert figures.oldest_age is not None
    # The same statements over 4,000 times the messages: a handful more steps
    # (deeper B-trees), nothing like one per message.
    assert many < few * 2, (few, many)
