"""``pmsq stats / queues / put / peek`` in-process, with their error paths."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import pmsq
from tests.cli.conftest import Run

COMMANDS = ["demo", "monitor", "stats", "queues", "put", "peek", "dlq", "backup", "doctor"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(cli: Run, command: str) -> None:
    code, out, _ = cli(command, "--help")
    assert code == 0
    assert "examples:" in out
    assert f"pmsq {command}" in out


def test_unknown_option_is_a_usage_error(cli: Run, store: Path) -> None:
    code, _, err = cli("stats", str(store), "--bogus")
    assert code == 2
    assert "unrecognized arguments: --bogus" in err


def test_stats_table_shows_every_queue_and_the_alerts(cli: Run, store: Path) -> None:
    code, out, err = cli("stats", str(store))
    assert (code, err) == (0, "")
    words = [line.split()[:6] for line in out.splitlines()]
    # ready, delayed, in flight, workers, dead
    assert ["calendar", "2", "1", "0", "0", "0"] in words  # one booking behind its key
    assert ["email", "2", "0", "0", "0", "1"] in words  # the dead letter freed its key
    assert "● email: 1 dead letter (alert above 0)" in out
    assert "● email: messages are due and no live worker serves the queue" in out
    assert "live workers: none" in out


def test_stats_accepts_a_sqlite_url(cli: Run, store: Path) -> None:
    code, out, _ = cli("stats", f"sqlite:///{store}", "--json")
    assert code == 0
    assert "calendar" in json.loads(out)["queues"]


def test_stats_json_is_the_snapshot_plus_alerts(cli: Run, store: Path) -> None:
    code, out, _ = cli("stats", str(store), "--json")
    data = json.loads(out)
    assert code == 0
    assert set(data["queues"]) == {"calendar", "email", "email.fallback"}
    assert data["queues"]["email"]["dead"] == 1
    assert data["queues"]["email"]["tenants"]["acme"]["dead"] == 1
    assert data["bindings"] == [["booking.*", "calendar"], ["booking.*", "email"]]
    # No worker runs on this store: every queue with messages due says so too.
    assert [(a["queue"], a["metric"]) for a in data["alerts"]] == [
        ("calendar", "consumers"),
        ("email", "consumers"),
        ("email", "dead"),
        ("email.fallback", "consumers"),
    ]
    assert data["workers"] == []


def test_stats_shows_pauses_and_open_circuits_as_alerts(cli: Run, store: Path) -> None:
    with pmsq.connect(str(store)) as b:
        b.pause("calendar", key="property:3", reason="migration")
    code, out, _ = cli("stats", str(store), "calendar", "--json")
    assert code == 0
    assert ("calendar", "paused:property:3") in [
        (a["queue"], a["metric"]) for a in json.loads(out)["alerts"]
    ]
    code, out, _ = cli("stats", str(store), "calendar")
    assert "key 'property:3' paused" in out
    code, out, _ = cli("stats", str(store), "email")  # another queue's pause is not shown
    assert "paused" not in out


def test_stats_of_one_queue(cli: Run, store: Path) -> None:
    code, out, _ = cli("stats", str(store), "calendar", "--json")
    assert code == 0
    assert list(json.loads(out)["queues"]) == ["calendar"]


def test_stats_prometheus(cli: Run, store: Path) -> None:
    code, out, _ = cli("stats", str(store), "--prometheus")
    assert code == 0
    assert 'pmsq_queue_dead{queue="email"} 1\n' in out
    assert 'pmsq_queue_ready{queue="calendar",tenant="acme"} 1\n' in out
    assert "# TYPE pmsq_queue_processed_total counter" in out


def test_json_and_prometheus_exclude_each_other(cli: Run, store: Path) -> None:
    code, _, err = cli("stats", str(store), "--json", "--prometheus")
    assert code == 2
    assert "not allowed with" in err


def test_unknown_queue_is_one_line_naming_the_known_ones(cli: Run, store: Path) -> None:
    code, out, err = cli("stats", str(store), "emial")
    assert code == 1
    assert out == ""
    assert err == (
        "pmsq stats: error: no queue 'emial' in this store "
        "(queues: calendar, email, email.fallback)\n"
    )


@pytest.mark.parametrize("command", ["stats", "queues", "doctor", "monitor"])
def test_a_missing_file_is_an_error_and_is_not_created(
    cli: Run, tmp_path: Path, command: str
) -> None:
    missing = tmp_path / "nope.db"
    code, _, err = cli(command, str(missing))
    assert code == 1
    assert f"no store at {missing}" in err or f"no store at {missing}" in _
    assert not missing.exists()


def test_a_foreign_sqlite_file_is_refused_and_left_untouched(cli: Run, tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE bookings (id INTEGER)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    code, _, err = cli("stats", str(path))
    assert code == 1
    assert "holds no pmsq store (bookings)" in err
    assert path.read_bytes() == before


def test_a_corrupt_file_gives_the_storage_error_advice_in_one_line(
    cli: Run, tmp_path: Path
) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database" * 200)
    code, out, err = cli("stats", str(path))
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert "not a SQLite database" in err
    assert "backup" in err


def test_queues_lists_options_bindings_and_rules(cli: Run, store: Path) -> None:
    code, out, _ = cli("queues", str(store))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "calendar"
    assert "  bound to: booking.*" in lines
    assert '  alert: {"max_depth": 100}' in lines
    assert any("max_attempts 1 " in line for line in lines)
    assert any("fallback → email.fallback" in line for line in lines)


def test_queues_json(cli: Run, store: Path) -> None:
    code, out, _ = cli("queues", str(store), "--json")
    data = json.loads(out)["queues"]
    assert code == 0
    assert data["email"]["fallback"] == "email.fallback"
    assert data["email"]["bindings"] == ["booking.*"]
    assert data["calendar"]["alert"] == {"max_depth": 100}
    assert data["email.fallback"]["alert"] is None


def test_put_prints_the_id_and_stores_the_options(cli: Run, store: Path) -> None:
    code, out, err = cli(
        "put",
        str(store),
        "calendar",
        '{"event": "resync"}',
        "--key",
        "property:9",
        "--tenant",
        "acme",
        "--delay",
        "3600",
        "--header",
        "source=shell",
    )
    assert (code, err) == (0, "")
    mid = out.strip()
    with pmsq.connect(str(store)) as b:
        [(msg, state)] = [(m, s) for m, s in b.queue("calendar").peek(10) if m.id == mid]
    assert msg.payload == {"event": "resync"}
    assert (msg.key, msg.tenant, msg.headers, state) == (
        "property:9",
        "acme",
        {"source": "shell"},
        "scheduled",
    )


def test_put_reads_the_payload_from_stdin(
    cli: Run, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO('{"from": "stdin"}'))
    code, out, _ = cli("put", str(store), "email.fallback", "-")
    assert code == 0
    with pmsq.connect(str(store)) as b:
        found = {m.id: m.payload for m, _ in b.queue("email.fallback").peek(10)}
    assert found[out.strip()] == {"from": "stdin"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["calendar", "{booking: 1}"], "payload is not valid JSON"),
        (["nope", "{}"], "no queue 'nope'"),
        (["calendar", "{}", "--header", "novalue"], "--header takes NAME=VALUE"),
        (["calendar", "{}", "--tenant", "bad tenant"], "invalid tenant"),
    ],
)
def test_put_errors_are_one_line(cli: Run, store: Path, argv: list[str], message: str) -> None:
    code, out, err = cli("put", str(store), *argv)
    assert code == 1
    assert out == ""
    assert message in err
    assert err.count("\n") == 1


def test_put_rejects_a_negative_delay_as_usage(cli: Run, store: Path) -> None:
    code, _, err = cli("put", str(store), "calendar", "{}", "--delay", "-1")
    assert code == 2
    assert "seconds >= 0" in err


def test_peek_reads_without_claiming(cli: Run, store: Path) -> None:
    code, out, _ = cli("peek", str(store), "calendar", "--json")
    assert code == 0
    found = json.loads(out)
    assert [(m["key"], m["state"]) for m in found] == [
        ("property:1", "ready"),
        ("property:2", "ready"),
        ("property:1", "waiting_for_key"),
    ]
    assert found[0]["payload"] == {"booking": 1}
    with pmsq.connect(str(store)) as b:
        assert b.stats("calendar").in_flight == 0
        assert b.stats("calendar").ready == 2


def test_peek_table_and_limits(cli: Run, store: Path) -> None:
    code, out, _ = cli("peek", str(store), "calendar", "-n", "1")
    assert code == 0
    rows = [line for line in out.splitlines() if "property:" in line]
    assert len(rows) == 1
    assert "ready" in rows[0]
    assert '{"booking": 1}' in rows[0]
    code, out, _ = cli("peek", str(store), "calendar", "--tenant", "blue", "--json")
    assert [m["tenant"] for m in json.loads(out)] == ["blue"]
    code, _, err = cli("peek", str(store), "calendar", "-n", "0")
    assert code == 1
    assert "-n takes a count >= 1" in err


def test_peek_of_an_unknown_queue_does_not_create_it(cli: Run, store: Path) -> None:
    code, _, err = cli("peek", str(store), "ghost")
    assert code == 1
    assert "no queue 'ghost'" in err
    with pmsq.connect(str(store)) as b:
        assert "ghost" not in [q.name for q in b.queues()]


def test_python_dash_m_pmsq_runs_a_command(store: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pmsq", "stats", str(store), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["queues"]["email"]["dead"] == 1


def test_importing_pmsq_does_not_import_rich() -> None:
    code = (
        "import sys, pmsq, pmsq.alerts, pmsq.monitor.figures, pmsq.monitor.prometheus\n"
        "assert 'rich' not in sys.modules, sorted(m for m in sys.modules if 'rich' in m)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    # `pmsq peek ... | head -1`: the reader goes away while pmsq still writes.
    path = tmp_path / "big.db"
    with pmsq.connect(str(path), durability="memory") as b:
        b.queue("calendar").put_many([{"n": i, "pad": "x" * 100} for i in range(3000)])
    proc = subprocess.Popen(
        [sys.executable, "-m", "pmsq", "peek", str(path), "calendar", "-n", "3000", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    assert proc.stdout.readline() == b"[\n"
    proc.stdout.close()
    code = proc.wait(timeout=60)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert code == 141
    assert "Traceback" not in err
