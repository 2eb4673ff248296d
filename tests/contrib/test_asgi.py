"""The ASGI lifespan worker beside a FastAPI app under a real uvicorn."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pmsq
from pmsq.contrib.asgi import lifespan, run_worker

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

HERE = Path(__file__).resolve().parent


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _count(db: Path, sql: str) -> int:
    with sqlite3.connect(db, timeout=10) as conn:
        try:
            return int(conn.execute(sql).fetchone()[0])
        except sqlite3.OperationalError:
            return 0  # the app has not created its tables yet


def _uvicorn(db: Path, port: int, delay: float) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PMSQ_TEST_DB=str(db), PMSQ_TEST_HANDLER_DELAY=str(delay))
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "fastapi_app:app",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--log-level",
            "info",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _wait_up(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        try:
            httpx.get(f"http://127.0.0.1:{port}/docs", timeout=2)
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline, "uvicorn did not start within 60 s"
            time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.decode()
    # uvicorn re-raises the signal it handled once its shutdown is done.
    assert proc.returncode in (0, -signal.SIGTERM), text
    assert "Application shutdown complete" in text, text
    return text


def test_requests_enqueue_the_worker_handles_and_shutdown_drains(tmp_path: Path) -> None:
    db = tmp_path / "app.sqlite3"
    n = 30
    port = _free_port()
    # 30 messages x 0.3 s over 4 handlers: a few seconds of work, so the SIGTERM
    # below lands while handlers are in flight and messages are still waiting.
    proc = _uvicorn(db, port, delay=0.3)
    try:
        _wait_up(proc, port)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            ids = [
                client.post("/bookings", params={"guest": f"g{i}"}).json()["id"] for i in range(n)
            ]
        assert sorted(ids) == list(range(1, n + 1))
        deadline = time.monotonic() + 60
        while _count(db, "SELECT COUNT(*) FROM confirmations") < 1:
            assert time.monotonic() < deadline, "the lifespan worker handled nothing in 60 s"
            time.sleep(0.05)
    finally:
        _stop(proc)
    done = _count(db, "SELECT COUNT(*) FROM confirmations")
    assert 1 <= done < n, "the shutdown landed after every message was handled"
    with pmsq.connect(str(db)) as b:
        states = [s for _m, s in b.queue("confirmations").peek(100)]
    # Drained: handlers in flight finished and were acked, the rest went back.
    assert states == ["ready"] * (n - done)

    # The next start handles the rest; every booking is confirmed exactly once.
    proc = _uvicorn(db, port, delay=0)
    try:
        _wait_up(proc, port)
        deadline = time.monotonic() + 60
        while _count(db, "SELECT COUNT(*) FROM confirmations") < n:
            assert time.monotonic() < deadline, "the restarted app did not finish within 60 s"
            time.sleep(0.05)
    finally:
        _stop(proc)
    assert _count(db, "SELECT COUNT(DISTINCT booking_id) FROM confirmations") == n
    assert _count(db, "SELECT COUNT(*) FROM confirmations") == n


@pytest.mark.anyio
async def test_run_worker_refuses_a_broker_without_handlers_before_serving(
    broker: pmsq.Broker,
) -> None:
    with pytest.raises(pmsq.ConfigurationError, match="no handlers"):
        async with run_worker(broker):
            pytest.fail("the block must not run")


@pytest.mark.anyio
async def test_lifespan_runs_handlers_and_drains_on_exit(broker: pmsq.Broker) -> None:
    import anyio

    seen: list[object] = []
    started = anyio.Event()
    release = anyio.Event()

    @broker.handler("q")
    async def handle(message: pmsq.Message) -> None:
        started.set()
        await release.wait()
        seen.append(message.payload)

    broker.queue("q").put_many([1, 2, 3])
    async with lifespan(broker, concurrency=1)(app=None) as state:
        assert state["pmsq_worker"].broker is broker
        await started.wait()
        # Shutdown begins with one handler in flight: it must finish, not be cut off.
        release.set()
    assert seen[:1] == [1]
    waiting = [m.payload for m, s in broker.queue("q").peek(10) if s == "ready"]
    assert sorted(seen + waiting) == [1, 2, 3]
    assert [s for _m, s in broker.queue("q").peek(10)] == ["ready"] * len(waiting)
