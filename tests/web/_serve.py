"""Running ``pmsq serve`` as a real process for the tests: start it, read its address, stop it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import attrs


@attrs.frozen
class Served:
    url: str
    process: subprocess.Popen[str]


@contextmanager
def serve(db: str, *args: str, token: str | None = None) -> Iterator[Served]:
    """``pmsq serve DB --port 0 ARGS`` with ``PMSQ_WEB_TOKEN=token``; stopped by SIGTERM."""
    env = {k: v for k, v in os.environ.items() if k != "PMSQ_WEB_TOKEN"}
    if token is not None:
        env["PMSQ_WEB_TOKEN"] = token
    process = subprocess.Popen(
        [sys.executable, "-m", "pmsq", "serve", db, "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # printed once the socket is bound
        if not line.startswith("pmsq dashboard on "):
            process.kill()
            _, err = process.communicate(timeout=30)
            raise AssertionError(f"pmsq serve did not start: {line!r} {err}")
        url = line.split()[3].rstrip("/")
        yield Served(url=url, process=process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=30)  # also closes the pipes
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
