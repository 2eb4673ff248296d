"""``pmsq dlq list|show|redrive|purge``: filters, confirmations, refusals."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

import pmsq
from tests.cli.conftest import Run


class FakeTerminal(io.StringIO):
    """A standard input that claims to be a terminal, with the operator's answers."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def dead(tmp_path: Path) -> Path:
    """Queue ``email`` with four dead letters: two tenants, two keys, two error kinds."""
    path = tmp_path / "dlq.db"
    with pmsq.connect(str(path), durability="normal") as b:
        b.declare_queue("email", max_attempts=1)
        q = b.queue("email")
        for n, (tenant, key, error) in enumerate(
            [
                ("acme", "property:1", ConnectionError("SMTP 421 busy")),
                ("acme", "property:2", ValueError("no template for booking")),
                ("blue", "property:1", ConnectionError("SMTP 421 busy")),
                ("blue", "property:3", ValueError("no template for booking")),
            ]
        ):
            q.put({"n": n}, key=key, tenant=tenant)
            with pytest.raises(type(error)), q.get(timeout=1):
                raise error
    return path


def listed(cli: Run, path: Path, *args: str) -> list[dict[str, object]]:
    code, out, err = cli("dlq", "list", str(path), "email", "--json", *args)
    assert code == 0, err
    result: list[dict[str, object]] = json.loads(out)
    return result


def test_list_shows_every_dead_letter_oldest_first(cli: Run, dead: Path) -> None:
    code, out, _ = cli("dlq", "list", str(dead), "email")
    assert code == 0
    rows = [line for line in out.splitlines() if "property:" in line]
    assert len(rows) == 4
    assert "ConnectionError" in rows[0]
    assert "acme" in rows[0]
    assert out.splitlines()[-1] == "4 dead letters"
    assert [d["key"] for d in listed(cli, dead)] == [
        "property:1",
        "property:2",
        "property:1",
        "property:3",
    ]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--tenant", "blue"], [2, 3]),
        (["--key", "property:1"], [0, 2]),
        (["--error", "smtp 421"], [0, 2]),
        (["--error", "ValueError"], [1, 3]),
        (["--tenant", "acme", "--error", "template"], [1]),
        (["--older-than", "3600"], []),
        (["--older-than", "0"], [0, 1, 2, 3]),
    ],
)
def test_filters(cli: Run, dead: Path, args: list[str], expected: list[int]) -> None:
    order = _all_ids(cli, dead)  # put order: n = 0, 1, 2, 3
    assert [order.index(str(d["id"])) for d in listed(cli, dead, *args)] == expected


def _all_ids(cli: Run, path: Path) -> list[str]:
    return [str(d["id"]) for d in listed(cli, path)]


def test_list_limit_says_how_many_are_not_shown(cli: Run, dead: Path) -> None:
    code, out, _ = cli("dlq", "list", str(dead), "email", "-n", "1")
    assert code == 0
    assert out.splitlines()[-1] == "4 dead letters (3 not shown; raise --limit)"


def test_show_prints_payload_reason_and_traceback(cli: Run, dead: Path) -> None:
    first = _all_ids(cli, dead)[0]
    code, out, _ = cli("dlq", "show", str(dead), "email", first)
    assert code == 0
    assert out.splitlines()[0] == first
    assert "  tenant         acme" in out
    assert '      "n": 0' in out
    assert "ConnectionError: SMTP 421 busy" in out
    assert "  traceback" in out


@pytest.mark.parametrize("action", ["show", "redrive", "purge"])
def test_an_unknown_id_changes_nothing_and_says_so(cli: Run, dead: Path, action: str) -> None:
    real = _all_ids(cli, dead)[0]
    code, _, err = cli("dlq", action, str(dead), "email", real, "NOSUCHID", "--yes")
    if action == "show":
        code, _, err = cli("dlq", action, str(dead), "email", real, "NOSUCHID")
    assert code == 1
    assert "no dead letter NOSUCHID in queue 'email'" in err
    assert len(listed(cli, dead)) == 4


def test_show_needs_ids(cli: Run, dead: Path) -> None:
    code, _, err = cli("dlq", "show", str(dead), "email")
    assert code == 1
    assert "show needs one or more message ids" in err


def test_redrive_of_named_ids_needs_no_confirmation(cli: Run, dead: Path) -> None:
    first = _all_ids(cli, dead)[0]
    code, out, _ = cli("dlq", "redrive", str(dead), "email", first)
    assert code == 0
    assert out == "redrove 1 dead letter of 'email'\n"
    assert first not in _all_ids(cli, dead)
    with pmsq.connect(str(dead)) as b:
        [(msg, state)] = b.queue("email").peek(5)
    assert (msg.id, state, msg.payload) == (first, "ready", {"n": 0})


@pytest.mark.parametrize("argv", [["purge"], ["purge", "ID"], ["redrive"]])
def test_without_a_terminal_destructive_actions_need_yes(
    cli: Run, dead: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    ids = _all_ids(cli, dead)[:1] if "ID" in argv else []
    code, out, err = cli("dlq", argv[0], str(dead), "email", *ids)
    assert code == 1
    assert out == ""
    assert "without confirmation: there is no terminal to ask on; pass --yes" in err
    assert len(listed(cli, dead)) == 4


def test_purge_with_yes_and_filters_deletes_only_the_matching(cli: Run, dead: Path) -> None:
    code, out, _ = cli("dlq", "purge", str(dead), "email", "--tenant", "blue", "--yes")
    assert code == 0
    assert out == "purged 2 dead letters of 'email'\n"
    assert [d["tenant"] for d in listed(cli, dead)] == ["acme", "acme"]


def test_purge_asks_on_a_terminal_and_no_keeps_everything(
    cli: Run, dead: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", FakeTerminal("n\n"))
    code, out, _ = cli("dlq", "purge", str(dead), "email")
    assert code == 1
    assert "purge 4 dead letters of 'email' (deleted for good)? [y/N]" in out
    assert "nothing changed" in out
    assert len(listed(cli, dead)) == 4


def test_redrive_all_asks_on_a_terminal_and_yes_redrives(
    cli: Run, dead: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", FakeTerminal("y\n"))
    code, out, _ = cli("dlq", "redrive", str(dead), "email", "--error", "SMTP")
    assert code == 0
    assert out.endswith("redrove 2 dead letters of 'email'\n")
    assert [d["payload"] for d in _shown(cli, dead)] == [{"n": 1}, {"n": 3}]


def _shown(cli: Run, path: Path) -> list[dict[str, object]]:
    code, out, _ = cli("dlq", "show", str(path), "email", *_all_ids(cli, path), "--json")
    assert code == 0
    result: list[dict[str, object]] = json.loads(out)
    return result


def test_nothing_matching_changes_nothing(cli: Run, dead: Path) -> None:
    code, out, _ = cli("dlq", "purge", str(dead), "email", "--key", "property:99", "--yes")
    assert code == 0
    assert "nothing changed" in out
    assert len(listed(cli, dead)) == 4


def test_unknown_action_is_a_usage_error(cli: Run, dead: Path) -> None:
    code, _, err = cli("dlq", "explode", str(dead), "email")
    assert code == 2
    assert "invalid choice" in err


def test_ids_may_follow_the_options(cli: Run, dead: Path) -> None:
    first = _all_ids(cli, dead)[0]
    code, out, err = cli("dlq", "purge", str(dead), "email", "--tenant", "acme", first, "--yes")
    assert (code, err) == (0, "")
    assert out == "purged 1 dead letter of 'email'\n"
    assert first not in _all_ids(cli, dead)
