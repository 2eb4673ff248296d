"""Four ``pmsq worker`` processes fire an ``every=1`` schedule while being SIGKILLed.

Every ~1.2 s one of them is killed with SIGKILL (mid-transaction, perhaps)
and a new one started. ``catch_up="all"``, so no slot may be skipped either:
the slots found are exactly the run's slots, each once
(``pmsq.testing._schedule_tests.check_sigkilled_workers``; the PostgreSQL
plugin runs it too).
"""

from __future__ import annotations

from pathlib import Path

from pmsq.testing._schedule_tests import check_sigkilled_workers


def test_sigkilled_workers_make_exactly_one_message_per_slot(tmp_path: Path) -> None:
    assert check_sigkilled_workers(str(tmp_path / "pms.db"), tmp_path) >= 8
