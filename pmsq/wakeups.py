"""``WakeUps``: how an idle consumer in this process learns that there may be work.

Two sources, one condition variable:

- Local changes: a put, redrive or settlement in this process calls
  :meth:`WakeUps.notify` with its queue.
- The store: one watcher thread per broker blocks in the backend's
  ``wait_for_change`` (a cheap probe per ``poll_interval`` on SQLite, a
  NOTIFY on PostgreSQL) and wakes every waiter when the store may have
  changed, whoever wrote.

Neither costs anything per queue, so a worker serving 10,000 idle queues
sleeps as cheaply as one serving a single queue (issue 15). What to claim
once woken is the backend's ``ready_queues`` (see ``Lifecycle.claim_round``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Sequence

__all__ = ["WakeUps"]

log = logging.getLogger("pmsq")

#: ``backend.wait_for_change``: ``(since, timeout) -> token``.
ChangeWait = Callable[[object | None, float], object]


class WakeUps:
    """Change counters behind one condition variable, and the store watcher.

    Args:
        poll_interval: Longest a waiter watching queues sleeps before it looks
            again (the tick at which delays and lease expiries are noticed),
            and how long the watcher waits for the store per call.
        wait_for_change: The backend's ``wait_for_change``; ``None`` watches
            local changes only.
    """

    def __init__(self, poll_interval: float, wait_for_change: ChangeWait | None = None) -> None:
        self.poll_interval = poll_interval
        self._wait_for_change = wait_for_change
        self._cond = threading.Condition()
        self._generation: dict[str, int] = {}
        # Local changes: a counter, and its value at each queue's last change.
        self._local = 0
        self._touched: dict[str, int] = {}
        self._store_version = 0  # bumped by the watcher when the store moved
        self._watcher: threading.Thread | None = None
        self._closing = threading.Event()

    def notify(self, queue: str) -> None:
        """Something changed in ``queue`` (a put, a retry, a redrive): wake its waiters."""
        with self._cond:
            self._generation[queue] = self._generation.get(queue, 0) + 1
            self._local += 1
            self._touched[queue] = self._local
            self._cond.notify_all()

    def wait(self, queue: str, timeout: float | None) -> None:
        """Sleep until a local change to ``queue``, ``timeout``, or the poll interval."""
        wait = self.poll_interval if timeout is None else min(timeout, self.poll_interval)
        with self._cond:
            start = self._generation.get(queue, 0)
            self._cond.wait_for(lambda: self._generation.get(queue, 0) != start, timeout=wait)

    def changes(self, queues: Sequence[str]) -> tuple[int, int]:
        """A token that moves with local changes and with the store's.

        Take it before a claim finds nothing and pass it to :meth:`wait_any`,
        so a change landing between the two is not slept through. Costs the
        same whatever the number of ``queues``; with queues it also starts
        the store watcher.
        """
        if queues and self._watcher is None:
            self._watch_store()
        with self._cond:
            return self._local, self._store_version

    def _touched_since(self, queues: Collection[str], since: int) -> bool:
        # Under self._cond, only after some local change: walk the shorter side.
        if len(queues) <= len(self._touched):
            return any(self._touched.get(q, 0) > since for q in queues)
        return any(at > since and q in queues for q, at in self._touched.items())

    def wait_any(
        self,
        queues: Sequence[str],
        since: object,
        timeout: float,
        wake: Callable[[], bool] | None = None,
    ) -> None:
        """One idle wait for a consumer of several queues (the workers).

        Returns when a local change touched one of ``queues`` or the store
        changed since ``since`` (a :meth:`changes` token), when ``wake()``
        turns true (re-checked on :meth:`kick`), or after ``timeout``, capped
        at ``poll_interval`` when ``queues`` is not empty.
        """
        if queues:
            timeout = min(timeout, self.poll_interval)
        local, version = since if isinstance(since, tuple) else (self._local, self._store_version)
        watched: list[Collection[str]] = []  # a set of queues, built at the first local change

        def ready() -> bool:
            if wake is not None and wake():
                return True
            if not queues:
                return False
            if self._store_version != version:
                return True
            if self._local == local:
                return False
            if not watched:
                watched.append(set(queues) if len(queues) > 8 else queues)
            return self._touched_since(watched[0], local)

        with self._cond:
            self._cond.wait_for(ready, timeout=max(0.0, timeout))

    def kick(self) -> None:
        """Make every waiter re-check its condition.

        Safe in a signal handler: the condition's lock is reentrant.
        """
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the watcher (before the backend closes) and wake every waiter. Idempotent."""
        self._closing.set()
        self.kick()

    # -- the store watcher -------------------------------------------------------------
    def _watch_store(self) -> None:
        wait_for_change = self._wait_for_change
        with self._cond:
            if self._watcher is not None or self._closing.is_set() or wait_for_change is None:
                return
            # The first token is taken here, before the caller looks at the store:
            # whatever is written after it, the watcher reports.
            try:
                token = wait_for_change(None, 0.0)
            except Exception:  # a closed or failing store: the next claim reports it
                token = None
            thread = threading.Thread(
                target=self._watch,
                args=(wait_for_change, token),
                name="pmsq-store-watch",
                daemon=True,
            )
            self._watcher = thread
        thread.start()

    def _watch(self, wait_for_change: ChangeWait, token: object) -> None:
        while not self._closing.is_set():
            try:
                new = wait_for_change(token, self.poll_interval)
            except Exception as exc:  # a closed or failing store: the next claim reports it
                if self._closing.is_set():
                    return
                log.debug("waiting for store changes failed: %s", exc)
                self._closing.wait(self.poll_interval)
                new = object()  # maybe changed
            if new != token:
                token = new
                with self._cond:
                    self._store_version += 1
                    self._cond.notify_all()
