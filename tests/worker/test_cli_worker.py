"""``pmsq worker`` as real processes: supervision with restarts, and the SIGTERM drain."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import pmsq
from pmsq.cli import main
from pmsq.cli.worker import load_broker
from worker._support import wait_for

APP = textwrap.dedent(
    """
    import os, time
    import pmsq

    broker = pmsq.connect(os.environ["APP_DB"], durability="normal", poll_interval=0.02)
    broker.declare_queue("jobs", lease=1.0)
    LOG = os.environ["APP_LOG"]


    def note(what, message):
        with open(LOG, "a") as f:  # one small O_APPEND write per line: atomic
            f.write(f"{what} {message.id} {os.getpid()} {message.attempt}\\n")


    @broker.handler("jobs")
    def handle(message):
        note("start", message)
        if message.payload.get("hang") and message.attempt == 1:
            time.sleep(600)  # until someone kills this process
        if message.payload.get("block"):
            while not os.path.exists(os.environ["APP_RELEASE"]):
                time.sleep(0.01)
        note("done", message)
    """
)


@pytest.fixture
def app(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "pmsq_test_app.py").write_text(APP)
    return {
        **os.environ,
        "APP_DB": str(tmp_path / "app.db"),
        "APP_LOG": str(tmp_path / "handled.log"),
        "APP_RELEASE": str(tmp_path / "release"),
        "PYTHONUNBUFFERED": "1",
    }


def _lines(path: str) -> list[list[str]]:
    try:
        with open(path) as f:
            return [line.split() for line in f if line.strip()]
    except FileNotFoundError:
        return []


def _is_worker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"pmsq" in f.read()
    except OSError:
        return False


@contextlib.contextmanager
def _spawned(
    args: list[str], cwd: Path, env: dict[str, str], stderr: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pmsq", "worker", *args], cwd=cwd, env=env, stderr=err
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        # Children of a supervisor named in its log; killed only if still pmsq processes.
        for pid in map(int, re.findall(r"\(pid (\d+)\)", stderr.read_text())):
            if _is_worker(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def test_supervisor_restarts_a_killed_child_and_nothing_is_lost(
    tmp_path: Path, app: dict[str, str]
) -> None:
    with pmsq.connect(app["APP_DB"], durability="normal") as b:
        b.declare_queue("jobs", lease=1.0)
        q = b.queue("jobs")
        hang = q.put({"hang": True}, priority=1)  # claimed first
        ids = [hang, *q.put_many([{"n": i} for i in range(30)])]
    log, err = app["APP_LOG"], tmp_path / "supervisor.err"
    args = ["pmsq_test_app:broker", "--processes", "2", "--concurrency", "2"]
    with _spawned(args, tmp_path, app, err) as sup:
        wait_for(lambda: any(w[:2] == ["start", hang] for w in _lines(log)), what="hang start")
        [victim] = [int(w[2]) for w in _lines(log) if w[:2] == ["start", hang]]
        os.kill(victim, signal.SIGKILL)  # mid-handler
        wait_for(
            lambda: {w[1] for w in _lines(log) if w[0] == "done"} >= set(ids),
            what="every message handled",
        )
        wait_for(lambda: err.read_text().count("started worker process") == 3, what="restart")
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(30) == 0
    text = err.read_text()
    assert f"(pid {victim}) was killed by SIGKILL" in text
    assert "restarting in" in text
    done = [w for w in _lines(log) if w[0] == "done"]
    assert {w[1] for w in done} == set(ids)  # at least once: none lost
    # The killed delivery came back after its lease and finished on attempt 2.
    assert [w[3] for w in done if w[1] == hang] == ["2"]
    with pmsq.connect(app["APP_DB"], durability="normal") as b:
        assert b.stats("jobs").depth == 0


def test_sigterm_drains_in_flight_and_leaves_the_rest_unspent(
    tmp_path: Path, app: dict[str, str]
) -> None:
    with pmsq.connect(app["APP_DB"], durability="normal") as b:
        b.declare_queue("jobs", lease=1.0)
        q = b.queue("jobs")
        blocker = q.put({"block": True}, priority=1)
        rest = q.put_many([{"n": i} for i in range(5)])
    log, err = app["APP_LOG"], tmp_path / "worker.err"
    with _spawned(["pmsq_test_app:broker", "--concurrency", "1"], tmp_path, app, err) as proc:
        wait_for(lambda: any(w[:2] == ["start", blocker] for w in _lines(log)), what="start")
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "SIGTERM received" in err.read_text(), what="the signal noticed")
        Path(app["APP_RELEASE"]).touch()  # the in-flight handler may finish now
        assert proc.wait(30) == 0
    assert [w[:2] for w in _lines(log)] == [["start", blocker], ["done", blocker]]
    with pmsq.connect(app["APP_DB"], durability="normal") as b:
        s = b.stats("jobs")
        assert (s.processed, s.ready, s.in_flight) == (1, 5, 0)
        again = b.queue("jobs").get_many(10, timeout=0)
        assert sorted(d.message.id for d in again) == sorted(rest)
        assert {d.message.attempt for d in again} == {1}  # no attempt spent


def test_a_second_sigterm_stops_at_once_and_the_lease_brings_the_message_back(
    tmp_path: Path, app: dict[str, str]
) -> None:
    with pmsq.connect(app["APP_DB"], durability="normal") as b:
        b.declare_queue("jobs", lease=1.0)
        blocker = b.queue("jobs").put({"block": True})
    log, err = app["APP_LOG"], tmp_path / "worker.err"
    with _spawned(["pmsq_test_app:broker"], tmp_path, app, err) as proc:
        wait_for(lambda: any(w[:2] == ["start", blocker] for w in _lines(log)), what="start")
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "SIGTERM received" in err.read_text(), what="the first signal")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert "stopping now" in err.read_text()
    assert [w[0] for w in _lines(log)] == ["start"]  # never finished, never settled
    with pmsq.connect(app["APP_DB"], durability="normal") as b:
        d = b.queue("jobs").get(timeout=30)  # back once the 1 s lease ran out
        assert (d.message.id, d.message.attempt) == (blocker, 2)


# -- in-process: finding the app's broker ------------------------------------------------
@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("pmsq_cli_app"):
            module = sys.modules.pop(name)
            if isinstance(getattr(module, "broker", None), pmsq.Broker):
                module.broker.close()


def test_load_broker_finds_the_broker(app_dir: Path) -> None:
    (app_dir / "pmsq_cli_app_one.py").write_text(
        "import pmsq\nbroker = pmsq.connect('one.db', durability='memory')\n"
    )
    found = load_broker("pmsq_cli_app_one")  # the only Broker: no name needed
    assert found is load_broker("pmsq_cli_app_one:broker")


def test_load_broker_errors_are_one_line(app_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (app_dir / "pmsq_cli_app_two.py").write_text(
        "import pmsq\nbroker = pmsq.connect('two.db', durability='memory')\n"
        "other = broker\nnot_a_broker = 3\n"
    )
    for target, message in [
        ("pmsq_cli_app_missing:broker", "no such module"),
        ("pmsq_cli_app_two", "several (broker, other) Broker attributes"),
        ("pmsq_cli_app_two:nope", "has no attribute 'nope'"),
        ("pmsq_cli_app_two:not_a_broker", "is not a pmsq Broker (it is a int)"),
    ]:
        assert main(["worker", target]) == 1
        assert message in capsys.readouterr().err
    assert main(["worker", "pmsq_cli_app_two", "--concurrency", "0"]) == 1
    assert "--concurrency must be at least 1" in capsys.readouterr().err
    assert main(["worker", "pmsq_cli_app_two:broker", "--queues", "nothing"]) == 1
    assert "no handler for queue(s) nothing" in capsys.readouterr().err
