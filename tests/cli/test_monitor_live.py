"""``pmsq monitor`` as a process: against a store another process writes, without a
terminal (plain snapshots), and in a real terminal under tmux."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

import pmsq
from pmsq.monitor.live import watch

WRITER = Path(__file__).with_name("_writer.py")
ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 60.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def written_store(tmp_path: Path) -> Iterator[Path]:
    """A store that a separate writer process keeps changing during the test."""
    path = tmp_path / "live.db"
    writer = subprocess.Popen(
        [sys.executable, str(WRITER), str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready", writer.stderr
        yield path
    finally:
        writer.kill()
        writer.wait(timeout=30)
        if writer.stdout:
            writer.stdout.close()
        if writer.stderr:
            writer.stderr.close()


def _read_until(proc: subprocess.Popen[str], lines_wanted: int) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    end = time.monotonic() + DEADLINE
    while len(lines) < lines_wanted and time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
    return lines


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_without_a_terminal_it_prints_plain_snapshots_and_exits_0_on_signals(
    written_store: Path, sig: signal.Signals
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pmsq", "monitor", str(written_store), "--refresh", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        # Two snapshots: a header and one line per queue each, then the dead-letter alert.
        lines = _read_until(proc, 8)
        headers = [line for line in lines if line.startswith("pmsq ")]
        assert len(headers) >= 2, lines
        assert any(line.startswith("calendar ready=") for line in lines)
        email = next(line for line in lines if line.startswith("email "))
        assert "dead=1" in email
        assert email.endswith("ALERT")
        assert "CRITICAL: email: 1 dead letter (alert above 0)" in lines
        assert "\x1b[" not in "".join(lines)
        proc.send_signal(sig)
        assert proc.wait(timeout=DEADLINE) == 0
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def test_monitor_of_a_missing_store_fails_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pmsq", "monitor", str(tmp_path / "none.db")],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env=_env(),
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("pmsq monitor: error: no store at")
    assert done.stderr.count("\n") == 1


def test_watch_loop_sees_another_connections_writes(tmp_path: Path) -> None:
    path = str(tmp_path / "w.db")
    stop = threading.Event()
    out = io.StringIO()
    frames: list[int] = []
    with pmsq.connect(path, durability="memory") as app, pmsq.connect(path) as monitor:
        app.declare_queue("calendar")

        def header() -> None:
            # Called once per refresh: write between refreshes, stop after three.
            frames.append(1)
            app.queue("calendar").put({"frame": len(frames)})
            if len(frames) == 3:
                stop.set()

        watch(monitor, stop=stop, refresh=0.01, plain=True, out=out, header=header)
    blocks = [line for line in out.getvalue().splitlines() if line.startswith("calendar ")]
    assert [b.split()[1] for b in blocks] == ["ready=0", "ready=1", "ready=2"]


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_live_dashboard_in_a_real_terminal(written_store: Path) -> None:
    name = f"pmsq-test-{uuid.uuid4().hex[:8]}"
    # pytest exports COLUMNS=80, which rich would obey over the real 100-column terminal.
    command = (
        f"cd {ROOT} && env -u COLUMNS -u LINES {sys.executable} -m pmsq monitor "
        f"{written_store} --refresh 0.3; echo EXIT=$?; sleep 60"
    )
    subprocess.run(
        ["tmux", "new-session", "-d", "-x", "100", "-y", "30", "-s", name, command],
        check=True,
        timeout=30,
    )

    def screen() -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", name],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout

    def wait_for(predicate: object, what: str) -> str:
        end = time.monotonic() + DEADLINE
        text = ""
        while time.monotonic() < end:
            text = screen()
            if callable(predicate) and predicate(text):
                return text
            time.sleep(0.1)
        raise AssertionError(f"{what} never appeared; screen:\n{text}")

    try:
        # The writer keeps acking: wait for a refresh that shows throughput.
        text = wait_for(
            lambda s: (
                "trend" in s
                and "● email: 1 dead letter (alert above 0)" in s
                and any(
                    line.split()[:1] == ["calendar"] and line.split()[7] not in ("0", "0.0")
                    for line in s.splitlines()
                    if len(line.split()) > 7
                )
            ),
            "a dashboard with calendar throughput and the email alert",
        )
        lines = text.splitlines()
        assert all(len(line) <= 100 for line in lines)
        email = next(line.split() for line in lines if line.split()[:1] == ["email"])
        assert email[5] == "1"  # dead
        assert "Ctrl-C to quit" in text
        subprocess.run(["tmux", "send-keys", "-t", name, "C-c"], check=True, timeout=30)
        final = wait_for(lambda s: "EXIT=0" in s, "exit status 0 after Ctrl-C")
        # The screen left behind is the final state, no longer inviting a Ctrl-C.
        assert "Ctrl-C to quit" not in final
        assert "● email: 1 dead letter (alert above 0)" in final
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], check=False, timeout=30)


def test_only_the_running_screen_says_how_to_quit(tmp_path: Path) -> None:
    from pmsq.monitor.live import _Screen

    with pmsq.connect(str(tmp_path / "s.db"), durability="memory") as b:
        b.declare_queue("calendar")
        screen = _Screen(b, tenants=False, title="pmsq monitor")
        assert screen.take()
        console = Console(file=io.StringIO(), width=80, record=True)
        console.print(screen.renderable(80, None))
        running = console.export_text()
        console.print(screen.renderable(80, None, final=True))
        final = console.export_text()
    assert "Ctrl-C to quit" in running
    assert "calendar" in final
    assert "Ctrl-C to quit" not in final
