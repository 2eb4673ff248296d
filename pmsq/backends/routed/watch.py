"""One change token for several stores: a watcher thread per store, one condition.

``Backend.wait_for_change`` blocks in one store (a probe per interval on
SQLite, a NOTIFY on PostgreSQL). A routed backend must wake an idle worker
when *any* of its stores changes, without polling them in turn: each store
gets a thread of its own blocked in its ``wait_for_change``, and each change
it reports bumps one counter under one condition variable. The combined
token is that counter, so the waiter sleeps until any store moved.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

__all__ = ["ChangeWatch"]

log = logging.getLogger("pmsq")

#: A store's ``wait_for_change``: ``(since, timeout) -> token``.
ChangeWait = Callable[[object | None, float], object]

#: Longest a store watcher blocks per call, so a close is noticed soon.
WATCH_INTERVAL = 0.5


class ChangeWatch:
    """Combined change tokens of several stores (started lazily, stopped by :meth:`close`).

    Args:
        waits: Each store's ``wait_for_change``.
        interval: Longest each watcher blocks in its store per call.
    """

    def __init__(self, waits: Sequence[ChangeWait], interval: float = WATCH_INTERVAL) -> None:
        self._waits = tuple(waits)
        self._interval = interval
        self._cond = threading.Condition()
        self._version = 0
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()

    def wait_for_change(self, since: object | None, timeout: float) -> object:
        """Block up to ``timeout`` until any store changed since token ``since``.

        Returns:
            The current token (an int); equal to ``since`` means no store changed.
        """
        self._start()
        with self._cond:
            if since is None or not isinstance(since, int):
                return self._version
            self._cond.wait_for(
                lambda: self._version != since or self._closing.is_set(),
                timeout=max(0.0, timeout),
            )
            return self._version

    def _start(self) -> None:
        with self._cond:
            if self._threads or self._closing.is_set():
                return
            for i, wait in enumerate(self._waits):
                # The first token is taken before the caller reads any store, so a
                # write landing after this call is reported.
                try:
                    token = wait(None, 0.0)
                except Exception:  # a failing store: its next claim reports it
                    token = None
                thread = threading.Thread(
                    target=self._watch,
                    args=(wait, token),
                    name=f"pmsq-routed-watch-{i}",
                    daemon=True,
                )
                self._threads.append(thread)
                thread.start()

    def _watch(self, wait: ChangeWait, token: object) -> None:
        while not self._closing.is_set():
            try:
                new = wait(token, self._interval)
            except Exception as exc:  # closed or failing: the next claim reports it
                if self._closing.is_set():
                    return
                log.debug("waiting for store changes failed: %s", exc)
                self._closing.wait(self._interval)
                new = object()
            if new != token:
                token = new
                with self._cond:
                    self._version += 1
                    self._cond.notify_all()

    def close(self) -> None:
        """Ask the watchers to stop (before the stores close) and wake every waiter. Idempotent."""
        self._closing.set()
        with self._cond:
            self._cond.notify_all()
        # Not joined: a watcher blocked in its store sees the store closed and returns.
