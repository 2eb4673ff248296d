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
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from pmsq.backends.schedule_family import ScheduleStore
from pmsq.errors import PmsqError

if TYPE_CHECKING:
    from pmsq.runtime import Runtime

__all__ = ["RECHECK", "ScheduleTimer", "poke_timers", "run_async_timer", "start_timer_thread"]

log = logging.getLogger("pmsq.schedules")

#: Longest a timer sleeps before reading the store's earliest slot again (seconds).
RECHECK = 1.0
_timers: weakref.WeakKeyDictionary[Runtime, weakref.WeakSet[ScheduleTimer]] = (
    weakref.WeakKeyDictionary()
)
_timers_lock = threading.Lock()


def poke_timers(runtime: Runtime) -> None:
    """Wake this process's timers of ``runtime``'s store (a schedule was declared here)."""
    with _timers_lock:
        timers = list(_timers.get(runtime, ()))
    for t in timers:
        t.poke()


class ScheduleTimer:
    """Fires due slots of one broker's store and says how long to sleep (sans I/O loop).

    Args:
        runtime: The broker's shared state (its store and clock).
        fire: Fires what is due now and returns how many messages it made
            (``Broker.run_schedules``).
    """

    def __init__(self, runtime: Runtime, fire: Callable[[], int]) -> None:
        self.runtime = runtime
        self._fire = fire
        self._poked = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        with _timers_lock:
            _timers.setdefault(runtime, weakref.WeakSet()).add(self)

    @staticmethod
    def wanted(runtime: Runtime) -> bool:
        """Whether the store stores schedules (else no timer is needed)."""
        return isinstance(runtime.backend, ScheduleStore)

    def step(self) -> float:
        """Fire what is due now; return the seconds until the next look."""
        self._poked.clear()
        store = self.runtime.backend
        assert isinstance(store, ScheduleStore)
        try:
            made = self._fire()
            if made:
                log.debug("schedules made %d message(s)", made)
            upcoming = store.next_schedule_at()
        except PmsqError as exc:
            # A store hiccup (locked, restarting server) must not end the worker.
            log.warning("firing schedules failed: %s; trying again shortly", exc)
            return RECHECK
        if upcoming is None:
            return RECHECK
        wait = upcoming - self.runtime.clock.time()
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


def start_timer_thread(runtime: Runtime, fire: Callable[[], int]) -> ScheduleTimer | None:
    """Start a daemon thread firing the store's schedules; ``None`` if the store has none."""
    if not ScheduleTimer.wanted(runtime):
        return None
    timer = ScheduleTimer(runtime, fire)
    timer._thread = threading.Thread(target=timer.run_blocking, name="pmsq-schedules", daemon=True)
    timer._thread.start()
    return timer


async def run_async_timer(
    runtime: Runtime, fire: Callable[[], int], limiter: anyio.CapacityLimiter | None = None
) -> None:
    """The AsyncWorker's task: fire the store's schedules until cancelled."""
    if not ScheduleTimer.wanted(runtime):
        return
    timer = ScheduleTimer(runtime, fire)
    while True:
        wait = await anyio.to_thread.run_sync(timer.step, limiter=limiter)
        await anyio.sleep(wait)
