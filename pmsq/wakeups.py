"""``WakeUps``: how an idle consumer in this process learns that there is work.

A local put, redrive or settlement bumps a per-queue counter and wakes every
waiter; writes by other processes are seen by polling, so a waiter that
watches queues never sleeps longer than ``poll_interval``. One instance per
``Broker``, shared by its queue handles, deliveries and workers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

__all__ = ["WakeUps"]


class WakeUps:
    """Per-queue change counters behind one condition variable.

    Args:
        poll_interval: Longest a waiter watching queues sleeps before it looks
            again (the bound on seeing another process's writes).
    """

    def __init__(self, poll_interval: float) -> None:
        self.poll_interval = poll_interval
        self._cond = threading.Condition()
        self._generation: dict[str, int] = {}

    def notify(self, queue: str) -> None:
        """Something changed in ``queue`` (a put, a retry, a redrive): wake its waiters."""
        with self._cond:
            self._generation[queue] = self._generation.get(queue, 0) + 1
            self._cond.notify_all()

    def wait(self, queue: str, timeout: float | None) -> None:
        """Sleep until a local change to ``queue``, ``timeout``, or the poll interval."""
        wait = self.poll_interval if timeout is None else min(timeout, self.poll_interval)
        with self._cond:
            start = self._generation.get(queue, 0)
            self._cond.wait_for(lambda: self._generation.get(queue, 0) != start, timeout=wait)

    def changes(self, queues: Sequence[str]) -> int:
        """A counter that grows with every local change to one of ``queues``.

        Take it before a claim finds nothing and pass it to :meth:`wait_any`,
        so a put landing between the two is not slept through.
        """
        with self._cond:
            return sum(self._generation.get(q, 0) for q in queues)

    def wait_any(
        self,
        queues: Sequence[str],
        since: int,
        timeout: float,
        wake: Callable[[], bool] | None = None,
    ) -> None:
        """One idle wait for a consumer of several queues (the workers).

        Returns when :meth:`changes` of ``queues`` moves past ``since`` (a
        local put), when ``wake()`` turns true (re-checked on :meth:`kick`),
        or after ``timeout``, capped at ``poll_interval`` when ``queues`` is
        not empty: writes by other processes are seen by polling, so that is
        the cross-process wake-up bound.
        """
        if queues:
            timeout = min(timeout, self.poll_interval)

        def ready() -> bool:
            if wake is not None and wake():
                return True
            return sum(self._generation.get(q, 0) for q in queues) != since

        with self._cond:
            self._cond.wait_for(ready, timeout=max(0.0, timeout))

    def kick(self) -> None:
        """Make every waiter re-check its condition.

        Safe in a signal handler: the condition's lock is reentrant.
        """
        with self._cond:
            self._cond.notify_all()
