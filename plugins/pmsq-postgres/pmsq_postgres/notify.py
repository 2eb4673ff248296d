"""LISTEN/NOTIFY wake-ups: another process's put reaches waiting consumers at once.

Every transaction that makes messages deliverable sends ``NOTIFY`` on the
store's channel with the queue name as payload (delivered at commit, so an
outbox put wakes consumers only when the app commits). A ``Listener`` holds
one extra connection in a daemon thread, started on first use, counts
notifications per queue and calls registered callbacks. It is only a hint:
consumers still poll, so a lost notification (a dropped connection) delays
a delivery by at most the poll interval.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Callable

import psycopg

__all__ = ["Listener", "channel_name"]

log = logging.getLogger("pmsq_postgres")


def channel_name(schema: str) -> str:
    """The NOTIFY channel of the store in ``schema`` (at most 63 bytes, PostgreSQL's limit)."""
    name = f"pmsq_{schema}"
    if len(name) <= 63:
        return name
    return "pmsq_" + hashlib.sha256(schema.encode()).hexdigest()[:32]


class Listener:
    """A background ``LISTEN`` on the store's channel.

    Args:
        conninfo: libpq connection string.
        channel: Channel name (a plain identifier).
    """

    def __init__(self, conninfo: str, channel: str) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._cond = threading.Condition()
        self._generation: dict[str, int] = {}
        self._total = 0
        self._callbacks: list[Callable[[str], object]] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def generation(self) -> int:
        """Notifications received so far (any queue); starts the listener."""
        self.start()
        return self._total

    def add_callback(self, callback: Callable[[str], object]) -> None:
        """Call ``callback(queue)`` (from the listener thread) on each notification."""
        with self._cond:
            self._callbacks.append(callback)
        self.start()

    def wait(self, queue: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a notification about ``queue``; whether one came."""
        self.start()
        with self._cond:
            start = self._generation.get(queue, 0)
            return (
                self._cond.wait_for(
                    lambda: self._generation.get(queue, 0) != start or self._stop.is_set(),
                    timeout=timeout,
                )
                and not self._stop.is_set()
            )

    def wait_past(self, since: int | None, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for any notification after count ``since``.

        Returns:
            The count now (equal to ``since``: nothing came).
        """
        self.start()
        with self._cond:
            self._cond.wait_for(
                lambda: self._total != since or self._stop.is_set(), timeout=max(0.0, timeout)
            )
            return self._total

    def start(self) -> None:
        """Start the listener thread if it is not running."""
        with self._cond:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(
                target=self._run, name="pmsq-postgres-listen", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop listening and close the connection. Idempotent."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=5.0)

    def _run(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(f'LISTEN "{self._channel}"')
                    delay = 0.1
                    # Notifications sent while (re)connecting are lost: count one,
                    # so a waiter looks at the store instead of trusting silence.
                    with self._cond:
                        self._total += 1
                        self._cond.notify_all()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self._deliver(note.payload)
            except psycopg.Error as exc:
                if self._stop.is_set():
                    return
                log.warning("pmsq-postgres listener lost its connection (%s); retrying", exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)

    def _deliver(self, queue: str) -> None:
        with self._cond:
            self._generation[queue] = self._generation.get(queue, 0) + 1
            self._total += 1
            self._cond.notify_all()
            callbacks = list(self._callbacks)
        for callback in callbacks:
            with contextlib.suppress(Exception):  # a hint must never break the listener
                callback(queue)
