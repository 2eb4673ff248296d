"""The journal's fast path writes exactly the rows its generic ``add`` would."""

from __future__ import annotations

import pytest

from pmsq.backends.sqlite.journal import Journal, duration_detail


@pytest.mark.parametrize("ms", [None, 0.0154321, 1234.5, 1e-7])
def test_the_fast_path_rows_equal_the_generic_ones(ms: float | None) -> None:
    generic, fast = Journal(60.0), Journal(60.0)
    rounded = None if ms is None else round(ms, 3)
    generic.add(1.5, "acked", "m1", "q", "acme", "k", "c1", attempt=2, duration_ms=rounded)
    fast.add_row(1.5, "acked", "m1", "q", "acme", "k", "c1", 2, None, duration_detail(rounded))
    generic.add(2.5, "delivered", "m1", "q", "acme", "k", "c1", attempt=3, worker="w-1")
    fast.add_row(2.5, "delivered", "m1", "q", "acme", "k", "c1", 3, "w-1", None)
    assert fast._rows == generic._rows


def test_a_journal_without_retention_keeps_no_rows() -> None:
    off = Journal(None)
    off.add_row(1.0, "acked", "m1", "q", "", None, None, 1, None, None)
    assert off._rows == []
