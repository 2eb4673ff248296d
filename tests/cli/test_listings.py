"""``pmsq peek`` and ``pmsq dlq list`` at 80 columns and piped: ids whole, lines that fit."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pmsq
from pmsq.cli._columns import layout

from .conftest import Run

ID = "06H3QVB0KX84CBSYH23ER8FA60"  # a message id is 26 characters


@pytest.fixture
def busy(tmp_path: Path) -> tuple[Path, list[str]]:
    """Queue ``email``: two waiting messages with long keys, tenants and payloads, two dead."""
    path = tmp_path / "pms.db"
    payload = {"booking_id": 8812, "guest": "Ms Very Long Name of a guest", "nights": 3}
    with pmsq.connect(str(path), durability="normal") as b:
        q = b.declare_queue("email", max_attempts=1)
        dead = []
        for n in range(2):
            mid = q.put(payload, key=f"property:4521-building-{n}", tenant="coastal-cottages")
            with pytest.raises(ConnectionError), q.get(timeout=0):
                raise ConnectionError("SMTP 421: provider busy, try again in a few minutes")
            dead.append(mid)
        waiting = [
            q.put(payload, key=f"property:4521-building-{n}", tenant="coastal-cottages")
            for n in range(2)
        ]
    return path, dead + waiting


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch, cli: Run) -> Run:
    """``cli`` as if standard output were an 80-column terminal."""
    monkeypatch.setenv("COLUMNS", "80")

    def run(*argv: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
        return cli(*argv)

    return run


def test_peek_at_80_columns_shows_whole_ids_and_fits(
    terminal: Run, busy: tuple[Path, list[str]]
) -> None:
    path, ids = busy
    code, out, _ = terminal("peek", str(path), "email")
    assert code == 0
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert [line.split()[0] for line in lines if line[:2] == "06"] == ids[2:]
    assert all("ready" in line for line in lines if line[:2] == "06")
    # The payload follows on its own line, still readable.
    assert sum('"booking_id": 8812' in line for line in lines) == 2


def test_peek_piped_is_one_whole_line_per_message(
    cli: Run, busy: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    path, ids = busy
    code, out, _ = cli("peek", str(path), "email")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 3  # header and one line per message, for grep
    for n, (mid, line) in enumerate(zip(ids[2:], lines[1:], strict=True)):
        cells = line.split()
        assert cells[:4] == [mid, "ready", f"property:4521-building-{n}", "coastal-cottages"]
        assert line.endswith('"nights": 3}')


def test_dlq_list_at_80_columns_shows_whole_ids_and_fits(
    terminal: Run, busy: tuple[Path, list[str]]
) -> None:
    path, ids = busy
    code, out, _ = terminal("dlq", "list", str(path), "email")
    assert code == 0
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert [line.split()[0] for line in lines if line[:2] == "06"] == ids[:2]
    reasons = [line.strip() for line in lines if "SMTP 421" in line]
    assert reasons == ["ConnectionError: SMTP 421: provider busy, try again in a few minutes"] * 2


def test_dlq_list_piped_keeps_each_dead_letter_on_one_line(
    cli: Run, busy: tuple[Path, list[str]]
) -> None:
    path, ids = busy
    code, out, _ = cli("dlq", "list", str(path), "email")
    assert code == 0
    rows = [line for line in out.splitlines() if line[:2] == "06"]
    assert [r.split()[0] for r in rows] == ids[:2]
    assert all(r.endswith("try again in a few minutes") for r in rows)


_cell = st.text(st.characters(codec="ascii", categories=["L", "N", "P"]), max_size=40)


@given(
    rows=st.lists(st.tuples(_cell, _cell, _cell), min_size=1, max_size=5),
    width=st.integers(60, 200),
)
def test_layout_never_cuts_the_id_and_fits_the_width(
    rows: list[tuple[str, str, str]], width: int
) -> None:
    table = [(ID, *r) for r in rows]
    lines = layout(("id", "state", "key", "text"), table, width=width, shrink=(2, 1))
    assert all(len(line) <= width for line in lines)
    starts = [line for line in lines if line.startswith(ID)]
    assert len(starts) == len(rows)
    # Without a terminal every row is one line with its cells whole.
    piped = layout(("id", "state", "key", "text"), table, width=None)
    assert len(piped) == len(rows) + 1
    for line, row in zip(piped[1:], table, strict=True):
        assert line.split() == " ".join(row).split()
