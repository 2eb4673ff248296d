"""A driver-agnostic harness: the same test drives the thread Worker and the
AsyncWorker on asyncio and on trio.

The AsyncWorker runs under ``anyio.run(..., backend=...)`` in a background
thread, so every test body is plain synchronous code that waits for
conditions with a generous deadline (never for a fixed time).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest

import pmsq

DRIVERS = ["thread", "asyncio", "trio"]
DEADLINE = 30.0


def log_records(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    """The structured fields (``record.pmsq``) of the worker's log lines of ``event``."""
    return [
        r.pmsq  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "pmsq.worker" and getattr(r, "pmsq", {}).get("event") == event
    ]


def wait_for(condition: Callable[[], object], timeout: float = DEADLINE, what: str = "") -> None:
    """Poll ``condition`` until it is true; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(0.005)


class Running:
    """A worker of one driver kind, running in the background until :meth:`stop`."""

    def __init__(self, kind: str, broker: pmsq.Broker, **options: Any) -> None:
        self.kind = kind
        self.broker = broker
        self.errors: list[BaseException] = []
        self.drained: bool | None = None
        self._thread: threading.Thread | None = None
        self.worker: pmsq.Worker | pmsq.AsyncWorker
        if kind == "thread":
            self.worker = pmsq.Worker(broker, **options)
            self.worker.start()
        else:
            options.setdefault("concurrency", 8)
            self.worker = pmsq.AsyncWorker(broker, **options)
            self._thread = threading.Thread(target=self._main, name=f"test-{kind}", daemon=True)
            self._thread.start()
        self.stopped = False

    def _main(self) -> None:
        assert isinstance(self.worker, pmsq.AsyncWorker)
        try:
            anyio.run(self.worker.run, backend=self.kind)
        except BaseException as exc:
            self.errors.append(exc)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (idempotent) and re-raise anything the run raised."""
        if self.stopped:
            return
        self.stopped = True
        if isinstance(self.worker, pmsq.Worker):
            self.drained = self.worker.stop(timeout)
        else:
            self.worker.stop(timeout)
            assert self._thread is not None
            self._thread.join(timeout + DEADLINE)
            assert not self._thread.is_alive(), "AsyncWorker.run did not return after stop()"
        if self.errors:
            raise self.errors[0]
