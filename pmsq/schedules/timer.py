"""How workers fire schedules without a scheduler process: a small timer beside their loops.

Each running ``Worker`` / ``AsyncWorker`` of a store keeps one timer. It
sleeps until the earliest slot of the store, fires what is due through
``broker.run_schedules()`` (exactly once across all of them: the store's
compare-and-set decides), and sleeps again. It re-reads the earliest slot
at least every :data:`RECHECK` seconds, so schedules created or changed by
other processes, and clock steps, are seen within that bound; a schedule
declared in this process wakes it at once. It runs in its own thread (or
task), so handlers that keep every worker slot busy do not delay it.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from pmsq.backends.schedule_family import ScheduleStore
from pmsq.errors import PmsqError

if TYPE_CHECKING:
    from pmsq.broker import Broker

__all__ = ["RECHECK", "ScheduleTimer", "poke_timers", "run_async_timer", "start_timer_thread"]

log = logging.getLogger("pmsq.schedules")

#: Longest a timer sleeps before reading the store's earliest slot again (seconds).
RECHECK = 1.0
_timers: weakref.WeakKeyDictionary[Broker, weakref.WeakSet[ScheduleTimer]] = (
    weakref.WeakKeyDictionary()
)
_timers_lock = threading.Lock()


def poke_timers(broker: Broker) -> None:
    """Wake this process's timers of ``broker`` (a schedule was declared here)."""
    with _timers_lock:
        timers = list(_timers.get(broker, ()))
    for t in timers:
        t.poke()


class ScheduleTimer:
    """Fires due slots of one broker's store and says how long to sleep (sans I/O loop)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._poked = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        with _timers_lock:
            _timers.setdefault(broker, weakref.WeakSet()).add(self)

    @staticmethod
    def wanted(broker: Broker) -> bool:
        """Whether ``broker``'s backend stores schedules (else no timer is needed)."""
        return isinstance(broker.backend, ScheduleStore)

    def step(self) -> float:
        """Fire what is due now; return the seconds until the next look."""
        self._poked.clear()
        store = self.broker.backend
        assert isinstance(store, ScheduleStore)
        try:
            made = self.broker.run_schedules()
            if made:
                log.debug("schedules made %d message(s)", made)
            upcoming = store.next_schedule_at()
        except PmsqError as exc:
            # A store hiccup (locked, restarting server) must not end the worker.
            log.warning("firing schedules failed: %s; trying again shortly", exc)
            return RECHECK
        if upcoming is None:
            return RECHECK
        wait = upcoming - self.broker.clock.time()
        # Still due right after a run: a firing failed (a full queue...); do not spin on it.
        return min(RECHECK, wait) if wait > 0 else RECHECK / 2

    def poke(self) -> None:
        """Look again now (a schedule changed in this process)."""
        self._poked.set()

    def stop(self) -> None:
        """End the loop; with the thread driver, wait for its thread to finish.

        Once it returns the timer touches the store no more (the worker's
        ``stop`` promises that, so the broker may be closed next).
        """
        self._stopped.set()
        self._poked.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopped.is_set()

    def run_blocking(self) -> None:
        """The thread driver's loop: step, sleep until the next slot or a poke, until stopped."""
        while not self._stopped.is_set():
            wait = self.step()
            if wait > 0:
                self._poked.wait(wait)


def start_timer_thread(broker: Broker) -> ScheduleTimer | None:
    """Start a daemon thread firing ``broker``'s schedules; ``None`` if its store has none."""
    if not ScheduleTimer.wanted(broker):
        return None
    timer = ScheduleTimer(broker)
    timer._thread = threading.Thread(target=timer.run_blocking, name="pmsq-schedules", daemon=True)
    timer._thread.start()
    return timer


async def run_async_timer(broker: Broker, limiter: anyio.CapacityLimiter | None = None) -> None:
    """The AsyncWorker's task: fire ``broker``'s schedules until cancelled."""
    if not ScheduleTimer.wanted(broker):
        return
    timer = ScheduleTimer(broker)
    while True:
        wait = await anyio.to_thread.run_sync(timer.step, limiter=limiter)
        await anyio.sleep(wait)
