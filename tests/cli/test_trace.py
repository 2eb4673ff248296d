"""``pmsq trace``: a message's timeline, a key's history, a chain's tree; JSON; errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from backends._bare import BareSQLite

import pmsq
from pmsq.cli._common import CommandError
from pmsq.cli.trace import _find

from .conftest import Run


@pytest.fixture
def traced(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A store where a booking failed once, then succeeded and caused an email, dead-lettered."""
    path = tmp_path / "pms.db"
    with pmsq.connect(str(path), durability="normal") as b:
        b.declare_queue("calendar", backoff=pmsq.Backoff(base=0.0, factor=1.0, cap=0.0))
        b.declare_queue("email", max_attempts=1)
        cal = b.queue("calendar")
        mid = cal.put({"booking": 1}, key="property:4521", tenant="acme", dedup_id="booking-1")
        with pytest.raises(TimeoutError), cal.get(timeout=0):
            raise TimeoutError("calendar provider took too long to answer the sync request")
        with cal.get(timeout=0):
            email = b.queue("email").put({"to": "guest"}, key="property:4521", tenant="acme")
        with b.queue("email").get(timeout=0) as d:
            d.dead_letter("mailbox full")
    return path, {"booking": mid, "email": email}


def test_timeline_is_readable_at_80_columns(
    cli: Run, traced: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    path, ids = traced
    code, out, err = cli("trace", str(path), ids["booking"])
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert lines[0].startswith(f"calendar · {ids['booking']}")
    assert "key property:4521 · tenant acme · acked" in lines[0]
    body = "\n".join(lines)
    for word in ("put", "delivered", "retried", "acked", "dedup booking-1", "pid "):
        assert word in body
    events = [line.split()[1] for line in lines if line[:2].isdigit() and ":" in line[:3]]
    assert events == ["put", "delivered", "retried", "delivered", "acked"]
    # The error is shown whole, folded within the width.
    assert "TimeoutError: calendar provider took too long" in " ".join(
        part.strip() for part in lines
    ).replace("  ", " ")


def test_json_shape(cli: Run, traced: tuple[Path, dict[str, str]]) -> None:
    path, ids = traced
    code, out, _ = cli("trace", str(path), ids["booking"], "--json")
    assert code == 0
    data = json.loads(out)
    assert data["query"] == {"id": ids["booking"]}
    [m] = data["messages"]
    assert set(m) == {
        "id",
        "queue",
        "tenant",
        "key",
        "topic",
        "correlation_id",
        "causation_id",
        "state",
        "events",
    }
    assert (m["id"], m["queue"], m["tenant"], m["key"], m["state"]) == (
        ids["booking"],
        "calendar",
        "acme",
        "property:4521",
        "acked",
    )
    retried = m["events"][2]
    assert retried["event"] == "retried"
    assert retried["attempt"] == 1
    assert retried["error_type"] == "TimeoutError"
    assert retried["error"].startswith("TimeoutError: calendar provider")
    assert retried["at"].endswith("+00:00")
    assert {"worker", "process", "duration_ms", "delay"} <= set(retried)


def test_a_dedup_id_finds_its_message(cli: Run, traced: tuple[Path, dict[str, str]]) -> None:
    path, ids = traced
    code, out, _ = cli("trace", str(path), "booking-1", "--json")
    assert code == 0
    assert [m["id"] for m in json.loads(out)["messages"]] == [ids["booking"]]


def test_key_history(cli: Run, traced: tuple[Path, dict[str, str]]) -> None:
    path, ids = traced
    code, out, _ = cli("trace", str(path), "--key", "property:4521", "--tenant", "acme", "--json")
    assert code == 0
    assert [m["id"] for m in json.loads(out)["messages"]] == [ids["booking"], ids["email"]]
    code, out, _ = cli("trace", str(path), "--key", "property:4521", "--queue", "email", "--json")
    assert [m["id"] for m in json.loads(out)["messages"]] == [ids["email"]]


def test_correlation_tree(
    cli: Run, traced: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    path, ids = traced
    # Asked by the id of a message inside the chain, the whole chain is shown.
    code, out, _ = cli("trace", str(path), "--correlation", ids["email"])
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"correlation {ids['booking']}"
    assert lines[1].startswith(f"└── calendar {ids['booking']}  acked after 2 attempts")
    assert "attempt 1: TimeoutError: calendar provider" in lines[2]
    assert any(f"└── email {ids['email']}  dead after 1 attempt" in line for line in lines)
    assert max(len(line) for line in lines) <= 80


def test_unknown_id_is_a_one_line_error(cli: Run, traced: tuple[Path, dict[str, str]]) -> None:
    path, _ = traced
    code, out, err = cli("trace", str(path), "06H3NOSUCHMESSAGE")
    assert code == 1
    assert out == ""
    assert err.startswith("pmsq trace: error: no history for message 06H3NOSUCHMESSAGE")
    assert len(err.strip().splitlines()) == 1


def test_bad_arguments(cli: Run, traced: tuple[Path, dict[str, str]]) -> None:
    path, ids = traced
    assert cli("trace", str(path))[0] == 1
    assert cli("trace", str(path), ids["booking"], "--key", "k")[0] == 1
    code, _, err = cli("trace", str(path), ids["booking"], "--queue", "q")
    assert code == 1
    assert "--queue and --tenant go with --key" in err


def test_a_backend_without_history_gets_a_clear_error(tmp_path: Path) -> None:
    broker = pmsq.Broker(BareSQLite(str(tmp_path / "x.db"), durability="normal"))
    args = argparse.Namespace(id="x", key=None, correlation=None, limit=10)
    with pytest.raises(CommandError, match="keeps no message history"):
        _find(broker, args)
    broker.close()


class TemplateError(Exception):
    """A handler error whose type the worker records with its module path."""


@pytest.fixture
def dead(tmp_path: Path) -> tuple[Path, str]:
    """A store with a message that failed twice with a module-level error and was dead-lettered."""
    path = tmp_path / "pms.db"
    with pmsq.connect(str(path), durability="normal") as b:
        b.declare_queue(
            "email",
            max_attempts=2,
            backoff=pmsq.Backoff(base=0.0, factor=1.0, cap=0.0),
            fallback="email.fallback",
        )
        b.declare_queue("email.fallback")
        q = b.queue("email")
        mid = q.put({"to": "guest"}, key="property:12", tenant="baltic-stays")
        for _ in range(2):
            with pytest.raises(TemplateError), q.get(timeout=0):
                raise TemplateError("guest message has no text to render, the template is empty")
    return path, mid


def test_a_dead_letter_names_its_error_type_once_and_keeps_words_whole(
    cli: Run, dead: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    path, mid = dead
    code, out, err = cli("trace", str(path), mid)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    kind = f"{__name__}.TemplateError"
    message = "guest message has no text to render, the template is empty"
    # Each failed attempt (retried, dead_lettered) shows its error, the type named once.
    flat = " ".join(out.split())
    assert flat.count(f"{kind}: {message}") == 2
    assert flat.count(kind) == 2
    # The dead_lettered line says why, where the copy went, and not the error again.
    reason = " ".join(out.split("dead_lettered", 1)[1].split(kind, 1)[0].split())
    assert "failed 2 of 2 attempts; copied to the fallback queue as" in reason
    # Every word of the text is on some line whole: none is cut at the edge.
    words = {w for line in lines for w in line.split()}
    assert set(message.replace(",", "").split()) <= {w.rstrip(",") for w in words}


@pytest.mark.parametrize(
    ("ms", "shown"),
    [
        (0.0004, "<1µs"),
        (0.005, "5µs"),
        (0.4123, "412µs"),
        (4.25, "4.2ms"),
        (42.4, "42ms"),
        (15_000.0, "15.0s"),
        (None, ""),
    ],
)
def test_handler_times_keep_their_precision(ms: float | None, shown: str) -> None:
    from pmsq.backends.base import HistoryEvent
    from pmsq.cli.trace import _took

    detail = {} if ms is None else {"duration_ms": ms}
    event = HistoryEvent(
        at=0.0,
        message_id="m",
        queue="q",
        tenant=None,
        key=None,
        correlation_id=None,
        event="acked",
        detail=detail,
    )
    assert _took(event) == shown
