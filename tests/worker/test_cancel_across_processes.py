"""An operator cancels with ``pmsq cancel`` while a ``pmsq worker`` process runs the
message: real processes, the real CLI, and a worker killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pmsq
from worker._support import wait_for
from worker.test_cli_worker import _lines, _spawned

APP = textwrap.dedent(
    """
    import os, time
    import anyio
    import pmsq

    broker = pmsq.connect(os.environ["APP_DB"], durability="normal", poll_interval=0.02)
    broker.declare_queue("ota", lease=1.0)
    broker.declare_queue("mail", lease=1.0)
    LOG = os.environ["APP_LOG"]


    def note(what, message):
        with open(LOG, "a") as f:  # one small O_APPEND write per line: atomic
            f.write(f"{what} {message.id} {os.getpid()} {message.attempt}\\n")


    @broker.handler("ota")
    async def push(message):
        note("start", message)
        try:
            if message.payload.get("hang"):
                await anyio.sleep(600)
        except anyio.get_cancelled_exc_class():
            note("cancelled", message)
            raise
        note("done", message)


    @broker.handler("mail")
    def send(message):
        note("start", message)
        if message.payload.get("hang"):
            time.sleep(600)  # until someone kills this process
        note("done", message)
    """
)


@pytest.fixture
def app(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "pmsq_cancel_app.py").write_text(APP)
    return {
        **os.environ,
        "APP_DB": str(tmp_path / "app.db"),
        "APP_LOG": str(tmp_path / "handled.log"),
        "PYTHONUNBUFFERED": "1",
    }


def pmsq_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pmsq", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def events(log: str, what: str) -> list[str]:
    return [w[1] for w in _lines(log) if w[0] == what]


def test_pmsq_cancel_stops_the_async_handler_of_a_running_worker(
    tmp_path: Path, app: dict[str, str]
) -> None:
    with pmsq.connect(app["APP_DB"], durability="normal") as b:
        b.declare_queue("ota", lease=1.0)
        q = b.queue("ota")
        hung = q.put({"hang": True}, key="property:1", tenant="acme")
        after = q.put({"n": 2}, key="property:1", tenant="acme")
    log, err = app["APP_LOG"], tmp_path / "worker.err"
    with _spawned(["pmsq_cancel_app:broker"], tmp_path, app, err) as proc:
        wait_for(lambda: hung in events(log, "start"), what="the handler to start")
        done = pmsq_cli("cancel", app["APP_DB"], "ota", hung, env=app, cwd=tmp_path)
        assert (done.returncode, done.stdout, done.stderr) == (0, f"cancelled {hung}\n", "")
        wait_for(lambda: after in events(log, "done"), what="the key's next message")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    order = [w[:2] for w in _lines(log)]
    assert order == [["start", hung], ["cancelled", hung], ["start", after], ["done", after]]
    text = err.read_text()
    assert f"message {hung} in queue 'ota' was cancelled while its handler ran" in text
    assert "its handler was cancelled" in text
    with pmsq.connect(app["APP_DB"], durability="normal") as b:
        journal = [e.event for e in b.backend.history(message_id=hung)]  # type: ignore[attr-defined]
        assert journal[-1] == "cancelled"
        assert "retried" not in journal
        assert b.dead_letters("ota").list() == []


def test_a_cancelled_message_never_comes_back_after_its_worker_is_killed(
    tmp_path: Path, app: dict[str, str]
) -> None:
    with pmsq.connect(app["APP_DB"], durability="normal") as b:
        b.declare_queue("mail", lease=1.0)
        q = b.queue("mail")
        hung = q.put({"hang": True}, key="booking:8812")
        after = q.put({"n": 2}, key="booking:8812")
    log = app["APP_LOG"]
    with _spawned(["pmsq_cancel_app:broker"], tmp_path, app, tmp_path / "first.err"):
        wait_for(lambda: hung in events(log, "start"), what="the handler to start")
        [victim] = [int(w[2]) for w in _lines(log) if w[:2] == ["start", hung]]
        done = pmsq_cli(
            "cancel", app["APP_DB"], "mail", "--key", "booking:8812", env=app, cwd=tmp_path
        )
        assert done.returncode == 0
        assert done.stdout == "cancelled 2 messages of key booking:8812 in mail\n"
        os.kill(victim, signal.SIGKILL)  # mid-handler, after the cancel committed
    # A new worker, and a new message of the key due well after the killed
    # worker's lease (1 s) would have run out: had the cancelled message
    # survived, it would come back first.
    with pmsq.connect(app["APP_DB"], durability="normal") as b:
        fresh = b.queue("mail").put({"n": 3}, key="booking:8812", delay=2.5)
    with _spawned(["pmsq_cancel_app:broker"], tmp_path, app, tmp_path / "second.err") as proc:
        wait_for(lambda: fresh in events(log, "done"), what="the fresh message")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    starts = events(log, "start")
    assert starts.count(hung) == 1  # never delivered again
    assert after not in starts  # cancelled while waiting behind it
    with pmsq.connect(app["APP_DB"], durability="normal") as b:
        assert b.stats("mail").depth == 0
        assert b.dead_letters("mail").list() == []
